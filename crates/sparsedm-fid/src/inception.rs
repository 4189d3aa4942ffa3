//! The FID variant of InceptionV3 (pytorch-fid's `fid_inception_v3`), the network behind every
//! published FID number, on the project's tensor engine.
//!
//! # Architecture
//! torchvision's `Inception3` (1008 classes, no auxiliary head) with pytorch-fid's changes:
//!
//! * every convolution is a `BasicConv2d`: `Conv2d` without bias, `BatchNorm2d(eps = 0.001)`
//!   in evaluation mode, ReLU;
//! * `Mixed_5b/5c/5d` are `FIDInceptionA`, `Mixed_6b..6e` `FIDInceptionC`, `Mixed_7b`
//!   `FIDInceptionE_1`: their 3×3 stride-1 average pools exclude the padded zeros from the
//!   divisor (`count_include_pad=False`, TensorFlow's behaviour);
//! * `Mixed_7c` is `FIDInceptionE_2`, whose pool branch uses a 3×3 stride-1 **max** pool
//!   (padding 1) — "likely an error" in the TensorFlow graph, but required for parity;
//! * `Mixed_6a` (InceptionB) and `Mixed_7a` (InceptionD) are torchvision's, with 3×3 stride-2
//!   max pools.
//!
//! pytorch-fid groups the layers into four stages, whose outputs [`InceptionV3::forward_stages`]
//! returns: stage 0 = `Conv2d_1a_3x3` (stride 2), `Conv2d_2a_3x3`, `Conv2d_2b_3x3` (padding 1),
//! max pool 3/2 → 64 × 73 × 73; stage 1 = `Conv2d_3b_1x1`, `Conv2d_4a_3x3`, max pool 3/2 →
//! 192 × 35 × 35; stage 2 = `Mixed_5b` … `Mixed_6e` → 768 × 17 × 17; stage 3 = `Mixed_7a`,
//! `Mixed_7b`, `Mixed_7c`, adaptive average pool to 1 × 1 → the 2048-d "pool3" features
//! ([`InceptionV3::forward`]).
//!
//! The input is what pytorch-fid feeds the first convolution: `[N, 3, 299, 299]` in `[-1, 1]`,
//! see [`crate::preprocess()`].
//!
//! # Weights
//! Parameters are created through a [`ParamStore`] under the state-dict names of
//! `pt_inception-2015-12-05-6726825d.pth` (`Conv2d_1a_3x3.conv.weight`,
//! `Mixed_5b.branch1x1.bn.running_mean`, …), so the checkpoint converted to safetensors with its
//! names unchanged loads as it is ([`InceptionV3::load`]). The classifier `fc.*` and the
//! `*.num_batches_tracked` counters may be present and are ignored; f16/bf16 tensors are widened
//! to f32; any missing, unexpected or mis-shaped tensor fails the load with one error listing
//! them all.
//!
//! # Batch-norm folding
//! For speed, a loaded network folds each batch norm into its convolution
//! (`w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`, computed in f64), so a `BasicConv2d` is one
//! convolution with bias followed by an in-place ReLU. This changes results by float32
//! round-off only (~1e-7 relative per layer); [`InceptionV3::unfold_batch_norm`] restores the
//! literal conv → batch norm → ReLU sequence.

use sparsedm_layers::{BatchNorm2d, Conv2d, Conv2dConfig, ParamStore};
use sparsedm_tensor::{Device, Tensor, no_grad};
use std::path::Path;

use crate::error::{FidError, Result};

/// Dimension of the pool3 features.
pub const POOL3_DIM: usize = 2048;
/// Side of the square input the network expects.
pub const INPUT_SIZE: usize = 299;
/// Batch-norm epsilon of every `BasicConv2d` (TensorFlow's 0.001).
pub const BATCH_NORM_EPS: f32 = 1e-3;
/// Number of classes of the (unused) classifier `fc` in the checkpoint.
pub const NUM_CLASSES: usize = 1008;

/// Whether a checkpoint tensor is one the feature network does not use: the classifier
/// (`fc.weight`, `fc.bias`) and the batch-norm update counters (`*.num_batches_tracked`).
pub fn is_ignored_checkpoint_tensor(name: &str) -> bool {
    name.starts_with("fc.") || name.ends_with(".num_batches_tracked")
}

