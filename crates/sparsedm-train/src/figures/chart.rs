//! Line and point charts drawn with `plotters` on its bitmap backend, into
//! an RGB image the caller encodes ([`super::png`]). One chart is a few
//! named series over shared axes; [`render_panels`] stacks several charts
//! (a run's loss above its FID) in one picture.

use super::font::{self, FAMILY};
use crate::error::{Result, TrainError};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Series colours (the usual ten-colour palette's first eight), in order.
pub const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One named set of `(x, y)` points; non-finite points are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Join the points with a line (in the order given).
    pub line: bool,
    /// Mark each point with a dot.
    pub markers: bool,
}

impl Series {
    /// Points joined by a line, with dots when there are few enough to see.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        let markers = points.len() <= 40;
        Series { name: name.into(), points, line: true, markers }
    }

    /// Dots only (e.g. one model in a quality-against-cost chart).
    pub fn points(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, line: false, markers: true }
    }

    fn finite(&self) -> Vec<(f64, f64)> {
        self.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
    }
}

/// A titled chart with labelled axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Names of the x positions 0, 1, 2, ... for a categorical x axis (N:M
    /// ratios); empty for a numeric one.
    pub x_names: Vec<String>,
}

fn fail(what: &str, msg: impl ToString) -> TrainError {
    TrainError::Figure { what: what.to_string(), msg: msg.to_string() }
}

/// `[lo, hi]` of `values` widened by 5% on each side (and to a unit-wide
/// range around a single value), so no point sits on the frame.
fn padded(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    Some((lo - 0.05 * span, hi + 0.05 * span))
}

/// A numeric tick label: integers without a decimal point (training steps
/// read "5000", not "5000.0"), other values with at most four decimals and no
/// trailing zeros, and very small or very large ones in scientific notation.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    if a < 1e7 && (v - v.round()).abs() <= 1e-9 * a.max(1.0) {
        return format!("{}", v.round() as i64);
    }
    if (1e-3..1e7).contains(&a) {
        let s = format!("{v:.4}");
        return s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{v:.2e}")
}

/// Draws `chart` filling `area`.
///
/// # Errors
/// A chart with no finite point, or a drawing failure.
pub fn draw_on(area: &DrawingArea<BitMapBackend<'_>, Shift>, chart: &Chart) -> Result<()> {
    font::ensure()?;
    let what = format!("the chart {:?}", chart.title);
    let series: Vec<(&Series, Vec<(f64, f64)>)> = chart.series.iter().map(|s| (s, s.finite())).filter(|(_, p)| !p.is_empty()).collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let (Some(xr), Some(yr)) = (padded(all().map(|p| p.0)), padded(all().map(|p| p.1))) else {
        return Err(fail(&what, "nothing to plot (no finite values)"));
    };
    area.fill(&WHITE).map_err(|e| fail(&what, e))?;
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(|e| fail(&what, e))?;
    let names = &chart.x_names;
    let named = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
    };
    let numeric = |v: &f64| tick_label(*v);
    let mut mesh = c.configure_mesh();
    mesh.x_label_formatter(&numeric).y_label_formatter(&numeric);
    mesh.x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235));
    if !names.is_empty() {
        mesh.x_labels(names.len()).x_label_formatter(&named);
    }
    mesh.draw().map_err(|e| fail(&what, e))?;
    for (i, (s, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if s.line && points.len() > 1 {
            c.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2))).map_err(|e| fail(&what, e))?;
        }
        let marks = if s.markers { points.clone() } else { Vec::new() };
        c.draw_series(marks.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| fail(&what, e))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()
        .map_err(|e| fail(&what, e))?;
    Ok(())
}

/// `charts` stacked top to bottom, each `width`×`panel_height` pixels.
///
/// # Errors
/// No chart, an empty chart, or a drawing failure.
pub fn render_panels(charts: &[Chart], width: u32, panel_height: u32) -> Result<RgbImage> {
    if charts.is_empty() {
        return Err(fail("a chart", "no chart to draw"));
    }
    let height = panel_height * charts.len() as u32;
    let mut img = RgbImage::from_pixel(width, height, super::BACKGROUND);
    {
        let root = BitMapBackend::with_buffer(img.as_mut(), (width, height)).into_drawing_area();
        for (area, chart) in root.split_evenly((charts.len(), 1)).iter().zip(charts) {
            draw_on(area, chart)?;
        }
        root.present().map_err(|e| fail("a chart", e))?;
    }
    Ok(img)
}

/// One chart, `width`×`height` pixels.
///
/// # Errors
/// As [`render_panels`].
pub fn render(chart: &Chart, width: u32, height: u32) -> Result<RgbImage> {
    render_panels(std::slice::from_ref(chart), width, height)
}

#[cfg(test)]
mod tests {
    use super::tick_label;

    #[test]
    fn tick_labels_read_like_numbers() {
        assert_eq!(tick_label(5000.0), "5000");
        assert_eq!(tick_label(10.0), "10");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(-3.0), "-3");
        assert_eq!(tick_label(0.92), "0.92");
        assert_eq!(tick_label(1.0625), "1.0625");
        assert_eq!(tick_label(0.123456), "0.1235");
        assert_eq!(tick_label(2e-4), "2.00e-4");
        assert_eq!(tick_label(1.5e8), "1.50e8");
    }
}
