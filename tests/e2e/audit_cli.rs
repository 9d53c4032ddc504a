//! `scrip audit` against a consortium on loopback: clean, incremental, notes, alarms, tampering.

use crate::support::{cards_on_sale, checkpoint, consortium_with_keys};
use crate::{SCRIP, scrip_blocking};
use scrip_client::Wallet;
use scrip_spec::CapacityKind;
use scrip_testkit::path;

/// `scrip BASE EXTRA` off the async workers.
async fn audit(base: &[&str], extra: &[&str]) -> std::process::Output {
    scrip_blocking(&[base, extra].concat()).await
}

/// The audit exited 0: nothing to report.
fn assert_clean(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_incremental_alarms_and_tampering() {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let (a, b) = (&c.operators[0], &c.operators[1]);
    let codes = cards_on_sale(a, 50, 1).await;
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let kind = CapacityKind::new("chunk-1m").expect("kind");
    wallet
        .open_card(&a.issuer_url, &codes[0], &[(kind.clone(), 3)], &|_, _| {})
        .await
        .expect("open");
    wallet
        .spend(&kind, &b.redeemer_url)
        .await
        .expect("spend at b");
    let state = dir.path().join("audit.state");
    let base = ["audit", "--ledger", &c.ledger_url, "--state", path(&state)];

    // Issuance not yet reported: a token of the key is spent but none reported issued, as
    // in every consortium between two of its issuers' reports. A note, not an alarm.
    let out = audit(&base, &[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "a note is no alarm: {text}");
    assert!(
        text.contains("NOTES") && text.contains("1 spent since its last issuance report"),
        "{text}"
    );
    let out = audit(&base, &["--json", "--from-genesis"]).await;
    assert_clean(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert!(report["alarms"].as_array().expect("alarms").is_empty());
    let note = report["notes"][0].as_str().unwrap_or_default();
    assert!(note.contains("not yet reported"), "{report}");
    // An issuer that has not reported for longer than the grace is late: then it is an alarm.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let out = audit(&base, &["--report-grace", "0"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "alarm exit status: {text}");
    assert!(text.contains("has not reported key"), "{text}");

    // After the report and a checkpoint: clean, and the second run reads only new entries.
    a.issuer.report_issuance().await.expect("report");
    let checkpoint = checkpoint(&c).await;
    let key_text = std::fs::read_to_string(dir.path().join("c/op-b.key")).expect("key");
    let op_b = scrip_spec::OperatorKey::from_text(&key_text).expect("key");
    let cosignature = scrip_spec::ledger::Cosignature { checkpoint };
    c.ledger
        .cosign(op_b.sign(cosignature))
        .await
        .expect("cosign");
    let out = audit(&base, &["--json"]).await;
    assert_clean(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["verified"]["new_entries"], 2);
    assert_eq!(report["verified"]["checkpoints"], 1);
    assert_eq!(
        report["verified"]["latest_checkpoint_cosigners"][0],
        op_b.id().to_string()
    );
    assert_eq!(report["settlement"]["cells"][0]["issuer"], "op-a");
    assert_eq!(report["settlement"]["cells"][0]["redeemer"], "op-b");
    assert_eq!(report["settlement"]["cells"][0]["value"], 4);
    assert_eq!(
        report["settlement"]["cells"][0]["owed"], 4,
        "no fee in the genesis catalog"
    );
    assert_eq!(report["settlement"]["catalog_versions"][0]["seq"], 0);
    assert_eq!(report["settlement"]["catalog_versions"][0]["tokens"], 1);
    assert_eq!(report["settlement"]["net"]["op-b"], 4);
    assert!(report["alarms"].as_array().expect("alarms").is_empty());

    // The HTML page: self-contained, alarms first, charts inline.
    let page = dir.path().join("audit.html");
    let out = audit(&base, &["--html", path(&page)]).await;
    assert_eq!(out.status.code(), Some(0));
    let html = std::fs::read_to_string(&page).expect("page");
    assert!(
        html.contains("No alarms.") && html.matches("<svg").count() >= 3,
        "charts drawn"
    );
    assert!(html.contains("op-a") && html.contains("op-b"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<script"),
        "nothing fetched"
    );

    // A period with no spends settles nothing.
    let out = audit(&base, &["--json", "--period", "2001-01"]).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        report["settlement"]["cells"]
            .as_array()
            .expect("cells")
            .is_empty()
    );
    assert!(
        !audit(&base, &["--period", "2026-13"])
            .await
            .status
            .success()
    );

    // A read-only copy of the database audits the same; a tampered copy is caught.
    let copy = dir.path().join("copy.db");
    let conn = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("c/ledger.db").display()
    ))
    .await
    .expect("db");
    sqlx::query(&format!("VACUUM INTO '{}'", copy.display()))
        .execute(&conn)
        .await
        .expect("copy");
    let copy_url = format!("sqlite://{}", copy.display());
    let db_state = dir.path().join("db.state");
    let by_copy = ["audit", "--database", &copy_url, "--state", path(&db_state)];
    let out = audit(&by_copy, &["--json"]).await;
    assert_clean(&out);

    // A copy whose spent set lost a row (its token could be spent again) while its log is
    // intact: the audit of the copy compares the tables with the log and names the row.
    let holed = dir.path().join("holed.db");
    sqlx::query(&format!("VACUUM INTO '{}'", holed.display()))
        .execute(&conn)
        .await
        .expect("copy");
    let holed_url = format!("sqlite://{}", holed.display());
    let holed_conn = sqlx::SqlitePool::connect(&holed_url)
        .await
        .expect("copy db");
    let deleted =
        sqlx::query("DELETE FROM spent WHERE nullifier = (SELECT nullifier FROM spent LIMIT 1)")
            .execute(&holed_conn)
            .await
            .expect("delete a spent row");
    assert_eq!(deleted.rows_affected(), 1);
    holed_conn.close().await;
    let holed_state = dir.path().join("holed.state");
    let by_holed = [
        "audit",
        "--database",
        &holed_url,
        "--state",
        path(&holed_state),
    ];
    let out = audit(&by_holed, &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "tampering exit status: {err}");
    assert!(err.contains("missing from the spent set"), "{err}");

    let copy_conn = sqlx::SqlitePool::connect(&copy_url).await.expect("copy db");
    sqlx::query("UPDATE entries SET body = CAST(body AS BLOB) || x'00' WHERE seq = 3")
        .execute(&copy_conn)
        .await
        .expect("tamper");
    let out = audit(&by_copy, &["--from-genesis"]).await;
    assert_eq!(out.status.code(), Some(2), "tampering exit status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TAMPERING") && err.contains("entry 3"),
        "{err}"
    );
}