// ---------------------------------------------------------------------------------------------
// BasicConv2d
// ---------------------------------------------------------------------------------------------

/// A convolution with its batch norm folded in (weight scaled per output channel, and a bias).
#[derive(Debug, Clone)]
struct Folded {
    weight: Tensor,
    bias: Tensor,
}

/// `BasicConv2d`: conv (no bias) → batch norm (eps 0.001, running statistics) → ReLU.
#[derive(Debug, Clone)]
struct BasicConv2d {
    store: ParamStore,
    conv: Conv2d,
    bn: BatchNorm2d,
    folded: Option<Folded>,
}

impl BasicConv2d {
    /// `BasicConv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding)` under the
    /// name prefix of `store` (`<prefix>.conv.weight`, `<prefix>.bn.*`).
    fn new(store: &ParamStore, cin: usize, cout: usize, kernel: (usize, usize), stride: usize, padding: (usize, usize)) -> Result<Self> {
        let cfg = Conv2dConfig { kernel, stride: (stride, stride), padding, bias: false };
        Ok(BasicConv2d {
            store: store.clone(),
            conv: Conv2d::new(&store.pp("conv"), cin, cout, cfg)?,
            bn: BatchNorm2d::new(&store.pp("bn"), cout, BATCH_NORM_EPS)?,
            folded: None,
        })
    }

    /// Square kernel `k`, stride `s`, padding `p`.
    fn square(store: &ParamStore, cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Result<Self> {
        Self::new(store, cin, cout, (k, k), s, (p, p))
    }

    /// The batch-norm tensor `bn.<name>` of this layer as f64 values.
    fn bn_values(&self, name: &str) -> Result<Vec<f64>> {
        let full = self.store.path(&format!("bn.{name}"));
        let t = self.store.get(&full).ok_or_else(|| sparsedm_layers::LayersError::Param { name: full, msg: "not registered".into() })?;
        Ok(t.to_vec_f32()?.into_iter().map(f64::from).collect())
    }

    /// Computes the folded convolution from the current weights of the store.
    fn fold(&mut self) -> Result<()> {
        let _g = no_grad();
        let w = self.conv.slot().effective_weight()?.detach();
        let shape = w.shape().to_vec();
        let (gamma, beta, mean, var) =
            (self.bn_values("weight")?, self.bn_values("bias")?, self.bn_values("running_mean")?, self.bn_values("running_var")?);
        let scale: Vec<f64> = gamma.iter().zip(&var).map(|(g, v)| g / (v + f64::from(BATCH_NORM_EPS)).sqrt()).collect();
        let per_out = shape[1..].iter().product::<usize>();
        let weight: Vec<f32> = w
            .to_vec_f32()?
            .chunks(per_out.max(1))
            .zip(&scale)
            .flat_map(|(row, &s)| row.iter().map(move |&x| (f64::from(x) * s) as f32))
            .collect();
        let bias: Vec<f32> = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| (b - m * s) as f32).collect();
        let device = self.store.device();
        self.folded =
            Some(Folded { weight: Tensor::from_vec(weight, &shape, &device)?, bias: Tensor::from_vec(bias, &[shape[0]], &device)? });
        Ok(())
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.conv.config();
        let y = match &self.folded {
            Some(f) => x.conv2d(&f.weight, Some(&f.bias), cfg.stride, cfg.padding)?,
            None => self.bn.forward(&self.conv.forward(x)?)?,
        };
        relu(y)
    }
}

/// ReLU, in place when `y` is an untracked fresh result (no graph to preserve), else as an op.
fn relu(y: Tensor) -> Result<Tensor> {
    if y.is_tracked() || !y.is_contiguous() {
        return Ok(y.relu()?);
    }
    y.update_f32(|v| {
        for x in v.iter_mut() {
            // A select (vectorises); unlike `max`, NaN stays NaN, as in PyTorch.
            *x = if *x < 0.0 { 0.0 } else { *x };
        }
    })?;
    Ok(y)
}

