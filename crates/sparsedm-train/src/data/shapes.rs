//! The embedded dataset: coloured geometric shapes drawn procedurally and
//! deterministically (no download), for the demo and the tests. Image `i`
//! depends only on (seed, i): a dark background, one shape — disc, square
//! or triangle (the class label) — in one of six saturated colours, at a
//! random position and size, anti-aliased by 4×4 supersampling.

use super::Dataset;
use crate::error::{Result, TrainError};
use sparsedm_tensor::Rng;

/// Shape classes (the label).
pub const SHAPE_NAMES: [&str; CLASSES] = ["disc", "square", "triangle"];

/// Number of class labels (the shapes).
pub const CLASSES: usize = 3;

const PALETTE: [[f32; 3]; 6] =
    [[0.95, 0.20, 0.20], [0.20, 0.85, 0.25], [0.25, 0.40, 0.95], [0.95, 0.85, 0.20], [0.20, 0.85, 0.90], [0.90, 0.25, 0.85]];

/// Procedural shapes at `size`×`size` (16 or 32 are the intended sizes).
#[derive(Debug, Clone)]
pub struct ShapesDataset {
    size: usize,
    len: usize,
    seed: u64,
}

/// The random parameters of one image.
#[derive(Debug, Clone, Copy)]
struct Params {
    class: usize,
    color: [f32; 3],
    background: [f32; 3],
    cx: f32,
    cy: f32,
    r: f32,
    angle: f32,
}

impl ShapesDataset {
    pub fn new(size: usize, len: usize, seed: u64) -> Result<Self> {
        if !(8..=256).contains(&size) || len == 0 {
            return Err(TrainError::Config(format!("shapes dataset: size {size} must be in 8..=256 and len {len} positive")));
        }
        Ok(ShapesDataset { size, len, seed })
    }

    fn params(&self, i: usize) -> Params {
        // Each image owns a disjoint block range of the Philox stream.
        let mut rng = Rng::from_state(self.seed, (i as u64) << 8);
        let u = rng.uniform_vec(12, 0.0, 1.0);
        let class = ((u[0] * 3.0) as usize).min(2);
        let base = PALETTE[((u[1] * 6.0) as usize).min(5)];
        let jitter = |c: f32, v: f32| (c + (v - 0.5) * 0.1).clamp(0.0, 1.0);
        let s = self.size as f32;
        let r = s * (0.2 + 0.15 * u[5]);
        Params {
            class,
            color: [jitter(base[0], u[2]), jitter(base[1], u[3]), jitter(base[2], u[4])],
            background: [0.05 + 0.15 * u[6], 0.05 + 0.15 * u[7], 0.05 + 0.15 * u[8]],
            cx: r + (s - 2.0 * r) * u[9],
            cy: r + (s - 2.0 * r) * u[10],
            r,
            angle: u[11] * std::f32::consts::TAU,
        }
    }
}

/// Whether point (x, y) lies inside the shape.
fn inside(p: &Params, x: f32, y: f32) -> bool {
    let (dx, dy) = (x - p.cx, y - p.cy);
    match p.class {
        0 => dx * dx + dy * dy <= p.r * p.r,
        1 => {
            let (c, s) = (p.angle.cos(), p.angle.sin());
            let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
            let h = p.r * 0.8;
            u.abs() <= h && v.abs() <= h
        }
        _ => {
            // Equilateral triangle with circumradius r, rotated by angle.
            let mut inside = true;
            for k in 0..3 {
                let a = p.angle + k as f32 * std::f32::consts::TAU / 3.0;
                // Half-plane facing the edge opposite vertex k.
                let (nx, ny) = (-(a.cos()), -(a.sin()));
                if dx * nx + dy * ny > p.r * 0.5 {
                    inside = false;
                }
            }
            inside
        }
    }
}

impl Dataset for ShapesDataset {
    fn len(&self) -> usize {
        self.len
    }
    fn image_size(&self) -> (usize, usize) {
        (self.size, self.size)
    }
    fn get(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let n = self.size;
        if out.len() != 3 * n * n {
            return Err(TrainError::Config(format!("shapes dataset: buffer of {} values for a 3x{n}x{n} image", out.len())));
        }
        let p = self.params(i);
        const SS: usize = 4;
        for y in 0..n {
            for x in 0..n {
                let mut cover = 0usize;
                for sy in 0..SS {
                    for sx in 0..SS {
                        let fx = x as f32 + (sx as f32 + 0.5) / SS as f32;
                        let fy = y as f32 + (sy as f32 + 0.5) / SS as f32;
                        cover += inside(&p, fx, fy) as usize;
                    }
                }
                let a = cover as f32 / (SS * SS) as f32;
                for c in 0..3 {
                    out[c * n * n + y * n + x] = a * p.color[c] + (1.0 - a) * p.background[c];
                }
            }
        }
        Ok(())
    }
    fn label(&self, i: usize) -> Option<i64> {
        Some(self.params(i).class as i64)
    }
    fn num_classes(&self) -> usize {
        CLASSES
    }
    fn describe(&self) -> String {
        format!("embedded shapes dataset ({} images of {}x{}, seed {})", self.len, self.size, self.size, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        let d = ShapesDataset::new(16, 100, 7).unwrap();
        let mut a = vec![0.0; 3 * 256];
        let mut b = vec![0.0; 3 * 256];
        d.get(5, &mut a).unwrap();
        d.get(5, &mut b).unwrap();
        assert_eq!(a, b);
        d.get(6, &mut b).unwrap();
        assert_ne!(a, b);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        let counts = (0..100).fold([0; 3], |mut c, i| {
            c[d.label(i).unwrap() as usize] += 1;
            c
        });
        assert!(counts.iter().all(|&c| c > 15), "class counts {counts:?}");
        // The shape covers a real part of the image: some pixels are bright.
        assert!(a.iter().any(|&v| v > 0.5));
    }
}
