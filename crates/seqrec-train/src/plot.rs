//! The training curve PNG: validation metric (top, blue) and training loss (bottom, red) against epoch.
//!
//! Drawn without any text: plotters needs a font library (`ttf`/`ab_glyph` features) to render labels,
//! and the project avoids system font dependencies. The numbers behind the curve are in
//! `history.jsonl`; each panel spans its data's min..max, the x axis epochs 1..last.

use std::path::Path;

use plotters::prelude::*;

use crate::TrainError;

/// Draws `metric` (`(epoch, value)` at evaluations) and `loss` (`(epoch, loss)` every epoch) into `path`.
pub fn plot_curve(
    path: &Path,
    metric: &[(f64, f64)],
    loss: &[(f64, f64)],
) -> Result<(), TrainError> {
    let err = |e: &dyn std::fmt::Display| TrainError::Plot {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(300);
    let x_max = metric
        .iter()
        .chain(loss)
        .map(|p| p.0)
        .fold(1.0f64, f64::max);
    for (area, points, color) in [(&top, metric, &BLUE), (&bottom, loss, &RED)] {
        let finite: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
        if finite.is_empty() {
            continue;
        }
        let lo = finite.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = finite.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let pad = if hi > lo {
            (hi - lo) * 0.05
        } else {
            lo.abs().max(1.0) * 0.05
        };
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .build_cartesian_2d(0.0..x_max.max(1.0) + 0.5, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .plotting_area()
            .draw(&Rectangle::new(
                [(0.0, lo - pad), (x_max.max(1.0) + 0.5, hi + pad)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                finite.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
        // A marker per point, so a single evaluation is visible too.
        chart
            .draw_series(finite.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