/// Concatenation along channels.
fn cat(parts: &[&Tensor]) -> Result<Tensor> {
    Ok(Tensor::cat(parts, 1)?)
}

/// The 3×3 stride-1 padding-1 pool of a block's pool branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolBranch {
    /// Average pool excluding padded zeros (`count_include_pad=False`).
    AvgExcludePad,
    /// Max pool (`FIDInceptionE_2`, Mixed_7c).
    Max,
}

impl PoolBranch {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            PoolBranch::AvgExcludePad => x.avg_pool2d(3, 1, 1, false)?,
            PoolBranch::Max => x.max_pool2d(3, 1, 1)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Inception blocks
// ---------------------------------------------------------------------------------------------

/// `FIDInceptionA` (Mixed_5b/5c/5d).
#[derive(Debug, Clone)]
struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(s: &ParamStore, cin: usize, pool_features: usize) -> Result<Self> {
        Ok(InceptionA {
            branch1x1: BasicConv2d::square(&s.pp("branch1x1"), cin, 64, 1, 1, 0)?,
            branch5x5_1: BasicConv2d::square(&s.pp("branch5x5_1"), cin, 48, 1, 1, 0)?,
            branch5x5_2: BasicConv2d::square(&s.pp("branch5x5_2"), 48, 64, 5, 1, 2)?,
            branch3x3dbl_1: BasicConv2d::square(&s.pp("branch3x3dbl_1"), cin, 64, 1, 1, 0)?,
            branch3x3dbl_2: BasicConv2d::square(&s.pp("branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
            branch3x3dbl_3: BasicConv2d::square(&s.pp("branch3x3dbl_3"), 96, 96, 3, 1, 1)?,
            branch_pool: BasicConv2d::square(&s.pp("branch_pool"), cin, pool_features, 1, 1, 0)?,
        })
    }

    fn layers(&mut self) -> Vec<&mut BasicConv2d> {
        vec![
            &mut self.branch1x1,
            &mut self.branch5x5_1,
            &mut self.branch5x5_2,
            &mut self.branch3x3dbl_1,
            &mut self.branch3x3dbl_2,
            &mut self.branch3x3dbl_3,
            &mut self.branch_pool,
        ]
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b5 = self.branch5x5_2.forward(&self.branch5x5_1.forward(x)?)?;
        let b3 = self.branch3x3dbl_3.forward(&self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x)?)?)?;
        let bp = self.branch_pool.forward(&PoolBranch::AvgExcludePad.apply(x)?)?;
        cat(&[&b1, &b5, &b3, &bp])
    }
}

/// `InceptionB` (Mixed_6a): grid reduction 35 → 17.
#[derive(Debug, Clone)]
struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    fn new(s: &ParamStore, cin: usize) -> Result<Self> {
        Ok(InceptionB {
            branch3x3: BasicConv2d::square(&s.pp("branch3x3"), cin, 384, 3, 2, 0)?,
            branch3x3dbl_1: BasicConv2d::square(&s.pp("branch3x3dbl_1"), cin, 64, 1, 1, 0)?,
            branch3x3dbl_2: BasicConv2d::square(&s.pp("branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
            branch3x3dbl_3: BasicConv2d::square(&s.pp("branch3x3dbl_3"), 96, 96, 3, 2, 0)?,
        })
    }

    fn layers(&mut self) -> Vec<&mut BasicConv2d> {
        vec![&mut self.branch3x3, &mut self.branch3x3dbl_1, &mut self.branch3x3dbl_2, &mut self.branch3x3dbl_3]
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3.forward(x)?;
        let bd = self.branch3x3dbl_3.forward(&self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x)?)?)?;
        let bp = x.max_pool2d(3, 2, 0)?;
        cat(&[&b3, &bd, &bp])
    }
}

