//! One-shot magnitude pruning of a trained model (ASP's
//! `prune_trained_model`, at any N:M): the layers a [`Policy`] selects get a
//! fixed magnitude mask that is applied to their weights in place; every
//! other tensor is left untouched.
//!
//! [`prune`] works on a built model's [`ParamStore`]; [`replace_pruned`]
//! then puts the pruned weights back into the tensors of the original file
//! (same names, same dtypes, every other tensor bit for bit), which is what
//! `sparsedm prune` writes with [`crate::method::checkpoint::write_sparse_checkpoint`].

use crate::method::checkpoint::SparsitySpec;
use crate::method::policy::{Policy, apply_policy};
use crate::method::report::SparsityReport;
use crate::nn::sparse::SparseMode;
use crate::{LayersError, NmPattern, ParamStore};
use sparsedm_tensor::Tensor;
use std::collections::HashMap;

type Result<T> = std::result::Result<T, LayersError>;

/// Prunes the layers of `store` that `policy` selects to `pattern` by
/// magnitude (keep the N largest |w| of each group of M along the input
/// dimension; with `transposable`, the optimal transposable 2:4 mask, which
/// needs `pattern` = 2:4). The layers are left in
/// [`SparseMode::Fixed`] (ASP), the others dense. Returns the report.
///
/// # Errors
/// Those of [`apply_policy`] (a policy that selects nothing, a transposable
/// pattern other than 2:4); nothing is changed on error.
pub fn prune(store: &ParamStore, policy: &Policy, pattern: NmPattern, transposable: bool) -> Result<SparsityReport> {
    apply_policy(store, policy, pattern, |p| SparseMode::Fixed { pattern: p, transposable })
}

/// `original` (the tensors of the checkpoint `store` was loaded from) with
/// the weight of every sparse layer of `store` replaced by its deployed
/// value, converted to the original tensor's dtype (exact: pruning only
/// zeroes values). All other tensors are returned as they were. Also
/// returns the spec to store with them.
///
/// # Errors
/// [`LayersError::SparseCheckpoint`] when a sparse layer's weight is
/// missing from `original` or has another shape; tensor errors.
pub fn replace_pruned(original: Vec<(String, Tensor)>, store: &ParamStore) -> Result<(Vec<(String, Tensor)>, SparsitySpec)> {
    let spec = SparsitySpec::from_store(store)?;
    let mut pruned: HashMap<String, Tensor> = HashMap::new();
    for (name, slot) in store.sparse_slots() {
        if spec.layers.contains_key(&name) {
            pruned.insert(format!("{name}.weight"), slot.deployed_weight()?);
        }
    }
    let mut out = Vec::with_capacity(original.len());
    for (name, t) in original {
        match pruned.remove(&name) {
            Some(p) if p.shape() == t.shape() => {
                let p = p.to_dtype(t.dtype())?;
                out.push((name, p));
            }
            Some(p) => {
                return Err(LayersError::SparseCheckpoint {
                    path: "<pruned tensors>".into(),
                    msg: format!("{name} has shape {:?} in the original tensors but {:?} in the model", t.shape(), p.shape()),
                });
            }
            None => out.push((name, t)),
        }
    }
    if let Some(missing) = pruned.keys().next() {
        return Err(LayersError::SparseCheckpoint {
            path: "<pruned tensors>".into(),
            msg: format!("the original tensors have no {missing}"),
        });
    }
    Ok((out, spec))
}
