//! A ledger with two operators and an announced key, tokens made the way a wallet makes them,
//! and sidecars on port 0.

use reqwest::StatusCode;
use scrip_ledger::local::member;
use scrip_redeemer::{Mode, RedeemRateLimit, Redeemer, RedeemerConfig};
pub use scrip_spec::api::redeemer::RedeemerErrorCode as Code;
use scrip_spec::ledger::Role;
use scrip_spec::{
    OperatorKey, Token, TokenChallenge, TokenKeyInfo, TokenSecretKey, WalletSeed, blind, finalize,
};
use scrip_testkit::services::spawn_redeemer;
use scrip_testkit::{Http, TestDb, TestLedger, key_info};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct World {
    pub dir: tempfile::TempDir,
    pub ledger: TestLedger,
    pub ops: Vec<(String, OperatorKey)>,
    pub key: TokenSecretKey,
    pub info: TokenKeyInfo,
    pub chunk_key: TokenSecretKey,
    pub chunk_info: TokenKeyInfo,
    seed: WalletSeed,
    counter: AtomicU64,
}

/// A ledger with the operators op-a and op-b (issuers and redeemers, their key files in
/// `dir`), and op-a's `queue` and `chunk-256k` keys announced.
pub async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let ops: Vec<(String, OperatorKey)> = ["op-a", "op-b"]
        .iter()
        .map(|n| (n.to_string(), OperatorKey::generate()))
        .collect();
    for (name, key) in &ops {
        std::fs::write(
            dir.path().join(format!("{name}.key")),
            key.to_text().as_bytes(),
        )
        .expect("key");
    }
    let operators = ops
        .iter()
        .map(|(n, k)| member(n, k, &[Role::Issuer, Role::Redeemer]))
        .collect();
    let ledger = TestLedger::start(TestDb::sqlite(), "redeemer test", operators).await;
    let key = TokenSecretKey::generate().expect("keygen");
    let info = key_info(key.public_key(), "op-a", "queue", 1);
    let chunk_key = TokenSecretKey::generate().expect("keygen");
    let chunk_info = TokenKeyInfo {
        public_key: chunk_key.public_key().clone(),
        kind: "chunk-256k".parse().expect("kind"),
        ..info.clone()
    };
    for k in [&info, &chunk_info] {
        ledger.announce(&ops[0].1, k.clone()).await;
    }
    World {
        dir,
        ledger,
        ops,
        key,
        info,
        chunk_key,
        chunk_info,
        seed: WalletSeed::generate(),
        counter: AtomicU64::new(0),
    }
}

pub struct Sidecar {
    pub base: String,
    pub redeemer: Arc<Redeemer>,
    pub http: Http,
}

impl World {
    /// A token of the announced `queue` key, made as a wallet makes it.
    pub fn token(&self) -> Token {
        self.token_of(&self.key, &self.info)
    }

    /// A token of the announced `chunk-256k` key.
    pub fn chunk_token(&self) -> Token {
        self.token_of(&self.chunk_key, &self.chunk_info)
    }

    pub fn token_of(&self, key: &TokenSecretKey, info: &TokenKeyInfo) -> Token {
        let challenge = TokenChallenge::for_issuer("op-a").expect("challenge");
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let (req, pending) = blind(&self.seed, n, &info.public_key, &challenge).expect("blind");
        let resp = key.blind_sign(&req).expect("sign");
        finalize(&info.public_key, &pending, &resp).expect("finalize")
    }

    pub fn config(&self, op: usize, mode: Mode, grant_ttl_secs: u64) -> RedeemerConfig {
        let name = &self.ops[op].0;
        RedeemerConfig {
            name: name.clone(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            database: format!(
                "sqlite://{}",
                self.dir
                    .path()
                    .join(format!("{name}-{mode:?}.db"))
                    .display()
            ),
            operator_key_file: self.dir.path().join(format!("{name}.key")),
            ledger_url: self.ledger.url.clone(),
            mode,
            grant_ttl_secs,
            batch_max: 1000,
            batch_wait_ms: 5,
            key_refresh_secs: 60,
            rate_limit: RedeemRateLimit::default(),
            ledger_wait_secs: 0,
        }
    }

    /// A sidecar of operator `op`, in `mode`, with grants valid for 300 s.
    pub async fn sidecar_of(&self, op: usize, mode: Mode) -> Sidecar {
        self.sidecar(self.config(op, mode, 300)).await
    }

    pub async fn sidecar(&self, config: RedeemerConfig) -> Sidecar {
        let (base, redeemer) = spawn_redeemer(config).await;
        Sidecar {
            http: Http::new(&base),
            base,
            redeemer,
        }
    }

    /// Stops the ledger (the port closes).
    pub fn stop_ledger(&mut self) {
        self.ledger.stop();
    }

    /// Starts the ledger again on its old port and database.
    pub async fn restart_ledger(&mut self) {
        self.ledger.restart().await;
    }
}

impl Sidecar {
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.http.post(path, body).await
    }

    pub async fn redeem(&self, token: &Token, kind: &str) -> (StatusCode, Value) {
        let body =
            json!({"token": scrip_spec::encoding::b64_encode(token.to_bytes()), "kind": kind});
        self.post("/v1/redeem", &body).await
    }

    pub async fn consume(&self, grant: &str, kind: &str) -> (StatusCode, Value) {
        self.post("/v1/grants/consume", &json!({"grant": grant, "kind": kind}))
            .await
    }

    pub async fn metrics(&self) -> String {
        self.http.text("/metrics").await
    }

    /// One series of `/metrics` (0 if absent).
    pub async fn metric(&self, series: &str) -> f64 {
        scrip_common::metrics::Scrape::new("redeemer", self.metrics().await)
            .value(series)
            .unwrap_or(0.0)
    }
}

/// An answer's status and error code.
pub fn refusal((status, body): (StatusCode, Value)) -> (StatusCode, Code) {
    (status, code(&body))
}

/// The error code of an error answer (`Unknown` if there is none).
pub fn code(body: &Value) -> Code {
    scrip_testkit::error_code(body).unwrap_or(Code::Unknown)
}
