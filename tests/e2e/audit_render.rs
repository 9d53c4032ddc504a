//! The audit's HTML page as a browser draws it: rendered by headless Chromium at 1280 px, every
//! text label of every chart must lie inside its chart. A script added to a copy of the page
//! measures each label's box; Chromium prints the DOM after it ran. The PNG is kept for people
//! (`SCRIP_AUDIT_PNG=docs/audit-report.png` writes the one in the repository's docs).

use crate::scrip_blocking;
use crate::support::{cards_on_sale, consortium_with_keys};
use scrip_client::Wallet;
use scrip_spec::CapacityKind;
use scrip_testkit::path;
use std::process::Command;

/// The browser: Debian's `chromium` (`.ci/run` installs it).
fn chromium() -> &'static str {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!("Chromium is not installed: apt-get install chromium (the CI script does)");
}

/// Finds, for every `<text>` of every `<svg>`, whether its box as drawn (after rotation and
/// scaling) lies within the svg's, and writes the offenders (or `none`) into `#label-check`.
const CHECK: &str = r#"<pre id="label-check">pending</pre><script>
window.addEventListener('load', () => {
  const bad = [];
  document.querySelectorAll('svg').forEach((svg, i) => {
    const s = svg.getBoundingClientRect();
    svg.querySelectorAll('text').forEach(t => {
      const b = t.getBoundingClientRect();
      if (b.width === 0) return;
      if (b.left < s.left - 0.5 || b.top < s.top - 0.5 || b.right > s.right + 0.5 || b.bottom > s.bottom + 0.5) {
        bad.push(`chart ${i}: "${t.textContent.trim()}" at ${(b.left - s.left).toFixed(0)},${(b.top - s.top).toFixed(0)} size ${b.width.toFixed(0)}x${b.height.toFixed(0)} in ${s.width.toFixed(0)}x${s.height.toFixed(0)}`);
      }
    });
  });
  document.getElementById('label-check').textContent = bad.length ? bad.join('\n') : 'none';
});
</script>"#;

fn png_width(png: &[u8]) -> u32 {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    u32::from_be_bytes(png[16..20].try_into().expect("IHDR width"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Chromium (apt-get install chromium); CI runs it with --ignored"]
async fn the_report_renders_with_every_label_inside_its_chart() {
    let browser = chromium();
    let (dir, c) = consortium_with_keys(&["op-a", "op-b", "op-c"]).await;
    // Spends of every issuer's tokens at every relay, own ones included: every heat-map cell
    // is drawn, with different values.
    let kind = CapacityKind::new("chunk-64k").expect("kind");
    for (i, issuer) in c.operators.iter().enumerate() {
        let wallet = Wallet::create(&dir.path().join(format!("w{i}.db")), &c.ledger_url, None)
            .await
            .expect("wallet");
        let code = cards_on_sale(issuer, 90, 1).await.remove(0);
        wallet
            .open_card(&issuer.issuer_url, &code, &[(kind.clone(), 12)], &|_, _| {})
            .await
            .expect("open");
        for (j, relay) in c.operators.iter().enumerate() {
            for _ in 0..=(i + j) % 3 {
                wallet
                    .spend(&kind, &relay.redeemer_url)
                    .await
                    .expect("spend");
            }
        }
        issuer.issuer.report_issuance().await.expect("report");
    }
    let page = dir.path().join("audit.html");
    let state = dir.path().join("audit.state");
    let out = scrip_blocking(&[
        "audit",
        "--ledger",
        &c.ledger_url,
        "--state",
        path(&state),
        "--html",
        path(&page),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).expect("page");
    assert!(html.contains("not settled"), "own cells marked");
    assert!(!html.contains(".0<"), "whole credits shown as integers");

    let common = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,3000",
    ];
    // What the check finds in `page`: `none`, or the labels outside their chart.
    let overflowing = |page: &str, name: &str| {
        let checked = dir.path().join(name);
        std::fs::write(
            &checked,
            page.replace("</body>", &format!("{CHECK}</body>")),
        )
        .expect("copy");
        let dom = Command::new(browser)
            .args(common)
            .args(["--virtual-time-budget=5000", "--dump-dom"])
            .arg(format!("file://{}", checked.display()))
            .output()
            .expect("chromium runs");
        let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
        dom.split("<pre id=\"label-check\">")
            .nth(1)
            .and_then(|rest| rest.split("</pre>").next())
            .expect("the check ran")
            .to_owned()
    };
    // The check itself catches a label pushed past its chart's edge.
    let broken = html.replacen("<text ", "<text transform=\"translate(2000,0)\" ", 1);
    assert_ne!(
        overflowing(&broken, "broken.html"),
        "none",
        "the check sees overflow"
    );
    let verdict = overflowing(&html, "checked.html");
    assert_eq!(verdict, "none", "labels outside their chart:\n{verdict}");

    let png = std::env::var("SCRIP_AUDIT_PNG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("audit.png"));
    let shot = Command::new(browser)
        .args(common)
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert_eq!(png_width(&std::fs::read(&png).expect("png")), 1280);
}
