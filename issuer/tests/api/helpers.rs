//! Spawns a ledger and an issuer on port 0 with fresh databases.

use reqwest::StatusCode;
use scrip_issuer::config::RateLimitConfig;
use scrip_issuer::{Issuer, IssuerConfig};
use scrip_ledger::local::member;
pub use scrip_spec::api::issuer::IssuerErrorCode as Code;
use scrip_spec::api::issuer::{KeyedTokenRequest, OpenRequest, RequestId};
use scrip_spec::ledger::Role;
use scrip_spec::{
    OperatorKey, PendingToken, Token, TokenChallenge, TokenKeyInfo, WalletSeed, blind, finalize,
};
use scrip_testkit::services::spawn_issuer;
use scrip_testkit::{Http, TestDb, TestLedger};
use serde_json::Value;
use std::sync::Arc;

pub struct TestIssuer {
    pub base: String,
    pub ledger: TestLedger,
    pub issuer: Arc<Issuer>,
    pub http: Http,
    pub dir: tempfile::TempDir,
}

/// A ledger with the one operator `op-a` (issuer, redeemer), and op-a's issuer with keys.
pub async fn spawn(rate_limit: RateLimitConfig) -> TestIssuer {
    spawn_with_database(rate_limit, None).await
}

/// [`spawn`] with the issuer talking to its ledger through a fault proxy.
pub async fn spawn_behind_ledger_proxy() -> (TestIssuer, scrip_testkit::FaultProxy) {
    let proxy = std::sync::Arc::new(tokio::sync::Mutex::new(None));
    let slot = proxy.clone();
    let t = spawn_configured(default_limits(), None, move |ledger_url| {
        let slot = slot.clone();
        Box::pin(async move {
            let p = scrip_testkit::FaultProxy::start(&ledger_url).await;
            let url = p.url();
            *slot.lock().await = Some(p);
            url
        })
    })
    .await;
    let p = proxy.lock().await.take().expect("proxy started");
    (t, p)
}

/// [`spawn`] with the issuer's database in `database_dir` (else in the test's directory).
pub async fn spawn_with_database(
    rate_limit: RateLimitConfig,
    database_dir: Option<&std::path::Path>,
) -> TestIssuer {
    spawn_configured(rate_limit, database_dir, |url| Box::pin(async move { url })).await
}

type UrlFuture = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// [`spawn_with_database`], with `ledger_url` choosing the URL the issuer is given for the
/// ledger's.
async fn spawn_configured(
    rate_limit: RateLimitConfig,
    database_dir: Option<&std::path::Path>,
    ledger_url: impl FnOnce(String) -> UrlFuture,
) -> TestIssuer {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = database_dir.unwrap_or(dir.path()).join("issuer.db");
    let op = OperatorKey::generate();
    std::fs::write(dir.path().join("op.key"), op.to_text().as_bytes()).expect("key");
    let operators = vec![member("op-a", &op, &[Role::Issuer, Role::Redeemer])];
    let ledger = TestLedger::start(TestDb::sqlite(), "issuer test", operators).await;
    let config = IssuerConfig {
        name: "op-a".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        database: format!("sqlite://{}", database.display()),
        operator_key_file: dir.path().join("op.key"),
        keys_dir: dir.path().join("keys"),
        ledger_url: ledger_url(ledger.url.clone()).await,
        issue_days: 7,
        redeem_days: 13,
        forget_days: 7,
        report_secs: 3600,
        ledger_wait_secs: 300,
        rate_limit,
    };
    let (base, issuer) = spawn_issuer(config).await;
    issuer.rotate_keys().await.expect("rotate keys");
    TestIssuer {
        http: Http::new(&base),
        base,
        ledger,
        issuer,
        dir,
    }
}

/// Limits no test reaches unless it means to.
pub fn default_limits() -> RateLimitConfig {
    RateLimitConfig {
        window_secs: 3600,
        per_source: 1000,
        per_card: 1000,
        unknown_code_ceiling: 100_000,
        ..RateLimitConfig::default()
    }
}

/// `limits` behind a trusted proxy on loopback: each test source is an `X-Forwarded-For`.
pub fn behind_proxy(limits: RateLimitConfig) -> RateLimitConfig {
    RateLimitConfig {
        trusted_proxies: vec!["127.0.0.1".parse().expect("address")],
        ..limits
    }
}

/// An answer: the status, the `Retry-After` header and the JSON body.
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> Code {
        code(&self.body)
    }
}

/// A wallet's side of an opening: blinded requests for `kinds` from counter `first`.
pub struct Opening {
    pub request: OpenRequest,
    pub pending: Vec<PendingToken>,
    pub keys: Vec<TokenKeyInfo>,
}

