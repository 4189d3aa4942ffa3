//! Labels on an RGB image: measuring and drawing one line of text in the
//! embedded font (see [`super::font`]).

use super::font::{self, FAMILY};
use crate::error::{Result, TrainError};
use image::RgbImage;
use plotters::prelude::*;

/// Where a label's `x` is: its left edge or its centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
}

fn fail(msg: impl ToString) -> TrainError {
    TrainError::Figure { what: "a label".into(), msg: msg.to_string() }
}

/// The `(width, height)` in pixels of `text` drawn `px` pixels high.
pub fn size(text: &str, px: u32) -> Result<(u32, u32)> {
    font::ensure()?;
    (FAMILY, px as f64).into_font().box_size(text).map_err(fail)
}

/// Draws `text` in black, `px` pixels high, with its top at `y` and its
/// left edge (or centre) at `x`. Text running past the image is clipped.
pub fn draw(img: &mut RgbImage, text: &str, x: i32, y: i32, px: u32, align: Align) -> Result<()> {
    font::ensure()?;
    let x = match align {
        Align::Left => x,
        Align::Center => x - size(text, px)?.0 as i32 / 2,
    };
    let (w, h) = img.dimensions();
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let style = TextStyle::from((FAMILY, px as f64).into_font()).color(&BLACK);
    root.draw_text(text, &style, (x, y)).map_err(fail)?;
    root.present().map_err(fail)?;
    Ok(())
}
