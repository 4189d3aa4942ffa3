//! `sparsedm forward`: one forward pass of a model on inputs from a file, so
//! anyone can check the Rust models against PyTorch on their own weights.
//!
//! CONFIG.json holds the reference constructor's keyword arguments (at its
//! top level or under `"config"`), with `--arch`; both may be left out for
//! weights that describe their model (a run's checkpoint export, a `prune`
//! or `export` output), and given for them are checked against it; W the state dict with the reference
//! names, as safetensors or as the PyTorch `.pth`/`.ckpt` itself (`--key`
//! picks a state dict nested in it);
//! IN.safetensors `input.x` `[B, C, H, W]`, the time input (`input.timesteps`
//! for U-ViT, `input.t` for the UNet, both `[B]`) and, for class-conditional
//! models only, `input.y` `[B]`. The result goes to OUT.safetensors under
//! `output`. The model runs in evaluation mode (no dropout) without a graph.
//!
//! Inputs are checked before the model is built: non-finite values in
//! `input.x` or the times, times outside the model-time range every
//! schedule here uses ([0, 1000]), labels outside the model's classes; the
//! config's weight shapes against the weights' header. An existing
//! `--output` needs `--force`.
//!
//! `--device cuda[:N]` runs the model there; matrix products are f32 unless
//! `--precision` says otherwise, so the output matches the CPU's (and the
//! reference fixtures) to rounding.

use anyhow::{Context, Result, anyhow, bail};
use sparsedm_diffusion::registry::{Arch, ModelConfig};
use sparsedm_layers::ParamStore;
use sparsedm_tensor::{DType, Tensor, load_safetensors, no_grad, save_safetensors};
use sparsedm_train::precision::MatmulScope;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sparsedm forward --arch uvit --config uvit.json --weights nnet_ema.safetensors \\\n      --inputs in.safetensors --output out.safetensors"
)]
pub struct Args {
    /// Model family: uvit or ddpm-unet (not needed for weights that describe their model: a run's export, a prune or export output, a convert with --arch).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// JSON with the constructor's keyword arguments (top level or under "config"), with --arch.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Weights with the reference state-dict names: safetensors or a PyTorch .pth/.pt/.ckpt (f16/bf16 accepted).
    #[arg(long, visible_alias = "checkpoint")]
    pub weights: PathBuf,
    /// The key of the state dict inside a PyTorch checkpoint (e.g. state_dict; nested: a/b). Default: the only dict of tensors.
    #[arg(long)]
    pub key: Option<String>,
    /// Inputs (safetensors): input.x, input.timesteps (uvit) or input.t (ddpm-unet), input.y if the model has classes.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write the result (safetensors, key "output").
    #[arg(long)]
    pub output: PathBuf,
    /// Replace an existing --output file.
    #[arg(long)]
    pub force: bool,
    /// Load weights holding NaN/Inf anyway (forensics).
    #[arg(long)]
    pub allow_non_finite: bool,
    #[command(flatten)]
    pub device: super::DeviceArg,
    #[command(flatten)]
    pub precision: super::PrecisionArg,
}

/// Model times (the time input of the networks) of every schedule of this
/// crate lie in [0, MAX_MODEL_TIME] (`t·1000` for continuous schedules,
/// the step index for discrete ones).
const MAX_MODEL_TIME: f32 = 1000.0;

