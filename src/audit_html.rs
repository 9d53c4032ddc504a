//! `scrip audit --html FILE`: one self-contained page (inline SVG charts drawn with plotters,
//! inline CSS, no network fetch) that an operator would rather look at than read.

use plotters::prelude::*;
use scrip_ledger::audit::AuditReport;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

type Svg = Result<String, Box<dyn std::error::Error>>;

/// How a time axis is labelled: by the span it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeScale {
    /// Under two days: `HH:MM` (the date is in the caption).
    Hours,
    /// Under about two months: `MM-DD` (the year is in the caption).
    Days,
    /// Longer: `YYYY-MM`.
    Months,
}

impl TimeScale {
    fn for_span(secs: u64) -> Self {
        match secs {
            0..172_800 => TimeScale::Hours,
            172_800..5_356_800 => TimeScale::Days,
            _ => TimeScale::Months,
        }
    }

    /// The axis unit, in seconds: ticks fall on whole or half units (hours, or days).
    fn unit(self) -> f64 {
        match self {
            TimeScale::Hours => 3_600.0,
            TimeScale::Days | TimeScale::Months => 86_400.0,
        }
    }

    fn label(self, at: u64) -> String {
        let date = scrip_common::display::date(at);
        match self {
            TimeScale::Hours => {
                let s = at % 86_400;
                format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
            }
            TimeScale::Days => date[5..].to_owned(),
            TimeScale::Months => date[..7].to_owned(),
        }
    }

    /// What the caption adds so the labels need not repeat it.
    fn context(self, first: u64, last: u64) -> String {
        let (a, b) = (
            scrip_common::display::date(first),
            scrip_common::display::date(last),
        );
        match self {
            TimeScale::Hours if a == b => format!("{a} UTC"),
            TimeScale::Hours => format!("{a} to {b} UTC"),
            TimeScale::Days if a[..4] == b[..4] => a[..4].to_owned(),
            _ => String::new(),
        }
    }
}

/// Integer ticks for a count axis from 0 to `top`: at most 6, never repeated.
fn count_axis(top: u64) -> (f64, usize) {
    let top = top.max(1);
    let labels = usize::try_from(top + 1).unwrap_or(6).min(6);
    (top as f64 * 1.15, labels)
}

/// Font sizes, in px: labels that read at 100 % zoom.
const CAPTION_PX: u32 = 17;
const LABEL_PX: u32 = 14;

/// Most points drawn per series: hourly points of a long-lived key are thinned to this, which
/// a 600 px chart cannot tell apart, and keeps the page small.
const MAX_POINTS: usize = 240;
/// Points are also marked with dots up to this many, so a key active only once still shows.
const MAX_MARKED: usize = 48;

/// Every `k`-th point and the last: at most [`MAX_POINTS`] and one. The values are
/// cumulative, so thinning loses no total.
fn thinned(points: &[(u64, u64, u64)]) -> Vec<(u64, u64, u64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let step = points.len().div_ceil(MAX_POINTS);
    let mut out: Vec<_> = points.iter().step_by(step).copied().collect();
    if out.last() != points.last() {
        out.extend(points.last().copied());
    }
    out
}

/// Cumulative issued (solid) and spent (dashed) tokens of one key over time.
fn key_chart(title: &str, points: &[(u64, u64, u64)]) -> Svg {
    let points = &thinned(points);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (600, 280)).into_drawing_area();
        root.fill(&WHITE)?;
        let (first, last) = (
            points.first().map_or(0, |p| p.0),
            points.last().map_or(0, |p| p.0),
        );
        let scale = TimeScale::for_span(last - first);
        let unit = scale.unit();
        // A span of at least an hour either side, so a key active only once still gets an
        // axis with room for its labels.
        let pad = ((last - first) / 20).max(3_600);
        let (x0, x1) = (first.saturating_sub(pad), last + pad);
        let top = points.iter().map(|p| p.1.max(p.2)).max().unwrap_or(1);
        let (y_top, y_labels) = count_axis(top);
        let context = scale.context(first, last);
        let caption = if context.is_empty() {
            title.to_owned()
        } else {
            format!("{title} ({context})")
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", CAPTION_PX))
            .margin(12)
            // Room for the last time label, centred on the right edge.
            .margin_right(32)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(x0 as f64 / unit..x1 as f64 / unit, 0.0..y_top)?;
        chart
            .configure_mesh()
            .y_desc("tokens")
            .x_labels(5)
            .y_labels(y_labels)
            .label_style(("sans-serif", LABEL_PX))
            .x_label_formatter(&|x| scale.label((x * unit).max(0.0) as u64))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        let at = |p: &(u64, u64, u64), v: u64| (p.0 as f64 / unit, v as f64);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| at(p, p.1)),
                BLUE.stroke_width(2),
            ))?
            .label("issued")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| at(p, p.2)),
                RED.stroke_width(2),
            ))?
            .label("spent")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        // Markers, so that a key active only once still shows its points.
        let marked = if points.len() <= MAX_MARKED {
            &points[..]
        } else {
            &[]
        };
        chart.draw_series(
            marked
                .iter()
                .map(|p| Circle::new(at(p, p.1), 4, BLUE.filled())),
        )?;
        chart.draw_series(
            marked
                .iter()
                .map(|p| Circle::new(at(p, p.2), 4, RED.filled())),
        )?;
        chart
            .configure_series_labels()
            .label_font(("sans-serif", LABEL_PX))
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(out)
}

