//! The example relay's endpoints: grants missing, unknown or for another kind, chunk ids that
//! are not ids (dot segments, traversal), bodies over the limit.

use crate::fixture::Fixture;
use crate::harness::{Case, Endpoint, Expect, Service};
use crate::redeemer::bad_grant;
use crate::routes::raw_cases;
use crate::shared::{ascii, b64, bytes, cases, filler, method, pct, pick, weighted};
use crate::{RELAY_CASES, RELAY_LIMIT};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::SBoxedStrategy;
use reqwest::Method;
use scrip_spec::encoding::b64_encode;
use std::sync::Arc;

/// An Authorization header that is not a usable queue grant, and what it is.
fn bad_authorization(fx: &Arc<Fixture>) -> SBoxedStrategy<(Option<Vec<u8>>, String)> {
    let (c3, c6) = (fx.grant_chunk.clone(), fx.grant_chunk.clone());
    weighted(vec![
        (1, Just((None, "no Authorization".into())).sboxed()),
        (
            1,
            pick(&[
                "Basic b3AtYTpzZWNyZXQ=",
                "Token abc",
                "bearer sg1.queue.AAAAAAAAAAAAAAAAAAAAAA",
                "Bearer",
                "Bearer ",
            ])
            .prop_map(|v| (Some(v.as_bytes().to_vec()), format!("Authorization {v:?}")))
            .sboxed(),
        ),
        (
            1,
            bad_grant(fx)
                .prop_map(|g| {
                    (
                        Some(format!("Bearer {g}").into_bytes()),
                        format!("Bearer {g:.60?}"),
                    )
                })
                .sboxed(),
        ),
        (
            1,
            Just((
                Some(format!("Bearer {c3}").into_bytes()),
                "the chunk grant".into(),
            ))
            .sboxed(),
        ),
        (
            1,
            Just({
                let mut v = b"Bearer sg1.queue.".to_vec();
                v.extend_from_slice(&[0x80, 0xff, 0xc3, 0xa9]);
                (Some(v), "non-ASCII bytes".into())
            })
            .sboxed(),
        ),
        (
            1,
            (100..8000usize)
                .prop_map(|n| {
                    (
                        Some(format!("Bearer {}", "x".repeat(n)).into_bytes()),
                        "a long junk grant".into(),
                    )
                })
                .sboxed(),
        ),
        (
            1,
            Just((
                Some(format!("Bearer  {c6}").into_bytes()),
                "two spaces before the chunk grant".into(),
            ))
            .sboxed(),
        ),
    ])
}

pub fn queues(fx: &Arc<Fixture>) -> Endpoint {
    let chunk = fx.grant_chunk.clone();
    let wrong_method = pick(&["GET", "PUT", "DELETE", "PATCH"])
        .prop_map(move |m| {
            Case::new("wrong method", m, method(m), "/queues")
                .header("authorization", format!("Bearer {chunk}"))
                .expect(Expect::Status(405))
        })
        .sboxed();
    let grant = (bad_authorization(fx), bytes(100))
        .prop_map(|((auth, what), body)| {
            let mut c = Case::new("grant", what, Method::POST, "/queues").body(body);
            if let Some(v) = auth {
                c = c.header("authorization", v);
            }
            c.expect(Expect::OneOf(&[401, 403]))
        })
        .sboxed();
    Endpoint::new(
        Service::Relay,
        "POST /queues",
        fx.relay(),
        RELAY_LIMIT,
        Vec::new(),
        cases(vec![(1, wrong_method), (9, grant)]),
        RELAY_CASES,
    )
}

fn bad_chunk_id() -> SBoxedStrategy<String> {
    weighted(vec![
        (
            1,
            pick(&[1usize, 15, 17, 32])
                .prop_flat_map(b64)
                .prop_map(String::into_bytes)
                .sboxed(),
        ),
        (
            1,
            (b64(16), any::<Index>(), pick(&b"!.*+=~ %"[..]))
                .prop_map(|(s, at, c)| {
                    let mut s = s.into_bytes();
                    let i = at.index(s.len());
                    s[i] = c;
                    s
                })
                .sboxed(),
        ),
        (1, Just(b"..\\..\\x".to_vec()).sboxed()),
        (1, Just(b"../../../../etc/passwd".to_vec()).sboxed()),
        (1, Just("é".repeat(11).into_bytes()).sboxed()),
        (1, Just(vec![0xff; 22]).sboxed()),
        (1, ascii(40).prop_map(String::into_bytes).sboxed()),
    ])
    .prop_map(|raw| {
        let id = pct(&raw);
        if id.len() == 22
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return format!("{id}!");
        }
        id
    })
    .sboxed()
}

/// What a chunk upload case takes.
#[derive(Debug, Clone)]
struct PutDraw {
    variant: u8,
    fresh: [u8; 16],
    small: usize,
    large: usize,
    tiny: usize,
    seed: u64,
    id: String,
    grant: String,
    method: &'static str,
}