pub fn run(args: Args) -> Result<()> {
    let device = args.device.resolve()?;
    let precision = args.precision.resolve(device)?;
    let mut inputs_read: Vec<&Path> = vec![&args.weights, &args.inputs];
    inputs_read.extend(args.config.as_deref());
    crate::output::check_file("--output", &args.output, args.force, &inputs_read)?;
    sparsedm_layers::allow_non_finite_weights(args.allow_non_finite);
    // The weights' own description or --arch/--config, checked against the
    // weights' shapes before anything is built.
    crate::model_source::model_file("--weights", &args.weights)?;
    let cfg = crate::model_source::describe(&args.weights, args.arch, args.config.as_deref())?.config().clone();
    crate::model_source::refuse_training_checkpoint(&args.weights, "forward")?;
    let mut inputs: BTreeMap<String, Tensor> = load_safetensors(&args.inputs)?.into_iter().collect();
    let (x, t, y) = take_inputs(&mut inputs, &cfg, &args.inputs)?;

    let store = ParamStore::new(device, 0);
    store.set_training(false);
    let model = cfg.build(&store)?;
    // Verified against the file's own sparsity spec when it has one (a
    // PyTorch file has none), whose N:M layers then run on the N:M kernels.
    sparsedm_diffusion::load_checkpoint_for_eval(&store, &args.weights, args.key.as_deref())
        .with_context(|| format!("loading weights {}", args.weights.display()))?;

    args.device.announce();
    if let Some(line) = super::nm_layers_line(&store, device) {
        println!("{line}");
    }
    let (x, t, y) = (x.to_device(&device)?, t.to_device(&device)?, y.map(|y| y.to_device(&device)).transpose()?);
    let start = std::time::Instant::now();
    let calls = sparsedm_tensor::nm_cpu::layer_calls();
    let out = {
        let _g = no_grad();
        let _p = MatmulScope::enter(precision);
        model.predict_eps(&x, &t, y.as_ref())?
    };
    device.synchronize()?;
    let elapsed = start.elapsed();
    save_safetensors(&args.output, &[("output".to_string(), out.clone())], None)?;
    println!("output {:?} written to {} (forward {:.3} s)", out.shape(), args.output.display(), elapsed.as_secs_f64());
    if let Some(line) = super::nm_calls_line(calls) {
        println!("{line}");
    }
    Ok(())
}

/// Takes and checks x, the time input and the labels from an inputs file.
fn take_inputs(inputs: &mut BTreeMap<String, Tensor>, cfg: &ModelConfig, path: &Path) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let shown = path.display();
    let have = || inputs.keys().cloned().collect::<Vec<_>>().join(", ");
    let time_key = cfg.arch().time_input_key();
    for key in ["input.x", time_key] {
        if !inputs.contains_key(key) {
            bail!("{shown}: missing tensor {key:?} (the file has: {})", have());
        }
    }
    let y_key = "input.y";
    if cfg.num_classes().is_some() && !inputs.contains_key(y_key) {
        bail!("{shown}: missing tensor {y_key:?}: the model has {} classes (the file has: {})", cfg.num_classes().unwrap_or(0), have());
    }
    let x = inputs.remove("input.x").ok_or_else(|| anyhow!("{shown}: missing tensor \"input.x\""))?;
    let t = inputs.remove(time_key).ok_or_else(|| anyhow!("{shown}: missing tensor {time_key:?}"))?;
    let y = inputs.remove(y_key);

    let [c, h, w] = cfg.input_shape();
    if x.rank() != 4 || x.shape()[1..] != [c, h, w] {
        bail!("{shown}: input.x has shape {:?}, the model expects [B, {c}, {h}, {w}]", x.shape());
    }
    if !x.dtype().is_float() {
        bail!("{shown}: input.x has dtype {:?}, expected a float type", x.dtype());
    }
    let x = x.to_dtype(DType::F32)?;
    let b = x.shape()[0];
    if t.shape() != [b] {
        bail!("{shown}: {time_key} has shape {:?}, expected [{b}] (one time per image)", t.shape());
    }
    if let Some(y) = &y {
        if cfg.num_classes().is_none() {
            bail!("{shown}: input.y given, but the model is unconditional (num_classes <= 0)");
        }
        if y.shape() != [b] {
            bail!("{shown}: input.y has shape {:?}, expected [{b}] (one label per image)", y.shape());
        }
        let nc = cfg.num_classes().unwrap_or(0) as f64;
        let labels = y.to_dtype(DType::F32)?.to_vec_f32()?;
        if let Some((i, l)) =
            labels.iter().enumerate().find(|(_, l)| !(l.is_finite() && **l >= 0.0 && f64::from(**l) < nc && l.fract() == 0.0))
        {
            bail!("{shown}: input.y[{i}] = {l} is not a label of the model (0..{nc})");
        }
    }
    let xs = x.to_vec_f32()?;
    if let Some(i) = xs.iter().position(|v| !v.is_finite()) {
        bail!("{shown}: input.x holds {} at element {i}: inputs must be finite", xs[i]);
    }
    let ts = t.to_dtype(DType::F32)?.to_vec_f32()?;
    if let Some((i, v)) = ts.iter().enumerate().find(|(_, v)| !(v.is_finite() && (0.0..=MAX_MODEL_TIME).contains(*v))) {
        bail!("{shown}: {time_key}[{i}] = {v} is outside the model-time range [0, {MAX_MODEL_TIME}]");
    }
    Ok((x, t, y))
}
