//! Hand-written SVG line charts of a simulation's calls per minute against the limit
//! lines: one small panel per run, laid out in a grid, every panel on the same scale.

use std::fmt::Write as _;

use crate::sim::{SimConfig, Workload};

/// One chart: a run's admitted calls per minute and the limits drawn over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Above the chart.
    pub title: String,
    /// Admitted calls in each simulated minute.
    pub per_minute: Vec<u32>,
    /// Refused calls (429) in each simulated minute, drawn clipped to the chart.
    pub throttled_per_minute: Vec<u32>,
    /// Horizontal lines: a label and a rate in calls per minute.
    pub limits: Vec<(String, f64)>,
    /// Below the title, in grey (e.g. the run's share of the maximum).
    pub summary: String,
}

/// The limits of `cfg`'s workload as rates in calls per minute: every call window
/// (`max / per`), and for hunting the running-time budget divided by the mean running
/// time.
pub fn limit_lines(cfg: &SimConfig) -> Vec<(String, f64)> {
    let group = cfg.workload.group();
    let limits = cfg.server_limits.group(group);
    let mut lines: Vec<(String, f64)> = limits
        .calls
        .iter()
        .map(|l| {
            let rate = l.max as f64 * 60.0 / l.per.as_secs_f64();
            let label = if l.per.as_secs() == 60 {
                format!("{} per minute", l.max)
            } else {
                format!("{} per {} = {rate:.1}/min", l.max, period(l.per.as_secs()))
            };
            (label, rate)
        })
        .collect();
    if let Workload::Hunting { min, max } = cfg.workload {
        let mean = ((min + max) / 2).as_secs_f64();
        if let Some(l) = limits.runtime.iter().min_by(|a, b| {
            let ra = a.budget.as_secs_f64() / a.per.as_secs_f64();
            let rb = b.budget.as_secs_f64() / b.per.as_secs_f64();
            ra.total_cmp(&rb)
        }) {
            let rate = l.budget.as_secs_f64() / mean / l.per.as_secs_f64() * 60.0;
            lines.push((
                format!(
                    "{} s per {} / {mean} s mean = {rate:.2}/min",
                    l.budget.as_secs(),
                    period(l.per.as_secs())
                ),
                rate,
            ));
        }
    }
    lines
}

fn period(secs: u64) -> String {
    match secs {
        60 => "min".into(),
        3600 => "hour".into(),
        86_400 => "day".into(),
        s => format!("{s} s"),
    }
}

const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = 150.0;
const LEFT: f64 = 40.0;
const TOP: f64 = 44.0;
const GAP_X: f64 = 30.0;
const GAP_Y: f64 = 60.0;
const LIMIT_COLOURS: [&str; 3] = ["#333333", "#ff7f0e", "#2ca02c"];

