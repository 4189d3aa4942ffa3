//! The one font of every figure: DejaVu Sans, embedded in the binary by the
//! `dejavu` crate and handed to plotters' ab_glyph text renderer. Labels
//! therefore look the same on every machine and no system font library
//! (fontconfig, freetype) is needed to build or run.

use crate::error::{Result, TrainError};
use plotters::style::{FontStyle, register_font};
use std::sync::OnceLock;

/// The family every text style names. It is plotters' default family, so
/// the axis labels plotters draws on its own use the embedded font too.
pub const FAMILY: &str = "sans-serif";

/// Registers DejaVu Sans as [`FAMILY`] (once per process); call it before
/// drawing text.
///
/// # Errors
/// [`TrainError::Figure`] if the embedded font cannot be parsed.
pub fn ensure() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok { Ok(()) } else { Err(TrainError::Figure { what: "text".into(), msg: "the embedded DejaVu Sans font cannot be read".into() }) }
}