/// A consortium of one operator with one spend on its ledger, and a copy of its database.
async fn one_spend_ledger() -> (tempfile::TempDir, scrip::consortium::Consortium, String) {
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let op = &c.operators[0];
    let codes = cards_on_sale(op, 50, 1).await;
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    let kind = CapacityKind::new("queue").expect("kind");
    wallet
        .open_card(&op.issuer_url, &codes[0], &[(kind.clone(), 1)], &|_, _| {})
        .await
        .expect("open");
    wallet.spend(&kind, &op.redeemer_url).await.expect("spend");
    op.issuer.report_issuance().await.expect("report");
    let copy = dir.path().join("copy.db");
    let conn = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("c/ledger.db").display()
    ))
    .await
    .expect("db");
    sqlx::query(&format!("VACUUM INTO '{}'", copy.display()))
        .execute(&conn)
        .await
        .expect("copy");
    (dir, c, format!("sqlite://{}", copy.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_state_belongs_to_one_ledger_and_its_head() {
    let (dir, one, one_copy) = one_spend_ledger().await;
    let (_other_dir, other, _) = one_spend_ledger().await;
    let state = dir.path().join("shared.state");
    let with_state = |ledger: &str| {
        let ledger = ledger.to_owned();
        let state = path(&state).to_owned();
        async move { audit(&["audit", "--ledger", &ledger, "--state", &state], &[]).await }
    };
    assert_clean(&with_state(&one.ledger_url).await);
    let before = std::fs::read(&state).expect("state");

    // The state of one ledger is refused for another, which is left unreported.
    let out = with_state(&other.ledger_url).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit of another ledger"), "{err}");
    assert!(out.stdout.is_empty(), "nothing reported");
    assert_eq!(
        std::fs::read(&state).expect("state"),
        before,
        "state untouched"
    );

    // Without --state, each ledger gets its own file in the state directory.
    let home = dir.path().join("xdg");
    for ledger in [&one.ledger_url, &other.ledger_url, &one.ledger_url] {
        let out = SCRIP
            .command(&["audit", "--ledger", ledger])
            .env("XDG_STATE_HOME", &home)
            .output()
            .expect("audit");
        assert_clean(&out);
    }
    let files = std::fs::read_dir(home.join("scrip"))
        .expect("state dir")
        .count();
    assert_eq!(files, 2, "one state per ledger");

    // A copy whose last verified entry disappears after the audit: caught even with no new
    // entry to read.
    let db_state = dir.path().join("copy.state");
    let by_copy = ["audit", "--database", &one_copy, "--state", path(&db_state)];
    assert_clean(&audit(&by_copy, &[]).await);
    let conn = sqlx::SqlitePool::connect(&one_copy).await.expect("copy");
    sqlx::query("DELETE FROM entries WHERE seq = (SELECT MAX(seq) FROM entries)")
        .execute(&conn)
        .await
        .expect("drop the head");
    conn.close().await;
    let out = audit(&by_copy, &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TAMPERING") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_piped_into_a_reader_that_stops_does_not_panic() {
    let (dir, c, _) = one_spend_ledger().await;
    let state = dir.path().join("audit.state");
    let ledger = c.ledger_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = SCRIP
            .command(&["audit", "--ledger", &ledger, "--state", path(&state)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("audit");
        drop(child.stdout.take()); // `| head -0`: the reader is gone before the report
        child.wait_with_output().expect("wait")
    })
    .await
    .expect("join");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
