//! A committee prunes by itself: once the agreed time passes a key's `forget_after`, every
//! node drops the key's spent set at the same place in the order, with the same record; a
//! node that was down then replays that record when it catches up, and the audit checks it.

use super::Committee;
use scrip_spec::TokenKeyInfo;
use scrip_spec::ledger::Action;
use scrip_testkit::mint_tokens;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_prunes_a_key_past_its_forget_after_at_the_same_place() {
    // Sessions of about two seconds; keys may be spendable for as little as a second.
    let mut c = Committee::start_configured(4, 40, 1).await;
    let secret = scrip_spec::TokenSecretKey::generate().expect("keygen");
    let t = scrip_spec::now();
    let short = TokenKeyInfo {
        public_key: secret.public_key().clone(),
        issuer: "issuer".into(),
        kind: "queue".parse().expect("kind"),
        valid_from: t - 10,
        issue_until: t + 4,
        redeem_until: t + 5,
        forget_after: t + 6,
    };
    let key_id = short.public_key.id();
    for key in [c.key.clone(), short.clone()] {
        let announce = c.request(&c.issuer, Action::AnnounceKey { key });
        c.client(0).submit(&announce).await.expect("announced");
    }
    let tokens = mint_tokens(&secret, "issuer", 5);
    let spend = c.request(&c.relay_a, Action::spend_of(tokens.clone()));
    c.client(1).submit(&spend).await.expect("spent");
    let kept = mint_tokens(&c.secret, "issuer", 2);
    let spend = c.request(&c.relay_b, Action::spend_of(kept));
    c.client(2).submit(&spend).await.expect("spent");

    // Node 3 is down when the key is pruned; it catches up afterwards.
    c.stop_node(3).await;
    let started = Instant::now();
    loop {
        let ledger = c.nodes[0].ledger.as_ref().expect("up");
        if ledger.view().keys[&key_id].pruned == 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the committee never pruned the key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.start_node(3).await;
    c.agreed_head_within(Duration::from_secs(60)).await;

    let mut logs = Vec::new();
    for node in &c.nodes {
        let ledger = node.ledger.as_ref().expect("up");
        logs.push(ledger.entries(0, 1000).await.expect("log"));
        let record = &ledger.view().keys[&key_id];
        assert_eq!((record.spent, record.pruned), (5, 5));
        assert!(
            ledger
                .store()
                .spent_set()
                .await
                .expect("spent set")
                .iter()
                .all(|(_, k, _)| *k != key_id),
            "the key's spent set is gone"
        );
    }
    for log in &logs[1..] {
        assert_eq!(log, &logs[0], "one log, the pruning record included");
    }
    let pruned: Vec<_> = logs[0]
        .iter()
        .filter_map(|e| match &e.body {
            scrip_spec::ledger::EntryBody::CommitteePruned(p) => Some((e.ordered, p)),
            _ => None,
        })
        .collect();
    assert_eq!(pruned.len(), 1, "pruned once");
    assert_eq!(pruned[0].1.count, 5);
    assert!(pruned[0].0.is_some_and(|at| at.request >= 1 << 31));
    scrip_ledger::audit::audit(&logs[0]).expect("the audit checks the record");
    // The one-node command is refused: a record one node made alone would fork the log.
    let refused = c.nodes[0]
        .ledger
        .as_ref()
        .expect("up")
        .prune(&key_id)
        .await
        .expect_err("refused on a committee");
    assert!(
        refused.to_string().contains("prunes by itself"),
        "{refused}"
    );

    // A record that does not match the spends is tampering.
    let mut forged = logs[0].clone();
    let at = forged
        .iter()
        .position(|e| matches!(e.body, scrip_spec::ledger::EntryBody::CommitteePruned(_)))
        .expect("the record");
    if let scrip_spec::ledger::EntryBody::CommitteePruned(p) = &mut forged[at].body {
        p.count = 4;
    }
    for i in at + 1..forged.len() {
        forged[i].prev_hash = forged[i - 1].hash();
    }
    let refused = scrip_ledger::audit::audit(&forged).expect_err("tampering");
    assert!(refused.problem.contains("pruning record"), "{refused:?}");
    for i in 0..4 {
        c.stop_node(i).await;
    }
}
