//! The latency percentile curve as a small hand-written SVG.
//!
//! Why it exists: p50/p99/max in a table hide the shape of the tail (a step at p99.9 from a
//! timer, a long flat line from a queue). The curve is drawn the way HdrHistogram plots are:
//! latency against percentile on an axis where each "nine" (90 %, 99 %, 99.9 %, ...) takes the
//! same width. No plotting library: a polyline, axes and labels are enough.

use std::fmt::Write;

use hdrhistogram::Histogram;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 450.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Points per "nine" along the x axis.
const STEPS_PER_NINE: u32 = 25;

/// The percentile curve of a histogram of nanoseconds, in microseconds, titled `title`.
pub fn percentile_svg(histogram: &Histogram<u64>, title: &str) -> String {
    // How many nines the data can support: one sample in 10^n needs 10^n samples.
    let nines = (histogram.len().max(1) as f64)
        .log10()
        .floor()
        .clamp(1.0, 6.0) as u32;
    let points: Vec<(f64, f64)> = (0..=nines * STEPS_PER_NINE)
        .map(|step| {
            let x = step as f64 / STEPS_PER_NINE as f64; // number of nines
            let quantile = 1.0 - 10f64.powf(-x);
            let value = if histogram.is_empty() {
                0.0
            } else {
                histogram.value_at_quantile(quantile) as f64 / 1e3
            };
            (x, value)
        })
        .collect();
    let max_us = (histogram.max() as f64 / 1e3).max(points.last().map_or(0.0, |p| p.1));
    let y_max = nice_ceiling(max_us.max(1.0));

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |nines_x: f64| LEFT + nines_x / nines as f64 * plot_w;
    let sy = |us: f64| TOP + plot_h - us / y_max * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and labels: y in five steps, x at each nine.
    for i in 0..=5 {
        let value = y_max * i as f64 / 5.0;
        let y = sy(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            format_us(value)
        );
    }
    for n in 0..=nines {
        let x = sx(n as f64);
        let label = match n {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            2 => "99%".to_string(),
            _ => format!("99.{}%", "9".repeat(n as usize - 2)),
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">latency (µs)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        TOP + plot_h / 2.0
    );
    let path: Vec<String> = points
        .iter()
        .map(|&(x, us)| format!("{:.1},{:.1}", sx(x), sy(us)))
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">max {} µs, {} samples</text>"#,
        WIDTH - RIGHT - 4.0,
        TOP + 14.0,
        format_us(histogram.max() as f64 / 1e3),
        histogram.len()
    );
    svg.push_str("</svg>\n");
    svg
}

/// The smallest 1, 2 or 5 × 10^k that is at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&candidate| candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_us(value: f64) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_curve_with_nines() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for i in 1..=10_000u64 {
            h.record(i * 100).unwrap();
        }
        let svg = percentile_svg(&h, "pairs <qos 0>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("99.99%"));
        assert!(svg.contains("pairs &lt;qos 0&gt;"));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(501.0), 1000.0);
    }
}
