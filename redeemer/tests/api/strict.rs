use crate::helpers::{Code, Sidecar, World, code, refusal, world};
use reqwest::StatusCode;
use scrip_redeemer::Mode;
use scrip_testkit::spent_total;
use serde_json::json;

/// A world and op-a's strict sidecar.
async fn strict_world() -> (World, Sidecar) {
    let w = world().await;
    let a = w.sidecar_of(0, Mode::Strict).await;
    (w, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeem_consume_and_every_refusal() {
    let (w, a) = strict_world().await;
    let token = w.token();

    let (status, body) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grant = body["grant"].as_str().expect("grant").to_owned();
    assert!(grant.len() <= 64 && grant.starts_with("sg1.queue."));
    assert_eq!(body["kind"], "queue");

    // A grant for another kind is refused and not consumed.
    assert_eq!(
        refusal(a.consume(&grant, "chunk-1m").await),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::WrongKind)
    );
    assert_eq!(a.consume(&grant, "queue").await.0, StatusCode::OK);
    assert_eq!(
        refusal(a.consume(&grant, "queue").await),
        (StatusCode::CONFLICT, Code::GrantUsed)
    );
    assert_eq!(
        refusal(a.consume("sg1.queue.AAAAAAAAAAAAAAAAAAAAAA", "queue").await),
        (StatusCode::NOT_FOUND, Code::UnknownGrant)
    );
    assert_eq!(
        refusal(a.consume("hunter2", "queue").await),
        (StatusCode::BAD_REQUEST, Code::MalformedGrant)
    );

    // The token is spent: at this operator and at the other.
    let (status, err) = a.redeem(&token, "queue").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, Code::AlreadySpent)
    );
    assert_eq!(err["error"]["first_spent_by"], "op-a");
    let b = w.sidecar_of(1, Mode::Strict).await;
    let (status, err) = b.redeem(&token, "queue").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, Code::AlreadySpent)
    );
    assert_eq!(err["error"]["first_spent_by"], "op-a");
    assert!(err["error"]["first_spent_at"].as_u64().is_some());

    // Local checks.
    let fresh = w.token();
    assert_eq!(
        refusal(a.redeem(&fresh, "chunk-1m").await),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::WrongKind)
    );
    let mut forged = fresh.clone();
    forged.authenticator[7] ^= 1;
    assert_eq!(
        refusal(a.redeem(&forged, "queue").await),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidSignature)
    );
    let mut other_challenge = fresh.clone();
    other_challenge.challenge_digest = scrip_spec::TokenChallenge::for_issuer("op-b")
        .expect("c")
        .digest();
    assert_eq!(
        refusal(a.redeem(&other_challenge, "queue").await),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::WrongChallenge)
    );
    let mut unknown = fresh.clone();
    unknown.token_key_id = scrip_spec::TokenKeyId([5; 32]);
    assert_eq!(
        refusal(a.redeem(&unknown, "queue").await),
        (StatusCode::UNPROCESSABLE_ENTITY, Code::UnknownKey)
    );

    // Malformed input.
    for (body, expected) in [
        (
            json!({"token": "!!", "kind": "queue"}),
            Code::MalformedToken,
        ),
        (
            json!({"token": "AAIA", "kind": "queue"}),
            Code::MalformedToken,
        ),
        (
            json!({"token": scrip_spec::encoding::b64_encode(fresh.to_bytes()), "kind": "Queue!"}),
            Code::MalformedRequest,
        ),
        (json!({"token": 5, "kind": "queue"}), Code::MalformedRequest),
        (
            json!({"token": "x", "kind": "queue", "extra": 1}),
            Code::MalformedRequest,
        ),
    ] {
        let (status, err) = a.post("/v1/redeem", &body).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, expected),
            "{body}"
        );
    }
    let big = json!({"token": "A".repeat(5000), "kind": "queue"});
    assert_eq!(
        refusal(a.post("/v1/redeem", &big).await),
        (StatusCode::PAYLOAD_TOO_LARGE, Code::BodyTooLarge)
    );

    // None of the refusals spent the fresh token.
    assert_eq!(a.redeem(&fresh, "queue").await.0, StatusCode::OK);
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("scrip_redeemer_redemptions_total{result=\"granted\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("scrip_redeemer_grants_consumed_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_expire_and_survive_a_restart() {
    let w = world().await;
    let short = w.sidecar(w.config(0, Mode::Strict, 0)).await;
    let (_, body) = short.redeem(&w.token(), "queue").await;
    let expired = body["grant"].as_str().expect("grant").to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, err) = short.consume(&expired, "queue").await;
    assert_eq!((status, code(&err)), (StatusCode::GONE, Code::GrantExpired));

    let mut config = w.config(1, Mode::Strict, 300);
    let first = w.sidecar(config.clone()).await;
    let (_, body) = first.redeem(&w.token(), "queue").await;
    let grant = body["grant"].as_str().expect("grant").to_owned();
    // A second sidecar process on the same database (as after a restart) honours the grant.
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let restarted = w.sidecar(config).await;
    assert_eq!(restarted.consume(&grant, "queue").await.0, StatusCode::OK);
    assert_eq!(first.consume(&grant, "queue").await.0, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_gets_the_same_grant_again() {
    let (w, a) = strict_world().await;
    let token = w.token();
    let (_, first) = a.redeem(&token, "queue").await;
    let g1 = first["grant"].as_str().expect("grant").to_owned();
    // The wallet never saw g1 and presents the token again: g1 again, the only live grant.
    let (status, second) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["grant"].as_str(), Some(g1.as_str()));
    assert_eq!(second["expires_at"], first["expires_at"]);
    assert_eq!(a.consume(&g1, "queue").await.0, StatusCode::OK);
    // Once it is used, the token is spent for good.
    assert_eq!(a.redeem(&token, "queue").await.0, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_down_fails_closed_and_the_token_stays_spendable() {
    let mut w = world().await;
    let a = w.sidecar_of(0, Mode::Strict).await;
    let token = w.token();
    w.stop_ledger();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        refusal(a.redeem(&token, "queue").await),
        (StatusCode::SERVICE_UNAVAILABLE, Code::LedgerUnavailable)
    );
    assert_eq!(
        a.http.get("/healthz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    w.restart_ledger().await;
    let (status, body) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "the token was not burnt: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_are_batched() {
    let (w, a) = strict_world().await;
    let tokens: Vec<_> = (0..200).map(|_| w.token()).collect();
    let mut tasks = Vec::new();
    for t in tokens {
        let client = a.http.client.clone();
        let url = format!("{}/v1/redeem", a.base);
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"token": scrip_spec::encoding::b64_encode(t.to_bytes()), "kind": "queue"});
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("send")
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    let metrics = a.metrics().await;
    let batches: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("scrip_redeemer_ledger_batches_total "))
        .and_then(|v| v.parse().ok())
        .expect("batches metric");
    assert!(
        batches < 200,
        "200 spends went out in {batches} ledger requests"
    );
    assert_eq!(spent_total(&w.ledger.url).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_of_a_mixed_batch_reach_the_right_tokens() {
    let w = world().await;
    let mut config = w.config(0, Mode::Strict, 300);
    config.batch_wait_ms = 300;
    let a = w.sidecar(config).await;
    let b = w.sidecar_of(1, Mode::Strict).await;
    let spent_chunk = w.chunk_token();
    assert_eq!(b.redeem(&spent_chunk, "chunk-256k").await.0, StatusCode::OK);
    // Queue, chunk, queue in one batch of two keys (interleaved): each gets its own answer.
    for _ in 0..3 {
        let (q1, q2) = (w.token(), w.token());
        let later = |ms| tokio::time::sleep(std::time::Duration::from_millis(ms));
        let (r1, r2, r3) = tokio::join!(
            a.redeem(&q1, "queue"),
            async {
                later(20).await;
                a.redeem(&spent_chunk, "chunk-256k").await
            },
            async {
                later(40).await;
                a.redeem(&q2, "queue").await
            }
        );
        assert_eq!(r1.0, StatusCode::OK, "first fresh token granted: {}", r1.1);
        assert_eq!(
            (r2.0, code(&r2.1)),
            (StatusCode::CONFLICT, Code::AlreadySpent)
        );
        assert_eq!(r2.1["error"]["first_spent_by"], "op-b");
        assert_eq!(r3.0, StatusCode::OK, "second fresh token granted: {}", r3.1);
    }
    assert!(
        a.metrics()
            .await
            .contains("scrip_redeemer_ledger_batch_max 3"),
        "one batch of three"
    );
}

/// A TCP proxy in front of the ledger that holds every byte sent to it until `hold_until`:
/// a ledger slow to answer, as the redeemer sees it.
async fn slow_ledger_proxy(
    ledger_base: &str,
    hold_until: std::sync::Arc<std::sync::Mutex<tokio::time::Instant>>,
) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let target: std::net::SocketAddr = ledger_base
        .trim_start_matches("http://")
        .parse()
        .expect("ledger address");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let hold_until = hold_until.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_ledger, mut to_ledger) = outbound.into_split();
                let upstream = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from_client.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let until = *hold_until.lock().expect("lock");
                        tokio::time::sleep_until(until).await;
                        if to_ledger.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_ledger.shutdown().await;
                };
                let downstream = async move {
                    let _ = tokio::io::copy(&mut from_ledger, &mut to_client).await;
                };
                tokio::join!(upstream, downstream);
            });
        }
    });
    format!("http://{addr}")
}

