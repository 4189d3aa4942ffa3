//! The caching allocator: device memory is taken from the driver once and reused, so an op never
//! calls `cuMemAlloc` on the hot path (a training step allocates thousands of temporaries).
//!
//! Blocks are rounded up to a size class (512-byte steps up to 1 MiB, then 2 MiB steps) and kept
//! on a free list per class when their [`DeviceBuffer`] drops. All work of one [`crate::Gpu`] runs
//! on one stream, so a block freed while kernels that read it are still queued can be handed out
//! at once: the next user's kernels are queued behind them (stream order). When the driver runs
//! out of memory the cache is emptied and the allocation retried once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, result};

use crate::error::{KernelsError, Result, driver};
use crate::sim::memory::SimMemory;

const SMALL_STEP: usize = 512;
const SMALL_LIMIT: usize = 1 << 20;
const LARGE_STEP: usize = 2 << 20;

/// The size class (bytes actually allocated) for a request of `bytes`.
pub(crate) fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes <= SMALL_LIMIT { bytes.div_ceil(SMALL_STEP) * SMALL_STEP } else { bytes.div_ceil(LARGE_STEP) * LARGE_STEP }
}

/// Counters of the allocator (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Held by live buffers.
    pub in_use: usize,
    /// Free blocks kept for reuse.
    pub cached: usize,
    /// The largest `in_use + cached` seen: the process's device-memory footprint.
    pub peak: usize,
    /// Allocations served from the cache.
    pub hits: u64,
    /// Allocations that went to the driver.
    pub misses: u64,
}

#[derive(Debug, Default)]
struct PoolState {
    free: HashMap<usize, Vec<u64>>,
    stats: PoolStats,
}

/// Where the blocks come from: the CUDA driver, or the simulator's host memory (which also
/// learns which blocks are handed out, to catch uses after free).
#[derive(Debug)]
pub(crate) enum PoolMemory {
    Cuda(Arc<CudaContext>),
    Sim(Arc<SimMemory>),
}

/// Free lists of one device. Shared by every buffer it handed out.
#[derive(Debug)]
pub(crate) struct Pool {
    memory: PoolMemory,
    ordinal: usize,
    state: Mutex<PoolState>,
}

impl Pool {
    pub(crate) fn new(memory: PoolMemory, ordinal: usize) -> Arc<Pool> {
        Arc::new(Pool { memory, ordinal, state: Mutex::new(PoolState::default()) })
    }

    /// A new block of `class` bytes from the driver (or the host), `None` when out of memory.
    fn malloc(&self, class: usize) -> Result<Option<u64>> {
        match &self.memory {
            PoolMemory::Cuda(ctx) => {
                ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
                // SAFETY: the context is current on this thread; the returned pointer is owned
                // by the pool, which gives it back to the driver only in `release_cached`.
                Ok(unsafe { result::malloc_sync(class) }.ok())
            }
            PoolMemory::Sim(m) => Ok(m.malloc(class)),
        }
    }

    /// Tells the simulator that `ptr` now belongs to a buffer of `len` bytes.
    fn handed_out(&self, ptr: u64, len: usize) {
        if let PoolMemory::Sim(m) = &self.memory {
            m.mark_live(ptr, len);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves only counters half-updated; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    pub(crate) fn reset_peak(&self) {
        let mut st = self.lock();
        st.stats.peak = st.stats.in_use + st.stats.cached;
    }

    /// A block of at least `bytes` bytes (contents undefined).
    pub(crate) fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer> {
        let class = size_class(bytes);
        {
            let mut st = self.lock();
            if let Some(ptr) = st.free.get_mut(&class).and_then(Vec::pop) {
                st.stats.cached -= class;
                st.stats.in_use += class;
                st.stats.hits += 1;
                drop(st);
                self.handed_out(ptr, bytes);
                return Ok(DeviceBuffer { ptr, len: bytes, class, pool: self.clone() });
            }
        }
        let ptr = match self.malloc(class)? {
            Some(p) => p,
            None => {
                self.release_cached()?;
                self.malloc(class)?.ok_or_else(|| {
                    let st = self.lock().stats;
                    KernelsError::OutOfMemory { ordinal: self.ordinal, requested: bytes, in_use: st.in_use, cached: st.cached }
                })?
            }
        };
        {
            let mut st = self.lock();
            st.stats.in_use += class;
            st.stats.misses += 1;
            st.stats.peak = st.stats.peak.max(st.stats.in_use + st.stats.cached);
        }
        self.handed_out(ptr, bytes);
        Ok(DeviceBuffer { ptr, len: bytes, class, pool: self.clone() })
    }

    /// Gives every cached block back to the driver (after the device finished using them).
    pub(crate) fn release_cached(&self) -> Result<()> {
        if let PoolMemory::Cuda(ctx) = &self.memory {
            ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
            ctx.synchronize().map_err(driver("cuCtxSynchronize"))?;
        }
        let mut st = self.lock();
        for (class, ptrs) in st.free.drain().collect::<Vec<_>>() {
            for p in ptrs {
                match &self.memory {
                    // SAFETY: `p` came from malloc_sync in this context and is in no live buffer.
                    PoolMemory::Cuda(_) => unsafe { result::free_sync(p) }.map_err(driver("cuMemFree"))?,
                    PoolMemory::Sim(m) => m.free(p),
                }
                st.stats.cached -= class;
            }
        }
        Ok(())
    }

    fn give_back(&self, ptr: u64, class: usize) {
        if let PoolMemory::Sim(m) = &self.memory {
            m.mark_free(ptr);
        }
        let mut st = self.lock();
        st.stats.in_use -= class;
        st.stats.cached += class;
        st.free.entry(class).or_default().push(ptr);
    }
}

/// Untyped device memory of one GPU, returned to its pool on drop.
#[derive(Debug)]
pub struct DeviceBuffer {
    ptr: u64,
    len: usize,
    class: usize,
    pool: Arc<Pool>,
}

impl DeviceBuffer {
    /// The device address (for kernel arguments).
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }
    /// Requested length in bytes (the block may be larger).
    pub fn len_bytes(&self) -> usize {
        self.len
    }
    /// Whether the buffer holds zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Checks that `elems` elements of `elem_size` bytes fit; `op` names the caller in the error.
    pub(crate) fn check_fits(&self, op: &'static str, what: &str, elems: usize, elem_size: usize) -> Result<()> {
        let need = elems.checked_mul(elem_size).ok_or_else(|| KernelsError::invalid(op, format!("{what}: size overflow")))?;
        if need > self.len {
            return Err(KernelsError::invalid(op, format!("{what} needs {need} bytes, buffer has {}", self.len)));
        }
        Ok(())
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.pool.give_back(self.ptr, self.class);
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_and_never_shrink() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), 2 << 20);
        assert_eq!(size_class((5 << 20) + 3), 6 << 20);
        for b in [3usize, 700, 65_537, 1_048_575, 3_000_001, 123_456_789] {
            let c = size_class(b);
            assert!(c >= b && c - b < (2 << 20), "{b} -> {c}");
        }
    }
}
