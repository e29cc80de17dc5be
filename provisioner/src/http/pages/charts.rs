//! Small charts of a burn-in for the node page, drawn by the server as inline SVG: a bar per
//! device against its floor and its cohort's median, and a line per device over the run.
//! Pure functions from numbers to markup: no script, no external resource, and every piece
//! of text escaped here, since the page puts the markup in as it is.

use std::fmt::Write;

/// Width of every chart's viewBox; the page scales it to its column.
const WIDTH: f64 = 320.0;
/// The least height of a chart's viewBox; more devices make it taller.
const HEIGHT: f64 = 140.0;
/// Points of a line drawn at most: the agent thins to 256, a longer series is thinned here.
const POINTS_MAX: usize = 256;
/// Characters of a device's id shown beside its bar or in the legend; the whole id is in
/// the element's `<title>`.
const LABEL_CHARS: usize = 14;
/// One colour per device in line charts, distinct in print and for the common colour
/// blindnesses (Okabe-Ito).
const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#999933",
];
const BAR: &str = "#5c7fa3";
const BAR_FAILING: &str = "#c62828";

/// One device's figure for a check.
#[derive(Clone, Debug)]
pub struct Bar {
    pub device: String,
    pub value: f64,
}

/// A check's figures across a node's devices.
pub struct BarChart<'a> {
    /// The check's name (`hbm_copy`).
    pub check: &'a str,
    pub unit: &'a str,
    pub bars: &'a [Bar],
    pub floor: Option<f64>,
    /// The median of the same check on the cohort's other nodes, when there is a cohort.
    pub median: Option<f64>,
}

/// One device's samples of a quantity: (seconds into the run, value).
#[derive(Clone, Debug)]
pub struct Series {
    pub device: String,
    pub points: Vec<(f64, f64)>,
}

/// A quantity over the run, one line per device.
pub struct LineChart<'a> {
    /// What is drawn (`GPU temperature`).
    pub title: &'a str,
    pub unit: &'a str,
    pub series: &'a [Series],
    /// Levels drawn across the chart (the power limits), labelled `limit`.
    pub limits: &'a [f64],
}

