//! 2:4 sparse GEMM on sparse tensor cores through cuSPARSELt, with everything that can be made
//! once made once (../shared/GPU.md §3: plan creation costs ~0.35 ms, which is why PyTorch's
//! per-call path is slower than dense):
//!
//! - one cuSPARSELt handle per device ([`SparseLt::get`]);
//! - a [`SparseWeight`] is a Linear weight `W [n, k]` (f16 or bf16, 2:4 along `k`) that was checked
//!   and compressed once, with its optional bias;
//! - each weight keeps one plan per activation row count `m` (rounded up to a multiple of 8),
//!   made on first use and, for bf16, algorithm-searched (`cusparseLtMatmulSearch`) then; f16
//!   plans keep cuSPARSELt's default algorithm (see [`searches`]).
//!
//! `Y [m, n] = X [m, k] · Wᵀ + bias` is computed as cuSPARSELt's `D = A·B` with the structured
//! `A = W` (row-major `n × k`), `B = Xᵀ` (column-major `k × m`, i.e. X's own memory) and
//! `D` column-major `n × m` with leading dimension `n` — which is exactly `Y` row-major. The bias
//! (one per output feature = per row of D) runs in the epilogue. Shapes cuSPARSELt cannot take
//! (`n` or `k` not a multiple of 16) are refused by [`SparseWeight::new`] with
//! [`KernelsError::Sparse`], so the caller can fall back to dense.
//!
//! On the CUDA simulator (`SPARSEDM_CUDA_SIM=1`) the same call sequence (structured descriptor,
//! prune check, compress, plan per row count, matmul) goes to `crate::sim::sparselt`, which
//! enforces cuSPARSELt's constraints and computes on the host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sparsedm_cuda_sys::cusparselt as lt;

use crate::error::{KernelsError, Result};
use crate::sim::sparselt as sim_lt;
use crate::{DeviceBuffer, Gpu, GpuDType};

/// Alignment (bytes) declared for every cuSPARSELt operand; the allocator's blocks are 512-byte
/// aligned, and row strides of multiples of 8 f16/bf16 elements keep rows 16-byte aligned.
const ALIGNMENT: u32 = 16;

fn sparse_err(call: &'static str) -> impl FnOnce(sparsedm_cuda_sys::Error) -> KernelsError {
    move |e| KernelsError::Sparse { call, reason: e.to_string() }
}

fn cuda_type(dt: GpuDType) -> Result<lt::cudaDataType> {
    match dt {
        GpuDType::F16 => Ok(lt::cudaDataType::CUDA_R_16F),
        GpuDType::BF16 => Ok(lt::cudaDataType::CUDA_R_16BF),
        GpuDType::F32 => Err(KernelsError::Sparse {
            call: "2:4 matmul",
            reason: "f32 has no 2:4 mode in cuSPARSELt (it uses 1:2); cast the layer to f16 or bf16".into(),
        }),
    }
}

/// The cuSPARSELt library handle of one real device.
struct LtLib {
    gpu: Arc<Gpu>,
    lib: &'static lt::CuSparseLt,
    handle: Box<lt::cusparseLtHandle_t>,
}

impl std::fmt::Debug for LtLib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LtLib").field("device", &self.gpu.ordinal()).finish()
    }
}

// SAFETY: the handle is an opaque 512-byte struct that cuSPARSELt documents as usable from any
// host thread; every call through it is serialized by the device's single stream and by the
// per-weight plan mutex.
unsafe impl Send for LtLib {}
// SAFETY: see Send; `&LtLib` only issues calls cuSPARSELt allows concurrently on one handle.
unsafe impl Sync for LtLib {}

static HANDLES: OnceLock<Mutex<HashMap<usize, Arc<LtLib>>>> = OnceLock::new();

