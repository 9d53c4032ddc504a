//! Bad input to every endpoint of every service, against a whole consortium on loopback
//! (`Consortium::start`: the ledger, and op-a's issuer, redeemer sidecar and example relay).
//!
//! Every answer must be a 4xx: never 2xx, never 5xx, 413 when the body is over the service's
//! limit, 404/405 for unknown routes and methods. Where the service answers JSON the body must
//! be `{"error": {"code": "...", "message": "..."}}`. And nothing may change: the ledger's head,
//! totals and checkpoint, the issuer's cards, the redeemer's grants and spends, the relay's
//! files. At the end the grant and the token the test kept are used for real, which proves
//! that no bad request consumed or spent them.
//!
//! The root package has no proptest dev-dependency, so the cases come from `rand`'s seeded
//! `StdRng`, a fixed number per endpoint: every run sends the same cases
//! (`BAD_INPUT_SEED=<u64>` picks another set). Answers hyper gives itself to malformed HTTP
//! (bad framing, oversized heads) are only required to be 4xx: they never reach the app.
//!
//! The other tests here cover slow clients (a stalled body gets the services' JSON 408; a head
//! trickled in is cut off after the header read timeout; the example relay has the same
//! limits) and many idle connections.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, RngExt as _, SeedableRng as _};
use reqwest::Method;
use reqwest::header::HeaderValue;
use scrip::consortium::Consortium;
use scrip_client::Wallet;
use scrip_redeemer::Mode;
use scrip_spec::api::issuer::MAX_OPEN_BATCH;
use scrip_spec::api::{ErrorAnswer, GenericCode};
use scrip_spec::encoding::{b64_decode, b64_encode};
use scrip_spec::ledger::{
    Action, Checkpoint, Cosignature, EntryBody, Hash32, LedgerRequest, MAX_SPEND_BATCH,
    OperatorInfo, Role, SpendGroup,
};
use scrip_spec::now;
use scrip_spec::{
    CapacityKind, CardCode, Catalog, Nullifier, OperatorKey, Token, TokenKeyId, TokenKeyInfo,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Cases per endpoint, by the kind of endpoint.
const JSON_CASES: usize = 400;
const INPUT_GET_CASES: usize = 300;
const PLAIN_GET_CASES: usize = 200;
const RELAY_CASES: usize = 300;
const ROUTE_CASES: usize = 200;
/// Endpoints tested at once.
const PARALLEL: usize = 4;

const LEDGER_LIMIT: usize = scrip_ledger::http::MAX_BODY_BYTES;
const ISSUER_LIMIT: usize = scrip_issuer::http::MAX_BODY_BYTES;
const REDEEMER_LIMIT: usize = scrip_redeemer::http::MAX_BODY_BYTES;
const RELAY_LIMIT: usize = scrip_redeemer::example_relay::MAX_CHUNK;

fn seed() -> u64 {
    std::env::var("BAD_INPUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0bad_1200)
}

/// Each endpoint draws from its own stream, so adding cases to one leaves the others alone.
fn rng_for(name: &str) -> StdRng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(seed() ^ h)
}

fn kind(k: &str) -> CapacityKind {
    CapacityKind::new(k).expect("kind")
}

fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut b);
    b
}

fn random_32(rng: &mut StdRng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("non-empty")
}

fn weighted<'a>(rng: &mut StdRng, items: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (name, w) in items {
        if x < *w {
            return name;
        }
        x -= w;
    }
    items[0].0
}

fn random_ascii(rng: &mut StdRng, max: usize) -> String {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
        .collect()
}

/// Percent-encodes everything but unreserved characters, so the URL parser keeps the path
/// exactly as generated.
fn pct(s: &[u8]) -> String {
    s.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// JSON with its field order kept (serde_json's `Value` sorts keys; a struct read from an array
// takes its fields in declaration order).

#[derive(Clone, Debug)]
enum J {
    Leaf(Value),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Num,
    Str,
    Arr,
    Obj,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> u8 {
        self.ws();
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn string(&mut self) -> String {
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        serde_json::from_slice(&self.s[start..self.i]).expect("string")
    }

    fn value(&mut self) -> J {
        match self.peek() {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                while self.peek() != b'}' {
                    let key = self.string();
                    assert_eq!(self.peek(), b':');
                    self.i += 1;
                    fields.push((key, self.value()));
                    if self.peek() == b',' {
                        self.i += 1;
                    }
                }
                self.i += 1;
                J::Obj(fields)
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                while self.peek() != b']' {
                    items.push(self.value());
                    if self.peek() == b',' {
                        self.i += 1;
                    }
                }
                self.i += 1;
                J::Arr(items)
            }
            b'"' => J::Leaf(Value::String(self.string())),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && !b",]} \n\r\t".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                J::Leaf(serde_json::from_slice(&self.s[start..self.i]).expect("scalar"))
            }
        }
    }
}

impl J {
    fn parse(text: &str) -> J {
        Parser {
            s: text.as_bytes(),
            i: 0,
        }
        .value()
    }

    fn text(&self) -> String {
        match self {
            J::Leaf(v) => v.to_string(),
            J::Arr(items) => format!(
                "[{}]",
                items.iter().map(J::text).collect::<Vec<_>>().join(",")
            ),
            J::Obj(fields) => format!(
                "{{{}}}",
                fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v.text()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            J::Leaf(Value::Null) => Kind::Null,
            J::Leaf(Value::Bool(_)) => Kind::Bool,
            J::Leaf(Value::Number(_)) => Kind::Num,
            J::Leaf(Value::String(_)) => Kind::Str,
            J::Leaf(Value::Array(_)) | J::Arr(_) => Kind::Arr,
            J::Leaf(Value::Object(_)) | J::Obj(_) => Kind::Obj,
        }
    }

    /// Every node's path (indices into objects' field lists and arrays), root first.
    fn paths(&self) -> Vec<Vec<usize>> {
        fn walk(j: &J, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            out.push(path.clone());
            let children: Vec<&J> = match j {
                J::Leaf(_) => Vec::new(),
                J::Arr(items) => items.iter().collect(),
                J::Obj(fields) => fields.iter().map(|(_, v)| v).collect(),
            };
            for (i, child) in children.into_iter().enumerate() {
                path.push(i);
                walk(child, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    fn at(&self, path: &[usize]) -> &J {
        path.iter().fold(self, |j, &i| match j {
            J::Arr(items) => &items[i],
            J::Obj(fields) => &fields[i].1,
            J::Leaf(_) => j,
        })
    }

    fn at_mut(&mut self, path: &[usize]) -> &mut J {
        let mut j = self;
        for &i in path {
            j = match j {
                J::Arr(items) => &mut items[i],
                J::Obj(fields) => &mut fields[i].1,
                J::Leaf(_) => return j,
            };
        }
        j
    }

    fn describe(&self, path: &[usize]) -> String {
        let mut out = String::from("$");
        let mut j = self;
        for &i in path {
            match j {
                J::Arr(items) => {
                    out.push_str(&format!("[{i}]"));
                    j = &items[i];
                }
                J::Obj(fields) => {
                    out.push_str(&format!(".{}", fields[i].0));
                    j = &fields[i].1;
                }
                J::Leaf(_) => {}
            }
        }
        out
    }

    fn str_value(&self) -> Option<&str> {
        match self {
            J::Leaf(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// A value of another JSON type than `kind`.
fn wrong_typed(rng: &mut StdRng, kind: Kind) -> J {
    let candidates: Vec<(Kind, Value)> = vec![
        (Kind::Null, Value::Null),
        (Kind::Bool, json!(true)),
        (Kind::Bool, json!(false)),
        (Kind::Num, json!(0)),
        (Kind::Num, json!(-1)),
        (Kind::Num, json!(1.5)),
        (Kind::Num, json!(u64::MAX)),
        (Kind::Str, json!("")),
        (Kind::Str, json!("x")),
        (Kind::Str, json!("1")),
        (Kind::Arr, json!([])),
        (Kind::Arr, json!([1, "a"])),
        (Kind::Obj, json!({})),
        (Kind::Obj, json!({"a": 1})),
    ];
    let others: Vec<&(Kind, Value)> = candidates.iter().filter(|(k, _)| *k != kind).collect();
    let (_, v) = pick(rng, &others);
    let mut j = J::Leaf((*v).clone());
    // Numbers as text: u64::MAX + 1 and a float where an integer is due.
    if kind == Kind::Num && rng.random_bool(0.3) {
        let text = *pick(rng, &["18446744073709551616", "1e3", "2.0"]);
        j = J::Leaf(serde_json::from_str(text).expect("number"));
    }
    j
}

fn random_leaf(rng: &mut StdRng) -> Value {
    pick(
        rng,
        &[
            Value::Null,
            json!(1),
            json!("x"),
            json!(true),
            json!([]),
            json!({}),
            json!({"nested": [1, 2]}),
        ],
    )
    .clone()
}

// ---------------------------------------------------------------------------------------------
// Cases and answers.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Service {
    Ledger,
    Issuer,
    Redeemer,
    Relay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Any4xx,
    Status(u16),
    OneOf(&'static [u16]),
}

#[derive(Clone, Debug)]
struct Case {
    family: &'static str,
    detail: String,
    method: Method,
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    /// A hand-made request, sent as is over its own connection.
    raw: Option<Vec<u8>>,
    expect: Expect,
    /// The answer must be the JSON error body.
    json: bool,
    /// The body must be parsed as the request (a JSON array read as the request object is
    /// refused by the parser, so its error code must be `malformed_request`).
    parse_error: bool,
}

impl Case {
    fn new(family: &'static str, detail: impl Into<String>, method: Method, target: &str) -> Self {
        Self {
            family,
            detail: detail.into(),
            method,
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            raw: None,
            expect: Expect::Any4xx,
            json: true,
            parse_error: false,
        }
    }

    fn json_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push(("content-type", b"application/json".to_vec()));
        self.body = body.into();
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// 413 over `limit`, any 4xx under it.
    fn sized(self, limit: usize) -> Self {
        let over = self.body.len() > limit;
        self.expect(if over {
            Expect::Status(413)
        } else {
            Expect::Any4xx
        })
    }

    fn raw(family: &'static str, detail: &str, bytes: Vec<u8>, expect: Expect) -> Self {
        let mut c = Self::new(family, detail, Method::GET, "");
        c.raw = Some(bytes);
        c.expect = expect;
        c.json = false;
        c
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

struct Endpoint {
    service: Service,
    name: String,
    base: String,
    /// Each case from its own loopback address (the issuer limits failed card attempts per
    /// source address).
    rotate_source: bool,
    limit: usize,
    cases: Vec<Case>,
}

#[derive(Debug, Default)]
struct Outcome {
    name: String,
    service: Option<Service>,
    cases: usize,
    statuses: BTreeMap<u16, usize>,
    families: BTreeMap<&'static str, usize>,
    codes: BTreeMap<String, usize>,
    violations: Vec<String>,
    known: BTreeMap<&'static str, usize>,
    /// An example of each known deviation.
    known_examples: BTreeMap<&'static str, String>,
    slowest: (Duration, String),
    elapsed: Duration,
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if body.len() > 200 {
        format!("{text}…")
    } else {
        text
    }
}

/// The code of an error answer, read as the generic codes every service shares.
fn error_code(body: &[u8]) -> Option<GenericCode> {
    serde_json::from_slice::<ErrorAnswer<GenericCode>>(body)
        .ok()
        .map(|a| a.error.code)
}

/// Whether the body is exactly `{"error": {"code": <non-empty string>, "message": <string>, ...}}`.
fn error_shape(answer: &Answer) -> Result<(), String> {
    let v: Value = serde_json::from_slice(&answer.body).map_err(|_| {
        format!(
            "body is not JSON (content-type {:?}): {:?}",
            answer.content_type,
            excerpt(&answer.body)
        )
    })?;
    let top_ok = v.as_object().is_some_and(|o| o.len() == 1);
    let code_ok = v["error"]["code"].as_str().is_some_and(|c| !c.is_empty());
    let message_ok = v["error"]["message"].as_str().is_some();
    if top_ok && code_ok && message_ok && answer.content_type.starts_with("application/json") {
        Ok(())
    } else {
        Err(format!(
            "body is not the JSON error form (content-type {:?}): {}",
            answer.content_type,
            excerpt(&answer.body)
        ))
    }
}

#[derive(Debug)]
enum Problem {
    /// Not a 4xx, or not the status expected.
    Status(String),
    /// Not the JSON error body.
    Shape(String),
    /// A JSON array was read as the request object.
    Array(String),
}

impl Problem {
    fn text(&self) -> &str {
        match self {
            Problem::Status(t) | Problem::Shape(t) | Problem::Array(t) => t,
        }
    }
}

fn judge(case: &Case, answer: &Answer) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !(400..500).contains(&answer.status) {
        problems.push(Problem::Status(format!(
            "status {} is not a 4xx",
            answer.status
        )));
    }
    match case.expect {
        Expect::Any4xx => {}
        Expect::Status(s) if s == answer.status => {}
        Expect::OneOf(all) if all.contains(&answer.status) => {}
        other => problems.push(Problem::Status(format!(
            "status {}, expected {other:?}",
            answer.status
        ))),
    }
    if case.json
        && case.method != Method::HEAD
        && let Err(e) = error_shape(answer)
    {
        problems.push(Problem::Shape(e));
    }
    if case.parse_error {
        let code = error_code(&answer.body);
        if code != Some(GenericCode::MalformedRequest) {
            problems.push(Problem::Array(format!(
                "a JSON array was read as the request object (answer {} {:?})",
                answer.status, code
            )));
        }
    }
    problems
}

/// Deviations from the rules, each matched narrowly (never a wrong status or a state change),
/// reported on every run. Five found when this test was written are fixed (a JSON array read as
/// the request object at the top level, and plain-text or empty error bodies from path and body
/// rejections, the example relay's missing fallbacks and the 408); SECURITY.md lists them.
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[(
    "nested-array-as-object",
    "an object nested in a request body may be written as the array of its values: serde's \
     derived structs accept both forms, and ApiJson (ledger/src/api.rs) checks only the top \
     level. Harmless: signatures and replay digests are over the canonical re-encoding, so the \
     two forms are the same request, and every such case is still refused here",
)];

fn known_deviation(
    _service: Service,
    _endpoint: &str,
    case: &Case,
    _answer: &Answer,
    problems: &[Problem],
) -> Option<&'static str> {
    let nested = case.family == "object as array" && !case.detail.starts_with("$ ");
    (nested && problems.iter().all(|p| matches!(p, Problem::Array(_))))
        .then_some("nested-array-as-object")
}

fn client(source: Option<IpAddr>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ip) = source {
        b = b.local_address(ip);
    }
    b.build().expect("client")
}

async fn send(
    shared: &reqwest::Client,
    base: &str,
    case: &Case,
    source: Option<IpAddr>,
    limit: usize,
) -> Result<Answer, String> {
    if let Some(raw) = &case.raw {
        let addr: SocketAddr = base.trim_start_matches("http://").parse().expect("address");
        let raw = raw.clone();
        return tokio::task::spawn_blocking(move || send_raw(addr, &raw))
            .await
            .map_err(|e| e.to_string())?;
    }
    // An answer before the whole body was read closes the connection: keep such requests off
    // the shared pool.
    let own;
    let http = if source.is_some() || case.body.len() > limit / 2 {
        own = client(source);
        &own
    } else {
        shared
    };
    let mut req = http.request(case.method.clone(), format!("{base}{}", case.target));
    for (name, value) in &case.headers {
        req = req.header(
            *name,
            HeaderValue::from_bytes(value).map_err(|e| format!("bad test header: {e}"))?,
        );
    }
    if !case.body.is_empty() {
        req = req.body(case.body.clone());
    }
    let resp = req.send().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        format!("no answer: {msg}")
    })?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await.map_err(|e| format!("answer cut: {e}"))?;
    Ok(Answer {
        status,
        content_type,
        body: body.to_vec(),
    })
}

/// Sends a hand-made request (which asks to close the connection) and reads the answer.
fn send_raw(addr: SocketAddr, raw: &[u8]) -> Result<Answer, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    // The server may answer and close before it read everything: a failed write is fine if an
    // answer follows.
    let _ = stream.write_all(raw);
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if response_complete(&got) {
                    break;
                }
            }
            Err(e) if got.is_empty() => return Err(format!("no answer: {e}")),
            Err(_) => break,
        }
    }
    parse_response(&got).ok_or_else(|| format!("no HTTP answer: {:?}", excerpt(&got)))
}

fn header_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

fn response_complete(bytes: &[u8]) -> bool {
    let Some(end) = header_end(bytes) else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| bytes.len() >= end + 4 + n)
}

fn parse_response(bytes: &[u8]) -> Option<Answer> {
    let end = header_end(bytes)?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let mut body = bytes[end + 4..].to_vec();
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    Some(Answer {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body,
    })
}

async fn run_endpoint(ep: Endpoint, shared: reqwest::Client, ips: Arc<AtomicU32>) -> Outcome {
    let started = Instant::now();
    let mut out = Outcome {
        name: ep.name.clone(),
        service: Some(ep.service),
        ..Outcome::default()
    };
    for (i, case) in ep.cases.iter().enumerate() {
        let source = ep.rotate_source.then(|| {
            let n = ips.fetch_add(1, Ordering::Relaxed);
            IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8))
        });
        out.cases += 1;
        *out.families.entry(case.family).or_default() += 1;
        let case_started = Instant::now();
        let sent = send(&shared, &ep.base, case, source, ep.limit).await;
        let took = case_started.elapsed();
        if took > out.slowest.0 {
            out.slowest = (
                took,
                format!("case {i} [{}] {:.80}", case.family, case.detail),
            );
        }
        let problem = match sent {
            Ok(answer) => {
                *out.statuses.entry(answer.status).or_default() += 1;
                // The code as sent, for the tally only (service codes are not generic ones).
                let code = serde_json::from_slice::<Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "-".into());
                *out.codes
                    .entry(format!("{} {code}", answer.status))
                    .or_default() += 1;
                let problems = judge(case, &answer);
                if problems.is_empty() {
                    None
                } else if let Some(id) =
                    known_deviation(ep.service, &ep.name, case, &answer, &problems)
                {
                    *out.known.entry(id).or_default() += 1;
                    out.known_examples.entry(id).or_insert_with(|| {
                        format!(
                            "{} {:.100}: {} {:?}",
                            case.method,
                            case.detail,
                            answer.status,
                            excerpt(&answer.body)
                        )
                    });
                    None
                } else {
                    Some(format!(
                        "{}; body {:?}",
                        problems
                            .iter()
                            .map(Problem::text)
                            .collect::<Vec<_>>()
                            .join("; "),
                        excerpt(&answer.body)
                    ))
                }
            }
            Err(e) => {
                *out.statuses.entry(0).or_default() += 1;
                Some(e)
            }
        };
        if let Some(problem) = problem {
            let mut detail = case.detail.clone();
            if detail.len() > 300 {
                detail.truncate(300);
                detail.push('…');
            }
            out.violations.push(format!(
                "{:?} {} case {i} [{}] {} {}: {problem}",
                ep.service, ep.name, case.family, case.method, detail
            ));
        }
    }
    out.elapsed = started.elapsed();
    out
}

