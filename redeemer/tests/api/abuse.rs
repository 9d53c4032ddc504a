//! Issue 17, the redeemer under abuse: repeated presentations of one token, grants that are
//! never deleted, floods from one source, consumes that a power cut could undo, and a store
//! that refuses writes while `/healthz` says all is well.

use crate::helpers::{Code, Sidecar, World, code, refusal, world};
use reqwest::StatusCode;
use scrip_redeemer::{Mode, RedeemRateLimit};
use scrip_testkit::{key_info, spent_total};
use serde_json::{Value, json};
use std::time::Duration;

const BATCHES: &str = "scrip_redeemer_ledger_batches_total";
const BATCHED: &str = "scrip_redeemer_ledger_batched_spends_total";

fn grant_of(body: &Value) -> String {
    body["grant"].as_str().expect("a grant").to_owned()
}

/// The attack of issue 17: one spent token presented 300 times to its own redeemer. It used
/// to get 300 grants, 300 rows and 300 signed ledger requests; now every presentation gets
/// the same grant, from one row, after one ledger request, and a burst of concurrent repeats
/// changes nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_presented_300_times_costs_one_grant_one_row_and_one_spend() {
    let w = world().await;
    let a = w.sidecar_of(0, Mode::Strict).await;
    let token = w.token();
    let mut grants = std::collections::BTreeSet::new();
    for i in 0..300 {
        let (status, body) = a.redeem(&token, "queue").await;
        assert_eq!(status, StatusCode::OK, "presentation {i}: {body}");
        grants.insert(grant_of(&body));
    }
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (http, body) = (a.http.clone(), redeem_body(&token));
            tokio::spawn(async move { http.post("/v1/redeem", &body).await })
        })
        .collect();
    for task in burst {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
        grants.insert(grant_of(&body));
    }
    assert_eq!(grants.len(), 1, "one grant code for one token");
    assert_eq!(a.redeemer.store().grant_rows().await.expect("rows"), 1);
    assert_eq!(a.metric(BATCHES).await, 1.0, "one signed spend request");
    assert_eq!(a.metric(BATCHED).await, 1.0);
    assert_eq!(spent_total(&w.ledger.url).await, 1);
    let m = a.metrics().await;
    assert!(
        m.contains(r#"scrip_redeemer_redemptions_total{result="granted"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"scrip_redeemer_redemptions_total{result="repeated"} 349"#));

    // The one grant works once; then the token is spent for good, still without the ledger.
    let grant = grants.pop_first().expect("the grant");
    assert_eq!(a.consume(&grant, "queue").await.0, StatusCode::OK);
    let (status, err) = a.redeem(&token, "queue").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, Code::AlreadySpent)
    );
    assert_eq!(err["error"]["first_spent_by"], "op-a");
    assert_eq!(a.metric(BATCHES).await, 1.0);
}

fn redeem_body(token: &scrip_spec::Token) -> Value {
    json!({"token": scrip_spec::encoding::b64_encode(token.to_bytes()), "kind": "queue"})
}

/// In optimistic mode a repeat is answered from the same row: the same grant, and the spend
/// queued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_repeats_get_the_same_grant_and_queue_one_spend() {
    let w = world().await;
    let a = w.sidecar_of(0, Mode::Optimistic).await;
    let token = w.token();
    let mut grants = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let (status, body) = a.redeem(&token, "queue").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        grants.insert(grant_of(&body));
    }
    assert_eq!(grants.len(), 1);
    assert!(
        a.redeemer
            .store()
            .pending_spends(100)
            .await
            .expect("pending")
            .len()
            <= 1,
        "one spend queued (or already flushed)"
    );
    a.redeemer.flush_pending().await.expect("flush");
    assert_eq!(spent_total(&w.ledger.url).await, 1);
    assert_eq!(a.metric(BATCHED).await, 1.0, "one nullifier sent");
    assert_eq!(a.redeemer.store().grant_rows().await.expect("rows"), 1);
}