/// Horizontal bars, one per device, with the floor as a solid line and the cohort's median
/// as a dashed one; a bar under its floor is red. `None` when no figure is a finite number.
pub fn bar_chart(c: &BarChart) -> Option<String> {
    let bars: Vec<&Bar> = c.bars.iter().filter(|b| b.value.is_finite()).collect();
    let floor = c.floor.filter(|f| f.is_finite());
    let median = c.median.filter(|m| m.is_finite());
    if bars.is_empty() {
        return None;
    }
    let largest = bars
        .iter()
        .map(|b| b.value)
        .chain(floor)
        .chain(median)
        .fold(f64::NAN, f64::max);
    // Bars start at zero; the largest figure (or line) reaches the right of the plot.
    let scale = if largest > 0.0 { largest } else { 1.0 };
    let (left, right, top, row) = (92.0, 272.0, 30.0, 12.0);
    let x = |v: f64| left + v.max(0.0) / scale * (right - left);
    let bottom = top + row * bars.len() as f64;
    let height = HEIGHT.max(bottom + 16.0);
    let failing = |v: f64| floor.is_some_and(|f| v < f);
    let under = bars.iter().filter(|b| failing(b.value)).count();

    let title = format!("{}, {}", c.check, c.unit);
    let mut desc = format!("{} devices", bars.len());
    if let Some(f) = floor {
        let _ = write!(desc, "; floor {} {}; {under} under it", num(f), c.unit);
    }
    if let Some(m) = median {
        let _ = write!(desc, "; cohort median {} {}", num(m), c.unit);
    }
    let mut svg = open(&title, &desc, height);
    text(&mut svg, 4.0, 12.0, "start", 11.0, "bold", &title);
    for (i, b) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let fill = if failing(b.value) { BAR_FAILING } else { BAR };
        let note = if failing(b.value) {
            " (under the floor)"
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<g><title>{}: {} {}{note}</title>"#,
            esc(&b.device),
            num(b.value),
            esc(c.unit)
        );
        text(
            &mut svg,
            left - 3.0,
            y + 8.5,
            "end",
            9.0,
            "normal",
            &label(&b.device),
        );
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="{}" height="9" fill="{fill}"/>"#,
            px(left),
            px(y + 1.0),
            px(x(b.value) - left)
        );
        text(
            &mut svg,
            x(b.value) + 3.0,
            y + 8.5,
            "start",
            9.0,
            "normal",
            &num(b.value),
        );
        svg.push_str("</g>");
    }
    if let Some(f) = floor {
        let fx = x(f);
        let _ = write!(
            svg,
            r##"<line class="floor" x1="{fx}" y1="{}" x2="{fx}" y2="{}" stroke="#111" stroke-width="1.5"/>"##,
            px(top - 4.0),
            px(bottom + 1.0),
            fx = px(fx)
        );
        let floor_label = format!("floor {}", num(f));
        text(
            &mut svg,
            fx,
            top - 6.0,
            "middle",
            9.0,
            "normal",
            &floor_label,
        );
    }
    if let Some(m) = median {
        let mx = x(m);
        let _ = write!(
            svg,
            r##"<line class="median" x1="{mx}" y1="{}" x2="{mx}" y2="{}" stroke="#555" stroke-width="1.2" stroke-dasharray="4 3"/>"##,
            px(top - 2.0),
            px(bottom + 4.0),
            mx = px(mx)
        );
        let median_label = format!("cohort median {}", num(m));
        text(
            &mut svg,
            mx,
            bottom + 13.0,
            "middle",
            9.0,
            "normal",
            &median_label,
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// A line per device over the run, with each limit as a dashed level and a legend below.
/// `None` unless some device has two finite samples to draw between.
pub fn line_chart(c: &LineChart) -> Option<String> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = c
        .series
        .iter()
        .map(|s| (s.device.as_str(), thin(&s.points)))
        .filter(|(_, p)| p.len() >= 2)
        .collect();
    if series.is_empty() {
        return None;
    }
    let limits: Vec<f64> = {
        let mut l: Vec<f64> = c.limits.iter().copied().filter(|v| v.is_finite()).collect();
        l.sort_by(f64::total_cmp);
        l.dedup();
        l
    };
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let (t0, t1) = span(all().map(|p| p.0));
    let (lo, hi) = span(all().map(|p| p.1).chain(limits.iter().copied()));
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    let (lo, hi) = (lo - pad, hi + pad);
    let t_span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let (left, right, top, bottom) = (44.0, 312.0, 22.0, 104.0);
    let x = |t: f64| left + (t - t0) / t_span * (right - left);
    let y = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);
    let per_row = 4;
    let rows = series.len().div_ceil(per_row);
    let height = HEIGHT.max(128.0 + 11.0 * rows as f64);

    let title = format!("{}, {}", c.title, c.unit);
    let mut desc = format!(
        "{} devices over {} s, from {} to {} {}",
        series.len(),
        num(t1 - t0),
        num(lo + pad),
        num(hi - pad),
        c.unit
    );
    for l in &limits {
        let _ = write!(desc, "; limit {} {}", num(*l), c.unit);
    }
    let mut svg = open(&title, &desc, height);
    text(&mut svg, 4.0, 12.0, "start", 11.0, "bold", &title);
    let _ = write!(
        svg,
        r##"<path d="M{l} {t}V{b}H{r}" fill="none" stroke="#888" stroke-width="1"/>"##,
        l = px(left),
        t = px(top),
        b = px(bottom),
        r = px(right)
    );
    let axis_label = |v: f64| format!("{} {}", num(v), c.unit);
    text(
        &mut svg,
        left - 3.0,
        top + 4.0,
        "end",
        9.0,
        "normal",
        &axis_label(hi - pad),
    );
    text(
        &mut svg,
        left - 3.0,
        bottom,
        "end",
        9.0,
        "normal",
        &axis_label(lo + pad),
    );
    text(
        &mut svg,
        left,
        bottom + 11.0,
        "start",
        9.0,
        "normal",
        &format!("{} s", num(t0)),
    );
    text(
        &mut svg,
        right,
        bottom + 11.0,
        "end",
        9.0,
        "normal",
        &format!("{} s", num(t1)),
    );
    for l in &limits {
        let ly = px(y(*l));
        let _ = write!(
            svg,
            r##"<line class="limit" x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="#111" stroke-width="1" stroke-dasharray="4 3"/>"##,
            px(left),
            px(right)
        );
        let limit_label = format!("limit {}", axis_label(*l));
        text(
            &mut svg,
            right - 2.0,
            y(*l) - 3.0,
            "end",
            9.0,
            "normal",
            &limit_label,
        );
    }
    for (i, (device, points)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let coords: Vec<String> = points
            .iter()
            .map(|&(t, v)| format!("{},{}", px(x(t)), px(y(v))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{}"><title>{}</title></polyline>"#,
            coords.join(" "),
            esc(device)
        );
        let lx = 4.0 + 79.0 * (i % per_row) as f64;
        let ly = 126.0 + 11.0 * (i / per_row) as f64;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="3" fill="{colour}"/>"#,
            px(lx),
            px(ly - 4.0)
        );
        text(
            &mut svg,
            lx + 13.0,
            ly,
            "start",
            8.0,
            "normal",
            &label(device),
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// The `<svg>` element with its accessible name and description.
fn open(title: &str, desc: &str, height: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{t}" font-family="system-ui,sans-serif"><title>{t}</title><desc>{}</desc>"#,
        px(WIDTH),
        px(height),
        esc(desc),
        t = esc(title)
    )
}

fn text(svg: &mut String, x: f64, y: f64, anchor: &str, size: f64, weight: &str, s: &str) {
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="{anchor}" font-size="{}" font-weight="{weight}">{}</text>"#,
        px(x),
        px(y),
        px(size),
        esc(s)
    );
}

/// A device's id as shown: without the PCI domain every GPU of a node shares, and cut to
/// `LABEL_CHARS` characters.
fn label(id: &str) -> String {
    let id = id.strip_prefix("0000:").unwrap_or(id);
    let mut out: String = id.chars().take(LABEL_CHARS).collect();
    if id.chars().nth(LABEL_CHARS).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// Text and attribute values for SVG inside HTML. Control characters are dropped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A figure to three significant digits or so, without trailing zeros; `-` when it is not
/// a number.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    let s = if a >= 1e6 {
        return format!("{v:.2e}");
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// A coordinate, to a tenth of a unit of the viewBox; never `NaN`.
fn px(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".into()
    }
}

/// The finite points, thinned evenly to at most `POINTS_MAX`.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(t, v)| t.is_finite() && v.is_finite())
        .collect();
    let step = finite.len().div_ceil(POINTS_MAX).max(1);
    finite.into_iter().step_by(step).collect()
}

