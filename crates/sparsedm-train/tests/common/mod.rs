//! What the newer integration tests share: a tiny U-ViT run on the
//! embedded shapes (seconds per step on a CPU) and a scratch folder.

#![allow(dead_code)]

use sparsedm_testkit::Scratch;

/// A tiny U-ViT run config on the embedded shapes.
pub const TINY: &str = r#"
seed = 3
arch = "uvit"
[nnet]
img_size = 16
patch_size = 4
embed_dim = 32
depth = 2
num_heads = 2
mlp_ratio = 2.0
qkv_bias = false
[dataset]
name = "shapes"
resolution = 16
len = 256
[train]
n_steps = 4
batch_size = 16
ema_rate = 0.9
log_interval = 5
save_interval = 1000
[optimizer]
lr = 2e-3
weight_decay = 0.03
betas = [0.9, 0.999]
[lr_scheduler]
warmup_steps = 2
"#;

/// A fresh, empty folder of the test's own under the test target directory, removed when the
/// test passes (kept, and named, when it fails); hold it while the test uses it.
pub fn tmp(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), name)
}