/// With no batch window, a spend goes to the ledger at once; while it is out, later spends
/// wait for it and go together in the next request instead of one request each (which queued
/// at the ledger's writer behind one another: BENCHMARKS.md, issue 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spends_arriving_while_one_is_at_the_ledger_go_out_together() {
    let w = world().await;
    let hold_until = std::sync::Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let mut config = w.config(0, Mode::Strict, 300);
    config.batch_wait_ms = 0;
    config.ledger_url = slow_ledger_proxy(&w.ledger.url, hold_until.clone()).await;
    let a = std::sync::Arc::new(w.sidecar(config).await);
    *hold_until.lock().expect("lock") =
        tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let (a, token) = (a.clone(), w.token());
        // The first at once; the others one by one, well apart, within its slot's hold.
        let delay = if i == 0 { 0 } else { 100 + 30 * i };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            a.redeem(&token, "queue").await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(
        a.metric("scrip_redeemer_ledger_batches_total").await,
        2.0,
        "the first spend, then the five that came while it was out"
    );
    assert_eq!(a.metric("scrip_redeemer_ledger_batch_max").await, 5.0);
    assert_eq!(spent_total(&w.ledger.url).await, 6);
}

/// A ledger that answers only after the redeemer's 5 s timeout: the spend that timed out still
/// lands, and the redeemer's retry learns that it spent the token itself. The wallet gets a
/// grant, the nullifier is spent exactly once, and presenting the token again gets the same
/// grant until it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_slow_to_answer_spends_once_and_the_token_gets_its_grant() {
    let w = world().await;
    let hold_until = std::sync::Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let mut config = w.config(0, Mode::Strict, 300);
    config.ledger_url = slow_ledger_proxy(&w.ledger.url, hold_until.clone()).await;
    let a = w.sidecar(config).await;
    let token = w.token();

    *hold_until.lock().expect("lock") =
        tokio::time::Instant::now() + std::time::Duration::from_secs(7);
    let started = std::time::Instant::now();
    let (status, body) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "the answer waited for the slow ledger"
    );
    let first = body["grant"].as_str().expect("grant").to_owned();

    let nullifier = scrip_spec::encoding::b64_encode(token.nullifier().0);
    let status: serde_json::Value =
        reqwest::get(format!("{}/v1/nullifiers/{nullifier}", w.ledger.url))
            .await
            .expect("lookup")
            .json()
            .await
            .expect("json");
    assert_eq!(status["status"], "spent");
    assert_eq!(status["spent_by"], "op-a");
    let spent = spent_total(&w.ledger.url).await;
    assert_eq!(
        spent, 1,
        "one spend, though two requests reached the ledger"
    );

    let (status, again) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["grant"].as_str(), Some(first.as_str()));
    assert_eq!(a.consume(&first, "queue").await.0, StatusCode::OK);
    assert_eq!(a.redeem(&token, "queue").await.0, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_time_each_route_and_count_redemptions_by_result() {
    let w = world().await;
    let a = w.sidecar(w.config(0, Mode::Strict, 300)).await;
    let (status, body) = a.redeem(&w.token(), "queue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grant = body["grant"].as_str().expect("grant").to_owned();
    assert_eq!(a.consume(&grant, "queue").await.0, StatusCode::OK);
    let (status, _) = a.redeem(&w.token(), "chunk-1m").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let m = scrip_common::metrics::Scrape::new("redeemer", a.metrics().await);
    let redeem = "/v1/redeem";
    let timed = [(redeem, "POST", "2xx", 1), (redeem, "POST", "4xx", 1)];
    let values = [
        (r#"scrip_redeemer_redemptions_total{result="granted"}"#, 1.0),
        (r#"scrip_redeemer_redemptions_total{result="invalid"}"#, 1.0),
        (
            r#"scrip_redeemer_redemptions_total{result="unavailable"}"#,
            0.0,
        ),
        ("scrip_redeemer_grants_consumed_total", 1.0),
        // One spend, in one batch, waited for at the ledger; one grant committed.
        ("scrip_redeemer_ledger_batches_total", 1.0),
        ("scrip_redeemer_ledger_wait_seconds_count", 1.0),
        ("scrip_redeemer_spend_wait_seconds_count", 1.0),
        ("scrip_redeemer_grant_commit_seconds_count", 1.0),
    ];
    m.check(&timed, &values, env!("CARGO_PKG_VERSION"))
        .unwrap_or_else(|e| panic!("{e}"));
    let longest = m.value("scrip_redeemer_ledger_wait_seconds_max");
    assert!(longest.is_some_and(|s| s > 0.0), "{m}");
    assert!(!m.to_string().contains(&grant), "no grant in the metrics");
}
