//! Accepted ranges of a run's numeric hyper-parameters, checked when a
//! config is parsed (before anything is built or trained), and the check
//! that a sparse run really masks a layer. A value outside its range is one
//! error naming the field, the value and the range — never a run that
//! silently does something else (a negative learning rate is gradient
//! ascent; a pattern that fits no layer is a dense run called sparse).

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use sparsedm_layers::SparsityReport;

/// `lo ≤ v ≤ hi` (or `<` where `open_hi`) and finite, else an error naming `field`.
fn in_range(field: &str, v: f32, lo: f32, hi: f32, open_hi: bool) -> Result<()> {
    let ok = v.is_finite() && v >= lo && if open_hi { v < hi } else { v <= hi };
    if ok {
        return Ok(());
    }
    let close = if open_hi { ")" } else { "]" };
    Err(TrainError::Config(format!("{field} = {v} is outside its accepted range [{lo}, {hi}{close}")))
}

/// Positive and finite, at most `hi`.
fn positive(field: &str, v: f32, hi: f32) -> Result<()> {
    if v.is_finite() && v > 0.0 && v <= hi {
        return Ok(());
    }
    Err(TrainError::Config(format!("{field} = {v} is outside its accepted range (0, {hi}]")))
}

/// At least one.
fn at_least_one(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(TrainError::Config(format!("{field} = 0: it must be at least 1")));
    }
    Ok(())
}

/// Checks every numeric hyper-parameter of `cfg` against its accepted range.
pub fn check_ranges(cfg: &RunConfig) -> Result<()> {
    let o = &cfg.optimizer;
    positive("optimizer.lr", o.lr, 1.0)?;
    in_range("optimizer.weight_decay", o.weight_decay, 0.0, 1.0, false)?;
    in_range("optimizer.betas[0]", o.betas.0, 0.0, 1.0, true)?;
    in_range("optimizer.betas[1]", o.betas.1, 0.0, 1.0, true)?;
    positive("optimizer.eps", o.eps, 1.0)?;
    in_range("train.ema_rate", cfg.train.ema_rate, 0.0, 1.0, false)?;
    if let Some(c) = cfg.train.grad_clip {
        positive("train.grad_clip", c, f32::MAX)?;
    }
    in_range("lr_scheduler.min_factor", cfg.lr_scheduler.min_factor, 0.0, 1.0, false)?;
    at_least_one("dataset.len", cfg.dataset.len)?;
    if cfg.train.save_interval == 0 {
        // It meant a checkpoint every step (the rotation keeping only the last few).
        return Err(TrainError::Config(
            "train.save_interval = 0: it must be at least 1 (steps between checkpoints; the last step is always saved, so a value above train.n_steps saves only the end)".into(),
        ));
    }
    if let Some(s) = &cfg.sparse {
        in_range("sparse.lambda", s.lambda, 0.0, 1.0, false)?;
        in_range("sparse.w_diff", s.w_diff, 0.0, f32::MAX, false)?;
        in_range("sparse.w_kt", s.w_kt, 0.0, f32::MAX, false)?;
        if s.w_diff == 0.0 && s.w_kt == 0.0 {
            return Err(TrainError::Config("sparse.w_diff and sparse.w_kt are both 0: the loss would be zero".into()));
        }
    }
    in_range("dataset.p_uncond", cfg.dataset.p_uncond, 0.0, 1.0, true)?;
    at_least_one("sample.steps", cfg.sample.steps)?;
    at_least_one("sample.grid", cfg.sample.grid)?;
    if cfg.sample.grid > crate::samples::MAX_GRID {
        return Err(TrainError::Config(format!(
            "sample.grid = {}: a preview grid holds at most {} images",
            cfg.sample.grid,
            crate::samples::MAX_GRID
        )));
    }
    if let Some(g) = cfg.sample.cfg_scale
        && !g.is_finite()
    {
        return Err(TrainError::Config(format!("sample.cfg_scale = {g} is not a finite number")));
    }
    if let Some(f) = &cfg.fid {
        if f.n_samples < 2 {
            return Err(TrainError::Config(format!("fid.n_samples = {}: the Fréchet distance needs at least 2", f.n_samples)));
        }
        at_least_one("fid.steps", f.steps)?;
    }
    // Checked here, not at the run's first preview grid or FID (hours in).
    let discrete = cfg.train.schedule.is_discrete();
    let sampler_use = |what: &str, sampler: sparsedm_diffusion::SamplerKind, steps: usize| {
        sampler.check_use(steps, discrete).map_err(|e| {
            TrainError::Config(format!(
                "{what}.sampler = {sampler} with {what}.steps = {steps} and train.schedule = {}: {e}",
                cfg.train.schedule
            ))
        })
    };
    sampler_use("sample", cfg.sample.sampler, cfg.sample.steps)?;
    if let Some(f) = &cfg.fid {
        sampler_use("fid", f.sampler, f.steps)?;
    }
    Ok(())
}

