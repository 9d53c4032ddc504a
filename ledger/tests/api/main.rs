//! The ledger's HTTP API on a real loopback server: every route, and bad input of every
//! kind, each answered with the right status and leaving the log unchanged.

use reqwest::StatusCode;
use scrip_ledger::local::member;
use scrip_spec::api::ledger::LedgerErrorCode as Code;
use scrip_spec::api::ledger::{Receipt, SpendStatus};
use scrip_spec::ledger::{Action, LedgerRequest, Role, SpendGroup};
use scrip_spec::now;
use scrip_spec::{OperatorKey, Token, TokenKeyInfo, TokenSecretKey};
use scrip_testkit::{Http, TestDb, TestLedger, key_info};
use serde_json::{Value, json};

struct TestApp {
    ledger: TestLedger,
    http: Http,
    redeemer: OperatorKey,
    key: TokenKeyInfo,
    secret: TokenSecretKey,
}

/// A ledger with an issuer and a redeemer (`relay`), and one `queue` key announced.
async fn spawn_app() -> TestApp {
    let (issuer, redeemer) = (OperatorKey::generate(), OperatorKey::generate());
    let operators = vec![
        member("issuer", &issuer, &[Role::Issuer]),
        member("relay", &redeemer, &[Role::Redeemer]),
    ];
    let ledger = TestLedger::start(TestDb::sqlite(), "api test", operators).await;
    let secret = TokenSecretKey::generate().expect("keygen");
    let key = key_info(secret.public_key(), "issuer", "queue", 1);
    ledger.announce(&issuer, key.clone()).await;
    TestApp {
        http: Http::new(&ledger.url),
        ledger,
        redeemer,
        key,
        secret,
    }
}

impl TestApp {
    /// `n` valid tokens of the announced key.
    fn tokens(&self, n: usize) -> Vec<Token> {
        scrip_testkit::mint_tokens(&self.secret, "issuer", n)
    }

    /// A signed spend of `tokens`, all listed under the announced key.
    fn spend(&self, tokens: Vec<Token>) -> Value {
        let action = Action::Spend {
            groups: vec![SpendGroup {
                token_key_id: self.key.public_key.id(),
                tokens,
            }],
        };
        serde_json::to_value(self.redeemer.sign(LedgerRequest::new(
            self.ledger.ledger_id,
            now(),
            action,
        )))
        .expect("json")
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.http.post(path, body).await
    }

    /// POSTs `body`: the status and the error code.
    async fn refusal(&self, path: &str, body: &impl serde::Serialize) -> (StatusCode, Code) {
        let (status, body) = self.http.post(path, body).await;
        (status, error_code(&body))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.http.get(path).await
    }

    async fn metrics(&self) -> String {
        self.http.text("/metrics").await
    }

    async fn head_seq(&self) -> u64 {
        self.get("/v1/info").await.1["head_seq"]
            .as_u64()
            .expect("head_seq")
    }
}

fn error_code(body: &Value) -> Code {
    scrip_testkit::error_code(body).unwrap_or(Code::Unknown)
}

