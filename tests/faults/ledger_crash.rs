//! `scrip ledger init` and `serve` as real processes: a ledger killed with SIGKILL while
//! spends are in flight, restarted, has lost no acknowledged spend and accepts no second one.

use crate::SCRIP;
use scrip_spec::api::ledger::{Receipt, SpendStatus};
use scrip_spec::ledger::{Action, LedgerRequest};
use scrip_spec::{Token, now};
use scrip_testkit::{Http, PgSchema, announce_key};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_spend_load_loses_no_acknowledged_spend_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    sigkill_under_spend_load(dir.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SCRIP_TEST_PG_URL"]
async fn sigkill_under_spend_load_loses_no_acknowledged_spend_postgres() {
    let schema = PgSchema::create("scrip_crash").await;
    let dir = tempfile::tempdir().expect("tempdir");
    sigkill_under_spend_load(dir.path(), &schema.url).await;
}

async fn sigkill_under_spend_load(d: &std::path::Path, db: &str) {
    let setup = SCRIP.ledger_setup(d, db);
    let mut server = setup.process(SCRIP).started().await;
    let (issuer, relay, base) = (setup.issuer, setup.relay, setup.base);
    let client = reqwest::Client::new();
    let (ledger_id, pool) = announce_key(&client, &base, &issuer, "issuer").await;
    // Minted before the load, so the spends are not slowed by minting: more than a 700 ms run
    // spends.
    let pool = std::sync::Arc::new(std::sync::Mutex::new(pool.take(8000)));

    // Spend batches from several tasks; kill the server while they run.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Token>::new()));
    let relay = std::sync::Arc::new(relay);
    let mut tasks = Vec::new();
    for _ in 0..4u8 {
        let (client, base, acknowledged, relay, pool) = (
            client.clone(),
            base.clone(),
            acknowledged.clone(),
            relay.clone(),
            pool.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let batch: Vec<Token> = {
                    let mut pool = pool.lock().expect("pool");
                    let at = pool.len().saturating_sub(20);
                    pool.split_off(at)
                };
                if batch.is_empty() {
                    return;
                }
                let req = relay.sign(LedgerRequest::new(
                    ledger_id,
                    now(),
                    Action::spend_of(batch.clone()),
                ));
                match client
                    .post(format!("{base}/v1/entries"))
                    .json(&req)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        acknowledged.lock().expect("lock").extend(batch);
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    for t in tasks {
        t.await.expect("task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        !acknowledged.is_empty(),
        "some spends were acknowledged before the kill"
    );

    server.start().await;
    let http = Http::new(&base);
    for t in &acknowledged {
        let path = format!(
            "/v1/nullifiers/{}",
            scrip_spec::encoding::b64_encode(t.nullifier().0)
        );
        let (_, status) = http.get(&path).await;
        assert_eq!(status["status"], "spent", "acknowledged spend lost");
    }
    let retry = relay.sign(LedgerRequest::new(
        ledger_id,
        now(),
        Action::spend_of(acknowledged[..50.min(acknowledged.len())].to_vec()),
    ));
    let (_, receipt) = http.post("/v1/entries", &retry).await;
    let retried: Receipt = serde_json::from_value(receipt.clone())
        .unwrap_or_else(|e| panic!("a receipt ({e}): {receipt}"));
    assert!(
        !retried.spends.is_empty()
            && retried
                .spends
                .iter()
                .all(|s| matches!(s.status, SpendStatus::AlreadySpent { .. })),
        "every retried nullifier already spent: {receipt}"
    );
    let (_, totals) = http.get("/v1/totals").await;
    assert!(totals["keys"][0]["spent"].as_u64().expect("spent") >= acknowledged.len() as u64);
}