/// `FIDInceptionC` (Mixed_6b..6e): factorised 7×7 convolutions.
#[derive(Debug, Clone)]
struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7_1: BasicConv2d,
    branch7x7_2: BasicConv2d,
    branch7x7_3: BasicConv2d,
    branch7x7dbl_1: BasicConv2d,
    branch7x7dbl_2: BasicConv2d,
    branch7x7dbl_3: BasicConv2d,
    branch7x7dbl_4: BasicConv2d,
    branch7x7dbl_5: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionC {
    fn new(s: &ParamStore, cin: usize, c7: usize) -> Result<Self> {
        let row = |name: &str, ci: usize, co: usize| BasicConv2d::new(&s.pp(name), ci, co, (1, 7), 1, (0, 3));
        let col = |name: &str, ci: usize, co: usize| BasicConv2d::new(&s.pp(name), ci, co, (7, 1), 1, (3, 0));
        Ok(InceptionC {
            branch1x1: BasicConv2d::square(&s.pp("branch1x1"), cin, 192, 1, 1, 0)?,
            branch7x7_1: BasicConv2d::square(&s.pp("branch7x7_1"), cin, c7, 1, 1, 0)?,
            branch7x7_2: row("branch7x7_2", c7, c7)?,
            branch7x7_3: col("branch7x7_3", c7, 192)?,
            branch7x7dbl_1: BasicConv2d::square(&s.pp("branch7x7dbl_1"), cin, c7, 1, 1, 0)?,
            branch7x7dbl_2: col("branch7x7dbl_2", c7, c7)?,
            branch7x7dbl_3: row("branch7x7dbl_3", c7, c7)?,
            branch7x7dbl_4: col("branch7x7dbl_4", c7, c7)?,
            branch7x7dbl_5: row("branch7x7dbl_5", c7, 192)?,
            branch_pool: BasicConv2d::square(&s.pp("branch_pool"), cin, 192, 1, 1, 0)?,
        })
    }

    fn layers(&mut self) -> Vec<&mut BasicConv2d> {
        vec![
            &mut self.branch1x1,
            &mut self.branch7x7_1,
            &mut self.branch7x7_2,
            &mut self.branch7x7_3,
            &mut self.branch7x7dbl_1,
            &mut self.branch7x7dbl_2,
            &mut self.branch7x7dbl_3,
            &mut self.branch7x7dbl_4,
            &mut self.branch7x7dbl_5,
            &mut self.branch_pool,
        ]
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b7 = self.branch7x7_3.forward(&self.branch7x7_2.forward(&self.branch7x7_1.forward(x)?)?)?;
        let mut bd = self.branch7x7dbl_1.forward(x)?;
        for layer in [&self.branch7x7dbl_2, &self.branch7x7dbl_3, &self.branch7x7dbl_4, &self.branch7x7dbl_5] {
            bd = layer.forward(&bd)?;
        }
        let bp = self.branch_pool.forward(&PoolBranch::AvgExcludePad.apply(x)?)?;
        cat(&[&b1, &b7, &bd, &bp])
    }
}

/// `InceptionD` (Mixed_7a): grid reduction 17 → 8.
#[derive(Debug, Clone)]
struct InceptionD {
    branch3x3_1: BasicConv2d,
    branch3x3_2: BasicConv2d,
    branch7x7x3_1: BasicConv2d,
    branch7x7x3_2: BasicConv2d,
    branch7x7x3_3: BasicConv2d,
    branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    fn new(s: &ParamStore, cin: usize) -> Result<Self> {
        Ok(InceptionD {
            branch3x3_1: BasicConv2d::square(&s.pp("branch3x3_1"), cin, 192, 1, 1, 0)?,
            branch3x3_2: BasicConv2d::square(&s.pp("branch3x3_2"), 192, 320, 3, 2, 0)?,
            branch7x7x3_1: BasicConv2d::square(&s.pp("branch7x7x3_1"), cin, 192, 1, 1, 0)?,
            branch7x7x3_2: BasicConv2d::new(&s.pp("branch7x7x3_2"), 192, 192, (1, 7), 1, (0, 3))?,
            branch7x7x3_3: BasicConv2d::new(&s.pp("branch7x7x3_3"), 192, 192, (7, 1), 1, (3, 0))?,
            branch7x7x3_4: BasicConv2d::square(&s.pp("branch7x7x3_4"), 192, 192, 3, 2, 0)?,
        })
    }

