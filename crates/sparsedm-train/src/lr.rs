//! Learning-rate schedules: U-ViT's "customized" linear warm-up then
//! constant (LambdaLR with factor min(step/warmup, 1), where step counts
//! from 0, so the first update uses factor 0), and warm-up then cosine.

/// A learning-rate schedule, as a factor on the base rate per step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    /// Linear warm-up over `warmup` steps, then constant (U-ViT).
    WarmupConstant {
        warmup: u64,
    },
    /// Linear warm-up, then cosine decay to `min_factor` at `total` steps.
    WarmupCosine {
        warmup: u64,
        total: u64,
        min_factor: f32,
    },
}

impl LrSchedule {
    /// The factor for 0-based optimizer step `step`.
    pub fn factor(&self, step: u64) -> f32 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::WarmupConstant { warmup } => {
                if warmup == 0 {
                    1.0
                } else {
                    (step as f32 / warmup as f32).min(1.0)
                }
            }
            LrSchedule::WarmupCosine { warmup, total, min_factor } => {
                if step < warmup {
                    step as f32 / warmup.max(1) as f32
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f32;
                    let p = ((step - warmup) as f32 / span).min(1.0);
                    min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f32::consts::PI * p).cos())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_constant_like_uvit() {
        let s = LrSchedule::WarmupConstant { warmup: 2500 };
        assert_eq!(s.factor(0), 0.0);
        assert_eq!(s.factor(1250), 0.5);
        assert_eq!(s.factor(2500), 1.0);
        assert_eq!(s.factor(500_000), 1.0);
        let c = LrSchedule::WarmupCosine { warmup: 10, total: 110, min_factor: 0.1 };
        assert!((c.factor(60) - 0.55).abs() < 1e-6);
        assert!((c.factor(110) - 0.1).abs() < 1e-6);
    }
}
