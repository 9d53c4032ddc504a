//! Privacy on real processes (DESIGN.md section 6, PROTOCOL.md section 12).
//!
//! A ledger, an issuer, a redeemer sidecar and the example relay run as separate `scrip`
//! processes with `RUST_LOG=debug`, each writing its own log file. The operator's CLI makes
//! keys and three cards; a wallet driven with the CLI opens two of them (three openings),
//! exports its 20 tokens, spends ten at the sidecar and hands the grants to the relay. Refusals
//! are provoked on the way (unknown and mistyped card codes, a used grant, a grant of the wrong
//! kind, a double spend, a forged token, a token of the wrong kind). Then:
//!
//! 1. **Secrets are never logged**: no card code, backup code or seed, token (nor its nonce or
//!    authenticator, in base64url or hex), grant code, operator private key or token private
//!    key appears in any service log or `/metrics`, in the operator's CLI output or in the
//!    wallet's standard error; the wallet's standard output shows only the backup code once
//!    and each grant it was asked for.
//! 2. **Issuer and relay share no value**: every value of the issuer side (every column of
//!    every table of its database, its log and its CLI output) is compared with every value of
//!    the relay side (the sidecar's database, the relay's files, both logs), after
//!    normalising to bytes (hex and base64url decoded). Values of one side are also looked for
//!    inside the values and the raw database files (deleted rows, WAL) of the other. What the
//!    ledger publishes (`/v1/keys`, `/v1/info`, `/v1/checkpoint`), timestamps, numbers and text
//!    compiled into the `scrip` binary are shared by design; nothing else may be. Planted
//!    values show the comparison is not vacuous: the spent tokens' nullifiers (and only
//!    theirs) are on the relay side, the blinded requests and request ids on the issuer side,
//!    and a value copied across is found.

use crate::SCRIP;
use scrip_spec::codes::export::ExportFile;
use scrip_spec::encoding::{b64_decode, b64_encode};
use scrip_spec::{CardCode, Token, TokenChallenge, TokenKeyInfo, WalletSeed, blind};
use scrip_testkit::{Process, free_port, mint_args, path, read_cards};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// The log filter every process runs with.
const LOG_FILTER: &str = "debug";
/// Values shorter than this are too common to mean anything (numbers, words, kinds).
const MIN_BYTES: usize = 16;

// ---------------------------------------------------------------------------------------------
// Processes.

/// A service process at the debug log filter, its standard output and error in `log`.
fn logged(process: Process, log: &Path) -> Process {
    process
        .env("RUST_LOG", LOG_FILTER)
        .env("NO_COLOR", "1")
        .log_to(log)
}

/// `scrip ARGS` at the debug log filter, with nothing on its standard input.
fn debug_command(args: &[&str]) -> Command {
    let mut command = SCRIP.command(args);
    command
        .env("RUST_LOG", LOG_FILTER)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// Runs `scrip ARGS` with the debug log filter; appends its standard output and error (never
/// its arguments, which may hold a card code) to `log`.
fn cli(args: &[&str], log: &Path) -> Output {
    let out = debug_command(args).output().expect("scrip runs");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    f.write_all(&out.stdout).expect("log");
    f.write_all(&out.stderr).expect("log");
    out
}

/// Runs `scrip wallet --wallet W ARGS`, insists it succeeds, appends its standard error to
/// `log` and returns its standard output.
fn wallet_cli(w: &str, args: &[&str], log: &Path) -> String {
    let mut full = vec!["wallet", "--wallet", w];
    full.extend_from_slice(args);
    let out = debug_command(&full).output().expect("scrip runs");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file")
        .write_all(&out.stderr)
        .expect("log");
    assert!(
        out.status.success(),
        "wallet {} failed: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn cli_ok(args: &[&str], log: &Path) -> String {
    let out = cli(args, log);
    assert!(
        out.status.success(),
        "scrip {} {} failed: {}",
        args[0],
        args.get(1).unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

// ---------------------------------------------------------------------------------------------
// Values.

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok().filter(|p| p.len() == 2)?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Words of a text: runs of `[A-Za-z0-9_-]`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii() && is_word_byte(c as u8)))
        .filter(|w| !w.is_empty())
}

/// A text as raw bytes: hex or base64url decoded when that gives at least [`MIN_BYTES`],
/// otherwise its UTF-8 bytes.
fn normalise(text: &str) -> Vec<u8> {
    if text.len() >= 2 * MIN_BYTES
        && text.bytes().all(|b| b.is_ascii_hexdigit())
        && let Some(bytes) = hex_decode(text)
    {
        return bytes;
    }
    if text.bytes().all(is_word_byte)
        && let Ok(bytes) = b64_decode(text)
        && bytes.len() >= MIN_BYTES
    {
        return bytes;
    }
    text.as_bytes().to_vec()
}

/// Timestamps and numbers (`2026-11-25 16:21:04`, `1795623666`) are shared by design.
fn is_time_or_number(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || b" :.-+TZ".contains(&b))
}