#[tokio::test]
async fn spend_then_double_spend_then_lookup() {
    let app = spawn_app().await;
    let t = app.tokens(3);
    let (status, body) = app
        .post("/v1/entries", &app.spend(vec![t[0].clone(), t[1].clone()]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spends"][0]["status"], "accepted");
    let (status, body) = app
        .post("/v1/entries", &app.spend(vec![t[0].clone()]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["seq"], Value::Null, "nothing appended");
    let receipt: Receipt = serde_json::from_value(body.clone()).expect("a receipt");
    assert!(
        matches!(
            &receipt.spends[0].status,
            SpendStatus::AlreadySpent { first_spent_by, .. } if first_spent_by == "relay"
        ),
        "{body}"
    );

    let n = scrip_spec::encoding::b64_encode(t[0].nullifier().0);
    let (status, body) = app.get(&format!("/v1/nullifiers/{n}")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("spent"))
    );
    let n = scrip_spec::encoding::b64_encode(t[2].nullifier().0);
    assert_eq!(
        app.get(&format!("/v1/nullifiers/{n}")).await.1["status"],
        "unspent"
    );
    let (status, body) = app.get("/v1/nullifiers/not-base64!").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, Code::MalformedNullifier)
    );

    let (status, body) = app.get("/v1/keys?issuer=issuer&kind=queue").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.get("/v1/keys?kind=Bad%20Kind").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/v1/keys?colour=red").await.0,
        StatusCode::BAD_REQUEST
    );

    let (status, body) = app.get("/v1/log?from=0&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["next"], 2);
    let (_, totals) = app.get("/v1/totals").await;
    assert_eq!(totals["keys"][0]["spent"], 2);
    assert_eq!(app.get("/v1/checkpoint").await.0, StatusCode::NOT_FOUND);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"scrip_ledger_nullifiers_total{result="accepted"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"scrip_ledger_nullifiers_total{result="refused"} 1"#));
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/nope").await.0, StatusCode::NOT_FOUND);
    let (status, body) = app.get("/v1/log?from=abc").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, Code::MalformedQuery)
    );
    assert_eq!(
        app.get("/v1/log?from=0&limit=-1").await.0,
        StatusCode::BAD_REQUEST
    );

    // Cosignatures: garbage, a stranger's, and one of a checkpoint that does not exist.
    let cosign = "/v1/checkpoint/cosign";
    assert_eq!(
        app.refusal(cosign, &json!({"signer": "x"})).await,
        (StatusCode::BAD_REQUEST, Code::MalformedRequest)
    );
    let fake = scrip_spec::ledger::Checkpoint {
        ledger_id: app.ledger.ledger_id,
        seq: 1,
        head_hash: scrip_spec::ledger::Hash32([0; 32]),
        totals_digest: scrip_spec::ledger::Hash32([0; 32]),
        created_at: now(),
    };
    let stranger = OperatorKey::generate().sign(scrip_spec::ledger::Cosignature {
        checkpoint: fake.clone(),
    });
    let unknown = app.refusal(cosign, &stranger).await;
    assert_eq!(unknown, (StatusCode::UNAUTHORIZED, Code::UnknownOperator));
    let member = app
        .redeemer
        .sign(scrip_spec::ledger::Cosignature { checkpoint: fake });
    let invalid = app.refusal(cosign, &member).await;
    assert_eq!(
        invalid,
        (StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidRequest)
    );
    let mut forged = serde_json::to_value(&member).expect("json");
    forged["payload"]["checkpoint"]["seq"] = json!(2);
    let forged = app.refusal(cosign, &forged).await;
    assert_eq!(forged, (StatusCode::UNAUTHORIZED, Code::BadSignature));
    let (status, body) = app.get("/v1/entries").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, Code::MethodNotAllowed)
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let app = spawn_app().await;
    let head = app.head_seq().await;
    let url = format!("{}/v1/entries", app.http.base);

    // Not JSON, JSON of the wrong shape, wrong content type, an unknown field.
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, Code)> = vec![
        (
            app.http
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            Code::MalformedRequest,
        ),
        (
            app.http.client.post(&url).json(&json!({"signer": 5})),
            StatusCode::BAD_REQUEST,
            Code::MalformedRequest,
        ),
        (
            app.http.client.post(&url).body("hello"),
            StatusCode::BAD_REQUEST,
            Code::MalformedRequest,
        ),
        (
            app.http
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe, 0x00]),
            StatusCode::BAD_REQUEST,
            Code::MalformedRequest,
        ),
        (
            // A client of its own: the refused connection must not return to the shared pool.
            reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .body(vec![b'['; scrip_ledger::http::MAX_BODY_BYTES + 1]),
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::BodyTooLarge,
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), status, "case {i}");
        let body: Value = resp.json().await.expect("JSON error body");
        assert_eq!(error_code(&body), code, "case {i}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let token = app.tokens(1).remove(0);
    let mut extra = app.spend(vec![token.clone()]);
    extra["payload"]["extra"] = json!(1);
    assert_eq!(
        app.post("/v1/entries", &extra).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut bad_b64 = app.spend(vec![token.clone()]);
    bad_b64["signature"] = json!("!!!");
    assert_eq!(
        app.post("/v1/entries", &bad_b64).await.0,
        StatusCode::BAD_REQUEST
    );

    // Forged, replayed, unknown signer, other ledger.
    let mut forged = app.spend(vec![token.clone()]);
    forged["payload"]["timestamp"] = json!(now() + 1);
    let (status, body) = app.post("/v1/entries", &forged).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, Code::BadSignature)
    );
    let outsider = OperatorKey::generate();
    let action = Action::Spend { groups: vec![] };
    let unknown = serde_json::to_value(outsider.sign(LedgerRequest::new(
        app.ledger.ledger_id,
        now(),
        action.clone(),
    )))
    .expect("json");
    let (status, body) = app.post("/v1/entries", &unknown).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, Code::UnknownOperator)
    );
    let other = serde_json::to_value(app.redeemer.sign(LedgerRequest::new(
        scrip_spec::ledger::Hash32([1; 32]),
        now(),
        action,
    )))
    .expect("json");
    let (status, body) = app.post("/v1/entries", &other).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, Code::WrongLedger)
    );
    let big = vec![token.clone(); 10_001];
    let (status, body) = app.post("/v1/entries", &app.spend(big)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, Code::BatchTooLarge)
    );

    // Tokens the redeemer does not hold: invented (random bytes of the right shape), one bit
    // of a real signature flipped, a real token of another key listed under this one. Each
    // refuses the whole request, with the real token beside it left unspent.
    let mut invented = token.clone();
    rand::fill(&mut invented.nonce);
    rand::fill(&mut invented.authenticator[..]);
    let mut flipped = token.clone();
    flipped.authenticator[200] ^= 0x01;
    let other_key = TokenSecretKey::generate().expect("keygen");
    let foreign = scrip_testkit::mint_tokens(&other_key, "issuer", 1).remove(0);
    for (i, bad) in [invented, flipped, foreign].into_iter().enumerate() {
        let (status, body) = app
            .post("/v1/entries", &app.spend(vec![token.clone(), bad]))
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, Code::InvalidToken),
            "case {i}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("token 1")),
            "the message names the token: {body}"
        );
    }
    let (_, status) = app
        .get(&format!(
            "/v1/nullifiers/{}",
            scrip_spec::encoding::b64_encode(token.nullifier().0)
        ))
        .await;
    assert_eq!(status["status"], "unspent");
    assert_eq!(app.head_seq().await, head, "no bad request changed the log");

    let good = app.spend(vec![token]);
    assert_eq!(app.post("/v1/entries", &good).await.0, StatusCode::OK);
    let (status, body) = app.post("/v1/entries", &good).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, Code::ReplayedRequest)
    );
    assert_eq!(app.head_seq().await, head + 1);
}

