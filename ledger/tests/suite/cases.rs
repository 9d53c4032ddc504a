//! The cases, each taking a fresh fixture.

use crate::support::{Fixture, key_info, random_nullifier, spend, tokens};
use scrip_ledger::rules::Refusal;
use scrip_ledger::{Ledger, LedgerError, StoreError};
use scrip_spec::api::ledger::{SpendRefusal, SpendStatus};
use scrip_spec::ledger::{
    Action, Change, Checkpoint, EntryBody, Hash32, LedgerRequest, MAX_LIVE_KEYS, SpendGroup, Totals,
};
use scrip_spec::now;
use scrip_spec::{OperatorKey, Token, TokenKeyId};
use std::collections::HashMap;
use std::sync::Arc;

fn refusal(result: Result<scrip_spec::api::ledger::Receipt, LedgerError>) -> Refusal {
    match result {
        Err(LedgerError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The outcome of op-b's spend of a fresh token of RSA key `i` of `issuer`.
async fn spend_fresh(f: &Fixture, i: usize, issuer: &str) -> SpendStatus {
    let req = f.request(&f.b, spend(tokens(i, issuer, 1))).await;
    let receipt = f.ledger.submit(req).await.expect("answered");
    receipt.spends[0].status.clone()
}

/// An issuer's revocation of its own `token_key_id`.
fn revoke_key(token_key_id: TokenKeyId, reason: &str) -> Action {
    Action::RevokeKey {
        token_key_id,
        reason: reason.into(),
    }
}

pub async fn racing_redeemers_spend_each_nullifier_exactly_once(f: Fixture) {
    let key = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    let all = tokens(0, "op-a", 1000);
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    // 16 tasks, half for each redeemer, each trying every nullifier in batches of 50, in
    // different orders, so that batches of the two redeemers overlap.
    for t in 0..16usize {
        let f = f.clone();
        let mut mine = all.clone();
        mine.rotate_left(t * 61 % 1000);
        if t % 3 == 0 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let by = if t % 2 == 0 { &f.a } else { &f.b };
            let mut accepted = 0usize;
            let mut refused = 0usize;
            for chunk in mine.chunks(50) {
                let req = f.request(by, spend(chunk.to_vec())).await;
                let receipt = f.ledger.submit(req).await.expect("spend request answered");
                for r in receipt.spends {
                    match r.status {
                        SpendStatus::Accepted => accepted += 1,
                        SpendStatus::AlreadySpent { .. } => refused += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            (accepted, refused)
        }));
    }
    let mut accepted = 0;
    let mut refused = 0;
    for t in tasks {
        let (a, r) = t.await.expect("task");
        accepted += a;
        refused += r;
    }
    assert_eq!(accepted, 1000, "each nullifier accepted exactly once");
    assert_eq!(refused, 15 * 1000, "every other attempt refused");
    let totals = f.ledger.totals().await.expect("totals");
    assert_eq!(
        (totals.keys[0].token_key_id, totals.keys[0].spent),
        (key, 1000)
    );
    for t in &all[..10] {
        let (first, name) = f
            .ledger
            .nullifier(&t.nullifier())
            .await
            .expect("query")
            .expect("spent");
        assert!(name == "op-a" || name == "op-b");
        assert!(first.seq > 1);
    }
    assert!(
        f.ledger
            .nullifier(&random_nullifier())
            .await
            .expect("query")
            .is_none()
    );
}

pub async fn refused_requests_leave_the_log_unchanged(f: Fixture) {
    let key = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    let head = f.ledger.info().await.head_seq;
    let token = tokens(0, "op-a", 1).remove(0);
    let n = token.nullifier();
    let one = || spend(vec![token.clone()]);

    // Unknown operator.
    let req = f.request(&f.outsider, one()).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::UnknownOperator { .. }
    ));

    // A member's name with someone else's signature: the payload is changed after signing.
    let mut forged = f.request(&f.b, one()).await;
    forged.payload.timestamp += 1;
    assert_eq!(
        refusal(f.ledger.submit(forged).await),
        Refusal::BadSignature
    );
    let mut stolen_name = f.request(&f.outsider, one()).await;
    stolen_name.signer = f.b.id();
    assert_eq!(
        refusal(f.ledger.submit(stolen_name).await),
        Refusal::BadSignature
    );

    // Signed for another ledger.
    let other = f.b.sign(LedgerRequest::new(Hash32([7; 32]), now(), one()));
    assert_eq!(refusal(f.ledger.submit(other).await), Refusal::WrongLedger);

    // Stale.
    let id = f.ledger.info().await.ledger_id;
    let stale = f.b.sign(LedgerRequest::new(id, now() - 3600, one()));
    assert!(matches!(
        refusal(f.ledger.submit(stale).await),
        Refusal::Stale { .. }
    ));

    // Governance approved by op-b, who is not an admin: no approval counts.
    let req = f
        .govern(
            &[&f.b],
            Change::SetCatalog {
                catalog: scrip_spec::Catalog::standard(),
            },
        )
        .await;
    assert_eq!(
        refusal(f.ledger.submit(req).await),
        Refusal::NoQuorum { have: 0, need: 1 }
    );

    // An issuer announcing a key in another issuer's name.
    let t = now();
    let req = f
        .request(
            &f.b,
            Action::AnnounceKey {
                key: key_info(1, "op-a", "queue", t, t + 10, t + 20, t + 30),
            },
        )
        .await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::Forbidden { .. }
    ));

    // Too large a batch (refused before any token is looked at).
    let req = f.request(&f.b, spend(vec![token.clone(); 10_001])).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::TooLarge { .. }
    ));

    assert_eq!(f.ledger.info().await.head_seq, head, "nothing appended");
    assert!(f.ledger.nullifier(&n).await.expect("query").is_none());

    // Replay: the first submission is accepted, the identical second is refused.
    let req = f.request(&f.b, one()).await;
    f.ledger.submit(req.clone()).await.expect("first spend");
    let head = f.ledger.info().await.head_seq;
    assert_eq!(
        refusal(f.ledger.submit(req.clone()).await),
        Refusal::Replayed
    );
    assert_eq!(f.ledger.info().await.head_seq, head);
    // Retried after the clock-skew window: still recognised as applied, not as stale.
    f.advance(1000);
    assert_eq!(refusal(f.ledger.submit(req).await), Refusal::Replayed);
    let late = f.b.sign(LedgerRequest::new(
        id,
        f.now() - 1000,
        spend(tokens(0, "op-a", 1)),
    ));
    assert!(matches!(
        refusal(f.ledger.submit(late).await),
        Refusal::Stale { .. }
    ));

    // Unknown key: answered per nullifier, nothing appended.
    let of_unknown_key = |token: &Token| Token {
        token_key_id: TokenKeyId([9; 32]),
        ..token.clone()
    };
    let req = f.request(&f.b, spend(vec![of_unknown_key(&token)])).await;
    let receipt = f.ledger.submit(req).await.expect("answered");
    assert_eq!(receipt.seq, None);
    assert_eq!(
        receipt.spends[0].status,
        SpendStatus::Refused {
            reason: SpendRefusal::UnknownKey
        }
    );
    assert_eq!(f.ledger.info().await.head_seq, head);

    // A token under an unknown key, then one token twice under the real key: refused,
    // accepted, duplicate; counted once everywhere.
    let m = tokens(0, "op-a", 1).remove(0);
    let mixed = Action::Spend {
        groups: vec![
            SpendGroup {
                token_key_id: TokenKeyId([9; 32]),
                tokens: vec![of_unknown_key(&m)],
            },
            SpendGroup {
                token_key_id: key,
                tokens: vec![m.clone(), m],
            },
        ],
    };
    let receipt = f
        .ledger
        .submit(f.request(&f.b, mixed).await)
        .await
        .expect("answered");
    let statuses: Vec<_> = receipt.spends.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        vec![
            SpendStatus::Refused {
                reason: SpendRefusal::UnknownKey
            },
            SpendStatus::Accepted,
            SpendStatus::Refused {
                reason: SpendRefusal::DuplicateInRequest
            },
        ]
    );
    let directory = f.ledger.keys(None, None).await[0].spent;
    let totals = f.ledger.totals().await.expect("totals").keys[0].spent;
    assert_eq!((directory, totals), (2, 2), "directory and totals agree");

    // Reports beyond the counters' range are refused.
    let huge = f
        .request(
            &f.a,
            Action::CardsSold {
                batch: "x".into(),
                count: u64::MAX,
                credits: 1,
            },
        )
        .await;
    assert!(matches!(
        refusal(f.ledger.submit(huge).await),
        Refusal::Invalid { .. }
    ));
}