impl LtLib {
    /// The handle of `gpu`'s device, created on first use. Fails cleanly when libcusparseLt is
    /// missing or of another version than the bindings.
    fn open(gpu: &Arc<Gpu>) -> Result<Arc<LtLib>> {
        let map = HANDLES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(&gpu.ordinal()) {
            return Ok(h.clone());
        }
        let lib = lt::library().map_err(sparse_err("load libcusparseLt"))?;
        gpu.bind()?;
        // SAFETY: a zeroed opaque struct is what cusparseLtInit expects to fill in.
        let mut handle: Box<lt::cusparseLtHandle_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `handle` points to writable memory of the right size and alignment.
        lt::check(unsafe { lib.cusparseLtInit(&mut *handle) }, "cusparseLtInit").map_err(sparse_err("cusparseLtInit"))?;
        let h = Arc::new(LtLib { gpu: gpu.clone(), lib, handle });
        map.insert(gpu.ordinal(), h.clone());
        Ok(h)
    }

    fn call(&self, what: &'static str, status: lt::cusparseStatus_t) -> Result<()> {
        lt::check(status, what).map_err(sparse_err(what))
    }

    fn stream(&self) -> lt::cudaStream_t {
        // Only real devices have an LtLib (see SparseLt::get), so the stream exists.
        self.gpu.stream().map_or(std::ptr::null_mut(), |s| s.cu_stream() as lt::cudaStream_t)
    }
}

impl Drop for LtLib {
    fn drop(&mut self) {
        // SAFETY: the handle was initialised by cusparseLtInit and is destroyed once; every
        // weight and plan made with it holds an Arc to this value, so none outlives it.
        unsafe { self.lib.cusparseLtDestroy(&*self.handle) };
    }
}

/// A dense matrix descriptor, destroyed on drop.
struct MatDesc {
    lt: Arc<LtLib>,
    desc: Box<lt::cusparseLtMatDescriptor_t>,
}

impl MatDesc {
    fn dense(lt: &Arc<LtLib>, rows: usize, cols: usize, ld: usize, dt: GpuDType, order: lt::cusparseOrder_t) -> Result<MatDesc> {
        // SAFETY: zeroed opaque storage for the init call to fill.
        let mut desc: Box<lt::cusparseLtMatDescriptor_t> = Box::new(unsafe { std::mem::zeroed() });
        let ty = cuda_type(dt)?;
        // SAFETY: the handle is initialised; `desc` is writable descriptor storage.
        let st = unsafe {
            lt.lib.cusparseLtDenseDescriptorInit(&*lt.handle, &mut *desc, rows as i64, cols as i64, ld as i64, ALIGNMENT, ty, order)
        };
        lt.call("cusparseLtDenseDescriptorInit", st)?;
        Ok(MatDesc { lt: lt.clone(), desc })
    }

    fn structured(lt: &Arc<LtLib>, rows: usize, cols: usize, dt: GpuDType) -> Result<MatDesc> {
        // SAFETY: zeroed opaque storage for the init call to fill.
        let mut desc: Box<lt::cusparseLtMatDescriptor_t> = Box::new(unsafe { std::mem::zeroed() });
        let ty = cuda_type(dt)?;
        // SAFETY: as in `dense`; row-major `rows × cols` with leading dimension `cols`.
        let st = unsafe {
            lt.lib.cusparseLtStructuredDescriptorInit(
                &*lt.handle,
                &mut *desc,
                rows as i64,
                cols as i64,
                cols as i64,
                ALIGNMENT,
                ty,
                lt::cusparseOrder_t::CUSPARSE_ORDER_ROW,
                lt::cusparseLtSparsity_t::CUSPARSELT_SPARSITY_50_PERCENT,
            )
        };
        lt.call("cusparseLtStructuredDescriptorInit", st)?;
        Ok(MatDesc { lt: lt.clone(), desc })
    }
}

impl Drop for MatDesc {
    fn drop(&mut self) {
        // SAFETY: initialised by one of the init calls above, destroyed once.
        unsafe { self.lt.lib.cusparseLtMatDescriptorDestroy(&*self.desc) };
    }
}

