//! Device-side timing with CUDA events (what benchmarks and the dense-vs-2:4 dispatch use):
//! host clocks would include launch overhead and miss queued work. On the CUDA simulator timing
//! is refused with [`crate::KernelsError::Simulator`]: a CPU's time must never pass for a GPU's.

use cudarc::driver::sys::CUevent_flags;

use crate::Gpu;
use crate::error::{KernelsError, Result, driver};

/// Best (lowest) mean milliseconds per call of `f` over `reps` batches of `iters` calls, after
/// `warmup` untimed calls. `f` only queues work on `gpu`'s stream.
pub fn time_ms(gpu: &Gpu, warmup: usize, reps: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    if gpu.is_simulated() {
        return Err(KernelsError::Simulator {
            reason: format!("device timing is not available on {}: its times would not be GPU times", gpu.name()),
        });
    }
    for _ in 0..warmup {
        f()?;
    }
    gpu.synchronize()?;
    let ctx = gpu.context()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(driver("cuEventCreate"))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(driver("cuEventCreate"))?;
        start.record(gpu.stream()?).map_err(driver("cuEventRecord"))?;
        for _ in 0..iters.max(1) {
            f()?;
        }
        end.record(gpu.stream()?).map_err(driver("cuEventRecord"))?;
        end.synchronize().map_err(driver("cuEventSynchronize"))?;
        let ms = start.elapsed_ms(&end).map_err(driver("cuEventElapsedTime"))? as f64;
        best = best.min(ms / iters.max(1) as f64);
    }
    Ok(best)
}