#[tokio::test]
async fn metrics_time_each_route_and_count_outcomes_by_result() {
    let app = spawn_app().await;
    let token = app.tokens(1).remove(0);
    let spend = app.spend(vec![token.clone(), token]);
    assert_eq!(app.post("/v1/entries", &spend).await.0, StatusCode::OK);
    assert_eq!(app.get("/v1/nope").await.0, StatusCode::NOT_FOUND);
    let m = scrip_common::metrics::Scrape::new("ledger", app.metrics().await);
    let timed = [
        ("/v1/entries", "POST", "2xx", 1),
        ("unmatched", "GET", "4xx", 1),
    ];
    let values = [
        (r#"scrip_ledger_requests_total{result="accepted"}"#, 1.0),
        (r#"scrip_ledger_requests_total{result="refused"}"#, 0.0),
        (r#"scrip_ledger_nullifiers_total{result="accepted"}"#, 1.0),
        (r#"scrip_ledger_nullifiers_total{result="refused"}"#, 1.0),
        // The key announcement (submitted directly) and the spend.
        ("scrip_ledger_writer_wait_seconds_count", 2.0),
        ("scrip_ledger_store_commit_seconds_count", 2.0),
        ("scrip_ledger_request_seconds_count", 2.0),
        // Only the spend carries tokens.
        ("scrip_ledger_token_verification_seconds_count", 1.0),
        ("scrip_ledger_head_seq", 2.0),
    ];
    m.check(&timed, &values, env!("CARGO_PKG_VERSION"))
        .unwrap_or_else(|e| panic!("{e}"));
}
