//! U-ViT's forward (`crate::uvit::UViT::forward`) as an ONNX graph:
//! patch-embedding conv → tokens `[label,] time, patches` + `pos_embed` →
//! in-blocks (kept for the long skips) → mid-block → out-blocks (each
//! `skip_linear` on the concatenation with the matching in-block output) →
//! LayerNorm → `decoder_pred` → the patch tokens unpatchified → the final
//! 3×3 conv. The sinusoidal time embedding is computed in the graph from
//! `timesteps` with the same frequencies (cos first, then sin).

use super::graph::Graph;
use super::proto::Attr;
use crate::error::Result;
use crate::uvit::UViTConfig;

/// LayerNorm epsilon of U-ViT (PyTorch's default).
const LN_EPS: f32 = 1e-5;

/// The time embedding `[B, D]` of `t` `[B]`.
fn time_embedding(g: &mut Graph, t: &str, dim: usize) -> String {
    let half = dim / 2;
    // The same f32 frequencies as `uvit_timestep_embedding`.
    let ln = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half).map(|k| ((ln * k as f32) / half as f32).exp()).collect();
    let f = g.const_f32(&freqs, &[1, half]);
    let t1 = g.unsqueeze(t, 1);
    let a = g.op("Mul", &[&t1, &f], &[]);
    let cos = g.op("Cos", &[&a], &[]);
    let sin = g.op("Sin", &[&a], &[]);
    if dim % 2 == 1 {
        let zero = g.scale(&t1, 0.0);
        g.op("Concat", &[&cos, &sin, &zero], &[("axis", Attr::Int(1))])
    } else {
        g.op("Concat", &[&cos, &sin], &[("axis", Attr::Int(1))])
    }
}

/// `heads` heads of [`UViTConfig::head_dim`] each (fewer than `num_heads`
/// in a pruned block).
fn attention(g: &mut Graph, x: &str, prefix: &str, cfg: &UViTConfig, heads: usize) -> Result<String> {
    let (l, d, h) = (cfg.seq_len() as i64, cfg.embed_dim, heads);
    let dh = cfg.head_dim();
    let inner = h * dh;
    let qkv = g.linear(x, &format!("{prefix}.qkv"), &[-1, l], d, 3 * inner)?;
    let qkv = g.reshape(&qkv, &[-1, l, 3, h as i64, dh as i64]);
    let qkv = g.transpose(&qkv, &[2, 0, 3, 1, 4]);
    let mut parts = Vec::new();
    for i in 0..3 {
        let idx = g.const_i64(&[i], &[]);
        parts.push(g.op("Gather", &[&qkv, &idx], &[("axis", Attr::Int(0))]));
    }
    let kt = g.transpose(&parts[1], &[0, 1, 3, 2]);
    let s = g.op("MatMul", &[&parts[0], &kt], &[]);
    let scale = cfg.attn_scale().unwrap_or(1.0 / (dh as f32).sqrt());
    let s = g.scale(&s, scale);
    let p = g.op("Softmax", &[&s], &[("axis", Attr::Int(-1))]);
    let y = g.op("MatMul", &[&p, &parts[2]], &[]);
    let y = g.transpose(&y, &[0, 2, 1, 3]);
    let y = g.reshape(&y, &[-1, l, inner as i64]);
    g.linear(&y, &format!("{prefix}.proj"), &[-1, l], inner, d)
}