/// A grant left to expire unused is replaced by the next one without a ledger request (a
/// wallet that lost its answer loses nothing); the replaced code is gone; once the grant is
/// used the token is refused locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_grant_is_replaced_without_the_ledger_and_a_used_one_is_final() {
    let w = world().await;
    let a = w.sidecar(w.config(0, Mode::Strict, 1)).await;
    let token = w.token();
    let (status, body) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = grant_of(&body);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        refusal(a.consume(&first, "queue").await),
        (StatusCode::GONE, Code::GrantExpired)
    );

    let (status, body) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = grant_of(&body);
    assert_ne!(first, second, "a fresh grant");
    let (_, again) = a.redeem(&token, "queue").await;
    assert_eq!(grant_of(&again), second, "and that one while it is unused");
    assert_eq!(
        refusal(a.consume(&first, "queue").await),
        (StatusCode::NOT_FOUND, Code::UnknownGrant),
        "the expired generation is replaced"
    );
    assert_eq!(a.consume(&second, "queue").await.0, StatusCode::OK);
    assert_eq!(
        refusal(a.redeem(&token, "queue").await),
        (StatusCode::CONFLICT, Code::AlreadySpent)
    );
    assert_eq!(a.metric(BATCHES).await, 1.0, "the ledger heard of it once");
    assert_eq!(a.redeemer.store().grant_rows().await.expect("rows"), 1);
    assert_eq!(
        a.metric(r#"scrip_redeemer_redemptions_total{result="regranted"}"#)
            .await,
        1.0
    );
}