/// Checks that a run's model and dataset agree on class labels, before anything is trained:
/// a class-conditional model (`model_classes` labels, the null label of classifier-free
/// guidance counted) needs a labelled dataset whose `data_classes` labels it can embed — exactly
/// one more than the dataset's with `dataset.p_uncond` > 0 (the last label is the null one);
/// `dataset.p_uncond` and `sample.cfg_scale` apply only to a class-conditional model, and the
/// guidance scale only when the run trains the null label.
pub fn check_labels(cfg: &RunConfig, model_classes: Option<usize>, data_classes: usize) -> Result<()> {
    let bad = |m: String| Err(TrainError::Config(m));
    let p = cfg.dataset.p_uncond;
    let dataset = cfg.dataset.name;
    let Some(nc) = model_classes else {
        if p > 0.0 {
            return bad(format!(
                "dataset.p_uncond = {p} applies to class-conditional models only; this {} model is unconditional (nnet.num_classes unset or ≤ 0)",
                cfg.arch
            ));
        }
        if let Some(g) = cfg.sample.cfg_scale {
            return bad(format!(
                "sample.cfg_scale = {g} applies to class-conditional models only; this {} model is unconditional",
                cfg.arch
            ));
        }
        return Ok(());
    };
    if data_classes == 0 {
        return bad(format!(
            "nnet.num_classes = {nc}: a class-conditional model needs class labels, and dataset.name = {dataset} has none (train it unconditional: nnet.num_classes = -1)"
        ));
    }
    if p > 0.0 && nc != data_classes + 1 {
        return bad(format!(
            "nnet.num_classes = {nc} with dataset.p_uncond = {p}: classifier-free guidance needs the {data_classes} labels of {dataset} plus the null label, nnet.num_classes = {}",
            data_classes + 1
        ));
    }
    if nc < data_classes {
        return bad(format!("nnet.num_classes = {nc} is fewer than the {data_classes} class labels of {dataset}"));
    }
    if let Some(g) = cfg.sample.cfg_scale
        && p == 0.0
    {
        return bad(format!(
            "sample.cfg_scale = {g} needs a null label trained with it: set dataset.p_uncond (U-ViT uses 0.1-0.15) and nnet.num_classes = {}",
            data_classes + 1
        ));
    }
    Ok(())
}

/// Refuses a sparse run whose policy and pattern mask no layer (every
/// selected layer left dense, e.g. a pattern whose M divides no input
/// dimension): it would train a dense model and report it as sparse.
/// `what` names the setting (`sparse.pattern`, or `bench`'s `--pattern`),
/// `instead` what would silently happen.
pub fn ensure_some_layer_masked(report: &SparsityReport, what: &str, pattern: &str, policy: &str, instead: &str) -> Result<()> {
    let masked = report.layers.iter().filter(|l| !matches!(l.masking.as_str(), "dense" | "left-dense")).count();
    if masked == 0 {
        let left: Vec<&str> = report.layers.iter().filter(|l| l.pattern.is_some()).map(|l| l.name.as_str()).take(3).collect();
        return Err(TrainError::Config(format!(
            "{what} {pattern} with policy {policy} masks no layer ({} selected, all left dense{}): {instead}",
            report.layers.iter().filter(|l| l.pattern.is_some()).count(),
            if left.is_empty() { String::new() } else { format!(", e.g. {}", left.join(", ")) }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::RunConfig;

    fn err(set: &str) -> String {
        RunConfig::load("demo_shapes_uvit", &[set.to_string()]).unwrap_err().to_string()
    }

    #[test]
    fn out_of_range_hyper_parameters_are_named() {
        assert!(err("optimizer.lr=-1").contains("optimizer.lr = -1"));
        assert!(err("optimizer.lr=nan").contains("optimizer.lr"));
        assert!(err("optimizer.betas=[1.0, 0.999]").contains("optimizer.betas[0]"));
        assert!(err("optimizer.eps=0").contains("optimizer.eps"));
        assert!(err("train.grad_clip=-2").contains("train.grad_clip"));
        assert!(err("sample.steps=0").contains("sample.steps"));
        assert!(err("train.save_interval=0").contains("train.save_interval = 0: it must be at least 1"));
        assert!(err("sample.grid=1025").contains("sample.grid = 1025: a preview grid holds at most 1024 images"));
        RunConfig::load("demo_shapes_uvit", &["optimizer.lr=1e-3".into()]).unwrap();
    }

    /// Samplers that cannot run as configured are refused when the config is read, not at the
    /// run's first preview grid or FID (an unknown name, too few steps, the wrong kind of schedule).
    #[test]
    fn samplers_that_cannot_run_are_refused_when_read() {
        let errs = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            RunConfig::load("demo_shapes_uvit", &sets).unwrap_err().to_string()
        };
        let e = errs(&["sample.sampler=\"dpm-solver-9\""]);
        assert!(e.contains("dpm-solver-9") && e.contains("dpm-solver-fast, dpm-solver++2m, ddpm, ddim"), "{e}");
        let e = errs(&["sample.sampler=\"dpm-solver-3\"", "sample.steps=2"]);
        assert!(
            e.contains(
                "sample.sampler = dpm-solver-3 with sample.steps = 2 and train.schedule = vp-linear: dpm-solver-3 needs at least 3 steps"
            ),
            "{e}"
        );
        let e = errs(&["sample.sampler=\"ddpm\""]);
        assert!(e.contains("ddpm needs a discrete noise schedule"), "{e}");
        let e = errs(&["train.schedule=\"ddpm-linear\"", "sample.sampler=\"euler-maruyama\""]);
        assert!(e.contains("euler-maruyama needs a continuous noise schedule"), "{e}");
        let e = errs(&["fid.inception=\"i.safetensors\"", "fid.reference=\"r.npz\"", "fid.sampler=\"ddim\""]);
        assert!(e.contains("fid.sampler = ddim"), "{e}");
        let ok = |sets: &[&str]| RunConfig::load("demo_shapes_uvit", &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        ok(&["sample.sampler=\"dpm-solver-3\"", "sample.steps=3"]);
        ok(&["train.schedule=\"ddpm-linear\"", "sample.sampler=\"ddim\"", "sample.steps=1"]);
    }
}
