//! pytorch-fid's InceptionV3 with deterministic stand-in weights: every tensor of the state dict
//! generated from its name by the formula of the shared reference fixture
//! `inception_fid_formula.json` (copied in `tests/fixtures/`; FNV-1a of the name, then
//! splitmix64 per element, salt 0), against which `tests/inception_parity.rs` checks the
//! network's pool3 features.
//!
//! Why: the real weights (`pt_inception-2015-12-05-6726825d.pth`, 95 MB) cannot be downloaded
//! in CI or on the offline GPU machine, yet the device checks of FID (the same statistics from a
//! GPU as from the CPU, the throughput of `sparsedm fid stats --device cuda`) need a full-size
//! network with realistic activations. These weights give exactly that; FIDs computed with them
//! are not comparable with published numbers.

use crate::error::Result;
use crate::inception::InceptionV3;
use sparsedm_layers::ParamStore;
use sparsedm_tensor::{Device, Tensor};
use std::path::Path;

fn fnv1a64(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in s.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `v ∈ [-1, 1)` of element `i` for `seed` (splitmix64).
fn uniform(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 * 2f64.powi(-53);
    2.0 * u - 1.0
}

/// The values of tensor `name` of `shape` (computed in f64, cast to f32): batch-norm scales
/// near 1, shifts and means near 0, variances near 1, other weights uniform with a fan-in scale.
pub fn formula_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let seed = fnv1a64(name);
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let scale = (6.0 / fan_in as f64).sqrt();
    let f = |v: f64| -> f64 {
        if name.ends_with(".bn.weight") {
            1.0 + 0.2 * v
        } else if name.ends_with(".bn.bias") || name.ends_with(".bn.running_mean") {
            0.1 * v
        } else if name.ends_with(".bn.running_var") {
            1.0 + 0.5 * v
        } else if name == "fc.bias" {
            0.0
        } else {
            v * scale
        }
    };
    (0..n as u64).map(|i| f(uniform(seed, i)) as f32).collect()
}

/// Every tensor the network loads (the names of the converted checkpoint, without the ignored
/// `fc.*` and `num_batches_tracked`), with the formula's values.
pub fn formula_tensors() -> Result<Vec<(String, Tensor)>> {
    let store = ParamStore::new(Device::Cpu, 0);
    InceptionV3::new(&store)?;
    store
        .state_dict()
        .into_iter()
        .map(|(name, t)| {
            let values = formula_values(&name, t.shape());
            Ok((name, Tensor::from_vec(values, t.shape(), &Device::Cpu)?))
        })
        .collect()
}

/// Writes the formula weights as a safetensors checkpoint (f32, 95 MB) that
/// [`InceptionV3::load`] and `sparsedm fid --inception` accept.
pub fn write_formula_inception(path: &Path) -> Result<()> {
    let tensors = formula_tensors()?;
    Ok(sparsedm_tensor::save_safetensors(path, &tensors, None)?)
}