pub async fn log_chain_signatures_and_checkpoint_verify_after_mixed_workload(f: Fixture) {
    let info0 = f.announce(&f.a, "op-a", 0, "queue").await;
    let k0 = info0.public_key.id();
    let k1 = f
        .announce(&f.b, "op-b", 1, "chunk-1m")
        .await
        .public_key
        .id();
    let sold = f
        .request(
            &f.a,
            Action::CardsSold {
                batch: "b1".into(),
                count: 10,
                credits: 500,
            },
        )
        .await;
    f.ledger.submit(sold).await.expect("cards sold");
    let issued = f
        .request(
            &f.a,
            Action::TokensIssued {
                token_key_id: k0,
                count: 7,
                from: info0.valid_from,
                until: now(),
            },
        )
        .await;
    f.ledger.submit(issued).await.expect("issued");
    let mut both = tokens(0, "op-a", 2);
    both.extend(tokens(1, "op-b", 1));
    let both = spend(both);
    assert!(
        matches!(&both, Action::Spend { groups } if groups.len() == 2 && groups[1].token_key_id == k1)
    );
    f.ledger
        .submit(f.request(&f.b, both).await)
        .await
        .expect("spend");
    let checkpoint = f
        .ledger
        .checkpoint()
        .await
        .expect("checkpoint")
        .expect("made");
    assert!(
        f.ledger.checkpoint().await.expect("again").is_none(),
        "no empty checkpoint"
    );
    let revoke = f.request(&f.a, revoke_key(k0, "test")).await;
    f.ledger.submit(revoke).await.expect("revoke");

    // Cosign the checkpoint as op-b.
    let EntryBody::Checkpoint(signed_cp) = &checkpoint.body else {
        panic!("not a checkpoint")
    };
    let cosig = f.b.sign(scrip_spec::ledger::Cosignature {
        checkpoint: signed_cp.payload.clone(),
    });
    f.ledger.cosign(cosig).await.expect("cosign");
    let mut bad = f.b.sign(scrip_spec::ledger::Cosignature {
        checkpoint: signed_cp.payload.clone(),
    });
    bad.payload.checkpoint.seq += 1;
    assert!(f.ledger.cosign(bad).await.is_err());
    let view = f
        .ledger
        .latest_checkpoint()
        .await
        .expect("query")
        .expect("exists");
    assert_eq!(view.cosignatures.len(), 1);

    // Verify the whole log as an auditor would.
    let entries = f.ledger.entries(0, 1000).await.expect("log");
    let info = f.ledger.info().await;
    assert_eq!(entries.len() as u64, info.head_seq + 1);
    let mut prev = Hash32([0; 32]);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        assert_eq!(e.prev_hash, prev, "chain broken at {i}");
        prev = e.hash();
        match &e.body {
            EntryBody::Genesis(g) => assert_eq!(g.ledger_id(), info.ledger_id),
            EntryBody::Request(r) => {
                r.verify().expect("operator signature");
            }
            EntryBody::Checkpoint(c) => {
                c.verify().expect("ledger signature");
                assert_eq!(c.signer, info.genesis.ledger_key);
            }
            EntryBody::Pruned(p) => {
                p.verify().expect("ledger signature");
            }
            EntryBody::Certificate(_) | EntryBody::CommitteePruned(_) => {
                panic!("a one-node ledger makes no committee entries")
            }
        }
    }
    assert_eq!(prev, info.head_hash);

    // The checkpoint's totals digest matches totals recomputed from the log before it.
    let EntryBody::Checkpoint(cp) = &checkpoint.body else {
        unreachable!()
    };
    let recomputed = recompute_totals(&entries[..=cp.payload.seq as usize], &info);
    assert_eq!(recomputed.digest(), cp.payload.totals_digest);
    assert_checkpoint_fields(&cp.payload, &entries);

    // The audit replays the same log under the ledger's rules and agrees.
    let report = scrip_ledger::audit::audit(&entries).expect("clean log");
    assert_eq!(report.totals, f.ledger.totals().await.expect("totals"));
    assert_eq!(
        (report.entries, report.checkpoints),
        (entries.len() as u64, 1)
    );
    assert_eq!(report.head_hash, Some(info.head_hash));
    // op-b redeemed op-a's queue tokens (2 × 10) and its own chunk-1m (own tokens settle to
    // nothing between operators).
    assert_eq!(
        report.settlement[&("op-a".to_string(), "op-b".to_string())].value,
        20
    );
    assert_eq!(report.net["op-b"], 20);
    assert_eq!(report.net["op-a"], -20);
    let series = report
        .key_series
        .iter()
        .find(|s| s.token_key_id == Some(k0))
        .expect("a series for the queue key");
    let last = series.points.last().expect("points");
    assert_eq!((last.1, last.2), (7, 2), "cumulative issued and spent");
    let mut forged = entries.clone();
    forged[5].recorded_at += 1;
    let err = scrip_ledger::audit::audit(&forged).expect_err("tampering found");
    assert_eq!(
        err.seq, 6,
        "the entry after the changed one no longer chains: {err}"
    );
    // A ledger that records one signed request twice (a "cards sold" counted twice) is caught,
    // even with the chain rebuilt around the copy.
    let copy_of = entries
        .iter()
        .find(|e| matches!(&e.body, EntryBody::Request(r) if matches!(r.payload.action, Action::CardsSold { .. })))
        .expect("a cards-sold entry")
        .clone();
    let mut doubled = entries.clone();
    let last = doubled.last().expect("entries").clone();
    doubled.push(scrip_spec::ledger::LogEntry {
        seq: last.seq + 1,
        prev_hash: last.hash(),
        recorded_at: copy_of.recorded_at,
        body: copy_of.body.clone(),
        ordered: None,
    });
    let err = scrip_ledger::audit::audit(&doubled).expect_err("a copied request");
    assert_eq!(err.seq, last.seq + 1);
    assert!(err.problem.contains("second time"), "{err}");
    let mut truncated = entries.clone();
    truncated.remove(3);
    assert_eq!(
        scrip_ledger::audit::audit(&truncated).expect_err("gap").seq,
        4
    );

    // Tampering with any entry breaks the chain.
    let mut tampered = entries[3].clone();
    tampered.recorded_at += 1;
    assert_ne!(tampered.hash(), entries[4].prev_hash);
}

fn assert_checkpoint_fields(cp: &Checkpoint, entries: &[scrip_spec::ledger::LogEntry]) {
    assert_eq!(cp.head_hash, entries[cp.seq as usize].hash());
}

