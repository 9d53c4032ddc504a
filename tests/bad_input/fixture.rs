//! The consortium under test and what the test keeps from its set-up, and the snapshot of
//! every service's state that bad input must leave unchanged.

use crate::harness::{LedgerUnchanged, client};
use crate::shared::kind;
use crate::support::{cards_on_sale, checkpoint};
use scrip::consortium::Consortium;
use scrip_client::Wallet;
use scrip_redeemer::Mode;
use scrip_spec::encoding::b64_encode;
use scrip_spec::ledger::{
    Action, Approval, Change, Checkpoint, Cosignature, Hash32, LedgerRequest, OperatorInfo,
    Proposal, Role,
};
use scrip_spec::{
    CardCode, OperatorKey, Token, TokenChallenge, TokenKeyInfo, TokenSecretKey, UnixSeconds, now,
    verify_token,
};
use scrip_testkit::{key_info, mint_tokens};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Valid tokens of the queue and the chunk key the test mints itself (never sent to the
/// issuer, never spent by a bad request: the snapshot checks each one).
const QUEUE_POOL: usize = 192;
const CHUNK_POOL: usize = 64;

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub c: Consortium,
    /// Admin, issuer and redeemer (the consortium's founder).
    pub op_a: OperatorKey,
    /// Issuer and redeemer, admitted by the set-up.
    pub op_b: OperatorKey,
    /// Admin only, admitted by the set-up: with op-a, the two admins a change needs.
    pub op_c: OperatorKey,
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
    /// Tokens of the queue and the chunk key, valid and unspent, minted with the issuer's
    /// secret keys.
    pub queue_pool: Vec<Token>,
    pub chunk_pool: Vec<Token>,
    /// Tokens of the queue key made for another issuer's challenge (op-b's).
    pub wrong_challenge: Vec<Token>,
    /// A queue key of op-a's the ledger was never told about, and valid tokens of it.
    pub unannounced: TokenKeyInfo,
    pub unannounced_tokens: Vec<Token>,
    /// The queue key's `reported_until` on the ledger: where its next issuance report starts.
    pub queue_reported_until: UnixSeconds,
    /// The ledger's head and governance sequence after the set-up, which no case may move.
    pub head: (u64, Hash32),
    pub governance_seq: u64,
    /// The last governance change the set-up applied (admitting op-c), with its approvals.
    pub applied: (Proposal, Vec<Approval>),
    /// The first valid signed request the set-up submitted (admitting op-b), as sent.
    pub admitted: String,
    /// op-a's cosignature of the checkpoint, as sent.
    pub cosigned: String,
    pub checkpoint: Checkpoint,
}

