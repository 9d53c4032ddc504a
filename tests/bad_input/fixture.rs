//! The consortium under test and what the test keeps from its set-up, and the snapshot of
//! every service's state that bad input must leave unchanged.

use crate::harness::client;
use crate::shared::{filler, kind};
use crate::support::{cards_on_sale, checkpoint, consortium_with_keys};
use scrip::consortium::Consortium;
use scrip_client::Wallet;
use scrip_spec::encoding::b64_encode;
use scrip_spec::ledger::{
    Action, Checkpoint, Cosignature, Hash32, LedgerRequest, OperatorInfo, Role, SpendGroup,
};
use scrip_spec::now;
use scrip_spec::{CardCode, Nullifier, OperatorKey, Token, TokenKeyInfo};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub c: Consortium,
    pub op_a: OperatorKey,
    pub op_b: OperatorKey,
    pub ledger_key: OperatorKey,
    pub ledger_id: Hash32,
    pub queue_key: TokenKeyInfo,
    pub chunk_key: TokenKeyInfo,
    /// Cards: opened by the wallet, untouched, and minted but never activated.
    pub card_opened: String,
    pub card_fresh: String,
    pub card_minted: String,
    pub token_queue: Token,
    pub token_chunk: Token,
    pub grant_queue: String,
    pub grant_chunk: String,
    pub stored_chunk: String,
    /// The valid signed request the test submitted (admitting op-b), as sent.
    pub admitted: String,
    /// op-a's cosignature of the checkpoint, as sent.
    pub cosigned: String,
    pub checkpoint: Checkpoint,
}

