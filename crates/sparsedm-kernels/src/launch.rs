//! Kernel launching: the `launch!` macro, the `SdmLayout` kernel argument, and the checks every
//! typed launcher makes before a pointer reaches a kernel (so the safe API cannot write out of
//! bounds: each buffer must hold every element its layout can reach).

use cudarc::driver::DeviceRepr;

use crate::abi::SdmLayout;
use crate::error::{KernelsError, Result};
use crate::pool::DeviceBuffer;

// SAFETY: SdmLayout is #[repr(C)], plain integers with the C struct's field order and size
// (checked against kernels/include/sdm_common.cuh by abi.rs's tests), so its bytes are a valid
// kernel argument.
unsafe impl DeviceRepr for SdmLayout {}

/// Launches `$module::$kernel` on `$gpu`'s stream with configuration `$cfg` and the listed
/// arguments (local variables: the launch builder borrows them). On the simulator the same
/// arguments go to the kernel compiled for the CPU (`crate::sim::launch`), which checks them
/// against the kernel's C++ signature and every pointer against the live buffers.
macro_rules! launch {
    ($gpu:expr, $module:literal, $kernel:expr, $cfg:expr, $($arg:ident),+ $(,)?) => {{
        let gpu: &$crate::Gpu = $gpu;
        match gpu.sim() {
            Some(sim) => {
                let args = [$($crate::sim::SimArg::of(&$arg)),+];
                sim.modules.launch(&sim.memory, $module, &$kernel, $cfg, &args)
            }
            None => {
                let func = gpu.function($module, &$kernel)?;
                gpu.bind()?;
                #[allow(unused_imports)]
                use cudarc::driver::PushKernelArg as _;
                let mut builder = gpu.stream()?.launch_builder(&func);
                $( builder.arg(&$arg); )+
                // SAFETY: the argument list matches the kernel's signature in kernels/ABI.md
                // (types and order), and the calling launcher checked every pointer's buffer
                // against the extent the kernel will touch.
                unsafe { builder.launch($cfg) }
                    .map(|_| ())
                    .map_err($crate::error::driver("cuLaunchKernel"))
            }
        }
    }};
}
pub(crate) use launch;

/// One past the largest element offset `l` reaches (0 for an empty view).
pub(crate) fn extent(l: &SdmLayout) -> usize {
    let rank = l.rank.max(0) as usize;
    if l.shape[..rank].contains(&0) {
        return 0;
    }
    let far: i64 = l.shape[..rank].iter().zip(&l.strides[..rank]).map(|(&s, &st)| (s - 1) * st).sum();
    (l.offset + far + 1).max(0) as usize
}

/// Number of elements of the view.
pub(crate) fn numel(l: &SdmLayout) -> usize {
    l.shape[..l.rank.max(0) as usize].iter().product::<i64>().max(0) as usize
}

/// Checks a strided operand: non-negative strides, and every reachable element inside `buf`.
pub(crate) fn check_view(op: &'static str, what: &str, l: &SdmLayout, buf: &DeviceBuffer, elem: usize) -> Result<()> {
    let rank = l.rank.max(0) as usize;
    if rank > l.shape.len() || l.offset < 0 || l.strides[..rank].iter().any(|&s| s < 0) {
        return Err(KernelsError::invalid(op, format!("{what}: unsupported layout {l:?}")));
    }
    buf.check_fits(op, what, extent(l), elem)
}

/// Checks that two views have the same shape (the kernels iterate one logical index space).
pub(crate) fn check_same_shape(op: &'static str, a: &SdmLayout, b: &SdmLayout) -> Result<()> {
    let (ra, rb) = (a.rank as usize, b.rank as usize);
    if ra != rb || a.shape[..ra] != b.shape[..rb] {
        return Err(KernelsError::invalid(op, format!("shapes differ: {:?} vs {:?}", &a.shape[..ra], &b.shape[..rb])));
    }
    Ok(())
}

/// `usize` → kernel `long long`.
pub(crate) fn i64_of(v: usize) -> i64 {
    v as i64
}
