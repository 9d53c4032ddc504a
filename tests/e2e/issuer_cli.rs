//! `scrip issuer …` as an operator runs it: keys, a printed batch, activation through the
//! ledger, the service killed with SIGKILL and restarted without charging a card twice.

use crate::{SCRIP, ok, scrip, scrip_ok};
use scrip_spec::api::issuer::{KeyedTokenRequest, OpenRequest, RequestId};
use scrip_spec::{TokenChallenge, TokenKeyInfo, WalletSeed, blind};
use scrip_testkit::{Http, mint_args, path, read_cards};
use std::os::unix::fs::PermissionsExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_workflow_and_crash_safety() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("ledger.db").display());
    let ledger = SCRIP.ledger_setup(d, &db);
    let _ledger = ledger.process(SCRIP).started().await;

    let issuer = ledger.issuer_config(d);
    let base = issuer.base.clone();
    let cfg = path(&issuer.config);

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
    let minted = scrip_ok(&mint_args("40", "3", &csv_path, cfg));
    let mode = std::fs::metadata(&csv_path)
        .expect("csv")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the printer's file holds secrets");
    let rows = read_cards(&csv_path);
    assert_eq!(rows.len(), 3);
    let batch = rows[0][0].as_str();
    assert!(minted.contains(batch));
    let again = scrip(&mint_args("40", "3", &csv_path, cfg));
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
    let mut server = issuer.process(SCRIP, "issuer").started().await;
    let http = Http::new(&base);
    let keys: scrip_spec::api::issuer::IssuerKeys =
        serde_json::from_value(http.get("/v1/keys").await.1).expect("keys");
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
    let (_, first) = http.post("/v1/cards/open", &open).await;
    assert_eq!(first["remaining_credits"], 30, "{first}");

    // SIGKILL, restart: the repeat returns the same signatures and charges nothing.
    server.restart().await;
    let (_, repeat) = http.post("/v1/cards/open", &open).await;
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

    // `scrip issuer cards VERB --code CODE`.
    let card =
        |verb: &str, code: &str| scrip(&["issuer", "cards", verb, "--code", code, "--config", cfg]);
    let (opened, voided) = (rows[0][2].as_str(), rows[1][2].as_str());
    let status = ok(card("status", opened));
    assert!(
        status.contains("opened") && status.contains("30 of 40"),
        "{status}"
    );
    ok(card("void", voided));
    let status = ok(card("status", voided));
    assert!(status.contains("void"), "{status}");
    assert!(!card("void", voided).status.success());

    scrip_ok(&["issuer", "report", "--config", cfg]);
    let totals = scrip_common::clients::LedgerClient::new(&ledger.base)
        .totals()
        .await
        .expect("totals");
    assert_eq!(totals.keys.iter().map(|k| k.issued).sum::<u64>(), 1);
    assert_eq!(totals.issuers[0].credits_sold, 120);

    // The outbox is empty once everything landed; requeueing what is not set aside says so.
    let outbox = scrip_ok(&["issuer", "outbox", "list", "--config", cfg]);
    assert!(
        outbox.contains("0 queued for the ledger") && outbox.contains("0 set aside"),
        "{outbox}"
    );
    let none = scrip(&["issuer", "outbox", "requeue", "7", "--config", cfg]);
    assert!(!none.status.success());
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(said.contains("no outbox item 7 is set aside"), "{said}");
}
