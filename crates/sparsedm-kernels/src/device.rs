//! One GPU: its context, its single work stream, the PTX modules loaded on it, its cuBLAS handle
//! and its caching allocator. [`Gpu::get`] hands out one shared instance per device ordinal.
//!
//! Everything runs on one stream, so operations are ordered without events and the allocator can
//! reuse a block as soon as its buffer drops (see `pool.rs`). Host transfers synchronize.
//!
//! A `Gpu` has one of two drivers: the CUDA driver (through cudarc), or — when
//! `SPARSEDM_CUDA_SIM=1` — the CUDA simulator of [`crate::sim`], where device memory is host
//! memory and kernels run on the CPU. Every method below works on both; the few that hand out
//! CUDA objects ([`Gpu::stream`], [`Gpu::context`], [`Gpu::function`], [`Gpu::with_blas`]) return
//! an error on the simulator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, result};
use cudarc::nvrtc::Ptx;

use crate::error::{KernelsError, Result, driver};
use crate::pool::{DeviceBuffer, Pool, PoolMemory, PoolStats};
use crate::sim::{self, SimDevice};

/// Threads per block of the elementwise kernels (kernels/ABI.md).
pub const BLOCK: u32 = 256;
/// The most blocks a 1-D launch uses; kernels loop (grid-stride) over the rest.
pub const MAX_GRID: u32 = 65_535 * 8;

/// A 1-D launch covering `work` items with `block` threads per block.
pub fn grid_for(work: usize, block: u32) -> LaunchConfig {
    let blocks = work.div_ceil(block as usize).clamp(1, MAX_GRID as usize) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// One block per row (block-stride over the rest), `block` threads each.
pub fn grid_rows(rows: usize, block: u32) -> LaunchConfig {
    let blocks = rows.clamp(1, MAX_GRID as usize) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// A CUDA device ready for work.
#[derive(Debug)]
pub struct Gpu {
    ordinal: usize,
    name: String,
    compute_capability: (i32, i32),
    driver: Driver,
    pool: Arc<Pool>,
}

/// What executes a [`Gpu`]'s work.
#[derive(Debug)]
pub(crate) enum Driver {
    /// A real device through the CUDA driver.
    Cuda(CudaDriver),
    /// The CPU simulator (`SPARSEDM_CUDA_SIM=1`).
    Sim(SimDevice),
}

/// The CUDA objects of a real device.
#[derive(Debug)]
pub(crate) struct CudaDriver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, String), CudaFunction>>,
    blas: Mutex<Option<CudaBlas>>,
}

static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();

/// Whether the CUDA driver is installed and reports at least one device. Never panics.
pub fn is_available() -> bool {
    device_count().is_ok_and(|n| n > 0)
}

/// Number of CUDA devices, or why there are none usable (missing driver library, driver error).
/// With `SPARSEDM_CUDA_SIM=1` there is exactly one device, the simulator.
pub fn device_count() -> Result<usize> {
    if sim::enabled() {
        return Ok(1);
    }
    sparsedm_cuda_sys::probe::device_count().map_err(|e| KernelsError::Unavailable { ordinal: 0, reason: e.to_string() })
}