// ---------------------------------------------------------------------------------------------
// The consortium and what the test keeps from its setup.

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    c: Consortium,
    op_a: OperatorKey,
    op_b: OperatorKey,
    ledger_key: OperatorKey,
    ledger_id: Hash32,
    queue_key: TokenKeyInfo,
    chunk_key: TokenKeyInfo,
    /// Cards: opened by the wallet, untouched, and minted but never activated.
    card_opened: String,
    card_fresh: String,
    card_minted: String,
    token_queue: Token,
    token_chunk: Token,
    grant_queue: String,
    grant_chunk: String,
    stored_chunk: String,
    /// The valid signed request the test submitted (admitting op-b), as sent.
    admitted: String,
    /// op-a's cosignature of the checkpoint, as sent.
    cosigned: String,
    checkpoint: Checkpoint,
}

async fn post(url: &str, body: String) -> (u16, Value) {
    let resp = client(None)
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("c");
        let c = Consortium::start(&root, &["op-a"], Mode::Strict)
            .await
            .expect("consortium");
        let a = &c.operators[0];
        a.issuer.rotate_keys().await.expect("keys");
        let (batch, codes) = a.issuer.mint_cards(100, 2).await.expect("mint");
        assert!(a.issuer.activate_batch(&batch).await.expect("activate"));
        let (_, minted) = a.issuer.mint_cards(50, 1).await.expect("mint");
        let read_key = |name: &str| {
            OperatorKey::from_text(&std::fs::read_to_string(root.join(name)).expect("key file"))
                .expect("key")
        };
        let op_a = read_key("op-a.key");
        let ledger_key = read_key("ledger.key");
        let op_b = OperatorKey::generate();
        let ledger_id = c.ledger.info().await.ledger_id;
        let keys = a.issuer.public_keys().keys;
        let key_of = |k: &str| {
            keys.iter()
                .find(|i| i.kind.as_str() == k)
                .expect("key of kind")
                .clone()
        };

        // A wallet opens one card and spends three tokens: two grants are kept unconsumed,
        // one stores a chunk at the relay; a queue and a chunk token stay unspent.
        let wallet = Wallet::create(&dir.path().join("w.db"), &c.ledger_url, None)
            .await
            .expect("wallet");
        let card_opened = codes[0].to_string();
        wallet
            .open_card(
                &a.issuer_url,
                &card_opened,
                &[(kind("queue"), 2), (kind("chunk-64k"), 3)],
                &|_, _| {},
            )
            .await
            .expect("open");
        let grant_queue = wallet
            .spend(&kind("queue"), &a.redeemer_url)
            .await
            .expect("spend")
            .grant;
        let grant_chunk = wallet
            .spend(&kind("chunk-64k"), &a.redeemer_url)
            .await
            .expect("spend")
            .grant;
        let upload = wallet
            .spend(&kind("chunk-64k"), &a.redeemer_url)
            .await
            .expect("spend")
            .grant;
        let stored_chunk = b64_encode([7u8; 16]);
        let resp = client(None)
            .put(format!("{}/chunks/{stored_chunk}", a.relay_url))
            .header("authorization", format!("Bearer {upload}"))
            .body(b"a stored chunk".to_vec())
            .send()
            .await
            .expect("put chunk");
        assert_eq!(resp.status().as_u16(), 201);
        let token_queue = wallet
            .unspent_token("queue")
            .await
            .expect("query")
            .expect("token");
        let token_chunk = wallet
            .unspent_token("chunk-64k")
            .await
            .expect("query")
            .expect("token");

        // The one valid signed request: op-a (admin) admits op-b as issuer and redeemer.
        let admitted = serde_json::to_string(&op_a.sign(LedgerRequest::new(
            ledger_id,
            now(),
            Action::AdmitOperator {
                operator: OperatorInfo {
                    name: "op-b".into(),
                    id: op_b.id(),
                    roles: vec![Role::Issuer, Role::Redeemer],
                },
            },
        )))
        .expect("json");
        let (status, body) = post(&format!("{}/v1/entries", c.ledger_url), admitted.clone()).await;
        assert_eq!(status, 200, "{body}");

        // A checkpoint, cosigned by op-a.
        c.ledger.checkpoint().await.expect("checkpoint");
        let view = c
            .ledger
            .latest_checkpoint()
            .await
            .expect("query")
            .expect("checkpoint");
        let EntryBody::Checkpoint(signed) = view.entry.body else {
            panic!("not a checkpoint entry");
        };
        let checkpoint = signed.payload;
        let cosigned = serde_json::to_string(&op_a.sign(Cosignature {
            checkpoint: checkpoint.clone(),
        }))
        .expect("json");
        let (status, body) = post(
            &format!("{}/v1/checkpoint/cosign", c.ledger_url),
            cosigned.clone(),
        )
        .await;
        assert_eq!(status, 204, "{body}");

        // Nothing may be left for the issuer to send the ledger during the test.
        assert!(
            a.issuer.store().outbox().await.expect("outbox").is_empty(),
            "outbox empty"
        );
        Self {
            root,
            c,
            op_a,
            op_b,
            ledger_key,
            ledger_id,
            queue_key: key_of("queue"),
            chunk_key: key_of("chunk-64k"),
            card_opened,
            card_fresh: codes[1].to_string(),
            card_minted: minted[0].to_string(),
            token_queue,
            token_chunk,
            grant_queue,
            grant_chunk,
            stored_chunk,
            admitted,
            cosigned,
            checkpoint,
            _dir: dir,
        }
    }

    fn ledger(&self) -> &str {
        &self.c.ledger_url
    }
    fn issuer(&self) -> &str {
        &self.c.operators[0].issuer_url
    }
    fn redeemer(&self) -> &str {
        &self.c.operators[0].redeemer_url
    }
    fn relay(&self) -> &str {
        &self.c.operators[0].relay_url
    }

    fn known_card(&self, text: &str) -> bool {
        let Ok(code) = CardCode::parse(text) else {
            return false;
        };
        [&self.card_opened, &self.card_fresh, &self.card_minted]
            .iter()
            .any(|c| CardCode::parse(c).is_ok_and(|k| k == code))
    }

    fn fresh_nullifiers(&self, rng: &mut StdRng, n: usize) -> Vec<Nullifier> {
        (0..n).map(|_| Nullifier(random_32(rng))).collect()
    }

    fn spend(&self, rng: &mut StdRng, n: usize) -> Action {
        Action::Spend {
            groups: vec![SpendGroup {
                token_key_id: self.queue_key.public_key.id(),
                nullifiers: self.fresh_nullifiers(rng, n),
            }],
        }
    }

    fn request(
        &self,
        rng: &mut StdRng,
        ledger_id: Hash32,
        at: u64,
        action: Action,
    ) -> LedgerRequest {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        LedgerRequest {
            ledger_id,
            timestamp: at,
            nonce,
            action,
        }
    }

    fn signed(&self, key: &OperatorKey, request: LedgerRequest) -> String {
        serde_json::to_string(&key.sign(request)).expect("json")
    }

    async fn snapshot(&self) -> Snapshot {
        let a = &self.c.operators[0];
        let info = self.c.ledger.info().await;
        let http = client(None);
        let text = |url: String| {
            let http = http.clone();
            async move {
                http.get(url)
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("text")
            }
        };
        let ledger_metrics = metric_lines(
            &text(format!("{}/metrics", self.ledger())).await,
            &[
                r#"scrip_ledger_requests_total{result="accepted"}"#,
                r#"scrip_ledger_requests_total{result="internal"}"#,
                r#"scrip_ledger_nullifiers_total{result="accepted"}"#,
                "scrip_ledger_head_seq",
            ],
        );
        let issuer_metrics = metric_lines(
            &text(format!("{}/metrics", self.issuer())).await,
            &[
                r#"scrip_issuer_openings_total{result="opened"}"#,
                "scrip_issuer_tokens_signed_total",
            ],
        );
        let mut cards = Vec::new();
        for code in [&self.card_opened, &self.card_fresh, &self.card_minted] {
            cards.push(match a.issuer.balance(code).await {
                Ok(b) => serde_json::to_string(&b).expect("json"),
                Err(e) => format!("refused: {e}"),
            });
        }
        let redeemer_metrics = metric_lines(
            &text(format!("{}/metrics", self.redeemer())).await,
            &[
                r#"scrip_redeemer_redemptions_total{result="granted"}"#,
                r#"scrip_redeemer_redemptions_total{result="already_spent"}"#,
                r#"scrip_redeemer_redemptions_total{result="unavailable"}"#,
                "scrip_redeemer_grants_consumed_total",
                "scrip_redeemer_optimistic_revoked_total",
                "scrip_redeemer_optimistic_revoked_after_use_total",
                "scrip_redeemer_ledger_batches_total",
                "scrip_redeemer_ledger_batched_spends_total",
            ],
        );
        let mut tokens = Vec::new();
        for t in [&self.token_queue, &self.token_chunk] {
            let status = self
                .c
                .ledger
                .nullifier(&t.nullifier())
                .await
                .expect("nullifier");
            tokens.push(format!("{status:?}"));
        }
        Snapshot {
            ledger_head: (info.head_seq, info.head_hash),
            ledger_operators: serde_json::to_string(&info.operators).expect("json"),
            ledger_totals: serde_json::to_string(&self.c.ledger.totals().await.expect("totals"))
                .expect("json"),
            ledger_checkpoint: serde_json::to_string(
                &self.c.ledger.latest_checkpoint().await.expect("checkpoint"),
            )
            .expect("json"),
            ledger_metrics,
            tokens,
            cards,
            issuer_metrics,
            issuer_outbox: a.issuer.store().outbox().await.expect("outbox").len(),
            issuer_keys: serde_json::to_string(&a.issuer.public_keys()).expect("json"),
            redeemer_metrics,
            relay_files: files(&self.root.join("op-a-relay")),
            top_level: top_level(&self.root),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    ledger_head: (u64, Hash32),
    ledger_operators: String,
    ledger_totals: String,
    ledger_checkpoint: String,
    ledger_metrics: Vec<String>,
    tokens: Vec<String>,
    cards: Vec<String>,
    issuer_metrics: Vec<String>,
    issuer_outbox: usize,
    issuer_keys: String,
    redeemer_metrics: Vec<String>,
    relay_files: Vec<(String, u64)>,
    top_level: Vec<String>,
}

fn metric_lines(text: &str, names: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| names.iter().any(|n| l.starts_with(n)))
        .map(str::to_owned)
        .collect()
}

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(dir).expect("prefix").to_owned();
                out.push((rel.display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// Names in the consortium's directory, but SQLite's own passing files.
fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.ends_with("-wal") || n.ends_with("-shm") || n.ends_with("-journal")))
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Generators shared by the JSON endpoints.

