//! The DDPM UNet's forward (`crate::unet::UNet`, evaluation mode: no
//! dropout) as an ONNX graph: sinusoidal time embedding (sin first) → two
//! dense layers; `conv_in`; down levels of ResNet blocks (GroupNorm(num_groups) →
//! SiLU → conv, plus the projected time embedding) with attention at the
//! configured resolutions, each output kept for the skips, then a
//! stride-2 conv after padding right and bottom (or 2×2 average pooling);
//! the middle block, attention, block; up levels on the concatenation with
//! the skips, then nearest-neighbour ×2 upsampling (a broadcast and a
//! reshape) and a conv; GroupNorm → SiLU → `conv_out`.

use super::graph::Graph;
use super::proto::Attr;
use crate::error::{DiffusionError, Result};
use crate::unet::UNetConfig;

const GN_EPS: f32 = 1e-6;

/// The time embedding `[B, ch]` of `t` `[B]`: sin of the first half, cos of the second.
fn time_embedding(g: &mut Graph, t: &str, dim: usize) -> String {
    let half = dim / 2;
    // The same f32 frequencies as `ddpm_timestep_embedding`.
    let step = -((10000f64.ln() / (half as f64 - 1.0)) as f32);
    let freqs: Vec<f32> = (0..half).map(|k| (k as f32 * step).exp()).collect();
    let f = g.const_f32(&freqs, &[1, half]);
    let t1 = g.unsqueeze(t, 1);
    let a = g.op("Mul", &[&t1, &f], &[]);
    let sin = g.op("Sin", &[&a], &[]);
    let cos = g.op("Cos", &[&a], &[]);
    if dim % 2 == 1 {
        let zero = g.scale(&t1, 0.0);
        g.op("Concat", &[&sin, &cos, &zero], &[("axis", Attr::Int(1))])
    } else {
        g.op("Concat", &[&sin, &cos], &[("axis", Attr::Int(1))])
    }
}

fn resnet(g: &mut Graph, x: &str, prefix: &str, temb_act: &str, temb_ch: usize, groups: usize) -> Result<String> {
    let out = g.weight_shape(&format!("{prefix}.conv1.weight")).map(|s| s[0]).ok_or_else(|| missing(prefix))?;
    let h = g.group_norm(x, &format!("{prefix}.norm1"), groups, GN_EPS)?;
    let h = g.silu(&h);
    let h = g.conv(&h, &format!("{prefix}.conv1"), 3, 1, 1)?;
    let te = g.linear(temb_act, &format!("{prefix}.temb_proj"), &[-1], temb_ch, out)?;
    let te = g.reshape(&te, &[0, 0, 1, 1]);
    let h = g.op("Add", &[&h, &te], &[]);
    let h = g.group_norm(&h, &format!("{prefix}.norm2"), groups, GN_EPS)?;
    let h = g.silu(&h);
    let h = g.conv(&h, &format!("{prefix}.conv2"), 3, 1, 1)?;
    let x = if g.has_weight(&format!("{prefix}.nin_shortcut.weight")) {
        g.conv(x, &format!("{prefix}.nin_shortcut"), 1, 1, 0)?
    } else {
        x.to_string()
    };
    Ok(g.op("Add", &[&x, &h], &[]))
}

fn attn(g: &mut Graph, x: &str, prefix: &str, groups: usize) -> Result<String> {
    let c = g.weight_shape(&format!("{prefix}.q.weight")).map(|s| s[0]).ok_or_else(|| missing(prefix))?;
    let hn = g.group_norm(x, &format!("{prefix}.norm"), groups, GN_EPS)?;
    let mut qkv = Vec::new();
    for n in ["q", "k", "v"] {
        let y = g.conv(&hn, &format!("{prefix}.{n}"), 1, 1, 0)?;
        qkv.push(g.reshape(&y, &[0, 0, -1]));
    }
    // w[b, i, j] = softmax_j(Σ_c q[b, c, i] k[b, c, j] / √c); h[b, c, j] = Σ_i v[b, c, i] w[b, j, i].
    let qt = g.transpose(&qkv[0], &[0, 2, 1]);
    let s = g.op("MatMul", &[&qt, &qkv[1]], &[]);
    let s = g.scale(&s, (c as f64).powf(-0.5) as f32);
    let w = g.op("Softmax", &[&s], &[("axis", Attr::Int(-1))]);
    let wt = g.transpose(&w, &[0, 2, 1]);
    let h = g.op("MatMul", &[&qkv[2], &wt], &[]);
    let shape = g.op("Shape", &[x], &[]);
    let h = g.op("Reshape", &[&h, &shape], &[]);
    let h = g.conv(&h, &format!("{prefix}.proj_out"), 1, 1, 0)?;
    Ok(g.op("Add", &[x, &h], &[]))
}

