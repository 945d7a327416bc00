//! The training curve PNG: validation metric (top, blue) and training loss (bottom, red) against epoch,
//! with titles, axis descriptions and tick labels.
//!
//! Text needs a TrueType font. The project ships none (and links no font library): the first readable
//! file among `$SEQREC_FONT` and the usual system locations of DejaVu Sans, Liberation Sans and Noto
//! Sans is loaded once and rendered by `ab_glyph` (pure Rust). Without any font the curves, frames and
//! markers are still drawn and [`plot_curve`] says so in its return value; the numbers behind the
//! curve are always in `history.jsonl`.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::TrainError;

/// Font files tried in order after `$SEQREC_FONT` (Debian/Ubuntu, Fedora, Arch, macOS).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// The family name the loaded font is registered under.
const FAMILY: &str = "sans-serif";

/// Loads and registers the first usable font, once per process. Returns its path, or `None`.
fn font() -> Option<&'static str> {
    static FONT: OnceLock<Option<String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var("SEQREC_FONT").ok();
        let candidates = from_env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied());
        for path in candidates {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            // The registry keeps `&'static` font data: the one loaded font lives for the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                return Some(path.to_owned());
            }
        }
        None
    })
    .as_deref()
}

/// What [`plot_curve`] could draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CurveText {
    /// Titles and labels are rendered with the font at this path.
    Font(&'static str),
    /// No font was found: curves only. Install DejaVu Sans (`apt-get install fonts-dejavu-core`) or
    /// point `SEQREC_FONT` at a `.ttf` file.
    NoFont,
}

/// Draws `metric` (`(epoch, value)` at evaluations, named `metric_name`) and `loss` (`(epoch, loss)`
/// every epoch) into `path`.
pub fn plot_curve(
    path: &Path,
    metric_name: &str,
    metric: &[(f64, f64)],
    loss: &[(f64, f64)],
) -> Result<CurveText, TrainError> {
    let err = |e: &dyn std::fmt::Display| TrainError::Plot {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let font = font();
    let root = BitMapBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(320);
    let x_max = metric
        .iter()
        .chain(loss)
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        + 0.5;
    let panels = [
        (
            &top,
            metric,
            &BLUE,
            format!("validation {metric_name}"),
            metric_name,
        ),
        (&bottom, loss, &RED, "training loss".to_owned(), "loss"),
    ];
    for (area, points, color, title, y_desc) in panels {
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
        let y_range = (lo - pad)..(hi + pad);
        let mut builder = ChartBuilder::on(area);
        builder.margin(15);
        if font.is_some() {
            builder
                .caption(&title, (FAMILY, 20))
                .x_label_area_size(40)
                .y_label_area_size(70);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max, y_range.clone())
            .map_err(|e| err(&e))?;
        if font.is_some() {
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(y_desc)
                .x_labels((x_max as usize + 1).min(11))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.3}"))
                .label_style((FAMILY, 14))
                .axis_desc_style((FAMILY, 15))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| err(&e))?;
        } else {
            chart
                .plotting_area()
                .draw(&Rectangle::new(
                    [(0.0, y_range.start), (x_max, y_range.end)],
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
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
    Ok(match font {
        Some(p) => CurveText::Font(p),
        None => CurveText::NoFont,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width, height and raw bytes of a PNG (dimensions from the IHDR chunk).
    fn png_dims(path: &Path) -> (u32, u32, Vec<u8>) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "not a PNG: {}", path.display());
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        (w, h, bytes)
    }

    #[test]
    fn curve_is_a_png_with_text_when_a_font_is_installed() {
        let dir = std::env::temp_dir().join(format!("seqrec-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curve.png");
        let metric = [(5.0, 0.10), (10.0, 0.15), (15.0, 0.17)];
        let loss: Vec<(f64, f64)> = (1..=15).map(|e| (e as f64, 8.0 / e as f64)).collect();
        let text = plot_curve(&path, "ndcg@10", &metric, &loss).unwrap();
        let (w, h, with_text) = png_dims(&path);
        assert_eq!((w, h), (900, 640));
        // CI installs DejaVu Sans (.ci/run), so a font must be found there; elsewhere either is fine.
        if std::env::var_os("CI").is_some() {
            assert!(matches!(text, CurveText::Font(_)), "no font found in CI");
        }
        if let CurveText::Font(_) = text {
            // Labels add ink: the same data with a blank title renders differently.
            let path2 = dir.join("curve2.png");
            plot_curve(&path2, "hr@10", &metric, &loss).unwrap();
            assert_ne!(with_text, std::fs::read(&path2).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_finite_points_and_empty_series_are_skipped() {
        let dir = std::env::temp_dir().join(format!("seqrec-plot-nan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curve.png");
        plot_curve(&path, "ndcg@10", &[(1.0, f64::NAN)], &[]).unwrap();
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