/// A plan for one row count: matmul descriptor, algorithm selection, plan, workspace.
struct Plan {
    lt: Arc<LtLib>,
    // Descriptors the matmul descriptor refers to: kept alive as long as the plan.
    _b: MatDesc,
    _d: MatDesc,
    _matmul: Box<lt::cusparseLtMatmulDescriptor_t>,
    alg: Box<lt::cusparseLtMatmulAlgSelection_t>,
    plan: Box<lt::cusparseLtMatmulPlan_t>,
    workspace: Option<DeviceBuffer>,
    searched: bool,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each object was initialised in `SparseWeight::plan` and is destroyed once, in
        // reverse order of creation; the descriptors it refers to drop after this body.
        unsafe {
            self.lt.lib.cusparseLtMatmulPlanDestroy(&*self.plan);
            self.lt.lib.cusparseLtMatmulAlgSelectionDestroy(&*self.alg);
        }
    }
}

/// A weight compressed by the real cuSPARSELt.
struct LibWeight {
    lt: Arc<LtLib>,
    n: usize,
    k: usize,
    dtype: GpuDType,
    desc: MatDesc,
    compressed: DeviceBuffer,
    bias: Option<DeviceBuffer>,
    plans: Mutex<HashMap<usize, Plan>>,
}

impl std::fmt::Debug for LibWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibWeight").field("n", &self.n).field("k", &self.k).field("dtype", &self.dtype).finish()
    }
}

// SAFETY: the raw descriptors are only used through `&self` methods that lock `plans` around
// every cuSPARSELt call that mutates a plan; the descriptor of W is read-only after creation.
unsafe impl Send for LibWeight {}
// SAFETY: see Send.
unsafe impl Sync for LibWeight {}

/// Whether plans for `dtype` are algorithm-searched (`cusparseLtMatmulSearch`) on first use.
///
/// Not for f16: on the H200 (sm_90, driver 580, cuSPARSELt 0.8.0) the search of an f16 plan
/// runs a kernel that dies with `CUDA_ERROR_ILLEGAL_INSTRUCTION` and returns
/// `CUSPARSE_STATUS_INTERNAL_ERROR`, which leaves the CUDA context unusable for the rest of the
/// process. A plain C++ program with cuSPARSELt's own calls does the same (2026-12-04, every
/// shape tried: 256×128×256, 1000×384×512 with and without bias, 80×64×1024, 32896×1536×512,
/// blocking and non-blocking streams), while the same plans in bf16 search fine and f16
/// plans run fine with the default algorithm. PyTorch's `_cslt_sparse_mm` does not search
/// either unless asked.
pub fn searches(dtype: GpuDType) -> bool {
    dtype == GpuDType::BF16
}

/// Whether cuSPARSELt can take a weight of this shape as the structured operand.
pub fn shape_supported(n: usize, k: usize) -> bool {
    n > 0 && k > 0 && n.is_multiple_of(16) && k.is_multiple_of(16)
}

