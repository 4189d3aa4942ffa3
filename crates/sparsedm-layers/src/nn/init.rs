//! Parameter initialisation schemes (PyTorch's defaults and the ones the
//! reference models set explicitly). Randomness comes from the store's
//! seeded [`Rng`], so a model built twice with one seed is identical.

use sparsedm_tensor::{Device, Result, Rng, Tensor};

/// How a new parameter is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// Uniform in `[-bound, bound]`.
    Uniform(f32),
    /// Normal with this standard deviation.
    Normal(f32),
    /// Normal truncated to ±2 (absolute, as `timm`'s `trunc_normal_`), the
    /// U-ViT init for Linear weights and position embeddings.
    TruncNormal(f32),
    /// PyTorch's default for Linear/Conv weights and biases:
    /// U(−1/√fan_in, 1/√fan_in).
    DefaultFanIn(usize),
}

impl Init {
    pub fn tensor(self, shape: &[usize], rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v = match self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Uniform(b) => rng.uniform_vec(n, -b, b),
            Init::Normal(s) => rng.normal_vec(n).into_iter().map(|x| x * s).collect(),
            Init::TruncNormal(s) => {
                // Resample values outside [-2, 2] (absolute bounds).
                let mut out = Vec::with_capacity(n);
                while out.len() < n {
                    out.extend(rng.normal_vec(n - out.len()).into_iter().map(|x| x * s).filter(|x| x.abs() <= 2.0));
                }
                out
            }
            Init::DefaultFanIn(fan_in) => {
                let b = 1.0 / (fan_in.max(1) as f32).sqrt();
                rng.uniform_vec(n, -b, b)
            }
        };
        Tensor::from_vec(v, shape, device)
    }
}
