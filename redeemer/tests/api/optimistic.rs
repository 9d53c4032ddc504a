use crate::helpers::{Code, Sidecar, World, refusal, world};
use reqwest::StatusCode;
use scrip_redeemer::Mode;
use scrip_redeemer::store::NewGrant;
use scrip_testkit::spent_total;

/// A world, and optimistic sidecars of op-a and op-b.
async fn two_optimistic_relays() -> (World, Sidecar, Sidecar) {
    let w = world().await;
    let a = w.sidecar_of(0, Mode::Optimistic).await;
    let b = w.sidecar_of(1, Mode::Optimistic).await;
    (w, a, b)
}

/// Sends both sidecars' pending spends to the ledger, `a`'s first.
async fn flush_both(a: &Sidecar, b: &Sidecar) {
    a.redeemer.flush_pending().await.expect("flush a");
    b.redeemer.flush_pending().await.expect("flush b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_double_spend_across_optimistic_relays_is_caught_and_revoked() {
    let (w, a, b) = two_optimistic_relays().await;
    let token = w.token();
    // Both relays grant at once, before the ledger has heard of either spend.
    let (sa, ga) = a.redeem(&token, "queue").await;
    let (sb, gb) = b.redeem(&token, "queue").await;
    assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK));
    // The same relay refuses a second presentation once the grant is used.
    let ga = ga["grant"].as_str().expect("grant").to_owned();
    let gb = gb["grant"].as_str().expect("grant").to_owned();
    assert_eq!(a.consume(&ga, "queue").await.0, StatusCode::OK);
    assert_eq!(a.redeem(&token, "queue").await.0, StatusCode::CONFLICT);

    // The spends reach the ledger; one wins, the other's grant is revoked.
    flush_both(&a, &b).await;
    assert_eq!(
        refusal(b.consume(&gb, "queue").await),
        (StatusCode::FORBIDDEN, Code::GrantRevoked)
    );
    assert!(
        b.metrics()
            .await
            .contains("scrip_redeemer_optimistic_revoked_total 1")
    );
    assert!(
        a.metrics()
            .await
            .contains("scrip_redeemer_optimistic_revoked_total 0")
    );
    let status = scrip_common::clients::LedgerClient::new(&w.ledger.url)
        .nullifier(&token.nullifier())
        .await
        .expect("status");
    assert!(
        matches!(status, scrip_spec::api::ledger::NullifierStatus::Spent { ref spent_by, .. } if spent_by == "op-a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_grants_while_the_ledger_is_down_and_catches_up() {
    let mut w = world().await;
    let a = w.sidecar_of(0, Mode::Optimistic).await;
    w.stop_ledger();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let token = w.token();
    let (status, body) = a.redeem(&token, "queue").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        a.redeemer.flush_pending().await.expect("flush"),
        0,
        "nothing decided yet"
    );
    w.restart_ledger().await;
    // This flush or the background one (they take turns) sends it, once.
    assert!(a.redeemer.flush_pending().await.expect("flush") <= 1);
    assert_eq!(
        a.redeemer.flush_pending().await.expect("flush"),
        0,
        "nothing left"
    );
    assert_eq!(spent_total(&w.ledger.url).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_token_never_gets_a_new_grant_and_own_spends_are_not_revoked() {
    let (w, a, b) = two_optimistic_relays().await;
    let token = w.token();
    let both = (
        a.redeem(&token, "queue").await,
        b.redeem(&token, "queue").await,
    );
    assert_eq!((both.0.0, both.1.0), (StatusCode::OK, StatusCode::OK));
    flush_both(&a, &b).await;
    // b's spend was refused: presenting the token to b again must not buy anything.
    assert_eq!(
        refusal(b.redeem(&token, "queue").await),
        (StatusCode::CONFLICT, Code::AlreadySpent)
    );

    // a's flush committed; a pending row left behind (a crash before it was cleared) is
    // recognised as a's own spend on the next flush, and a's grant stays valid.
    let (_, body) = a.redeem(&token, "queue").await;
    let grant = body["grant"]
        .as_str()
        .expect("the same grant again before use")
        .to_owned();
    assert_eq!(Some(grant.as_str()), both.0.1["grant"].as_str());
    a.redeemer
        .store()
        .record_pending(&token, 0)
        .await
        .expect("store");
    assert_eq!(a.redeemer.flush_pending().await.expect("flush"), 1);
    assert!(
        a.metrics()
            .await
            .contains("scrip_redeemer_optimistic_revoked_total 0")
    );
    assert_eq!(
        a.consume(&grant, "queue").await.0,
        StatusCode::OK,
        "not revoked by its own spend"
    );
}

/// A pending spend whose stored token no longer verifies (the ledger refuses the whole batch
/// for it) holds back no other spend: the others are spent, its grant is revoked, and the
/// flush does not retry it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_pending_token_holds_back_no_other_spend() {
    let w = world().await;
    let a = w.sidecar_of(0, Mode::Optimistic).await;
    let good = [w.token(), w.token()];
    for token in &good {
        assert_eq!(a.redeem(token, "queue").await.0, StatusCode::OK);
    }
    let mut bad = w.token();
    bad.authenticator[5] ^= 0x10;
    a.redeemer
        .store()
        .insert_grant(&NewGrant {
            nullifier: bad.nullifier(),
            kind: "queue".parse().expect("kind"),
            expires_at: u64::MAX / 2,
            redeem_until: u64::MAX / 2,
            pending: Some(bad.clone()),
            now: scrip_spec::now(),
        })
        .await
        .expect("store")
        .expect("a new grant");
    assert_eq!(a.redeemer.flush_pending().await.expect("flush"), 3);
    assert_eq!(
        spent_total(&w.ledger.url).await,
        2,
        "the good ones are spent"
    );
    assert!(
        a.metrics()
            .await
            .contains("scrip_redeemer_optimistic_revoked_total 1")
    );
    assert_eq!(
        a.redeemer.flush_pending().await.expect("flush"),
        0,
        "nothing left to retry"
    );
}