/// The panels in a grid of `cols` columns, under `title`, as an SVG document.
pub fn grid_svg(title: &str, cols: usize, panels: &[Panel]) -> String {
    let cols = cols.max(1);
    let rows = panels.len().div_ceil(cols);
    let width = LEFT + cols as f64 * (PANEL_W + GAP_X) + 10.0;
    let height = TOP + rows as f64 * (PANEL_H + GAP_Y) + 10.0;
    let y_max = panels
        .iter()
        .flat_map(|p| {
            p.per_minute
                .iter()
                .map(|v| *v as f64)
                .chain(p.limits.iter().map(|l| l.1))
        })
        .fold(1.0f64, f64::max)
        * 1.1;
    let y_max = nice_ceil(y_max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="34" fill="#555">calls admitted (blue line) and refused with 429 (red area, clipped at the top) per simulated minute, against the limits (dashed); x: hours</text>"##
    );
    for (i, p) in panels.iter().enumerate() {
        let x0 = LEFT + (i % cols) as f64 * (PANEL_W + GAP_X);
        let y0 = TOP + (i / cols) as f64 * (PANEL_H + GAP_Y) + 30.0;
        panel(&mut s, p, x0, y0, y_max);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, p: &Panel, x0: f64, y0: f64, y_max: f64) {
    let minutes = p.per_minute.len().max(1) as f64;
    let x = |m: f64| x0 + m / minutes * PANEL_W;
    let y = |v: f64| y0 + PANEL_H - v / y_max * PANEL_H;
    let _ = writeln!(
        s,
        r##"<text x="{x0}" y="{:.1}" font-weight="bold">{}</text><text x="{:.1}" y="{:.1}" fill="#555" text-anchor="end">{}</text>"##,
        y0 - 8.0,
        escape(&p.title),
        x0 + PANEL_W,
        y0 - 8.0,
        escape(&p.summary)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
    );
    // Axes: three y ticks, an x tick every few hours.
    for v in [0.0, y_max / 2.0, y_max] {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{v:.0}</text>"##,
            x0 - 4.0,
            y(v) + 4.0
        );
    }
    let hours = minutes / 60.0;
    let step = if hours > 12.0 { 4.0 } else { 1.0 };
    let mut h = 0.0;
    while h <= hours + 1e-9 {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{h:.0}</text>"##,
            x(h * 60.0),
            y0 + PANEL_H + 13.0
        );
        h += step;
    }
    // 429s as a shaded area behind, admitted calls as a line in front.
    let clip = |v: f64| y(v.min(y_max));
    if p.throttled_per_minute.iter().any(|v| *v > 0) {
        let _ = writeln!(
            s,
            r##"<path d="{}V{:.1}H{:.1}Z" fill="#d62728" fill-opacity="0.3" stroke="none"/>"##,
            step_path(&p.throttled_per_minute, &x, clip, minutes),
            y(0.0),
            x(0.0)
        );
    }
    let _ = writeln!(
        s,
        r##"<path d="{}" fill="none" stroke="#1f77b4" stroke-width="0.8"/>"##,
        step_path(&p.per_minute, &x, clip, minutes)
    );
    for (k, (label, rate)) in p.limits.iter().enumerate() {
        let colour = LIMIT_COLOURS[k % LIMIT_COLOURS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{x0}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{colour}" stroke-dasharray="5,3"/><text x="{:.1}" y="{:.1}" fill="{colour}" text-anchor="end" font-size="10">{}</text>"#,
            x0 + PANEL_W,
            x0 + PANEL_W - 4.0,
            y(*rate) - 3.0,
            escape(label),
            yy = y(*rate),
        );
    }
}

/// A series as a step line, one step per minute; equal neighbours merge.
fn step_path(
    series: &[u32],
    x: &impl Fn(f64) -> f64,
    y: impl Fn(f64) -> f64,
    minutes: f64,
) -> String {
    let mut d = String::new();
    let mut last: Option<f64> = None;
    for (m, v) in series.iter().enumerate() {
        let yv = (y(*v as f64) * 10.0).round() / 10.0;
        if last == Some(yv) {
            continue;
        }
        if last.is_none() {
            let _ = write!(d, "M{:.1},{yv:.1}", x(m as f64));
        } else {
            let _ = write!(d, "H{:.1}V{yv:.1}", x(m as f64));
        }
        last = Some(yv);
    }
    let _ = write!(d, "H{:.1}", x(minutes));
    d
}

/// A round number at least `v`: 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten.
fn nice_ceil(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_svg_with_a_path_per_panel() {
        let panel = Panel {
            title: "a <b>".into(),
            per_minute: vec![1, 1, 3, 0],
            throttled_per_minute: vec![0, 0, 1, 0],
            limits: vec![("2 per minute".into(), 2.0)],
            summary: String::new(),
        };
        let svg = grid_svg("t", 2, &[panel.clone(), panel]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 4);
        assert!(svg.contains("fill-opacity"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert_eq!(nice_ceil(55.0), 60.0);
        assert_eq!(nice_ceil(16.5), 20.0);
        assert_eq!(nice_ceil(2.0), 2.0);
    }
}
