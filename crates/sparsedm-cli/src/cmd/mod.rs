//! One module per subcommand, plus the flags several of them share.

pub mod bench;
pub mod convert;
pub mod demo;
pub mod export;
pub mod fid;
pub mod forward;
pub mod inspect;
pub mod macs;
pub mod plot;
pub mod prune;
pub mod repro;
pub mod sample;
pub mod train;

use sparsedm_tensor::Device;
use sparsedm_train::vocab::Precision;

/// `--device auto|cpu|cuda|cuda:N`, shared by the commands that compute.
///
/// `cuda[:N]` runs the command's whole computation on that GPU (or on the
/// CUDA simulator under `SPARSEDM_CUDA_SIM=1`); a GPU that is not usable is
/// one error before any work. `auto` (the default) takes GPU 0 when it is
/// usable, else the CPU, and [`DeviceArg::announce`] says which and why in
/// one stderr line. Under `SPARSEDM_CUDA_SIM=1`, `auto` takes the CPU: the
/// simulator runs the kernels on the CPU, slower than the CPU backend, and
/// must never be picked as if it were a GPU; ask for it with `--device cuda`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArg {
    /// Where to compute: auto (GPU 0 when usable, else the CPU; one stderr line says which), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
}

impl DeviceArg {
    /// The device asked for, checked usable: a CUDA request on a machine or
    /// a build without a usable GPU is one clear error naming the flag,
    /// never a panic; `auto` never fails.
    pub fn resolve(&self) -> anyhow::Result<Device> {
        match self.device.as_str() {
            "auto" => Ok(auto_choice().0),
            s => {
                let device = Device::parse(s).map_err(|e| anyhow::anyhow!("--device {s}: {e}"))?;
                device.ensure_available().map_err(|e| anyhow::anyhow!("--device {s}: {e}"))?;
                Ok(device)
            }
        }
    }

    /// For `auto`, prints the one line saying where the command computes and
    /// why (nothing for an explicit device). Commands call it once their
    /// inputs have been checked, right before the work, so that a refused
    /// input stays a one-line error.
    pub fn announce(&self) {
        if self.device == "auto" {
            eprintln!("{}", auto_choice().1);
        }
    }
}

/// Whether `device` is the CUDA simulator (`SPARSEDM_CUDA_SIM=1`), whose
/// results are correct but whose times must never be reported as a GPU's.
pub fn is_simulated(device: Device) -> bool {
    match device {
        Device::Cpu => false,
        Device::Cuda(n) => sparsedm_kernels::Gpu::get(n).is_ok_and(|g| g.is_simulated()),
    }
}

/// What `--device auto` picks, and the line saying why.
fn auto_choice() -> (Device, String) {
    if sparsedm_kernels::sim::enabled() {
        return (
            Device::Cpu,
            format!(
                "--device auto: computing on the CPU: {}=1 makes CUDA device 0 a simulator, not a GPU (use --device cuda to run on it)",
                sparsedm_kernels::sim::SIM_ENV
            ),
        );
    }
    let gpu = Device::Cuda(0);
    match gpu.ensure_available() {
        Ok(()) => {
            let name = sparsedm_kernels::Gpu::get(0).map(|g| g.name().to_string()).unwrap_or_else(|_| "GPU".into());
            (gpu, format!("--device auto: computing on {gpu} ({name})"))
        }
        Err(e) => (Device::Cpu, format!("--device auto: computing on the CPU: no usable GPU ({e})")),
    }
}

/// `--precision f32|tf32|bf16` of the sampling and FID commands: the
/// precision of the CUDA matrix products (f32 accumulation in every mode).
#[derive(Debug, Clone, clap::Args)]
pub struct PrecisionArg {
    /// Precision of CUDA matrix products: f32 (default: the CPU's numbers), tf32, or bf16 (bf16 operands, f32
    /// accumulation). tf32 and bf16 need --device cuda.
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<Precision>,
}

impl PrecisionArg {
    /// The precision asked for on `device` (f32 unless asked: these
    /// commands' results then match the CPU's); tf32/bf16 on the CPU is
    /// an error.
    pub fn resolve(&self, device: Device) -> anyhow::Result<Precision> {
        Ok(sparsedm_train::precision::resolve(self.precision, device, Precision::F32, "--precision")?)
    }
}

/// The line `sample` and `forward` print after running a model with N:M
/// layers on the CPU: how many N:M layer calls (this thread's, since
/// `before`) the N:M kernels ran and how many the dense GEMM on the masked
/// weights did (the faster at their shapes); `None` when none ran.
pub fn nm_calls_line(before: sparsedm_tensor::nm_cpu::LayerCalls) -> Option<String> {
    let now = sparsedm_tensor::nm_cpu::layer_calls();
    let (dense, sparse) = (now.dense - before.dense, now.sparse - before.sparse);
    (dense + sparse > 0).then(|| {
        format!(
            "N:M layer calls: {sparse} on the N:M kernels, {dense} on the dense GEMM (faster at their shapes, or SPARSEDM_NM_PATH=dense)"
        )
    })
}

/// The line `sample` and `forward` print for a model with N:M layers: how
/// many of its layers deploy an N:M weight (a sparse checkpoint's listed
/// layers, a sparse run's masked ones), their patterns, and what runs them
/// on `device` (see `sparsedm_layers::deployed`), then how many masked
/// layers no N:M kernel takes (flat-index groups) and so run dense; `None`
/// for a dense model.
pub fn nm_layers_line(store: &sparsedm_layers::ParamStore, device: Device) -> Option<String> {
    let slots = store.sparse_slots();
    let patterns: Vec<String> = slots.iter().filter_map(|(_, s)| s.deployed_pattern()).map(|p| p.to_string()).collect();
    let flat = slots.iter().filter(|(_, s)| s.deployed_pattern().is_none() && s.plan().is_some_and(|p| p.is_masked())).count();
    if patterns.is_empty() && flat == 0 {
        return None;
    }
    let mut kinds = patterns.clone();
    kinds.sort();
    kinds.dedup();
    let how = match device {
        Device::Cpu => "run on the CPU's N:M kernels where they time faster than the dense GEMM (per layer shape)",
        Device::Cuda(_) => {
            "run by cuSPARSELt at bf16 precision (2:4-compatible weights), as dense products of the masked weights otherwise"
        }
    };
    let mut line = if patterns.is_empty() {
        "N:M layers: 0".to_string()
    } else {
        format!("N:M layers: {} ({}), {how}", patterns.len(), kinds.join(", "))
    };
    if flat > 0 {
        line += &format!("; {flat} masked with flat-index groups (not N:M along their inputs) run dense on their masked weights");
    }
    Some(line)
}
