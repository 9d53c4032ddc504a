//! The cases, each taking a fresh fixture.

use crate::support::{Fixture, key_info, random_nullifier};
use scrip_ledger::rules::Refusal;
use scrip_ledger::{Ledger, LedgerError, StoreError};
use scrip_spec::api::ledger::{SpendRefusal, SpendStatus};
use scrip_spec::ledger::{
    Action, Checkpoint, EntryBody, Hash32, LedgerRequest, MAX_LIVE_KEYS, SpendGroup, Totals,
};
use scrip_spec::now;
use scrip_spec::{Nullifier, OperatorKey, TokenKeyId};
use std::collections::HashMap;
use std::sync::Arc;

fn spend(key: TokenKeyId, nullifiers: Vec<Nullifier>) -> Action {
    Action::Spend {
        groups: vec![SpendGroup {
            token_key_id: key,
            nullifiers,
        }],
    }
}

fn refusal(result: Result<scrip_spec::api::ledger::Receipt, LedgerError>) -> Refusal {
    match result {
        Err(LedgerError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The outcome of op-b's spend of a fresh nullifier under `key`.
async fn spend_fresh(f: &Fixture, key: TokenKeyId) -> SpendStatus {
    let req = f.request(&f.b, spend(key, vec![random_nullifier()])).await;
    let receipt = f.ledger.submit(req).await.expect("answered");
    receipt.spends[0].status.clone()
}

/// An admin's revocation of `token_key_id`.
fn revoke_key(token_key_id: TokenKeyId, reason: &str) -> Action {
    Action::RevokeKey {
        token_key_id,
        reason: reason.into(),
    }
}

pub async fn racing_redeemers_spend_each_nullifier_exactly_once(f: Fixture) {
    let key = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    let nullifiers: Vec<Nullifier> = (0..1000).map(|_| random_nullifier()).collect();
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    // 16 tasks, half for each redeemer, each trying every nullifier in batches of 50, in
    // different orders, so that batches of the two redeemers overlap.
    for t in 0..16usize {
        let f = f.clone();
        let mut mine = nullifiers.clone();
        mine.rotate_left(t * 61 % 1000);
        if t % 3 == 0 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let by = if t % 2 == 0 { &f.a } else { &f.b };
            let mut accepted = 0usize;
            let mut refused = 0usize;
            for chunk in mine.chunks(50) {
                let req = f.request(by, spend(key, chunk.to_vec())).await;
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
    assert_eq!(totals.keys[0].spent, 1000);
    for n in &nullifiers[..10] {
        let (first, name) = f.ledger.nullifier(n).await.expect("query").expect("spent");
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
    let n = random_nullifier();

    // Unknown operator.
    let req = f.request(&f.outsider, spend(key, vec![n])).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::UnknownOperator { .. }
    ));

    // A member's name with someone else's signature: the payload is changed after signing.
    let mut forged = f.request(&f.b, spend(key, vec![n])).await;
    forged.payload.timestamp += 1;
    assert_eq!(
        refusal(f.ledger.submit(forged).await),
        Refusal::BadSignature
    );
    let mut stolen_name = f.request(&f.outsider, spend(key, vec![n])).await;
    stolen_name.signer = f.b.id();
    assert_eq!(
        refusal(f.ledger.submit(stolen_name).await),
        Refusal::BadSignature
    );

    // Signed for another ledger.
    let other = f.b.sign(LedgerRequest::new(
        Hash32([7; 32]),
        now(),
        spend(key, vec![n]),
    ));
    assert_eq!(refusal(f.ledger.submit(other).await), Refusal::WrongLedger);

    // Stale.
    let id = f.ledger.info().await.ledger_id;
    let stale =
        f.b.sign(LedgerRequest::new(id, now() - 3600, spend(key, vec![n])));
    assert!(matches!(
        refusal(f.ledger.submit(stale).await),
        Refusal::Stale { .. }
    ));

    // Role: op-b is not an admin.
    let req = f
        .request(
            &f.b,
            Action::SetCatalog {
                catalog: scrip_spec::Catalog::standard(),
            },
        )
        .await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::Forbidden { .. }
    ));

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

    // Too large a batch.
    let big: Vec<Nullifier> = (0..10_001).map(|_| random_nullifier()).collect();
    let req = f.request(&f.b, spend(key, big)).await;
    assert!(matches!(
        refusal(f.ledger.submit(req).await),
        Refusal::TooLarge { .. }
    ));

    assert_eq!(f.ledger.info().await.head_seq, head, "nothing appended");
    assert!(f.ledger.nullifier(&n).await.expect("query").is_none());

    // Replay: the first submission is accepted, the identical second is refused.
    let req = f.request(&f.b, spend(key, vec![n])).await;
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
        spend(key, vec![random_nullifier()]),
    ));
    assert!(matches!(
        refusal(f.ledger.submit(late).await),
        Refusal::Stale { .. }
    ));

    // Unknown key: answered per nullifier, nothing appended.
    let req = f
        .request(&f.b, spend(TokenKeyId([9; 32]), vec![random_nullifier()]))
        .await;
    let receipt = f.ledger.submit(req).await.expect("answered");
    assert_eq!(receipt.seq, None);
    assert_eq!(
        receipt.spends[0].status,
        SpendStatus::Refused {
            reason: SpendRefusal::UnknownKey
        }
    );
    assert_eq!(f.ledger.info().await.head_seq, head);

    // One nullifier under an unknown key, then twice under the real key: refused, accepted,
    // duplicate; counted once everywhere.
    let m = random_nullifier();
    let mixed = Action::Spend {
        groups: vec![
            SpendGroup {
                token_key_id: TokenKeyId([9; 32]),
                nullifiers: vec![m],
            },
            SpendGroup {
                token_key_id: key,
                nullifiers: vec![m, m],
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
    let k0 = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
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
                from: 0,
                until: now(),
            },
        )
        .await;
    f.ledger.submit(issued).await.expect("issued");
    let both = Action::Spend {
        groups: vec![
            SpendGroup {
                token_key_id: k0,
                nullifiers: vec![random_nullifier(), random_nullifier()],
            },
            SpendGroup {
                token_key_id: k1,
                nullifiers: vec![random_nullifier()],
            },
        ],
    };
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
                    for n in &g.nullifiers {
                        if spent.insert(*n) {
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
    let fourth = key_info(MAX_LIVE_KEYS, "op-a", "queue", t, t + 10, t + 20, t + 30);
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
    let again = key_info(0, "op-a", "chunk-64k", t, t + 10, t + 20, t + 30);
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
        spend_fresh(&f, k0).await,
        SpendStatus::Refused {
            reason: SpendRefusal::KeyRevoked
        }
    );
    let t = now();
    let replacement = key_info(MAX_LIVE_KEYS, "op-a", "queue", t, t + 10, t + 20, t + 30);
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
    let info = key_info(2, "op-a", "chunk-64k", t - 10, t + 50, t + 100, t + 100);
    let key = info.public_key.id();
    let req = f.request(&f.a, Action::AnnounceKey { key: info }).await;
    f.ledger.submit(req).await.expect("announce");
    let spent: Vec<Nullifier> = (0..5).map(|_| random_nullifier()).collect();
    let req = f.request(&f.b, spend(key, spent.clone())).await;
    f.ledger.submit(req).await.expect("spend in window");
    assert!(
        matches!(
            f.ledger.prune(&key).await,
            Err(LedgerError::Refused(Refusal::Invalid { .. }))
        ),
        "not prunable before forget_after"
    );
    f.advance(101);

    assert_eq!(
        spend_fresh(&f, key).await,
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
    let totals = f.ledger.totals().await.expect("totals");
    assert_eq!((totals.keys[0].spent, totals.keys[0].pruned), (5, 5));
    assert!(
        f.ledger.prune(&key).await.expect("again").is_none(),
        "nothing left to prune"
    );
}

pub async fn state_survives_reopening_the_store(f: Fixture) {
    let key = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    let n = random_nullifier();
    f.ledger
        .submit(f.request(&f.b, spend(key, vec![n])).await)
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
    let again = f.a.sign(LedgerRequest::new(id, now(), spend(key, vec![n])));
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
    use scrip_spec::ledger::LogEntry;

    let key = f.announce(&f.a, "op-a", 0, "queue").await.public_key.id();
    let store = f.ledger.store().clone();
    let info = f.ledger.info().await;
    let (head, head_hash) = (info.head_seq, info.head_hash);
    let entry = |seq: u64, prev_hash: Hash32, req: &scrip_spec::Signed<LedgerRequest>| {
        let entry = LogEntry {
            seq,
            prev_hash,
            recorded_at: f.now(),
            body: EntryBody::Request(req.clone()),
        };
        let hash = entry.hash();
        (entry, hash)
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
    let n = random_nullifier();
    let spend_req = f.request(&f.b, spend(key, vec![n])).await;
    let spend_effect = Effect::Spend {
        groups: vec![SpendGroup {
            token_key_id: key,
            nullifiers: vec![n],
        }],
    };
    let spent = entry(head + 2, first.1, &spend_req);
    let respent = entry(head + 3, spent.1, &spend_req);
    append_then_replay(&*store, &spent, &respent, &spend_effect).await;

    // Neither refusal left a trace.
    let entries = store.entries(head + 1, 10).await.expect("entries");
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