/// A text's value, if it is long enough and not a timestamp or a number.
fn value_of(text: &str) -> Option<Vec<u8>> {
    Some(normalise(text)).filter(|v| v.len() >= MIN_BYTES && !is_time_or_number(text))
}

/// A text's values: the whole text and each of its words.
fn text_values(text: &str) -> Vec<Vec<u8>> {
    std::iter::once(text)
        .chain(words(text))
        .filter_map(value_of)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every value one side holds, with where it was seen (first few places); and the side's
/// database files as bytes, where a value is looked for inside (deleted rows, the WAL).
#[derive(Default, Clone)]
struct Values(BTreeMap<Vec<u8>, Vec<String>>, Vec<(String, Vec<u8>)>);

impl Values {
    fn add(&mut self, value: Vec<u8>, origin: &str) {
        if value.len() >= MIN_BYTES {
            let seen = self.0.entry(value).or_default();
            if seen.len() < 3 {
                seen.push(origin.to_owned());
            }
        }
    }

    fn add_text(&mut self, text: &str, origin: &str) {
        for v in text_values(text) {
            self.add(v, origin);
        }
    }

    /// A log: each line's words.
    fn add_log(&mut self, file: &Path, origin: &str) {
        let text = String::from_utf8_lossy(&std::fs::read(file).expect("log")).into_owned();
        for (i, line) in text.lines().enumerate() {
            for v in words(line).filter_map(value_of) {
                self.add(v, &format!("{origin}:{}", i + 1));
            }
        }
    }

    /// Every column of every table of a SQLite database, and its files as bytes; returns the
    /// number of rows read.
    async fn add_sqlite(&mut self, db: &Path, origin: &str) -> usize {
        for suffix in ["", "-wal"] {
            let file = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(bytes) = std::fs::read(&file) {
                self.1.push((format!("{origin}{suffix} (file)"), bytes));
            }
        }
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("open database");
        let tables: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(&pool)
                .await
                .expect("tables");
        assert!(!tables.is_empty(), "{origin} has no tables");
        let mut rows_read = 0;
        for (table,) in &tables {
            let columns: Vec<(String,)> =
                sqlx::query_as(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .fetch_all(&pool)
                    .await
                    .expect("columns");
            for (column,) in &columns {
                let rows: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(&format!(
                    "SELECT typeof(\"{column}\"), CAST(\"{column}\" AS BLOB) FROM \"{table}\""
                ))
                .fetch_all(&pool)
                .await
                .expect("rows");
                let here = format!("{origin}:{table}.{column}");
                for (kind, bytes) in rows {
                    match (kind.as_str(), bytes) {
                        ("blob", Some(b)) => self.add(b, &here),
                        ("text", Some(b)) => self.add_text(&String::from_utf8_lossy(&b), &here),
                        _ => {} // integers, reals, nulls: shorter than MIN_BYTES
                    }
                }
            }
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM \"{table}\""))
                .fetch_one(&pool)
                .await
                .expect("count");
            rows_read += usize::try_from(n).expect("count");
        }
        pool.close().await;
        rows_read
    }

    fn has(&self, v: &[u8]) -> bool {
        self.0.contains_key(v)
    }

    /// Whether `v` is one of the values or inside one, or inside the database files.
    fn holds(&self, v: &[u8]) -> bool {
        self.has(v)
            || self.0.keys().any(|w| contains(w, v))
            || self.1.iter().any(|(_, f)| contains(f, v))
    }
}

/// What the ledger publishes, with where it publishes it.
struct Published(BTreeMap<Vec<u8>, String>);

