//! What every case is and how its answer is judged: the request, the status it must get, the
//! JSON error form; the proptest runner that sends each endpoint's cases to the live service.

use proptest::strategy::SBoxedStrategy;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestCaseResult, TestError, TestRng,
    TestRunner,
};
use reqwest::Method;
use reqwest::header::HeaderValue;
use scrip_spec::Nullifier;
use scrip_spec::api::ledger::{LedgerInfo, NullifierStatus};
use scrip_spec::api::{ErrorAnswer, GenericCode};
use scrip_spec::encoding::b64_encode;
use scrip_spec::ledger::Hash32;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Ledger,
    Issuer,
    Redeemer,
    Relay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Any4xx,
    Status(u16),
    OneOf(&'static [u16]),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub family: &'static str,
    pub detail: String,
    pub method: Method,
    pub target: String,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    pub body: Vec<u8>,
    /// A hand-made request, sent as is over its own connection.
    pub raw: Option<Vec<u8>>,
    pub expect: Expect,
    /// The answer must be the JSON error body.
    pub json: bool,
    /// The body must be parsed as the request (a JSON array read as the request object is
    /// refused by the parser, so its error code must be `malformed_request`).
    pub parse_error: bool,
    /// The error code the answer must carry.
    pub code: Option<&'static str>,
    /// What the ledger must still be once the answer came (asked of the ledger at the
    /// endpoint's base).
    pub unchanged: Option<Arc<LedgerUnchanged>>,
}

/// The ledger's state a case must leave as it was: its head and governance sequence, and
/// nullifiers still unspent.
#[derive(Clone, Debug)]
pub struct LedgerUnchanged {
    pub head: (u64, Hash32),
    pub governance_seq: u64,
    pub unspent: Vec<Nullifier>,
}