/// Recomputes totals from entries (the audit's job, here in its simplest form).
fn recompute_totals(
    entries: &[scrip_spec::ledger::LogEntry],
    info: &scrip_spec::api::ledger::LedgerInfo,
) -> Totals {
    let mut keys: HashMap<TokenKeyId, scrip_spec::ledger::KeyTotals> = HashMap::new();
    let mut issuers: HashMap<String, scrip_spec::ledger::IssuerTotals> = HashMap::new();
    let mut spent = std::collections::HashSet::new();
    let name = |id| {
        info.operators
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.name.clone())
            .expect("member")
    };
    for e in entries {
        let EntryBody::Request(r) = &e.body else {
            continue;
        };
        match &r.payload.action {
            Action::AnnounceKey { key } => {
                keys.insert(
                    key.public_key.id(),
                    scrip_spec::ledger::KeyTotals {
                        token_key_id: key.public_key.id(),
                        issuer: key.issuer.clone(),
                        kind: key.kind.clone(),
                        issued: 0,
                        spent: 0,
                        pruned: 0,
                    },
                );
            }
            Action::TokensIssued {
                token_key_id,
                count,
                ..
            } => {
                keys.get_mut(token_key_id).expect("key").issued += count;
            }
            Action::CardsSold { count, credits, .. } => {
                let issuer = name(r.signer);
                let t = issuers
                    .entry(issuer.clone())
                    .or_insert(scrip_spec::ledger::IssuerTotals {
                        issuer,
                        cards_sold: 0,
                        credits_sold: 0,
                    });
                t.cards_sold += count;
                t.credits_sold += credits;
            }
            Action::Spend { groups } => {
                for g in groups {
                    for n in g.nullifiers() {
                        if spent.insert(n) {
                            keys.get_mut(&g.token_key_id).expect("key").spent += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut keys: Vec<_> = keys.into_values().collect();
    keys.sort_by_key(|k| k.token_key_id);
    let mut issuers: Vec<_> = issuers.into_values().collect();
    issuers.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    Totals { keys, issuers }
}

pub async fn live_key_limit_and_key_rules(f: Fixture) {
    for i in 0..MAX_LIVE_KEYS {
        f.announce(&f.a, "op-a", i, "queue").await;
    }
    let t = now();
    let long = |i, kind| key_info(i, "op-a", kind, t, t + 10, t + 7200, t + 7300);
    let fourth = long(MAX_LIVE_KEYS, "queue");
    let req = f
        .request(
            &f.a,
            Action::AnnounceKey {
                key: fourth.clone(),
            },
        )
        .await;
    let r = refusal(f.ledger.submit(req).await);
    assert!(r.to_string().contains("live keys"), "{r}");
    // The same key for another kind is a different denomination, but the key itself is
    // already announced.
    let again = long(0, "chunk-64k");
    let req = f.request(&f.a, Action::AnnounceKey { key: again }).await;
    assert!(
        refusal(f.ledger.submit(req).await)
            .to_string()
            .contains("already announced")
    );
    // Instants out of order, and a kind outside the catalog.
    let mut bad = fourth.clone();
    bad.kind = scrip_spec::CapacityKind::new("chunk-64k").expect("kind");
    bad.redeem_until = bad.issue_until - 1;
    let req = f.request(&f.a, Action::AnnounceKey { key: bad }).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::Invalid { .. }
    ));
    let mut unsold = fourth;
    unsold.kind = scrip_spec::CapacityKind::new("video").expect("kind");
    let req = f.request(&f.a, Action::AnnounceKey { key: unsold }).await;
    assert!(
        refusal(f.ledger.submit(req).await)
            .to_string()
            .contains("catalog")
    );
    // A revoked key no longer counts as live, and is refused for spends.
    let k0 = scrip_spec::TokenKeyId(
        f.ledger.keys(Some("op-a"), None).await[0]
            .info
            .public_key
            .id()
            .0,
    );
    let revoke = f.request(&f.a, revoke_key(k0, "rotate")).await;
    f.ledger.submit(revoke).await.expect("revoke");
    assert_eq!(
        spend_fresh(&f, 0, "op-a").await,
        SpendStatus::Refused {
            reason: SpendRefusal::KeyRevoked
        }
    );
    // A key spendable for less than the genesis's floor would let an issuer rotate through
    // keys and tag users by the key they got.
    let short = key_info(MAX_LIVE_KEYS, "op-a", "queue", t, t + 10, t + 600, t + 700);
    let req = f.request(&f.a, Action::AnnounceKey { key: short }).await;
    let r = refusal(f.ledger.submit(req).await);
    assert!(r.to_string().contains("min_redeem_window"), "{r}");
    let replacement = long(MAX_LIVE_KEYS, "queue");
    let req = f
        .request(&f.a, Action::AnnounceKey { key: replacement })
        .await;
    f.ledger.submit(req).await.expect("a slot is free again");
    assert_eq!(
        f.ledger.keys(Some("op-a"), None).await.len(),
        MAX_LIVE_KEYS + 1
    );
    assert_eq!(f.ledger.keys(Some("op-b"), None).await.len(), 0);
}

pub async fn expired_keys_are_refused_then_pruned_with_a_commitment(f: Fixture) {
    let t = f.now();
    let info = key_info(2, "op-a", "chunk-64k", t - 10, t + 50, t + 3700, t + 3700);
    let key = info.public_key.id();
    let req = f.request(&f.a, Action::AnnounceKey { key: info }).await;
    f.ledger.submit(req).await.expect("announce");
    let spent_tokens = tokens(2, "op-a", 5);
    let spent: Vec<_> = spent_tokens.iter().map(Token::nullifier).collect();
    let req = f.request(&f.b, spend(spent_tokens.clone())).await;
    f.ledger.submit(req).await.expect("spend in window");
    // Tokens of another key, spent in between: pruning one key must leave them spent (on
    // SQLite the prune finds its rows by scanning the spent set, which has no index by key).
    let other_key = f.announce(&f.a, "op-a", 3, "queue").await.public_key.id();
    let other_tokens = tokens(3, "op-a", 3);
    let others: Vec<_> = other_tokens.iter().map(Token::nullifier).collect();
    let req = f.request(&f.b, spend(other_tokens)).await;
    f.ledger.submit(req).await.expect("spend under another key");
    assert!(
        matches!(
            f.ledger.prune(&key).await,
            Err(LedgerError::Refused(Refusal::Invalid { .. }))
        ),
        "not prunable before forget_after"
    );
    f.advance(3701);

    assert_eq!(
        spend_fresh(&f, 2, "op-a").await,
        SpendStatus::Refused {
            reason: SpendRefusal::NotRedeemable
        }
    );

    let entry = f
        .ledger
        .prune(&key)
        .await
        .expect("prune")
        .expect("pruned something");
    let EntryBody::Pruned(p) = &entry.body else {
        panic!("not a pruning record")
    };
    p.verify().expect("signed by the ledger");
    let mut sorted = spent.clone();
    sorted.sort();
    assert_eq!(p.payload.count, 5);
    assert_eq!(
        p.payload.commitment,
        scrip_spec::ledger::prune_commitment(&sorted)
    );
    assert!(
        f.ledger
            .nullifier(&spent[0])
            .await
            .expect("query")
            .is_none()
    );
    for other in &others {
        assert!(
            f.ledger.nullifier(other).await.expect("query").is_some(),
            "another key's spend survives the prune"
        );
    }
    let totals = f.ledger.totals().await.expect("totals");
    let counts = |id: &scrip_spec::TokenKeyId| {
        totals
            .keys
            .iter()
            .find(|k| &k.token_key_id == id)
            .map(|k| (k.spent, k.pruned))
    };
    assert_eq!(counts(&key), Some((5, 5)));
    assert_eq!(counts(&other_key), Some((3, 0)));
    assert!(
        f.ledger.prune(&key).await.expect("again").is_none(),
        "nothing left to prune"
    );

    // The pruned tokens cannot come back: under their own key they are past its window, and
    // listed under a live key they do not verify.
    let receipt = f
        .ledger
        .submit(f.request(&f.b, spend(spent_tokens.clone())).await)
        .await
        .expect("answered");
    assert!(receipt.spends.iter().all(|r| r.status
        == SpendStatus::Refused {
            reason: SpendRefusal::NotRedeemable
        }));
    let live = f
        .announce(&f.a, "op-a", 0, "chunk-64k")
        .await
        .public_key
        .id();
    let relabelled = Action::Spend {
        groups: vec![SpendGroup {
            token_key_id: live,
            tokens: spent_tokens,
        }],
    };
    let head = f.ledger.info().await.head_seq;
    assert!(matches!(
        refusal(f.ledger.submit(f.request(&f.b, relabelled).await).await),
        Refusal::InvalidToken { index: 0, .. }
    ));
    assert_eq!(f.ledger.info().await.head_seq, head);
    // And the audit of the whole log, pruning included, stays clean.
    let entries = f.ledger.entries(0, 1000).await.expect("log");
    let report = scrip_ledger::audit::audit(&entries).expect("a clean log");
    assert_eq!(report.totals, f.ledger.totals().await.expect("totals"));
}

pub async fn state_survives_reopening_the_store(f: Fixture) {
    f.announce(&f.a, "op-a", 0, "queue").await;
    let token = tokens(0, "op-a", 1).remove(0);
    f.ledger
        .submit(f.request(&f.b, spend(vec![token.clone()])).await)
        .await
        .expect("spend");
    let before = f.ledger.info().await;

    let store = scrip_ledger::connect(&f.url).await.expect("reopen");
    let reopened = Ledger::open(store, OperatorKey::from_seed(&f.ledger_key_seed))
        .await
        .expect("open");
    let after = reopened.info().await;
    assert_eq!(
        (after.head_seq, after.head_hash),
        (before.head_seq, before.head_hash)
    );
    assert_eq!(reopened.keys(None, None).await.len(), 1);

    let id = after.ledger_id;
    let again = f.a.sign(LedgerRequest::new(id, now(), spend(vec![token])));
    let receipt = reopened.submit(again).await.expect("answered");
    assert!(
        matches!(receipt.spends[0].status, SpendStatus::AlreadySpent { ref first_spent_by, .. } if first_spent_by == "op-b")
    );
    assert!(
        matches!(
            Ledger::open(
                scrip_ledger::connect(&f.url).await.expect("reopen"),
                OperatorKey::generate()
            )
            .await,
            Err(LedgerError::Refused(_))
        ),
        "a ledger opens only with its own key"
    );
}

/// Appends the entry `entry` (and its hash) with `effect` to `store`.
async fn append(
    store: &dyn scrip_ledger::Store,
    (entry, hash): &(scrip_spec::ledger::LogEntry, Hash32),
    effect: &scrip_ledger::store::Effect,
) -> Result<scrip_ledger::store::AppendOutcome, StoreError> {
    store.append(entry, hash, effect).await
}

/// The entry at `seq` after `prev_hash` that records `req` now, with its hash: what the store
/// tests append directly, bypassing the rules.
fn request_entry(
    f: &Fixture,
    seq: u64,
    prev_hash: Hash32,
    req: &scrip_spec::Signed<LedgerRequest>,
) -> (scrip_spec::ledger::LogEntry, Hash32) {
    let entry = scrip_spec::ledger::LogEntry {
        seq,
        prev_hash,
        recorded_at: f.now(),
        body: EntryBody::Request(req.clone()),
        ordered: None,
    };
    let hash = entry.hash();
    (entry, hash)
}

/// Appends `entry`, then insists that `again` (the same request further on) is refused as a
/// replay.
async fn append_then_replay(
    store: &dyn scrip_ledger::Store,
    entry: &(scrip_spec::ledger::LogEntry, Hash32),
    again: &(scrip_spec::ledger::LogEntry, Hash32),
    effect: &scrip_ledger::store::Effect,
) {
    append(store, entry, effect).await.expect("append");
    let replayed = append(store, again, effect).await;
    assert!(matches!(replayed, Err(StoreError::Replayed)));
}

/// The store itself refuses a replay and a second writer at a taken position, by its unique
/// indexes, and tells the two apart (the service checks for replays first; this is what a
/// replay racing past that check meets).
pub async fn store_tells_a_replay_from_a_taken_position(f: Fixture) {
    use scrip_ledger::store::Effect;

    let key = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    let store = f.ledger.store().clone();
    let info = f.ledger.info().await;
    let (head, head_hash) = (info.head_seq, info.head_hash);
    let entry = |seq: u64, prev_hash: Hash32, req: &scrip_spec::Signed<LedgerRequest>| {
        request_entry(&f, seq, prev_hash, req)
    };
    let sold = |batch: &str| Action::CardsSold {
        batch: batch.into(),
        count: 1,
        credits: 10,
    };
    let sold_effect = Effect::CardsSold {
        issuer: "op-a".into(),
        count: 1,
        credits: 10,
    };

    let req = f.request(&f.a, sold("first")).await;
    let first = entry(head + 1, head_hash, &req);
    // The same signed request at the next position: a replay.
    let again = entry(head + 2, first.1, &req);
    append_then_replay(&*store, &first, &again, &sold_effect).await;

    // Another request at the taken position: a second writer.
    let other = f.request(&f.a, sold("second")).await;
    let clash = entry(head + 1, head_hash, &other);
    assert!(matches!(
        append(&*store, &clash, &sold_effect).await,
        Err(StoreError::SeqTaken { seq }) if seq == head + 1
    ));

    // A replayed spend is a replay, not a spend of nullifiers it spent itself.
    let token = tokens(0, "op-a", 1).remove(0);
    let n = token.nullifier();
    let spend_req = f.request(&f.b, spend(vec![token])).await;
    let spend_effect = Effect::Spend {
        groups: vec![scrip_ledger::store::NullifierGroup {
            token_key_id: key,
            nullifiers: vec![n],
        }],
    };
    let spent = entry(head + 2, first.1, &spend_req);
    let respent = entry(head + 3, spent.1, &spend_req);
    append_then_replay(&*store, &spent, &respent, &spend_effect).await;

    // Neither refusal left a trace.
    let entries = store
        .entries(head + 1, 10, u64::MAX)
        .await
        .expect("entries");
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![head + 1, head + 2]
    );
    assert_eq!(entries[0], first.0);
    let totals = store.totals().await.expect("totals");
    let op_a = totals.issuers.iter().find(|i| i.issuer == "op-a");
    assert_eq!(op_a.map(|i| (i.cards_sold, i.credits_sold)), Some((1, 10)));
    assert_eq!(totals.keys[0].spent, 1);
    assert_eq!(
        store.nullifier(&n).await.expect("query").map(|s| s.seq),
        Some(head + 2)
    );
    // The size query runs on each backend (its SQL is one of the few not shared).
    assert!(store.size_bytes().await.expect("size") > 0);
}

/// Nullifiers that share their first bytes are spends of their own, on every backend: the
/// PostgreSQL spent set is keyed by the first 8 bytes and keeps a clash apart, which must read
/// exactly as SQLite's set keyed by all 32 (or two nodes of one committee would judge a spend
/// differently). The clash stays spent after the nullifier that took its head is pruned.
pub async fn nullifiers_sharing_their_first_bytes_are_spends_of_their_own(f: Fixture) {
    use scrip_ledger::store::{AppendOutcome, Effect, NullifierGroup};
    use scrip_spec::Nullifier;
    use std::cell::{Cell, RefCell};
    use std::sync::Mutex;

    let first_key = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    let other_key = f
        .announce(&f.a, "op-a", 1, "chunk-64k")
        .await
        .public_key
        .id();
    let store = f.ledger.store().clone();
    let info = f.ledger.info().await;
    // The head of the log as this test appends to it.
    let head = Cell::new((info.head_seq, info.head_hash));
    // Each entry records a request of its own (the store refuses a replayed one); the store
    // does not look inside, so the effect is what is tested.
    let unused = RefCell::new(tokens(0, "op-a", 8).into_iter());
    let next_request = async || {
        let token = unused.borrow_mut().next().expect("a token left");
        f.request(&f.b, spend(vec![token])).await
    };
    let append_next = async |effect: Effect| {
        let (seq, prev) = head.get();
        let next = request_entry(&f, seq + 1, prev, &next_request().await);
        let outcome = append(&*store, &next, &effect).await.expect("append");
        if matches!(outcome, AppendOutcome::Appended { .. }) {
            head.set((next.0.seq, next.1));
        }
        (outcome, next.0.seq)
    };
    let spend_of = |token_key_id: TokenKeyId, nullifiers: Vec<Nullifier>| Effect::Spend {
        groups: vec![NullifierGroup {
            token_key_id,
            nullifiers,
        }],
    };
    let with_byte = |n: Nullifier, i: usize, flip: u8| {
        let mut bytes = n.0;
        bytes[i] ^= flip;
        Nullifier(bytes)
    };
    let base = random_nullifier();
    let (last_byte, ninth_byte, unspent) = (
        with_byte(base, 31, 1),
        with_byte(base, 8, 0x80),
        with_byte(base, 20, 4),
    );
    let refused = |outcome: &AppendOutcome| match outcome {
        AppendOutcome::Appended { already_spent }
        | AppendOutcome::NothingToSpend { already_spent } => already_spent
            .iter()
            .map(|(n, s)| (*n, s.seq))
            .collect::<Vec<_>>(),
    };

    let (outcome, first_seq) = append_next(spend_of(first_key, vec![base])).await;
    assert_eq!(refused(&outcome), vec![]);
    let (outcome, second_seq) =
        append_next(spend_of(other_key, vec![last_byte, ninth_byte, base])).await;
    assert!(matches!(outcome, AppendOutcome::Appended { .. }));
    assert_eq!(refused(&outcome), vec![(base, first_seq)]);

    for (n, spent_at) in [
        (base, Some(first_seq)),
        (last_byte, Some(second_seq)),
        (ninth_byte, Some(second_seq)),
        (unspent, None),
    ] {
        let found = store.nullifier(&n).await.expect("lookup").map(|s| s.seq);
        assert_eq!(found, spent_at, "nullifier {n}");
    }
    let mut expected = vec![
        (base, first_key, first_seq),
        (last_byte, other_key, second_seq),
        (ninth_byte, other_key, second_seq),
    ];
    expected.sort();
    assert_eq!(store.spent_set().await.expect("spent set"), expected);
    let (mut low, mut high) = (base.0, base.0);
    low[8..].fill(0);
    high[8..].fill(0xff);
    let in_range = |limit| {
        let store = store.clone();
        async move {
            store
                .spent_between(&Nullifier(low), &Nullifier(high), limit)
                .await
                .expect("range")
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        }
    };
    let sorted: Vec<_> = expected.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(in_range(10).await, sorted);
    assert_eq!(in_range(2).await, sorted[..2]);
    assert_eq!(
        store
            .totals()
            .await
            .expect("totals")
            .keys
            .iter()
            .map(|k| k.spent)
            .sum::<u64>(),
        3
    );

    // A clash spent again is refused, and nothing is appended.
    let (outcome, _) = append_next(spend_of(other_key, vec![ninth_byte])).await;
    assert!(matches!(outcome, AppendOutcome::NothingToSpend { .. }));
    assert_eq!(refused(&outcome), vec![(ninth_byte, second_seq)]);

    // Pruning the first key frees the head its nullifier took; the other key's clashes stay
    // spent, and a new nullifier with that head is a spend.
    let prune = async |key: TokenKeyId| {
        let dropped = Mutex::new(Vec::new());
        let (seq, prev) = head.get();
        let req = next_request().await;
        let record = |nullifiers: &[Nullifier]| {
            dropped.lock().expect("lock").extend_from_slice(nullifiers);
            request_entry(&f, seq + 1, prev, &req)
        };
        let pruned = store.prune(&key, &record).await.expect("prune");
        let pruned = pruned.expect("something to prune");
        head.set((pruned.seq, pruned.hash()));
        dropped.into_inner().expect("lock")
    };
    assert_eq!(prune(first_key).await, vec![base]);
    let (outcome, _) = append_next(spend_of(other_key, vec![last_byte, ninth_byte])).await;
    assert_eq!(
        refused(&outcome),
        vec![(last_byte, second_seq), (ninth_byte, second_seq)]
    );
    let (outcome, unspent_seq) = append_next(spend_of(other_key, vec![unspent])).await;
    assert_eq!(refused(&outcome), vec![]);
    assert_eq!(
        store
            .nullifier(&unspent)
            .await
            .expect("lookup")
            .map(|s| s.seq),
        Some(unspent_seq)
    );

    // Pruning the other key drops all three of its nullifiers, in order.
    let mut of_other = vec![last_byte, ninth_byte, unspent];
    of_other.sort();
    assert_eq!(prune(other_key).await, of_other);
    assert_eq!(store.spent_set().await.expect("spent set"), vec![]);
}

/// The first finding of issue 14: a redeemer holding no token invents spends to be owed money.
/// Invented tokens, a flipped signature bit and a token listed under another key are each
/// refused as a whole, and nothing changes.
pub async fn spends_of_tokens_the_redeemer_does_not_hold_are_refused(f: Fixture) {
    let a = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    f.announce(&f.a, "op-a", 1, "chunk-64k").await;
    let head = f.ledger.info().await.head_seq;
    let real = tokens(0, "op-a", 1).remove(0);
    let mut invented = real.clone();
    rand::fill(&mut invented.nonce);
    rand::fill(&mut invented.authenticator[..]);
    let mut flipped = real.clone();
    flipped.authenticator[17] ^= 0x80;
    let of_b = tokens(1, "op-a", 1).remove(0);
    let cases = [
        ("invented", vec![invented]),
        ("flipped", vec![real.clone(), flipped]),
    ];
    for (what, batch) in cases {
        let req = f.request(&f.b, spend(batch)).await;
        assert!(
            matches!(
                refusal(f.ledger.submit(req).await),
                Refusal::InvalidToken { .. }
            ),
            "{what}"
        );
    }
    // A token of key B listed under key A.
    let relabelled = Action::Spend {
        groups: vec![SpendGroup {
            token_key_id: a,
            tokens: vec![of_b.clone()],
        }],
    };
    let req = f.request(&f.b, relabelled).await;
    let r = refusal(f.ledger.submit(req).await);
    assert!(r.to_string().contains("not key"), "{r}");
    assert_eq!(f.ledger.info().await.head_seq, head, "nothing appended");
    for t in [&real, &of_b] {
        assert!(
            f.ledger
                .nullifier(&t.nullifier())
                .await
                .expect("query")
                .is_none()
        );
    }
    let totals = f.ledger.totals().await.expect("totals");
    assert!(totals.keys.iter().all(|k| k.spent == 0));
    // Before any RSA work: a member without the redeemer role, or an oversized batch, is
    // refused for that, whatever its tokens are.
    let issuer_only = OperatorKey::generate();
    let admit = f
        .govern(
            &[&f.a],
            Change::AdmitOperator {
                operator: scrip_ledger::local::member(
                    "op-c",
                    &issuer_only,
                    &[scrip_spec::ledger::Role::Issuer],
                ),
            },
        )
        .await;
    f.ledger.submit(admit).await.expect("admitted");
    let mut garbage = real.clone();
    garbage.authenticator[0] ^= 1;
    let req = f.request(&issuer_only, spend(vec![garbage.clone()])).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::Forbidden { .. }
    ));
    let req = f.request(&f.b, spend(vec![garbage; 10_001])).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::TooLarge { count: 10_001 }
    ));
    assert_eq!(
        f.ledger.info().await.head_seq,
        head + 1,
        "only the admission appended"
    );

    // The same tokens, honestly listed, are spent.
    let receipt = f
        .ledger
        .submit(f.request(&f.b, spend(vec![real, of_b])).await)
        .await
        .expect("spend");
    assert!(
        receipt
            .spends
            .iter()
            .all(|r| r.status == SpendStatus::Accepted)
    );
}