impl Published {
    fn walk(&mut self, v: &Value, at: &str) {
        match v {
            Value::String(s) => {
                for n in text_values(s) {
                    self.0.entry(n).or_insert_with(|| at.to_owned());
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, &format!("{at}[]"));
                }
            }
            Value::Object(fields) => {
                for (k, item) in fields {
                    self.walk(item, &format!("{at}.{k}"));
                }
            }
            _ => {}
        }
    }

    /// Whether `v` is published, or part of something published.
    fn covers(&self, v: &[u8]) -> Option<&str> {
        self.0.get(v).map(String::as_str).or_else(|| {
            self.0
                .iter()
                .find(|(p, _)| p.len() > v.len() && contains(p, v))
                .map(|(_, at)| at.as_str())
        })
    }
}

/// A value found on both sides.
struct Link {
    value: Vec<u8>,
    what: String,
}

/// Values of one side equal to or inside values (or database files) of the other.
fn linked(issuer: &Values, relay: &Values) -> Vec<Link> {
    let mut found = Vec::new();
    let mut check = |x: &Values, y: &Values, xs: &str, ys: &str, report_equal: bool| {
        for (v, seen) in &x.0 {
            let mut link = |how: &str, at: &dyn std::fmt::Debug| {
                found.push(Link {
                    value: v.clone(),
                    what: format!(
                        "{} ({} bytes{}) on the {xs} side at {seen:?} {how} on the {ys} \
                         side at {at:?}",
                        b64_encode(v),
                        v.len(),
                        std::str::from_utf8(v)
                            .ok()
                            .filter(|t| t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
                            .map(|t| format!(", text {t:?}"))
                            .unwrap_or_default(),
                    ),
                });
            };
            for (w, seen_w) in &y.0 {
                if w == v {
                    if report_equal {
                        link("equals a value", seen_w);
                    }
                } else if contains(w, v) {
                    link("is inside a value", seen_w);
                }
            }
            for (file, bytes) in &y.1 {
                if contains(bytes, v) {
                    link("is inside a database file", file);
                }
            }
        }
    };
    check(issuer, relay, "issuer", "relay", true);
    check(relay, issuer, "relay", "issuer", false);
    found
}

/// Sorts links into those shared by design (by where the ledger publishes the value, or
/// "program constant") and the rest, which link the issuer's records to the relay's.
fn classify(
    links: Vec<Link>,
    published: &Published,
) -> (BTreeMap<String, BTreeSet<Vec<u8>>>, Vec<String>) {
    let mut by_design: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut constants: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    let mut rest = Vec::new();
    for link in links {
        let why = match published.covers(&link.value) {
            Some(at) => Some(at.to_owned()),
            None => constants
                .entry(link.value.clone())
                .or_insert_with(|| program_constant(&link.value))
                .then(|| "program constant".to_owned()),
        };
        match why {
            Some(why) => {
                by_design.entry(why).or_default().insert(link.value);
            }
            None => rest.push(link.what),
        }
    }
    (by_design, rest)
}

/// Whether `v` is text compiled into the `scrip` binary, a constant of the program that every
/// party runs (an SQL table name, say), not a value about anyone.
fn program_constant(v: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    if !v.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return false;
    }
    let status = Command::new("grep")
        .args(["-q", "-a", "-F", "-e"])
        .arg(std::ffi::OsStr::from_bytes(v))
        .arg(env!("CARGO_BIN_EXE_scrip"))
        .env("LC_ALL", "C")
        .status()
        .expect("grep runs");
    assert!(matches!(status.code(), Some(0 | 1)), "grep failed");
    status.success()
}

// ---------------------------------------------------------------------------------------------
// Secrets.

struct Secret {
    what: String,
    text: String,
}

fn secret(what: impl Into<String>, text: impl Into<String>) -> Secret {
    Secret {
        what: what.into(),
        text: text.into(),
    }
}

