//! Pictures and plots for people: sample grids readable at a glance, the
//! side-by-side comparison of models drawn from the same noise, and line
//! charts (training curves, quality against sparsity or MACs), all as PNG.
//!
//! * [`grid`]: a labelled grid of samples, each shown at least
//!   [`grid::MIN_CELL`] pixels wide (nearest-neighbour upscaling);
//! * [`compare`]: one column per model, the same noise in every row;
//! * [`chart`]: line and point charts drawn with `plotters`;
//! * [`curves`]: the loss (and FID) curves of training runs, read from their
//!   `metrics.jsonl`;
//! * [`text`] and [`font`]: labels in DejaVu Sans, embedded in the binary, so
//!   nothing depends on the system's fonts;
//! * [`png`]: encoding and writing (atomically, optionally refusing to
//!   overwrite).

pub mod chart;
pub mod compare;
pub mod curves;
pub mod font;
pub mod grid;
pub mod png;
pub mod text;

/// The canvas colour of every figure.
pub const BACKGROUND: image::Rgb<u8> = image::Rgb([255, 255, 255]);