impl Case {
    pub fn new(
        family: &'static str,
        detail: impl Into<String>,
        method: Method,
        target: &str,
    ) -> Self {
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
            code: None,
            unchanged: None,
        }
    }

    /// The answer must carry the error code `code`.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The ledger must still be as `unchanged` says once the answer came.
    pub fn unchanged(mut self, unchanged: LedgerUnchanged) -> Self {
        self.unchanged = Some(Arc::new(unchanged));
        self
    }

    pub fn json_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push(("content-type", b"application/json".to_vec()));
        self.body = body.into();
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// 413 over `limit`, any 4xx under it.
    pub fn sized(self, limit: usize) -> Self {
        let over = self.body.len() > limit;
        self.expect(if over {
            Expect::Status(413)
        } else {
            Expect::Any4xx
        })
    }

    /// A well-formed JSON request to `path` that the endpoint must refuse on its merits.
    pub fn refused(
        family: &'static str,
        path: &str,
        detail: impl Into<String>,
        body: String,
        expect: Expect,
    ) -> Self {
        Self::new(family, detail, Method::POST, path)
            .json_body(body)
            .expect(expect)
    }

    pub fn raw(family: &'static str, detail: &str, bytes: Vec<u8>, expect: Expect) -> Self {
        let mut c = Self::new(family, detail, Method::GET, "");
        c.raw = Some(bytes);
        c.expect = expect;
        c.json = false;
        c
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub struct Endpoint {
    pub service: Service,
    pub name: String,
    pub base: String,
    /// Each case from its own loopback address (the issuer limits failed card attempts per
    /// source address).
    pub rotate_source: bool,
    pub limit: usize,
    /// Strategies each run once, before the others: hand-made requests, and one case of each
    /// kind of request the endpoint must refuse on its merits.
    pub once: Vec<SBoxedStrategy<Case>>,
    /// The generated cases: `cases` of them.
    pub strategy: SBoxedStrategy<Case>,
    pub cases: u32,
}

impl Endpoint {
    /// `total` cases in all: the `once` ones, and generated ones for the rest.
    pub fn new(
        service: Service,
        name: &str,
        base: &str,
        limit: usize,
        once: Vec<SBoxedStrategy<Case>>,
        strategy: SBoxedStrategy<Case>,
        total: usize,
    ) -> Self {
        Self {
            service,
            name: name.to_owned(),
            base: base.to_owned(),
            rotate_source: false,
            limit,
            cases: u32::try_from(total.saturating_sub(once.len())).expect("case count"),
            once,
            strategy,
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub name: String,
    pub service: Option<Service>,
    pub cases: usize,
    pub statuses: BTreeMap<u16, usize>,
    pub families: BTreeMap<&'static str, usize>,
    pub codes: BTreeMap<String, usize>,
    pub violations: Vec<String>,
    pub known: BTreeMap<&'static str, usize>,
    /// An example of each known deviation.
    pub known_examples: BTreeMap<&'static str, String>,
    pub slowest: (Duration, String),
    pub elapsed: Duration,
}

pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if body.len() > 200 {
        format!("{text}…")
    } else {
        text
    }
}

/// The code of an error answer, read as the generic codes every service shares.
pub fn error_code(body: &[u8]) -> Option<GenericCode> {
    serde_json::from_slice::<ErrorAnswer<GenericCode>>(body)
        .ok()
        .map(|a| a.error.code)
}

/// Whether the body is exactly `{"error": {"code": <non-empty string>, "message": <string>, ...}}`.
pub fn error_shape(answer: &Answer) -> Result<(), String> {
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
pub enum Problem {
    /// Not a 4xx, or not the status expected.
    Status(String),
    /// Not the JSON error body.
    Shape(String),
    /// A JSON array was read as the request object.
    Array(String),
    /// Not the error code expected.
    Code(String),
    /// The ledger changed.
    State(String),
}

impl Problem {
    pub fn text(&self) -> &str {
        match self {
            Problem::Status(t)
            | Problem::Shape(t)
            | Problem::Array(t)
            | Problem::Code(t)
            | Problem::State(t) => t,
        }
    }
}

pub fn judge(case: &Case, answer: &Answer) -> Vec<Problem> {
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
    if let Some(expected) = case.code {
        let code = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        if code.as_deref() != Some(expected) {
            problems.push(Problem::Code(format!(
                "code {code:?}, expected {expected:?}"
            )));
        }
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
pub const KNOWN_DEVIATIONS: &[(&str, &str)] = &[(
    "nested-array-as-object",
    "an object nested in a request body may be written as the array of its values: serde's \
     derived structs accept both forms, and ApiJson (common/src/server.rs) checks only the top \
     level. Harmless: signatures and replay digests are over the canonical re-encoding, so the \
     two forms are the same request, and every such case is still refused here",
)];

pub fn known_deviation(
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

/// Whether the ledger at `base` is still as `want` says.
pub async fn ledger_unchanged(
    http: &reqwest::Client,
    base: &str,
    want: &LedgerUnchanged,
) -> Result<(), String> {
    let get = |path: String| async move {
        let resp = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        resp.bytes()
            .await
            .map_err(|e| format!("{path}: {e}"))
            .map(|b| b.to_vec())
    };
    let body = get("/v1/info".into()).await?;
    let info: LedgerInfo = serde_json::from_slice(&body).map_err(|e| format!("info: {e}"))?;
    if (info.head_seq, info.head_hash) != want.head || info.governance_seq != want.governance_seq {
        return Err(format!(
            "the ledger moved: head {} and governance_seq {}, was {} and {}",
            info.head_seq, info.governance_seq, want.head.0, want.governance_seq
        ));
    }
    for n in &want.unspent {
        let body = get(format!("/v1/nullifiers/{}", b64_encode(n.0))).await?;
        let status: NullifierStatus =
            serde_json::from_slice(&body).map_err(|e| format!("nullifier: {e}"))?;
        if status != NullifierStatus::Unspent {
            return Err(format!("nullifier {n} was spent: {status:?}"));
        }
    }
    Ok(())
}

pub fn client(source: Option<IpAddr>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ip) = source {
        b = b.local_address(ip);
    }
    b.build().expect("client")
}

pub async fn send(
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
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Result<Answer, String> {
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

pub fn header_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

pub fn response_complete(bytes: &[u8]) -> bool {
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

pub fn parse_response(bytes: &[u8]) -> Option<Answer> {
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

/// The seed of every endpoint's cases: `BAD_INPUT_SEED` (a u64), or a fixed default, so every
/// run sends the same cases.
pub fn seed() -> u64 {
    std::env::var("BAD_INPUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0bad_1200)
}

/// Each endpoint draws from its own stream, so adding cases to one leaves the others alone.
fn rng_for(name: &str) -> TestRng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let x = seed() ^ h;
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let word = x.rotate_left(16 * i as u32) ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64));
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// A fixed number of cases, nothing read from or written to disk, no fork, no time limit per
/// case; a failure is shrunk against the live service within a bound.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        fork: false,
        timeout: 0,
        max_shrink_iters: 200,
        max_shrink_time: 60_000,
        max_local_rejects: 100_000,
        max_global_rejects: 1000,
        rng_algorithm: RngAlgorithm::ChaCha,
        verbose: 0,
        ..ProptestConfig::default()
    }
}

fn clipped(text: &str, n: usize) -> String {
    if text.len() <= n {
        return text.to_owned();
    }
    let mut end = n;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Sends the cases of `ep` and judges every answer. Proptest's runner is synchronous: this
/// runs on a blocking thread and sends through `rt`. A case that breaks a rule stops the
/// endpoint's run; proptest shrinks it and the smallest one is reported as the violation.
pub fn run_endpoint(
    ep: Endpoint,
    rt: tokio::runtime::Handle,
    shared: reqwest::Client,
    ips: Arc<AtomicU32>,
) -> Outcome {
    let started = Instant::now();
    let out = RefCell::new(Outcome {
        name: ep.name.clone(),
        service: Some(ep.service),
        ..Outcome::default()
    });
    // Shrinking sends variants of a failed case again: those are not tallied.
    let shrinking = Cell::new(false);
    let check = |case: Case| -> TestCaseResult {
        let source = ep.rotate_source.then(|| {
            let n = ips.fetch_add(1, Ordering::Relaxed);
            IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8))
        });
        let case_started = Instant::now();
        let sent = rt.block_on(send(&shared, &ep.base, &case, source, ep.limit));
        let took = case_started.elapsed();
        let tally = !shrinking.get();
        let mut out = out.borrow_mut();
        if tally {
            out.cases += 1;
            *out.families.entry(case.family).or_default() += 1;
            if took > out.slowest.0 {
                out.slowest = (
                    took,
                    format!(
                        "case {} [{}] {:.80}",
                        out.cases - 1,
                        case.family,
                        case.detail
                    ),
                );
            }
        }
        let problem = match sent {
            Ok(answer) => {
                if tally {
                    *out.statuses.entry(answer.status).or_default() += 1;
                    // The code as sent, for the tally only (service codes are not generic ones).
                    let code = serde_json::from_slice::<Value>(&answer.body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "-".into());
                    *out.codes
                        .entry(format!("{} {code}", answer.status))
                        .or_default() += 1;
                }
                let mut problems = judge(&case, &answer);
                if let Some(want) = &case.unchanged
                    && let Err(e) = rt.block_on(ledger_unchanged(&shared, &ep.base, want))
                {
                    problems.push(Problem::State(e));
                }
                if problems.is_empty() {
                    None
                } else if let Some(id) =
                    known_deviation(ep.service, &ep.name, &case, &answer, &problems)
                {
                    if tally {
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
                    }
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
                if tally {
                    *out.statuses.entry(0).or_default() += 1;
                }
                Some(e)
            }
        };
        match problem {
            Some(problem) => {
                shrinking.set(true);
                Err(TestCaseError::fail(problem))
            }
            None => Ok(()),
        }
    };
    let describe = |e: TestError<Case>| match e {
        TestError::Fail(reason, case) => format!(
            "{:?} {} [{}] {} {}: {reason} (the smallest failing case)",
            ep.service,
            ep.name,
            case.family,
            case.method,
            clipped(&case.detail, 300)
        ),
        TestError::Abort(reason) => format!("{:?} {}: aborted: {reason}", ep.service, ep.name),
    };
    let mut runner = TestRunner::new_with_rng(
        config(ep.cases),
        rng_for(&format!("{:?} {}", ep.service, ep.name)),
    );
    let mut violations = Vec::new();
    for strategy in &ep.once {
        let mut once = TestRunner::new_with_rng(config(1), runner.new_rng());
        if let Err(e) = once.run(strategy, check) {
            violations.push(describe(e));
        }
        shrinking.set(false);
    }
    if let Err(e) = runner.run(&ep.strategy, check) {
        violations.push(describe(e));
    }
    let mut out = out.into_inner();
    out.violations = violations;
    out.elapsed = started.elapsed();
    out
}
