//! `scrip ledger init` and `serve` as real processes: a ledger killed with SIGKILL while
//! spends are in flight, restarted, has lost no acknowledged spend and accepts no second one.

mod common;

use common::{announce_key, ledger_setup, now, serve};
use scrip_spec::Nullifier;
use scrip_spec::ledger::{Action, LedgerRequest, SpendGroup};
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
    let base = std::env::var("SCRIP_TEST_PG_URL").expect("SCRIP_TEST_PG_URL");
    let mut suffix = [0u8; 6];
    rand::fill(&mut suffix);
    let schema = format!(
        "scrip_crash_{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let admin = sqlx::PgPool::connect(&base).await.expect("connect");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let db = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let dir = tempfile::tempdir().expect("tempdir");
    sigkill_under_spend_load(dir.path(), &db).await;
}

async fn sigkill_under_spend_load(d: &std::path::Path, db: &str) {
    let setup = ledger_setup(d, db);
    let (issuer, relay, config, base) = (setup.issuer, setup.relay, setup.config, setup.base);
    let mut server = serve("ledger", &config, &base).await;
    let client = reqwest::Client::new();
    let (ledger_id, token_key_id) = announce_key(&client, &base, &issuer).await;

    // Spend batches from several tasks; kill the server while they run.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Nullifier>::new()));
    let relay = std::sync::Arc::new(relay);
    let mut tasks = Vec::new();
    for task in 0..4u8 {
        let (client, base, acknowledged, relay) = (
            client.clone(),
            base.clone(),
            acknowledged.clone(),
            relay.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for batch in 0..1000u32 {
                let nullifiers: Vec<Nullifier> = (0..20u32)
                    .map(|i| {
                        let mut b = [task; 32];
                        b[1..5].copy_from_slice(&batch.to_be_bytes());
                        b[5..9].copy_from_slice(&i.to_be_bytes());
                        Nullifier(b)
                    })
                    .collect();
                let req = relay.sign(LedgerRequest::new(
                    ledger_id,
                    now(),
                    Action::Spend {
                        groups: vec![SpendGroup {
                            token_key_id,
                            nullifiers: nullifiers.clone(),
                        }],
                    },
                ));
                match client
                    .post(format!("{base}/v1/entries"))
                    .json(&req)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        acknowledged.lock().expect("lock").extend(nullifiers);
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.0.kill().expect("SIGKILL");
    let _ = server.0.wait();
    for t in tasks {
        t.await.expect("task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        !acknowledged.is_empty(),
        "some spends were acknowledged before the kill"
    );

    let _server = serve("ledger", &config, &base).await;
    for n in &acknowledged {
        let path = format!(
            "{base}/v1/nullifiers/{}",
            scrip_spec::encoding::b64_encode(n.0)
        );
        let status: serde_json::Value = client
            .get(path)
            .send()
            .await
            .expect("lookup")
            .json()
            .await
            .expect("json");
        assert_eq!(status["status"], "spent", "acknowledged spend lost");
    }
    let retry = relay.sign(LedgerRequest::new(
        ledger_id,
        now(),
        Action::Spend {
            groups: vec![SpendGroup {
                token_key_id,
                nullifiers: acknowledged[..50.min(acknowledged.len())].to_vec(),
            }],
        },
    ));
    let receipt: serde_json::Value = client
        .post(format!("{base}/v1/entries"))
        .json(&retry)
        .send()
        .await
        .expect("retry")
        .json()
        .await
        .expect("json");
    assert!(
        receipt["spends"]
            .as_array()
            .expect("spends")
            .iter()
            .all(|s| s["status"] == "already_spent")
    );
    let totals: serde_json::Value = client
        .get(format!("{base}/v1/totals"))
        .send()
        .await
        .expect("totals")
        .json()
        .await
        .expect("json");
    assert!(totals["keys"][0]["spent"].as_u64().expect("spent") >= acknowledged.len() as u64);
}