/// A JSON endpoint: its valid body (never sent as is) and a well-formed body it refuses on its
/// merits (the base of the "object as array" cases).
struct JsonTarget {
    path: &'static str,
    limit: usize,
    valid: String,
    refused: String,
}

const WRONG_CONTENT_TYPES: &[&str] = &[
    "",
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/xml",
    "application/",
    "json",
    "application/jsonx",
    "*/*",
];

fn generic_json(rng: &mut StdRng, t: &JsonTarget) -> Case {
    let families = [
        ("random bytes", 8),
        ("non-utf8", 6),
        ("invalid json", 10),
        ("wrong top-level type", 6),
        ("field removed", 12),
        ("extra field", 10),
        ("wrong type", 14),
        ("bad base64", 10),
        ("object as array", 6),
        ("duplicate key", 3),
        ("huge string", 3),
        ("huge array", 2),
        ("oversized body", 2),
        ("content type", 8),
        ("wrong method", 4),
    ];
    let family = weighted(rng, &families);
    let valid = J::parse(&t.valid);
    let post = |family: &'static str, detail: String, body: Vec<u8>| {
        Case::new(family, detail, Method::POST, t.path).json_body(body)
    };
    match family {
        "random bytes" => {
            let n = rng.random_range(0..256);
            post(
                "random bytes",
                format!("{n} random bytes"),
                random_bytes(rng, n),
            )
        }
        "non-utf8" => {
            let strings: Vec<Vec<usize>> = valid
                .paths()
                .into_iter()
                .filter(|p| valid.at(p).kind() == Kind::Str)
                .collect();
            let path = pick(rng, &strings).clone();
            let mut j = valid.clone();
            let marker = "\u{1}MARK\u{1}";
            *j.at_mut(&path) = J::Leaf(Value::String(marker.into()));
            let text = j.text();
            let bad: &[u8] = pick::<&[u8]>(
                rng,
                &[
                    &[0xff],
                    &[0xfe, 0xff],
                    &[0xc3, 0x28],
                    &[0xed, 0xa0, 0x80],
                    &[0xc0, 0xaf],
                    &[0xf8, 0x88, 0x80, 0x80, 0x80],
                    &[0x80],
                ],
            );
            let marker_json = serde_json::to_string(marker).expect("json");
            let at = text.find(&marker_json).expect("marker") + 1;
            let mut body = text.as_bytes()[..at].to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(&text.as_bytes()[at + marker_json.len() - 2..]);
            post(
                "non-utf8",
                format!("bytes {bad:02x?} in {}", valid.describe(&path)),
                body,
            )
        }
        "invalid json" => {
            let text = t.valid.as_bytes();
            let (detail, body): (String, Vec<u8>) = match rng.random_range(0..4) {
                0 => {
                    let n = rng.random_range(0..text.len());
                    (format!("cut after {n} bytes"), text[..n].to_vec())
                }
                1 => {
                    let tail = pick(rng, &["x", ",", "}", "]", "{}", "\u{0}", "// c", "null"]);
                    (
                        format!("trailing {tail:?}"),
                        [text, tail.as_bytes()].concat(),
                    )
                }
                2 => ("first byte dropped".into(), text[1..].to_vec()),
                _ => {
                    let fixed = pick(
                        rng,
                        &[
                            "{",
                            "}",
                            "{\"a\":}",
                            "{\"a\" 1}",
                            "{'a':1}",
                            "{a:1}",
                            "[1,]",
                            "{\"a\":1,}",
                            "NaN",
                            "Infinity",
                            "-",
                            "01",
                            "\"unterminated",
                            "{\"a\":\"\\u12\"}",
                            "{\"a\":\"\\x\"}",
                            "\u{feff}{}",
                            "/* c */ {}",
                            "   ",
                            "",
                            "{\"a\":1}{\"b\":2}",
                            "tru",
                            "nul",
                        ],
                    );
                    let mut s = fixed.to_string();
                    if rng.random_bool(0.1) {
                        // Nesting deeper than the parser's recursion limit.
                        s = format!("{}{}", "[".repeat(300), "]".repeat(300));
                    }
                    (format!("{s:.60?}"), s.into_bytes())
                }
            };
            post("invalid json", detail, body)
        }
        "wrong top-level type" => {
            let s = pick(
                rng,
                &[
                    "0", "-1", "1.5", "1e999", "\"text\"", "\"\"", "true", "null", "[]", "[null]",
                    "{}", "[[]]",
                ],
            );
            let body = if rng.random_bool(0.2) {
                format!("[{}]", t.valid)
            } else {
                (*s).to_owned()
            };
            post(
                "wrong top-level type",
                format!("{body:.60}"),
                body.into_bytes(),
            )
        }
        "field removed" => {
            let candidates: Vec<Vec<usize>> = valid
                .paths()
                .into_iter()
                .filter(|p| {
                    p.split_last()
                        .is_some_and(|(_, parent)| valid.at(parent).kind() == Kind::Obj)
                })
                .collect();
            let path = pick(rng, &candidates).clone();
            let detail = format!("without {}", valid.describe(&path));
            let (last, parent) = path.split_last().expect("path");
            let mut j = valid.clone();
            if let J::Obj(fields) = j.at_mut(parent) {
                fields.remove(*last);
            }
            post("field removed", detail, j.text().into_bytes())
        }
        "extra field" => {
            let objects: Vec<Vec<usize>> = valid
                .paths()
                .into_iter()
                .filter(|p| matches!(valid.at(p), J::Obj(_)))
                .collect();
            let path = pick(rng, &objects).clone();
            let mut j = valid.clone();
            let name = match rng.random_range(0..4) {
                0 => String::new(),
                1 => format!("x{}", rng.random_range(0..1000)),
                2 => "extra".into(),
                _ => {
                    // An existing name in another case.
                    if let J::Obj(fields) = j.at(&path) {
                        fields
                            .first()
                            .map(|(k, _)| k.to_uppercase())
                            .unwrap_or_else(|| "X".into())
                    } else {
                        "X".into()
                    }
                }
            };
            let value = random_leaf(rng);
            if let J::Obj(fields) = j.at_mut(&path) {
                let at = rng.random_range(0..=fields.len());
                fields.insert(at, (name.clone(), J::Leaf(value.clone())));
            }
            post(
                "extra field",
                format!("{}.{name:?} = {value}", valid.describe(&path)),
                j.text().into_bytes(),
            )
        }
        "wrong type" => {
            let paths = valid.paths();
            let path = pick(rng, &paths[1..]).clone();
            let replacement = wrong_typed(rng, valid.at(&path).kind());
            let detail = format!("{} = {}", valid.describe(&path), replacement.text());
            let mut j = valid.clone();
            *j.at_mut(&path) = replacement;
            post("wrong type", detail, j.text().into_bytes())
        }
        "bad base64" => {
            let binary: Vec<Vec<usize>> = valid
                .paths()
                .into_iter()
                .filter(|p| {
                    valid
                        .at(p)
                        .str_value()
                        .and_then(|s| b64_decode(s).ok())
                        .is_some_and(|b| b.len() >= 16)
                })
                .collect();
            let Some(path) = binary.choose(rng).cloned() else {
                return generic_json(rng, t);
            };
            let text = valid.at(&path).str_value().expect("string").to_owned();
            let bytes = b64_decode(&text).expect("b64");
            let (how, new) = match rng.random_range(0..6) {
                0 => {
                    let c = pick(rng, &["!", "*", "=", "+", "/", " ", ".", "é", "\n", "%"]);
                    let at = rng.random_range(0..=text.len());
                    (
                        format!("{c:?} inserted"),
                        format!("{}{c}{}", &text[..at], &text[at..]),
                    )
                }
                1 => (
                    "padded".into(),
                    format!("{text}{}", pick(rng, &["=", "=="])),
                ),
                2 => (
                    "standard alphabet".into(),
                    format!("+/{}", &text[2..]).replace('-', "+"),
                ),
                3 => {
                    let n = *pick(
                        rng,
                        &[
                            0,
                            1,
                            bytes.len() - 1,
                            bytes.len() + 1,
                            bytes.len() * 2,
                            bytes.len() + 3,
                        ],
                    );
                    (format!("{n} bytes"), b64_encode(random_bytes(rng, n)))
                }
                4 => (
                    "one character short".into(),
                    text[..text.len() - 1].to_owned(),
                ),
                _ => {
                    // Unused low bits set in the last symbol: a non-canonical encoding.
                    let alphabet =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    let last = text.as_bytes()[text.len() - 1];
                    let v = alphabet.iter().position(|&c| c == last).expect("symbol");
                    let unused = match bytes.len() % 3 {
                        1 => 0b1111,
                        2 => 0b11,
                        _ => 0,
                    };
                    if unused == 0 {
                        ("standard padding char".into(), format!("{text}="))
                    } else {
                        let bumped = char::from(alphabet[v ^ 1]);
                        (
                            "non-canonical last symbol".into(),
                            format!("{}{bumped}", &text[..text.len() - 1]),
                        )
                    }
                }
            };
            if b64_decode(&new).is_ok_and(|b| b == bytes) {
                return generic_json(rng, t);
            }
            let mut j = valid.clone();
            *j.at_mut(&path) = J::Leaf(Value::String(new));
            post(
                "bad base64",
                format!("{} {how}", valid.describe(&path)),
                j.text().into_bytes(),
            )
        }
        "object as array" => {
            let refused = J::parse(&t.refused);
            let objects: Vec<Vec<usize>> = refused
                .paths()
                .into_iter()
                .filter(|p| matches!(refused.at(p), J::Obj(f) if !f.is_empty()))
                .collect();
            let path = pick(rng, &objects).clone();
            let mut j = refused.clone();
            let node = j.at_mut(&path);
            if let J::Obj(fields) = node {
                *node = J::Arr(fields.drain(..).map(|(_, v)| v).collect());
            }
            let mut c = post(
                "object as array",
                format!("{} as the array of its values", refused.describe(&path)),
                j.text().into_bytes(),
            );
            c.parse_error = true;
            c
        }
        "duplicate key" => {
            let J::Obj(fields) = &valid else {
                return generic_json(rng, t);
            };
            let (k, v) = &fields[rng.random_range(0..fields.len())];
            let body = format!(
                "{{{}:{},{}",
                Value::String(k.clone()),
                v.text(),
                &t.valid[1..]
            );
            post("duplicate key", format!("{k:?} twice"), body.into_bytes())
        }
        "huge string" => {
            let strings: Vec<Vec<usize>> = valid
                .paths()
                .into_iter()
                .filter(|p| valid.at(p).kind() == Kind::Str)
                .collect();
            let path = pick(rng, &strings).clone();
            let n = if rng.random_bool(0.5) {
                t.limit / 2
            } else {
                t.limit + rng.random_range(1..4096)
            };
            let filler = pick(rng, &["A", "é", "\\u0000", " "]);
            let mut j = valid.clone();
            let marker = "\u{2}HUGE\u{2}";
            *j.at_mut(&path) = J::Leaf(Value::String(marker.into()));
            let marker_json = serde_json::to_string(marker).expect("json");
            let body = j.text().replacen(
                &marker_json,
                &format!("\"{}\"", filler.repeat(n / filler.len())),
                1,
            );
            post(
                "huge string",
                format!("{} of {n} bytes of {filler:?}", valid.describe(&path)),
                body.into_bytes(),
            )
            .sized(t.limit)
        }
        "huge array" => {
            let arrays: Vec<Vec<usize>> = valid
                .paths()
                .into_iter()
                .filter(|p| matches!(valid.at(p), J::Arr(_)))
                .collect();
            let Some(path) = arrays.choose(rng).cloned() else {
                // No arrays here: an array as the whole body.
                let n = t.limit / 2 + rng.random_range(0..t.limit);
                let body = format!("[{}0]", "0,".repeat(n / 2));
                return post(
                    "huge array",
                    format!("top-level array of {} zeros", n / 2 + 1),
                    body.into_bytes(),
                )
                .sized(t.limit);
            };
            let mut j = valid.clone();
            let element = match j.at(&path) {
                J::Arr(items) if !items.is_empty() => items[0].clone(),
                _ => J::Leaf(json!(0)),
            };
            let size = element.text().len() + 1;
            let target = if rng.random_bool(0.5) {
                t.limit / 2
            } else {
                t.limit + 1024
            };
            let n = target / size + 1;
            *j.at_mut(&path) = J::Arr(vec![element; n]);
            post(
                "huge array",
                format!("{} with {n} elements", valid.describe(&path)),
                j.text().into_bytes(),
            )
            .sized(t.limit)
        }
        "oversized body" => {
            let over = t.limit + rng.random_range(1..2048);
            let (detail, body) = match rng.random_range(0..3) {
                0 => (
                    "valid body padded with spaces",
                    format!("{}{}", t.valid, " ".repeat(over - t.valid.len())).into_bytes(),
                ),
                1 => ("brackets", vec![b'['; over]),
                _ => ("random bytes", random_bytes(rng, over)),
            };
            post("oversized body", format!("{detail}, {over} bytes"), body)
                .expect(Expect::Status(413))
        }
        "content type" => {
            let ct = *pick(rng, WRONG_CONTENT_TYPES);
            let mut c = Case::new(
                "content type",
                format!("valid body as {ct:?}"),
                Method::POST,
                t.path,
            )
            .body(t.valid.clone().into_bytes());
            if !ct.is_empty() {
                c = c.header("content-type", ct);
            }
            c
        }
        _ => {
            let m = pick(
                rng,
                &["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"],
            );
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            let mut c = Case::new(
                "wrong method",
                format!("{m} with the valid body"),
                method,
                t.path,
            )
            .json_body(t.valid.clone().into_bytes())
            .expect(Expect::Status(405));
            c.json = *m != "HEAD";
            c
        }
    }
}

