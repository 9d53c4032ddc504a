//! The wallet against a whole consortium on loopback: opening, spending at both operators,
//! never losing a token, export and import, restore from the seed, and refusing tagging keys.

use crate::support::{cards_on_sale, consortium_with_keys};
use scrip::consortium::Consortium;
use scrip_client::{TokenState, Wallet, WalletError};
use scrip_spec::{CapacityKind, WalletSeed};

fn kind(k: &str) -> CapacityKind {
    CapacityKind::new(k).expect("kind")
}

async fn setup() -> (tempfile::TempDir, Consortium, String) {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b"]).await;
    let codes = cards_on_sale(&c.operators[0], 100, 2).await;
    (dir, c, codes[0].clone())
}

/// A new wallet `w.db` in `dir`, with the ledger at `ledger`.
async fn new_wallet(dir: &std::path::Path, ledger: &str) -> Wallet {
    Wallet::create(&dir.join("w.db"), ledger, None)
        .await
        .expect("wallet")
}

/// Opens one queue token of the card `code` at `issuer`, which must fail (`why`).
async fn refused_opening(wallet: &Wallet, issuer: &str, code: &str, why: &str) -> WalletError {
    wallet
        .open_card(issuer, code, &[(kind("queue"), 1)], &|_, _| {})
        .await
        .expect_err(why)
}

/// The credits left on the card `code`, as `issuer` tells the wallet.
async fn credits_left(wallet: &Wallet, issuer: &str, code: &str) -> u64 {
    wallet
        .card_balance(issuer, code)
        .await
        .expect("balance")
        .remaining_credits
}