/// Governance needs a quorum of distinct admins; an approved change applies once; a catalog
/// change applies to later spends only, and the settlement of earlier ones is unchanged.
pub async fn governance_needs_a_quorum_and_settlement_keeps_the_catalog_of_each_spend(f: Fixture) {
    use scrip_ledger::local::member;
    use scrip_spec::ledger::Role;
    let (c, d) = (OperatorKey::generate(), OperatorKey::generate());
    // One admin (op-a): the quorum is 1. Admit two more admins, one change at a time.
    assert_eq!(f.ledger.info().await.admin_quorum, 1);
    for (name, key) in [("op-c", &c), ("op-d", &d)] {
        let change = Change::AdmitOperator {
            operator: member(name, key, &[Role::Admin]),
        };
        let approvers: Vec<&OperatorKey> = if name == "op-c" {
            vec![&f.a]
        } else {
            vec![&f.a, &c]
        };
        let req = f.govern(&approvers, change).await;
        f.ledger.submit(req).await.expect("admitted");
    }
    let info = f.ledger.info().await;
    assert_eq!((info.admin_quorum, info.governance_seq), (2, 2));

    f.announce(&f.a, "op-a", 0, "queue").await;
    let before = f
        .ledger
        .submit(f.request(&f.b, spend(tokens(0, "op-a", 3))).await)
        .await
        .expect("spend");
    let spent_at_old_price = before.seq.expect("appended");

    // One admin alone, or one admin counted twice, or a stranger's approval: refused.
    let mut catalog = scrip_spec::Catalog::standard();
    catalog.settlement_fee_bps = 10_000;
    for entry in &mut catalog.entries {
        entry.price *= 100;
    }
    let head = f.ledger.info().await.head_seq;
    let alone = f
        .govern(
            &[&f.a],
            Change::SetCatalog {
                catalog: catalog.clone(),
            },
        )
        .await;
    assert_eq!(
        refusal(f.ledger.submit(alone).await),
        Refusal::NoQuorum { have: 1, need: 2 }
    );
    let twice = f
        .govern(
            &[&f.a, &f.a],
            Change::SetCatalog {
                catalog: catalog.clone(),
            },
        )
        .await;
    assert_eq!(
        refusal(f.ledger.submit(twice).await),
        Refusal::NoQuorum { have: 1, need: 2 }
    );
    let stranger = f
        .govern(
            &[&f.a, &f.outsider],
            Change::SetCatalog {
                catalog: catalog.clone(),
            },
        )
        .await;
    assert_eq!(
        refusal(f.ledger.submit(stranger).await),
        Refusal::NoQuorum { have: 1, need: 2 }
    );
    assert_eq!(f.ledger.info().await.head_seq, head, "nothing appended");

    // Two admins: applied, once. The same approvals wrapped in a new request are stale.
    let approved = f
        .govern(
            &[&c, &d],
            Change::SetCatalog {
                catalog: catalog.clone(),
            },
        )
        .await;
    let Action::Govern {
        proposal,
        approvals,
    } = approved.payload.action.clone()
    else {
        unreachable!()
    };
    f.ledger.submit(approved).await.expect("applied");
    assert_eq!(f.ledger.info().await.catalog, catalog);
    let rewrapped = f
        .request(
            &f.b,
            Action::Govern {
                proposal,
                approvals,
            },
        )
        .await;
    assert!(matches!(
        refusal(f.ledger.submit(rewrapped).await),
        Refusal::StaleProposal {
            proposal: 2,
            current: 3
        }
    ));

    // Spends after the change are valued at the new prices and fee; the earlier ones keep
    // theirs.
    f.ledger
        .submit(f.request(&f.b, spend(tokens(0, "op-a", 1))).await)
        .await
        .expect("spend");
    let entries = f.ledger.entries(0, 1000).await.expect("log");
    let report = scrip_ledger::audit::audit(&entries).expect("clean");
    let cell = &report.settlement[&("op-a".to_string(), "op-b".to_string())];
    let queue = scrip_spec::Catalog::standard()
        .price(&"queue".parse().expect("kind"))
        .expect("priced");
    assert_eq!(cell.value, 3 * queue + 100 * queue);
    // The old catalog had no fee; the new one keeps everything as fee.
    assert_eq!(cell.owed, 3 * queue);
    assert_eq!(report.net["op-b"], i64::try_from(3 * queue).expect("small"));
    let versions: Vec<(u64, u16, u64)> = report
        .catalog_versions
        .iter()
        .map(|v| (v.seq, v.fee_bps, v.tokens))
        .collect();
    assert_eq!(
        versions,
        vec![(0, 0, 3), (spent_at_old_price + 1, 10_000, 1)]
    );

    // Removing an admin needs the quorum too; the quorum follows the admins left, and the
    // last admin cannot be removed.
    let remove = f
        .govern(&[&c, &d], Change::RemoveOperator { operator: f.a.id() })
        .await;
    f.ledger.submit(remove).await.expect("removed");
    assert_eq!(f.ledger.info().await.admin_quorum, 2);
    let remove_c = f
        .govern(&[&c, &d], Change::RemoveOperator { operator: c.id() })
        .await;
    f.ledger.submit(remove_c).await.expect("removed");
    assert_eq!(f.ledger.info().await.admin_quorum, 1);
    let remove_d = f
        .govern(&[&d], Change::RemoveOperator { operator: d.id() })
        .await;
    let r = refusal(f.ledger.submit(remove_d).await);
    assert!(r.to_string().contains("leave 0 admins"), "{r}");
    let readmit = f
        .govern(
            &[&d],
            Change::AdmitOperator {
                operator: member("op-a", &OperatorKey::generate(), &[Role::Issuer]),
            },
        )
        .await;
    let r = refusal(f.ledger.submit(readmit).await);
    assert!(r.to_string().contains("was already a member"), "{r}");
    // The removed admin's requests are refused; its past entries still audit.
    let req = f.request(&f.a, spend(tokens(0, "op-a", 1))).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::UnknownOperator { .. }
    ));
    let entries = f.ledger.entries(0, 1000).await.expect("log");
    scrip_ledger::audit::audit(&entries).expect("still clean");
}

