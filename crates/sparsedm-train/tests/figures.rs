//! The figures module: sample grids and comparison figures have the
//! expected size with each sample upscaled exactly (nearest neighbour) and a
//! drawn label; charts put coloured pixels where their lines are; training
//! curves are read from `metrics.jsonl` with one clear error for a missing,
//! empty or malformed file; user-named outputs are not overwritten.

use image::{Rgb, RgbImage};
use sparsedm_testkit::Scratch;
use sparsedm_train::TrainError;
use sparsedm_train::figures::chart::{self, COLORS, Chart, Series};
use sparsedm_train::figures::compare::{self, Column};
use sparsedm_train::figures::grid::{self, GAP, LABEL_BAND, scale_for};
use sparsedm_train::figures::{BACKGROUND, curves, png};
use sparsedm_train::samples::Images;

/// A fresh directory of this test's own, removed when the test passes (kept, and named, when it fails).
fn tmp(name: &str) -> Scratch {
    Scratch::in_dir(env!("CARGO_TARGET_TMPDIR"), &format!("figures-{name}"))
}

/// `n` images of `h`×`w`, image `i` filled with `colors[i]`, except pixel
/// (0, 0) of each, which is black (to check the upscaling is exact).
fn solid(colors: &[[u8; 3]], h: usize, w: usize) -> Images {
    let mut data = Vec::new();
    for c in colors {
        for p in 0..h * w {
            data.extend_from_slice(if p == 0 { &[0, 0, 0] } else { c });
        }
    }
    Images { data, n: colors.len(), h, w }
}

