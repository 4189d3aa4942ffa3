//! "FD-px": a Fréchet distance in a feature space that needs no download.
//!
//! Each image becomes a short feature vector: the mean of each RGB channel
//! over each cell of a `cells × cells` grid (values in \[0, 1\]); for 4×4
//! cells that is 48 numbers. The Fréchet distance between the Gaussians
//! fitted to two such feature sets says how far apart the image sets are in
//! colour and coarse layout, which is enough to tell a model that draws the
//! dataset's shapes from one that draws coloured noise, and is what the demo
//! and the tiny reproduction suites report when no Inception weights are at
//! hand. It is **not FID**: the numbers are not comparable with published ones.

use crate::error::{FidError, Result};
use crate::images::{ImageBatch, ImageSource};
use crate::stats::{FeatureStats, StatsAccumulator};

/// The demo's grid: 4×4 cells × RGB = 48-d features ("FD-px48").
pub const DEFAULT_CELLS: usize = 4;

/// Appends the pooled-pixel features of every image of `batch` to `out`
/// (`3 · cells²` values per image, channel-major, cells row-major). Cell
/// `(cy, cx)` covers rows `cy·h/cells .. (cy+1)·h/cells` (integer division)
/// and likewise for columns, so every pixel belongs to exactly one cell.
pub fn pooled_features(batch: &ImageBatch, cells: usize, out: &mut Vec<f64>) -> Result<()> {
    let (h, w) = (batch.height, batch.width);
    if cells == 0 || cells > h || cells > w {
        return Err(FidError::invalid("cells", format!("{cells} cells per side do not fit {w}x{h} images")));
    }
    let plane = h * w;
    out.reserve(batch.n * 3 * cells * cells);
    for img in batch.data.chunks_exact(3 * plane) {
        for channel in img.chunks_exact(plane) {
            for cy in 0..cells {
                let (y0, y1) = (cy * h / cells, (cy + 1) * h / cells);
                for cx in 0..cells {
                    let (x0, x1) = (cx * w / cells, (cx + 1) * w / cells);
                    let mut s = 0f64;
                    for row in channel[y0 * w..y1 * w].chunks_exact(w) {
                        s += row[x0..x1].iter().map(|&v| f64::from(v)).sum::<f64>();
                    }
                    out.push(s / ((y1 - y0) * (x1 - x0)) as f64);
                }
            }
        }
    }
    Ok(())
}

/// Mean and covariance of the pooled-pixel features of every image of `source`.
pub fn pixel_stats(source: &dyn ImageSource, cells: usize) -> Result<FeatureStats> {
    let mut acc = StatsAccumulator::new(3 * cells * cells)?;
    let mut feats = Vec::new();
    for batch in source.batches(256)? {
        feats.clear();
        pooled_features(&batch?, cells, &mut feats)?;
        acc.add_batch_f64(&feats)?;
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize, usize) -> f32) -> ImageBatch {
        let mut data = Vec::with_capacity(n * 3 * h * w);
        for i in 0..n {
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        data.push(f(i, c, y, x));
                    }
                }
            }
        }
        ImageBatch { data, n, height: h, width: w }
    }

    #[test]
    fn cells_average_their_pixels() {
        // 6x6 image, 2x2 cells of 3x3: value = channel + (is right half) + 10·(is bottom half).
        let b = batch(1, 6, 6, |_, c, y, x| c as f32 + (x >= 3) as u8 as f32 + 10.0 * (y >= 3) as u8 as f32);
        let mut f = Vec::new();
        pooled_features(&b, 2, &mut f).unwrap();
        assert_eq!(f, vec![0.0, 1.0, 10.0, 11.0, 1.0, 2.0, 11.0, 12.0, 2.0, 3.0, 12.0, 13.0]);
    }

    #[test]
    fn uneven_cells_cover_every_pixel_once() {
        // 5 rows in 2 cells: rows 0..2 and 2..5. A ramp over rows tells them apart.
        let b = batch(1, 5, 5, |_, _, y, _| y as f32);
        let mut f = Vec::new();
        pooled_features(&b, 2, &mut f).unwrap();
        assert_eq!(&f[..4], &[0.5, 0.5, 3.0, 3.0]);
    }

    #[test]
    fn too_many_cells_is_an_error() {
        let b = batch(1, 2, 2, |_, _, _, _| 0.0);
        let err = pooled_features(&b, 3, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("3 cells") && err.contains("2x2"), "{err}");
    }
}
