//! Small SVG charts that the bench, `herald autoscale simulate` and `herald capacity` write next to their
//! numbers (hand-written: a few chart shapes do not justify a plotting library).

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 50.0;
const TOP: f64 = 40.0;
const RIGHT: f64 = 20.0;

fn frame(title: &str, body: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>
{body}</svg>
"##,
        W / 2.0,
        escape(title)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A "nice" upper bound for an axis.
fn ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn axes(out: &mut String, x_label: &str, y_label: &str, y_max: f64) {
    let (x0, y0, x1, y1) = (LEFT, H - BOTTOM, W - RIGHT, TOP);
    let _ = write!(
        out,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>"##
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = y0 - (y0 - y1) * i as f64 / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
        (x0 + x1) / 2.0,
        H - 12.0,
        escape(x_label)
    );
    let _ = write!(
        out,
        r##"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"##,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Labelled bars.
pub fn bars(title: &str, y_label: &str, bars: &[(String, f64)]) -> String {
    let y_max = ceiling(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let mut body = String::new();
    axes(&mut body, "", y_label, y_max);
    let slot = (W - LEFT - RIGHT) / bars.len().max(1) as f64;
    for (i, (label, value)) in bars.iter().enumerate() {
        let h = (H - BOTTOM - TOP) * value / y_max;
        let x = LEFT + slot * i as f64 + slot * 0.2;
        let _ = write!(
            body,
            r##"<rect x="{x}" y="{}" width="{}" height="{h}" fill="#4a7bd0"/><text x="{}" y="{}" text-anchor="middle">{}</text><text x="{}" y="{}" text-anchor="middle">{}</text>"##,
            H - BOTTOM - h,
            slot * 0.6,
            x + slot * 0.3,
            H - BOTTOM + 16.0,
            escape(label),
            x + slot * 0.3,
            H - BOTTOM - h - 4.0,
            short(*value)
        );
    }
    frame(title, &body)
}

/// A line through points (x ascending).
pub fn line(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> String {
    let x_max = ceiling(points.iter().map(|p| p.0).fold(0.0, f64::max));
    let y_max = ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let mut body = String::new();
    axes(&mut body, x_label, y_label, y_max);
    for i in 0..=4 {
        let v = x_max * i as f64 / 4.0;
        let x = LEFT + (W - LEFT - RIGHT) * i as f64 / 4.0;
        let _ = write!(body, r##"<text x="{x}" y="{}" text-anchor="middle">{}</text>"##, H - BOTTOM + 16.0, short(v));
    }
    let xy = |(x, y): (f64, f64)| (LEFT + (W - LEFT - RIGHT) * x / x_max, H - BOTTOM - (H - BOTTOM - TOP) * y / y_max);
    let path: Vec<String> = points.iter().map(|p| xy(*p)).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = write!(body, r##"<polyline fill="none" stroke="#d0504a" stroke-width="2" points="{}"/>"##, path.join(" "));
    for (x, y) in points.iter().map(|p| xy(*p)) {
        let _ = write!(body, r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="#d0504a"/>"##);
    }
    frame(title, &body)
}

/// Colours of the series of [`lines`], in order.
const PALETTE: &[&str] = &["#d0504a", "#4a7bd0", "#3a9a5b", "#b07a1a"];

/// Several named series over one pair of axes (x ascending in each), without point markers: traces with
/// thousands of points stay readable. The legend names each series in its colour.
pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let all = || series.iter().flat_map(|(_, points)| points.iter());
    let x_max = ceiling(all().map(|p| p.0).fold(0.0, f64::max));
    let y_max = ceiling(all().map(|p| p.1).fold(0.0, f64::max));
    let mut body = String::new();
    axes(&mut body, x_label, y_label, y_max);
    for i in 0..=4 {
        let v = x_max * i as f64 / 4.0;
        let x = LEFT + (W - LEFT - RIGHT) * i as f64 / 4.0;
        let _ = write!(body, r##"<text x="{x}" y="{}" text-anchor="middle">{}</text>"##, H - BOTTOM + 16.0, short(v));
    }
    let xy = |(x, y): (f64, f64)| (LEFT + (W - LEFT - RIGHT) * x / x_max, H - BOTTOM - (H - BOTTOM - TOP) * y / y_max);
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points.iter().map(|p| xy(*p)).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            body,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" fill="{colour}">{}</text>"##,
            path.join(" "),
            LEFT + 10.0 + 150.0 * i as f64,
            TOP - 4.0,
            escape(name)
        );
    }
    frame(title, &body)
}

/// Several lines over one x axis, one panel each, stacked under one title.
pub fn stack(title: &str, x_label: &str, panels: &[(&str, Vec<(f64, f64)>)]) -> String {
    let height = H * panels.len().max(1) as f64;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}">
<rect width="100%" height="100%" fill="#fff"/>
"##
    );
    for (i, (y_label, points)) in panels.iter().enumerate() {
        let panel_title = if i == 0 { title.to_owned() } else { String::new() };
        let _ = write!(out, r##"<svg y="{}">{}</svg>"##, H * i as f64, line(&panel_title, x_label, y_label, points));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_data() {
        let b = bars("latency", "ms", &[("p50".into(), 1.5), ("p99".into(), 12.0)]);
        assert!(b.starts_with("<svg") && b.contains("p99") && b.contains("12"));
        let l = line("saturate", "deliveries/s", "p99 ms", &[(1000.0, 2.0), (2000.0, 5.0)]);
        assert!(l.contains("<polyline") && l.matches("<circle").count() == 2);
        let s = stack("soak", "minutes", &[("RSS", vec![(1.0, 30.0)]), ("fds", vec![(1.0, 1000.0)])]);
        assert!(s.starts_with("<svg") && s.matches("<polyline").count() == 2 && s.contains("fds"));
        let m = lines("servers", "s", "count", &[("a", vec![(0.0, 1.0), (1.0, 2.0)]), ("b", vec![(0.0, 3.0)])]);
        assert!(m.matches("<polyline").count() == 2 && !m.contains("<circle") && m.contains(">b</text>"));
        assert_eq!(ceiling(7.3), 10.0);
        assert_eq!(ceiling(0.0), 1.0);
    }
}
