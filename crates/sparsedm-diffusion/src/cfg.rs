//! Classifier-free guidance (Ho & Salimans 2022) as U-ViT does it.
//!
//! U-ViT's class-conditional models (`imagenet256_uvit_large`) are built with
//! `num_classes = K + 1`: label `K` is the *null* class that training swaps in
//! with probability `p_uncond` (0.15 for ImageNet). At sampling time
//! (`train_ldm_discrete.py` / `eval_ldm_discrete.py`, `cfg_nnet`):
//!
//! ```text
//! ε̃(x, t, y) = ε(x, t, y) + w·(ε(x, t, y) − ε(x, t, ∅))  = (1 + w)·ε(x, t, y) − w·ε(x, t, ∅),   ∅ = K
//! ```
//!
//! with the guidance scale `w` = `config.sample.scale` (0.4 for ImageNet-256,
//! 1.0 for MS-COCO); `w = 0` is the plain conditional model.

use crate::error::{DiffusionError, Result};
use crate::model::EpsModel;
use sparsedm_tensor::{DType, Rng, Tensor};

/// An [`EpsModel`] that guides a class-conditional network; pass it to any
/// sampler with the class labels.
#[derive(Clone, Copy)]
pub struct ClassifierFreeGuidance<'a> {
    model: &'a dyn EpsModel,
    scale: f32,
    null_class: i64,
}

impl std::fmt::Debug for ClassifierFreeGuidance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierFreeGuidance").field("scale", &self.scale).field("null_class", &self.null_class).finish_non_exhaustive()
    }
}

impl<'a> ClassifierFreeGuidance<'a> {
    /// Guidance of `model` with scale `w` and the null label `null_class`.
    pub fn new(model: &'a dyn EpsModel, scale: f32, null_class: i64) -> Result<Self> {
        if !scale.is_finite() {
            return Err(DiffusionError::Config(format!("guidance scale must be finite, got {scale}")));
        }
        if null_class < 0 {
            return Err(DiffusionError::Config(format!("null class must be ≥ 0, got {null_class}")));
        }
        Ok(ClassifierFreeGuidance { model, scale, null_class })
    }

    /// U-ViT's convention: the network has `nnet_num_classes = K + 1` label
    /// embeddings and the null label is `K = nnet_num_classes − 1`.
    pub fn uvit(model: &'a dyn EpsModel, scale: f32, nnet_num_classes: i64) -> Result<Self> {
        if nnet_num_classes < 2 {
            return Err(DiffusionError::Config(format!("a guided U-ViT needs num_classes ≥ 2 (K + null), got {nnet_num_classes}")));
        }
        Self::new(model, scale, nnet_num_classes - 1)
    }

    /// The guidance scale `w`.
    pub fn scale(&self) -> f32 {
        self.scale
    }
    /// The null label.
    pub fn null_class(&self) -> i64 {
        self.null_class
    }
}

impl EpsModel for ClassifierFreeGuidance<'_> {
    fn predict_eps(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let y = y.ok_or_else(|| DiffusionError::Input {
            what: "classifier-free guidance".into(),
            msg: "needs class labels y [B] (i64)".into(),
        })?;
        let cond = self.model.predict_eps(x, t, Some(y))?;
        if self.scale == 0.0 {
            return Ok(cond);
        }
        let b = y.elem_count();
        let null = Tensor::from_vec_i64(vec![self.null_class; b], y.shape(), &y.device())?;
        let uncond = self.model.predict_eps(x, t, Some(&null))?;
        // U-ViT: _cond + scale * (_cond - _uncond)
        Ok(cond.add(&cond.sub(&uncond)?.mul_scalar(self.scale)?)?)
    }
}

/// Training-side label dropping for CFG: each label becomes `null_class`
/// with probability `p_uncond` (one uniform draw per label from `rng`).
pub fn drop_labels(y: &Tensor, p_uncond: f32, null_class: i64, rng: &mut Rng) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p_uncond) {
        return Err(DiffusionError::Config(format!("p_uncond must be in [0, 1], got {p_uncond}")));
    }
    if y.dtype() != DType::I64 || y.rank() != 1 {
        return Err(DiffusionError::Input {
            what: "drop_labels".into(),
            msg: format!("labels must be i64 [B], got {:?} {:?}", y.dtype(), y.shape()),
        });
    }
    let u = rng.uniform_vec(y.elem_count(), 0.0, 1.0);
    let out: Vec<i64> = y.to_vec_i64()?.into_iter().zip(u).map(|(l, u)| if u < p_uncond { null_class } else { l }).collect();
    Ok(Tensor::from_vec_i64(out, y.shape(), &y.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsedm_tensor::Device;

    /// ε = label + 10·t, broadcast over x.
    struct LabelEcho;
    impl EpsModel for LabelEcho {
        fn predict_eps(&self, x: &Tensor, t: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
            let y = y.unwrap().to_vec_i64()?;
            let t = t.to_vec_f32()?;
            let per: usize = x.shape()[1..].iter().product();
            let v: Vec<f32> = (0..x.elem_count()).map(|i| y[i / per] as f32 + 10.0 * t[i / per]).collect();
            Ok(Tensor::from_vec(v, x.shape(), &x.device())?)
        }
    }

    #[test]
    fn guidance_formula_and_null_label() {
        let dev = Device::Cpu;
        let m = LabelEcho;
        let g = ClassifierFreeGuidance::uvit(&m, 0.4, 1001).unwrap();
        assert_eq!(g.null_class(), 1000);
        let x = Tensor::zeros(&[2, 1, 1, 1], &dev).unwrap();
        let t = Tensor::from_vec(vec![0.5, 0.25], &[2], &dev).unwrap();
        let y = Tensor::from_vec_i64(vec![3, 7], &[2], &dev).unwrap();
        let e = g.predict_eps(&x, &t, Some(&y)).unwrap().to_vec_f32().unwrap();
        // (1 + w)·(y + 10t) − w·(1000 + 10t)
        let want = [1.4 * 8.0 - 0.4 * 1005.0, 1.4 * 9.5 - 0.4 * 1002.5];
        for (a, b) in e.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{e:?} vs {want:?}");
        }
        assert!(g.predict_eps(&x, &t, None).is_err());
    }

    #[test]
    fn label_dropping_rate() {
        let dev = Device::Cpu;
        let y = Tensor::from_vec_i64(vec![5; 20_000], &[20_000], &dev).unwrap();
        let d = drop_labels(&y, 0.15, 1000, &mut Rng::new(0)).unwrap().to_vec_i64().unwrap();
        let frac = d.iter().filter(|&&l| l == 1000).count() as f64 / 20_000.0;
        // 5 standard errors of a Bernoulli(0.15) mean over 20k draws: 5·√(0.15·0.85/20000) ≈ 0.0126.
        assert!((frac - 0.15).abs() < 0.0126, "{frac}");
        assert!(d.iter().all(|&l| l == 5 || l == 1000));
    }
}
