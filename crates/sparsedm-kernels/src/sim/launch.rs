//! Kernel launches on the simulator: the module's library is built and loaded at first use
//! (`compile.rs`), each kernel's C++ signature is read from the library and checked against the
//! arguments (count and byte sizes), every pointer argument must point into a live buffer
//! (`memory.rs`: a dropped buffer is a use after free), and the grid runs on the host: ranges of
//! blocks in parallel on rayon's threads, the threads of each block as fibers or, for kernels
//! without barriers or warp operations, as a plain loop (`catalog.rs`).

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{DeviceRepr, LaunchConfig};
use rayon::prelude::*;

use super::catalog::{KernelInfo, kernels_of};
use super::memory::{SimMemory, sim_err};
use crate::error::{KernelsError, Result};

/// One kernel argument: the address and size of a host value of the kernel parameter's type.
#[derive(Debug, Clone, Copy)]
pub struct SimArg<'a> {
    ptr: *const c_void,
    size: usize,
    _value: PhantomData<&'a ()>,
}

impl<'a> SimArg<'a> {
    /// The argument `v` (any type the real launch accepts).
    pub fn of<T: DeviceRepr>(v: &'a T) -> SimArg<'a> {
        SimArg { ptr: v as *const T as *const c_void, size: std::mem::size_of::<T>(), _value: PhantomData }
    }

    /// The value as a device address (for a pointer parameter: 8 bytes).
    fn as_u64(&self) -> Option<u64> {
        // SAFETY: `ptr` points to a live value of `size` bytes (borrowed for 'a); an unaligned
        // read copes with any alignment of the source.
        (self.size == 8).then(|| unsafe { std::ptr::read_unaligned(self.ptr as *const u64) })
    }
}

type RunFn = unsafe extern "C" fn(*const Launch, *const *const c_void) -> i32;
type SigFn = unsafe extern "C" fn(*mut u32, *mut u8, u32) -> u32;
type ErrFn = unsafe extern "C" fn() -> *const c_char;

/// `struct SdmSimLaunch` of cuda_emu.h.
#[repr(C)]
struct Launch {
    grid: u32,
    block: u32,
    first: u32,
    last: u32,
    fibers: i32,
}

/// A kernel ready to run: its entry point, signature and scheduling mode.
#[derive(Debug, Clone)]
struct Entry {
    run: RunFn,
    error: ErrFn,
    sizes: Vec<u32>,
    is_ptr: Vec<bool>,
    fibers: bool,
}

/// A loaded module library and its kernels.
#[derive(Debug)]
struct Module {
    _lib: libloading::Library,
    entries: HashMap<String, Entry>,
}

/// A module loaded once per process, or why it could not be.
type ModuleCell = Arc<OnceLock<std::result::Result<Arc<Module>, String>>>;

/// The loaded modules of the simulator (libraries stay loaded for the life of the process).
#[derive(Debug, Default)]
pub(crate) struct Modules {
    cells: Mutex<HashMap<&'static str, ModuleCell>>,
}

fn load(module: &'static str) -> std::result::Result<Module, String> {
    let ptx = crate::ptx::MODULES
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, p)| *p)
        .ok_or_else(|| format!("no kernel module {module} in this build"))?;
    let kernels: Vec<KernelInfo> = kernels_of(ptx);
    let names: Vec<String> = kernels.iter().map(|k| k.name.clone()).collect();
    let path = super::compile::build(module, &names).map_err(|e| e.to_string())?;
    // SAFETY: the library was built from our own sources by `compile::build`; its initialisers
    // only set up C++ statics.
    let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    // SAFETY: cuda_emu.h declares `const char* sdm_sim_error()`.
    let error: ErrFn = *unsafe { lib.get::<ErrFn>(b"sdm_sim_error") }.map_err(|e| format!("{}: {e}", path.display()))?;
    let mut entries = HashMap::new();
    for k in kernels {
        // SAFETY: SDM_SIM_ENTRY defines both symbols with exactly these C signatures.
        let run: RunFn =
            *unsafe { lib.get::<RunFn>(format!("sdm_sim_run_{}", k.name).as_bytes()) }.map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: as above.
        let sig: SigFn =
            *unsafe { lib.get::<SigFn>(format!("sdm_sim_sig_{}", k.name).as_bytes()) }.map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut sizes, mut ptrs) = (vec![0u32; 32], vec![0u8; 32]);
        // SAFETY: both arrays hold 32 elements, the capacity passed.
        let n = unsafe { sig(sizes.as_mut_ptr(), ptrs.as_mut_ptr(), 32) } as usize;
        if n > 32 {
            return Err(format!("kernel {} has {n} parameters; the simulator takes at most 32", k.name));
        }
        sizes.truncate(n);
        ptrs.truncate(n);
        entries.insert(k.name, Entry { run, error, sizes, is_ptr: ptrs.iter().map(|&p| p != 0).collect(), fibers: k.needs_fibers });
    }
    Ok(Module { _lib: lib, entries })
}