/// Malformed HTTP sent over a raw connection: framing errors hyper answers itself (no JSON
/// there), and chunked bodies over the limit or broken, which the service answers.
fn raw_cases(
    rng: &mut StdRng,
    method: &str,
    path: &str,
    limit: usize,
    json_service: bool,
) -> Vec<Case> {
    let req = |head: &str, body: &[u8]| [head.as_bytes(), body].concat();
    let host = "Host: scrip\r\nConnection: close\r\n";
    let mut chunked_over = format!("{method} {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    let mut sent = 0;
    while sent <= limit {
        let n = 65536.min(limit + 1 - sent).max(1);
        chunked_over.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        chunked_over.extend(std::iter::repeat_n(b' ', n));
        chunked_over.extend_from_slice(b"\r\n");
        sent += n;
    }
    chunked_over.extend_from_slice(b"0\r\n\r\n");
    let mut over = Case::raw(
        "raw http",
        "chunked body over the limit",
        chunked_over,
        Expect::Status(413),
    );
    over.json = json_service;
    let mut bad_chunk = Case::raw(
        "raw http",
        "chunked body with a broken chunk size",
        req(
            &format!(
                "{method} {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            b"2\r\n{}\r\nzz\r\n",
        ),
        Expect::Any4xx,
    );
    bad_chunk.json = json_service;
    let big_header = "a".repeat(500 * 1024 + rng.random_range(0..1024));
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        over,
        bad_chunk,
        Case::raw(
            "raw http",
            "Content-Length not a number",
            req(
                &format!("{method} {path} HTTP/1.1\r\n{host}Content-Length: abc\r\n\r\n"),
                b"{}",
            ),
            Expect::Status(400),
        ),
        Case::raw(
            "raw http",
            "negative Content-Length",
            req(
                &format!("{method} {path} HTTP/1.1\r\n{host}Content-Length: -1\r\n\r\n"),
                b"{}",
            ),
            Expect::Status(400),
        ),
        Case::raw(
            "raw http",
            "Content-Length over u64",
            req(
                &format!(
                    "{method} {path} HTTP/1.1\r\n{host}Content-Length: 18446744073709551616\r\n\r\n"
                ),
                b"{}",
            ),
            Expect::Status(400),
        ),
        Case::raw(
            "raw http",
            "two different Content-Lengths",
            req(
                &format!(
                    "{method} {path} HTTP/1.1\r\n{host}Content-Length: 2\r\nContent-Length: 3\r\n\r\n"
                ),
                b"{}x",
            ),
            Expect::Status(400),
        ),
        Case::raw(
            "raw http",
            "garbage request line",
            req("GARBAGE\r\n\r\n", b""),
            Expect::Status(400),
        ),
        Case::raw(
            "raw http",
            "space in the method",
            req(
                &format!(
                    "{} {} {path} HTTP/1.1\r\n{host}\r\n",
                    &method[..1],
                    &method[1..]
                ),
                b"",
            ),
            Expect::Status(400),
        ),
        Case::raw(
            "raw http",
            "NUL in a header value",
            req(
                &format!(
                    "{method} {path} HTTP/1.1\r\n{host}X-A: a\0b\r\nContent-Length: 0\r\n\r\n"
                ),
                b"",
            ),
            Expect::Status(400),
        ),
        Case::raw(
            "raw http",
            "500 KiB header",
            req(
                &format!("{method} {path} HTTP/1.1\r\n{host}X-Big: {big_header}\r\n\r\n"),
                b"",
            ),
            Expect::Status(431),
        ),
        Case::raw(
            "raw http",
            "200 headers",
            req(
                &format!("{method} {path} HTTP/1.1\r\n{host}{many_headers}\r\n"),
                b"",
            ),
            Expect::Status(431),
        ),
    ]
}

/// Fills `cases` up to `n` with `fill`, after the fixed ones.
fn fill(mut cases: Vec<Case>, n: usize, mut fill: impl FnMut() -> Case) -> Vec<Case> {
    while cases.len() < n {
        cases.push(fill());
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// The endpoints.

fn endpoint(service: Service, name: &str, base: &str, limit: usize, cases: Vec<Case>) -> Endpoint {
    Endpoint {
        service,
        name: name.to_owned(),
        base: base.to_owned(),
        rotate_source: false,
        limit,
        cases,
    }
}

/// A GET endpoint without input: wrong methods (with bodies) and paths under it.
fn plain_get(service: Service, base: &str, path: &str, limit: usize, json: bool) -> Endpoint {
    let name = format!("GET {path}");
    let mut rng = rng_for(&format!("{service:?} {name}"));
    let cases = fill(Vec::new(), PLAIN_GET_CASES, || {
        let mut c = if rng.random_bool(0.7) {
            let m = *pick(
                &mut rng,
                &["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "TRACE"],
            );
            let n = rng.random_range(0..64);
            let body = if rng.random_bool(0.5) {
                random_bytes(&mut rng, n)
            } else {
                b"{\"a\":1}".to_vec()
            };
            Case::new(
                "wrong method",
                format!("{m} with {} bytes", body.len()),
                Method::from_bytes(m.as_bytes()).expect("method"),
                path,
            )
            .json_body(body)
            .expect(Expect::Status(405))
        } else {
            let seg = pct(random_ascii(&mut rng, 20).as_bytes());
            let target = match rng.random_range(0..4) {
                0 => format!("{path}/"),
                1 => format!("{path}/{seg}"),
                2 => path.to_uppercase(),
                _ => format!("{path}x{seg}"),
            };
            Case::new("path below", target.clone(), Method::GET, &target)
                .expect(Expect::Status(404))
        };
        c.json = json;
        c
    });
    endpoint(service, &name, base, limit, cases)
}

fn unknown_routes(service: Service, base: &str, json: bool) -> Endpoint {
    let mut rng = rng_for(&format!("{service:?} unknown routes"));
    let fixed: Vec<Case> = [
        "/",
        "/v1",
        "/v1/",
        "/v2/info",
        "/V1/INFO",
        "/v1/entries/",
        "/queues/x",
        "/chunks",
        "/chunks/",
        "/v1/cards",
        "/v1/grants",
        "/metrics/",
        "/%00",
        "/v1/x%2Fhealthz",
    ]
    .iter()
    .map(|p| Case::new("fixed path", *p, Method::GET, p).expect(Expect::OneOf(&[404, 405])))
    .collect();
    let cases = fill(fixed, ROUTE_CASES, || {
        let depth = rng.random_range(1..4);
        let mut target = String::new();
        for i in 0..depth {
            let seg = pct(random_ascii(&mut rng, 16).as_bytes());
            target.push('/');
            if i == 0 {
                target.push('x');
            }
            target.push_str(&seg);
        }
        let m = *pick(&mut rng, &["GET", "POST", "PUT", "DELETE", "PATCH", "BREW"]);
        let n = rng.random_range(0..64);
        Case::new(
            "unknown path",
            format!("{m} {target}"),
            Method::from_bytes(m.as_bytes()).expect("method"),
            &target,
        )
        .body(random_bytes(&mut rng, n))
        .expect(Expect::OneOf(&[404, 405]))
    });
    let mut ep = endpoint(
        service,
        "unknown routes and methods",
        base,
        usize::MAX,
        cases,
    );
    for c in &mut ep.cases {
        c.json = json;
    }
    ep
}

fn ledger_submit(fx: &Fixture) -> Endpoint {
    let path = "/v1/entries";
    let mut rng = rng_for("ledger submit");
    let t = now();
    let valid = {
        let action = fx.spend(&mut rng, 1);
        fx.signed(&fx.op_a, fx.request(&mut rng, fx.ledger_id, t, action))
    };
    let refused = {
        let action = fx.spend(&mut rng, 1);
        let other = Hash32(random_32(&mut rng));
        fx.signed(&fx.op_a, fx.request(&mut rng, other, t, action))
    };
    let target = JsonTarget {
        path,
        limit: LEDGER_LIMIT,
        valid,
        refused,
    };
    let mut cases = raw_cases(&mut rng, "POST", path, LEDGER_LIMIT, true);
    // The replay of the request the setup submitted, exactly and reformatted.
    cases.push(
        Case::new("replay", "the admitted request again", Method::POST, path)
            .json_body(fx.admitted.clone())
            .expect(Expect::Status(409)),
    );
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&fx.admitted).expect("json"))
            .expect("json");
    cases.push(
        Case::new(
            "replay",
            "the admitted request, reformatted",
            Method::POST,
            path,
        )
        .json_body(pretty)
        .expect(Expect::Status(409)),
    );
    for v in 0..SUBMIT_VARIANTS {
        cases.push(submit_semantic(fx, &mut rng, v));
    }
    let cases = fill(cases, JSON_CASES, || {
        if rng.random_bool(0.3) {
            let v = rng.random_range(0..SUBMIT_VARIANTS);
            submit_semantic(fx, &mut rng, v)
        } else {
            generic_json(&mut rng, &target)
        }
    });
    endpoint(
        Service::Ledger,
        "POST /v1/entries",
        fx.ledger(),
        LEDGER_LIMIT,
        cases,
    )
}

const SUBMIT_VARIANTS: usize = 28;

fn submit_semantic(fx: &Fixture, rng: &mut StdRng, variant: usize) -> Case {
    let t = now();
    let id = fx.ledger_id;
    let queue_id = fx.queue_key.public_key.id();
    let (a, b) = (&fx.op_a, &fx.op_b);
    let (detail, body, status): (&str, String, u16) = match variant {
        0 => {
            let action = fx.spend(rng, 1);
            let other = Hash32(random_32(rng));
            (
                "signed for another ledger",
                fx.signed(a, fx.request(rng, other, t, action)),
                403,
            )
        }
        1 => {
            let action = fx.spend(rng, 1);
            let at = t - 301 - rng.random_range(0..1_000_000);
            (
                "timestamp in the past",
                fx.signed(a, fx.request(rng, id, at, action)),
                401,
            )
        }
        2 => {
            let action = fx.spend(rng, 1);
            let at = t + 301 + rng.random_range(0..1_000_000);
            (
                "timestamp in the future",
                fx.signed(a, fx.request(rng, id, at, action)),
                401,
            )
        }
        3 => {
            let action = fx.spend(rng, 1);
            let at = *pick(rng, &[0, u64::MAX]);
            (
                "timestamp 0 or u64::MAX",
                fx.signed(a, fx.request(rng, id, at, action)),
                401,
            )
        }
        4 => (
            "spend without groups",
            fx.signed(a, fx.request(rng, id, t, Action::Spend { groups: vec![] })),
            422,
        ),
        5 => {
            let action = Action::Spend {
                groups: vec![SpendGroup {
                    token_key_id: queue_id,
                    nullifiers: vec![],
                }],
            };
            (
                "spend group without nullifiers",
                fx.signed(a, fx.request(rng, id, t, action)),
                422,
            )
        }
        6 => {
            let n = MAX_SPEND_BATCH + 1 + rng.random_range(0..100);
            let parts = rng.random_range(1..4);
            let groups = (0..parts)
                .map(|i| SpendGroup {
                    token_key_id: if i == 0 {
                        queue_id
                    } else {
                        fx.chunk_key.public_key.id()
                    },
                    nullifiers: fx.fresh_nullifiers(rng, n / parts + 1),
                })
                .collect();
            (
                "spend over MAX_SPEND_BATCH",
                fx.signed(a, fx.request(rng, id, t, Action::Spend { groups })),
                413,
            )
        }
        7 => {
            let action = Action::AdmitOperator {
                operator: OperatorInfo {
                    name: "op-c".into(),
                    id: OperatorKey::generate().id(),
                    roles: vec![Role::Admin],
                },
            };
            (
                "op-b (no admin role) admits an operator",
                fx.signed(b, fx.request(rng, id, t, action)),
                403,
            )
        }
        8 => {
            let action = Action::AdmitOperator {
                operator: OperatorInfo {
                    name: "op-b".into(),
                    id: b.id(),
                    roles: vec![Role::Redeemer],
                },
            };
            (
                "op-a admits op-b again",
                fx.signed(a, fx.request(rng, id, t, action)),
                422,
            )
        }
        9 => {
            let (name, roles) = pick(
                rng,
                &[
                    (String::new(), vec![Role::Redeemer]),
                    ("a b".to_owned(), vec![Role::Redeemer]),
                    ("x".repeat(256), vec![Role::Redeemer]),
                    ("op-new".to_owned(), vec![]),
                ],
            )
            .clone();
            let action = Action::AdmitOperator {
                operator: OperatorInfo {
                    name,
                    id: OperatorKey::generate().id(),
                    roles,
                },
            };
            (
                "op-a admits an operator with a bad name or no role",
                fx.signed(a, fx.request(rng, id, t, action)),
                422,
            )
        }
        10 => {
            let action = Action::SetCatalog {
                catalog: Catalog::standard(),
            };
            (
                "op-b (no admin role) sets the catalog",
                fx.signed(b, fx.request(rng, id, t, action)),
                403,
            )
        }
        11 => {
            let action = Action::SetCatalog {
                catalog: {
                    let mut c = Catalog::standard();
                    c.entries.clear();
                    c
                },
            };
            (
                "op-a sets an empty catalog",
                fx.signed(a, fx.request(rng, id, t, action)),
                422,
            )
        }
        12 => {
            let mut key = fx.queue_key.clone();
            key.issuer = "op-b".into();
            (
                "op-a announces a key in op-b's name",
                fx.signed(a, fx.request(rng, id, t, Action::AnnounceKey { key })),
                403,
            )
        }
        13 => {
            let key = fx.queue_key.clone();
            (
                "op-b announces op-a's key",
                fx.signed(b, fx.request(rng, id, t, Action::AnnounceKey { key })),
                403,
            )
        }
        14 => {
            let key = fx.queue_key.clone();
            (
                "op-a announces its key again",
                fx.signed(a, fx.request(rng, id, t, Action::AnnounceKey { key })),
                422,
            )
        }
        15 => {
            let action = Action::RevokeKey {
                token_key_id: queue_id,
                reason: "mine now".into(),
            };
            (
                "op-b revokes op-a's key",
                fx.signed(b, fx.request(rng, id, t, action)),
                403,
            )
        }
        16 => {
            let action = Action::RevokeKey {
                token_key_id: TokenKeyId(random_32(rng)),
                reason: String::new(),
            };
            (
                "op-a revokes an unknown key",
                fx.signed(a, fx.request(rng, id, t, action)),
                422,
            )
        }
        17 => {
            let (count, credits) = *pick(
                rng,
                &[(0, 10), (10, 0), ((1 << 40) + 1, 1), (1, (1 << 40) + 1)],
            );
            let action = Action::CardsSold {
                batch: "b".into(),
                count,
                credits,
            };
            (
                "cards sold with a zero or huge count",
                fx.signed(a, fx.request(rng, id, t, action)),
                422,
            )
        }
        18 => {
            let action = Action::TokensIssued {
                token_key_id: queue_id,
                count: 1,
                from: t - 10,
                until: t,
            };
            (
                "op-b reports issuance of op-a's key",
                fx.signed(b, fx.request(rng, id, t, action)),
                403,
            )
        }
        19 => {
            let action = *pick(
                rng,
                &[
                    (queue_id, 1, t, t - 10),
                    (queue_id, 0, t - 10, t),
                    (TokenKeyId([9; 32]), 1, t - 10, t),
                ],
            );
            let action = Action::TokensIssued {
                token_key_id: action.0,
                count: action.1,
                from: action.2,
                until: action.3,
            };
            (
                "issuance report with from > until, count 0 or an unknown key",
                fx.signed(a, fx.request(rng, id, t, action)),
                422,
            )
        }
        20 => {
            let action = fx.spend(rng, 1);
            (
                "signed by a stranger",
                fx.signed(&OperatorKey::generate(), fx.request(rng, id, t, action)),
                401,
            )
        }
        21 => {
            let action = fx.spend(rng, 1);
            (
                "signed by the ledger's own key",
                fx.signed(&fx.ledger_key, fx.request(rng, id, t, action)),
                401,
            )
        }
        22 => {
            let action = fx.spend(rng, 1);
            let mut s = a.sign(fx.request(rng, id, t, action));
            s.signer = b.id();
            (
                "op-a's signature under op-b's name",
                serde_json::to_string(&s).expect("json"),
                401,
            )
        }
        23 => {
            let action = fx.spend(rng, 1);
            let mut s = b.sign(fx.request(rng, id, t, action));
            s.signer = a.id();
            (
                "op-b's signature under op-a's name",
                serde_json::to_string(&s).expect("json"),
                401,
            )
        }
        24 => {
            let action = fx.spend(rng, 1);
            let mut s = a.sign(fx.request(rng, id, t, action));
            match rng.random_range(0..3) {
                0 => s.payload.timestamp += 1,
                1 => s.payload.nonce[rng.random_range(0..16)] ^= 1,
                _ => {
                    if let Action::Spend { groups } = &mut s.payload.action {
                        groups[0].nullifiers[0].0[rng.random_range(0..32)] ^= 0x80;
                    }
                }
            }
            (
                "changed after signing",
                serde_json::to_string(&s).expect("json"),
                401,
            )
        }
        25 => {
            let action = fx.spend(rng, 1);
            let mut s = a.sign(fx.request(rng, id, t, action));
            s.signature[rng.random_range(0..64)] ^= 1 << rng.random_range(0..8);
            (
                "signature bit flipped",
                serde_json::to_string(&s).expect("json"),
                401,
            )
        }
        26 => ("replay of the admitted request", fx.admitted.clone(), 409),
        _ => {
            // Replayed with its fields in another order.
            let v: Value = serde_json::from_str(&fx.admitted).expect("json");
            let reordered = format!(
                "{{\"signature\":{},\"payload\":{},\"signer\":{}}}",
                v["signature"], v["payload"], v["signer"]
            );
            ("replay with the fields reordered", reordered, 409)
        }
    };
    Case::new("signed request", detail, Method::POST, "/v1/entries")
        .json_body(body)
        .expect(Expect::Status(status))
}

fn ledger_cosign(fx: &Fixture) -> Endpoint {
    let path = "/v1/checkpoint/cosign";
    let mut rng = rng_for("ledger cosign");
    let cosign = |key: &OperatorKey, checkpoint: Checkpoint| {
        serde_json::to_string(&key.sign(Cosignature { checkpoint })).expect("json")
    };
    let changed = |rng: &mut StdRng| {
        let mut c = fx.checkpoint.clone();
        match rng.random_range(0..6) {
            0 => c.seq += 1,
            1 => c.seq -= 1,
            2 => c.head_hash = Hash32(random_32(rng)),
            3 => c.totals_digest = Hash32(random_32(rng)),
            4 => c.created_at += 1,
            _ => c.ledger_id = Hash32(random_32(rng)),
        }
        c
    };
    // op-b's cosignature of the latest checkpoint is valid and new: never sent as is.
    let target = JsonTarget {
        path,
        limit: LEDGER_LIMIT,
        valid: cosign(&fx.op_b, fx.checkpoint.clone()),
        refused: cosign(&fx.op_b, changed(&mut rng)),
    };
    let semantic = |rng: &mut StdRng| -> Case {
        let (detail, body, status): (&str, String, u16) = match rng.random_range(0..6) {
            0 => {
                let key = if rng.random_bool(0.5) {
                    &fx.op_a
                } else {
                    &fx.op_b
                };
                (
                    "cosignature of another checkpoint",
                    cosign(key, changed(rng)),
                    422,
                )
            }
            1 => (
                "stranger's cosignature",
                cosign(&OperatorKey::generate(), fx.checkpoint.clone()),
                401,
            ),
            2 => (
                "the ledger key's cosignature",
                cosign(&fx.ledger_key, fx.checkpoint.clone()),
                401,
            ),
            3 => {
                let mut s = fx.op_b.sign(Cosignature {
                    checkpoint: fx.checkpoint.clone(),
                });
                s.signer = fx.op_a.id();
                (
                    "op-b's signature under op-a's name",
                    serde_json::to_string(&s).expect("json"),
                    401,
                )
            }
            4 => {
                let mut s = fx.op_b.sign(Cosignature {
                    checkpoint: fx.checkpoint.clone(),
                });
                s.payload.checkpoint = changed(rng);
                (
                    "changed after signing",
                    serde_json::to_string(&s).expect("json"),
                    401,
                )
            }
            _ => {
                let mut s = fx.op_b.sign(Cosignature {
                    checkpoint: fx.checkpoint.clone(),
                });
                s.signature[rng.random_range(0..64)] ^= 1;
                (
                    "signature bit flipped",
                    serde_json::to_string(&s).expect("json"),
                    401,
                )
            }
        };
        Case::new("signed cosignature", detail, Method::POST, path)
            .json_body(body)
            .expect(Expect::Status(status))
    };
    let mut cases = raw_cases(&mut rng, "POST", path, LEDGER_LIMIT, true);
    for _ in 0..12 {
        cases.push(semantic(&mut rng));
    }
    let cases = fill(cases, JSON_CASES, || {
        if rng.random_bool(0.3) {
            semantic(&mut rng)
        } else {
            generic_json(&mut rng, &target)
        }
    });
    endpoint(
        Service::Ledger,
        "POST /v1/checkpoint/cosign",
        fx.ledger(),
        LEDGER_LIMIT,
        cases,
    )
}

/// A path segment that is not a nullifier (32 bytes, unpadded base64url).
fn bad_segment(rng: &mut StdRng, bytes: usize) -> String {
    loop {
        let raw: Vec<u8> = match rng.random_range(0..9) {
            0 => random_ascii(rng, 60).into_bytes(),
            1 => {
                let n = *pick(rng, &[0, 1, 16, bytes - 1, bytes + 1, 2 * bytes]);
                b64_encode(random_bytes(rng, n)).into_bytes()
            }
            2 => format!("{}=", b64_encode(random_bytes(rng, bytes))).into_bytes(),
            3 => {
                let mut s = b64_encode(random_bytes(rng, bytes)).into_bytes();
                let at = rng.random_range(0..s.len());
                s[at] = *pick(rng, b"!*+/.=~ ");
                s
            }
            4 => {
                // Non-canonical: the unused low bits of the last symbol set.
                let mut s = b64_encode(random_bytes(rng, bytes)).into_bytes();
                let last = s.len() - 1;
                s[last] = *pick(rng, b"BCDFHJ");
                s
            }
            5 => vec![0xff, 0xfe, b'a'],
            6 => "é".repeat(rng.random_range(1..30)).into_bytes(),
            7 => "A".repeat(*pick(rng, &[4096, 20_000])).into_bytes(),
            _ => {
                let n = rng.random_range(1..40);
                random_bytes(rng, n)
            }
        };
        if raw.is_empty() || raw.iter().all(|&b| b == b'.') {
            continue;
        }
        if std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| b64_decode(s).ok())
            .is_some_and(|b| b.len() == bytes)
        {
            continue;
        }
        return pct(&raw);
    }
}

fn ledger_nullifier(fx: &Fixture) -> Endpoint {
    let mut rng = rng_for("ledger nullifier");
    let cases = fill(Vec::new(), INPUT_GET_CASES, || {
        let seg = bad_segment(&mut rng, 32);
        let target = format!("/v1/nullifiers/{seg}");
        if rng.random_bool(0.15) {
            let m = *pick(&mut rng, &["POST", "PUT", "DELETE", "PATCH"]);
            Case::new(
                "wrong method",
                format!("{m} {target:.80}"),
                Method::from_bytes(m.as_bytes()).expect("m"),
                &target,
            )
            .expect(Expect::Status(405))
        } else {
            Case::new(
                "bad nullifier",
                format!("{target:.100}"),
                Method::GET,
                &target,
            )
        }
    });
    endpoint(
        Service::Ledger,
        "GET /v1/nullifiers/{nullifier}",
        fx.ledger(),
        LEDGER_LIMIT,
        cases,
    )
}

/// A query string with at least one bad piece among `good` ones.
fn bad_query(rng: &mut StdRng, good: &[&str], bad: &[String]) -> String {
    let mut pieces: Vec<String> = Vec::new();
    for _ in 0..rng.random_range(0..3) {
        pieces.push((*pick(rng, good)).to_owned());
    }
    for _ in 0..rng.random_range(1..4) {
        pieces.push(pick(rng, bad).clone());
    }
    // Shuffle.
    for i in (1..pieces.len()).rev() {
        let j = rng.random_range(0..=i);
        pieces.swap(i, j);
    }
    pieces.join("&")
}

fn ledger_keys(fx: &Fixture) -> Endpoint {
    let mut rng = rng_for("ledger keys");
    let bad: Vec<String> = [
        "colour=red",
        "Kind=queue",
        "issuer[]=a",
        "=x",
        "x",
        "kind=Queue",
        "kind=",
        "kind=-a",
        "kind=a%20b",
        "kind=%FF",
        "kind=%C3%A9",
        "issuer=a&issuer=b",
        "kind=queue&kind=queue",
        "limit=1",
        "from=0",
        "kind=queue%00",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(std::iter::once(format!("kind={}", "a".repeat(65))))
    .chain(std::iter::once(format!("{}=1", "k".repeat(5000))))
    .collect();
    let cases = fill(Vec::new(), INPUT_GET_CASES, || {
        let q = bad_query(
            &mut rng,
            &["issuer=op-a", "kind=queue", "issuer=nobody"],
            &bad,
        );
        let target = format!("/v1/keys?{q}");
        if rng.random_bool(0.1) {
            Case::new(
                "wrong method",
                format!("POST {target:.80}"),
                Method::POST,
                &target,
            )
            .expect(Expect::Status(405))
        } else {
            Case::new("bad query", format!("{target:.100}"), Method::GET, &target)
                .expect(Expect::Status(400))
        }
    });
    endpoint(
        Service::Ledger,
        "GET /v1/keys",
        fx.ledger(),
        LEDGER_LIMIT,
        cases,
    )
}

fn ledger_log(fx: &Fixture) -> Endpoint {
    let mut rng = rng_for("ledger log");
    let bad: Vec<String> = [
        "from=abc",
        "from=-1",
        "from=1.5",
        "from=",
        "from=18446744073709551616",
        "limit=abc",
        "limit=-1",
        "limit=4294967296",
        "limit=1e3",
        "limit=",
        "to=3",
        "From=1",
        "from=1&from=2",
        "limit=1&limit=2",
        "from=%FF",
        "from=0x10",
        "from=+1",
        "from= 1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let cases = fill(Vec::new(), INPUT_GET_CASES, || {
        let q = bad_query(&mut rng, &["from=0", "limit=5"], &bad);
        let target = format!("/v1/log?{q}");
        if rng.random_bool(0.1) {
            Case::new(
                "wrong method",
                format!("DELETE {target}"),
                Method::DELETE,
                &target,
            )
            .expect(Expect::Status(405))
        } else {
            Case::new("bad query", target.clone(), Method::GET, &target).expect(Expect::Status(400))
        }
    });
    endpoint(
        Service::Ledger,
        "GET /v1/log",
        fx.ledger(),
        LEDGER_LIMIT,
        cases,
    )
}

/// 27 symbols from the card alphabet and others: never one of the fixture's cards.
fn bad_card_code(fx: &Fixture, rng: &mut StdRng) -> (String, &'static str) {
    const SYMBOLS: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    loop {
        let (code, what) = match rng.random_range(0..8) {
            0 => (random_ascii(rng, 60), "random text"),
            1 => {
                let mut s: Vec<u8> = fx.card_fresh.bytes().collect();
                let positions: Vec<usize> = (0..s.len()).filter(|&i| s[i] != b'-').collect();
                let at = *pick(rng, &positions);
                let old = s[at];
                s[at] = *pick(
                    rng,
                    &SYMBOLS
                        .iter()
                        .copied()
                        .filter(|&c| c != old)
                        .collect::<Vec<_>>(),
                );
                (
                    String::from_utf8(s).expect("ascii"),
                    "the fresh card with one symbol changed",
                )
            }
            2 => (
                fx.card_fresh
                    .replacen(|c: char| c.is_ascii_alphanumeric(), "U", 1),
                "a U in the code",
            ),
            3 => {
                let mut s = fx.card_fresh.clone();
                if rng.random_bool(0.5) {
                    s.pop();
                } else {
                    s.push('7');
                }
                (s, "the fresh card one symbol short or long")
            }
            4 | 5 => {
                let s: String = (0..27).map(|_| char::from(*pick(rng, SYMBOLS))).collect();
                if CardCode::parse(&s).is_err() {
                    continue;
                }
                (s, "an unknown card")
            }
            6 => (
                pick(
                    rng,
                    &[
                        "é".repeat(27),
                        "\u{0}".repeat(27),
                        "ＡＢＣＤ".repeat(7),
                        "\u{202e}".into(),
                    ],
                )
                .clone(),
                "non-ASCII or control characters",
            ),
            _ => ("A".repeat(*pick(rng, &[10_000, 100_000])), "a huge code"),
        };
        if !fx.known_card(&code) {
            return (code, what);
        }
    }
}

/// A blinded request: [1; 256] is below every 2048-bit modulus, [0xff; 256] above all.
fn token_request(key: &TokenKeyId, truncated: u8, out_of_range: bool) -> Value {
    let mut bytes = vec![0x00, 0x02, truncated];
    bytes.extend_from_slice(&if out_of_range {
        [0xffu8; 256]
    } else {
        [1u8; 256]
    });
    json!({"token_key_id": b64_encode(key.0), "token_request": b64_encode(bytes)})
}

fn open_body(card: &str, request_id: [u8; 32], requests: Vec<Value>) -> String {
    // Field order as declared, for the positional cases.
    format!(
        "{{\"card_code\":{},\"request_id\":{},\"requests\":{}}}",
        Value::String(card.to_owned()),
        Value::String(b64_encode(request_id)),
        Value::Array(requests)
    )
}

fn issuer_open(fx: &Fixture) -> Endpoint {
    let path = "/v1/cards/open";
    let mut rng = rng_for("issuer open");
    let queue = fx.queue_key.public_key.id();
    let ok = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| token_request(&queue, queue.truncated(), false))
            .collect()
    };
    // A real opening of the fresh card (10 credits): never sent as is.
    let target = JsonTarget {
        path,
        limit: ISSUER_LIMIT,
        valid: open_body(&fx.card_fresh, random_32(&mut rng), ok(1)),
        refused: open_body(
            &fx.card_fresh,
            random_32(&mut rng),
            vec![token_request(
                &queue,
                queue.truncated().wrapping_add(1),
                false,
            )],
        ),
    };
    let semantic = |rng: &mut StdRng| -> Case {
        let id = random_32(rng);
        let card = &fx.card_fresh;
        let mut variant = rng.random_range(0..11);
        // An unknown key id makes the issuer reload its keys (at most once a second,
        // issuer/src/service.rs:618): few of those, to keep the run short.
        if variant == 0 && !rng.random_bool(0.25) {
            variant = 1;
        }
        let (detail, body, expect): (String, String, Expect) = match variant {
            0 => {
                let k = TokenKeyId(random_32(rng));
                (
                    "unknown key".into(),
                    open_body(card, id, vec![token_request(&k, k.truncated(), false)]),
                    Expect::Status(422),
                )
            }
            1 => (
                "truncated key id does not match".into(),
                open_body(
                    card,
                    id,
                    vec![token_request(
                        &queue,
                        queue.truncated().wrapping_add(1),
                        false,
                    )],
                ),
                Expect::Status(422),
            ),
            2 => (
                "blinded message out of range".into(),
                open_body(
                    card,
                    id,
                    vec![token_request(&queue, queue.truncated(), true)],
                ),
                Expect::Status(422),
            ),
            3 => (
                "no requests".into(),
                open_body(card, id, vec![]),
                Expect::Status(400),
            ),
            4 => {
                let n = MAX_OPEN_BATCH + 1 + rng.random_range(0..50);
                (
                    format!("{n} requests"),
                    open_body(card, id, ok(n)),
                    Expect::Status(413),
                )
            }
            5 => {
                let n = rng.random_range(11..=20);
                (
                    format!("{n} queue tokens for 100 credits"),
                    open_body(card, id, ok(n)),
                    Expect::Status(422),
                )
            }
            6 => {
                let (code, what) = bad_card_code(fx, rng);
                let expect = if what == "an unknown card" {
                    Expect::Status(403)
                } else {
                    Expect::OneOf(&[400, 413])
                };
                (what.into(), open_body(&code, id, ok(1)), expect)
            }
            7 => (
                "a minted card never activated".into(),
                open_body(&fx.card_minted, id, ok(1)),
                Expect::Status(403),
            ),
            8 => {
                let k = rng.random_range(1..=8);
                let mut r = ok(k);
                r.push(token_request(&queue, queue.truncated(), true));
                (
                    format!("{k} good requests then one out of range"),
                    open_body(card, id, r),
                    Expect::Status(422),
                )
            }
            9 => (
                "8 queue tokens from the opened card (77 credits left)".into(),
                open_body(&fx.card_opened, id, ok(8)),
                Expect::Status(422),
            ),
            _ => {
                // The chunk key with another key's truncated id (the queue key's, unless the two
                // happen to end alike, when that would be a valid request).
                let chunk = fx.chunk_key.public_key.id();
                let mut truncated = queue.truncated();
                if truncated == chunk.truncated() {
                    truncated = truncated.wrapping_add(1);
                }
                (
                    "chunk key id with another key's truncated id".into(),
                    open_body(card, id, vec![token_request(&chunk, truncated, false)]),
                    Expect::Status(422),
                )
            }
        };
        Case::new("opening", detail, Method::POST, path)
            .json_body(body)
            .expect(expect)
    };
    let mut cases = Vec::new();
    for _ in 0..22 {
        cases.push(semantic(&mut rng));
    }
    let cases = fill(cases, JSON_CASES, || {
        if rng.random_bool(0.3) {
            semantic(&mut rng)
        } else {
            generic_json(&mut rng, &target)
        }
    });
    let mut ep = endpoint(
        Service::Issuer,
        "POST /v1/cards/open",
        fx.issuer(),
        ISSUER_LIMIT,
        cases,
    );
    ep.rotate_source = true;
    ep
}