/// Serves `app`, a front a test puts before the real issuer, on a free loopback port.
async fn serve_front(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_spend_and_never_lose_a_token() {
    let (dir, c, code) = setup().await;
    let (a, b) = (&c.operators[0], &c.operators[1]);
    let path = dir.path().join("w.db");
    let wallet = Wallet::create(&path, &c.ledger_url, None)
        .await
        .expect("wallet");
    let mode = std::fs::metadata(&path).expect("file").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let calls = std::sync::Mutex::new(Vec::new());
    let summary = wallet
        .open_card(
            &a.issuer_url,
            &code,
            &[(kind("queue"), 3), (kind("chunk-64k"), 5)],
            &|d, t| calls.lock().expect("lock").push((d, t)),
        )
        .await
        .expect("open");
    assert_eq!(summary.remaining_credits, 100 - 30 - 5);
    assert_eq!(calls.lock().expect("lock").last(), Some(&(8, 8)));

    // A redeemer that does not answer: the outcome is unknown. The ledger says unspent, but a
    // spend request could still be on its way there, so the token stays pending (not lost,
    // not spendable elsewhere) until the settle horizon has passed.
    let dead = "http://127.0.0.1:9";
    let err = wallet
        .spend(&kind("queue"), dead)
        .await
        .expect_err("no redeemer");
    assert!(matches!(err, WalletError::NoAnswer { .. }), "{err}");
    assert_eq!(wallet.resolve_pending().await.expect("resolve"), 0);
    let balance = wallet.balance().await.expect("balance");
    assert_eq!(balance.unspent.values().sum::<u64>(), 7, "no token lost");
    assert_eq!(balance.pending, 1);
    let pending = wallet
        .store()
        .pending_at("queue", dead)
        .await
        .expect("q")
        .expect("the pending token");
    // Trying that redeemer again presents the same token again, not a second one.
    assert!(wallet.spend(&kind("queue"), dead).await.is_err());
    let balance = wallet.balance().await.expect("balance");
    assert_eq!(
        (balance.pending, balance.unspent.values().sum::<u64>()),
        (1, 7)
    );
    assert_eq!(
        wallet
            .store()
            .pending_at("queue", dead)
            .await
            .expect("q")
            .map(|t| t.token.nullifier()),
        Some(pending.token.nullifier())
    );

    // Spends at both operators.
    let g1 = wallet
        .spend(&kind("queue"), &a.redeemer_url)
        .await
        .expect("spend at a");
    let g2 = wallet
        .spend(&kind("chunk-64k"), &b.redeemer_url)
        .await
        .expect("spend at b");
    assert!(g1.grant.starts_with("sg1.queue.") && g2.grant.starts_with("sg1.chunk-64k."));
    let balance = wallet.balance().await.expect("balance");
    assert_eq!(
        (balance.spent, balance.unspent.values().sum::<u64>()),
        (2, 5)
    );

    // A token spent elsewhere (a copy) is recognised and marked spent, not lost silently.
    let copy = wallet
        .unspent_token("queue")
        .await
        .expect("query")
        .expect("one left");
    let body = serde_json::json!({"token": scrip_spec::encoding::b64_encode(copy.to_bytes()), "kind": "queue"});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/redeem", b.redeemer_url))
        .json(&body)
        .send()
        .await
        .expect("redeem copy");
    assert!(resp.status().is_success());
    let err = wallet
        .spend(&kind("queue"), &a.redeemer_url)
        .await
        .expect_err("already spent");
    assert!(
        matches!(err, WalletError::AlreadySpent { ref first_spent_by, .. } if first_spent_by == "op-b"),
        "{err}"
    );
    assert!(matches!(
        wallet.spend(&kind("queue"), &a.redeemer_url).await,
        Err(WalletError::NoToken { .. })
    ));

    // A crash after a token was taken for a spend at a live redeemer: the next spend there
    // presents that same token and settles it.
    let interrupted = wallet
        .store()
        .take_for_spend("chunk-64k", &b.redeemer_url, scrip_spec::now())
        .await
        .expect("take")
        .expect("a token");
    wallet
        .spend(&kind("chunk-64k"), &b.redeemer_url)
        .await
        .expect("the interrupted spend finishes");
    assert_eq!(
        wallet
            .token(&interrupted.token.nullifier())
            .await
            .expect("q")
            .expect("t")
            .state,
        TokenState::Spent
    );

    // A crash between marking a token pending and learning the outcome, long enough ago: the
    // next command settles it at the ledger.
    let token = wallet
        .unspent_token("chunk-64k")
        .await
        .expect("q")
        .expect("token");
    wallet
        .store()
        .set_state(&token.nullifier(), TokenState::Pending, None, None, 0)
        .await
        .expect("mark pending");
    assert_eq!(wallet.resolve_pending().await.expect("resolve"), 1);
    assert_eq!(
        wallet
            .token(&token.nullifier())
            .await
            .expect("q")
            .expect("t")
            .state,
        TokenState::Unspent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_import_and_restore_from_the_seed() {
    let (dir, c, code) = setup().await;
    let a = &c.operators[0];
    let seed = WalletSeed::generate();
    let backup = seed.backup_code().to_string();
    let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, Some(seed))
        .await
        .expect("wallet");
    wallet
        .open_card(&a.issuer_url, &code, &[(kind("chunk-1m"), 3)], &|_, _| {})
        .await
        .expect("open 1");
    wallet
        .open_card(&a.issuer_url, &code, &[(kind("chunk-64k"), 2)], &|_, _| {})
        .await
        .expect("open 2");
    wallet
        .spend(&kind("chunk-1m"), &a.redeemer_url)
        .await
        .expect("spend");

    // Restore from the backup code alone: every token comes back, the spent one as spent.
    let restored = Wallet::create(
        &dir.path().join("restored.db"),
        &c.ledger_url,
        Some(WalletSeed::from_backup_code(&backup).expect("code")),
    )
    .await
    .expect("wallet");
    assert_eq!(
        restored
            .restore(std::slice::from_ref(&a.issuer_url))
            .await
            .expect("restore"),
        5
    );
    let b = restored.balance().await.expect("balance");
    assert_eq!((b.spent, b.unspent.values().sum::<u64>()), (1, 4));
    // The restored wallet continues after the last opening: a new opening does not collide.
    restored
        .open_card(&a.issuer_url, &code, &[(kind("chunk-64k"), 1)], &|_, _| {})
        .await
        .expect("new opening after restore");

    // Export and import into a third wallet; a tampered file is refused.
    let file = wallet.export().await.expect("export");
    assert_eq!(file.tokens.len(), 4);
    let other = Wallet::create(&dir.path().join("other.db"), &c.ledger_url, None)
        .await
        .expect("w");
    let mut tampered = file.clone();
    tampered.tokens[0].token.authenticator[3] ^= 1;
    assert!(other.import(&tampered).await.is_err());
    let imported = other.balance().await.expect("b");
    assert_eq!(
        imported.unspent.values().sum::<u64>(),
        0,
        "nothing half-imported"
    );
    assert_eq!(other.import(&file).await.expect("import").added, 4);
    let again = other.import(&file).await.expect("again");
    assert_eq!((again.added, again.already_held), (0, 4), "no duplicates");
    let mut foreign = file.clone();
    foreign.tokens[0].key.redeem_until += 1;
    assert!(matches!(
        other.import(&foreign).await,
        Err(WalletError::UntrustedKey { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_the_ledger_does_not_list_is_refused() {
    let (dir, c, code) = setup().await;
    // A fake issuer front that offers op-a's keys plus one of its own making: a tagging key.
    let mut offered: scrip_spec::api::issuer::IssuerKeys =
        reqwest::get(format!("{}/v1/keys", c.operators[0].issuer_url))
            .await
            .expect("keys")
            .json()
            .await
            .expect("json");
    let mut tag = offered
        .keys
        .iter()
        .find(|k| k.kind.as_str() == "queue")
        .expect("queue")
        .clone();
    tag.public_key = scrip_spec::TokenSecretKey::generate()
        .expect("keygen")
        .public_key()
        .clone();
    tag.valid_from -= 1;
    offered.keys.push(tag);
    let app = axum::Router::new().route(
        "/v1/keys",
        axum::routing::get(move || {
            let offered = offered.clone();
            async move { axum::Json(offered) }
        }),
    );
    let fake = serve_front(app).await;
    let wallet = new_wallet(dir.path(), &c.ledger_url).await;
    let err = refused_opening(&wallet, &fake, &code, "tagging key refused").await;
    assert!(matches!(err, WalletError::UntrustedKey { .. }), "{err}");
    assert_eq!(
        credits_left(&wallet, &c.operators[0].issuer_url, &code).await,
        100,
        "nothing was charged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unanswered_opening_blocks_new_ones_so_restore_never_meets_a_gap() {
    let (dir, c, code) = setup().await;
    let real = c.operators[0].issuer_url.clone();
    // A front that passes the keys through but fails every opening with 503.
    let keys: serde_json::Value = reqwest::get(format!("{real}/v1/keys"))
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    let app = axum::Router::new()
        .route(
            "/v1/keys",
            axum::routing::get(move || {
                let keys = keys.clone();
                async move { axum::Json(keys) }
            }),
        )
        .route(
            "/v1/cards/open",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(
                        serde_json::json!({"error": {"code": "unavailable", "message": "down"}}),
                    ),
                )
            }),
        );
    let flaky = serve_front(app).await;

    let wallet = new_wallet(dir.path(), &c.ledger_url).await;
    let err = refused_opening(&wallet, &flaky, &code, "503").await;
    assert!(matches!(err, WalletError::IssuerRefused { .. }), "{err}");
    assert_eq!(
        wallet
            .store()
            .pending_openings(false)
            .await
            .expect("q")
            .len(),
        1,
        "kept for a retry"
    );
    let err = refused_opening(&wallet, &real, &code, "blocked").await;
    assert!(matches!(err, WalletError::OpeningPending { .. }), "{err}");
    assert_eq!(
        credits_left(&wallet, &real, &code).await,
        100,
        "nothing charged"
    );

    // Set aside (`wallet open --abandon`): new openings start at the next epoch, and a
    // restore crosses the gap the unrecorded opening left.
    let aside = wallet.set_aside_openings().await.expect("set aside");
    assert_eq!(aside.len(), 1);
    wallet
        .open_card(&real, &code, &[(kind("queue"), 2)], &|_, _| {})
        .await
        .expect("no longer blocked");
    let restored = Wallet::create(
        &dir.path().join("restored.db"),
        &c.ledger_url,
        Some(WalletSeed::from_backup_code(&wallet.backup_code()).expect("seed")),
    )
    .await
    .expect("wallet");
    assert_eq!(
        restored
            .restore(std::slice::from_ref(&real))
            .await
            .expect("restore"),
        2,
        "the tokens after the gap"
    );
}
