//! `scrip issuer …` as an operator runs it: keys, a printed batch, activation through the
//! ledger, the service killed with SIGKILL and restarted without charging a card twice.

mod common;

use common::{free_port, ledger_setup, path, scrip, scrip_ok, serve};
use scrip_spec::api::issuer::{KeyedTokenRequest, OpenRequest, RequestId};
use scrip_spec::{TokenChallenge, TokenKeyInfo, WalletSeed, blind};
use std::os::unix::fs::PermissionsExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_workflow_and_crash_safety() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("ledger.db").display());
    let ledger = ledger_setup(d, &db);
    let _ledger = serve("ledger", &ledger.config, &ledger.base).await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = d.join("issuer.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"issuer\"\nlisten = \"127.0.0.1:{port}\"\n\
             database = \"sqlite://{}\"\noperator_key_file = \"{}\"\nkeys_dir = \"{}\"\n\
             ledger_url = \"{}\"\n",
            d.join("issuer.db").display(),
            d.join("issuer.key").display(),
            d.join("keys").display(),
            ledger.base
        ),
    )
    .expect("config");
    let cfg = path(&config);

    let rotated = scrip_ok(&["issuer", "keys", "rotate", "--config", cfg]);
    assert_eq!(
        rotated
            .lines()
            .filter(|l| l.starts_with("announced"))
            .count(),
        5
    );
    assert_eq!(
        scrip_ok(&["issuer", "keys", "list", "--config", cfg])
            .lines()
            .count(),
        5
    );

    let csv_path = d.join("cards.csv");
    let minted = scrip_ok(&[
        "issuer",
        "cards",
        "mint",
        "--value",
        "40",
        "--count",
        "3",
        "--out",
        path(&csv_path),
        "--config",
        cfg,
    ]);
    let mode = std::fs::metadata(&csv_path)
        .expect("csv")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the printer's file holds secrets");
    let csv = std::fs::read_to_string(&csv_path).expect("csv");
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 3);
    let batch = rows[0][0];
    assert!(minted.contains(batch));
    let again = scrip(&[
        "issuer",
        "cards",
        "mint",
        "--value",
        "40",
        "--count",
        "3",
        "--out",
        path(&csv_path),
        "--config",
        cfg,
    ]);
    assert!(
        !again.status.success(),
        "an existing CSV is never overwritten"
    );

    assert!(scrip_ok(&["issuer", "cards", "status", "--config", cfg]).contains("[minted]"));
    let activated = scrip_ok(&[
        "issuer", "cards", "activate", "--batch", batch, "--config", cfg,
    ]);
    assert!(activated.contains("on sale"), "{activated}");
    assert!(scrip_ok(&["issuer", "cards", "status", "--config", cfg]).contains("[active]"));

    // Open a card over HTTP.
    let mut server = serve("issuer", &config, &base).await;
    let client = reqwest::Client::new();
    let keys: scrip_spec::api::issuer::IssuerKeys = client
        .get(format!("{base}/v1/keys"))
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    let queue: &TokenKeyInfo = keys
        .keys
        .iter()
        .find(|k| k.kind.as_str() == "queue")
        .expect("queue key");
    let seed = WalletSeed::generate();
    let challenge = TokenChallenge::for_issuer("issuer").expect("challenge");
    let (token_request, _) = blind(&seed, 0, &queue.public_key, &challenge).expect("blind");
    let open = OpenRequest {
        card_code: rows[0][2].to_lowercase(),
        request_id: RequestId([9; 32]),
        requests: vec![KeyedTokenRequest {
            token_key_id: queue.public_key.id(),
            token_request,
        }],
    };
    let first: serde_json::Value = client
        .post(format!("{base}/v1/cards/open"))
        .json(&open)
        .send()
        .await
        .expect("open")
        .json()
        .await
        .expect("json");
    assert_eq!(first["remaining_credits"], 30, "{first}");

    // SIGKILL, restart: the repeat returns the same signatures and charges nothing.
    server.0.kill().expect("SIGKILL");
    let _ = server.0.wait();
    let _server = serve("issuer", &config, &base).await;
    let repeat: serde_json::Value = client
        .post(format!("{base}/v1/cards/open"))
        .json(&open)
        .send()
        .await
        .expect("repeat")
        .json()
        .await
        .expect("json");
    assert_eq!(repeat["responses"], first["responses"]);
    assert_eq!(repeat["remaining_credits"], 30);

    // The database holds hashes, never a code.
    let db_bytes = std::fs::read(d.join("issuer.db")).expect("db");
    let wal = std::fs::read(d.join("issuer.db-wal")).unwrap_or_default();
    for row in &rows {
        let code = row[2].as_bytes();
        assert!(!db_bytes.windows(code.len()).any(|w| w == code));
        assert!(!wal.windows(code.len()).any(|w| w == code));
    }

    let status = scrip_ok(&[
        "issuer", "cards", "status", "--code", rows[0][2], "--config", cfg,
    ]);
    assert!(
        status.contains("opened") && status.contains("30 of 40"),
        "{status}"
    );
    scrip_ok(&[
        "issuer", "cards", "void", "--code", rows[1][2], "--config", cfg,
    ]);
    let status = scrip_ok(&[
        "issuer", "cards", "status", "--code", rows[1][2], "--config", cfg,
    ]);
    assert!(status.contains("void"), "{status}");
    assert!(
        !scrip(&[
            "issuer", "cards", "void", "--code", rows[1][2], "--config", cfg
        ])
        .status
        .success()
    );

    scrip_ok(&["issuer", "report", "--config", cfg]);
    let totals = scrip_common::clients::LedgerClient::new(&ledger.base)
        .totals()
        .await
        .expect("totals");
    assert_eq!(totals.keys.iter().map(|k| k.issued).sum::<u64>(), 1);
    assert_eq!(totals.issuers[0].credits_sold, 120);
}