/// Outstanding value (issued minus redeemed) per issuer, as bars.
fn outstanding_chart(report: &AuditReport) -> Svg {
    let mut out = String::new();
    {
        let values: Vec<(String, u64)> = report
            .issuers
            .iter()
            .map(|v| {
                (
                    v.issuer.clone(),
                    v.value_issued.saturating_sub(v.value_redeemed),
                )
            })
            .collect();
        let n = values.len().max(1);
        let width = u32::try_from(160 * n + 120)
            .unwrap_or(1200)
            .clamp(520, 1200);
        let root = SVGBackend::with_string(&mut out, (width, 280)).into_drawing_area();
        root.fill(&WHITE)?;
        let top = values.iter().map(|v| v.1).max().unwrap_or(1);
        let (y_top, y_labels) = count_axis(top);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "outstanding value per issuer (credits)",
                ("sans-serif", CAPTION_PX),
            )
            .margin(12)
            .x_label_area_size(12)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..n as f64, 0.0..y_top * 1.1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(y_labels)
            .label_style(("sans-serif", LABEL_PX))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, (_, v))| {
            Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, *v as f64)],
                GREEN.mix(0.7).filled(),
            )
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, (name, v))| {
            Text::new(
                format!("{name}: {v}"),
                (i as f64 + 0.2, *v as f64 + y_top * 0.09),
                ("sans-serif", LABEL_PX),
            )
        }))?;
        root.present()?;
    }
    Ok(out)
}

/// Who owes whom: issuers by row, redeemers by column, value as colour and text. An
/// operator's own cell (its tokens spent at its own relays) is settled with no one: it is
/// greyed and left out of the colour scale.
fn settlement_heatmap(report: &AuditReport) -> Svg {
    let mut operators: Vec<String> = report
        .settlement
        .keys()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    operators.sort();
    operators.dedup();
    let n = operators.len().max(1);
    let max = report
        .settlement
        .iter()
        .filter(|((issuer, redeemer), _)| issuer != redeemer)
        .map(|(_, c)| c.owed)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut out = String::new();
    {
        let cell = 180;
        let side = u32::try_from(cell * n + 40).unwrap_or(1200);
        let root = SVGBackend::with_string(&mut out, (side, side + 40)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "credits each issuer (row) owes each redeemer (column), after the fee",
                ("sans-serif", CAPTION_PX),
            )
            .margin(12)
            .build_cartesian_2d(0.0..n as f64, 0.0..n as f64)?;
        for (i, issuer) in operators.iter().enumerate() {
            for (j, redeemer) in operators.iter().enumerate() {
                let value = report
                    .settlement
                    .get(&(issuer.clone(), redeemer.clone()))
                    .map(|c| c.owed)
                    .unwrap_or(0);
                let own = issuer == redeemer;
                let colour = if own {
                    RGBColor(232, 232, 232)
                } else {
                    let heat = value as f64 / max;
                    RGBColor(
                        255,
                        (255.0 * (1.0 - heat * 0.8)) as u8,
                        (255.0 * (1.0 - heat)) as u8,
                    )
                };
                // Issuers top to bottom, redeemers left to right.
                let (x, y) = (j as f64, (n - 1 - i) as f64);
                chart.draw_series([
                    Rectangle::new([(x, y), (x + 1.0, y + 1.0)], colour.filled()),
                    Rectangle::new([(x, y), (x + 1.0, y + 1.0)], BLACK.mix(0.3)),
                ])?;
                let (line1, line2, figure) = if own {
                    (
                        format!("{issuer} at its"),
                        "own relays".to_owned(),
                        "not settled".to_owned(),
                    )
                } else {
                    (
                        format!("{issuer} owes"),
                        redeemer.clone(),
                        value.to_string(),
                    )
                };
                chart.draw_series([
                    Text::new(line1, (x + 0.07, y + 0.88), ("sans-serif", LABEL_PX)),
                    Text::new(line2, (x + 0.07, y + 0.74), ("sans-serif", LABEL_PX)),
                    Text::new(
                        figure,
                        (x + 0.07, y + 0.45),
                        ("sans-serif", if own { LABEL_PX } else { 26 }),
                    ),
                ])?;
            }
        }
        root.present()?;
    }
    Ok(out)
}

