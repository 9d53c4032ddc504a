//! What every endpoint gets whatever it takes: malformed HTTP over a raw connection, wrong
//! methods and paths below a GET endpoint, and unknown routes.

use crate::harness::{Case, Endpoint, Expect, Service};
use crate::shared::{ascii, bytes, cases, chance, method, pct, pick};
use proptest::prelude::*;
use proptest::strategy::SBoxedStrategy;
use reqwest::Method;

/// Cases per GET endpoint without input.
const PLAIN_GET_CASES: usize = 200;
/// Cases of unknown routes per service.
const ROUTE_CASES: usize = 200;

/// Malformed HTTP sent over a raw connection, each case once: framing errors hyper answers
/// itself (no JSON there), and chunked bodies over the limit or broken, which the service
/// answers.
pub fn raw_cases(
    method: &str,
    path: &str,
    limit: usize,
    json_service: bool,
) -> Vec<SBoxedStrategy<Case>> {
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
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let fixed = vec![
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
    ];
    let head = format!("{method} {path} HTTP/1.1\r\n{host}");
    let big_header = (0..1024usize)
        .prop_map(move |extra| {
            let big = "a".repeat(500 * 1024 + extra);
            Case::raw(
                "raw http",
                "500 KiB header",
                req(&format!("{head}X-Big: {big}\r\n\r\n"), b""),
                Expect::Status(431),
            )
        })
        .sboxed();
    let mut out: Vec<SBoxedStrategy<Case>> = fixed.into_iter().map(|c| Just(c).sboxed()).collect();
    out.push(big_header);
    out.push(
        Just(Case::raw(
            "raw http",
            "200 headers",
            req(
                &format!("{method} {path} HTTP/1.1\r\n{host}{many_headers}\r\n"),
                b"",
            ),
            Expect::Status(431),
        ))
        .sboxed(),
    );
    out
}

/// The GET endpoints without input at `paths` of a service, and its unknown routes.
pub fn plain_gets(
    service: Service,
    base: &str,
    limit: usize,
    paths: &'static [&'static str],
) -> Vec<Endpoint> {
    let mut eps: Vec<Endpoint> = paths
        .iter()
        .map(|p| plain_get(service, base, p, limit, true))
        .collect();
    eps.push(unknown_routes(service, base, true));
    eps
}

/// A GET endpoint without input: wrong methods (with bodies) and paths under it.
pub fn plain_get(
    service: Service,
    base: &str,
    path: &'static str,
    limit: usize,
    json: bool,
) -> Endpoint {
    let name = format!("GET {path}");
    let wrong_method = (
        pick(&["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "TRACE"]),
        chance(0.5),
        bytes(64),
    )
        .prop_map(move |(m, random, noise)| {
            let body = if random { noise } else { b"{\"a\":1}".to_vec() };
            let mut c = Case::new(
                "wrong method",
                format!("{m} with {} bytes", body.len()),
                method(m),
                path,
            )
            .json_body(body)
            .expect(Expect::Status(405));
            c.json = json;
            c
        })
        .sboxed();
    let below = (0..4u8, ascii(20))
        .prop_map(move |(how, seg)| {
            let seg = pct(seg.as_bytes());
            let target = match how {
                0 => format!("{path}/"),
                1 => format!("{path}/{seg}"),
                2 => path.to_uppercase(),
                _ => format!("{path}x{seg}"),
            };
            let mut c = Case::new("path below", target.clone(), Method::GET, &target)
                .expect(Expect::Status(404));
            c.json = json;
            c
        })
        .sboxed();
    Endpoint::new(
        service,
        &name,
        base,
        limit,
        Vec::new(),
        cases(vec![(7, wrong_method), (3, below)]),
        PLAIN_GET_CASES,
    )
}

/// Unknown routes and methods of a service: a few fixed paths, then random ones.
pub fn unknown_routes(service: Service, base: &str, json: bool) -> Endpoint {
    let fixed: Vec<SBoxedStrategy<Case>> = [
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
    .map(|p| {
        let mut c = Case::new("fixed path", *p, Method::GET, p).expect(Expect::OneOf(&[404, 405]));
        c.json = json;
        Just(c).sboxed()
    })
    .collect();
    let random = (
        proptest::collection::vec(ascii(16), 1..4),
        pick(&["GET", "POST", "PUT", "DELETE", "PATCH", "BREW"]),
        bytes(64),
    )
        .prop_map(move |(segments, m, body)| {
            let mut target = String::new();
            for (i, seg) in segments.iter().enumerate() {
                target.push('/');
                if i == 0 {
                    target.push('x');
                }
                target.push_str(&pct(seg.as_bytes()));
            }
            let mut c = Case::new("unknown path", format!("{m} {target}"), method(m), &target)
                .body(body)
                .expect(Expect::OneOf(&[404, 405]));
            c.json = json;
            c
        })
        .sboxed();
    Endpoint::new(
        service,
        "unknown routes and methods",
        base,
        usize::MAX,
        fixed,
        random,
        ROUTE_CASES,
    )
}