    fn layers(&mut self) -> Vec<&mut BasicConv2d> {
        vec![
            &mut self.branch3x3_1,
            &mut self.branch3x3_2,
            &mut self.branch7x7x3_1,
            &mut self.branch7x7x3_2,
            &mut self.branch7x7x3_3,
            &mut self.branch7x7x3_4,
        ]
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3_2.forward(&self.branch3x3_1.forward(x)?)?;
        let mut b7 = self.branch7x7x3_1.forward(x)?;
        for layer in [&self.branch7x7x3_2, &self.branch7x7x3_3, &self.branch7x7x3_4] {
            b7 = layer.forward(&b7)?;
        }
        let bp = x.max_pool2d(3, 2, 0)?;
        cat(&[&b3, &b7, &bp])
    }
}

/// `FIDInceptionE_1` (Mixed_7b, average pool) and `FIDInceptionE_2` (Mixed_7c, max pool).
#[derive(Debug, Clone)]
struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
    pool: PoolBranch,
}

impl InceptionE {
    fn new(s: &ParamStore, cin: usize, pool: PoolBranch) -> Result<Self> {
        let row = |name: &str, ci: usize, co: usize| BasicConv2d::new(&s.pp(name), ci, co, (1, 3), 1, (0, 1));
        let col = |name: &str, ci: usize, co: usize| BasicConv2d::new(&s.pp(name), ci, co, (3, 1), 1, (1, 0));
        Ok(InceptionE {
            branch1x1: BasicConv2d::square(&s.pp("branch1x1"), cin, 320, 1, 1, 0)?,
            branch3x3_1: BasicConv2d::square(&s.pp("branch3x3_1"), cin, 384, 1, 1, 0)?,
            branch3x3_2a: row("branch3x3_2a", 384, 384)?,
            branch3x3_2b: col("branch3x3_2b", 384, 384)?,
            branch3x3dbl_1: BasicConv2d::square(&s.pp("branch3x3dbl_1"), cin, 448, 1, 1, 0)?,
            branch3x3dbl_2: BasicConv2d::square(&s.pp("branch3x3dbl_2"), 448, 384, 3, 1, 1)?,
            branch3x3dbl_3a: row("branch3x3dbl_3a", 384, 384)?,
            branch3x3dbl_3b: col("branch3x3dbl_3b", 384, 384)?,
            branch_pool: BasicConv2d::square(&s.pp("branch_pool"), cin, 192, 1, 1, 0)?,
            pool,
        })
    }

    fn layers(&mut self) -> Vec<&mut BasicConv2d> {
        vec![
            &mut self.branch1x1,
            &mut self.branch3x3_1,
            &mut self.branch3x3_2a,
            &mut self.branch3x3_2b,
            &mut self.branch3x3dbl_1,
            &mut self.branch3x3dbl_2,
            &mut self.branch3x3dbl_3a,
            &mut self.branch3x3dbl_3b,
            &mut self.branch_pool,
        ]
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let t = self.branch3x3_1.forward(x)?;
        let (a, b) = (self.branch3x3_2a.forward(&t)?, self.branch3x3_2b.forward(&t)?);
        drop(t);
        let d = self.branch3x3dbl_2.forward(&self.branch3x3dbl_1.forward(x)?)?;
        let (da, db) = (self.branch3x3dbl_3a.forward(&d)?, self.branch3x3dbl_3b.forward(&d)?);
        drop(d);
        let bp = self.branch_pool.forward(&self.pool.apply(x)?)?;
        // cat([b1, cat([a, b]), cat([da, db]), bp]) == cat([b1, a, b, da, db, bp]).
        cat(&[&b1, &a, &b, &da, &db, &bp])
    }
}

// ---------------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------------

/// pytorch-fid's FID InceptionV3, up to the 2048-d pool3 features. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct InceptionV3 {
    store: ParamStore,
    conv2d_1a_3x3: BasicConv2d,
    conv2d_2a_3x3: BasicConv2d,
    conv2d_2b_3x3: BasicConv2d,
    conv2d_3b_1x1: BasicConv2d,
    conv2d_4a_3x3: BasicConv2d,
    mixed_5: [InceptionA; 3],
    mixed_6a: InceptionB,
    mixed_6: [InceptionC; 4],
    mixed_7a: InceptionD,
    mixed_7b: InceptionE,
    mixed_7c: InceptionE,
}