fn issuer_balance(fx: &Fixture) -> Endpoint {
    let path = "/v1/cards/balance";
    let mut rng = rng_for("issuer balance");
    let body = |code: &str| json!({"card_code": code}).to_string();
    let unknown = loop {
        let (c, what) = bad_card_code(fx, &mut rng);
        if what == "an unknown card" {
            break c;
        }
    };
    let target = JsonTarget {
        path,
        limit: ISSUER_LIMIT,
        valid: body(&fx.card_fresh),
        refused: body(&unknown),
    };
    let semantic = |rng: &mut StdRng| -> Case {
        if rng.random_bool(0.1) {
            return Case::new("card", "a minted card never activated", Method::POST, path)
                .json_body(body(&fx.card_minted))
                .expect(Expect::Status(403));
        }
        let (code, what) = bad_card_code(fx, rng);
        let expect = if what == "an unknown card" {
            Expect::Status(403)
        } else {
            Expect::OneOf(&[400, 413])
        };
        Case::new("card", format!("{what}: {code:.40?}"), Method::POST, path)
            .json_body(body(&code))
            .expect(expect)
    };
    let mut cases = raw_cases(&mut rng, "POST", path, ISSUER_LIMIT, true);
    for _ in 0..20 {
        cases.push(semantic(&mut rng));
    }
    let cases = fill(cases, JSON_CASES, || {
        if rng.random_bool(0.3) {
            semantic(&mut rng)
        } else {
            generic_json(&mut rng, &target)
        }
    });
    let mut ep = endpoint(
        Service::Issuer,
        "POST /v1/cards/balance",
        fx.issuer(),
        ISSUER_LIMIT,
        cases,
    );
    ep.rotate_source = true;
    ep
}

