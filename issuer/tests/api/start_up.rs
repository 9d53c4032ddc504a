//! The issuer starting: with its ledger down the local commands work from what the ledger
//! last said and `serve` waits for it; once serving, it reports what an earlier run counted.

use crate::helpers::{default_limits, spawn, spawn_behind_ledger_proxy};
use scrip_issuer::{Issuer, IssuerConfig};
use scrip_testkit::Fault;
use std::time::Duration;

async fn batch_state(issuer: &Issuer, batch: &str) -> String {
    issuer
        .store()
        .batches()
        .await
        .expect("batches")
        .into_iter()
        .find(|b| b.batch_id == batch)
        .expect("the batch")
        .state
}

#[tokio::test]
async fn local_commands_work_with_the_ledger_down_and_what_they_queue_lands_later() {
    let (t, proxy) = spawn_behind_ledger_proxy().await;
    let config = t.issuer.config().clone();
    proxy.set(Fault::RefuseConnection);

    // What `serve` does gives up once its wait is over, naming what it waited for.
    let no_wait = IssuerConfig {
        ledger_wait_secs: 0,
        ..config.clone()
    };
    let refused = Issuer::open(no_wait).await.expect_err("the ledger is down");
    assert!(
        format!("{refused:#}").contains("cannot reach the ledger"),
        "{refused:#}"
    );

    // A local command opens from the ledger id and catalog the store kept.
    let local = Issuer::open_local(config.clone())
        .await
        .expect("opens without the ledger");
    let listed: Vec<_> = local
        .public_keys()
        .keys
        .iter()
        .map(|k| k.public_key.id())
        .collect();
    let served: Vec<_> = t
        .issuer
        .public_keys()
        .keys
        .iter()
        .map(|k| k.public_key.id())
        .collect();
    assert!(!listed.is_empty());
    assert_eq!(listed, served, "the key list is the store's");
    let (batch, codes) = local.mint_cards(25, 3).await.expect("mint offline");
    assert_eq!(codes.len(), 3);
    assert!(
        !local
            .activate_batch(&batch)
            .await
            .expect("activation is queued"),
        "the sale cannot be on the ledger yet"
    );
    assert_eq!(batch_state(&local, &batch).await, "activating");

    // Rotation needs the ledger (a key is usable only once announced) and makes no key.
    let keys_before = local.store().keys().await.expect("keys").len();
    let refused = local.rotate_keys().await.expect_err("no rotation offline");
    assert!(
        format!("{refused:#}").contains("only while the ledger"),
        "{refused:#}"
    );
    assert_eq!(local.store().keys().await.expect("keys").len(), keys_before);

    // The ledger back: the queued sale lands once, and the cards open.
    proxy.set(Fault::Forward);
    assert_eq!(local.flush_outbox().await.expect("flush"), 1);
    assert_eq!(batch_state(&local, &batch).await, "active");
    let totals = t.ledger.ledger.totals().await.expect("totals");
    let sold: Vec<_> = totals
        .issuers
        .iter()
        .map(|i| (i.issuer.as_str(), i.cards_sold, i.credits_sold))
        .collect();
    assert_eq!(sold, [("op-a", 3, 75)], "the sale landed once");
}

#[tokio::test]
async fn an_issuer_that_never_reached_its_ledger_says_so() {
    let (t, proxy) = spawn_behind_ledger_proxy().await;
    proxy.set(Fault::RefuseConnection);
    let fresh = IssuerConfig {
        database: format!("sqlite://{}", t.dir.path().join("fresh.db").display()),
        ..t.issuer.config().clone()
    };
    let refused = Issuer::open_local(fresh)
        .await
        .expect_err("no ledger id to sign for");
    let message = format!("{refused:#}");
    assert!(message.contains("never reached its ledger"), "{message}");
    assert!(message.contains("cannot reach the ledger"), "{message}");
}

#[tokio::test]
async fn serve_waits_for_a_ledger_that_starts_later() {
    let (t, proxy) = spawn_behind_ledger_proxy().await;
    proxy.set(Fault::RefuseConnection);
    let waiting = IssuerConfig {
        ledger_wait_secs: 60,
        ..t.issuer.config().clone()
    };
    let opening = tokio::spawn(Issuer::open(waiting));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!opening.is_finished(), "it waits while the ledger is down");
    let tried = proxy.connections();
    assert!(
        tried >= 2,
        "it tried again with backoff ({tried} connections)"
    );
    proxy.set(Fault::Forward);
    let issuer = opening
        .await
        .expect("task")
        .expect("opens once the ledger answers");
    assert_eq!(
        issuer.public_keys().keys.len(),
        t.issuer.public_keys().keys.len()
    );
}

#[tokio::test]
async fn serve_reports_at_start_up_what_an_earlier_run_counted() {
    let t = spawn(default_limits()).await;
    let seed = scrip_spec::WalletSeed::generate();
    let tokens = t
        .open_tokens(&seed, 0, &["queue", "queue", "chunk-64k"])
        .await;
    assert_eq!(tokens.len(), 3);
    let issued = || async {
        let totals = t.ledger.ledger.totals().await.expect("totals");
        totals.keys.iter().map(|k| k.issued).sum::<u64>()
    };
    assert_eq!(
        issued().await,
        0,
        "the running service reports every report_secs (3600)"
    );

    // Another run of the service over the same store (as after a crash that missed the final
    // report) reports at start-up, not an interval later.
    let again = scrip_issuer::Application::new(t.issuer.clone())
        .await
        .expect("bind");
    let serving = tokio::spawn(again.run_until(std::future::pending()));
    let mut reported = 0;
    for _ in 0..100 {
        reported = issued().await;
        if reported == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serving.abort();
    assert_eq!(reported, 3, "the start-up report carries the three tokens");
}