impl Gpu {
    /// The shared handle of device `ordinal`, created on first use. A missing driver, a missing
    /// device or a failing context creation is an [`KernelsError::Unavailable`], never a panic.
    /// With `SPARSEDM_CUDA_SIM=1`, device 0 is the simulator and there is no other device.
    pub fn get(ordinal: usize) -> Result<Arc<Gpu>> {
        let devices = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = devices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = map.get(&ordinal) {
            return Ok(g.clone());
        }
        let gpu = Arc::new(Gpu::open(ordinal)?);
        map.insert(ordinal, gpu.clone());
        Ok(gpu)
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        let unavailable = |reason: String| KernelsError::Unavailable { ordinal, reason };
        if sim::enabled() {
            if ordinal != 0 {
                return Err(unavailable(format!("{}=1 simulates one device, ordinal 0", sim::SIM_ENV)));
            }
            return Gpu::open_simulated();
        }
        let count = sparsedm_cuda_sys::probe::device_count().map_err(|e| unavailable(e.to_string()))?;
        if ordinal >= count {
            return Err(unavailable(format!("the driver reports {count} device(s)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(format!("cannot create a context: {e}")))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let compute_capability = ctx.compute_capability().map_err(driver("cuDeviceGetAttribute"))?;
        if compute_capability.0 < 8 {
            return Err(unavailable(format!(
                "{name} has compute capability {}.{}; the PTX is built for compute_80 (Ampere) or newer",
                compute_capability.0, compute_capability.1
            )));
        }
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        let pool = Pool::new(PoolMemory::Cuda(ctx.clone()), ordinal);
        let driver = Driver::Cuda(CudaDriver {
            ctx,
            stream,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
        });
        Ok(Gpu { ordinal, name, compute_capability, driver, pool })
    }

    /// A new simulated device 0 (not registered in the shared map: `Gpu::get` does that).
    pub(crate) fn open_simulated() -> Result<Gpu> {
        let dev = SimDevice::open().map_err(|reason| KernelsError::Unavailable { ordinal: 0, reason })?;
        let pool = Pool::new(PoolMemory::Sim(dev.memory.clone()), 0);
        Ok(Gpu {
            ordinal: 0,
            name: sim::DEVICE_NAME.to_string(),
            // The PTX targets compute_80; the simulator runs the same kernels' sources.
            compute_capability: (8, 0),
            driver: Driver::Sim(dev),
            pool,
        })
    }

    /// The simulator, when this device is simulated.
    pub(crate) fn sim(&self) -> Option<&SimDevice> {
        match &self.driver {
            Driver::Sim(s) => Some(s),
            Driver::Cuda(_) => None,
        }
    }

    /// Whether this device is the CUDA simulator (`SPARSEDM_CUDA_SIM=1`) rather than a GPU. Its
    /// results are for correctness only; it must never be reported or timed as a GPU.
    pub fn is_simulated(&self) -> bool {
        self.sim().is_some()
    }

    fn cuda(&self, what: &str) -> Result<&CudaDriver> {
        match &self.driver {
            Driver::Cuda(c) => Ok(c),
            Driver::Sim(_) => Err(KernelsError::Simulator { reason: format!("{what} does not exist on the CUDA simulator") }),
        }
    }

    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    /// Marketing name reported by the driver ("NVIDIA H200"), or [`sim::DEVICE_NAME`].
    pub fn name(&self) -> &str {
        &self.name
    }
    /// (major, minor) compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
    /// The stream all work of this device runs on (an error on the simulator, which has none).
    pub fn stream(&self) -> Result<&Arc<CudaStream>> {
        Ok(&self.cuda("a CUDA stream")?.stream)
    }
    /// The driver context (an error on the simulator, which has none).
    pub fn context(&self) -> Result<&Arc<CudaContext>> {
        Ok(&self.cuda("a CUDA context")?.ctx)
    }

    /// Allocator counters (bytes in use, cached, peak).
    pub fn memory_stats(&self) -> PoolStats {
        self.pool.stats()
    }
    /// Restarts the peak-memory counter at the current footprint (to measure one phase).
    pub fn reset_peak_stats(&self) {
        self.pool.reset_peak();
    }
    /// Returns the allocator's cached blocks to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        self.pool.release_cached()
    }

    /// Uninitialised device memory for `bytes` bytes, from the cache when possible.
    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        self.pool.alloc(bytes)
    }

    /// Device memory holding `bytes` zero bytes.
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<DeviceBuffer> {
        let buf = self.alloc(bytes)?;
        match &self.driver {
            Driver::Sim(s) => {
                s.memory.check("memset", buf.device_ptr(), bytes)?;
                // SAFETY: the range lies inside the live host block of `buf` (checked).
                unsafe { std::ptr::write_bytes(buf.device_ptr() as *mut u8, 0, bytes) };
            }
            Driver::Cuda(c) => {
                self.bind()?;
                // SAFETY: `buf` owns at least `bytes` bytes; the memset is ordered on our stream
                // before any later use of the buffer.
                unsafe { result::memset_d8_async(buf.device_ptr(), 0, bytes, c.stream.cu_stream()) }.map_err(driver("cuMemsetD8Async"))?;
            }
        }
        Ok(buf)
    }

    /// Copies a host slice to new device memory.
    pub fn upload<T: Copy>(&self, host: &[T]) -> Result<DeviceBuffer> {
        let buf = self.alloc(std::mem::size_of_val(host))?;
        self.write(&buf, 0, host)?;
        Ok(buf)
    }

    /// Copies `host` into `buf` at byte offset `at`.
    pub fn write<T: Copy>(&self, buf: &DeviceBuffer, at: usize, host: &[T]) -> Result<()> {
        let bytes = std::mem::size_of_val(host);
        if at + bytes > buf.len_bytes() {
            return Err(KernelsError::invalid("upload", format!("{bytes} bytes at {at} overflow a {}-byte buffer", buf.len_bytes())));
        }
        if bytes == 0 {
            return Ok(());
        }
        let c = match &self.driver {
            Driver::Sim(s) => {
                let dst = buf.device_ptr() + at as u64;
                s.memory.check("upload", dst, bytes)?;
                // SAFETY: the destination range lies inside the live host block of `buf`
                // (checked); `host` is a distinct Rust slice of `bytes` bytes.
                unsafe { std::ptr::copy_nonoverlapping(host.as_ptr() as *const u8, dst as *mut u8, bytes) };
                return Ok(());
            }
            Driver::Cuda(c) => c,
        };
        self.bind()?;
        // SAFETY: the destination range lies inside `buf` (checked above). `host` is pageable
        // memory, which the DMA engine cannot read: the driver stages it into pinned memory
        // before cuMemcpyHtoDAsync returns (synchronizing the stream itself if it must; CUDA
        // "API synchronization behavior"), so the slice may be freed right after the call. The
        // upload stays ordered on our stream before any kernel that reads `buf`.
        unsafe { result::memcpy_htod_async(buf.device_ptr() + at as u64, host, c.stream.cu_stream()) }.map_err(driver("cuMemcpyHtoDAsync"))
    }

    /// Copies `len` elements of type `T` starting at byte offset `at` to the host (waits for
    /// every queued kernel first).
    pub fn download<T: Copy + Default>(&self, buf: &DeviceBuffer, at: usize, len: usize) -> Result<Vec<T>> {
        let bytes = len * std::mem::size_of::<T>();
        if at + bytes > buf.len_bytes() {
            return Err(KernelsError::invalid("download", format!("{bytes} bytes at {at} overflow a {}-byte buffer", buf.len_bytes())));
        }
        let mut host = vec![T::default(); len];
        if len == 0 {
            return Ok(host);
        }
        let c = match &self.driver {
            Driver::Sim(s) => {
                let src = buf.device_ptr() + at as u64;
                s.memory.check("download", src, bytes)?;
                // SAFETY: the source range lies inside the live host block of `buf` (checked);
                // `host` has exactly `bytes` bytes.
                unsafe { std::ptr::copy_nonoverlapping(src as *const u8, host.as_mut_ptr() as *mut u8, bytes) };
                return Ok(host);
            }
            Driver::Cuda(c) => c,
        };
        self.bind()?;
        // SAFETY: the source range lies inside `buf`; `host` has exactly `bytes` bytes and is
        // not touched until the stream is synchronized below.
        unsafe { result::memcpy_dtoh_async(&mut host, buf.device_ptr() + at as u64, c.stream.cu_stream()) }
            .map_err(driver("cuMemcpyDtoHAsync"))?;
        self.synchronize()?;
        Ok(host)
    }

    /// Device-to-device copy of `bytes` bytes.
    pub fn copy(&self, src: &DeviceBuffer, src_at: usize, dst: &mut DeviceBuffer, dst_at: usize, bytes: usize) -> Result<()> {
        if src_at + bytes > src.len_bytes() || dst_at + bytes > dst.len_bytes() {
            return Err(KernelsError::invalid("copy", format!("{bytes} bytes overflow a buffer")));
        }
        if bytes == 0 {
            return Ok(());
        }
        let c = match &self.driver {
            Driver::Sim(s) => {
                let (from, to) = (src.device_ptr() + src_at as u64, dst.device_ptr() + dst_at as u64);
                s.memory.check("copy source", from, bytes)?;
                s.memory.check("copy destination", to, bytes)?;
                // SAFETY: both ranges lie inside live host blocks (checked); `dst` is borrowed
                // mutably, so they are distinct allocations.
                unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, bytes) };
                return Ok(());
            }
            Driver::Cuda(c) => c,
        };
        self.bind()?;
        // SAFETY: both ranges lie inside their buffers; `dst` is borrowed mutably, so they are
        // distinct allocations.
        unsafe {
            result::memcpy_dtod_async(dst.device_ptr() + dst_at as u64, src.device_ptr() + src_at as u64, bytes, c.stream.cu_stream())
        }
        .map_err(driver("cuMemcpyDtoDAsync"))
    }