impl LibWeight {
    /// Checks that `w` (`[n, k]` row-major, `dtype`) is 2:4 along `k` and compresses it. `bias`
    /// (`n` values of `dtype`) is copied. A weight that is not 2:4 is an error naming the shape;
    /// an unsupported shape is a [`KernelsError::Sparse`] the caller can answer with dense.
    pub fn new(lt: &Arc<LtLib>, w: &DeviceBuffer, n: usize, k: usize, dtype: GpuDType, bias: Option<&DeviceBuffer>) -> Result<LibWeight> {
        if !shape_supported(n, k) {
            return Err(KernelsError::Sparse {
                call: "2:4 weight",
                reason: format!("weight [{n}, {k}]: cuSPARSELt needs both dimensions to be multiples of 16"),
            });
        }
        w.check_fits("sparse weight", "weight", n * k, dtype.size())?;
        let gpu = &lt.gpu;
        let desc = MatDesc::structured(lt, n, k, dtype)?;
        gpu.bind()?;
        let valid = gpu.alloc_zeroed(4)?;
        // SAFETY: the descriptor describes W's n×k row-major storage, which `w` holds (checked);
        // `valid` is a device int the check writes; both calls are ordered on our stream.
        let st = unsafe {
            lt.lib.cusparseLtSpMMAPruneCheck2(
                &*lt.handle,
                &*desc.desc,
                1,
                lt::cusparseOperation_t::CUSPARSE_OPERATION_NON_TRANSPOSE,
                w.device_ptr() as *const _,
                valid.device_ptr() as *mut _,
                lt.stream(),
            )
        };
        lt.call("cusparseLtSpMMAPruneCheck2", st)?;
        let flag: Vec<i32> = gpu.download(&valid, 0, 1)?;
        if flag[0] != 0 {
            return Err(KernelsError::invalid("2:4 weight", format!("weight [{n}, {k}] is not 2:4 sparse along its input dimension")));
        }
        drop(valid);
        let (mut size, mut buf_size) = (0usize, 0usize);
        // SAFETY: the descriptor is initialised; the outputs are host usizes.
        let st = unsafe { lt.lib.cusparseLtSpMMACompressedSize2(&*lt.handle, &*desc.desc, &mut size, &mut buf_size) };
        lt.call("cusparseLtSpMMACompressedSize2", st)?;
        let compressed = gpu.alloc(size)?;
        let scratch = gpu.alloc(buf_size.max(1))?;
        // SAFETY: `compressed` and `scratch` have the sizes cuSPARSELt asked for; `w` holds the
        // dense matrix the descriptor describes; ordered on our stream.
        let st = unsafe {
            lt.lib.cusparseLtSpMMACompress2(
                &*lt.handle,
                &*desc.desc,
                1,
                lt::cusparseOperation_t::CUSPARSE_OPERATION_NON_TRANSPOSE,
                w.device_ptr() as *const _,
                compressed.device_ptr() as *mut _,
                scratch.device_ptr() as *mut _,
                lt.stream(),
            )
        };
        lt.call("cusparseLtSpMMACompress2", st)?;
        let bias = match bias {
            Some(b) => {
                b.check_fits("sparse weight", "bias", n, dtype.size())?;
                let mut copy = gpu.alloc(n * dtype.size())?;
                gpu.copy(b, 0, &mut copy, 0, n * dtype.size())?;
                Some(copy)
            }
            None => None,
        };
        gpu.synchronize()?;
        drop(scratch);
        Ok(LibWeight { lt: lt.clone(), n, k, dtype, desc, compressed, bias, plans: Mutex::new(HashMap::new()) })
    }

    /// Bytes of the compressed weight (about 56 % of the dense one for f16).
    pub fn compressed_bytes(&self) -> usize {
        self.compressed.len_bytes()
    }

    fn plan(&self, m_pad: usize) -> Result<Plan> {
        let lt = &self.lt;
        let col = lt::cusparseOrder_t::CUSPARSE_ORDER_COL;
        let b = MatDesc::dense(lt, self.k, m_pad, self.k, self.dtype, col)?;
        let d = MatDesc::dense(lt, self.n, m_pad, self.n, self.dtype, col)?;
        let non_t = lt::cusparseOperation_t::CUSPARSE_OPERATION_NON_TRANSPOSE;
        // SAFETY: zeroed opaque storage for the init calls to fill.
        let (mut matmul, mut alg, mut plan): (
            Box<lt::cusparseLtMatmulDescriptor_t>,
            Box<lt::cusparseLtMatmulAlgSelection_t>,
            Box<lt::cusparseLtMatmulPlan_t>,
        ) = unsafe { (Box::new(std::mem::zeroed()), Box::new(std::mem::zeroed()), Box::new(std::mem::zeroed())) };
        // SAFETY: all descriptors are initialised and outlive the matmul descriptor (they move
        // into the Plan that owns it); C and D share one descriptor (D = A·B + 0·C).
        let st = unsafe {
            lt.lib.cusparseLtMatmulDescriptorInit(
                &*lt.handle,
                &mut *matmul,
                non_t,
                non_t,
                &*self.desc.desc,
                &*b.desc,
                &*d.desc,
                &*d.desc,
                lt::cusparseComputeType::CUSPARSE_COMPUTE_32F,
            )
        };
        lt.call("cusparseLtMatmulDescriptorInit", st)?;
        if let Some(bias) = &self.bias {
            let ptr = bias.device_ptr() as *const std::ffi::c_void;
            // SAFETY: the attribute is a device pointer, passed by address with its size; the
            // bias buffer lives as long as this weight and hence its plans.
            let st = unsafe {
                lt.lib.cusparseLtMatmulDescSetAttribute(
                    &*lt.handle,
                    &mut *matmul,
                    lt::cusparseLtMatmulDescAttribute_t::CUSPARSELT_MATMUL_BIAS_POINTER,
                    (&ptr) as *const *const std::ffi::c_void as *const _,
                    std::mem::size_of::<*const std::ffi::c_void>(),
                )
            };
            lt.call("cusparseLtMatmulDescSetAttribute(BIAS_POINTER)", st)?;
        }
        // SAFETY: the matmul descriptor is initialised; `alg` is writable storage.
        let st = unsafe {
            lt.lib.cusparseLtMatmulAlgSelectionInit(
                &*lt.handle,
                &mut *alg,
                &*matmul,
                lt::cusparseLtMatmulAlg_t::CUSPARSELT_MATMUL_ALG_DEFAULT,
            )
        };
        lt.call("cusparseLtMatmulAlgSelectionInit", st)?;
        // SAFETY: as above; `plan` is writable storage.
        let st = unsafe { lt.lib.cusparseLtMatmulPlanInit(&*lt.handle, &mut *plan, &*matmul, &*alg) };
        if let Err(e) = lt.call("cusparseLtMatmulPlanInit", st) {
            // SAFETY: the selection was initialised above and is not used again.
            unsafe { lt.lib.cusparseLtMatmulAlgSelectionDestroy(&*alg) };
            return Err(e);
        }
        let mut ws = 0usize;
        // SAFETY: the plan is initialised; `ws` is a host usize.
        let st = unsafe { lt.lib.cusparseLtMatmulGetWorkspace(&*lt.handle, &*plan, &mut ws) };
        let mut plan = Plan { lt: lt.clone(), _b: b, _d: d, _matmul: matmul, alg, plan, workspace: None, searched: false };
        lt.call("cusparseLtMatmulGetWorkspace", st)?;
        if ws > 0 {
            plan.workspace = Some(lt.gpu.alloc(ws)?);
        }
        Ok(plan)
    }