impl TestIssuer {
    pub async fn key(&self, kind: &str) -> TokenKeyInfo {
        self.issuer
            .public_keys()
            .keys
            .into_iter()
            .find(|k| k.kind.as_str() == kind)
            .expect("a key of this kind")
    }

    /// Mints and activates `count` cards of `value`; returns their printed codes.
    pub async fn cards(&self, value: u64, count: usize) -> Vec<String> {
        let (batch, codes) = self.issuer.mint_cards(value, count).await.expect("mint");
        assert!(self.issuer.activate_batch(&batch).await.expect("activate"));
        codes.iter().map(ToString::to_string).collect()
    }

    pub async fn opening(
        &self,
        seed: &WalletSeed,
        first: u64,
        code: &str,
        kinds: &[&str],
    ) -> Opening {
        let challenge = TokenChallenge::for_issuer("op-a").expect("challenge");
        let mut requests = Vec::new();
        let mut pending = Vec::new();
        let mut keys = Vec::new();
        for (j, kind) in kinds.iter().enumerate() {
            let key = self.key(kind).await;
            let (req, p) =
                blind(seed, first + j as u64, &key.public_key, &challenge).expect("blind");
            requests.push(KeyedTokenRequest {
                token_key_id: key.public_key.id(),
                token_request: req,
            });
            pending.push(p);
            keys.push(key);
        }
        let mut id = [0u8; 32];
        rand::fill(&mut id);
        Opening {
            request: OpenRequest {
                card_code: code.into(),
                request_id: RequestId(id),
                requests,
            },
            pending,
            keys,
        }
    }

    /// POSTs `body`: the status and the error code.
    pub async fn refusal(&self, path: &str, body: &impl serde::Serialize) -> (StatusCode, Code) {
        let (status, body) = self.post(path, body).await;
        (status, code(&body))
    }

    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> (StatusCode, Value) {
        self.http.post(path, body).await
    }

    /// POSTs `body` with `X-Forwarded-For: source`.
    pub async fn post_from(
        &self,
        source: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Answer {
        let resp = self
            .http
            .client
            .post(format!("{}{path}", self.base))
            .header("x-forwarded-for", source)
            .json(body)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = resp.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            retry_after,
            body,
        }
    }

    pub async fn metrics(&self) -> String {
        self.http.text("/metrics").await
    }
}

/// Finalizes the responses of an opening into tokens (each checked by `finalize`).
pub fn tokens(opening: &Opening, body: &Value) -> Vec<Token> {
    let responses: Vec<scrip_spec::TokenResponse> =
        serde_json::from_value(body["responses"].clone()).expect("responses");
    assert_eq!(responses.len(), opening.pending.len());
    opening
        .pending
        .iter()
        .zip(&responses)
        .zip(&opening.keys)
        .map(|((p, r), k)| finalize(&k.public_key, p, r).expect("a valid signature"))
        .collect()
}

/// The error code of an error answer (`Unknown` if there is none).
pub fn code(body: &Value) -> Code {
    scrip_testkit::error_code(body).unwrap_or(Code::Unknown)
}

/// A wallet's side of a refresh: `tokens` given in for blinded requests of `kinds` from
/// counter `first`.
pub struct Refresh {
    pub request: scrip_spec::api::issuer::RefreshRequest,
    pub opening: Opening,
}

impl TestIssuer {
    pub async fn refresh(
        &self,
        seed: &WalletSeed,
        first: u64,
        tokens: Vec<Token>,
        kinds: &[&str],
    ) -> Refresh {
        let opening = self.opening(seed, first, "unused", kinds).await;
        Refresh {
            request: scrip_spec::api::issuer::RefreshRequest {
                request_id: opening.request.request_id,
                tokens,
                requests: opening.request.requests.clone(),
            },
            opening,
        }
    }

    /// Opens a fresh card into `kinds` and returns the tokens.
    pub async fn open_tokens(&self, seed: &WalletSeed, first: u64, kinds: &[&str]) -> Vec<Token> {
        let card = &self.cards(1000, 1).await[0];
        let opening = self.opening(seed, first, card, kinds).await;
        let (status, body) = self.post("/v1/cards/open", &opening.request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens(&opening, &body)
    }

    /// The ledger's refresh entries.
    pub async fn refresh_entries(&self) -> usize {
        self.ledger
            .ledger
            .entries(0, 1000)
            .await
            .expect("log")
            .iter()
            .filter(|e| e.body.kind_name() == "tokens_refreshed")
            .count()
    }

    /// Blind signatures made so far.
    pub fn signatures(&self) -> u64 {
        self.issuer.metrics().blind_signatures.get()
    }
}
