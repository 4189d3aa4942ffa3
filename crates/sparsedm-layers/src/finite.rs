//! Non-finite weights are refused at load: a NaN or ±Inf in a checkpoint
//! otherwise flows silently into NaN outputs and black images (and magnitude
//! pruning would keep NaN as the "largest" weight). [`check_finite`] names
//! the tensor and the first bad element; [`ParamStore::load_tensors`]
//! (every model load goes through it) calls it on each tensor it loads.
//!
//! For forensics (looking at a broken checkpoint's outputs) the check can
//! be switched off for the whole process with
//! [`allow_non_finite_weights`] — the command line's `--allow-non-finite`.
//!
//! [`ParamStore::load_tensors`]: crate::ParamStore::load_tensors

use crate::LayersError;
use sparsedm_tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};

static ALLOW_NON_FINITE: AtomicBool = AtomicBool::new(false);

/// Lets loads accept NaN/Inf weights (`true`) or refuses them (`false`, the
/// default) for the rest of the process.
pub fn allow_non_finite_weights(allow: bool) {
    ALLOW_NON_FINITE.store(allow, Ordering::Relaxed);
}

/// Whether non-finite weights are currently accepted.
pub fn non_finite_weights_allowed() -> bool {
    ALLOW_NON_FINITE.load(Ordering::Relaxed)
}

/// Checks that every value of the float tensor `t` (named `name`, from
/// `source`) is finite; integer tensors always pass. Does nothing while
/// [`allow_non_finite_weights`] is on.
///
/// # Errors
/// [`LayersError::InvalidArgument`] naming the source, the tensor, its
/// shape, the first bad element and its value.
pub fn check_finite(source: &str, name: &str, t: &Tensor) -> Result<(), LayersError> {
    if non_finite_weights_allowed() || !t.dtype().is_float() {
        return Ok(());
    }
    let values = t.to_vec_f32()?;
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(LayersError::InvalidArgument {
            what: source.to_string(),
            msg: format!(
                "tensor {name} {:?} holds {} at element {i} ({} non-finite values in all): refusing non-finite weights (--allow-non-finite loads them for forensics)",
                t.shape(),
                values[i],
                values.iter().filter(|v| !v.is_finite()).count()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsedm_tensor::Device;

    #[test]
    fn nan_and_inf_are_named_and_the_switch_allows_them() {
        let good = Tensor::from_vec(vec![1.0, -2.0], &[2], &Device::Cpu).unwrap();
        check_finite("f", "good", &good).unwrap();
        let bad = Tensor::from_vec(vec![1.0, f32::NAN, f32::INFINITY], &[3], &Device::Cpu).unwrap();
        let msg = check_finite("f.safetensors", "blocks.0.weight", &bad).unwrap_err().to_string();
        assert!(msg.contains("f.safetensors") && msg.contains("blocks.0.weight") && msg.contains("NaN at element 1"), "{msg}");
        assert!(msg.contains("2 non-finite"), "{msg}");
        // The process-wide switch is exercised by the CLI tests (a separate process),
        // so tests here never race on it.
    }
}
