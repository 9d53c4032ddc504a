//! A ledger with two operators and an announced key, tokens made the way a wallet makes them,
//! and sidecars on port 0.

use reqwest::StatusCode;
use scrip_ledger::Ledger;
use scrip_redeemer::{Application, Mode, Redeemer, RedeemerConfig};
pub use scrip_spec::api::redeemer::RedeemerErrorCode as Code;
use scrip_spec::ledger::{Action, Genesis, LedgerRequest, OperatorInfo, Role};
use scrip_spec::{
    Catalog, OperatorKey, Token, TokenChallenge, TokenKeyInfo, TokenSecretKey, WalletSeed, blind,
    finalize,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

pub struct World {
    pub dir: tempfile::TempDir,
    pub ledger_base: String,
    pub ledger_db: String,
    pub ledger_key_seed: [u8; 32],
    pub ledger_stop: Option<oneshot::Sender<()>>,
    pub ops: Vec<(String, OperatorKey)>,
    pub key: TokenSecretKey,
    pub info: TokenKeyInfo,
    pub chunk_key: TokenSecretKey,
    pub chunk_info: TokenKeyInfo,
    seed: WalletSeed,
    counter: AtomicU64,
}

async fn start_ledger(ledger: Arc<Ledger>, addr: &str) -> (String, oneshot::Sender<()>) {
    let app = scrip_ledger::Application::from_ledger(ledger, addr.parse().expect("addr"), 3600)
        .await
        .expect("bind ledger");
    let base = format!("http://{}", app.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (base, stop)
}

pub async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger_key = OperatorKey::generate();
    let ledger_key_seed = *ledger_key.seed();
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
    let genesis = Genesis {
        ledger_name: "redeemer test".into(),
        ledger_key: ledger_key.id(),
        created_at: scrip_spec::now(),
        operators: ops
            .iter()
            .map(|(n, k)| OperatorInfo {
                name: n.clone(),
                id: k.id(),
                roles: vec![Role::Issuer, Role::Redeemer],
            })
            .collect(),
        catalog: Catalog::standard(),
    };
    let ledger_id = genesis.ledger_id();
    let ledger_db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = scrip_ledger::connect(&ledger_db).await.expect("store");
    let ledger = Arc::new(
        Ledger::init(store, ledger_key, genesis)
            .await
            .expect("init"),
    );
    let t = scrip_spec::now();
    let key = TokenSecretKey::generate().expect("keygen");
    let info = TokenKeyInfo {
        public_key: key.public_key().clone(),
        issuer: "op-a".into(),
        kind: "queue".parse().expect("kind"),
        valid_from: t - 10,
        issue_until: t + 3600,
        redeem_until: t + 7200,
        forget_after: t + 9000,
    };
    let chunk_key = TokenSecretKey::generate().expect("keygen");
    let chunk_info = TokenKeyInfo {
        public_key: chunk_key.public_key().clone(),
        kind: "chunk-256k".parse().expect("kind"),
        ..info.clone()
    };
    for k in [&info, &chunk_info] {
        let announce = Action::AnnounceKey { key: k.clone() };
        ledger
            .submit(ops[0].1.sign(LedgerRequest::new(ledger_id, t, announce)))
            .await
            .expect("announce");
    }
    let (ledger_base, stop) = start_ledger(ledger, "127.0.0.1:0").await;
    World {
        dir,
        ledger_base,
        ledger_db,
        ledger_key_seed,
        ledger_stop: Some(stop),
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
    pub client: reqwest::Client,
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

    fn token_of(&self, key: &TokenSecretKey, info: &TokenKeyInfo) -> Token {
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
            ledger_url: self.ledger_base.clone(),
            mode,
            grant_ttl_secs,
            batch_max: 1000,
            batch_wait_ms: 5,
            key_refresh_secs: 60,
        }
    }

    pub async fn sidecar(&self, config: RedeemerConfig) -> Sidecar {
        let redeemer = Redeemer::start(config).await.expect("redeemer");
        let app = Application::new(redeemer.clone()).await.expect("bind");
        let base = format!("http://{}", app.local_addr().expect("addr"));
        tokio::spawn(app.run_until(std::future::pending()));
        Sidecar {
            base,
            redeemer,
            client: reqwest::Client::new(),
        }
    }

    /// Stops the ledger (the port closes).
    pub fn stop_ledger(&mut self) {
        if let Some(stop) = self.ledger_stop.take() {
            let _ = stop.send(());
        }
    }

    /// Starts the ledger again on its old port and database.
    pub async fn restart_ledger(&mut self) {
        let addr: std::net::SocketAddr = self
            .ledger_base
            .trim_start_matches("http://")
            .parse()
            .expect("addr");
        for _ in 0..50 {
            let store = scrip_ledger::connect(&self.ledger_db).await.expect("store");
            let ledger = Ledger::open(store, OperatorKey::from_seed(&self.ledger_key_seed))
                .await
                .expect("open");
            if let Ok(app) =
                scrip_ledger::Application::from_ledger(Arc::new(ledger), addr, 3600).await
            {
                let (stop, stopped) = oneshot::channel::<()>();
                tokio::spawn(app.run_until(async {
                    let _ = stopped.await;
                }));
                self.ledger_stop = Some(stop);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the ledger did not restart on {addr}");
    }
}

impl Sidecar {
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
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
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

/// The error code of an error answer (`Unknown` if there is none).
pub fn code(body: &Value) -> Code {
    serde_json::from_value(body["error"]["code"].clone()).unwrap_or(Code::Unknown)
}
