//! The self-contained HTML report: the checks, the outcomes, latency per step, and charts over
//! time (requests per second, queue and admission, units left, latency), drawn as inline SVG so
//! the file opens anywhere without scripts or network.

use std::fmt::Write;

/// One sample of the sale's state, taken twice a second while it plays.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub requests_per_sec: f64,
    /// Buyers in the queue and not yet admitted.
    pub queue_length: f64,
    /// Buyers admitted so far (the serving counter's progress).
    pub admitted: f64,
    pub units_available: f64,
    pub units_reserved: f64,
    pub units_sold: f64,
}

/// A named line: (x, y) points.
pub type Series<'a> = (&'a str, Vec<(f64, f64)>);

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A moment marked on every chart (a fault striking, a fault ending): seconds, label.
pub type Mark = (f64, String);

/// An SVG line chart of `series` over time, with `marks` drawn as dashed vertical lines.
pub fn chart(title: &str, unit: &str, series: &[Series<'_>], marks: &[Mark]) -> String {
    let (w, h, left, bottom) = (640.0, 220.0, 56.0, 28.0);
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).chain(marks.iter().map(|m| m.0)).fold(1e-9, f64::max);
    let y_max = points.map(|p| p.1).fold(1e-9, f64::max) * 1.05;
    let x = |v: f64| left + v / x_max * (w - left - 10.0);
    let y = |v: f64| h - bottom - v / y_max * (h - bottom - 24.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#,
        escape(title)
    );
    let _ =
        write!(svg, r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##, h - bottom, w - 10.0, h - bottom);
    let _ = write!(svg, r##"<line x1="{left}" y1="20" x2="{left}" y2="{}" stroke="#999"/>"##, h - bottom);
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{v:.0}</text>"##,
            left - 4.0,
            y(v) + 3.0
        );
        let t = x_max * f64::from(i) / 4.0;
        let _ =
            write!(svg, r##"<text x="{}" y="{}" font-size="10" text-anchor="middle">{t:.0}s</text>"##, x(t), h - 10.0);
    }
    let _ = write!(svg, r##"<text x="4" y="14" font-size="10">{}</text>"##, escape(unit));
    for (at, label) in marks {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" y1="20" x2="{0:.1}" y2="{1}" stroke="#e377c2" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3}" font-size="10" fill="#e377c2">{4}</text>"##,
            x(*at),
            h - bottom,
            x(*at) + 3.0,
            h - bottom - 4.0,
            escape(label)
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points.iter().map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py))).collect();
        let _ =
            write!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, path.join(" "));
        let _ = write!(
            svg,
            r#"<text x="{}" y="14" font-size="11" fill="{color}">{}</text>"#,
            left + 10.0 + 130.0 * i as f64,
            escape(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The whole page.
pub fn page(
    title: &str,
    summary_rows: &[(String, String)],
    checks: &[(String, bool, String)],
    charts: &[String],
) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2rem;max-width:900px}}\
         table{{border-collapse:collapse;margin:1rem 0;width:100%}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;overflow-wrap:anywhere}}td:first-child{{white-space:nowrap}}\
         .pass{{color:#2ca02c;font-weight:bold;white-space:nowrap}}.fail{{color:#d62728;font-weight:bold;white-space:nowrap}}figure{{margin:1rem 0}}\
         figcaption{{font-weight:bold}}</style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    html.push_str("<h2>Checks</h2><table><tr><th>check</th><th></th><th>detail</th></tr>");
    for (name, passed, detail) in checks {
        let (class, word) = if *passed { ("pass", "PASS") } else { ("fail", "FAIL") };
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
            escape(name),
            escape(detail)
        );
    }
    html.push_str("</table><h2>Summary</h2><table>");
    for (name, value) in summary_rows {
        let _ = write!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(name), escape(value));
    }
    html.push_str("</table><h2>Over time</h2>");
    for c in charts {
        html.push_str(c);
    }
    html.push_str("</body></html>");
    html
}