/// Issuance reports tile time from the key's `valid_from`, so none reveals when an opening
/// happened.
pub async fn issuance_reports_tile_time(f: Fixture) {
    let info = f.announce(&f.a, "op-a", 0, "queue").await;
    let key = info.public_key.id();
    let report = |from, until| Action::TokensIssued {
        token_key_id: key,
        count: 4,
        from,
        until,
    };
    let t = f.now();
    for (from, until) in [
        (info.valid_from + 1, t),
        (0, t),
        (info.valid_from, t + 3600),
    ] {
        let req = f.request(&f.a, report(from, until)).await;
        let r = refusal(f.ledger.submit(req).await);
        assert!(
            r.to_string().contains("previous report"),
            "{from}..{until}: {r}"
        );
    }
    f.ledger
        .submit(f.request(&f.a, report(info.valid_from, t)).await)
        .await
        .expect("the first report starts at valid_from");
    let req = f.request(&f.a, report(info.valid_from, t)).await;
    assert!(
        refusal(f.ledger.submit(req).await)
            .to_string()
            .contains("previous report")
    );
    f.ledger
        .submit(f.request(&f.a, report(t, t + 1)).await)
        .await
        .expect("the next starts where it ended");
    let record = &f.ledger.keys(None, None).await[0];
    assert_eq!((record.issued, record.reported_until), (8, t + 1));
}

