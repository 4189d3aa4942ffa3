//! A small builder of ONNX graphs (opset 17): unique value names, weight
//! initializers stored bit for bit, constants, and the composite layers the
//! models are made of (Linear, LayerNorm, GroupNorm, exact GELU, Conv),
//! written with core operators only so that any runtime (TensorRT, ONNX
//! Runtime, tract) reads them.

use super::proto::{self, Attr, Dim, ElemType, Msg};
use crate::error::{DiffusionError, Result};
use sparsedm_tensor::Tensor;
use std::collections::HashMap;

/// The opset the graphs are written for.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 (ONNX 1.10+), which opset 17 runtimes all read.
const IR_VERSION: i64 = 8;

/// A graph under construction, with the model's weights by state-dict name.
#[derive(Debug)]
pub struct Graph {
    weights: HashMap<String, Tensor>,
    used: Vec<String>,
    nodes: Vec<Msg>,
    inits: Vec<Msg>,
    inputs: Vec<Msg>,
    outputs: Vec<Msg>,
    counter: usize,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Graph {
    /// `weights` are the tensors the forward uses, by state-dict name.
    pub fn new(weights: HashMap<String, Tensor>) -> Self {
        Graph { weights, used: Vec::new(), nodes: Vec::new(), inits: Vec::new(), inputs: Vec::new(), outputs: Vec::new(), counter: 0 }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a node with one output and returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(op);
        let name = format!("{op}_node_{}", self.counter);
        self.nodes.push(proto::node(op, &name, inputs, &[&out], attrs));
        out
    }

    /// The weight `name` as an initializer of the same name (f32, exact values).
    pub fn weight(&mut self, name: &str) -> Result<String> {
        let t = self
            .weights
            .get(name)
            .ok_or_else(|| DiffusionError::Input { what: "ONNX export".into(), msg: format!("the model has no tensor {name}") })?;
        if !self.used.iter().any(|u| u == name) {
            let v = t.to_vec_f32()?;
            self.inits.push(proto::tensor(name, ElemType::Float, t.shape(), &f32_bytes(&v)));
            self.used.push(name.to_string());
        }
        Ok(name.to_string())
    }

    pub fn has_weight(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }

    /// The shape of the weight `name`, if the model has it.
    pub fn weight_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.weights.get(name).map(|t| t.shape().to_vec())
    }

    /// An f32 constant initializer.
    pub fn const_f32(&mut self, v: &[f32], dims: &[usize]) -> String {
        let name = self.fresh("const");
        self.inits.push(proto::tensor(&name, ElemType::Float, dims, &f32_bytes(v)));
        name
    }

    /// An i64 constant initializer (shapes, axes, indices).
    pub fn const_i64(&mut self, v: &[i64], dims: &[usize]) -> String {
        let name = self.fresh("const");
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.inits.push(proto::tensor(&name, ElemType::Int64, dims, &raw));
        name
    }

    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> String {
        self.inputs.push(proto::value_info(name, elem, dims));
        name.to_string()
    }

