//! Random tensors and dropout: draws from a Philox [`Rng`] made by the
//! tensor's backend (the same stream on every device; see [`crate::rng`]).

use crate::op_kinds::Draw;
use crate::storage::{CpuStorage, Storage};
use crate::{Device, Error, Result, Rng, Tensor};

impl Tensor {
    /// Standard normal values.
    pub fn randn(shape: &[usize], rng: &mut Rng, device: &Device) -> Result<Tensor> {
        device.ensure_available()?;
        Ok(Tensor::from_storage(Storage::draw(shape.iter().product(), rng, Draw::Normal, *device)?, shape))
    }
    /// Uniform values in `[lo, hi)`.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        device.ensure_available()?;
        Ok(Tensor::from_storage(Storage::draw(shape.iter().product(), rng, Draw::Uniform(lo, hi), *device)?, shape))
    }
    /// Integers in `[lo, hi)` as i64, drawn on the host (same stream on every
    /// device; there is no integer Philox kernel) and placed on `device`;
    /// they are small (labels, timesteps).
    pub fn randint(shape: &[usize], lo: i64, hi: i64, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        device.ensure_available()?;
        let n = shape.iter().product();
        let t = Tensor::from_cpu_storage(CpuStorage::I64(rng.int_vec(n, lo, hi)?), shape)?;
        t.to_device(device)
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales
    /// the rest by 1/(1−p); the identity when `train` is false or `p` is 0.
    pub fn dropout(&self, p: f32, train: bool, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("dropout", format!("probability {p} outside [0, 1)")));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        let scale = 1.0 / (1.0 - p);
        let mask = Storage::draw(self.elem_count(), rng, Draw::Dropout(p, scale), self.device())?;
        self.mul(&Tensor::from_storage(mask, self.shape()))
    }
}
