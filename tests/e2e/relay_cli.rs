//! `scrip relay use` as a person hands a grant to a relay: a queue, a chunk, and each way it
//! is refused, with a message that says what to do and nothing used up by a refusal made
//! before the relay is asked.

use crate::support::{cards_on_sale, consortium_with_keys};
use crate::{ok, scrip_blocking, wallet};
use scrip_testkit::path;

async fn relay_use(args: &[&str]) -> std::process::Output {
    let mut full = vec!["relay", "use"];
    full.extend_from_slice(args);
    scrip_blocking(&full).await
}

fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_is_handed_to_the_relay_once_and_refusals_say_why() {
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let op = &c.operators[0];
    let relay = op.relay_url.as_str();
    let code = cards_on_sale(op, 30, 1).await.remove(0);
    let wallet_file = dir.path().join("w.db");
    let w = path(&wallet_file);
    ok(wallet(w, &["init", "--ledger", &c.ledger_url]).await);
    ok(wallet(
        w,
        &[
            "open",
            &code,
            "--issuer",
            &op.issuer_url,
            "--tokens",
            "queue=2,chunk-64k=2",
        ],
    )
    .await);
    let spend = |kind: &'static str| async move {
        let grant = ok(wallet(
            w,
            &["spend", "--kind", kind, "--redeemer", &op.redeemer_url],
        )
        .await);
        grant.trim().to_owned()
    };

    // A queue, then the same grant again: used.
    let queue_grant = spend("queue").await;
    let created = ok(relay_use(&[&queue_grant, "--relay", relay]).await);
    assert!(
        created.starts_with("queue ") && created.contains(relay),
        "{created}"
    );
    let again = refused(&relay_use(&[&queue_grant, "--relay", relay]).await);
    assert!(again.contains("grant_used"), "{again}");
    let queues = c.dir.join("op-a-relay").join("queues");
    let count = |d: &std::path::Path| d.read_dir().expect("dir").count();
    assert_eq!(count(&queues), 1, "one queue for one grant");

    // Not a grant; a file for a queue grant: refused before the relay is asked.
    let typo = refused(&relay_use(&["sg1.queue.short", "--relay", relay]).await);
    assert!(typo.contains("not a grant code"), "{typo}");
    let second_queue = spend("queue").await;
    let file = dir.path().join("part");
    std::fs::write(&file, vec![7u8; 100 * 1024]).expect("part");
    let with_file =
        refused(&relay_use(&[&second_queue, "--relay", relay, "--file", path(&file)]).await);
    assert!(
        with_file.contains("--file is for chunk grants"),
        "{with_file}"
    );

    // A chunk grant: the file is needed, and must fit the grant's class; a refusal here
    // leaves the grant usable.
    let chunk_grant = spend("chunk-64k").await;
    let no_file = refused(&relay_use(&[&chunk_grant, "--relay", relay]).await);
    assert!(no_file.contains("--file FILE"), "{no_file}");
    let too_big =
        refused(&relay_use(&[&chunk_grant, "--relay", relay, "--file", path(&file)]).await);
    assert!(
        too_big.contains("a chunk-256k chunk; this grant is for chunk-64k"),
        "{too_big}"
    );
    std::fs::write(&file, vec![7u8; 60 * 1024]).expect("part");
    let stored = ok(relay_use(&[&chunk_grant, "--relay", relay, "--file", path(&file)]).await);
    assert!(stored.contains("(chunk-64k, 61440 bytes)"), "{stored}");
    assert_eq!(count(&c.dir.join("op-a-relay").join("chunks")), 1);
    // The queue grant refused for its file still creates its queue.
    ok(relay_use(&[&second_queue, "--relay", relay]).await);
    assert_eq!(count(&queues), 2);

    // No relay there: the error names it.
    let last = spend("chunk-64k").await;
    let down = refused(
        &relay_use(&[
            &last,
            "--relay",
            "http://127.0.0.1:9",
            "--file",
            path(&file),
        ])
        .await,
    );
    assert!(down.contains("http://127.0.0.1:9"), "{down}");
}

#[test]
fn a_relay_on_a_taken_address_names_it_and_a_bad_config_names_the_field() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!("listen = \"{addr}\"\ndata_dir = \"data\"\n"),
    )
    .expect("write");
    let out = crate::scrip(&["relay", "serve", "--config", path(&config)]);
    let said = refused(&out);
    assert!(said.contains(&format!("cannot listen on {addr}")), "{said}");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").expect("write");
    let said = refused(&crate::scrip(&[
        "relay",
        "serve",
        "--config",
        path(&config),
    ]));
    assert!(said.contains("missing required field data_dir"), "{said}");
    assert!(said.contains("scrip relay config example"), "{said}");
}