    /// `y[m, n] = x[m, k] · Wᵀ (+ bias)`, all of this weight's dtype. The first call for a given
    /// `m` makes and searches its plan. `x` and `y` may be shorter than the plan's padded row
    /// count (a multiple of 8): then padded copies are used.
    pub fn matmul(&self, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<()> {
        let esz = self.dtype.size();
        x.check_fits("sparse matmul", "input", m * self.k, esz)?;
        y.check_fits("sparse matmul", "output", m * self.n, esz)?;
        if m == 0 {
            return Ok(());
        }
        let gpu = &self.lt.gpu;
        let m_pad = m.div_ceil(8) * 8;
        let x_pad;
        let x_use = if x.len_bytes() >= m_pad * self.k * esz {
            x
        } else {
            let mut t = gpu.alloc(m_pad * self.k * esz)?;
            gpu.copy(x, 0, &mut t, 0, m * self.k * esz)?;
            x_pad = t;
            &x_pad
        };
        let direct = y.len_bytes() >= m_pad * self.n * esz;
        let mut y_pad = if direct { None } else { Some(gpu.alloc(m_pad * self.n * esz)?) };
        let y_ptr = match &y_pad {
            Some(t) => t.device_ptr(),
            None => y.device_ptr(),
        };

        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let plan = match plans.entry(m_pad) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.plan(m_pad)?),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let ws = plan.workspace.as_ref().map_or(std::ptr::null_mut(), |w| w.device_ptr() as *mut std::ffi::c_void);
        let mut stream = self.lt.stream();
        gpu.bind()?;
        if !plan.searched && searches(self.dtype) {
            // SAFETY: operands match the plan's descriptors (sizes checked above, padded to
            // m_pad rows); alpha/beta are f32 host scalars for the f32 compute type; C = D.
            let st = unsafe {
                self.lt.lib.cusparseLtMatmulSearch(
                    &*self.lt.handle,
                    &mut *plan.plan,
                    (&alpha) as *const f32 as *const _,
                    self.compressed.device_ptr() as *const _,
                    x_use.device_ptr() as *const _,
                    (&beta) as *const f32 as *const _,
                    y_ptr as *const _,
                    y_ptr as *mut _,
                    ws,
                    &mut stream,
                    1,
                )
            };
            self.lt.call("cusparseLtMatmulSearch", st)?;
            plan.searched = true;
        }
        // SAFETY: as for the search.
        let st = unsafe {
            self.lt.lib.cusparseLtMatmul(
                &*self.lt.handle,
                &*plan.plan,
                (&alpha) as *const f32 as *const _,
                self.compressed.device_ptr() as *const _,
                x_use.device_ptr() as *const _,
                (&beta) as *const f32 as *const _,
                y_ptr as *const _,
                y_ptr as *mut _,
                ws,
                &mut stream,
                1,
            )
        };
        self.lt.call("cusparseLtMatmul", st)?;
        drop(plans);
        if let Some(t) = y_pad.take() {
            gpu.copy(&t, 0, y, 0, m * self.n * esz)?;
        }
        Ok(())
    }
}