/// A store that can hold an append half-way, as a slow disk would.
struct PausingStore {
    inner: Arc<dyn scrip_ledger::Store>,
    armed: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl scrip_ledger::Store for PausingStore {
    async fn append(
        &self,
        entry: &scrip_spec::ledger::LogEntry,
        hash: &Hash32,
        effect: &scrip_ledger::store::Effect,
    ) -> Result<scrip_ledger::store::AppendOutcome, StoreError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.append(entry, hash, effect).await
    }
    async fn request_seq(&self, digest: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        self.inner.request_seq(digest).await
    }
    async fn snapshot(&self) -> Result<Option<scrip_ledger::store::Snapshot>, StoreError> {
        self.inner.snapshot().await
    }
    async fn entries(
        &self,
        from: u64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<scrip_spec::ledger::LogEntry>, StoreError> {
        self.inner.entries(from, limit, max_bytes).await
    }
    async fn spent_set(&self) -> Result<Vec<(scrip_spec::Nullifier, TokenKeyId, u64)>, StoreError> {
        self.inner.spent_set().await
    }
    async fn nullifier(
        &self,
        n: &scrip_spec::Nullifier,
    ) -> Result<Option<scrip_ledger::store::FirstSpend>, StoreError> {
        self.inner.nullifier(n).await
    }
    async fn spent_between(
        &self,
        low: &scrip_spec::Nullifier,
        high: &scrip_spec::Nullifier,
        limit: u32,
    ) -> Result<Vec<(scrip_spec::Nullifier, scrip_ledger::store::FirstSpend)>, StoreError> {
        self.inner.spent_between(low, high, limit).await
    }
    async fn totals(&self) -> Result<Totals, StoreError> {
        self.inner.totals().await
    }
    async fn prune(
        &self,
        key: &TokenKeyId,
        record: &scrip_ledger::store::PruneRecordFn<'_>,
    ) -> Result<Option<scrip_spec::ledger::LogEntry>, StoreError> {
        self.inner.prune(key, record).await
    }
    async fn add_cosignature(
        &self,
        seq: u64,
        c: &scrip_spec::Signed<scrip_spec::ledger::Cosignature>,
    ) -> Result<(), StoreError> {
        self.inner.add_cosignature(seq, c).await
    }
    async fn cosignatures(
        &self,
        seq: u64,
    ) -> Result<Vec<scrip_spec::Signed<scrip_spec::ledger::Cosignature>>, StoreError> {
        self.inner.cosignatures(seq).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<scrip_spec::ledger::LogEntry>, StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn size_bytes(&self) -> Result<u64, StoreError> {
        self.inner.size_bytes().await
    }
    async fn write_probe(&self) -> Result<(), StoreError> {
        self.inner.write_probe().await
    }
    async fn set_consensus_session(&self, session: u64) -> Result<(), StoreError> {
        self.inner.set_consensus_session(session).await
    }
    async fn consensus_session(&self) -> Result<Option<u64>, StoreError> {
        self.inner.consensus_session().await
    }
}

/// Reads never wait for the writer: with a large spend held half-way through its commit,
/// info, the key directory, a nullifier's status and the log are all answered.
pub async fn readers_are_answered_while_a_spend_is_being_written(f: Fixture) {
    f.announce(&f.a, "op-a", 0, "queue").await;
    let store = Arc::new(PausingStore {
        inner: f.ledger.store().clone(),
        armed: std::sync::atomic::AtomicBool::new(false),
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let ledger = Arc::new(
        Ledger::open(store.clone(), OperatorKey::from_seed(&f.ledger_key_seed))
            .await
            .expect("open"),
    );
    let batch = tokens(0, "op-a", 1000);
    let first = batch[0].nullifier();
    let req = f.request(&f.b, spend(batch)).await;
    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let writing = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.submit(req).await }
    });
    store.entered.notified().await;
    let reads = async {
        let info = ledger.info().await;
        let keys = ledger.keys(None, None).await;
        let status = ledger.nullifier(&first).await.expect("nullifier");
        let by_prefix = ledger
            .spent_with_prefix(&scrip_spec::api::ledger::NullifierPrefix::of(&first, 1))
            .await
            .expect("prefix query");
        assert!(by_prefix.0.is_empty(), "nothing spent yet");
        let log = ledger.entries(0, 10).await.expect("log");
        (info, keys, status, log)
    };
    // Generous: the reads take milliseconds; before issue 14 they waited for the writer
    // forever here.
    let (info, keys, status, log) = tokio::time::timeout(std::time::Duration::from_secs(20), reads)
        .await
        .expect("readers answered while the writer holds its lock");
    assert_eq!(keys.len(), 1);
    assert!(status.is_none(), "not spent yet");
    assert_eq!(log.len() as u64, info.head_seq + 1);
    store.release.notify_one();
    let receipt = writing.await.expect("task").expect("spent");
    assert_eq!(receipt.spends.len(), 1000);
    assert!(ledger.nullifier(&first).await.expect("query").is_some());
    assert_eq!(ledger.info().await.head_seq, info.head_seq + 1);
}

/// A copy of the database with one row deleted from its spent set (so that its token could be
/// spent again) is refused by a starting ledger, and the audit of the copy names the row.
pub async fn a_spent_set_that_disagrees_with_the_log_is_refused_at_start(f: Fixture) {
    f.announce(&f.a, "op-a", 0, "queue").await;
    let batch = tokens(0, "op-a", 3);
    f.ledger
        .submit(f.request(&f.b, spend(batch.clone())).await)
        .await
        .expect("spend");
    // Log pages are bounded in bytes as well as entries: one byte still returns one entry.
    let store = f.ledger.store().clone();
    assert_eq!(store.entries(0, 1000, 1).await.expect("page").len(), 1);
    assert!(store.entries(0, 1000, u64::MAX).await.expect("page").len() > 1);

    assert!(f.reopen().await.is_ok(), "an untouched database opens");
    let victim = batch[1].nullifier();
    let deleted = f
        .tamper("DELETE FROM spent WHERE nullifier = $1", Some(&victim.0))
        .await;
    assert_eq!(deleted, 1);
    match f.reopen().await {
        Err(LedgerError::DerivedStateMismatch(e)) => {
            assert!(e.to_string().contains(&victim.to_string()), "{e}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a ledger started on a spent set missing a row"),
    }
    let store = scrip_ledger::store::connect_read_only(&f.url)
        .await
        .expect("copy");
    let entries = store.entries(0, 1000, u64::MAX).await.expect("log");
    let mut auditor = scrip_ledger::audit::Auditor::default();
    for e in &entries {
        auditor.feed(e).expect("the log itself is intact");
    }
    let mismatch = scrip_ledger::audit::compare_with_store(&auditor, store.as_ref())
        .await
        .expect_err("the audit of the copy finds it");
    assert!(
        mismatch.to_string().contains("missing from the spent set"),
        "{mismatch}"
    );
}

/// A request whose digest was removed from the replay index could be applied a second time:
/// a starting ledger refuses the database.
pub async fn a_request_missing_from_the_replay_index_is_refused_at_start(f: Fixture) {
    f.announce(&f.a, "op-a", 0, "queue").await;
    let req = f.request(&f.b, spend(tokens(0, "op-a", 2))).await;
    let seq = f
        .ledger
        .submit(req)
        .await
        .expect("spend")
        .seq
        .expect("appended");
    let changed = f
        .tamper(
            &format!("UPDATE entries SET request_digest = NULL WHERE seq = {seq}"),
            None,
        )
        .await;
    assert_eq!(changed, 1);
    match f.reopen().await {
        Err(LedgerError::DerivedStateMismatch(e)) => {
            assert!(e.to_string().contains("replay index"), "{e}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a ledger started with a request missing from its replay index"),
    }
}

/// A prefix query (what a wallet asks instead of a nullifier it holds) returns every spent
/// nullifier with the prefix, with its first spend, and nothing else; the store's bound holds.
pub async fn prefix_queries_return_exactly_the_spent_nullifiers_with_the_prefix(f: Fixture) {
    use scrip_spec::api::ledger::NullifierPrefix;
    use std::collections::BTreeSet;
    f.announce(&f.a, "op-a", 0, "queue").await;
    let batch = tokens(0, "op-a", 300);
    let (spent, held) = batch.split_at(200);
    let receipt = f
        .ledger
        .submit(f.request(&f.b, spend(spent.to_vec())).await)
        .await
        .expect("spend");
    let spent_set: BTreeSet<scrip_spec::Nullifier> = spent.iter().map(Token::nullifier).collect();
    for (t, len) in held.iter().take(20).zip([1usize, 2].into_iter().cycle()) {
        let n = t.nullifier();
        let prefix = NullifierPrefix::of(&n, len);
        let (rows, complete) = f.ledger.spent_with_prefix(&prefix).await.expect("query");
        assert!(complete);
        let got: BTreeSet<_> = rows.iter().map(|(n, _, _)| *n).collect();
        let expected: BTreeSet<_> = spent_set
            .iter()
            .copied()
            .filter(|s| prefix.matches(s))
            .collect();
        assert_eq!(got, expected, "prefix {prefix}");
        assert!(!got.contains(&n), "a held token is not spent");
        for (_, first, name) in &rows {
            assert_eq!(name, "op-b");
            assert_eq!(Some(first.seq), receipt.seq);
        }
    }
    // A spent nullifier is found by its own prefix.
    let one = spent[7].nullifier();
    let (rows, _) = f
        .ledger
        .spent_with_prefix(&NullifierPrefix::of(&one, 3))
        .await
        .expect("query");
    assert!(rows.iter().any(|(n, _, _)| *n == one));
    // The store returns the smallest nullifiers of the range first, at most `limit`.
    let first_ten = f
        .ledger
        .store()
        .spent_between(
            &scrip_spec::Nullifier([0; 32]),
            &scrip_spec::Nullifier([0xff; 32]),
            10,
        )
        .await
        .expect("range");
    let smallest: Vec<_> = spent_set.iter().copied().take(10).collect();
    assert_eq!(
        first_ten.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        smallest
    );
}

/// A refresh of `inputs` by `by` into `outputs` (key, count).
fn refresh(inputs: Vec<Token>, outputs: &[(TokenKeyId, u64)]) -> Action {
    let Action::Spend { groups } = spend(inputs) else {
        unreachable!("spend_of makes a spend")
    };
    Action::Refresh {
        inputs: groups,
        outputs: outputs
            .iter()
            .map(|(token_key_id, count)| scrip_spec::ledger::RefreshOutput {
                token_key_id: *token_key_id,
                count: *count,
            })
            .collect(),
    }
}

/// A refresh spends its inputs (all or none) and issues its outputs, only among the signer's
/// own keys and for no more value; every refusal leaves the log as it was, and the audit
/// stays clean with settlement blind to the swap.
pub async fn refreshes_swap_own_tokens_for_no_more_value(f: Fixture) {
    let chunk = f
        .announce(&f.a, "op-a", 0, "chunk-64k")
        .await
        .public_key
        .id();
    let big = f
        .announce(&f.a, "op-a", 1, "chunk-4m")
        .await
        .public_key
        .id();
    let foreign = f
        .announce(&f.b, "op-b", 2, "chunk-64k")
        .await
        .public_key
        .id();
    // What the issuer sold and signed by openings: 30 chunk-64k and one chunk-4m.
    let sold = Action::CardsSold {
        batch: "b".into(),
        count: 1,
        credits: 100,
    };
    f.ledger
        .submit(f.request(&f.a, sold).await)
        .await
        .expect("sold");
    for (key, count) in [(chunk, 30), (big, 1)] {
        let from = f.ledger.keys(Some("op-a"), None).await;
        let from = from
            .iter()
            .find(|k| k.info.public_key.id() == key)
            .expect("key")
            .reported_until;
        let report = Action::TokensIssued {
            token_key_id: key,
            count,
            from,
            until: f.now(),
        };
        f.ledger
            .submit(f.request(&f.a, report).await)
            .await
            .expect("reported");
    }
    let ins = tokens(0, "op-a", 30);

    // Accepted: 12 chunk-64k (12 credits) for one chunk-4m (12) and nothing left over.
    let receipt = f
        .ledger
        .submit(
            f.request(&f.a, refresh(ins[..12].to_vec(), &[(big, 1)]))
                .await,
        )
        .await
        .expect("refreshed");
    let refreshed_at = receipt.seq.expect("appended");
    assert!(receipt.spends.is_empty());
    let keys = f.ledger.keys(Some("op-a"), None).await;
    let record = |id| {
        keys.iter()
            .find(|k| k.info.public_key.id() == id)
            .expect("key")
    };
    assert_eq!((record(chunk).spent, record(big).issued), (12, 1 + 1));
    let first = ins[0].nullifier();
    let (spent, by) = f
        .ledger
        .nullifier(&first)
        .await
        .expect("read")
        .expect("spent");
    assert_eq!((spent.seq, by.as_str()), (refreshed_at, "op-a"));

    // A refreshed token spent later anywhere is already spent, with the refresh's time.
    let later = f
        .ledger
        .submit(f.request(&f.b, spend(vec![ins[0].clone()])).await)
        .await;
    match &later.expect("answered").spends[0].status {
        SpendStatus::AlreadySpent {
            seq,
            first_spent_by,
            ..
        } => {
            assert_eq!((*seq, first_spent_by.as_str()), (refreshed_at, "op-a"));
        }
        other => panic!("expected already spent, got {other:?}"),
    }

    let head = f.ledger.info().await.head_seq;
    // Worth more than the inputs: 11 credits for 12.
    let r = refusal(
        f.ledger
            .submit(
                f.request(&f.a, refresh(ins[12..23].to_vec(), &[(big, 1)]))
                    .await,
            )
            .await,
    );
    assert!(r.to_string().contains("more than its inputs' 11"), "{r}");
    // Foreign keys: op-b's tokens as inputs, op-b's key as output, op-b refreshing op-a's.
    let r = refusal(
        f.ledger
            .submit(
                f.request(&f.a, refresh(tokens(2, "op-b", 1), &[(chunk, 1)]))
                    .await,
            )
            .await,
    );
    assert!(matches!(r, Refusal::Forbidden { .. }), "{r}");
    let r = refusal(
        f.ledger
            .submit(
                f.request(&f.a, refresh(ins[12..13].to_vec(), &[(foreign, 1)]))
                    .await,
            )
            .await,
    );
    assert!(matches!(r, Refusal::Forbidden { .. }), "{r}");
    let r = refusal(
        f.ledger
            .submit(
                f.request(&f.b, refresh(ins[12..13].to_vec(), &[(chunk, 1)]))
                    .await,
            )
            .await,
    );
    assert!(matches!(r, Refusal::Forbidden { .. }), "{r}");
    // An input spent before, next to fresh ones: refused whole, with the first spend.
    let r = refusal(
        f.ledger
            .submit(
                f.request(
                    &f.a,
                    refresh(vec![ins[12].clone(), ins[0].clone()], &[(chunk, 2)]),
                )
                .await,
            )
            .await,
    );
    assert!(
        matches!(
            &r,
            Refusal::AlreadySpent { index: 1, seq, first_spent_by, .. }
                if *seq == refreshed_at && first_spent_by == "op-a"
        ),
        "{r}"
    );
    // An input twice in one request.
    let r = refusal(
        f.ledger
            .submit(
                f.request(
                    &f.a,
                    refresh(vec![ins[12].clone(), ins[12].clone()], &[(chunk, 1)]),
                )
                .await,
            )
            .await,
    );
    assert!(r.to_string().contains("appears earlier"), "{r}");
    // A forged input: refused as a whole, like a spend.
    let mut forged = ins[13].clone();
    forged.authenticator[7] ^= 1;
    let r = refusal(
        f.ledger
            .submit(f.request(&f.a, refresh(vec![forged], &[(chunk, 1)])).await)
            .await,
    );
    assert!(matches!(r, Refusal::InvalidToken { index: 0, .. }), "{r}");
    // No outputs, or an output of count 0.
    let r = refusal(
        f.ledger
            .submit(
                f.request(&f.a, refresh(ins[12..13].to_vec(), &[(chunk, 0)]))
                    .await,
            )
            .await,
    );
    assert!(matches!(r, Refusal::Invalid { .. }), "{r}");
    assert_eq!(f.ledger.info().await.head_seq, head, "nothing appended");
    for t in &ins[12..14] {
        assert!(
            f.ledger
                .nullifier(&t.nullifier())
                .await
                .expect("read")
                .is_none()
        );
    }

    // Less value out than in is fine (the rest is given up), and mixed kinds out.
    f.ledger
        .submit(
            f.request(&f.a, refresh(ins[12..26].to_vec(), &[(big, 1), (chunk, 1)]))
                .await,
        )
        .await
        .expect("refreshed");
    // A real spend of an output-key token at op-b, for settlement.
    f.ledger
        .submit(f.request(&f.b, spend(tokens(1, "op-a", 1))).await)
        .await
        .expect("spend");
    f.ledger.checkpoint().await.expect("checkpoint");

    let entries = f.ledger.entries(0, 1000).await.expect("log");
    let audit = scrip_ledger::audit::audit(&entries).expect("clean");
    assert!(audit.alarms.is_empty(), "{:?}", audit.alarms);
    let t = |id| {
        audit
            .totals
            .keys
            .iter()
            .find(|k| k.token_key_id == id)
            .expect("key")
    };
    assert_eq!((t(chunk).spent, t(chunk).issued), (26, 31));
    assert_eq!((t(big).spent, t(big).issued), (1, 3));
    // Only the real spend settles: one chunk-4m at op-b, nothing for the refreshes.
    assert_eq!(audit.settlement.len(), 1);
    let cell = &audit.settlement[&("op-a".to_string(), "op-b".to_string())];
    assert_eq!((cell.value, cell.owed), (12, 12));
    let op_a = audit
        .issuers
        .iter()
        .find(|i| i.issuer == "op-a")
        .expect("op-a");
    // Value issued is what openings signed (30 + 12 credits), not the refreshes' outputs.
    assert_eq!((op_a.value_issued, op_a.value_redeemed), (42, 12));
    // The ledger's own start-up check agrees with the store.
    f.reopen().await.expect("derived state agrees with the log");
}

/// The audit of a key's issuance: spends beyond the reported count are a note while they are
/// of tokens issued since the key's last report, and an alarm once a report should have
/// counted them: spends recorded before its `until` (less the clock skew), an issuer later
/// than the grace, or a key whose issuance is reported to the end of its window (issue 18).
pub async fn the_audit_tells_unreported_spends_from_over_issuance(f: Fixture) {
    use scrip_ledger::audit::{AuditReport, Period, ReportOptions, audit_with};
    let info = f.announce(&f.a, "op-a", 0, "queue").await;
    let key = info.public_key.id();
    let report = |token_key_id, from, until, count| Action::TokensIssued {
        token_key_id,
        count,
        from,
        until,
    };
    let submit = async |by: &OperatorKey, action: Action| {
        let req = f.request(by, action).await;
        f.ledger.submit(req).await.expect("accepted");
    };
    let audit_at = async |now: u64, report_grace: u64| -> AuditReport {
        let entries = f.ledger.entries(0, 1000).await.expect("log");
        let options = ReportOptions {
            report_grace,
            now,
            ..ReportOptions::new(Period::all())
        };
        audit_with(&entries, &options).expect("clean")
    };
    let about = |found: &[String], key: TokenKeyId| -> Vec<String> {
        let key = key.to_string();
        found.iter().filter(|m| m.contains(&key)).cloned().collect()
    };
    let the_one = |found: &[String], key: TokenKeyId| -> String {
        let mine = about(found, key);
        assert_eq!(mine.len(), 1, "one finding about {key}: {found:?}");
        mine[0].clone()
    };

    // Two tokens reported, five spent just after the report: a note, not an alarm, and the
    // note says how many are not yet reported.
    let t = f.now();
    submit(&f.a, report(key, info.valid_from, t, 2)).await;
    let minted = tokens(0, "op-a", 6);
    submit(&f.b, spend(minted[..5].to_vec())).await;
    let fresh = audit_at(f.now(), 7_200).await;
    assert!(about(&fresh.alarms, key).is_empty(), "{:?}", fresh.alarms);
    let note = the_one(&fresh.notes, key);
    assert!(
        note.contains("3 spent since its last issuance report")
            && note.contains("not yet reported"),
        "{note}"
    );

    // The same log audited when the last report is older than the grace: the issuer is late.
    let late = audit_at(f.now() + 7_300, 7_200).await;
    let alarm = the_one(&late.alarms, key);
    assert!(
        alarm.contains(&format!("has not reported key {key} since")),
        "{alarm}"
    );
    assert!(about(&late.notes, key).is_empty());
    let longer = audit_at(f.now() + 7_300, 8_000).await;
    assert!(
        about(&longer.alarms, key).is_empty(),
        "a longer grace keeps it a note"
    );

    // The next report ends 1000 s later and counts one more: the five spends were recorded
    // before its end less the clock skew, so they exceed what was issued by then.
    f.advance(1_000);
    submit(&f.a, report(key, t, f.now(), 1)).await;
    submit(&f.b, spend(minted[5..].to_vec())).await;
    // Only the five count (the sixth came after the report), and however long the grace.
    let over = audit_at(f.now(), u64::MAX).await;
    let alarm = the_one(&over.alarms, key);
    assert!(alarm.contains("5 spent but 3 reported issued"), "{alarm}");
    assert!(about(&over.notes, key).is_empty(), "{:?}", over.notes);

    // A key past its issuing window, reported to its end, has nothing left to report: any
    // excess is an alarm at once.
    let done = f.announce(&f.a, "op-a", 1, "chunk-1m").await;
    let done_key = done.public_key.id();
    f.advance(done.issue_until + 10 - f.now());
    submit(&f.a, report(done_key, done.valid_from, f.now(), 1)).await;
    submit(&f.b, spend(tokens(1, "op-a", 2))).await;
    let finished = audit_at(f.now(), 7_200).await;
    let alarm = the_one(&finished.alarms, done_key);
    assert!(
        alarm.contains("2 spent but 1 reported issued")
            && alarm.contains("end of its issuing window"),
        "{alarm}"
    );
}