fn issuer_replay(fx: &Fixture) -> Endpoint {
    let path = "/v1/requests/replay";
    let mut rng = rng_for("issuer replay");
    let body = |id: [u8; 32]| json!({"request_id": b64_encode(id)}).to_string();
    let target = JsonTarget {
        path,
        limit: ISSUER_LIMIT,
        valid: body(random_32(&mut rng)),
        refused: body(random_32(&mut rng)),
    };
    let cases = fill(Vec::new(), JSON_CASES, || {
        if rng.random_bool(0.2) {
            Case::new("request id", "an unknown request id", Method::POST, path)
                .json_body(body(random_32(&mut rng)))
                .expect(Expect::Status(404))
        } else {
            generic_json(&mut rng, &target)
        }
    });
    endpoint(
        Service::Issuer,
        "POST /v1/requests/replay",
        fx.issuer(),
        ISSUER_LIMIT,
        cases,
    )
}

fn redeem_body(token: &[u8], kind: &str) -> String {
    format!(
        "{{\"token\":{},\"kind\":{}}}",
        Value::String(b64_encode(token)),
        Value::String(kind.to_owned())
    )
}

fn redeemer_redeem(fx: &Fixture) -> Endpoint {
    let path = "/v1/redeem";
    let mut rng = rng_for("redeemer redeem");
    let token = fx.token_queue.to_bytes();
    // The kept queue token, for a queue: a real redemption, never sent as is.
    let target = JsonTarget {
        path,
        limit: REDEEMER_LIMIT,
        valid: redeem_body(&token, "queue"),
        refused: redeem_body(&token, "chunk-64k"),
    };
    let semantic = |rng: &mut StdRng| -> Case {
        let (detail, body, expect): (String, String, Expect) = match rng.random_range(0..7) {
            0 => {
                let k = *pick(rng, &["chunk-64k", "chunk-1m", "nope"]);
                (
                    format!("queue token for {k}"),
                    redeem_body(&token, k),
                    Expect::Status(422),
                )
            }
            1 => (
                "chunk token for a queue".into(),
                redeem_body(&fx.token_chunk.to_bytes(), "queue"),
                Expect::Status(422),
            ),
            2 => {
                // An unknown key id costs the redeemer a key-directory refresh, at most one a
                // second (redeemer/src/keys.rs:78): few of those, to keep the run short.
                let mut t = token.clone();
                let mut at = rng.random_range(0..t.len());
                while (66..98).contains(&at) && !rng.random_bool(0.2) {
                    at = rng.random_range(0..t.len());
                }
                t[at] ^= 1 << rng.random_range(0..8);
                let part = match at {
                    0..2 => "type",
                    2..34 => "nonce",
                    34..66 => "challenge digest",
                    66..98 => "key id",
                    _ => "authenticator",
                };
                (
                    format!("bit flipped in the token's {part} (byte {at})"),
                    redeem_body(&t, "queue"),
                    Expect::Any4xx,
                )
            }
            3 => {
                let n = *pick(
                    rng,
                    &[0, 1, token.len() - 1, token.len() + 1, token.len() * 2],
                );
                let mut t = token.clone();
                t.resize(n, 0);
                (
                    format!("token of {n} bytes"),
                    redeem_body(&t, "queue"),
                    Expect::Status(400),
                )
            }
            4 => {
                let mut t = random_bytes(rng, token.len());
                t[0] = 0;
                t[1] = 2;
                let known_key = rng.random_bool(0.8);
                if known_key {
                    t[66..98].copy_from_slice(&token[66..98]);
                }
                (
                    format!("random token of the right type and length (known key: {known_key})"),
                    redeem_body(&t, "queue"),
                    Expect::Status(422),
                )
            }
            5 => {
                let k = pick(
                    rng,
                    &[
                        "Queue".to_owned(),
                        String::new(),
                        "a b".into(),
                        "-x".into(),
                        "q".repeat(100),
                        "é".into(),
                    ],
                )
                .clone();
                (
                    format!("kind {k:.20?}"),
                    redeem_body(&token, &k),
                    Expect::Status(400),
                )
            }
            _ => {
                let mut t = fx.token_queue.to_bytes();
                t[1] = *pick(rng, &[0, 1, 3, 0xff]);
                (
                    "another token type".into(),
                    redeem_body(&t, "queue"),
                    Expect::Status(400),
                )
            }
        };
        Case::new("token", detail, Method::POST, path)
            .json_body(body)
            .expect(expect)
    };
    let mut cases = raw_cases(&mut rng, "POST", path, REDEEMER_LIMIT, true);
    for _ in 0..20 {
        cases.push(semantic(&mut rng));
    }
    let cases = fill(cases, JSON_CASES, || {
        if rng.random_bool(0.3) {
            semantic(&mut rng)
        } else {
            generic_json(&mut rng, &target)
        }
    });
    endpoint(
        Service::Redeemer,
        "POST /v1/redeem",
        fx.redeemer(),
        REDEEMER_LIMIT,
        cases,
    )
}