fn block(g: &mut Graph, x: &str, prefix: &str, cfg: &UViTConfig, skip: Option<&str>) -> Result<String> {
    let (l, d) = (cfg.seq_len() as i64, cfg.embed_dim);
    let x = match skip {
        Some(s) => {
            let c = g.op("Concat", &[x, s], &[("axis", Attr::Int(2))]);
            g.linear(&c, &format!("{prefix}.skip_linear"), &[-1, l], 2 * d, d)?
        }
        None => x.to_string(),
    };
    let n1 = g.layer_norm(&x, &format!("{prefix}.norm1"), LN_EPS)?;
    let widths = cfg.block_widths(prefix);
    let a = attention(g, &n1, &format!("{prefix}.attn"), cfg, widths.num_heads)?;
    let x = g.op("Add", &[&x, &a], &[]);
    let n2 = g.layer_norm(&x, &format!("{prefix}.norm2"), LN_EPS)?;
    let hdim = widths.mlp_hidden;
    let m = g.linear(&n2, &format!("{prefix}.mlp.fc1"), &[-1, l], d, hdim)?;
    let m = g.gelu(&m);
    let m = g.linear(&m, &format!("{prefix}.mlp.fc2"), &[-1, l], hdim, d)?;
    Ok(g.op("Add", &[&x, &m], &[]))
}

/// Adds U-ViT's forward from inputs `x`, `timesteps` (and `y`) and returns the ε value.
pub(super) fn forward(g: &mut Graph, cfg: &UViTConfig, x: &str, t: &str, y: Option<&str>) -> Result<String> {
    let (d, p, c) = (cfg.embed_dim, cfg.patch_size, cfg.in_chans);
    let n = cfg.num_patches() as i64;
    let patches = g.conv(x, "patch_embed.proj", p, p, 0)?;
    let patches = g.reshape(&patches, &[0, d as i64, n]);
    let patches = g.transpose(&patches, &[0, 2, 1]);
    let mut time = time_embedding(g, t, d);
    if cfg.mlp_time_embed {
        let h = g.linear(&time, "time_embed.0", &[-1], d, 4 * d)?;
        let h = g.silu(&h);
        time = g.linear(&h, "time_embed.2", &[-1], 4 * d, d)?;
    }
    let time = g.unsqueeze(&time, 1);
    let tokens = match y {
        Some(y) => {
            let table = g.weight("label_emb.weight")?;
            let label = g.op("Gather", &[&table, y], &[("axis", Attr::Int(0))]);
            let label = g.unsqueeze(&label, 1);
            g.op("Concat", &[&label, &time, &patches], &[("axis", Attr::Int(1))])
        }
        None => g.op("Concat", &[&time, &patches], &[("axis", Attr::Int(1))]),
    };
    let pos = g.weight("pos_embed")?;
    let mut h = g.op("Add", &[&tokens, &pos], &[]);
    let half = cfg.depth / 2;
    let mut skips = Vec::with_capacity(half);
    for i in 0..half {
        h = block(g, &h, &format!("in_blocks.{i}"), cfg, None)?;
        skips.push(h.clone());
    }
    h = block(g, &h, "mid_block", cfg, None)?;
    for i in 0..half {
        let skip = if cfg.skip { skips.pop() } else { None };
        h = block(g, &h, &format!("out_blocks.{i}"), cfg, skip.as_deref())?;
    }
    let l = cfg.seq_len() as i64;
    let h = g.layer_norm(&h, "norm", LN_EPS)?;
    let h = g.linear(&h, "decoder_pred", &[-1, l], d, cfg.patch_dim())?;
    let e = cfg.extras() as i64;
    let (starts, ends, axes) = (g.const_i64(&[e], &[1]), g.const_i64(&[e + n], &[1]), g.const_i64(&[1], &[1]));
    let h = g.op("Slice", &[&h, &starts, &ends, &axes], &[]);
    // Unpatchify: B (h w) (p1 p2 C) -> B C (h p1) (w p2).
    let hw = (cfg.img_size / p) as i64;
    let (pi, ci) = (p as i64, c as i64);
    let h = g.reshape(&h, &[-1, hw, hw, pi, pi, ci]);
    let h = g.transpose(&h, &[0, 5, 1, 3, 2, 4]);
    let out = g.reshape(&h, &[-1, ci, hw * pi, hw * pi]);
    if cfg.conv { g.conv(&out, "final_layer", 3, 1, 1) } else { Ok(out) }
}
