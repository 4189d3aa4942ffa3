//! Device memory of the simulator: host allocations standing in for `cuMemAlloc`, with the
//! bookkeeping a real GPU does not have, so that misuse is caught instead of reading garbage:
//!
//! - every block the caching allocator (`pool.rs`) holds is registered with its state: handed out
//!   to a live [`crate::DeviceBuffer`] (with its requested length), or free in the pool's cache;
//! - new and freed blocks are filled with `0xFF` bytes (NaN as f32, f16 and bf16), so a kernel that
//!   reads memory it never wrote, or a buffer after it was dropped, produces NaNs;
//! - [`SimMemory::check`] tells whether a byte range lies inside one live buffer: the simulated
//!   launches, copies and library calls check every pointer they receive, and a pointer into a
//!   freed block is reported as a use after free.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::{KernelsError, Result};

/// Alignment of every simulated allocation (the allocator's size classes are multiples of it).
const ALIGN: usize = 512;
/// The fill of new and freed memory: NaN in every floating-point format the kernels use.
const POISON: u8 = 0xFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Owned by a live buffer of `len` requested bytes.
    Live { len: usize },
    /// In the pool's cache (or just allocated): no buffer owns it.
    Free,
}

#[derive(Debug)]
struct Block {
    size: usize,
    state: State,
}

/// The simulated device's memory (one per simulated device).
#[derive(Debug, Default)]
pub(crate) struct SimMemory {
    blocks: Mutex<BTreeMap<u64, Block>>,
}

impl SimMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Block>> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new block of `size` bytes (poisoned), or `None` when the host is out of memory.
    pub(crate) fn malloc(&self, size: usize) -> Option<u64> {
        let layout = Layout::from_size_align(size.max(1), ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` points to `layout.size()` writable bytes just allocated.
        unsafe { std::ptr::write_bytes(p, POISON, layout.size()) };
        self.lock().insert(p as u64, Block { size: layout.size(), state: State::Free });
        Some(p as u64)
    }

    /// Gives a block back to the host. Unknown pointers are ignored (never freed twice).
    pub(crate) fn free(&self, ptr: u64) {
        let Some(b) = self.lock().remove(&ptr) else { return };
        let Ok(layout) = Layout::from_size_align(b.size, ALIGN) else { return };
        // SAFETY: `ptr` was returned by `alloc` with this layout (registered in `malloc`) and is
        // removed from the registry, so it is freed once.
        unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
    }

    /// The pool handed block `ptr` to a buffer of `len` bytes.
    pub(crate) fn mark_live(&self, ptr: u64, len: usize) {
        if let Some(b) = self.lock().get_mut(&ptr) {
            b.state = State::Live { len };
        }
    }

    /// The buffer owning `ptr` dropped: the block is free again, and poisoned.
    pub(crate) fn mark_free(&self, ptr: u64) {
        let mut blocks = self.lock();
        if let Some(b) = blocks.get_mut(&ptr) {
            b.state = State::Free;
            // SAFETY: the block spans `b.size` bytes from `ptr` (registered by `malloc`) and no
            // buffer owns it any more; the simulator runs every operation synchronously, so no
            // kernel is reading it.
            unsafe { std::ptr::write_bytes(ptr as *mut u8, POISON, b.size) };
        }
    }

    /// Checks that `[ptr, ptr + bytes)` lies inside one live buffer (`bytes` may be 0: then `ptr`
    /// must still point into, or just past the end of, a live buffer). `what` names the operand.
    pub(crate) fn check(&self, what: &str, ptr: u64, bytes: usize) -> Result<()> {
        let blocks = self.lock();
        let Some((&start, b)) = blocks.range(..=ptr).next_back() else {
            return Err(sim_err(format!("{what}: {ptr:#x} is not a device pointer of the simulator")));
        };
        let off = (ptr - start) as usize;
        match b.state {
            State::Free if off < b.size => Err(sim_err(format!(
                "{what}: use after free: {ptr:#x} points into a {}-byte block that was freed (returned to the allocator)",
                b.size
            ))),
            State::Live { len } if off <= len && bytes <= len - off => Ok(()),
            State::Live { len } if off <= b.size => {
                Err(sim_err(format!("{what}: out of bounds: {bytes} bytes at offset {off} of a {len}-byte buffer")))
            }
            _ => Err(sim_err(format!("{what}: {ptr:#x} is not a device pointer of the simulator"))),
        }
    }
}

/// An error of the simulator (a fault a real GPU would show as a crash, a hang or wrong data).
pub(crate) fn sim_err(reason: String) -> KernelsError {
    KernelsError::Simulator { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_ranges_pass_and_freed_or_foreign_ones_fail() {
        let m = SimMemory::default();
        let p = m.malloc(1024).unwrap();
        m.mark_live(p, 100);
        assert!(m.check("x", p, 100).is_ok());
        assert!(m.check("x", p + 40, 60).is_ok());
        assert!(m.check("x", p + 100, 0).is_ok());
        let oob = m.check("x", p + 40, 61).unwrap_err().to_string();
        assert!(oob.contains("out of bounds"), "{oob}");
        m.mark_free(p);
        let uaf = m.check("x", p + 8, 4).unwrap_err().to_string();
        assert!(uaf.contains("use after free"), "{uaf}");
        // SAFETY: the block spans 1024 bytes and is still allocated (only marked free).
        let poisoned = unsafe { std::slice::from_raw_parts(p as *const u8, 1024) };
        assert!(poisoned.iter().all(|&b| b == POISON));
        let foreign = m.check("x", 16, 4).unwrap_err().to_string();
        assert!(foreign.contains("not a device pointer"), "{foreign}");
        m.free(p);
        assert!(m.check("x", p, 4).is_err());
    }
}