fn consume_body(grant: &str, kind: &str) -> String {
    format!(
        "{{\"grant\":{},\"kind\":{}}}",
        Value::String(grant.to_owned()),
        Value::String(kind.to_owned())
    )
}

/// A grant code that is not one of the fixture's.
fn bad_grant(fx: &Fixture, rng: &mut StdRng) -> String {
    let secret = fx
        .grant_queue
        .rsplit('.')
        .next()
        .expect("secret")
        .to_owned();
    loop {
        let g = match rng.random_range(0..8) {
            0 => {
                // One symbol of the secret changed, but the last (whose unused bits would make
                // the answer depend on the real grant): another, unknown grant.
                let mut s: Vec<u8> = fx.grant_queue.bytes().collect();
                let at = s.len() - 1 - rng.random_range(1..22);
                let old = s[at];
                s[at] = *pick(
                    rng,
                    &b"ABCDEFabcdef012345-_"
                        .iter()
                        .copied()
                        .filter(|&c| c != old)
                        .collect::<Vec<_>>(),
                );
                String::from_utf8(s).expect("ascii")
            }
            1 => format!("sg1.chunk-64k.{secret}"),
            7 => {
                // The last symbol with its unused low bits set: not canonical base64url.
                format!("{}B", &fx.grant_queue[..fx.grant_queue.len() - 1])
            }
            2 => pick(
                rng,
                &[
                    "",
                    "sg1",
                    "sg1..",
                    "sg2.queue.AAAAAAAAAAAAAAAAAAAAAA",
                    "sg1.queue.AAAA",
                    "SG1.queue.AAAAAAAAAAAAAAAAAAAAAA",
                ],
            )
            .to_string(),
            3 => format!("{}.x", fx.grant_queue),
            4 => format!("sg1.queue.{}", "A".repeat(rng.random_range(23..200))),
            5 => format!("sg1.{}.{secret}", pick(rng, &["Queue", "q u", "-q", "é"])),
            _ => random_ascii(rng, 80),
        };
        if g != fx.grant_queue && g != fx.grant_chunk {
            return g;
        }
    }
}

fn redeemer_consume(fx: &Fixture) -> Endpoint {
    let path = "/v1/grants/consume";
    let mut rng = rng_for("redeemer consume");
    // Consuming the kept queue grant: never sent as is.
    let target = JsonTarget {
        path,
        limit: REDEEMER_LIMIT,
        valid: consume_body(&fx.grant_queue, "queue"),
        refused: consume_body(&fx.grant_queue, "chunk-64k"),
    };
    let semantic = |rng: &mut StdRng| -> Case {
        let (detail, body, expect): (String, String, Expect) = match rng.random_range(0..4) {
            0 => {
                let k = *pick(rng, &["chunk-64k", "chunk-4m", "nope"]);
                (
                    format!("queue grant for {k}"),
                    consume_body(&fx.grant_queue, k),
                    Expect::Status(422),
                )
            }
            1 => (
                "chunk grant for a queue".into(),
                consume_body(&fx.grant_chunk, "queue"),
                Expect::Status(422),
            ),
            2 => {
                let g = bad_grant(fx, rng);
                (
                    format!("grant {g:.60?}"),
                    consume_body(&g, "queue"),
                    Expect::OneOf(&[400, 404]),
                )
            }
            _ => {
                let k = pick(
                    rng,
                    &[
                        "Queue".to_owned(),
                        String::new(),
                        "a b".into(),
                        "q".repeat(100),
                    ],
                )
                .clone();
                (
                    format!("kind {k:.20?}"),
                    consume_body(&fx.grant_queue, &k),
                    Expect::Status(400),
                )
            }
        };
        Case::new("grant", detail, Method::POST, path)
            .json_body(body)
            .expect(expect)
    };
    let mut cases = Vec::new();
    for _ in 0..20 {
        cases.push(semantic(&mut rng));
    }
    let cases = fill(cases, JSON_CASES, || {
        if rng.random_bool(0.3) {
            semantic(&mut rng)
        } else {
            generic_json(&mut rng, &target)
        }
    });
    endpoint(
        Service::Redeemer,
        "POST /v1/grants/consume",
        fx.redeemer(),
        REDEEMER_LIMIT,
        cases,
    )
}

/// An Authorization header that is not a usable queue grant, and what it is.
fn bad_authorization(fx: &Fixture, rng: &mut StdRng) -> (Option<Vec<u8>>, String) {
    match rng.random_range(0..7) {
        0 => (None, "no Authorization".into()),
        1 => {
            let v = pick(
                rng,
                &[
                    "Basic b3AtYTpzZWNyZXQ=",
                    "Token abc",
                    "bearer sg1.queue.AAAAAAAAAAAAAAAAAAAAAA",
                    "Bearer",
                    "Bearer ",
                ],
            )
            .to_string();
            (Some(v.clone().into_bytes()), format!("Authorization {v:?}"))
        }
        2 => {
            let g = bad_grant(fx, rng);
            (
                Some(format!("Bearer {g}").into_bytes()),
                format!("Bearer {g:.60?}"),
            )
        }
        3 => (
            Some(format!("Bearer {}", fx.grant_chunk).into_bytes()),
            "the chunk grant".into(),
        ),
        4 => {
            let mut v = b"Bearer sg1.queue.".to_vec();
            v.extend_from_slice(&[0x80, 0xff, 0xc3, 0xa9]);
            (Some(v), "non-ASCII bytes".into())
        }
        5 => (
            Some(format!("Bearer {}", "x".repeat(rng.random_range(100..8000))).into_bytes()),
            "a long junk grant".into(),
        ),
        _ => (
            Some(format!("Bearer  {}", fx.grant_chunk).into_bytes()),
            "two spaces before the chunk grant".into(),
        ),
    }
}

fn relay_queues(fx: &Fixture) -> Endpoint {
    let mut rng = rng_for("relay queues");
    let cases = fill(Vec::new(), RELAY_CASES, || {
        if rng.random_bool(0.1) {
            let m = *pick(&mut rng, &["GET", "PUT", "DELETE", "PATCH"]);
            return Case::new(
                "wrong method",
                m,
                Method::from_bytes(m.as_bytes()).expect("m"),
                "/queues",
            )
            .header("authorization", format!("Bearer {}", fx.grant_chunk))
            .expect(Expect::Status(405));
        }
        let (auth, what) = bad_authorization(fx, &mut rng);
        let n = rng.random_range(0..100);
        let mut c =
            Case::new("grant", what, Method::POST, "/queues").body(random_bytes(&mut rng, n));
        if let Some(v) = auth {
            c = c.header("authorization", v);
        }
        c.expect(Expect::OneOf(&[401, 403]))
    });
    endpoint(
        Service::Relay,
        "POST /queues",
        fx.relay(),
        RELAY_LIMIT,
        cases,
    )
}

fn bad_chunk_id(rng: &mut StdRng) -> String {
    let raw: Vec<u8> = match rng.random_range(0..7) {
        0 => {
            let n = *pick(rng, &[1, 15, 17, 32]);
            b64_encode(random_bytes(rng, n)).into_bytes()
        }
        1 => {
            let mut s = b64_encode(random_bytes(rng, 16)).into_bytes();
            let at = rng.random_range(0..s.len());
            s[at] = *pick(rng, b"!.*+=~ %");
            s
        }
        2 => b"..\\..\\x".to_vec(),
        3 => b"../../../../etc/passwd".to_vec(),
        4 => "é".repeat(11).into_bytes(),
        5 => vec![0xff; 22],
        _ => random_ascii(rng, 40).into_bytes(),
    };
    let id = pct(&raw);
    if id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return format!("{id}!");
    }
    id
}

fn relay_put_chunk(fx: &Fixture) -> Endpoint {
    let mut rng = rng_for("relay put chunk");
    let mut cases = Vec::new();
    for over in [1, 4096] {
        cases.push(
            Case::new(
                "oversized body",
                format!("{} bytes", RELAY_LIMIT + over),
                Method::PUT,
                &format!("/chunks/{}", b64_encode([1u8; 16])),
            )
            .header("authorization", format!("Bearer {}", fx.grant_chunk))
            .body(vec![0u8; RELAY_LIMIT + over])
            .expect(Expect::Status(413)),
        );
    }
    cases.extend(
        raw_cases(
            &mut rng,
            "PUT",
            &format!("/chunks/{}", b64_encode([2u8; 16])),
            RELAY_LIMIT,
            true,
        )
        .into_iter()
        .filter(|c| c.detail != "chunked body over the limit"),
    );
    let cases = fill(cases, RELAY_CASES, || {
        let fresh = b64_encode(random_bytes(&mut rng, 16));
        let small = rng.random_range(0..=64 * 1024);
        let (family, detail, id, auth, body, expect): (
            &str,
            String,
            String,
            Option<String>,
            usize,
            Expect,
        ) = match rng.random_range(0..8) {
            0 | 1 => {
                let id = bad_chunk_id(&mut rng);
                (
                    "bad id",
                    format!("id {id:.60}"),
                    id,
                    Some(format!("Bearer {}", fx.grant_chunk)),
                    rng.random_range(0..100),
                    Expect::Any4xx,
                )
            }
            2 => (
                "grant",
                "no grant".into(),
                fresh,
                None,
                small,
                Expect::Status(401),
            ),
            3 => (
                "grant",
                format!("queue grant for {small} bytes"),
                fresh,
                Some(format!("Bearer {}", fx.grant_queue)),
                small,
                Expect::Status(403),
            ),
            4 => {
                let n = rng.random_range(64 * 1024 + 1..=256 * 1024);
                (
                    "grant",
                    format!("chunk-64k grant for {n} bytes"),
                    fresh,
                    Some(format!("Bearer {}", fx.grant_chunk)),
                    n,
                    Expect::Status(403),
                )
            }
            5 => (
                "exists",
                "the stored chunk's id".into(),
                fx.stored_chunk.clone(),
                Some(format!("Bearer {}", fx.grant_chunk)),
                small.min(1000),
                Expect::Status(409),
            ),
            6 => {
                let g = bad_grant(fx, &mut rng);
                (
                    "grant",
                    format!("grant {g:.60?}"),
                    fresh,
                    Some(format!("Bearer {g}")),
                    small.min(1000),
                    Expect::OneOf(&[401, 403]),
                )
            }
            _ => {
                let m = *pick(&mut rng, &["POST", "DELETE", "PATCH"]);
                let mut c = Case::new(
                    "wrong method",
                    m,
                    Method::from_bytes(m.as_bytes()).expect("m"),
                    &format!("/chunks/{fresh}"),
                )
                .header("authorization", format!("Bearer {}", fx.grant_chunk))
                .expect(Expect::Status(405));
                c.body = vec![0u8; 100];
                return c;
            }
        };
        let mut c = Case::new(family, detail, Method::PUT, &format!("/chunks/{id}"))
            .body(random_bytes(&mut rng, body))
            .expect(expect);
        if let Some(a) = auth {
            c = c.header("authorization", a);
        }
        c
    });
    endpoint(
        Service::Relay,
        "PUT /chunks/{id}",
        fx.relay(),
        RELAY_LIMIT,
        cases,
    )
}

fn relay_get_chunk(fx: &Fixture) -> Endpoint {
    let mut rng = rng_for("relay get chunk");
    // Dot segments as sent, which a URL library would resolve before sending.
    let dots: Vec<Case> = [
        "/chunks/..",
        "/chunks/.",
        "/chunks/../queues",
        "/chunks/../../etc/passwd",
        "/chunks/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/chunks/..%5c..%5cetc",
    ]
    .iter()
    .map(|path| {
        let mut c = Case::raw(
            "dot segments",
            path,
            format!("GET {path} HTTP/1.1\r\nHost: scrip\r\nConnection: close\r\n\r\n").into_bytes(),
            Expect::OneOf(&[400, 404]),
        );
        c.json = true;
        c
    })
    .collect();
    let cases = fill(dots, RELAY_CASES, || match rng.random_range(0..5) {
        0 => {
            let id = b64_encode(random_bytes(&mut rng, 16));
            Case::new(
                "unknown id",
                id.clone(),
                Method::GET,
                &format!("/chunks/{id}"),
            )
            .expect(Expect::Status(404))
        }
        1 => {
            let m = *pick(&mut rng, &["POST", "DELETE", "PATCH"]);
            Case::new(
                "wrong method",
                m,
                Method::from_bytes(m.as_bytes()).expect("m"),
                &format!("/chunks/{}", fx.stored_chunk),
            )
            .expect(Expect::Status(405))
        }
        _ => {
            let id = bad_chunk_id(&mut rng);
            Case::new(
                "bad id",
                format!("{id:.60}"),
                Method::GET,
                &format!("/chunks/{id}"),
            )
        }
    });
    endpoint(
        Service::Relay,
        "GET /chunks/{id}",
        fx.relay(),
        RELAY_LIMIT,
        cases,
    )
}

fn all_endpoints(fx: &Fixture) -> Vec<Endpoint> {
    let (l, i, r, y) = (fx.ledger(), fx.issuer(), fx.redeemer(), fx.relay());
    let mut eps = vec![
        ledger_submit(fx),
        ledger_cosign(fx),
        ledger_nullifier(fx),
        ledger_keys(fx),
        ledger_log(fx),
        issuer_open(fx),
        issuer_balance(fx),
        issuer_replay(fx),
        redeemer_redeem(fx),
        redeemer_consume(fx),
        relay_queues(fx),
        relay_put_chunk(fx),
        relay_get_chunk(fx),
    ];
    for p in [
        "/healthz",
        "/metrics",
        "/v1/info",
        "/v1/totals",
        "/v1/checkpoint",
    ] {
        eps.push(plain_get(Service::Ledger, l, p, LEDGER_LIMIT, true));
    }
    for p in ["/healthz", "/metrics", "/v1/keys"] {
        eps.push(plain_get(Service::Issuer, i, p, ISSUER_LIMIT, true));
    }
    for p in ["/healthz", "/metrics"] {
        eps.push(plain_get(Service::Redeemer, r, p, REDEEMER_LIMIT, true));
    }
    eps.push(plain_get(Service::Relay, y, "/metrics", RELAY_LIMIT, true));
    eps.push(unknown_routes(Service::Ledger, l, true));
    eps.push(unknown_routes(Service::Issuer, i, true));
    eps.push(unknown_routes(Service::Redeemer, r, true));
    eps.push(unknown_routes(Service::Relay, y, true));
    eps
}

