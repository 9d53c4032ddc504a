//! Storage faults under a real `scrip ledger serve` process:
//! - SQLite on a tiny tmpfs that fills up: the ledger refuses cleanly (a JSON 5xx that leaks no
//!   internals, nothing half-applied, reads still answered) and, once the file system grows,
//!   accepts spends again without a restart; the audit finds no tampering;
//! - PostgreSQL whose connections are terminated under spend load: failures are clear JSON 5xx
//!   answers (no hang), the ledger recovers by itself, no acknowledged spend is lost and no
//!   nullifier is accepted twice.
//!
//! Both need more than a plain `cargo test` gives (root for `mount`, a PostgreSQL server), so
//! both are `#[ignore]`d; CI runs them with `--include-ignored`.

use crate::SCRIP;
use scrip_spec::api::ledger::{Receipt, SpendStatus};
use scrip_spec::ledger::{Action, Hash32, LedgerRequest};
use scrip_spec::{OperatorKey, Signed, Token, now};
use scrip_testkit::{PgSchema, Process, Tmpfs, TokenPool, announce_key, path};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tokens per spend request.
const BATCH: usize = 100;
/// Size of the tmpfs holding the SQLite database: init and a few hundred batches of `BATCH`
/// fit, thousands do not.
const TMPFS_SIZE: &str = "12M";
/// What it grows to.
const TMPFS_GROWN: &str = "64M";
/// Spends tried after the file system grew, before the restart.
const PROBES: usize = 12;
/// Every HTTP call gives up after this: a hang is a failure, not a wait.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// `scrip ledger serve --config CONFIG` with its log kept in `log`, to look for panics and
/// see what it reported.
async fn serve_logged(config: &Path, base: &str, log: &Path) -> Process {
    Process::serve(SCRIP, "ledger", config, base)
        .log_to(log)
        .started()
        .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("client")
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn spend_request(
    relay: &OperatorKey,
    ledger_id: Hash32,
    tokens: &[Token],
) -> Signed<LedgerRequest> {
    relay.sign(LedgerRequest::new(
        ledger_id,
        now(),
        Action::spend_of(tokens.to_vec()),
    ))
}

/// What came back for a spend request.
#[derive(Debug)]
enum Outcome {
    /// 200 with a receipt.
    Receipt(Value),
    /// An HTTP error answer: status and body.
    Error(u16, Value),
    /// No answer (timeout, connection refused or reset).
    Transport(String),
}

async fn submit(client: &reqwest::Client, base: &str, req: &Signed<LedgerRequest>) -> Outcome {
    let resp = match client
        .post(format!("{base}/v1/entries"))
        .json(req)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Transport(format!("{e:?}")),
    };
    let status = resp.status().as_u16();
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => return Outcome::Transport(format!("reading the body: {e:?}")),
    };
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status == 200 {
        Outcome::Receipt(body)
    } else {
        Outcome::Error(status, body)
    }
}

/// Every nullifier of the receipt has `status`.
/// Whether the receipt lists `count` spends, each with a status `wanted` accepts.
fn all_have_status(receipt: &Value, wanted: fn(&SpendStatus) -> bool, count: usize) -> bool {
    serde_json::from_value::<Receipt>(receipt.clone())
        .is_ok_and(|r| r.spends.len() == count && r.spends.iter().all(|s| wanted(&s.status)))
}

fn accepted(status: &SpendStatus) -> bool {
    matches!(status, SpendStatus::Accepted)
}

fn already_spent(status: &SpendStatus) -> bool {
    matches!(status, SpendStatus::AlreadySpent { .. })
}

/// Spend batches of fresh nullifiers at one ledger.
struct Batches<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    relay: &'a OperatorKey,
    ledger_id: Hash32,
    /// Fresh tokens of the announced key.
    pool: &'a TokenPool,
    /// What a storage error message must not mention.
    internals: &'a [&'a str],
}

/// What became of a batch: accepted whole, or refused with a clean storage error.
enum Batch {
    Accepted(Vec<Token>),
    Refused {
        // Boxed: a signed request is large beside the accepted variant.
        req: Box<Signed<LedgerRequest>>,
        nullifiers: Vec<Token>,
        status: u16,
        body: Value,
    },
}