/// Where any secret appears in `text` (card codes case-insensitively).
fn leaks(text: &str, secrets: &[Secret], except: &[&str], file: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    for s in secrets {
        if except.contains(&s.text.as_str()) {
            continue;
        }
        let at = if s.what.starts_with("card code") {
            lower.find(&s.text.to_lowercase())
        } else {
            text.find(&s.text)
        };
        if let Some(at) = at {
            let line = text[..at].matches('\n').count() + 1;
            found.push(format!("{} ({}) in {file} line {line}", s.what, s.text));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_logged_and_issuer_and_relay_share_no_value() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let logs = d.join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let log = |name: &str| logs.join(format!("{name}.log"));
    let http = reqwest::Client::new();

    // The ledger, with operators `issuer` and `relay`.
    let ledger_db = format!("sqlite://{}", d.join("ledger.db").display());
    let setup = SCRIP.ledger_setup(d, &ledger_db);
    let ledger_url = setup.base.clone();
    let mut ledger = logged(setup.process(SCRIP), &log("ledger")).started().await;

    // The issuer: keys, a batch of three cards, activation, then the service.
    let issuer_config = setup.issuer_config(d);
    let issuer_url = issuer_config.base.clone();
    let issuer_db = d.join("issuer.db");
    let keys_dir = d.join("keys");
    let icfg = path(&issuer_config.config);
    let issuer_cli = log("issuer-cli");
    let rotated = cli_ok(&["issuer", "keys", "rotate", "--config", icfg], &issuer_cli);
    assert_eq!(rotated.matches("announced").count(), 5, "{rotated}");
    let csv_path = d.join("cards.csv");
    cli_ok(&mint_args("40", "3", &csv_path, icfg), &issuer_cli);
    let rows = read_cards(&csv_path);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let batch = rows[0][0].clone();
    let codes: Vec<String> = rows.iter().map(|r| r[2].clone()).collect();
    let activated = cli_ok(
        &[
            "issuer", "cards", "activate", "--batch", &batch, "--config", icfg,
        ],
        &issuer_cli,
    );
    assert!(activated.contains("on sale"), "{activated}");
    let mut issuer = logged(issuer_config.process(SCRIP, "issuer"), &log("issuer"))
        .started()
        .await;

    // The relay operator's sidecar and example relay.
    let redeemer_config = setup.redeemer_config(d);
    let redeemer_url = redeemer_config.base.clone();
    let redeemer_db = d.join("redeemer.db");
    let mut redeemer = logged(redeemer_config.process(SCRIP, "redeemer"), &log("redeemer"))
        .started()
        .await;
    let relay_port = free_port();
    let relay_url = format!("http://127.0.0.1:{relay_port}");
    let relay_data = d.join("relay-data");
    let relay_listen = format!("127.0.0.1:{relay_port}");
    let relay_config = d.join("relay.toml");
    std::fs::write(
        &relay_config,
        format!(
            "listen = \"{relay_listen}\"\nsidecar = \"{redeemer_url}\"\ndata_dir = \"{}\"\n",
            relay_data.display()
        ),
    )
    .expect("relay.toml");
    let relay_args = ["relay", "serve", "--config", path(&relay_config)];
    // The relay has no health endpoint: a missing chunk's 404 means it answers.
    let relay_process = Process::new(SCRIP, "relay", &relay_args)
        .ready_when(&format!("{relay_url}/chunks/AAAAAAAAAAAAAAAAAAAAAA"), |s| {
            s == 404
        });
    let mut relay = logged(relay_process, &log("relay")).started().await;

    // A person's wallet, driven with the CLI. Its standard output is checked separately.
    let wallet = d.join("wallet.db");
    let w = path(&wallet);
    let wallet_log = log("wallet-cli-stderr");
    let mut wallet_stdout: Vec<(String, String, Vec<String>)> = Vec::new();
    let init = wallet_cli(w, &["init", "--ledger", &ledger_url], &wallet_log);
    let backup = init
        .split_whitespace()
        .find(|w| w.starts_with("sw1-"))
        .expect("backup code shown")
        .to_owned();
    wallet_stdout.push(("init".into(), init.clone(), vec![backup.clone()]));
    // Three openings of two cards (the third card stays unopened).
    let mut open = |code: &str, how: &[&str], expect: &[&str]| {
        let mut args = vec!["open", code, "--issuer", &issuer_url];
        args.extend_from_slice(how);
        let opened = wallet_cli(w, &args, &wallet_log);
        for e in expect {
            assert!(opened.contains(e), "{e:?} not in {opened}");
        }
        wallet_stdout.push(("open".into(), opened, Vec::new()));
    };
    open(
        &codes[0],
        &["--tokens", "queue=1,chunk-64k=12"],
        &["1 x queue", "12 x chunk-64k", "18 credits left"],
    );
    // Without --tokens the wallet asks the card's balance first.
    open(
        &codes[0],
        &["--kind", "queue"],
        &["1 x queue", "8 credits left"],
    );
    open(
        &codes[1],
        &["--tokens", "queue=2,chunk-64k=4"],
        &["2 x queue", "4 x chunk-64k", "16 credits left"],
    );
    let export = d.join("tokens.json");
    let exported = wallet_cli(w, &["export", "--out", path(&export)], &wallet_log);
    wallet_stdout.push(("export".into(), exported.clone(), Vec::new()));
    assert!(exported.contains("exported 20"), "{exported}");
    let export: ExportFile =
        serde_json::from_str(&std::fs::read_to_string(&export).expect("export")).expect("format");
    assert_eq!(export.tokens.len(), 20);

    // Ten spends at the sidecar, each grant shown once on the wallet's output.
    let kinds: Vec<&str> = std::iter::once("queue")
        .chain(std::iter::repeat_n("chunk-64k", 8))
        .chain(std::iter::once("queue"))
        .collect();
    let mut grants = Vec::new();
    for kind in &kinds {
        let stdout = wallet_cli(
            w,
            &["spend", "--kind", kind, "--redeemer", &redeemer_url],
            &wallet_log,
        );
        let grant = stdout.trim().to_owned();
        assert!(grant.starts_with(&format!("sg1.{kind}.")), "{grant}");
        wallet_stdout.push(("spend".into(), stdout, vec![grant.clone()]));
        grants.push(grant);
    }

    // The grants at the relay, and refusals on the way.
    let queue = |grant: &str| {
        http.post(format!("{relay_url}/queues"))
            .bearer_auth(grant)
            .send()
    };
    let chunk = |grant: &str| {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        let mut body = vec![0u8; 1000];
        rand::fill(&mut body[..]);
        http.put(format!("{relay_url}/chunks/{}", b64_encode(id)))
            .bearer_auth(grant)
            .body(body)
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    let last = grants.len() - 1;
    assert_eq!(status(queue(&grants[0]).await.expect("relay")), 201);
    for g in &grants[1..last] {
        assert_eq!(status(chunk(g).await.expect("relay")), 201);
    }
    assert_eq!(status(queue(&grants[0]).await.expect("relay")), 403, "used");
    assert_eq!(
        status(chunk(&grants[last]).await.expect("relay")),
        403,
        "a queue grant buys no chunk"
    );
    assert_eq!(status(queue(&grants[last]).await.expect("relay")), 201);

    // The issuer refuses unknown and mistyped codes.
    let unknown_code = CardCode::generate().to_string();
    let mut mistyped = codes[2].clone().into_bytes();
    let last = mistyped.len() - 2;
    mistyped[last] = if mistyped[last] == b'A' { b'B' } else { b'A' };
    let mistyped = String::from_utf8(mistyped).expect("ascii");
    for code in [&unknown_code, &mistyped] {
        let r = http
            .post(format!("{issuer_url}/v1/cards/balance"))
            .json(&serde_json::json!({ "card_code": code }))
            .send()
            .await
            .expect("issuer");
        assert!(matches!(r.status().as_u16(), 400 | 403), "{}", r.status());
    }

    // Which exported tokens were spent, from the ledger.
    let mut spent = Vec::new();
    for t in &export.tokens {
        let s: Value = http
            .get(format!(
                "{ledger_url}/v1/nullifiers/{}",
                t.token.nullifier()
            ))
            .send()
            .await
            .expect("ledger")
            .json()
            .await
            .expect("json");
        spent.push(s["status"] == "spent");
    }
    assert_eq!(spent.iter().filter(|s| **s).count(), grants.len());

    // Straight at the sidecar: a double spend, a forged token, a token of the wrong kind.
    let redeem = |token: &Token, kind: &str| {
        http.post(format!("{redeemer_url}/v1/redeem"))
            .json(&serde_json::json!({"token": b64_encode(token.to_bytes()), "kind": kind}))
            .send()
    };
    let spent_token = export
        .tokens
        .iter()
        .zip(&spent)
        .find(|(_, s)| **s)
        .map(|(t, _)| t)
        .expect("spent");
    let unspent_token = export
        .tokens
        .iter()
        .zip(&spent)
        .find(|(_, s)| !**s)
        .map(|(t, _)| t)
        .expect("unspent");
    let r = redeem(&spent_token.token, spent_token.key.kind.as_str())
        .await
        .expect("redeem");
    assert_eq!(r.status().as_u16(), 409, "double spend");
    let mut forged = unspent_token.token.clone();
    forged.authenticator[7] ^= 1;
    let r = redeem(&forged, unspent_token.key.kind.as_str())
        .await
        .expect("redeem");
    assert_eq!(r.status().as_u16(), 422, "forged");
    let other_kind = if unspent_token.key.kind.as_str() == "queue" {
        "chunk-64k"
    } else {
        "queue"
    };
    let r = redeem(&unspent_token.token, other_kind)
        .await
        .expect("redeem");
    assert_eq!(r.status().as_u16(), 422, "wrong kind");
    let balance = wallet_cli(w, &["balance"], &wallet_log);
    wallet_stdout.push(("balance".into(), balance.clone(), Vec::new()));
    assert!(balance.contains("spent 10"), "{balance}");

    // What every service's /metrics shows after all of that, for the check below.
    let mut scrapes = Vec::new();
    for (name, url) in [
        ("ledger", &ledger_url),
        ("issuer", &issuer_url),
        ("redeemer", &redeemer_url),
        ("relay", &relay_url),
    ] {
        let text = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            text.contains("_http_request_duration_seconds_bucket{"),
            "{name} /metrics: {text}"
        );
        scrapes.push((name, text));
    }

    // Graceful shutdown; what the ledger publishes once the issuer has reported.
    relay.stop().await;
    redeemer.stop().await;
    issuer.stop().await;
    let mut published = Published(BTreeMap::new());
    for endpoint in ["keys", "info", "checkpoint"] {
        let r = http
            .get(format!("{ledger_url}/v1/{endpoint}"))
            .send()
            .await
            .expect("ledger");
        if endpoint != "checkpoint" {
            assert!(r.status().is_success(), "/v1/{endpoint}: {}", r.status());
        }
        if r.status().is_success() {
            let v: Value = r.json().await.expect("json");
            published.walk(&v, endpoint);
            if endpoint == "keys" {
                for k in v["keys"].as_array().expect("keys") {
                    let info: TokenKeyInfo =
                        serde_json::from_value(k["info"].clone()).expect("key info");
                    let id = info.public_key.id();
                    published.0.insert(id.0.to_vec(), "keys: key id".into());
                    let pem = info.public_key.to_pem().expect("pem");
                    for v in text_values(&pem) {
                        published.0.insert(v, "keys: public key PEM".into());
                    }
                }
            }
            if endpoint == "info" {
                for op in v["operators"].as_array().expect("operators") {
                    let name = op["name"].as_str().expect("name");
                    let digest = TokenChallenge::for_issuer(name)
                        .expect("challenge")
                        .digest();
                    published
                        .0
                        .insert(digest.to_vec(), "info: challenge digest of a name".into());
                }
            }
        }
    }
    ledger.stop().await;

    // ---- 1. Secrets are never logged. ----
    let mut secrets = Vec::new();
    for code in codes.iter().chain([&unknown_code, &mistyped]) {
        secrets.push(secret("card code", code.clone()));
        secrets.push(secret("card code (compact)", code.replace('-', "")));
    }
    let seed = WalletSeed::from_backup_code(&backup).expect("backup code");
    secrets.push(secret("backup code", backup.clone()));
    secrets.push(secret(
        "backup code body",
        backup.trim_start_matches("sw1-").to_owned(),
    ));
    secrets.push(secret("wallet seed", b64_encode(seed.as_bytes())));
    secrets.push(secret("wallet seed (hex)", hex(seed.as_bytes())));
    for t in export.tokens.iter().map(|t| &t.token).chain([&forged]) {
        let bytes = t.to_bytes();
        secrets.push(secret("token", b64_encode(&bytes)));
        secrets.push(secret("token (hex)", hex(&bytes)));
        secrets.push(secret("token nonce", b64_encode(t.nonce)));
        secrets.push(secret("token nonce (hex)", hex(&t.nonce)));
        secrets.push(secret("token authenticator", b64_encode(t.authenticator)));
        secrets.push(secret("token authenticator (hex)", hex(&t.authenticator)));
    }
    for g in &grants {
        secrets.push(secret("grant code", g.clone()));
        let random = g.rsplit('.').next().expect("grant").to_owned();
        secrets.push(secret("grant code's random part", random));
    }
    let mut key_files = 0;
    for entry in std::fs::read_dir(d).expect("dir") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "key") {
            let text = std::fs::read_to_string(&p).expect("key");
            let body = text.split_whitespace().nth(1).expect("key body").to_owned();
            secrets.push(secret(
                "operator private key (hex)",
                hex(&b64_decode(&body).expect("b64")),
            ));
            secrets.push(secret("operator private key", body));
            key_files += 1;
        }
    }
    assert_eq!(key_files, 3, "ledger, issuer and relay keys");
    let mut pem_files = 0;
    for entry in std::fs::read_dir(&keys_dir).expect("keys dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("pem");
        assert!(text.contains("PRIVATE KEY"), "{text}");
        for line in text.lines() {
            if !line.starts_with("-----") && line.len() >= MIN_BYTES {
                secrets.push(secret("token private key PEM line", line.to_owned()));
            }
        }
        pem_files += 1;
    }
    assert_eq!(pem_files, 5, "one token key per kind");

    let service_logs = [
        "ledger",
        "issuer",
        "issuer-cli",
        "redeemer",
        "relay",
        "wallet-cli-stderr",
    ];
    let mut found = Vec::new();
    let mut log_lines = BTreeMap::new();
    for name in service_logs {
        let text = std::fs::read_to_string(log(name)).expect("log");
        log_lines.insert(name, text.lines().count());
        found.extend(leaks(&text, &secrets, &[], &format!("{name}.log")));
    }
    for (name, text) in &scrapes {
        found.extend(leaks(text, &secrets, &[], &format!("{name} /metrics")));
    }
    for (what, stdout, shown) in &wallet_stdout {
        let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
        let mut except = shown.clone();
        // The backup code's body and the grant's random part are parts of what is shown.
        let parts: Vec<String> = shown
            .iter()
            .map(|s| {
                s.trim_start_matches("sw1-")
                    .rsplit('.')
                    .next()
                    .unwrap_or(s)
                    .to_owned()
            })
            .collect();
        except.extend(parts.iter().map(String::as_str));
        // The seed's own base64url is the backup code's first 42 or 43 characters.
        let seed_b64 = b64_encode(seed.as_bytes());
        if what == "init" {
            except.push(&seed_b64);
        }
        found.extend(leaks(
            stdout,
            &secrets,
            &except,
            &format!("wallet {what} stdout"),
        ));
        for s in &shown {
            assert!(stdout.contains(s), "wallet {what} should show {s}");
        }
    }
    // The logs are really at debug level, so the check is not vacuous.
    for name in ["ledger", "issuer", "redeemer", "issuer-cli"] {
        let text = std::fs::read_to_string(log(name)).expect("log");
        assert!(
            text.contains("DEBUG"),
            "{name}.log has no debug lines:\n{text}"
        );
    }
    assert!(
        log_lines["relay"] > 0,
        "the relay logged nothing (it logs the grant refusals)"
    );
    println!(
        "secrets checked: {} strings over log lines {:?} and {} wallet outputs",
        secrets.len(),
        log_lines,
        wallet_stdout.len()
    );
    assert!(found.is_empty(), "secrets found:\n{}", found.join("\n"));
    // The search itself finds a planted secret, a card code whatever its case.
    let planted = format!("x {} y {}", grants[0], codes[2].to_lowercase());
    assert_eq!(leaks(&planted, &secrets, &[], "planted").len(), 3);

    // ---- 2. Issuer and relay share no value. ----
    let mut issuer_side = Values::default();
    let issuer_rows = issuer_side.add_sqlite(&issuer_db, "issuer.db").await;
    issuer_side.add_log(&log("issuer"), "issuer.log");
    issuer_side.add_log(&issuer_cli, "issuer-cli.log");
    let mut relay_side = Values::default();
    let redeemer_rows = relay_side.add_sqlite(&redeemer_db, "redeemer.db").await;
    relay_side.add_log(&log("redeemer"), "redeemer.log");
    relay_side.add_log(&log("relay"), "relay.log");
    let mut relay_files = 0;
    for sub in ["queues", "chunks"] {
        for entry in std::fs::read_dir(relay_data.join(sub)).expect("relay data") {
            let p = entry.expect("entry").path();
            let name = p.file_name().and_then(|n| n.to_str()).expect("name");
            relay_side.add_text(name, &format!("relay-data/{sub}"));
            relay_side.add(
                std::fs::read(&p).expect("file"),
                &format!("relay-data/{sub}"),
            );
            relay_files += 1;
        }
    }
    assert_eq!(relay_files, grants.len(), "a queue or a chunk per grant");

    // Planted values: each side holds what it must, and not what it must not.
    let challenge = TokenChallenge::for_issuer("issuer").expect("challenge");
    let mut request_ids = 0;
    for (t, was_spent) in export.tokens.iter().zip(&spent) {
        let nullifier = t.token.nullifier().0;
        assert_eq!(
            relay_side.has(&nullifier),
            *was_spent,
            "the sidecar stores the nullifier of exactly the spent tokens"
        );
        let counter = (0..64)
            .find(|c| seed.nonce(*c) == t.token.nonce)
            .expect("the token's counter");
        let (request, _) = blind(&seed, counter, &t.key.public_key, &challenge).expect("blind");
        assert!(
            issuer_side.holds(&request.blinded_msg),
            "the issuer keeps the blinded request of token {counter}"
        );
        assert!(!relay_side.holds(&request.blinded_msg));
        if issuer_side.has(&seed.request_id(counter)) {
            request_ids += 1;
        }
        for v in [
            &t.token.to_bytes()[..],
            &t.token.nonce[..],
            &nullifier[..],
            &t.token.authenticator[..],
        ] {
            assert!(!issuer_side.holds(v), "the issuer never sees a token");
        }
    }
    assert_eq!(request_ids, 3, "three openings, each under its request id");

    // The comparison itself finds a value copied across, either way, equal or contained.
    let t0 = &export.tokens[0];
    let (r0, _) = blind(
        &seed,
        (0..64)
            .find(|c| seed.nonce(*c) == t0.token.nonce)
            .expect("counter"),
        &t0.key.public_key,
        &challenge,
    )
    .expect("blind");
    let mut planted = relay_side.clone();
    planted.add(r0.blinded_msg.to_vec(), "planted");
    let (_, found) = classify(linked(&issuer_side, &planted), &published);
    assert!(!found.is_empty());
    assert!(found.iter().all(|f| f.contains("planted")), "{found:?}");
    let mut planted = issuer_side.clone();
    planted.add(spent_token.token.nullifier().0.to_vec(), "planted");
    let (_, found) = classify(linked(&planted, &relay_side), &published);
    assert!(!found.is_empty());
    assert!(found.iter().all(|f| f.contains("planted")), "{found:?}");

    // Both sides are substantial.
    let (ni, nr) = (issuer_side.0.len(), relay_side.0.len());
    assert!(ni >= 36, "only {ni} values on the issuer side");
    assert!(nr >= 36, "only {nr} values on the relay side");

    // Shared by design: what the ledger publishes (and the program's own constants).
    let published_per_side = [&issuer_side, &relay_side].map(|side| {
        side.0
            .keys()
            .filter(|v| published.covers(v).is_some())
            .count()
    });
    let (by_design, found) = classify(linked(&issuer_side, &relay_side), &published);
    println!(
        "issuer side: {ni} values from {issuer_rows} rows of issuer.db, issuer.log and \
         issuer-cli.log ({} of them published by the ledger), and {} bytes of database files",
        published_per_side[0],
        issuer_side.1.iter().map(|(_, f)| f.len()).sum::<usize>()
    );
    println!(
        "relay side: {nr} values from {redeemer_rows} rows of redeemer.db, redeemer.log, \
         relay.log and {relay_files} relay files ({} of them published by the ledger), and {} \
         bytes of database files",
        published_per_side[1],
        relay_side.1.iter().map(|(_, f)| f.len()).sum::<usize>()
    );
    let shown: Vec<String> = by_design
        .iter()
        .map(|(why, values)| {
            let texts: Vec<String> = values
                .iter()
                .map(|v| match std::str::from_utf8(v) {
                    Ok(t) if t.bytes().all(|b| b.is_ascii_graphic()) => t.to_owned(),
                    _ => b64_encode(v),
                })
                .collect();
            format!("{why}: {}", texts.join(", "))
        })
        .collect();
    println!(
        "the ledger publishes {} values; on both sides by design: {} [{}]",
        published.0.len(),
        by_design.values().map(BTreeSet::len).sum::<usize>(),
        shown.join("; ")
    );
    println!("run time {:.1?}", started.elapsed());
    assert!(
        found.is_empty(),
        "values held by both the issuer side and the relay side:\n{}",
        found.join("\n")
    );
}