/// The least and greatest of finite values (the caller has at least one).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(device: &str, value: f64) -> Bar {
        Bar {
            device: device.into(),
            value,
        }
    }

    /// The `attr` of the first element of class `class`.
    fn attr(svg: &str, class: &str, attr: &str) -> String {
        let at = svg.find(&format!("class=\"{class}\"")).expect(class);
        let rest = &svg[at..];
        let start = rest.find(&format!(" {attr}=\"")).expect(attr) + attr.len() + 3;
        rest[start..start + rest[start..].find('"').unwrap()].to_string()
    }

    #[test]
    fn a_hostile_label_is_escaped() {
        let hostile = "0000:1f:00.0\"/><script>alert('x')</script>&";
        let svg = bar_chart(&BarChart {
            check: "hbm_copy<b>",
            unit: "TB/s",
            bars: &[bar(hostile, 2.9)],
            floor: Some(2.7),
            median: None,
        })
        .unwrap();
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(
            svg.contains(
                "<title>0000:1f:00.0&quot;/&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;: 2.9 TB/s</title>"
            ),
            "{svg}"
        );
        assert!(
            svg.contains("aria-label=\"hbm_copy&lt;b&gt;, TB/s\""),
            "{svg}"
        );
        let line = line_chart(&LineChart {
            title: "GPU temperature",
            unit: "°C",
            series: &[Series {
                device: hostile.into(),
                points: vec![(0.0, 50.0), (1.0, 60.0)],
            }],
            limits: &[],
        })
        .unwrap();
        assert!(!line.contains("<script"), "{line}");
        assert!(line.contains("&lt;script&gt;"), "{line}");
    }

    #[test]
    fn the_floor_line_stands_at_its_value_and_bars_under_it_are_red() {
        // The plot runs from x 92 to 272; the largest figure, 80, reaches its right end.
        let svg = bar_chart(&BarChart {
            check: "gemm_bf16_p50",
            unit: "TFLOP/s",
            bars: &[bar("a", 30.0), bar("b", 80.0)],
            floor: Some(40.0),
            median: Some(60.0),
        })
        .unwrap();
        assert_eq!(attr(&svg, "floor", "x1"), "182.0");
        assert_eq!(attr(&svg, "floor", "x2"), "182.0");
        assert_eq!(attr(&svg, "median", "x1"), "227.0");
        assert!(svg.contains("floor 40</text>") && svg.contains("cohort median 60</text>"));
        assert!(
            svg.contains(r##"width="67.5" height="9" fill="#c62828""##),
            "{svg}"
        );
        assert!(
            svg.contains(r##"width="180.0" height="9" fill="#5c7fa3""##),
            "{svg}"
        );
        assert!(svg.contains("1 under it"), "{svg}");
    }

    #[test]
    fn nothing_to_draw_gives_no_chart() {
        let empty = |series: &[Series]| {
            line_chart(&LineChart {
                title: "GPU power",
                unit: "W",
                series,
                limits: &[700.0],
            })
        };
        assert!(empty(&[]).is_none());
        let one_point = Series {
            device: "a".into(),
            points: vec![(0.0, 500.0), (f64::NAN, 510.0), (2.0, f64::INFINITY)],
        };
        assert!(empty(&[one_point]).is_none());
        assert!(
            bar_chart(&BarChart {
                check: "hbm_copy",
                unit: "TB/s",
                bars: &[bar("a", f64::NAN)],
                floor: Some(2.7),
                median: None,
            })
            .is_none()
        );
    }

    #[test]
    fn nan_and_infinity_are_never_printed() {
        let svg = bar_chart(&BarChart {
            check: "hbm_copy",
            unit: "TB/s",
            bars: &[bar("a", f64::NAN), bar("b", 2.9), bar("c", f64::INFINITY)],
            floor: Some(f64::NAN),
            median: Some(f64::NEG_INFINITY),
        })
        .unwrap();
        let line = line_chart(&LineChart {
            title: "GPU power",
            unit: "W",
            series: &[Series {
                device: "a".into(),
                points: vec![(0.0, 690.0), (1.0, f64::NAN), (2.0, 700.0), (3.0, 700.0)],
            }],
            limits: &[f64::NAN, 700.0],
        })
        .unwrap();
        for s in [&svg, &line] {
            assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        }
        assert!(!svg.contains("class=\"floor\"") && !svg.contains("class=\"median\""));
        assert_eq!(line.matches("class=\"limit\"").count(), 1);
        assert!(line.contains("limit 700 W"), "{line}");
    }

    #[test]
    fn figures_keep_a_few_digits() {
        assert_eq!(num(2.8947336086856), "2.89");
        assert_eq!(num(709.6773477292415), "710");
        assert_eq!(num(49.139580531457156), "49.1");
        assert_eq!(num(2.7), "2.7");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(3.0e9), "3.00e9");
        assert_eq!(label("0000:18:00.0"), "18:00.0");
        assert_eq!(label("0000:1f:00.0<script>"), "1f:00.0<scrip…");
    }

    #[test]
    fn a_long_series_is_thinned() {
        let points: Vec<(f64, f64)> = (0..1000).map(|i| (f64::from(i), 1.0)).collect();
        assert_eq!(thin(&points).len(), 250);
    }
}
