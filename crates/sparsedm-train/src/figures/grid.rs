//! A labelled grid of samples. Small images (the demo's are 16×16) are
//! scaled up by a whole factor with nearest-neighbour sampling until each is
//! at least [`MIN_CELL`] pixels on its shorter side: every generated pixel
//! stays a crisp, exact block instead of a 16-pixel smudge.

use super::BACKGROUND;
use super::text::{self, Align};
use crate::error::{Result, TrainError};
use crate::samples::Images;
use image::{Rgb, RgbImage};

/// The smallest size in pixels a sample is shown at.
pub const MIN_CELL: usize = 64;
/// Space between samples and around the grid.
pub const GAP: usize = 2;
/// Height of the label text.
pub const LABEL_PX: u32 = 14;
/// Height of the label band above the samples.
pub const LABEL_BAND: usize = 22;

/// The whole-number factor that shows an `h`×`w` image at least
/// [`MIN_CELL`] pixels on its shorter side (1 for images already that big).
pub fn scale_for(h: usize, w: usize) -> usize {
    MIN_CELL.div_ceil(h.min(w).max(1)).max(1)
}

/// Copies image `i` of `imgs` into `canvas` with its top-left corner at
/// `(ox, oy)`, each pixel as a `scale`×`scale` block.
pub fn blit(canvas: &mut RgbImage, imgs: &Images, i: usize, ox: usize, oy: usize, scale: usize) {
    for y in 0..imgs.h * scale {
        for x in 0..imgs.w * scale {
            let p = ((i * imgs.h + y / scale) * imgs.w + x / scale) * 3;
            canvas.put_pixel((ox + x) as u32, (oy + y) as u32, Rgb([imgs.data[p], imgs.data[p + 1], imgs.data[p + 2]]));
        }
    }
}

/// `imgs` as a grid of `cols` columns under the label `title` followed by
/// the image count and native size (`"SparseDM 2:4 · 64 samples, 16×16 px
/// shown ×4"`). The canvas is widened if the label needs it.
///
/// # Errors
/// No images, a buffer of the wrong size, or a font problem.
pub fn render(imgs: &Images, cols: usize, title: &str) -> Result<RgbImage> {
    render_classes(imgs, cols, title, None)
}

/// Height of a sample's class label.
pub const CLASS_PX: u32 = 11;

/// [`render`] with each sample's class label (`classes[i]` for image `i`) in a white box at
/// its cell's top-left corner, and "class in each corner" in the caption: a class-conditional
/// model's grid says which class each sample was drawn for.
///
/// # Errors
/// Those of [`render`]; a `classes` whose length is not the image count.
pub fn render_classes(imgs: &Images, cols: usize, title: &str, classes: Option<&[i64]>) -> Result<RgbImage> {
    if let Some(c) = classes
        && c.len() != imgs.n
    {
        return Err(TrainError::Figure { what: "a sample grid".into(), msg: format!("{} class labels for {} images", c.len(), imgs.n) });
    }
    if imgs.n == 0 || imgs.h == 0 || imgs.w == 0 || imgs.data.len() != imgs.n * imgs.h * imgs.w * 3 {
        return Err(TrainError::Figure {
            what: "a sample grid".into(),
            msg: format!("{} images of {}x{} in a buffer of {} bytes", imgs.n, imgs.w, imgs.h, imgs.data.len()),
        });
    }
    let scale = scale_for(imgs.h, imgs.w);
    let (cw, ch) = (imgs.w * scale, imgs.h * scale);
    let cols = cols.clamp(1, imgs.n);
    let rows = imgs.n.div_ceil(cols);
    let scale_note = if scale > 1 { format!(" shown ×{scale}") } else { String::new() };
    let noun = if imgs.n == 1 { "sample" } else { "samples" };
    let caption = format!("{} {noun}, {}×{} px{scale_note}", imgs.n, imgs.w, imgs.h);
    let caption = if classes.is_some() { format!("{caption}, class in each corner") } else { caption };
    let label = if title.is_empty() { caption } else { format!("{title} · {caption}") };
    let grid_w = cols * (cw + GAP) + GAP;
    let width = grid_w.max(text::size(&label, LABEL_PX)?.0 as usize + 2 * GAP + 4);
    let height = LABEL_BAND + rows * (ch + GAP) + GAP;
    let mut canvas = RgbImage::from_pixel(width as u32, height as u32, BACKGROUND);
    let left = (width - grid_w) / 2 + GAP;
    for i in 0..imgs.n {
        let (r, c) = (i / cols, i % cols);
        let (ox, oy) = (left + c * (cw + GAP), LABEL_BAND + r * (ch + GAP));
        blit(&mut canvas, imgs, i, ox, oy, scale);
        if let Some(classes) = classes {
            let text = classes[i].to_string();
            let (tw, th) = text::size(&text, CLASS_PX)?;
            // A white box of the text plus a pixel around it, inside the cell.
            let (bw, bh) = ((tw as usize + 2).min(cw), (th as usize + 2).min(ch));
            for y in oy..oy + bh {
                for x in ox..ox + bw {
                    canvas.put_pixel(x as u32, y as u32, BACKGROUND);
                }
            }
            // (The font's glyphs start a pixel above the requested top.)
            text::draw(&mut canvas, &text, ox as i32 + 1, oy as i32 + 2, CLASS_PX, Align::Left)?;
        }
    }
    text::draw(&mut canvas, &label, (GAP + 2) as i32, 4, LABEL_PX, Align::Left)?;
    Ok(canvas)
}
