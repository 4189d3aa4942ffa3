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

/// `--device auto|cpu|cuda|cuda:N`, shared by the commands that compute.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArg {
    /// Where to compute: auto (the CPU in this version: the GPU paths are built but not yet verified), cpu, cuda or cuda:N
    /// (CUDA: `sparsedm bench` only for now).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,
}

impl DeviceArg {
    /// The device asked for, checked usable (`auto` is the CPU): a CUDA
    /// request on a machine or a build without a usable GPU is one clear
    /// error, never a panic.
    pub fn resolve_any(&self) -> anyhow::Result<Device> {
        let device = match self.device.as_str() {
            // The CUDA tensor backend exists but the training, sampling and FID paths have
            // not been verified on a GPU yet, so `auto` stays on the CPU until they are.
            "auto" => Device::Cpu,
            s => Device::parse(s)?,
        };
        device.ensure_available().map_err(|e| anyhow::anyhow!("--device {}: {e}", self.device))?;
        Ok(device)
    }

    /// Like [`Self::resolve_any`], for the commands that run on the CPU
    /// only in this version (train, sample, FID, ...): a usable GPU is
    /// refused too. `sparsedm bench` takes `resolve_any`, so the GPU paths
    /// can be timed and checked before these commands open up.
    pub fn resolve(&self) -> anyhow::Result<Device> {
        let device = self.resolve_any()?;
        if device != Device::Cpu {
            // The tensor engine's CUDA backend (issue 7) is not part of this build's
            // training and sampling paths yet; `ensure_available` already refused above
            // in CPU-only builds, and this keeps a future GPU build honest.
            anyhow::bail!("--device {}: training, sampling and FID run on the CPU only in this version", self.device);
        }
        Ok(device)
    }
}