impl InceptionV3 {
    /// Builds the network with its parameters registered in `store` under the checkpoint's
    /// names (batch-norm running statistics as buffers). Values are the store's initial ones
    /// until weights are loaded into it (`store.load_safetensors(path, is_ignored_checkpoint_tensor)`);
    /// the network reads the store's tensors live and does not fold its batch norms.
    pub fn new(store: &ParamStore) -> Result<Self> {
        let conv = BasicConv2d::square;
        Ok(InceptionV3 {
            store: store.clone(),
            conv2d_1a_3x3: conv(&store.pp("Conv2d_1a_3x3"), 3, 32, 3, 2, 0)?,
            conv2d_2a_3x3: conv(&store.pp("Conv2d_2a_3x3"), 32, 32, 3, 1, 0)?,
            conv2d_2b_3x3: conv(&store.pp("Conv2d_2b_3x3"), 32, 64, 3, 1, 1)?,
            conv2d_3b_1x1: conv(&store.pp("Conv2d_3b_1x1"), 64, 80, 1, 1, 0)?,
            conv2d_4a_3x3: conv(&store.pp("Conv2d_4a_3x3"), 80, 192, 3, 1, 0)?,
            mixed_5: [
                InceptionA::new(&store.pp("Mixed_5b"), 192, 32)?,
                InceptionA::new(&store.pp("Mixed_5c"), 256, 64)?,
                InceptionA::new(&store.pp("Mixed_5d"), 288, 64)?,
            ],
            mixed_6a: InceptionB::new(&store.pp("Mixed_6a"), 288)?,
            mixed_6: [
                InceptionC::new(&store.pp("Mixed_6b"), 768, 128)?,
                InceptionC::new(&store.pp("Mixed_6c"), 768, 160)?,
                InceptionC::new(&store.pp("Mixed_6d"), 768, 160)?,
                InceptionC::new(&store.pp("Mixed_6e"), 768, 192)?,
            ],
            mixed_7a: InceptionD::new(&store.pp("Mixed_7a"), 768)?,
            mixed_7b: InceptionE::new(&store.pp("Mixed_7b"), 1280, PoolBranch::AvgExcludePad)?,
            mixed_7c: InceptionE::new(&store.pp("Mixed_7c"), 2048, PoolBranch::Max)?,
        })
    }