/// A box of findings (`class` styles it) under `heading`, one list item each.
fn findings(html: &mut String, class: &str, heading: &str, items: &[String]) {
    html.push_str(&format!("<div class=\"{class}\"><h2>{heading}</h2><ul>"));
    for item in items {
        html.push_str(&format!("<li>{}</li>", escape(item)));
    }
    html.push_str("</ul></div>");
}

/// The whole page.
pub fn render(report: &AuditReport) -> Result<String, Box<dyn std::error::Error>> {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>scrip audit</title><style>\
         body{font-family:sans-serif;margin:2em;color:#222}h1{font-size:1.4em}\
         .alarm{background:#fdd;border:1px solid #c00;padding:.5em 1em}.ok{background:#dfd;padding:.5em 1em}\
         .notes{color:#666;font-size:.9em}.notes h2{font-size:1em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}\
         .charts{display:flex;flex-wrap:wrap;gap:1em}svg{max-width:100%;height:auto}</style></head><body>",
    );
    html.push_str("<h1>scrip ledger audit</h1>");
    if report.alarms.is_empty() {
        html.push_str("<p class=\"ok\">No alarms.</p>");
    } else {
        findings(&mut html, "alarm", "Alarms", &report.alarms);
    }
    if !report.notes.is_empty() {
        findings(&mut html, "notes", "Notes", &report.notes);
    }
    html.push_str(&format!(
        "<p>{} entries and {} checkpoints verified; head <code>{}</code>.</p>",
        report.entries,
        report.checkpoints,
        report.head_hash.map(|h| h.to_string()).unwrap_or_default()
    ));
    html.push_str("<h2>Who owes whom</h2>");
    html.push_str(&settlement_heatmap(report)?);
    html.push_str("<table><tr><th>operator</th><th>net (credits)</th></tr>");
    for (op, net) in &report.net {
        html.push_str(&format!("<tr><td>{}</td><td>{net:+}</td></tr>", escape(op)));
    }
    html.push_str("</table><h2>Outstanding value</h2>");
    html.push_str(&outstanding_chart(report)?);
    html.push_str("<h2>Issued and spent per key</h2><div class=\"charts\">");
    for s in report.key_series.iter().filter(|s| !s.points.is_empty()) {
        let id = s.token_key_id.map(|k| k.to_string()).unwrap_or_default();
        let title = format!("{} {} {}", s.issuer, s.kind, &id[..id.len().min(8)]);
        html.push_str(&key_chart(&title, &s.points)?);
    }
    html.push_str("</div><h2>Keys</h2><table><tr><th>issuer</th><th>kind</th><th>issued</th><th>spent</th><th>outstanding</th><th>pruned</th></tr>");
    for k in &report.totals.keys {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&k.issuer),
            k.kind,
            k.issued,
            k.spent,
            k.issued.saturating_sub(k.spent),
            k.pruned
        ));
    }
    html.push_str("</table></body></html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_labelled_by_span_and_counts_by_integers() {
        let day = 1_796_083_200; // 2026-12-01
        assert_eq!(TimeScale::for_span(5 * 3_600), TimeScale::Hours);
        assert_eq!(TimeScale::Hours.label(day + 13 * 3_600 + 60), "13:01");
        assert_eq!(TimeScale::Hours.context(day, day + 3_600), "2026-12-01 UTC");
        assert_eq!(TimeScale::for_span(20 * 86_400), TimeScale::Days);
        assert_eq!(TimeScale::Days.label(day), "12-01");
        assert_eq!(TimeScale::for_span(400 * 86_400), TimeScale::Months);
        assert_eq!(TimeScale::Months.label(day), "2026-12");
        // One token: two labels (0 and 1), never 0, 0.2, 0.4 ...
        assert_eq!(count_axis(1).1, 2);
        assert_eq!(count_axis(90).1, 6);
    }

    #[test]
    fn notes_are_listed_apart_from_alarms() {
        let report = AuditReport {
            notes: vec!["key k of op-a (queue): 1 spent since <then>, not yet reported".into()],
            ..AuditReport::default()
        };
        let page = render(&report).expect("page");
        assert!(page.contains("No alarms."), "a note is no alarm");
        assert!(page.contains("<div class=\"notes\"><h2>Notes</h2><ul><li>key k of op-a"));
        assert!(page.contains("since &lt;then&gt;"), "escaped");
    }

    #[test]
    fn long_series_are_thinned_without_losing_the_last_total() {
        let points: Vec<_> = (0..10_000u64).map(|h| (h * 3_600, h, h / 2)).collect();
        let t = thinned(&points);
        assert!(t.len() <= MAX_POINTS + 1);
        assert_eq!(t.last(), points.last());
        assert_eq!(t.first(), points.first());
    }
}