fn missing(prefix: &str) -> DiffusionError {
    DiffusionError::Input { what: "ONNX export".into(), msg: format!("the model has no layer {prefix}") }
}

/// Nearest-neighbour ×2 of `x` `[B, C, r, r]`.
fn upsample2(g: &mut Graph, x: &str, r: usize) -> String {
    let x6 = g.reshape(x, &[0, 0, r as i64, 1, r as i64, 1]);
    let shape = g.const_i64(&[1, 1, 1, 2, 1, 2], &[6]);
    let e = g.op("Expand", &[&x6, &shape], &[]);
    g.reshape(&e, &[0, 0, 2 * r as i64, 2 * r as i64])
}

/// Adds the UNet's forward from inputs `x` and `t` and returns the ε value.
pub(super) fn forward(g: &mut Graph, cfg: &UNetConfig, x: &str, t: &str) -> Result<String> {
    let temb_ch = cfg.temb_ch();
    let temb = time_embedding(g, t, cfg.ch);
    let temb = g.linear(&temb, "temb.dense.0", &[-1], cfg.ch, temb_ch)?;
    let temb = g.silu(&temb);
    let temb = g.linear(&temb, "temb.dense.1", &[-1], temb_ch, temb_ch)?;
    let temb_act = g.silu(&temb);
    let n = cfg.levels();
    let mut hs = vec![g.conv(x, "conv_in", 3, 1, 1)?];
    for i in 0..n {
        for j in 0..cfg.num_res_blocks {
            let last = hs.last().cloned().unwrap_or_default();
            let mut h = resnet(g, &last, &format!("down.{i}.block.{j}"), &temb_act, temb_ch, cfg.num_groups)?;
            if cfg.level_has_attn(i) {
                h = attn(g, &h, &format!("down.{i}.attn.{j}"), cfg.num_groups)?;
            }
            hs.push(h);
        }
        if i + 1 != n {
            let last = hs.last().cloned().unwrap_or_default();
            let h = if cfg.resamp_with_conv {
                g.conv_pads(&last, &format!("down.{i}.downsample.conv"), 3, 2, [0, 0, 1, 1])?
            } else {
                g.op("AveragePool", &[&last], &[("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2, 2]))])
            };
            hs.push(h);
        }
    }
    let mut h = hs.last().cloned().unwrap_or_default();
    h = resnet(g, &h, "mid.block_1", &temb_act, temb_ch, cfg.num_groups)?;
    h = attn(g, &h, "mid.attn_1", cfg.num_groups)?;
    h = resnet(g, &h, "mid.block_2", &temb_act, temb_ch, cfg.num_groups)?;
    for i in (0..n).rev() {
        for j in 0..=cfg.num_res_blocks {
            let skip = hs.pop().ok_or_else(|| missing("skip"))?;
            let cat = g.op("Concat", &[&h, &skip], &[("axis", Attr::Int(1))]);
            h = resnet(g, &cat, &format!("up.{i}.block.{j}"), &temb_act, temb_ch, cfg.num_groups)?;
            if cfg.level_has_attn(i) {
                h = attn(g, &h, &format!("up.{i}.attn.{j}"), cfg.num_groups)?;
            }
        }
        if i != 0 {
            h = upsample2(g, &h, cfg.level_resolution(i));
            if cfg.resamp_with_conv {
                h = g.conv(&h, &format!("up.{i}.upsample.conv"), 3, 1, 1)?;
            }
        }
    }
    let h = g.group_norm(&h, "norm_out", cfg.num_groups, GN_EPS)?;
    let h = g.silu(&h);
    g.conv(&h, "conv_out", 3, 1, 1)
}