/// cuSPARSELt on one device: the real library on a GPU, its simulation (`crate::sim::sparselt`)
/// on the CUDA simulator.
pub struct SparseLt {
    gpu: Arc<Gpu>,
    /// `None` on the simulator.
    lib: Option<Arc<LtLib>>,
}

impl std::fmt::Debug for SparseLt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseLt").field("device", &self.gpu.ordinal()).field("simulated", &self.lib.is_none()).finish()
    }
}

impl SparseLt {
    /// The handle of `gpu`'s device, created on first use. Fails cleanly when libcusparseLt is
    /// missing or of another version than the bindings (never on the simulator).
    pub fn get(gpu: &Arc<Gpu>) -> Result<Arc<SparseLt>> {
        let lib = if gpu.is_simulated() { None } else { Some(LtLib::open(gpu)?) };
        Ok(Arc::new(SparseLt { gpu: gpu.clone(), lib }))
    }
}

/// Weights compressed by [`SparseWeight::new`] in this process (real or simulated).
static COMPRESSIONS: AtomicUsize = AtomicUsize::new(0);

/// How many weights [`SparseWeight::new`] has compressed in this process: tests use it to check
/// that a deployed model compresses each weight once, not at every forward.
pub fn compressions() -> usize {
    COMPRESSIONS.load(Ordering::Relaxed)
}

/// A 2:4 Linear weight `[n, k]` compressed for sparse tensor cores, with its optional bias.
#[derive(Debug)]
pub struct SparseWeight {
    n: usize,
    k: usize,
    dtype: GpuDType,
    imp: WeightImpl,
}

#[derive(Debug)]
enum WeightImpl {
    Lib(LibWeight),
    Sim(SimWeight),
}