/// Whether any pixel in the rectangle is far from white (text or lines).
fn has_ink(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> bool {
    (y0..y1.min(img.height())).any(|y| (x0..x1.min(img.width())).any(|x| img.get_pixel(x, y).0.iter().any(|&v| v < 160)))
}

const RED: [u8; 3] = [200, 10, 10];
const GREEN: [u8; 3] = [10, 200, 10];
const BLUE: [u8; 3] = [10, 10, 200];
const GREY: [u8; 3] = [90, 90, 90];

#[test]
fn small_images_are_scaled_to_at_least_64_pixels() {
    assert_eq!(scale_for(16, 16), 4);
    assert_eq!(scale_for(32, 32), 2);
    assert_eq!(scale_for(20, 24), 4, "20 px ×3 would be 60 < 64");
    assert_eq!(scale_for(64, 64), 1);
    assert_eq!(scale_for(256, 128), 1);
}

#[test]
fn a_grid_upscales_each_sample_exactly_and_is_labelled() {
    let imgs = solid(&[RED, GREEN, BLUE, GREY], 16, 16);
    let g = grid::render(&imgs, 2, "SparseDM 2:4").unwrap();
    let cell = 64 + GAP;
    assert_eq!(g.height() as usize, LABEL_BAND + 2 * cell + GAP);
    let grid_w = 2 * cell + GAP;
    assert!(g.width() as usize >= grid_w, "{}", g.width());
    let left = (g.width() as usize - grid_w) / 2 + GAP;
    // Sample 3 (row 1, col 1): its black pixel (0, 0) is a 4×4 block, the rest grey.
    let (ox, oy) = ((left + cell) as u32, (LABEL_BAND + cell) as u32);
    for (dx, dy) in [(0, 0), (3, 3)] {
        assert_eq!(g.get_pixel(ox + dx, oy + dy), &Rgb([0, 0, 0]));
    }
    for (dx, dy) in [(4, 0), (0, 4), (63, 63)] {
        assert_eq!(g.get_pixel(ox + dx, oy + dy), &Rgb(GREY));
    }
    assert_eq!(g.get_pixel(left as u32 + 10, LABEL_BAND as u32 + 10), &Rgb(RED));
    assert_eq!(g.get_pixel(ox + 10, LABEL_BAND as u32 + 10), &Rgb(GREEN));
    assert_eq!(g.get_pixel(left as u32 + 10, oy + 10), &Rgb(BLUE));
    assert!(has_ink(&g, 0, 0, g.width(), LABEL_BAND as u32), "the label is drawn");
    // The gap between samples stays background.
    assert_eq!(g.get_pixel(ox - 1, oy + 10), &BACKGROUND);
}

/// With class labels, each cell's top-left corner holds a white box with its label drawn in it
/// (the rest of the cell as before) and the caption says so; a label count that is not the image
/// count is an error.
#[test]
fn a_class_grid_labels_each_sample_in_its_corner() {
    let imgs = solid(&[RED, GREEN, BLUE, GREY], 16, 16);
    let plain = grid::render(&imgs, 2, "cond").unwrap();
    let g = grid::render_classes(&imgs, 2, "cond", Some(&[3, 0, 12, 7])).unwrap();
    assert_eq!(g.height(), plain.height());
    assert!(g.width() > plain.width(), "the longer caption widens the canvas");
    let cell = 64 + GAP;
    // Cell i's top-left corner in a grid of width `w`.
    let corner =
        |w: u32, i: usize| (((w as usize - (2 * cell + GAP)) / 2 + GAP + (i % 2) * cell) as u32, (LABEL_BAND + (i / 2) * cell) as u32);
    for i in 0..4 {
        let ((ox, oy), (px, py)) = (corner(g.width(), i), corner(plain.width(), i));
        // The box's left column is white, the label is ink inside the box; without labels the
        // corner is the sample.
        for dy in 0..10 {
            assert_eq!(g.get_pixel(ox, oy + dy), &BACKGROUND, "cell {i}: the box");
        }
        assert!(has_ink(&g, ox + 1, oy, ox + 16, oy + 13), "cell {i}: its label");
        assert_eq!(plain.get_pixel(px + 5, py + 5), &Rgb([RED, GREEN, BLUE, GREY][i]));
        // Away from the corner the sample is untouched.
        assert_eq!(g.get_pixel(ox + 40, oy + 40), plain.get_pixel(px + 40, py + 40));
    }
    // The box of the two-digit label (cell 2) is wider than that of a one-digit one (cell 0):
    // the white run along the box's bottom row (its height: the white run down its left column).
    let box_width = |i: usize| {
        let (ox, oy) = corner(g.width(), i);
        let h = (0..64).take_while(|&dy| g.get_pixel(ox, oy + dy) == &BACKGROUND).count() as u32;
        (0..64).take_while(|&dx| g.get_pixel(ox + dx, oy + h - 1) == &BACKGROUND).count()
    };
    assert!(box_width(2) > box_width(0) + 3 && box_width(0) >= 6, "{} against {}", box_width(2), box_width(0));
    let e = grid::render_classes(&imgs, 2, "cond", Some(&[1, 2])).unwrap_err();
    assert!(e.to_string().contains("2 class labels for 4 images"), "{e}");
}

#[test]
fn a_grid_of_nothing_is_an_error() {
    let empty = Images { data: Vec::new(), n: 0, h: 16, w: 16 };
    assert!(matches!(grid::render(&empty, 4, "x"), Err(TrainError::Figure { .. })));
    let short = Images { data: vec![0; 10], n: 1, h: 16, w: 16 };
    assert!(grid::render(&short, 1, "x").is_err());
}

#[test]
fn the_comparison_puts_one_labelled_column_per_model() {
    let dense = solid(&[RED, RED, RED], 16, 16);
    let sparse = solid(&[GREEN, GREEN, GREEN], 16, 16);
    let ste = solid(&[BLUE, BLUE, BLUE], 16, 16);
    let cols = [
        Column { label: "dense", images: &dense },
        Column { label: "SparseDM 2:4", images: &sparse },
        Column { label: "STE 2:4", images: &ste },
    ];
    let fig = compare::render(&cols, 2, "Same noise").unwrap();
    assert_eq!(fig.height() as usize, 2 * 24 + 2 * (64 + GAP) + GAP);
    assert!(fig.width() >= 3 * 66);
    // Left to right along the first sample row: red, then green, then blue.
    let y = 2 * 24 + 10;
    let row: Vec<[u8; 3]> = (0..fig.width()).map(|x| fig.get_pixel(x, y).0).filter(|p| [RED, GREEN, BLUE].contains(p)).collect();
    let mut order = row.clone();
    order.dedup();
    assert_eq!(order, [RED, GREEN, BLUE]);
    assert!(row.iter().filter(|&&p| p == GREEN).count() >= 60, "a 64-px-wide sample");
    assert!(has_ink(&fig, 0, 24, fig.width(), 48), "column labels are drawn");
    // Too few images in a column, or none at all, is an error.
    assert!(compare::render(&cols, 4, "x").is_err());
    assert!(compare::render(&[], 1, "x").is_err());
}

#[test]
fn a_chart_draws_its_line_in_the_series_colour() {
    let c = Chart {
        title: "FD against sparsity".into(),
        x_label: "sparsity".into(),
        y_label: "FD".into(),
        series: vec![Series::line("STE", vec![(0.0, 0.0), (0.5, 1.0), (1.0, 2.0)])],
        x_names: Vec::new(),
    };
    let img = chart::render(&c, 640, 400).unwrap();
    assert_eq!(img.dimensions(), (640, 400));
    let c0 = COLORS[0];
    let coloured: Vec<(u32, u32)> = img.enumerate_pixels().filter(|(_, _, p)| p.0 == [c0.0, c0.1, c0.2]).map(|(x, y, _)| (x, y)).collect();
    assert!(coloured.len() > 200, "{} pixels of the line colour", coloured.len());
    // The line rises to the right: its leftmost pixels are lower than its rightmost.
    let lo = coloured.iter().min_by_key(|p| p.0).unwrap();
    let hi = coloured.iter().filter(|p| p.0 < 560).max_by_key(|p| p.0).unwrap();
    assert!(lo.1 > hi.1 + 100, "left end {lo:?}, right end {hi:?}");
    // Nothing finite to plot is an error, not an empty picture.
    let empty = Chart { series: vec![Series::points("x", vec![(f64::NAN, 1.0)])], ..c };
    assert!(matches!(chart::render(&empty, 640, 400), Err(TrainError::Figure { .. })));
}

#[test]
fn run_curves_come_from_metrics_jsonl() {
    let dir = tmp("curves");
    let lines = [
        r#"{"step":1,"loss":1.0,"lr":0.1}"#,
        r#"{"step":2,"loss":0.8}"#,
        r#"{"step":2,"fid":50.0,"best_fid":50.0}"#,
        r#"{"step":3,"loss":0.7}"#,
        // A resumed run logs step 3 again: the later value wins.
        r#"{"step":3,"loss":0.6}"#,
        "",
    ];
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n")).unwrap();
    let run = curves::read(&dir).unwrap();
    assert_eq!(run.loss, [(1.0, 1.0), (2.0, 0.8), (3.0, 0.6)]);
    assert_eq!(run.fid, [(2.0, 50.0)]);
    let img = curves::chart(&[run.clone(), run]).unwrap();
    assert_eq!(img.dimensions(), (curves::WIDTH, 2 * curves::PANEL_HEIGHT), "loss and FID panels");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_run_folders_give_one_clear_error() {
    let dir = tmp("bad");
    let msg = |e: TrainError| e.to_string();
    let e = msg(curves::read(&dir).unwrap_err());
    assert!(e.contains("metrics.jsonl") && e.contains("no such file"), "{e}");
    std::fs::write(dir.join("metrics.jsonl"), "\n").unwrap();
    assert!(msg(curves::read(&dir).unwrap_err()).contains("is empty"));
    std::fs::write(dir.join("metrics.jsonl"), "{\"step\":1,\"loss\":1}\nnot json\n").unwrap();
    assert!(msg(curves::read(&dir).unwrap_err()).contains("line 2 is not JSON"));
    std::fs::write(dir.join("metrics.jsonl"), "{\"loss\":1}\n").unwrap();
    assert!(msg(curves::read(&dir).unwrap_err()).contains("no \"step\""));
    std::fs::write(dir.join("metrics.jsonl"), "{\"step\":1,\"lr\":1}\n").unwrap();
    assert!(msg(curves::read(&dir).unwrap_err()).contains("no \"loss\" or \"fid\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn named_outputs_are_not_overwritten_without_force() {
    let dir = tmp("force");
    let path = dir.join("p.png");
    let img = RgbImage::from_pixel(3, 2, Rgb(RED));
    png::save_new(&path, &img, false).unwrap();
    let e = png::save_new(&path, &img, false).unwrap_err().to_string();
    assert!(e.contains("--force"), "{e}");
    png::save_new(&path, &RgbImage::from_pixel(5, 4, Rgb(RED)), true).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8().dimensions(), (5, 4));
    let _ = std::fs::remove_dir_all(&dir);
}
