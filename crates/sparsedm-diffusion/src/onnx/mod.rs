//! ONNX export of a model's ε-prediction, for TensorRT and other runtimes.
//!
//! The graph (opset 17) has inputs `x` (f32 `[B, C, H, W]`), `timesteps`
//! (f32 `[B]`) and, for class-conditional models, `y` (i64 `[B]`); its
//! output is `eps` (f32 `[B, C, H, W]`); the batch dimension `B` is
//! dynamic. Weights are stored as the forward uses them — an N:M layer's
//! weight with its mask applied, in the state dict's `[out, in]` layout, so
//! its zeros are where TensorRT's sparsity detection
//! (`trtexec --sparsity=enable`) looks for them. Each model's graph mirrors
//! its Rust forward ([`uvit`], [`unet`]); layers are written with core operators.

mod graph;
pub mod proto;
mod unet;
mod uvit;

use crate::error::{DiffusionError, Result};
use crate::registry::ModelConfig;
use graph::Graph;
use proto::{Dim, ElemType};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::Tensor;
use std::collections::HashMap;

pub use graph::OPSET;

/// The weights the forward uses, by state-dict name: every entry of
/// `store`, each sparse layer's weight replaced by its effective (masked) weight.
fn forward_weights(store: &ParamStore) -> Result<HashMap<String, Tensor>> {
    let mut w: HashMap<String, Tensor> = store.state_dict().into_iter().collect();
    for (layer, slot) in store.sparse_slots() {
        let name = format!("{layer}.weight");
        if !w.contains_key(&name) {
            return Err(DiffusionError::Input { what: "ONNX export".into(), msg: format!("sparse layer {layer} has no entry {name}") });
        }
        w.insert(name, slot.effective_weight()?);
    }
    Ok(w)
}

/// Serialises the ε-prediction of the model `config` with the weights in
/// `store` as an ONNX `ModelProto`.
///
/// # Errors
/// [`DiffusionError::Input`] for a weight the graph needs that the store lacks, or a store tensor the graph
/// does not use (a layer the export would silently drop).
pub fn export_onnx(config: &ModelConfig, store: &ParamStore) -> Result<Vec<u8>> {
    let mut g = Graph::new(forward_weights(store)?);
    let batch = Dim::Named("batch");
    let image = |[c, h, w]: [usize; 3]| [batch.clone(), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)];
    let x = g.input("x", ElemType::Float, &image(config.input_shape()));
    let t = g.input("timesteps", ElemType::Float, std::slice::from_ref(&batch));
    let y = config.num_classes().map(|_| g.input("y", ElemType::Int64, std::slice::from_ref(&batch)));
    let eps = match config {
        ModelConfig::UViT(cfg) => uvit::forward(&mut g, cfg, &x, &t, y.as_deref())?,
        ModelConfig::DdpmUNet(cfg) => unet::forward(&mut g, cfg, &x, &t)?,
    };
    g.output(&eps, "eps", ElemType::Float, &image(config.output_shape()));
    let unused = g.unused_weights();
    if !unused.is_empty() {
        return Err(DiffusionError::Input {
            what: "ONNX export".into(),
            msg: format!("the graph leaves out tensors of the model: {}", unused.join(", ")),
        });
    }
    Ok(g.finish("sparsedm"))
}