impl SparseWeight {
    /// Checks that `w` (`[n, k]` row-major, `dtype`) is 2:4 along `k` and compresses it. `bias`
    /// (`n` values of `dtype`) is copied. A weight that is not 2:4 is an error naming the shape;
    /// an unsupported shape is a [`KernelsError::Sparse`] the caller can answer with dense.
    pub fn new(
        lt: &Arc<SparseLt>,
        w: &DeviceBuffer,
        n: usize,
        k: usize,
        dtype: GpuDType,
        bias: Option<&DeviceBuffer>,
    ) -> Result<SparseWeight> {
        let imp = match &lt.lib {
            Some(lib) => WeightImpl::Lib(LibWeight::new(lib, w, n, k, dtype, bias)?),
            None => WeightImpl::Sim(SimWeight::new(&lt.gpu, w, n, k, dtype, bias)?),
        };
        COMPRESSIONS.fetch_add(1, Ordering::Relaxed);
        Ok(SparseWeight { n, k, dtype, imp })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// Storage type of W, X and Y.
    pub fn dtype(&self) -> GpuDType {
        self.dtype
    }
    /// Bytes of the compressed weight (about 56 % of the dense one for f16).
    pub fn compressed_bytes(&self) -> usize {
        match &self.imp {
            WeightImpl::Lib(w) => w.compressed_bytes(),
            WeightImpl::Sim(w) => w.compressed.len_bytes(),
        }
    }

    /// `y[m, n] = x[m, k] · Wᵀ (+ bias)`, all of this weight's dtype. The first call for a given
    /// `m` makes and searches its plan. `x` and `y` may be shorter than the plan's padded row
    /// count (a multiple of 8): then padded copies are used.
    pub fn matmul(&self, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<()> {
        match &self.imp {
            WeightImpl::Lib(w) => w.matmul(x, m, y),
            WeightImpl::Sim(w) => w.matmul(x, m, y),
        }
    }
}

/// A weight compressed by the simulated cuSPARSELt: the same steps as [`LibWeight`].
#[derive(Debug)]
struct SimWeight {
    gpu: Arc<Gpu>,
    desc: sim_lt::Structured,
    compressed: DeviceBuffer,
    bias: Option<DeviceBuffer>,
    plans: Mutex<HashMap<usize, sim_lt::Plan>>,
}

impl SimWeight {
    fn memory(gpu: &Gpu) -> Result<&crate::sim::memory::SimMemory> {
        gpu.sim().map(|s| &*s.memory).ok_or_else(|| KernelsError::invalid("2:4 weight", "not a simulated device"))
    }

    fn new(gpu: &Arc<Gpu>, w: &DeviceBuffer, n: usize, k: usize, dtype: GpuDType, bias: Option<&DeviceBuffer>) -> Result<SimWeight> {
        let mem = Self::memory(gpu)?;
        let desc = sim_lt::structured(n, k, k, ALIGNMENT, dtype)?;
        w.check_fits("sparse weight", "weight", n * k, dtype.size())?;
        if !sim_lt::prune_check(mem, &desc, w.device_ptr())? {
            return Err(KernelsError::invalid("2:4 weight", format!("weight [{n}, {k}] is not 2:4 sparse along its input dimension")));
        }
        let compressed = gpu.alloc(sim_lt::compressed_size(&desc))?;
        sim_lt::compress(mem, &desc, w.device_ptr(), compressed.device_ptr())?;
        let bias = match bias {
            Some(b) => {
                b.check_fits("sparse weight", "bias", n, dtype.size())?;
                let mut copy = gpu.alloc(n * dtype.size())?;
                gpu.copy(b, 0, &mut copy, 0, n * dtype.size())?;
                Some(copy)
            }
            None => None,
        };
        Ok(SimWeight { gpu: gpu.clone(), desc, compressed, bias, plans: Mutex::new(HashMap::new()) })
    }

    fn matmul(&self, x: &DeviceBuffer, m: usize, y: &mut DeviceBuffer) -> Result<()> {
        let (n, k, dt) = (self.desc.rows, self.desc.cols, self.desc.dtype);
        let esz = dt.size();
        x.check_fits("sparse matmul", "input", m * k, esz)?;
        y.check_fits("sparse matmul", "output", m * n, esz)?;
        if m == 0 {
            return Ok(());
        }
        let gpu = &self.gpu;
        let m_pad = m.div_ceil(8) * 8;
        let x_pad;
        let x_use = if x.len_bytes() >= m_pad * k * esz {
            x
        } else {
            let mut t = gpu.alloc(m_pad * k * esz)?;
            gpu.copy(x, 0, &mut t, 0, m * k * esz)?;
            x_pad = t;
            &x_pad
        };
        let y_pad = if y.len_bytes() >= m_pad * n * esz { None } else { Some(gpu.alloc(m_pad * n * esz)?) };
        let y_ptr = y_pad.as_ref().map_or(y.device_ptr(), |t| t.device_ptr());
        let plan = {
            let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            match plans.get(&m_pad) {
                Some(p) => *p,
                None => {
                    let b = sim_lt::dense(k, m_pad, k, ALIGNMENT, dt)?;
                    let d = sim_lt::dense(n, m_pad, n, ALIGNMENT, dt)?;
                    *plans.entry(m_pad).or_insert(sim_lt::plan(self.desc, b, d)?)
                }
            }
        };
        let bias = self.bias.as_ref().map(|b| b.device_ptr());
        sim_lt::matmul(Self::memory(gpu)?, &plan, 1.0, self.compressed.device_ptr(), x_use.device_ptr(), 0.0, y_ptr, bias)?;
        if let Some(t) = y_pad {
            gpu.copy(&t, 0, y, 0, m * n * esz)?;
        }
        Ok(())
    }
}