impl Batches<'_> {
    /// Sends a batch of `BATCH` fresh nullifiers; returns the request, its nullifiers and what
    /// came back.
    async fn send_raw(&self) -> (Signed<LedgerRequest>, Vec<Token>, Outcome) {
        let nullifiers = self.pool.take(BATCH);
        let req = spend_request(self.relay, self.ledger_id, &nullifiers);
        let outcome = submit(self.client, self.base, &req).await;
        (req, nullifiers, outcome)
    }

    /// Sends a batch, which must be accepted whole or refused with a clean storage error.
    async fn send(&self) -> Batch {
        match self.send_raw().await {
            (_, nullifiers, Outcome::Receipt(r)) => {
                assert!(all_have_status(&r, accepted, BATCH), "receipt: {r}");
                Batch::Accepted(nullifiers)
            }
            (req, nullifiers, Outcome::Error(status, body)) => {
                assert_clean_storage_error(status, &body, self.internals);
                Batch::Refused {
                    req: Box::new(req),
                    nullifiers,
                    status,
                    body,
                }
            }
            (_, _, Outcome::Transport(e)) => panic!("no answer from the ledger: {e}"),
        }
    }
}

/// Every acknowledged nullifier is spent.
async fn assert_all_spent(client: &reqwest::Client, base: &str, acknowledged: &[Token]) {
    assert_eq!(
        count_spent(client, base, acknowledged).await,
        acknowledged.len(),
        "an acknowledged spend is missing"
    );
}

/// None of the refused batches' nullifiers is spent.
async fn assert_none_spent(client: &reqwest::Client, base: &str, refused: &[Vec<Token>]) {
    let all: Vec<Token> = refused.iter().flatten().cloned().collect();
    assert_eq!(
        count_spent(client, base, &all).await,
        0,
        "a refused batch was (partly) applied"
    );
}

