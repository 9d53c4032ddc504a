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

/// `YYYY-MM-DD` of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Cumulative issued (solid) and spent (dashed) tokens of one key over time.
fn key_chart(title: &str, points: &[(u64, u64, u64)]) -> Svg {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (420, 220)).into_drawing_area();
        root.fill(&WHITE)?;
        let days: Vec<f64> = points.iter().map(|p| p.0 as f64 / 86_400.0).collect();
        let (first, last) = (
            days.first().copied().unwrap_or(0.0),
            days.last().copied().unwrap_or(0.0),
        );
        let top = points
            .iter()
            .map(|p| p.1.max(p.2))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d((first - 0.5)..(last + 0.5), 0.0..top * 1.1)?;
        chart
            .configure_mesh()
            .y_desc("tokens")
            .x_labels(4)
            .x_label_formatter(&|d| date(d.round() as i64))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                days.iter().zip(points).map(|(d, p)| (*d, p.1 as f64)),
                BLUE.stroke_width(2),
            ))?
            .label("issued")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                days.iter().zip(points).map(|(d, p)| (*d, p.2 as f64)),
                RED.stroke_width(2),
            ))?
            .label("spent")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        // Markers, so that a key active on a single day still shows its points.
        chart.draw_series(
            days.iter()
                .zip(points)
                .map(|(d, p)| Circle::new((*d, p.1 as f64), 4, BLUE.filled())),
        )?;
        chart.draw_series(
            days.iter()
                .zip(points)
                .map(|(d, p)| Circle::new((*d, p.2 as f64), 4, RED.filled())),
        )?;
        chart
            .configure_series_labels()
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
        let root = SVGBackend::with_string(&mut out, (520, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let values: Vec<(String, f64)> = report
            .issuers
            .iter()
            .map(|v| {
                (
                    v.issuer.clone(),
                    v.value_issued.saturating_sub(v.value_redeemed) as f64,
                )
            })
            .collect();
        let top = values.iter().map(|v| v.1).fold(1.0, f64::max);
        let n = values.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption("outstanding value per issuer (credits)", ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, 0.0..top * 1.15)?;
        chart.configure_mesh().disable_x_mesh().x_labels(0).draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, (name, v))| {
            Text::new(
                format!("{name}: {v}"),
                (i as f64 + 0.25, v + top * 0.08),
                ("sans-serif", 13),
            )
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, (_, v))| {
            Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, *v)],
                GREEN.mix(0.7).filled(),
            )
        }))?;
        root.present()?;
    }
    Ok(out)
}

/// Who owes whom: issuers by row, redeemers by column, value as colour and text.
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
        .values()
        .map(|c| c.owed)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut out = String::new();
    {
        let side = 130 * n as u32 + 140;
        let root = SVGBackend::with_string(&mut out, (side, side + 20)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "settlement: credits each issuer owes each redeemer (after the fee)",
                ("sans-serif", 15),
            )
            .margin(10)
            .build_cartesian_2d(0.0..n as f64, 0.0..n as f64)?;
        for (i, issuer) in operators.iter().enumerate() {
            for (j, redeemer) in operators.iter().enumerate() {
                let value = report
                    .settlement
                    .get(&(issuer.clone(), redeemer.clone()))
                    .map(|c| c.owed)
                    .unwrap_or(0);
                let heat = value as f64 / max;
                let colour = RGBColor(
                    255,
                    (255.0 * (1.0 - heat * 0.8)) as u8,
                    (255.0 * (1.0 - heat)) as u8,
                );
                // Issuers top to bottom, redeemers left to right.
                let (x, y) = (j as f64, (n - 1 - i) as f64);
                chart.draw_series([
                    Rectangle::new([(x, y), (x + 1.0, y + 1.0)], colour.filled()),
                    Rectangle::new([(x, y), (x + 1.0, y + 1.0)], BLACK.mix(0.3)),
                ])?;
                let own = if issuer == redeemer { " (own)" } else { "" };
                chart.draw_series([
                    Text::new(
                        format!("{issuer} owes"),
                        (x + 0.08, y + 0.85),
                        ("sans-serif", 12),
                    ),
                    Text::new(
                        format!("{redeemer}{own}"),
                        (x + 0.08, y + 0.7),
                        ("sans-serif", 12),
                    ),
                    Text::new(value.to_string(), (x + 0.4, y + 0.4), ("sans-serif", 22)),
                ])?;
            }
        }
        root.present()?;
    }
    Ok(out)
}

/// The whole page.
pub fn render(report: &AuditReport) -> Result<String, Box<dyn std::error::Error>> {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>scrip audit</title><style>\
         body{font-family:sans-serif;margin:2em;color:#222}h1{font-size:1.4em}\
         .alarm{background:#fdd;border:1px solid #c00;padding:.5em 1em}.ok{background:#dfd;padding:.5em 1em}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}\
         .charts{display:flex;flex-wrap:wrap;gap:1em}</style></head><body>",
    );
    html.push_str("<h1>scrip ledger audit</h1>");
    if report.alarms.is_empty() {
        html.push_str("<p class=\"ok\">No alarms.</p>");
    } else {
        html.push_str("<div class=\"alarm\"><h2>Alarms</h2><ul>");
        for a in &report.alarms {
            html.push_str(&format!("<li>{}</li>", escape(a)));
        }
        html.push_str("</ul></div>");
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