async fn redeem_from(a: &Sidecar, client: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = a
        .http
        .client
        .post(format!("{}/v1/redeem", a.base))
        .json(body);
    if let Some(client) = client {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.expect("send")
}

/// `/v1/redeem` had no limit. Now each source gets `per_source` calls per window, then 429
/// `rate_limited` with `Retry-After`; a trusted proxy's clients are counted apart, an untrusted
/// peer cannot escape its count by naming other clients, and 0 turns the limit off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redemptions_are_limited_per_source() {
    let w = world().await;
    let limited = |trusted: bool| {
        let mut config = w.config(0, Mode::Strict, 300);
        config.rate_limit = RedeemRateLimit {
            per_source: Some(3),
            window_secs: 600,
            trusted_proxies: if trusted {
                vec!["127.0.0.1".parse().expect("ip")]
            } else {
                Vec::new()
            },
            ..RedeemRateLimit::default()
        };
        config
    };
    // Behind a trusted proxy (the relay, on loopback): per client.
    let a = w.sidecar(limited(true)).await;
    let body = redeem_body(&w.token());
    for _ in 0..3 {
        let resp = redeem_from(&a, Some("198.51.100.1"), &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = redeem_from(&a, Some("198.51.100.1"), &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=600).contains(&wait), "{wait}");
    let err: Value = resp.json().await.expect("a JSON error");
    assert_eq!(code(&err), Code::RateLimited, "{err}");
    // Other clients of the proxy, and the proxy itself, have counts of their own.
    let other = redeem_from(&a, Some("198.51.100.2"), &body).await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(redeem_from(&a, None, &body).await.status(), StatusCode::OK);
    assert_eq!(
        a.metric(r#"scrip_redeemer_redemptions_total{result="rate_limited"}"#)
            .await,
        1.0
    );

    // Not trusted: a peer naming a new client each time is still one source.
    let b = w.sidecar(limited(false)).await;
    for i in 0..3 {
        let resp = redeem_from(&b, Some(&format!("203.0.113.{i}")), &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = redeem_from(&b, Some("203.0.113.99"), &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    // Off.
    let mut config = w.config(1, Mode::Strict, 300);
    config.rate_limit = RedeemRateLimit::off();
    let c = w.sidecar(config).await;
    let body = redeem_body(&w.token());
    for _ in 0..20 {
        assert_eq!(redeem_from(&c, None, &body).await.status(), StatusCode::OK);
    }
}

/// Rows were never deleted. Now the sweep deletes the rows of tokens whose key is past its
/// `redeem_until` (such a token is refused before its row is read), keeps the others, and
/// until then a consumed token stays refused without a ledger request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_forgets_only_tokens_no_presentation_can_need() {
    let w = world().await;
    // A second queue key that stays redeemable for longer.
    let long_key = scrip_spec::TokenSecretKey::generate().expect("keygen");
    let long_info = key_info(long_key.public_key(), "op-a", "queue", 5);
    w.ledger.announce(&w.ops[0].1, long_info.clone()).await;
    let a = w.sidecar_of(0, Mode::Strict).await;

    let (used, unused, long) = (w.token(), w.token(), w.token_of(&long_key, &long_info));
    let mut grants = Vec::new();
    for t in [&used, &unused, &long] {
        let (status, body) = a.redeem(t, "queue").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        grants.push(grant_of(&body));
    }
    assert_eq!(a.consume(&grants[0], "queue").await.0, StatusCode::OK);
    assert_eq!(a.consume(&grants[2], "queue").await.0, StatusCode::OK);
    let store = a.redeemer.store();

    assert_eq!(
        a.redeemer.sweep().await.expect("sweep"),
        0,
        "every row is needed"
    );
    assert_eq!(store.grant_rows().await.expect("rows"), 3);
    let batches = a.metric(BATCHES).await;
    assert_eq!(
        refusal(a.redeem(&used, "queue").await),
        (StatusCode::CONFLICT, Code::AlreadySpent),
        "a consumed token is refused until its key's redeem_until"
    );
    assert_eq!(
        a.metric(BATCHES).await,
        batches,
        "from the row, not the ledger"
    );

    // As the sweep runs once the first key's redeem_until (and the clock-skew margin) passed.
    let after = w.info.redeem_until + scrip_spec::ledger::MAX_CLOCK_SKEW + 1;
    assert_eq!(
        a.redeemer.sweep_at(after - 2).await.expect("sweep"),
        0,
        "within the margin"
    );
    assert_eq!(a.redeemer.sweep_at(after).await.expect("sweep"), 2);
    assert_eq!(store.grant_rows().await.expect("rows"), 1);
    for t in [&used, &unused] {
        assert!(store.record(&t.nullifier()).await.expect("read").is_none());
    }
    assert!(
        store
            .record(&long.nullifier())
            .await
            .expect("read")
            .is_some()
    );
    assert_eq!(
        refusal(a.redeem(&long, "queue").await),
        (StatusCode::CONFLICT, Code::AlreadySpent)
    );
    assert_eq!(a.metric("scrip_redeemer_grants_swept_total").await, 2.0);
}

/// A consume is committed at synchronous=FULL (on disk before the relay hears 200), while
/// the store otherwise runs at NORMAL in strict mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumes_run_on_connections_that_fsync_each_commit() {
    let w = world().await;
    let a = w.sidecar_of(0, Mode::Strict).await;
    let (_, body) = a.redeem(&w.token(), "queue").await;
    assert_eq!(a.consume(&grant_of(&body), "queue").await.0, StatusCode::OK);
    assert_eq!(
        a.redeemer
            .store()
            .consume_synchronous()
            .await
            .expect("pragma"),
        2,
        "FULL"
    );
}

/// `/healthz` ran `SELECT 1`, which a store that refuses every write still answers. Here
/// another process holds the database's write lock: `/healthz` answers 503 with
/// `"store": false` (once the lock wait gives up), and 200 again once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_is_unavailable_while_the_store_refuses_writes() {
    use sqlx::Connection as _;
    let w: World = world().await;
    let config = w.config(0, Mode::Strict, 300);
    let a = w.sidecar(config.clone()).await;
    assert_eq!(a.http.get("/healthz").await.0, StatusCode::OK);

    let mut other = sqlx::SqliteConnection::connect(&config.database)
        .await
        .expect("open");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("lock");
    let (status, health) = a.http.get("/healthz").await;
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("unlock");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["checks"]["store"], false);
    assert_eq!(health["checks"]["ledger"], true);
    assert_eq!(a.http.get("/healthz").await.0, StatusCode::OK);
}

/// The same with a full disk: the sidecar's database on a small tmpfs, filled up. Reads
/// still answer; `/healthz` reports the store unavailable until there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root for mount -t tmpfs; CI runs it with --ignored"]
async fn healthz_is_unavailable_while_the_disk_is_full() {
    let w: World = world().await;
    let tmpfs = scrip_testkit::Tmpfs::mount(&w.dir.path().join("small-disk"), "4M");
    let home = tmpfs.dir().to_owned();
    let mut config = w.config(0, Mode::Strict, 300);
    config.database = format!("sqlite://{}", home.join("redeemer.db").display());
    let a = w.sidecar(config).await;
    assert_eq!(a.http.get("/healthz").await.0, StatusCode::OK);

    let filler = tmpfs.fill("filler");
    let (status, health) = a.http.get("/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["checks"]["store"], false);
    std::fs::remove_file(&filler).expect("make room");
    assert_eq!(a.http.get("/healthz").await.0, StatusCode::OK);
}