    /// Loads the converted pytorch-fid checkpoint (`pt_inception-2015-12-05-6726825d.pth` saved
    /// as safetensors with unchanged names) strictly, in evaluation mode, with batch norms
    /// folded into the convolutions.
    ///
    /// `fc.*` and `*.num_batches_tracked` are ignored; f16/bf16/f32 tensors are accepted. A
    /// missing, unexpected or mis-shaped tensor fails with [`FidError::Network`] listing every
    /// problem; an unreadable file fails naming the path.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let store = ParamStore::new(*device, 0);
        store.set_training(false);
        let mut net = Self::new(&store)?;
        store.load_safetensors(path, is_ignored_checkpoint_tensor)?;
        net.fold_batch_norm()?;
        Ok(net)
    }

    /// Like [`Self::load`], from tensors already in memory (`source` names them in errors).
    pub fn from_tensors(source: &str, tensors: Vec<(String, Tensor)>, device: &Device) -> Result<Self> {
        let store = ParamStore::new(*device, 0);
        store.set_training(false);
        let mut net = Self::new(&store)?;
        store.load_tensors(source, tensors, is_ignored_checkpoint_tensor)?;
        net.fold_batch_norm()?;
        Ok(net)
    }

    /// The parameter store (state-dict names → tensors).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.store.device()
    }

    fn layers(&mut self) -> Vec<&mut BasicConv2d> {
        let mut v = vec![
            &mut self.conv2d_1a_3x3,
            &mut self.conv2d_2a_3x3,
            &mut self.conv2d_2b_3x3,
            &mut self.conv2d_3b_1x1,
            &mut self.conv2d_4a_3x3,
        ];
        for m in &mut self.mixed_5 {
            v.extend(m.layers());
        }
        v.extend(self.mixed_6a.layers());
        for m in &mut self.mixed_6 {
            v.extend(m.layers());
        }
        v.extend(self.mixed_7a.layers());
        v.extend(self.mixed_7b.layers());
        v.extend(self.mixed_7c.layers());
        v
    }

    /// Folds every batch norm into its convolution, from the store's current values (call it
    /// again after changing them). See the [module docs](self#batch-norm-folding).
    pub fn fold_batch_norm(&mut self) -> Result<()> {
        for layer in self.layers() {
            layer.fold()?;
        }
        Ok(())
    }

    /// Drops the folded convolutions: the forward pass is again conv → batch norm → ReLU on the
    /// store's live tensors.
    pub fn unfold_batch_norm(&mut self) {
        for layer in self.layers() {
            layer.folded = None;
        }
    }

    /// Whether the batch norms are folded into the convolutions.
    pub fn is_folded(&self) -> bool {
        self.conv2d_1a_3x3.folded.is_some()
    }

    fn check_input(x: &Tensor) -> Result<()> {
        let s = x.shape();
        if s.len() != 4 || s[1] != 3 || s[0] == 0 {
            return Err(FidError::ShapeMismatch {
                what: "InceptionV3 input".into(),
                expected: "[N, 3, H, W] with N > 0 (preprocessed to [N, 3, 299, 299])".into(),
                actual: format!("{s:?}"),
            });
        }
        // The smallest input the stride-2 stages accept without an empty feature map.
        if s[2] < 75 || s[3] < 75 {
            return Err(FidError::ShapeMismatch {
                what: "InceptionV3 input".into(),
                expected: "spatial size at least 75x75 (pytorch-fid resizes to 299x299)".into(),
                actual: format!("{s:?}"),
            });
        }
        Ok(())
    }

    /// The outputs of pytorch-fid's four stages for preprocessed images `[N, 3, 299, 299]`:
    /// `[N, 64, 73, 73]`, `[N, 192, 35, 35]`, `[N, 768, 17, 17]`, `[N, 2048, 1, 1]`.
    /// Runs without recording a graph.
    pub fn forward_stages(&self, x: &Tensor) -> Result<[Tensor; 4]> {
        Self::check_input(x)?;
        let _g = no_grad();
        let s0 = self.stage0(x)?;
        let s1 = self.stage1(&s0)?;
        let s2 = self.stage2(&s1)?;
        let s3 = self.stage3(&s2)?;
        Ok([s0, s1, s2, s3])
    }

    /// The pool3 features `[N, 2048]` of preprocessed images `[N, 3, 299, 299]` in `[-1, 1]`
    /// (see [`crate::preprocess::preprocess`]). Runs without recording a graph and keeps only
    /// the activations that are still needed.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Self::check_input(x)?;
        let _g = no_grad();
        let y = self.stage0(x)?;
        let y = self.stage1(&y)?;
        let y = self.stage2(&y)?;
        let y = self.stage3(&y)?;
        let n = y.shape()[0];
        Ok(y.reshape(&[n, POOL3_DIM])?)
    }

    fn stage0(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv2d_1a_3x3.forward(x)?;
        let y = self.conv2d_2a_3x3.forward(&y)?;
        let y = self.conv2d_2b_3x3.forward(&y)?;
        Ok(y.max_pool2d(3, 2, 0)?)
    }

    fn stage1(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv2d_3b_1x1.forward(x)?;
        let y = self.conv2d_4a_3x3.forward(&y)?;
        Ok(y.max_pool2d(3, 2, 0)?)
    }

    fn stage2(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for m in &self.mixed_5 {
            y = m.forward(&y)?;
        }
        y = self.mixed_6a.forward(&y)?;
        for m in &self.mixed_6 {
            y = m.forward(&y)?;
        }
        Ok(y)
    }

    fn stage3(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.mixed_7a.forward(x)?;
        let y = self.mixed_7b.forward(&y)?;
        let y = self.mixed_7c.forward(&y)?;
        Ok(y.adaptive_avg_pool2d_1x1()?)
    }
}
