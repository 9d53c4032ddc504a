//! Refresh and change (issue 16) end to end: the wallet against an in-process consortium,
//! and against `scrip issuer serve` killed with SIGKILL in the refresh's crash windows.

use crate::support::{cards_on_sale, consortium_with_keys};
use crate::{SCRIP, scrip_blocking, scrip_ok};
use scrip_client::{TokenState, Wallet, WalletError};
use scrip_spec::CapacityKind;
use scrip_testkit::{Fault, FaultProxy, mint_args, path, read_cards};

fn kind(k: &str) -> CapacityKind {
    CapacityKind::new(k).expect("kind")
}

/// Far enough ahead that every token of the test's keys is due.
const ALL: u64 = 365 * 86_400;

/// The ledger's `tokens_refreshed` entries, read over HTTP.
async fn refresh_entries(ledger_url: &str) -> usize {
    let client = scrip_common::clients::LedgerClient::new(ledger_url);
    scrip_ledger::audit::fetch_log(&client)
        .await
        .expect("log")
        .iter()
        .filter(|e| e.body.kind_name() == "tokens_refreshed")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_into_newer_keys_then_spend_and_change_chunks_into_a_bigger_one() {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let (a, b) = (&c.operators[0], &c.operators[1]);
    let code = &cards_on_sale(a, 100, 1).await[0];
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    wallet
        .open_card(
            &a.issuer_url,
            code,
            &[(kind("queue"), 2), (kind("chunk-64k"), 13)],
            &|_, _| {},
        )
        .await
        .expect("open");
    let old_queue = wallet
        .unspent_token("queue")
        .await
        .expect("q")
        .expect("token");

    // No key lasts longer yet: nothing to refresh into, nothing spent.
    let summary = wallet.refresh(None, ALL).await.expect("refresh");
    assert_eq!(summary.refreshed, 0);
    assert_eq!(summary.skipped.len(), 15, "{:?}", summary.skipped);

    // A new key per kind, valid from a later second: the wallet now refreshes into it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    a.issuer.rotate_keys().await.expect("rotate");
    let summary = wallet.refresh(None, ALL).await.expect("refresh");
    assert_eq!(summary.refreshed, 15, "{:?}", summary.skipped);
    assert_eq!(summary.tokens["queue"], 2);
    assert_eq!(refresh_entries(&c.ledger_url).await, 1);
    let old = wallet
        .token(&old_queue.nullifier())
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(old.state, TokenState::Spent);
    let balance = wallet.balance().await.expect("balance");
    assert_eq!(balance.unspent.values().sum::<u64>(), 15);
    assert_eq!(balance.pending, 0);

    // The new tokens spend at the other operator; the old one is refused there.
    wallet
        .spend(&kind("queue"), &b.redeemer_url)
        .await
        .expect("spend a refreshed token");
    let redeemer = scrip_common::clients::RedeemerClient::on(
        &b.redeemer_url,
        scrip_common::clients::Http::new(std::time::Duration::from_secs(10)),
    );
    let refused = redeemer
        .redeem(&old_queue, &kind("queue"))
        .await
        .expect_err("spent in the refresh");
    assert_eq!(refused.status(), Some(409), "{refused}");

    // Change: 13 chunk-64k (1 credit each) into one chunk-4m (12): twelve go in, one stays.
    let summary = wallet
        .change(None, &kind("chunk-64k"), &kind("chunk-4m"), None, false)
        .await
        .expect("change");
    assert_eq!((summary.refreshed, summary.lost_credits), (12, 0));
    assert_eq!(summary.tokens.get("chunk-4m"), Some(&1));
    let balance = wallet.balance().await.expect("balance");
    let held = |k: &str| -> u64 {
        balance
            .unspent
            .iter()
            .filter(|((kind, _), _)| kind == k)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!((held("chunk-64k"), held("chunk-4m")), (1, 1));
    wallet
        .spend(&kind("chunk-4m"), &b.redeemer_url)
        .await
        .expect("spend the changed token");
    // Not enough for another one: refused before anything is sent.
    let err = wallet
        .change(None, &kind("chunk-64k"), &kind("chunk-4m"), None, false)
        .await
        .expect_err("one credit buys no chunk-4m");
    assert!(
        matches!(err, WalletError::NotEnough { have: 1, .. }),
        "{err}"
    );
    assert_eq!(refresh_entries(&c.ledger_url).await, 2);

    // A wallet restored from the seed recovers the refreshes' outputs (the issuer replays a
    // refresh under its request id like an opening) and knows the inputs are spent.
    let seed = scrip_spec::WalletSeed::from_backup_code(&wallet.backup_code()).expect("seed");
    let restored = Wallet::create(&dir.path().join("r.db"), &c.ledger_url, Some(seed))
        .await
        .expect("wallet");
    restored
        .restore(std::slice::from_ref(&a.issuer_url))
        .await
        .expect("restore");
    let mine = wallet.balance().await.expect("balance");
    let back = restored.balance().await.expect("balance");
    assert_eq!(back.unspent, mine.unspent, "every unspent token recovered");

    // The audit is clean once the openings are reported, and settles only the spends.
    a.issuer.report_issuance().await.expect("report");
    let out = scrip_blocking(&["audit", "--ledger", &c.ledger_url, "--json"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let cells = report["settlement"]["cells"].as_array().expect("cells");
    let tokens: u64 = cells
        .iter()
        .flat_map(|c| c["tokens"].as_object().expect("tokens").values())
        .map(|n| n.as_u64().expect("count"))
        .sum();
    assert_eq!(tokens, 2, "the two spends, not the refreshes: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_imported_by_someone_else_and_refreshed_fail_the_original_holders_spend() {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let (a, b) = (&c.operators[0], &c.operators[1]);
    let code = &cards_on_sale(a, 100, 1).await[0];
    let holder = Wallet::create(&dir.path().join("a.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    holder
        .open_card(&a.issuer_url, code, &[(kind("chunk-64k"), 2)], &|_, _| {})
        .await
        .expect("open");
    let file = holder.export().await.expect("export");
    let taker = Wallet::create(&dir.path().join("b.db"), &c.ledger_url, None)
        .await
        .expect("wallet");
    assert_eq!(taker.import(&file).await.expect("import").added, 2);

    // The taker knows no issuer URL for imported tokens: it names the issuer, on the
    // command line.
    let taker_path = dir.path().join("b.db");
    let out = crate::ok(
        crate::wallet(
            path(&taker_path),
            &[
                "change",
                "--from",
                "chunk-64k",
                "--to",
                "chunk-256k",
                "--count",
                "1",
                "--issuer",
                &a.issuer_url,
            ],
        )
        .await,
    );
    assert!(
        out.contains("gave in 2 token(s)") && out.contains("1 x chunk-256k"),
        "{out}"
    );
    drop(taker);

    // The original holder's spend of either token: 409 at the redeemer, marked spent.
    let err = holder
        .spend(&kind("chunk-64k"), &b.redeemer_url)
        .await
        .expect_err("already refreshed");
    match &err {
        WalletError::AlreadySpent { first_spent_by, .. } => assert_eq!(first_spent_by, "op-a"),
        other => panic!("expected already spent, got {other}"),
    }
    assert_eq!(
        holder.tokens(TokenState::Spent).await.expect("spent").len(),
        1
    );
    // And the holder's own refresh of the other one is refused as spent too, nothing signed.
    let err = holder
        .change(
            Some(&a.issuer_url),
            &kind("chunk-64k"),
            &kind("chunk-64k"),
            Some(1),
            false,
        )
        .await
        .expect_err("already refreshed");
    assert!(matches!(err, WalletError::AlreadySpent { .. }), "{err}");
    let balance = holder.balance().await.expect("balance");
    assert_eq!((balance.unspent.len(), balance.pending), (0, 0));
    assert_eq!(refresh_entries(&c.ledger_url).await, 1);
}

/// `scrip ledger serve` and `scrip issuer serve` as processes, with a card on sale; the
/// issuer talks to the ledger through `ledger_proxy`.
struct Processes {
    _dir: tempfile::TempDir,
    ledger_url: String,
    issuer_url: String,
    issuer_cfg: std::path::PathBuf,
    issuer: scrip_testkit::Process,
    _ledger: scrip_testkit::Process,
    ledger_proxy: FaultProxy,
    code: String,
    wallet_path: std::path::PathBuf,
}

async fn processes() -> Processes {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_path_buf();
    let db = format!("sqlite://{}", d.join("ledger.db").display());
    let ledger = SCRIP.ledger_setup(&d, &db);
    let ledger_process = ledger.process(SCRIP).started().await;
    let ledger_proxy = FaultProxy::start(&ledger.base).await;
    let issuer = ledger.issuer_config(&d);
    // The issuer reaches the ledger through the proxy.
    let text = std::fs::read_to_string(&issuer.config).expect("config");
    let text = text.replace(
        &format!("ledger_url = \"{}\"", ledger.base),
        &format!("ledger_url = \"{}\"", ledger_proxy.url()),
    );
    std::fs::write(&issuer.config, text).expect("config");
    let cfg = path(&issuer.config).to_owned();
    scrip_ok(&["issuer", "keys", "rotate", "--config", &cfg]);
    let csv = d.join("cards.csv");
    scrip_ok(&mint_args("100", "1", &csv, &cfg));
    let rows = read_cards(&csv);
    scrip_ok(&[
        "issuer",
        "cards",
        "activate",
        "--batch",
        &rows[0][0],
        "--config",
        &cfg,
    ]);
    let server = issuer.process(SCRIP, "issuer").started().await;
    Processes {
        wallet_path: d.join("w.db"),
        _dir: dir,
        ledger_url: ledger.base.clone(),
        issuer_url: issuer.base.clone(),
        issuer_cfg: issuer.config.clone(),
        issuer: server,
        _ledger: ledger_process,
        ledger_proxy,
        code: rows[0][2].clone(),
    }
}

impl Processes {
    /// Reports issuance and runs `scrip audit`: exit 0 means clean.
    async fn audit_is_clean(&self) {
        scrip_ok(&["issuer", "report", "--config", path(&self.issuer_cfg)]);
        let out = scrip_blocking(&["audit", "--ledger", &self.ledger_url]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_is_idempotent_across_a_kill_9_and_the_audit_stays_clean() {
    let mut p = processes().await;
    let front = FaultProxy::start(&p.issuer_url).await;
    let wallet = Wallet::create(&p.wallet_path, &p.ledger_url, None)
        .await
        .expect("wallet");
    wallet
        .open_card(&front.url(), &p.code, &[(kind("chunk-64k"), 8)], &|_, _| {})
        .await
        .expect("open");

    let chunk_1m = |b: &scrip_client::Balance| -> u64 {
        b.unspent
            .iter()
            .filter(|((k, _), _)| k == "chunk-1m")
            .map(|(_, n)| n)
            .sum()
    };

    // 1. The ledger commits the issuer's spend, its answer to the issuer is lost, and the
    //    issuer is killed before it signs anything. The wallet keeps the refresh pending.
    p.ledger_proxy
        .once_for("POST /v1/entries", Fault::DropResponse);
    let err = wallet
        .change(None, &kind("chunk-64k"), &kind("chunk-1m"), Some(1), false)
        .await
        .expect_err("the issuer heard nothing from the ledger");
    assert!(matches!(err, WalletError::IssuerRefused { .. }), "{err}");
    assert_eq!(p.ledger_proxy.faults_applied(), 1);
    assert_eq!(
        refresh_entries(&p.ledger_url).await,
        1,
        "the ledger holds the spend"
    );
    assert_eq!(
        wallet.balance().await.expect("balance").pending,
        4,
        "set aside, not lost"
    );
    p.issuer.restart().await;

    // 2. The retry reaches the restarted issuer, which resends its recorded ledger request,
    //    hears it was applied, signs and stores the answer; that answer is lost on its way
    //    to the wallet, and the issuer is killed again.
    front.once_for("POST /v1/refresh", Fault::DropResponse);
    let err = wallet.resume_refreshes().await.expect_err("no answer");
    assert!(matches!(err, WalletError::NoAnswer { .. }), "{err}");
    assert_eq!(front.faults_applied(), 1);
    assert_eq!(chunk_1m(&wallet.balance().await.expect("balance")), 0);
    p.issuer.restart().await;

    // 3. The next retry gets the stored signatures: still one ledger entry.
    assert_eq!(wallet.resume_refreshes().await.expect("resumed"), 1);
    let balance = wallet.balance().await.expect("balance");
    assert_eq!((balance.pending, chunk_1m(&balance)), (0, 1));
    assert_eq!(refresh_entries(&p.ledger_url).await, 1, "one ledger entry");

    // Another refresh runs as usual afterwards.
    wallet
        .change(None, &kind("chunk-64k"), &kind("chunk-1m"), Some(1), false)
        .await
        .expect("change");
    let balance = wallet.balance().await.expect("balance");
    assert_eq!((chunk_1m(&balance), balance.spent), (2, 8));
    assert_eq!(refresh_entries(&p.ledger_url).await, 2);
    p.audit_is_clean().await;
}