    /// Names `value` as a graph output (through an Identity node).
    pub fn output(&mut self, value: &str, name: &str, elem: ElemType, dims: &[Dim]) {
        self.nodes.push(proto::node("Identity", &format!("{name}_identity"), &[value], &[name], &[]));
        self.outputs.push(proto::value_info(name, elem, dims));
    }

    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.const_i64(shape, &[shape.len()]);
        self.op("Reshape", &[x, &s], &[])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], &[("perm", Attr::Ints(perm.to_vec()))])
    }

    pub fn unsqueeze(&mut self, x: &str, axis: i64) -> String {
        let a = self.const_i64(&[axis], &[1]);
        self.op("Unsqueeze", &[x, &a], &[])
    }

    pub fn scale(&mut self, x: &str, s: f32) -> String {
        let c = self.const_f32(&[s], &[]);
        self.op("Mul", &[x, &c], &[])
    }

    /// `prefix.weight` `[out, in]` (and `prefix.bias`) applied to the last
    /// dimension of `x`: a `Gemm` with `transB = 1` on the weight as stored,
    /// so an N:M weight keeps its zeros where the state dict has them.
    /// `lead` is the shape of the dimensions before the last (`-1` for the
    /// dynamic batch), `in_dim`/`out_dim` the widths.
    pub fn linear(&mut self, x: &str, prefix: &str, lead: &[i64], in_dim: usize, out_dim: usize) -> Result<String> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let b = if self.has_weight(&format!("{prefix}.bias")) { Some(self.weight(&format!("{prefix}.bias"))?) } else { None };
        let flat = if lead.len() == 1 { x.to_string() } else { self.reshape(x, &[-1, in_dim as i64]) };
        let mut ins = vec![flat.as_str(), w.as_str()];
        if let Some(b) = &b {
            ins.push(b);
        }
        let y = self.op("Gemm", &ins, &[("transB", Attr::Int(1))]);
        if lead.len() == 1 {
            return Ok(y);
        }
        let mut shape = lead.to_vec();
        shape.push(out_dim as i64);
        Ok(self.reshape(&y, &shape))
    }

    /// LayerNorm over the last dimension: (x − mean) / √(var + eps) · w + b.
    pub fn layer_norm(&mut self, x: &str, prefix: &str, eps: f32) -> Result<String> {
        let axes = Attr::Ints(vec![-1]);
        let mean = self.op("ReduceMean", &[x], &[("axes", axes.clone()), ("keepdims", Attr::Int(1))]);
        let d = self.op("Sub", &[x, &mean], &[]);
        let sq = self.op("Mul", &[&d, &d], &[]);
        let var = self.op("ReduceMean", &[&sq], &[("axes", axes), ("keepdims", Attr::Int(1))]);
        let e = self.const_f32(&[eps], &[]);
        let ve = self.op("Add", &[&var, &e], &[]);
        let sd = self.op("Sqrt", &[&ve], &[]);
        let n = self.op("Div", &[&d, &sd], &[]);
        let w = self.weight(&format!("{prefix}.weight"))?;
        let b = self.weight(&format!("{prefix}.bias"))?;
        let y = self.op("Mul", &[&n, &w], &[]);
        Ok(self.op("Add", &[&y, &b], &[]))
    }

    /// GroupNorm of `x` `[B, C, H, W]` with `groups` groups and a per-channel affine.
    pub fn group_norm(&mut self, x: &str, prefix: &str, groups: usize, eps: f32) -> Result<String> {
        let g = self.reshape(x, &[0, groups as i64, -1]);
        let axes = Attr::Ints(vec![-1]);
        let mean = self.op("ReduceMean", &[&g], &[("axes", axes.clone()), ("keepdims", Attr::Int(1))]);
        let d = self.op("Sub", &[&g, &mean], &[]);
        let sq = self.op("Mul", &[&d, &d], &[]);
        let var = self.op("ReduceMean", &[&sq], &[("axes", axes), ("keepdims", Attr::Int(1))]);
        let e = self.const_f32(&[eps], &[]);
        let ve = self.op("Add", &[&var, &e], &[]);
        let sd = self.op("Sqrt", &[&ve], &[]);
        let n = self.op("Div", &[&d, &sd], &[]);
        let shape = self.op("Shape", &[x], &[]);
        let n = self.op("Reshape", &[&n, &shape], &[]);
        let w = self.weight(&format!("{prefix}.weight"))?;
        let b = self.weight(&format!("{prefix}.bias"))?;
        let w = self.reshape(&w, &[-1, 1, 1]);
        let b = self.reshape(&b, &[-1, 1, 1]);
        let y = self.op("Mul", &[&n, &w], &[]);
        Ok(self.op("Add", &[&y, &b], &[]))
    }

    /// Exact GELU: x · ½ (1 + erf(x / √2)).
    pub fn gelu(&mut self, x: &str) -> String {
        let xs = self.scale(x, std::f32::consts::FRAC_1_SQRT_2);
        let erf = self.op("Erf", &[&xs], &[]);
        let one = self.const_f32(&[1.0], &[]);
        let p = self.op("Add", &[&erf, &one], &[]);
        let h = self.scale(x, 0.5);
        self.op("Mul", &[&h, &p], &[])
    }

    /// SiLU: x · sigmoid(x).
    pub fn silu(&mut self, x: &str) -> String {
        let s = self.op("Sigmoid", &[x], &[]);
        self.op("Mul", &[x, &s], &[])
    }

    /// A square convolution `prefix.weight` `[out, in, k, k]` (+ bias), `pad` on every side.
    pub fn conv(&mut self, x: &str, prefix: &str, kernel: usize, stride: usize, pad: usize) -> Result<String> {
        self.conv_pads(x, prefix, kernel, stride, [pad; 4])
    }

    /// A square convolution with ONNX pads `[top, left, bottom, right]`.
    pub fn conv_pads(&mut self, x: &str, prefix: &str, kernel: usize, stride: usize, pads: [usize; 4]) -> Result<String> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let mut ins = vec![x.to_string(), w];
        if self.has_weight(&format!("{prefix}.bias")) {
            ins.push(self.weight(&format!("{prefix}.bias"))?);
        }
        let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
        let (k, s) = (kernel as i64, stride as i64);
        let p: Vec<i64> = pads.iter().map(|&v| v as i64).collect();
        Ok(self.op("Conv", &ins, &[("kernel_shape", Attr::Ints(vec![k, k])), ("strides", Attr::Ints(vec![s, s])), ("pads", Attr::Ints(p))]))
    }

    /// Every weight the graph does not use: a sign the export missed a layer.
    pub fn unused_weights(&self) -> Vec<String> {
        let mut v: Vec<String> = self.weights.keys().filter(|k| !self.used.contains(k)).cloned().collect();
        v.sort();
        v
    }

    /// The serialized `ModelProto`.
    pub fn finish(self, name: &str) -> Vec<u8> {
        let mut g = Msg::new();
        for n in &self.nodes {
            g = g.msg(1, n);
        }
        g = g.str(2, name);
        for t in &self.inits {
            g = g.msg(5, t);
        }
        for i in &self.inputs {
            g = g.msg(11, i);
        }
        for o in &self.outputs {
            g = g.msg(12, o);
        }
        let opset = Msg::new().str(1, "").int(2, OPSET);
        Msg::new().int(1, IR_VERSION).str(2, "sparsedm").str(3, env!("CARGO_PKG_VERSION")).msg(8, &opset).msg(7, &g).into_bytes()
    }
}