fn chunk_upload(fx: &Fixture, d: PutDraw) -> Case {
    use Expect::{Any4xx, OneOf, Status};
    let fresh = b64_encode(d.fresh);
    let chunk = Some(format!("Bearer {}", fx.grant_chunk));
    let queue = Some(format!("Bearer {}", fx.grant_queue));
    let other = Some(format!("Bearer {}", d.grant));
    let (small, large, kept) = (d.small, d.large, d.small.min(1000));
    // A PUT of `body` random bytes to `/chunks/ID` with `auth`.
    let put =
        |family: &'static str, detail: String, id: &str, auth: Option<String>, body, expect| {
            let mut c = Case::new(family, detail, Method::PUT, &format!("/chunks/{id}"))
                .body(filler(d.seed, body))
                .expect(expect);
            if let Some(a) = auth {
                c = c.header("authorization", a);
            }
            c
        };
    let grant = |detail, auth, body, expect| put("grant", detail, &fresh, auth, body, expect);
    match d.variant {
        0 | 1 => put(
            "bad id",
            format!("id {:.60}", d.id),
            &d.id,
            chunk,
            d.tiny,
            Any4xx,
        ),
        2 => grant("no grant".into(), None, small, Status(401)),
        3 => grant(
            format!("queue grant for {small} bytes"),
            queue,
            small,
            Status(403),
        ),
        4 => grant(
            format!("chunk-64k grant for {large} bytes"),
            chunk,
            large,
            Status(403),
        ),
        5 => put(
            "exists",
            "the stored chunk's id".into(),
            &fx.stored_chunk,
            chunk,
            kept,
            Status(409),
        ),
        6 => grant(
            format!("grant {:.60?}", d.grant),
            other,
            kept,
            OneOf(&[401, 403]),
        ),
        _ => {
            let mut c = Case::new(
                "wrong method",
                d.method,
                method(d.method),
                &format!("/chunks/{fresh}"),
            )
            .header("authorization", format!("Bearer {}", fx.grant_chunk))
            .expect(Status(405));
            c.body = vec![0u8; 100];
            c
        }
    }
}

pub fn put_chunk(fx: &Arc<Fixture>) -> Endpoint {
    let mut once: Vec<SBoxedStrategy<Case>> = [1, 4096]
        .into_iter()
        .map(|over| {
            Just(
                Case::new(
                    "oversized body",
                    format!("{} bytes", RELAY_LIMIT + over),
                    Method::PUT,
                    &format!("/chunks/{}", b64_encode([1u8; 16])),
                )
                .header("authorization", format!("Bearer {}", fx.grant_chunk))
                .body(vec![0u8; RELAY_LIMIT + over])
                .expect(Expect::Status(413)),
            )
            .sboxed()
        })
        .collect();
    let raw = raw_cases(
        "PUT",
        &format!("/chunks/{}", b64_encode([2u8; 16])),
        RELAY_LIMIT,
        true,
    );
    // The chunked body over the limit is the first of them; the relay's limit is the
    // oversized cases above.
    once.extend(raw.into_iter().skip(1));
    let fx2 = fx.clone();
    let strategy = (
        (0..8u8, any::<[u8; 16]>(), 0..=64 * 1024usize),
        (64 * 1024 + 1..=256 * 1024usize, 0..100usize, any::<u64>()),
        (
            bad_chunk_id(),
            bad_grant(fx),
            pick(&["POST", "DELETE", "PATCH"]),
        ),
    )
        .prop_map(
            move |((variant, fresh, small), (large, tiny, seed), (id, grant, method))| {
                chunk_upload(
                    &fx2,
                    PutDraw {
                        variant,
                        fresh,
                        small,
                        large,
                        tiny,
                        seed,
                        id,
                        grant,
                        method,
                    },
                )
            },
        )
        .sboxed();
    Endpoint::new(
        Service::Relay,
        "PUT /chunks/{id}",
        fx.relay(),
        RELAY_LIMIT,
        once,
        strategy,
        RELAY_CASES,
    )
}

pub fn get_chunk(fx: &Arc<Fixture>) -> Endpoint {
    // Dot segments as sent, which a URL library would resolve before sending.
    let dots: Vec<SBoxedStrategy<Case>> = [
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
        Just(c).sboxed()
    })
    .collect();
    let stored = fx.stored_chunk.clone();
    let unknown = any::<[u8; 16]>()
        .prop_map(|b| {
            let id = b64_encode(b);
            Case::new(
                "unknown id",
                id.clone(),
                Method::GET,
                &format!("/chunks/{id}"),
            )
            .expect(Expect::Status(404))
        })
        .sboxed();
    let wrong_method = pick(&["POST", "DELETE", "PATCH"])
        .prop_map(move |m| {
            Case::new("wrong method", m, method(m), &format!("/chunks/{stored}"))
                .expect(Expect::Status(405))
        })
        .sboxed();
    let bad_id = bad_chunk_id()
        .prop_map(|id| {
            Case::new(
                "bad id",
                format!("{id:.60}"),
                Method::GET,
                &format!("/chunks/{id}"),
            )
        })
        .sboxed();
    Endpoint::new(
        Service::Relay,
        "GET /chunks/{id}",
        fx.relay(),
        RELAY_LIMIT,
        dots,
        cases(vec![(1, unknown), (1, wrong_method), (3, bad_id)]),
        RELAY_CASES,
    )
}