pub async fn post(url: &str, body: String) -> (u16, Value) {
    let resp = client(None)
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

impl Fixture {
    pub async fn start() -> Self {
        let (dir, c) = consortium_with_keys(&["op-a"]).await;
        let root = dir.path().join("c");
        let a = &c.operators[0];
        let codes = cards_on_sale(a, 100, 2).await;
        let (_, minted) = a.issuer.mint_cards(50, 1).await.expect("mint");
        let read_key = |name: &str| {
            OperatorKey::from_text(&std::fs::read_to_string(root.join(name)).expect("key file"))
                .expect("key")
        };
        let op_a = read_key("op-a.key");
        let ledger_key = read_key("ledger.key");
        let op_b = OperatorKey::generate();
        let ledger_id = c.ledger.info().await.ledger_id;
        let keys = a.issuer.public_keys().keys;
        let key_of = |k: &str| {
            keys.iter()
                .find(|i| i.kind.as_str() == k)
                .expect("key of kind")
                .clone()
        };

        // A wallet opens one card and spends three tokens: two grants are kept unconsumed,
        // one stores a chunk at the relay; a queue and a chunk token stay unspent.
        let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
            .await
            .expect("wallet");
        let card_opened = codes[0].clone();
        wallet
            .open_card(
                &a.issuer_url,
                &card_opened,
                &[(kind("queue"), 2), (kind("chunk-64k"), 3)],
                &|_, _| {},
            )
            .await
            .expect("open");
        let grant_queue = wallet
            .spend(&kind("queue"), &a.redeemer_url)
            .await
            .expect("spend")
            .grant;
        let grant_chunk = wallet
            .spend(&kind("chunk-64k"), &a.redeemer_url)
            .await
            .expect("spend")
            .grant;
        let upload = wallet
            .spend(&kind("chunk-64k"), &a.redeemer_url)
            .await
            .expect("spend")
            .grant;
        let stored_chunk = b64_encode([7u8; 16]);
        let resp = client(None)
            .put(format!("{}/chunks/{stored_chunk}", a.relay_url))
            .header("authorization", format!("Bearer {upload}"))
            .body(b"a stored chunk".to_vec())
            .send()
            .await
            .expect("put chunk");
        assert_eq!(resp.status().as_u16(), 201);
        let token_queue = wallet
            .unspent_token("queue")
            .await
            .expect("query")
            .expect("token");
        let token_chunk = wallet
            .unspent_token("chunk-64k")
            .await
            .expect("query")
            .expect("token");

        // The one valid signed request: op-a (admin) admits op-b as issuer and redeemer.
        let admitted = serde_json::to_string(&op_a.sign(LedgerRequest::new(
            ledger_id,
            now(),
            Action::AdmitOperator {
                operator: OperatorInfo {
                    name: "op-b".into(),
                    id: op_b.id(),
                    roles: vec![Role::Issuer, Role::Redeemer],
                },
            },
        )))
        .expect("json");
        let (status, body) = post(&format!("{}/v1/entries", c.ledger_url), admitted.clone()).await;
        assert_eq!(status, 200, "{body}");

        // A checkpoint, cosigned by op-a.
        let checkpoint = checkpoint(&c).await;
        let cosigned = serde_json::to_string(&op_a.sign(Cosignature {
            checkpoint: checkpoint.clone(),
        }))
        .expect("json");
        let (status, body) = post(
            &format!("{}/v1/checkpoint/cosign", c.ledger_url),
            cosigned.clone(),
        )
        .await;
        assert_eq!(status, 204, "{body}");

        // Nothing may be left for the issuer to send the ledger during the test.
        assert!(
            a.issuer.store().outbox().await.expect("outbox").is_empty(),
            "outbox empty"
        );
        Self {
            root,
            c,
            op_a,
            op_b,
            ledger_key,
            ledger_id,
            queue_key: key_of("queue"),
            chunk_key: key_of("chunk-64k"),
            card_opened,
            card_fresh: codes[1].clone(),
            card_minted: minted[0].to_string(),
            token_queue,
            token_chunk,
            grant_queue,
            grant_chunk,
            stored_chunk,
            admitted,
            cosigned,
            checkpoint,
            _dir: dir,
        }
    }

    pub fn ledger(&self) -> &str {
        &self.c.ledger_url
    }
    pub fn issuer(&self) -> &str {
        &self.c.operators[0].issuer_url
    }
    pub fn redeemer(&self) -> &str {
        &self.c.operators[0].redeemer_url
    }
    pub fn relay(&self) -> &str {
        &self.c.operators[0].relay_url
    }

    pub fn known_card(&self, text: &str) -> bool {
        let Ok(code) = CardCode::parse(text) else {
            return false;
        };
        [&self.card_opened, &self.card_fresh, &self.card_minted]
            .iter()
            .any(|c| CardCode::parse(c).is_ok_and(|k| k == code))
    }

    /// `n` nullifiers from `seed`, never spent (random 32 bytes).
    pub fn fresh_nullifiers(&self, seed: u64, n: usize) -> Vec<Nullifier> {
        filler(seed, 32 * n)
            .chunks(32)
            .map(|c| Nullifier(c.try_into().expect("32 bytes")))
            .collect()
    }

    /// A spend of `n` fresh nullifiers under the queue key.
    pub fn spend(&self, seed: u64, n: usize) -> Action {
        Action::Spend {
            groups: vec![SpendGroup {
                token_key_id: self.queue_key.public_key.id(),
                nullifiers: self.fresh_nullifiers(seed, n),
            }],
        }
    }

    pub fn request(
        &self,
        nonce: [u8; 16],
        ledger_id: Hash32,
        at: u64,
        action: Action,
    ) -> LedgerRequest {
        LedgerRequest {
            ledger_id,
            timestamp: at,
            nonce,
            action,
        }
    }

    pub fn signed(&self, key: &OperatorKey, request: LedgerRequest) -> String {
        serde_json::to_string(&key.sign(request)).expect("json")
    }

    pub async fn snapshot(&self) -> Snapshot {
        let a = &self.c.operators[0];
        let info = self.c.ledger.info().await;
        let http = client(None);
        let text = |url: String| {
            let http = http.clone();
            async move {
                http.get(url)
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("text")
            }
        };
        let scrape = |base: &str, names: &'static [&'static str]| {
            let url = format!("{base}/metrics");
            let text = text(url);
            async move { metric_lines(&text.await, names) }
        };
        let ledger_metrics = scrape(
            self.ledger(),
            &[
                r#"scrip_ledger_requests_total{result="accepted"}"#,
                r#"scrip_ledger_requests_total{result="internal"}"#,
                r#"scrip_ledger_nullifiers_total{result="accepted"}"#,
                "scrip_ledger_head_seq",
            ],
        )
        .await;
        let issuer_metrics = scrape(
            self.issuer(),
            &[
                r#"scrip_issuer_openings_total{result="opened"}"#,
                "scrip_issuer_tokens_signed_total",
            ],
        )
        .await;
        let mut cards = Vec::new();
        for code in [&self.card_opened, &self.card_fresh, &self.card_minted] {
            cards.push(match a.issuer.balance(code).await {
                Ok(b) => serde_json::to_string(&b).expect("json"),
                Err(e) => format!("refused: {e}"),
            });
        }
        let redeemer_metrics = scrape(
            self.redeemer(),
            &[
                r#"scrip_redeemer_redemptions_total{result="granted"}"#,
                r#"scrip_redeemer_redemptions_total{result="already_spent"}"#,
                r#"scrip_redeemer_redemptions_total{result="unavailable"}"#,
                "scrip_redeemer_grants_consumed_total",
                "scrip_redeemer_optimistic_revoked_total",
                "scrip_redeemer_optimistic_revoked_after_use_total",
                "scrip_redeemer_ledger_batches_total",
                "scrip_redeemer_ledger_batched_spends_total",
            ],
        )
        .await;
        let mut tokens = Vec::new();
        for t in [&self.token_queue, &self.token_chunk] {
            let status = self
                .c
                .ledger
                .nullifier(&t.nullifier())
                .await
                .expect("nullifier");
            tokens.push(format!("{status:?}"));
        }
        Snapshot {
            ledger_head: (info.head_seq, info.head_hash),
            ledger_operators: serde_json::to_string(&info.operators).expect("json"),
            ledger_totals: serde_json::to_string(&self.c.ledger.totals().await.expect("totals"))
                .expect("json"),
            ledger_checkpoint: serde_json::to_string(
                &self.c.ledger.latest_checkpoint().await.expect("checkpoint"),
            )
            .expect("json"),
            ledger_metrics,
            tokens,
            cards,
            issuer_metrics,
            issuer_outbox: a.issuer.store().outbox().await.expect("outbox").len(),
            issuer_keys: serde_json::to_string(&a.issuer.public_keys()).expect("json"),
            redeemer_metrics,
            relay_files: files(&self.root.join("op-a-relay")),
            top_level: top_level(&self.root),
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub ledger_head: (u64, Hash32),
    pub ledger_operators: String,
    pub ledger_totals: String,
    pub ledger_checkpoint: String,
    pub ledger_metrics: Vec<String>,
    pub tokens: Vec<String>,
    pub cards: Vec<String>,
    pub issuer_metrics: Vec<String>,
    pub issuer_outbox: usize,
    pub issuer_keys: String,
    pub redeemer_metrics: Vec<String>,
    pub relay_files: Vec<(String, u64)>,
    pub top_level: Vec<String>,
}

fn metric_lines(text: &str, names: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| names.iter().any(|n| l.starts_with(n)))
        .map(str::to_owned)
        .collect()
}

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(dir).expect("prefix").to_owned();
                out.push((rel.display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// Names in the consortium's directory, but SQLite's own passing files.
fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.ends_with("-wal") || n.ends_with("-shm") || n.ends_with("-journal")))
        .collect();
    names.sort();
    names
}