// ---------------------------------------------------------------------------------------------
// The property test.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_to_every_endpoint_is_refused_and_changes_nothing() {
    let started = Instant::now();
    let fx = Fixture::start().await;
    let setup = started.elapsed();
    let before = fx.snapshot().await;
    let endpoints = all_endpoints(&fx);
    let generated = started.elapsed();

    let shared = client(None);
    let ips = Arc::new(AtomicU32::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for ep in endpoints {
        let (shared, ips, permits) = (shared.clone(), ips.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            run_endpoint(ep, shared, ips).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.expect("endpoint task"));
    }
    outcomes.sort_by(|a, b| (a.service, &a.name).cmp(&(b.service, &b.name)));
    let sent = started.elapsed();

    let after = fx.snapshot().await;

    println!(
        "seed {:#x}; setup {setup:.1?}, cases generated by {generated:.1?}, sent by {sent:.1?}",
        seed()
    );
    let mut total = 0;
    let mut violations = Vec::new();
    let mut known: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    for o in &outcomes {
        total += o.cases;
        println!(
            "{:>8} {:<34} {:>4} cases in {:>6.1?} (slowest {:.1?}: {})",
            format!("{:?}", o.service.expect("service")),
            o.name,
            o.cases,
            o.elapsed,
            o.slowest.0,
            o.slowest.1
        );
        println!("{:>44} answers {:?}", "", o.codes);
        println!("{:>44} families {:?}", "", o.families);
        violations.extend(o.violations.iter().cloned());
        for (id, n) in &o.known {
            let entry = known.entry(id).or_insert((0, o.known_examples[id].clone()));
            entry.0 += n;
        }
    }
    println!("{total} cases, {} violations", violations.len());
    for (id, what) in KNOWN_DEVIATIONS {
        match known.get(id) {
            Some((n, example)) => {
                println!("known deviation {id}: {n} cases, e.g. {example}\n    {what}")
            }
            None => println!("known deviation {id}: not seen in this run; remove it if fixed"),
        }
    }
    for v in &violations {
        println!("VIOLATION {v}");
    }

    assert_eq!(before, after, "bad input changed the state");
    assert!(
        violations.is_empty(),
        "{} of {total} cases broke the rules; first:\n{}",
        violations.len(),
        violations
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    if std::env::var_os("BAD_INPUT_STRICT").is_some() {
        assert!(known.is_empty(), "known deviations remain: {known:?}");
    }

    // Answers that are 2xx by design, apart: they change nothing either, but a metric.
    for line in documented_exceptions(&fx).await {
        println!("by design: {line}");
    }
    let mut again = fx.snapshot().await;
    let accepted = r#"scrip_ledger_requests_total{result="accepted"}"#;
    let count = |s: &Snapshot| -> u64 {
        s.ledger_metrics
            .iter()
            .find_map(|l| l.strip_prefix(accepted))
            .and_then(|v| v.trim().parse().ok())
            .expect("metric")
    };
    assert_eq!(
        count(&again),
        count(&after) + 1,
        "the refused spend counts as an accepted request"
    );
    again.ledger_metrics = after.ledger_metrics.clone();
    assert_eq!(after, again, "a by-design answer changed the state");

    // The grant and the token no bad request could use still work, and the fresh card is
    // untouched.
    let resp = client(None)
        .post(format!("{}/queues", fx.relay()))
        .header("authorization", format!("Bearer {}", fx.grant_queue))
        .send()
        .await
        .expect("queue");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "the kept queue grant still creates a queue"
    );
    let resp = client(None)
        .put(format!("{}/chunks/{}", fx.relay(), b64_encode([9u8; 16])))
        .header("authorization", format!("Bearer {}", fx.grant_chunk))
        .body(vec![1u8; 1000])
        .send()
        .await
        .expect("chunk");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "the kept chunk grant still stores a chunk"
    );
    let (status, body) = post(
        &format!("{}/v1/redeem", fx.redeemer()),
        redeem_body(&fx.token_queue.to_bytes(), "queue"),
    )
    .await;
    assert_eq!(status, 200, "the kept queue token still redeems: {body}");
    let a = &fx.c.operators[0];
    let fresh = a.issuer.balance(&fx.card_fresh).await.expect("balance");
    assert_eq!(
        (fresh.remaining_credits, fresh.state.as_str()),
        (100, "active"),
        "the untouched card keeps its 100 credits"
    );
    println!("total {:.1?}", started.elapsed());
}

/// Answers that are 2xx by design: a replayed cosignature (idempotent: ON CONFLICT DO NOTHING,
/// ledger/src/store/sqlite.rs:440) and a signed spend of nullifiers under a key the ledger does
/// not know (refused per nullifier in a 200 receipt, nothing appended; the handler still counts
/// it in `scrip_ledger_requests_total{result="accepted"}`, ledger/src/http.rs `submit`).
async fn documented_exceptions(fx: &Fixture) -> Vec<String> {
    let mut out = Vec::new();
    let (status, body) = post(
        &format!("{}/v1/checkpoint/cosign", fx.ledger()),
        fx.cosigned.clone(),
    )
    .await;
    assert_eq!(
        status, 204,
        "a replayed cosignature is accepted again: {body}"
    );
    out.push(format!(
        "replayed cosignature: {status} (ON CONFLICT DO NOTHING)"
    ));

    let mut rng = rng_for("documented exceptions");
    let action = Action::Spend {
        groups: vec![SpendGroup {
            token_key_id: TokenKeyId(random_32(&mut rng)),
            nullifiers: fx.fresh_nullifiers(&mut rng, 2),
        }],
    };
    let body = fx.signed(&fx.op_a, fx.request(&mut rng, fx.ledger_id, now(), action));
    let (status, receipt) = post(&format!("{}/v1/entries", fx.ledger()), body).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["seq"], Value::Null, "nothing appended: {receipt}");
    assert!(
        receipt["spends"]
            .as_array()
            .is_some_and(|s| s.iter().all(|r| r["status"] == "refused")),
        "{receipt}"
    );
    out.push(format!(
        "signed spend under an unknown key: {status} {receipt}"
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// Slow clients.

/// What the server did with a request that stopped halfway.
#[derive(Debug)]
struct Stall {
    /// When the first byte of an answer came, if one did.
    answered_after: Option<Duration>,
    status: Option<u16>,
    body: Vec<u8>,
    /// When the server closed the connection, if it did.
    closed_after: Option<Duration>,
}

/// Sends `head` and `partial`, then nothing, and watches for up to `wait`.
fn stall(addr: SocketAddr, head: &str, partial: &[u8], wait: Duration) -> Stall {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(partial).expect("write body");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut answered_after = None;
    let mut closed_after = None;
    let mut buf = [0u8; 4096];
    while started.elapsed() < wait {
        stream
            .set_read_timeout(Some(Duration::from_millis(250)))
            .expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(n) => {
                answered_after.get_or_insert(started.elapsed());
                got.extend_from_slice(&buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let parsed = parse_response(&got);
    Stall {
        answered_after,
        status: parsed.as_ref().map(|a| a.status),
        body: parsed.map(|a| a.body).unwrap_or_default(),
        closed_after,
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("address")
}

/// Sends a whole request one byte at a time, `gap` apart, and reads the answer.
fn trickle(addr: SocketAddr, request: &[u8], gap: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    for b in request {
        stream.write_all(&[*b]).ok()?;
        std::thread::sleep(gap);
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    parse_response(&got).map(|a| a.status)
}

/// The ledger and the redeemer stop waiting for a body after 30 s, the issuer after 60 s
/// (`finish` in ledger/src/api.rs: tower_http's `TimeoutLayer` with 408), and close the
/// connection. A client that sends slowly but finishes in time is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_that_never_finishes_gets_408_and_the_connection_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Consortium::start(&dir.path().join("c"), &["op-a"], Mode::Strict)
        .await
        .expect("consortium");
    let a = &c.operators[0];
    let slow = addr_of(&c.ledger_url);
    let slow_but_complete = tokio::task::spawn_blocking(move || {
        trickle(
            slow,
            b"GET /v1/info HTTP/1.1\r\nHost: scrip\r\nConnection: close\r\n\r\n",
            Duration::from_millis(20),
        )
    });
    let mut stalls = Vec::new();
    for (name, url, path, timeout) in [
        ("ledger", c.ledger_url.clone(), "/v1/entries", 30),
        ("redeemer", a.redeemer_url.clone(), "/v1/redeem", 30),
        ("issuer", a.issuer_url.clone(), "/v1/cards/balance", 60),
    ] {
        let addr = addr_of(&url);
        stalls.push((
            name,
            timeout,
            tokio::task::spawn_blocking(move || {
                stall(
                    addr,
                    &format!("POST {path} HTTP/1.1\r\nHost: scrip\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"),
                    b"{\"card_code\":",
                    Duration::from_secs(timeout + 15),
                )
            }),
        ));
    }
    assert_eq!(
        slow_but_complete.await.expect("trickle"),
        Some(200),
        "a request sent one byte every 20 ms is answered"
    );
    for (name, timeout, task) in stalls {
        let s = task.await.expect("stall");
        println!(
            "{name}: answered after {:?} with {:?}, body {:?}, closed after {:?}",
            s.answered_after,
            s.status,
            String::from_utf8_lossy(&s.body),
            s.closed_after
        );
        assert_eq!(s.status, Some(408), "{name}: {s:?}");
        assert!(
            String::from_utf8_lossy(&s.body).contains("\"code\":\"timeout\""),
            "{name}: the 408 is the JSON error: {s:?}"
        );
        let answered = s.answered_after.expect("answered");
        let limit = Duration::from_secs(timeout);
        assert!(
            answered >= limit - Duration::from_secs(1)
                && answered <= limit + Duration::from_secs(5),
            "{name} answered after {answered:?}, its limit is {limit:?}"
        );
        assert!(
            s.closed_after.is_some(),
            "{name} closes the connection after the 408"
        );
    }
}

/// A request head trickled in a byte a second is cut off after
/// `scrip_common::HEADER_READ_TIMEOUT` (axum::serve had no such limit: the services now
/// serve through `scrip_common::server::serve`).
#[tokio::test]
async fn headers_sent_one_byte_a_second_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Consortium::start(&dir.path().join("c"), &["op-a"], Mode::Strict)
        .await
        .expect("consortium");
    let addr = addr_of(&c.ledger_url);
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let head = b"GET /v1/info HTTP/1.1\r\nHost: scrip\r\nX-Slow: ";
        stream.write_all(head).expect("write");
        let started = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(45) {
            if stream.write_all(b"a").is_err() {
                return Some(started.elapsed());
            }
            match stream.read(&mut buf) {
                Ok(_) => return Some(started.elapsed()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(started.elapsed()),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        None
    })
    .await
    .expect("trickle");
    let cut = outcome.expect("the ledger never cut off a client trickling its headers for 45 s");
    let limit = scrip_common::HEADER_READ_TIMEOUT;
    assert!(
        cut >= limit - Duration::from_secs(1) && cut <= limit + Duration::from_secs(5),
        "cut off after {cut:?}, the limit is {limit:?}"
    );
}

/// The example relay, too, answers a body that never finishes with a 408 and closes.
#[tokio::test]
async fn the_relay_cuts_off_a_body_that_never_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Consortium::start(&dir.path().join("c"), &["op-a"], Mode::Strict)
        .await
        .expect("consortium");
    let addr = addr_of(&c.operators[0].relay_url);
    let s = tokio::task::spawn_blocking(move || {
        stall(
            addr,
            &format!(
                "PUT /chunks/{} HTTP/1.1\r\nHost: scrip\r\nContent-Length: 1000\r\n\r\n",
                b64_encode([3u8; 16])
            ),
            b"abc",
            Duration::from_secs(75),
        )
    })
    .await
    .expect("stall");
    assert_eq!(s.status, Some(408), "{s:?}");
    assert!(s.closed_after.is_some(), "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// Many connections.

/// The soft limit on open files, from /proc (Linux); `None` elsewhere.
fn open_file_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// 500 idle connections to the ledger — half silent, half stopped inside a request head — do
/// not keep a normal request from being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_idle_connections_do_not_starve_a_normal_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Consortium::start(&dir.path().join("c"), &["op-a"], Mode::Strict)
        .await
        .expect("consortium");
    // Each connection costs this process two descriptors (both ends are here).
    let wanted = 500;
    let n = open_file_limit().map_or(wanted, |limit| wanted.min(limit.saturating_sub(400) / 2));
    assert!(n >= 100, "too few file descriptors for this test");
    let addr = addr_of(&c.ledger_url);
    let conns = tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| {
                let mut s = TcpStream::connect(addr).expect("connect");
                if i % 2 == 1 {
                    s.write_all(b"POST /v1/entries HTTP/1.1\r\nHost: scrip\r\nContent-")
                        .expect("write");
                }
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("connect");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let http = client(None);
    let started = Instant::now();
    let resp = http
        .get(format!("{}/v1/info", c.ledger_url))
        .send()
        .await
        .expect("info");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = http
        .post(format!("{}/v1/entries", c.ledger_url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("entries");
    assert_eq!(resp.status().as_u16(), 400);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "{took:?} with {n} idle connections"
    );

    // Are the idle connections still open? (Nothing in the code closes them.)
    let open = tokio::task::spawn_blocking(move || {
        conns
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).expect("nonblocking");
                let mut b = [0u8; 1];
                matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    })
    .await
    .expect("peek");
    println!(
        "{n} idle connections; two requests took {took:?}; {open} still open after the requests"
    );
}