    /// Waits until every queued operation finished; reports asynchronous kernel errors. (The
    /// simulator runs everything synchronously: nothing to wait for.)
    pub fn synchronize(&self) -> Result<()> {
        match &self.driver {
            Driver::Cuda(c) => c.stream.synchronize().map_err(driver("cuStreamSynchronize")),
            Driver::Sim(_) => Ok(()),
        }
    }

    /// Makes this device's context current on the calling thread (nothing on the simulator).
    pub(crate) fn bind(&self) -> Result<()> {
        match &self.driver {
            Driver::Cuda(c) => c.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent")),
            Driver::Sim(_) => Ok(()),
        }
    }

    /// The kernel `kernel` of PTX module `module` (kernels/ptx/MODULE.ptx), loaded once.
    pub fn function(&self, module: &'static str, kernel: &str) -> Result<CudaFunction> {
        let c = self.cuda("a CUDA function")?;
        let key = (module, kernel.to_string());
        if let Some(f) = c.functions.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(f.clone());
        }
        let load_err = |reason: String| KernelsError::KernelLoad { module, kernel: kernel.to_string(), reason };
        let m = {
            let mut modules = c.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(module) {
                Some(m) => m.clone(),
                None => {
                    let src = crate::ptx::MODULES
                        .iter()
                        .find(|(name, _)| *name == module)
                        .map(|(_, src)| *src)
                        .ok_or_else(|| load_err("no such PTX module in this build".into()))?;
                    self.bind()?;
                    let m = c.ctx.load_module(Ptx::from_src(src)).map_err(|e| load_err(e.to_string()))?;
                    modules.insert(module, m.clone());
                    m
                }
            }
        };
        let f = m.load_function(kernel).map_err(|e| load_err(e.to_string()))?;
        c.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, f.clone());
        Ok(f)
    }

    /// Runs `f` with this device's cuBLAS handle (created on first use, bound to our stream);
    /// an error on the simulator, whose cuBLAS is `crate::sim::blas`.
    pub fn with_blas<R>(&self, f: impl FnOnce(&CudaBlas) -> Result<R>) -> Result<R> {
        let c = self.cuda("a cuBLAS handle")?;
        let mut guard = c.blas.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            self.bind()?;
            let blas = CudaBlas::new(c.stream.clone()).map_err(crate::error::cublas("cublasCreate"))?;
            *guard = Some(blas);
        }
        match guard.as_ref() {
            Some(b) => f(b),
            None => Err(KernelsError::invalid("cublas", "handle missing")),
        }
    }
}