/// A storage failure answer: 5xx, `{"error": {"code", "message"}}` and nothing else, and the
/// message tells nothing about the database behind it.
fn assert_clean_storage_error(status: u16, body: &Value, internals: &[&str]) {
    assert!(
        (500..600).contains(&status),
        "a storage failure is a 5xx, got {status}: {body}"
    );
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"));
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error`: {body}"
    );
    let code = error["code"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && !message.is_empty(),
        "code and message: {body}"
    );
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "no other fields: {body}");
    let lower = message.to_lowercase();
    for word in [
        "sqlite",
        "sqlx",
        "postgres",
        "database error",
        "error returned from database",
        "(code:",
        "os error",
        "io error",
        "panicked",
        "terminating connection",
        "57p01",
    ]
    .iter()
    .chain(internals)
    {
        assert!(
            !lower.contains(&word.to_lowercase()),
            "the error message leaks {word:?}: {message}"
        );
    }
}

async fn nullifier_status(
    client: &reqwest::Client,
    base: &str,
    n: &scrip_spec::Nullifier,
) -> String {
    let url = format!(
        "{base}/v1/nullifiers/{}",
        scrip_spec::encoding::b64_encode(n.0)
    );
    let (status, body) = get_json(client, &url).await;
    assert_eq!(status, 200, "nullifier lookup: {body}");
    body["status"].as_str().unwrap_or_default().to_owned()
}

/// Counts, by looking each one up, how many of `nullifiers` the ledger reports spent.
async fn count_spent(client: &reqwest::Client, base: &str, nullifiers: &[Token]) -> usize {
    if nullifiers.is_empty() {
        return 0;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in nullifiers.chunks(nullifiers.len().div_ceil(8)) {
        let (client, base, chunk) = (client.clone(), base.to_owned(), chunk.to_vec());
        tasks.spawn(async move {
            let mut spent = 0;
            for t in &chunk {
                match nullifier_status(&client, &base, &t.nullifier())
                    .await
                    .as_str()
                {
                    "spent" => spent += 1,
                    "unspent" => {}
                    other => panic!("unexpected nullifier status {other:?}"),
                }
            }
            spent
        });
    }
    let mut spent = 0;
    while let Some(r) = tasks.join_next().await {
        spent += r.expect("lookup task");
    }
    spent
}

async fn total_spent(client: &reqwest::Client, base: &str) -> u64 {
    let (status, totals) = get_json(client, &format!("{base}/v1/totals")).await;
    assert_eq!(status, 200, "totals: {totals}");
    totals["keys"][0]["spent"].as_u64().expect("spent")
}

fn assert_no_panic(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!text.contains("panicked"), "the ledger panicked:\n{text}");
}

/// The last `n` lines of the ledger's log.
fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first log line with `needle`, for the test's own report.
fn first_log_line(log: &Path, needle: &str) -> Option<String> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_owned)
}

/// `scrip audit --ledger BASE --state STATE --json`: its exit status and standard output.
async fn audit(base: &str, state: &Path) -> (Option<i32>, String) {
    let (base, state) = (base.to_owned(), state.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        SCRIP.run(&[
            "audit",
            "--ledger",
            &base,
            "--state",
            path(&state),
            "--json",
        ])
    })
    .await
    .expect("audit task");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn assert_audit_clean(code: Option<i32>, output: &str) {
    assert_ne!(code, Some(2), "the audit reports tampering: {output}");
    assert!(
        matches!(code, Some(0) | Some(3)),
        "the audit did not run to the end (exit {code:?}): {output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root to mount a small tmpfs (CI runs it with --ignored)"]
async fn sqlite_disk_full_refuses_cleanly_and_recovers() {
    let started = Instant::now();
    // Dropped last: after the unmount.
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    // Dropped after the ledger process is killed, so the unmount finds nothing busy.
    let tmpfs = Tmpfs::mount(&mnt, TMPFS_SIZE);
    let db = format!("sqlite://{}", mnt.join("ledger.db").display());
    let setup = SCRIP.ledger_setup(dir.path(), &db);
    let (issuer, relay, config, base) = (setup.issuer, setup.relay, setup.config, setup.base);
    let log = dir.path().join("ledger.log");
    let mut server = serve_logged(&config, &base, &log).await;
    let client = client();
    let (ledger_id, pool) = announce_key(&client, &base, &issuer, "issuer").await;
    let (used, size) = tmpfs.usage();
    println!("tmpfs {TMPFS_SIZE}: {used} of {size} bytes used after init and one key");
    let internals = [mnt.to_str().expect("utf-8"), "ledger.db", "-wal"];
    let batches = Batches {
        client: &client,
        base: &base,
        relay: &relay,
        ledger_id,
        pool: &pool,
        internals: &internals,
    };

    // Fill the file system.
    let mut acknowledged: Vec<Token> = Vec::new();
    let fill_started = Instant::now();
    let (refused_req, refused_nullifiers) = loop {
        assert!(
            acknowledged.len() < 5000 * BATCH,
            "{} batches fit in a {TMPFS_SIZE} tmpfs: it never filled",
            acknowledged.len() / BATCH
        );
        match batches.send().await {
            Batch::Accepted(nullifiers) => acknowledged.extend(nullifiers),
            Batch::Refused {
                req,
                nullifiers,
                status,
                body,
            } => {
                println!(
                    "full after {} accepted batches ({:.1?}); refusal: {status} {body}",
                    acknowledged.len() / BATCH,
                    fill_started.elapsed()
                );
                break (*req, nullifiers);
            }
        }
    };
    let accepted_before_full = acknowledged.len() / BATCH;
    assert!(
        accepted_before_full >= 50,
        "only {accepted_before_full} batches fit: the tmpfs is too small for the test"
    );
    let (used, size) = tmpfs.usage();
    println!("tmpfs when full: {used} of {size} bytes used");
    if let Some(line) = first_log_line(&log, "ledger operation failed") {
        println!("ledger log at the refusal: {line}");
    }

    // Still full: more batches are refused the same way (any that fits is acknowledged).
    let mut refused = vec![refused_nullifiers.clone()];
    let mut accepted_while_full = 0;
    for _ in 0..5 {
        match batches.send().await {
            Batch::Accepted(nullifiers) => {
                acknowledged.extend(nullifiers);
                accepted_while_full += 1;
            }
            Batch::Refused { nullifiers, .. } => refused.push(nullifiers),
        }
    }
    println!(
        "while full: {} of 6 batches refused, {accepted_while_full} accepted",
        refused.len()
    );
    assert!(server.is_running(), "the ledger process died");

    // The health check says the store refuses writes (it answered 200 here before issue 17).
    let (status, health) = get_json(&client, &format!("{base}/healthz")).await;
    assert_eq!(
        (status, &health["checks"]["store"]),
        (503, &Value::Bool(false)),
        "/healthz while full: {health}"
    );

    // Reads still answer while full; nothing of a refused batch is spent.
    for endpoint in ["/v1/info", "/v1/keys", "/v1/log?from=0&limit=3"] {
        let resp = client
            .get(format!("{base}{endpoint}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {endpoint} while full: {e}"));
        assert_eq!(resp.status(), 200, "GET {endpoint} while full");
    }
    assert_eq!(
        total_spent(&client, &base).await,
        acknowledged.len() as u64,
        "totals while full count exactly the acknowledged spends"
    );
    assert_none_spent(&client, &base, &refused).await;
    let sample: Vec<Token> = acknowledged.iter().step_by(97).cloned().collect();
    assert_eq!(
        count_spent(&client, &base, &sample).await,
        sample.len(),
        "acknowledged spends readable while full"
    );

    // Grow the file system: the ledger recovers without a restart. (Before the fix, a
    // transaction that hit SQLITE_FULL was rolled back by SQLite itself, sqlx's ROLLBACK on
    // drop then failed, and the connection went back to the pool still counting itself inside
    // a transaction, so later writes on it failed with `InvalidSavePointStatement` until a
    // restart; now the pool closes such a connection when it is released, see
    // `scrip_common::pool::durable_pool`.) Then restart as well.
    let grow = Instant::now();
    tmpfs.resize(TMPFS_GROWN);
    let mut probe_accepted = 0;
    for _ in 0..PROBES {
        match batches.send().await {
            Batch::Accepted(nullifiers) => {
                acknowledged.extend(nullifiers);
                probe_accepted += 1;
            }
            Batch::Refused { nullifiers, .. } => refused.push(nullifiers),
        }
    }
    let (status, health) = get_json(&client, &format!("{base}/healthz")).await;
    assert_eq!(
        status, 200,
        "/healthz once the disk has room again: {health}"
    );
    let poisoned = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("InvalidSavePointStatement")
        .count();
    println!(
        "grown to {TMPFS_GROWN}, no restart: {probe_accepted} of {PROBES} spends accepted in \
         {:.1?}; the log has {poisoned} InvalidSavePointStatement failures",
        grow.elapsed()
    );
    assert_eq!(
        (probe_accepted, poisoned),
        (PROBES, 0),
        "once there is room again every spend is accepted, without a restart"
    );
    assert_none_spent(&client, &base, &refused).await;
    assert_eq!(total_spent(&client, &base).await, acknowledged.len() as u64);
    assert!(server.is_running(), "the ledger process died");
    assert_no_panic(&log);
    drop(server);

    // Restarted, the very request that was refused first is accepted in full: it was not
    // recorded (so it is no replay) and none of it was spent.
    let restart = Instant::now();
    let log = dir.path().join("ledger-restarted.log");
    let mut server = serve_logged(&config, &base, &log).await;
    match submit(&client, &base, &refused_req).await {
        Outcome::Receipt(r) => assert!(
            all_have_status(&r, accepted, BATCH),
            "the refused request is accepted whole once there is room: {r}"
        ),
        other => panic!(
            "the refused request after the restart: {other:?}\nledger log:\n{}",
            log_tail(&log, 5)
        ),
    }
    println!(
        "restarted; first spend accepted {:.1?} after the restart",
        restart.elapsed()
    );
    acknowledged.extend(refused.remove(0));
    for _ in 0..20 {
        match batches.send_raw().await {
            (_, nullifiers, Outcome::Receipt(r)) => {
                assert!(all_have_status(&r, accepted, BATCH), "receipt: {r}");
                acknowledged.extend(nullifiers);
            }
            (_, _, other) => panic!(
                "a spend after the restart failed: {other:?}\nledger log:\n{}",
                log_tail(&log, 5)
            ),
        }
    }
    let (used, size) = tmpfs.usage();
    println!("tmpfs after recovery: {used} of {size} bytes used");

    // Every acknowledged nullifier is spent, the never-resubmitted refused ones are not, and
    // the totals agree exactly.
    let check = Instant::now();
    assert_all_spent(&client, &base, &acknowledged).await;
    assert_none_spent(&client, &base, &refused).await;
    assert_eq!(total_spent(&client, &base).await, acknowledged.len() as u64);
    println!(
        "{} acknowledged nullifiers looked up in {:.1?}",
        acknowledged.len(),
        check.elapsed()
    );

    // The log is intact (spends without reported issuance are notes, not tampering).
    let (code, output) = audit(&base, &dir.path().join("audit.state")).await;
    println!("audit exit status {code:?}");
    assert_audit_clean(code, &output);
    assert!(server.is_running(), "the ledger process died");
    assert_no_panic(&log);
    drop(server);
    drop(tmpfs);
    println!("total {:.1?}", started.elapsed());
}

/// The ledger's PostgreSQL sessions, found by the application name its URL sets.
async fn terminate_ledger_sessions(admin: &sqlx::PgPool, application: &str) -> u64 {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND datname = current_database() \
         AND backend_type = 'client backend' AND application_name = $1",
    )
    .bind(application)
    .fetch_all(admin)
    .await
    .expect("terminate")
    .len() as u64
}

#[derive(Default)]
struct LoopLog {
    acknowledged: Vec<Token>,
    /// When each request was answered, and whether it was acknowledged.
    events: Vec<(Instant, bool)>,
    /// Batches answered with a storage error: their nullifiers, and the answer.
    failed: Vec<(Vec<Token>, u16, Value)>,
    /// Anything else: no answer, or an answer that is neither a receipt nor a storage error.
    wrong: Vec<String>,
}

/// Nullifiers per spend request in the PostgreSQL test.
const PG_BATCH: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SCRIP_TEST_PG_URL"]
async fn postgres_connections_killed_under_load() {
    let started = Instant::now();
    let schema = PgSchema::create("scrip_pgkill").await;
    let suffix = schema.name.trim_start_matches("scrip_pgkill_").to_owned();
    // The ledger's sessions carry this name, so only they are terminated.
    let application = format!("scrip_ledger_{suffix}");
    let admin = schema.admin.clone();
    let db = format!("{}&application_name={application}", schema.url);
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = SCRIP.ledger_setup(dir.path(), &db);
    let (issuer, relay, config, base) = (setup.issuer, setup.relay, setup.config, setup.base);
    let log = dir.path().join("ledger.log");
    let server = serve_logged(&config, &base, &log).await;
    let client = client();
    let (ledger_id, pool) = announce_key(&client, &base, &issuer, "issuer").await;
    // Minted before the load, so that minting does not hold the loops back.
    pool.fill(8_000);
    let pool = Arc::new(pool);
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&application)
            .fetch_one(&admin)
            .await
            .expect("sessions");
    assert!(
        sessions > 0,
        "the ledger's sessions are not identifiable by application_name"
    );

    // Four spend loops until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let relay = Arc::new(relay);
    let mut loops = Vec::new();
    let mut successes = Vec::new();
    let failures = Arc::new(AtomicU64::new(0));
    for _ in 0..4 {
        let ok = Arc::new(AtomicU64::new(0));
        successes.push(ok.clone());
        let (stop, failures) = (stop.clone(), failures.clone());
        let (client, base, relay, pool) =
            (client.clone(), base.clone(), relay.clone(), pool.clone());
        loops.push(tokio::spawn(async move {
            let mut log = LoopLog::default();
            while !stop.load(Ordering::Relaxed) {
                let nullifiers = pool.take(PG_BATCH);
                let req = spend_request(&relay, ledger_id, &nullifiers);
                let outcome = submit(&client, &base, &req).await;
                match outcome {
                    Outcome::Receipt(r) if all_have_status(&r, accepted, PG_BATCH) => {
                        log.acknowledged.extend(nullifiers);
                        log.events.push((Instant::now(), true));
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Error(status, body) if status >= 500 => {
                        log.events.push((Instant::now(), false));
                        log.failed.push((nullifiers, status, body));
                        failures.fetch_add(1, Ordering::Relaxed);
                        // Back off a little, as a client would.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => log.wrong.push(format!("{other:?}")),
                }
            }
            log
        }));
    }
    let counts = |successes: &[Arc<AtomicU64>]| -> Vec<u64> {
        successes
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    };

    // Terminate the ledger's sessions several times while the loops run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        counts(&successes).iter().all(|&c| c > 0),
        "every loop makes progress before the disruption"
    );
    let disruption = Instant::now();
    let mut terminated = Vec::new();
    let mut last_kill = Instant::now();
    // At least 8 rounds, and more until some requests failed: the pool replaces sessions that
    // died while idle, so only a termination during a query fails a request.
    for round in 0..40 {
        if round >= 8 && failures.load(Ordering::Relaxed) >= 3 {
            break;
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        terminated.push(terminate_ledger_sessions(&admin, &application).await);
        last_kill = Instant::now();
        let (status, body) = get_json(&client, &format!("{base}/healthz")).await;
        assert!(
            status == 200 || (500..600).contains(&status),
            "healthz during the disruption: {status} {body}"
        );
    }
    // The loops resume: each of them gets 10 more spends through, without a restart.
    let at_end = counts(&successes);
    loop {
        let now_counts = counts(&successes);
        if now_counts.iter().zip(&at_end).all(|(n, e)| *n >= e + 10) {
            break;
        }
        assert!(
            last_kill.elapsed() < Duration::from_secs(60),
            "the spend loops did not resume after the disruption: {at_end:?} -> {now_counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed = last_kill.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    let mut wrong = Vec::new();
    let mut first_success_after = Duration::MAX;
    let mut failures_during = 0;
    let mut failures_after = 0;
    for (i, l) in loops.into_iter().enumerate() {
        let log = l.await.expect("loop");
        println!(
            "loop {i}: {} batches acknowledged, {} failed",
            log.acknowledged.len() / PG_BATCH,
            log.failed.len()
        );
        for (t, ok) in &log.events {
            if *ok && *t > last_kill {
                first_success_after = first_success_after.min(*t - last_kill);
            }
            if !ok && *t >= disruption {
                if *t <= last_kill {
                    failures_during += 1;
                } else {
                    failures_after += 1;
                }
            }
        }
        acknowledged.extend(log.acknowledged);
        failed.extend(log.failed);
        wrong.extend(log.wrong);
    }
    println!(
        "sessions terminated per round: {terminated:?}; {} failed requests ({failures_during} \
         during the disruption, {failures_after} after the last termination); first success \
         {first_success_after:.1?} after the last termination, 10 more per loop in {resumed:.1?}",
        failed.len()
    );
    assert!(
        wrong.is_empty(),
        "answers that are neither receipts nor 5xx storage errors (hangs are timeouts): {wrong:#?}"
    );
    assert!(
        !failed.is_empty(),
        "{} terminations in {} rounds made no request fail: the disruption was not exercised",
        terminated.iter().sum::<u64>(),
        terminated.len()
    );
    let mut codes = std::collections::BTreeMap::new();
    for (_, status, body) in &failed {
        assert_clean_storage_error(*status, body, &[&schema.name, &application]);
        *codes
            .entry(format!("{status} {}", body["error"]["code"]))
            .or_insert(0) += 1;
    }
    println!("failure answers: {codes:?}");

    // Every acknowledged spend is spent; a failed batch is all or nothing.
    let check = Instant::now();
    assert_all_spent(&client, &base, &acknowledged).await;
    let mut committed_despite_error = 0usize;
    for (nullifiers, status, body) in &failed {
        let spent = count_spent(&client, &base, nullifiers).await;
        assert!(
            spent == 0 || spent == nullifiers.len(),
            "a failed batch was half applied ({spent} of {}): {status} {body}",
            nullifiers.len()
        );
        if spent > 0 {
            committed_despite_error += 1;
        }
    }
    println!(
        "{} acknowledged nullifiers looked up in {:.1?}; {committed_despite_error} failed batches \
         were in fact committed",
        acknowledged.len(),
        check.elapsed()
    );

    // No nullifier twice: a sample of acknowledged ones, resubmitted, is all already spent.
    let sample: Vec<Token> = acknowledged
        .iter()
        .step_by((acknowledged.len() / 500).max(1))
        .cloned()
        .collect();
    let req = spend_request(&relay, ledger_id, &sample);
    match submit(&client, &base, &req).await {
        Outcome::Receipt(r) => {
            assert!(
                all_have_status(&r, already_spent, sample.len()),
                "a nullifier was accepted twice: {r}"
            );
            assert!(r["seq"].is_null(), "nothing appended: {r}");
        }
        other => panic!("resubmission: {other:?}"),
    }
    let spent = total_spent(&client, &base).await;
    assert!(spent >= acknowledged.len() as u64);
    assert_eq!(
        spent,
        (acknowledged.len() + committed_despite_error * PG_BATCH) as u64,
        "the spent total is the acknowledged batches plus the failed ones that committed"
    );
    let (code, output) = audit(&base, &dir.path().join("audit.state")).await;
    println!("audit exit status {code:?}");
    assert_audit_clean(code, &output);
    assert_no_panic(&log);
    drop(server);
    schema.drop_now().await;
    println!("total {:.1?}", started.elapsed());
}