/// op-a's strict consortium with its keys. Its issuer has no per-card limit: the cases send
/// the fixture's few cards hundreds of refused openings, each of which must be refused on its
/// merits (the limit has its own tests, `issuer/tests/api/abuse.rs`). Sources rotate, so the
/// per-source limits still hold as configured.
async fn consortium() -> (tempfile::TempDir, Consortium) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("c");
    let ledger_db = format!("sqlite://{}", root.join("ledger.db").display());
    let limits = scrip_issuer::config::RateLimitConfig {
        per_card: 0,
        ..Default::default()
    };
    let c =
        Consortium::start_with_issuer_limits(&root, &["op-a"], Mode::Strict, &ledger_db, limits)
            .await
            .expect("consortium");
    c.operators[0].issuer.rotate_keys().await.expect("keys");
    (dir, c)
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
        let (dir, c) = consortium().await;
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

        // Governance: op-a, the one admin (a quorum of one), admits op-b as issuer and
        // redeemer, then op-c as admin; from then on a change needs both admins.
        let govern = |seq: u64, operator: OperatorInfo| {
            let proposal = Proposal {
                ledger_id,
                governance_seq: seq,
                change: Change::AdmitOperator { operator },
            };
            let approvals = vec![Approval::sign(&op_a, &proposal)];
            (proposal, approvals)
        };
        let submit = |proposal: Proposal, approvals: Vec<Approval>| {
            serde_json::to_string(&op_a.sign(LedgerRequest::new(
                ledger_id,
                now(),
                Action::Govern {
                    proposal,
                    approvals,
                },
            )))
            .expect("json")
        };
        let op_c = OperatorKey::generate();
        let (proposal, approvals) = govern(
            0,
            OperatorInfo {
                name: "op-b".into(),
                id: op_b.id(),
                roles: vec![Role::Issuer, Role::Redeemer],
            },
        );
        let admitted = submit(proposal, approvals);
        let (status, body) = post(&format!("{}/v1/entries", c.ledger_url), admitted.clone()).await;
        assert_eq!(status, 200, "{body}");
        let applied = govern(
            1,
            OperatorInfo {
                name: "op-c".into(),
                id: op_c.id(),
                roles: vec![Role::Admin],
            },
        );
        let (status, body) = post(
            &format!("{}/v1/entries", c.ledger_url),
            submit(applied.0.clone(), applied.1.clone()),
        )
        .await;
        assert_eq!(status, 200, "{body}");

        // Two more queue keys of op-a's announced, so op-a has the most live ones it may.
        for _ in 0..2 {
            let secret = TokenSecretKey::generate().expect("keygen");
            let key = key_info(secret.public_key(), "op-a", "queue", 24);
            let request = op_a.sign(LedgerRequest::new(
                ledger_id,
                now(),
                Action::AnnounceKey { key },
            ));
            let body = serde_json::to_string(&request).expect("json");
            let (status, body) = post(&format!("{}/v1/entries", c.ledger_url), body).await;
            assert_eq!(status, 200, "announce: {body}");
        }

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

        // Tokens the test makes itself with the issuer's secret keys, as a wallet would.
        let secret_of = |info: &TokenKeyInfo| {
            let id = info.public_key.id();
            async move {
                let stored = a.issuer.store().keys().await.expect("issuer keys");
                let stored = stored
                    .iter()
                    .find(|k| k.info.public_key.id() == id)
                    .expect("the key's file");
                let pem = std::fs::read_to_string(&stored.pem_path).expect("pem");
                TokenSecretKey::from_pem(&pem).expect("secret key")
            }
        };
        let (queue_key, chunk_key) = (key_of("queue"), key_of("chunk-64k"));
        let queue_secret = secret_of(&queue_key).await;
        let chunk_secret = secret_of(&chunk_key).await;
        let queue_pool = mint_tokens(&queue_secret, "op-a", QUEUE_POOL);
        let chunk_pool = mint_tokens(&chunk_secret, "op-a", CHUNK_POOL);
        let wrong_challenge = mint_tokens(&queue_secret, "op-b", 8);
        let own = TokenChallenge::for_issuer("op-a").expect("challenge");
        for (key, pool) in [(&queue_key, &queue_pool), (&chunk_key, &chunk_pool)] {
            for t in pool {
                verify_token(&key.public_key, &own, t).expect("a pool token verifies");
            }
        }
        let unannounced_secret = TokenSecretKey::generate().expect("keygen");
        let unannounced = key_info(unannounced_secret.public_key(), "op-a", "queue", 24);
        let unannounced_tokens = mint_tokens(&unannounced_secret, "op-a", 8);

        let queue_reported_until = c
            .ledger
            .keys(Some("op-a"), None)
            .await
            .into_iter()
            .find(|k| k.info.public_key.id() == queue_key.public_key.id())
            .expect("the queue key on the ledger")
            .reported_until;
        let info = c.ledger.info().await;
        assert_eq!(info.governance_seq, 2, "two governance changes applied");
        assert_eq!(info.admin_quorum, 2, "two admins must approve a change");
        Self {
            root,
            c,
            op_a,
            op_b,
            ledger_key,
            ledger_id,
            op_c,
            queue_key,
            chunk_key,
            card_opened,
            card_fresh: codes[1].clone(),
            card_minted: minted[0].to_string(),
            token_queue,
            token_chunk,
            grant_queue,
            grant_chunk,
            stored_chunk,
            queue_pool,
            chunk_pool,
            wrong_challenge,
            unannounced,
            unannounced_tokens,
            queue_reported_until,
            head: (info.head_seq, info.head_hash),
            governance_seq: info.governance_seq,
            applied,
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

    /// `n` tokens of the pool of the queue key (or the chunk key), cyclically from `start`
    /// (modulo the pool's size).
    pub fn pool(&self, chunk: bool, start: usize, n: usize) -> Vec<Token> {
        let pool = if chunk {
            &self.chunk_pool
        } else {
            &self.queue_pool
        };
        (0..n)
            .map(|i| pool[(start + i) % pool.len()].clone())
            .collect()
    }

    /// A valid spend of `n` pool tokens of the queue key, from `start`.
    pub fn spend(&self, start: usize, n: usize) -> Action {
        Action::spend_of(self.pool(false, start, n))
    }

    /// What the ledger must still be after a case: the set-up's head and governance, and the
    /// nullifiers of `tokens` unspent.
    pub fn unchanged<'a>(&self, tokens: impl IntoIterator<Item = &'a Token>) -> LedgerUnchanged {
        LedgerUnchanged {
            head: self.head,
            governance_seq: self.governance_seq,
            unspent: tokens.into_iter().map(Token::nullifier).collect(),
        }
    }

    /// The proposal of `change` at the ledger's current governance sequence.
    pub fn proposal(&self, change: Change) -> Proposal {
        Proposal {
            ledger_id: self.ledger_id,
            governance_seq: self.governance_seq,
            change,
        }
    }

    /// The two admins, whose approvals together make the quorum.
    pub fn admins(&self) -> [&OperatorKey; 2] {
        [&self.op_a, &self.op_c]
    }

    /// `proposal` with the approvals of `by`.
    pub fn govern(&self, proposal: Proposal, by: &[&OperatorKey]) -> Action {
        let approvals = by.iter().map(|k| Approval::sign(k, &proposal)).collect();
        Action::Govern {
            proposal,
            approvals,
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
                // No refused opening may cost a private-key operation (PROTOCOL.md 9.3).
                "scrip_issuer_blind_signatures_total",
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
        let mut pool_spent = Vec::new();
        for t in self.queue_pool.iter().chain(&self.chunk_pool) {
            let status = self
                .c
                .ledger
                .nullifier(&t.nullifier())
                .await
                .expect("nullifier");
            if let Some((first, by)) = status {
                pool_spent.push(format!("{} spent by {by}: {first:?}", t.nullifier()));
            }
        }
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
            ledger_governance: (info.governance_seq, info.admin_quorum),
            ledger_keys: serde_json::to_string(&self.c.ledger.keys(None, None).await)
                .expect("json"),
            ledger_operators: serde_json::to_string(&info.operators).expect("json"),
            ledger_totals: serde_json::to_string(&self.c.ledger.totals().await.expect("totals"))
                .expect("json"),
            ledger_checkpoint: serde_json::to_string(
                &self.c.ledger.latest_checkpoint().await.expect("checkpoint"),
            )
            .expect("json"),
            ledger_metrics,
            tokens,
            pool_spent,
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
    pub ledger_governance: (u64, u32),
    pub ledger_keys: String,
    pub ledger_operators: String,
    pub ledger_totals: String,
    pub ledger_checkpoint: String,
    pub ledger_metrics: Vec<String>,
    pub tokens: Vec<String>,
    /// The pool tokens some request spent (none may be).
    pub pool_spent: Vec<String>,
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
