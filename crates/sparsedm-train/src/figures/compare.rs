//! The side-by-side figure: the same starting noise through several models
//! (dense and each sparse method), one labelled column per model, so a
//! reader compares what pruning did to *the same* samples rather than to
//! different random draws.

use super::BACKGROUND;
use super::grid::{GAP, LABEL_PX, blit, scale_for};
use super::text::{self, Align};
use crate::error::{Result, TrainError};
use crate::samples::Images;
use image::RgbImage;

/// Samples per column the reports show.
pub const ROWS: usize = 6;
/// Height of the title band and of the column-label band.
const BAND: usize = 24;

/// One model's column: its label and its images, image `i` drawn from the
/// same noise as image `i` of every other column.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    pub label: &'a str,
    pub images: &'a Images,
}

/// The first `rows` images of each column side by side under `title`.
///
/// # Errors
/// No columns, columns of different image sizes or with too few images,
/// or a font problem.
pub fn render(columns: &[Column<'_>], rows: usize, title: &str) -> Result<RgbImage> {
    let bad = |msg: String| TrainError::Figure { what: "the comparison figure".into(), msg };
    let first = columns.first().ok_or_else(|| bad("no models to compare".into()))?.images;
    let (h, w) = (first.h, first.w);
    let rows = rows.max(1);
    for c in columns {
        let i = c.images;
        if (i.h, i.w) != (h, w) || i.n < rows || i.data.len() != i.n * i.h * i.w * 3 {
            return Err(bad(format!("column {:?} has {} images of {}x{}; need {rows} of {w}x{h}", c.label, i.n, i.w, i.h)));
        }
    }
    let scale = scale_for(h, w);
    let (cw, ch) = (w * scale, h * scale);
    // A column is as wide as its label needs, and at least a sample.
    let mut widths = Vec::with_capacity(columns.len());
    for c in columns {
        widths.push(cw.max(text::size(c.label, LABEL_PX)?.0 as usize + 8));
    }
    let body_w: usize = widths.iter().map(|cw| cw + GAP).sum::<usize>() + GAP;
    let width = body_w.max(text::size(title, LABEL_PX)?.0 as usize + 2 * GAP + 4);
    let height = 2 * BAND + rows * (ch + GAP) + GAP;
    let mut canvas = RgbImage::from_pixel(width as u32, height as u32, BACKGROUND);
    text::draw(&mut canvas, title, (GAP + 2) as i32, 4, LABEL_PX, Align::Left)?;
    let mut x = (width - body_w) / 2 + GAP;
    for (c, &colw) in columns.iter().zip(&widths) {
        let centre = x + colw / 2;
        text::draw(&mut canvas, c.label, centre as i32, (BAND + 4) as i32, LABEL_PX, Align::Center)?;
        for r in 0..rows {
            blit(&mut canvas, c.images, r, centre - cw / 2, 2 * BAND + r * (ch + GAP), scale);
        }
        x += colw + GAP;
    }
    Ok(canvas)
}
