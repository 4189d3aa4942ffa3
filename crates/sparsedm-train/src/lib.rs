//! `sparsedm-train`: what turns models and layers into training runs —
//! data ([`data`]), AdamW with PyTorch's semantics ([`optim`]), learning
//! rate schedules ([`lr`]), gradient clipping and accumulation ([`grad`]),
//! and EMA of the weights ([`ema`]); [`step`] is one training
//! step on any device, [`trainer`] runs it with data and checkpoints,
//! [`experiment`] measures the result (zeros, MACs, FD-px, FID) for the
//! demo and the reproduction suites, and [`figures`] draws sample grids,
//! model comparisons and plots as PNG.

pub mod build;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod ema;
pub mod error;
pub mod experiment;
pub mod figures;
pub mod grad;
pub mod lr;
pub mod optim;
pub mod precision;
pub mod restore;
pub mod resume;
pub mod run_lock;
pub mod samples;
pub mod speed;
pub mod step;
pub mod trainer;
pub mod validate;
pub mod vocab;

pub use config::RunConfig;
pub use error::{Result, TrainError};
pub use step::{StepMetrics, TrainStep};
pub use trainer::Trainer;