impl Modules {
    fn get(&self, module: &'static str) -> Result<Arc<Module>> {
        let cell = self.cells.lock().unwrap_or_else(|e| e.into_inner()).entry(module).or_default().clone();
        cell.get_or_init(|| load(module).map(Arc::new)).clone().map_err(|reason| KernelsError::KernelLoad {
            module,
            kernel: "*".into(),
            reason,
        })
    }

    /// Runs `module::kernel` over `cfg` with `args` after checking them (see the module docs).
    pub(crate) fn launch(&self, memory: &SimMemory, module: &'static str, kernel: &str, cfg: LaunchConfig, args: &[SimArg]) -> Result<()> {
        let m = self.get(module)?;
        let e = m.entries.get(kernel).ok_or_else(|| KernelsError::KernelLoad {
            module,
            kernel: kernel.to_string(),
            reason: "no such kernel in the module".into(),
        })?;
        let bad = |reason: String| sim_err(format!("launch of {module}::{kernel}: {reason}"));
        let (g, b) = (cfg.grid_dim, cfg.block_dim);
        if g.1 != 1 || g.2 != 1 || b.1 != 1 || b.2 != 1 {
            return Err(bad(format!("grid {g:?} block {b:?}: the kernels of kernels/ABI.md use 1-D launches only")));
        }
        if g.0 == 0 || b.0 == 0 || b.0 > 1024 {
            return Err(bad(format!("invalid configuration: {} blocks of {} threads (CUDA allows 1..=1024 threads)", g.0, b.0)));
        }
        if cfg.shared_mem_bytes != 0 {
            return Err(bad("dynamic shared memory is not used by these kernels and not simulated".into()));
        }
        if args.len() != e.sizes.len() {
            return Err(bad(format!("{} arguments for {} parameters", args.len(), e.sizes.len())));
        }
        for (i, (a, (&size, &is_ptr))) in args.iter().zip(e.sizes.iter().zip(&e.is_ptr)).enumerate() {
            if a.size != size as usize {
                return Err(bad(format!("argument {i} has {} bytes, the parameter {size}", a.size)));
            }
            if is_ptr {
                let p = a.as_u64().unwrap_or(0);
                if p != 0 {
                    memory.check(&format!("{module}::{kernel} argument {i}"), p, 0)?;
                }
            }
        }
        let ptrs: Vec<usize> = args.iter().map(|a| a.ptr as usize).collect();
        let (grid, block) = (g.0, b.0);
        // Blocks per task: enough tasks to balance rayon's threads, few enough that a task's
        // fixed cost stays small against its blocks.
        let tasks = (rayon::current_num_threads() * 4).max(1) as u32;
        let per = grid.div_ceil(tasks).max(1);
        let chunks: Vec<(u32, u32)> = (0..grid).step_by(per as usize).map(|s| (s, (s + per).min(grid))).collect();
        let run_chunk = |&(first, last): &(u32, u32)| -> std::result::Result<(), String> {
            let l = Launch { grid, block, first, last, fibers: i32::from(e.fibers) };
            let argv: Vec<*const c_void> = ptrs.iter().map(|&p| p as *const c_void).collect();
            // SAFETY: the entry's signature was checked above (count and sizes), every pointer
            // argument points into a live buffer whose extent the typed launcher checked, and
            // `argv` points to the argument values, alive for the call.
            let rc = unsafe { (e.run)(&l, argv.as_ptr()) };
            if rc == 0 {
                return Ok(());
            }
            // SAFETY: sdm_sim_error returns this OS thread's NUL-terminated error buffer, which
            // the failed run on this same thread just wrote.
            Err(unsafe { CStr::from_ptr((e.error)()) }.to_string_lossy().into_owned())
        };
        let result = if chunks.len() == 1 { run_chunk(&chunks[0]) } else { chunks.par_iter().try_for_each(run_chunk) };
        result.map_err(bad)
    }
}
