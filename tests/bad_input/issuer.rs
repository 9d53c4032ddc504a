//! The issuer's endpoints: openings (unknown and mistyped cards, keys that do not match, too
//! many requests, not enough credits), balances and replays.

use crate::fixture::Fixture;
use crate::harness::{Case, Endpoint, Expect, Service};
use crate::json::{JsonTarget, generic_json, json_endpoint};
use crate::routes::raw_cases;
use crate::shared::{ascii, cases, pick, weighted};
use crate::{ISSUER_LIMIT, JSON_CASES};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::SBoxedStrategy;
use reqwest::Method;
use scrip_spec::api::issuer::MAX_OPEN_BATCH;
use scrip_spec::encoding::b64_encode;
use scrip_spec::{CardCode, Token, TokenKeyId};
use serde_json::{Value, json};
use std::sync::Arc;

const SYMBOLS: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// 27 symbols from the card alphabet and others, and what they are: never one of the
/// fixture's cards.
fn bad_card_code(fx: &Arc<Fixture>) -> SBoxedStrategy<(String, &'static str)> {
    let fresh = fx.card_fresh.clone();
    let (f1, f2, f3) = (fresh.clone(), fresh.clone(), fresh.clone());
    let fx = fx.clone();
    weighted(vec![
        (1, ascii(60).prop_map(|s| (s, "random text")).sboxed()),
        (
            1,
            (any::<Index>(), any::<Index>())
                .prop_map(move |(at, to)| {
                    let mut s: Vec<u8> = f1.bytes().collect();
                    let positions: Vec<usize> = (0..s.len()).filter(|&i| s[i] != b'-').collect();
                    let at = *at.get(&positions);
                    let old = s[at];
                    let others: Vec<u8> = SYMBOLS.iter().copied().filter(|&c| c != old).collect();
                    s[at] = *to.get(&others);
                    (
                        String::from_utf8(s).expect("ascii"),
                        "the fresh card with one symbol changed",
                    )
                })
                .sboxed(),
        ),
        (
            1,
            Just(())
                .prop_map(move |()| {
                    (
                        f2.replacen(|c: char| c.is_ascii_alphanumeric(), "U", 1),
                        "a U in the code",
                    )
                })
                .sboxed(),
        ),
        (
            1,
            any::<bool>()
                .prop_map(move |short| {
                    let mut s = f3.clone();
                    if short {
                        s.pop();
                    } else {
                        s.push('7');
                    }
                    (s, "the fresh card one symbol short or long")
                })
                .sboxed(),
        ),
        (
            2,
            proptest::collection::vec(pick(SYMBOLS), 27)
                .prop_map(|s| {
                    (
                        s.into_iter().map(char::from).collect::<String>(),
                        "an unknown card",
                    )
                })
                .prop_filter("a valid card code", |(s, _)| CardCode::parse(s).is_ok())
                .sboxed(),
        ),
        (
            1,
            pick(&[
                "é".repeat(27),
                "\u{0}".repeat(27),
                "ＡＢＣＤ".repeat(7),
                "\u{202e}".into(),
            ])
            .prop_map(|s| (s, "non-ASCII or control characters"))
            .sboxed(),
        ),
        (
            1,
            pick(&[10_000usize, 100_000])
                .prop_map(|n| ("A".repeat(n), "a huge code"))
                .sboxed(),
        ),
    ])
    .prop_filter("one of the fixture's cards", move |(code, _)| {
        !fx.known_card(code)
    })
    .sboxed()
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

fn queue_requests(queue: &TokenKeyId, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| token_request(queue, queue.truncated(), false))
        .collect()
}

/// A well-formed card code that is none of the fixture's.
fn unknown_card(fx: &Fixture) -> String {
    (0..)
        .map(|i: usize| {
            (0..27)
                .map(|j| char::from(SYMBOLS[(i * 7 + j * 13) % SYMBOLS.len()]))
                .collect::<String>()
        })
        .find(|s| CardCode::parse(s).is_ok() && !fx.known_card(s))
        .expect("a card code")
}

const OPEN_VARIANTS: usize = 11;

fn open_semantic(
    fx: &Fixture,
    variant: usize,
    id: [u8; 32],
    key: [u8; 32],
    n: usize,
    card: (String, &'static str),
) -> Case {
    let path = "/v1/cards/open";
    let queue = fx.queue_key.public_key.id();
    let ok = |n: usize| queue_requests(&queue, n);
    let fresh = &fx.card_fresh;
    let (detail, body, expect): (String, String, Expect) = match variant {
        0 => {
            let k = TokenKeyId(key);
            (
                "unknown key".into(),
                open_body(fresh, id, vec![token_request(&k, k.truncated(), false)]),
                Expect::Status(422),
            )
        }
        1 => (
            "truncated key id does not match".into(),
            open_body(
                fresh,
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
                fresh,
                id,
                vec![token_request(&queue, queue.truncated(), true)],
            ),
            Expect::Status(422),
        ),
        3 => (
            "no requests".into(),
            open_body(fresh, id, vec![]),
            Expect::Status(400),
        ),
        4 => {
            let n = MAX_OPEN_BATCH + 1 + n % 50;
            (
                format!("{n} requests"),
                open_body(fresh, id, ok(n)),
                Expect::Status(413),
            )
        }
        5 => {
            let n = 11 + n % 10;
            (
                format!("{n} queue tokens for 100 credits"),
                open_body(fresh, id, ok(n)),
                Expect::Status(422),
            )
        }
        6 => {
            let (code, what) = card;
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
            let k = 1 + n % 8;
            let mut r = ok(k);
            r.push(token_request(&queue, queue.truncated(), true));
            (
                format!("{k} good requests then one out of range"),
                open_body(fresh, id, r),
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
                open_body(fresh, id, vec![token_request(&chunk, truncated, false)]),
                Expect::Status(422),
            )
        }
    };
    Case::refused("opening", path, detail, body, expect)
}

pub fn open(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/cards/open";
    let queue = fx.queue_key.public_key.id();
    // A real opening of the fresh card (10 credits): never sent as is.
    let target = JsonTarget {
        path,
        limit: ISSUER_LIMIT,
        valid: open_body(&fx.card_fresh, [4; 32], queue_requests(&queue, 1)),
        refused: open_body(
            &fx.card_fresh,
            [5; 32],
            vec![token_request(
                &queue,
                queue.truncated().wrapping_add(1),
                false,
            )],
        ),
    };
    let variant = |v: usize| {
        let fx2 = fx.clone();
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            0..1000usize,
            bad_card_code(fx),
        )
            .prop_map(move |(id, key, n, card)| open_semantic(&fx2, v, id, key, n, card))
            .sboxed()
    };
    // An unknown key id makes the issuer reload its keys (at most once a second,
    // issuer/src/service/keys.rs `key`): few of those, to keep the run short.
    let semantic = (0..OPEN_VARIANTS)
        .map(|v| {
            let weight = match v {
                0 => 1,
                1 => 7,
                _ => 4,
            };
            (weight, variant(v))
        })
        .collect();
    let mut ep = json_endpoint(Service::Issuer, fx.issuer(), Vec::new(), semantic, target);
    ep.rotate_source = true;
    ep
}

pub fn balance(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/cards/balance";
    let body = |code: &str| json!({"card_code": code}).to_string();
    let target = JsonTarget {
        path,
        limit: ISSUER_LIMIT,
        valid: body(&fx.card_fresh),
        refused: body(&unknown_card(fx)),
    };
    let minted = Just(
        Case::new("card", "a minted card never activated", Method::POST, path)
            .json_body(body(&fx.card_minted))
            .expect(Expect::Status(403)),
    )
    .sboxed();
    let bad = bad_card_code(fx)
        .prop_map(move |(code, what)| {
            let expect = if what == "an unknown card" {
                Expect::Status(403)
            } else {
                Expect::OneOf(&[400, 413])
            };
            Case::new("card", format!("{what}: {code:.40?}"), Method::POST, path)
                .json_body(body(&code))
                .expect(expect)
        })
        .sboxed();
    let once = raw_cases("POST", path, ISSUER_LIMIT, true);
    let semantic = vec![(1, minted), (9, bad)];
    let mut ep = json_endpoint(Service::Issuer, fx.issuer(), once, semantic, target);
    ep.rotate_source = true;
    ep
}

pub fn replay(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/requests/replay";
    let body = |id: [u8; 32]| json!({"request_id": b64_encode(id)}).to_string();
    let target = JsonTarget {
        path,
        limit: ISSUER_LIMIT,
        valid: body([6; 32]),
        refused: body([7; 32]),
    };
    let unknown = any::<[u8; 32]>()
        .prop_map(move |id| {
            Case::new("request id", "an unknown request id", Method::POST, path)
                .json_body(body(id))
                .expect(Expect::Status(404))
        })
        .sboxed();
    Endpoint::new(
        Service::Issuer,
        "POST /v1/requests/replay",
        fx.issuer(),
        ISSUER_LIMIT,
        Vec::new(),
        cases(vec![(2, unknown), (8, generic_json(target))]),
        JSON_CASES,
    )
}

fn refresh_body(request_id: [u8; 32], tokens: &[&Token], requests: Vec<Value>) -> String {
    // Field order as declared, for the positional cases.
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|t| Value::String(b64_encode(t.to_bytes())))
        .collect();
    format!(
        "{{\"request_id\":{},\"tokens\":{},\"requests\":{}}}",
        Value::String(b64_encode(request_id)),
        Value::Array(tokens),
        Value::Array(requests)
    )
}

/// `POST /v1/refresh` (PROTOCOL.md 9.8): every case is refused before the ledger is asked,
/// so none may move its head.
pub fn refresh(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/refresh";
    let (queue, chunk) = (fx.queue_key.public_key.id(), fx.chunk_key.public_key.id());
    // Well formed, refused on its merits: one chunk-64k token for a queue token is worth
    // more than it brings, so even sent as is it changes nothing.
    let target = JsonTarget {
        path,
        limit: ISSUER_LIMIT,
        valid: refresh_body([8; 32], &[&fx.chunk_pool[0]], queue_requests(&queue, 1)),
        refused: refresh_body(
            [9; 32],
            &[&fx.wrong_challenge[0]],
            queue_requests(&queue, 1),
        ),
    };
    let fx2 = fx.clone();
    let semantic = (any::<[u8; 32]>(), 0..4usize, any::<Index>(), 0..256usize)
        .prop_map(move |(id, v, pick_token, bit)| {
            let fx = &fx2;
            let (detail, tokens, requests): (&str, Vec<Token>, Vec<Value>) = match v {
                0 => (
                    "a token made for another issuer's challenge",
                    vec![pick_token.get(&fx.wrong_challenge).clone()],
                    queue_requests(&queue, 1),
                ),
                1 => (
                    "a token of a key the ledger was never told about",
                    vec![pick_token.get(&fx.unannounced_tokens).clone()],
                    queue_requests(&queue, 1),
                ),
                2 => {
                    let mut forged = pick_token.get(&fx.queue_pool).clone();
                    forged.authenticator[bit] ^= 1;
                    (
                        "a token with one bit of its signature flipped",
                        vec![forged],
                        queue_requests(&queue, 1),
                    )
                }
                _ => (
                    "outputs worth more than the inputs",
                    vec![pick_token.get(&fx.chunk_pool).clone()],
                    queue_requests(&queue, 1)
                        .into_iter()
                        .chain(queue_requests(&chunk, 1))
                        .collect(),
                ),
            };
            let tokens: Vec<&Token> = tokens.iter().collect();
            Case::refused(
                "refresh",
                path,
                detail,
                refresh_body(id, &tokens, requests),
                Expect::Status(422),
            )
        })
        .sboxed();
    let once = raw_cases("POST", path, ISSUER_LIMIT, true);
    let mut ep = json_endpoint(
        Service::Issuer,
        fx.issuer(),
        once,
        vec![(1, semantic)],
        target,
    );
    ep.rotate_source = true;
    ep
}

/// `POST /v1/token-request` (RFC 9578): bodies that are not one `TokenRequest`, other media
/// types, no card or a bad one. None may be signed or charged.
pub fn standard_request(fx: &Arc<Fixture>) -> Endpoint {
    use scrip_spec::api::issuer::standard::{CARD_CODE_HEADER, REQUEST_MEDIA_TYPE, REQUEST_PATH};
    let request =
        |family: &'static str, detail: String, card: Option<&str>, media: &str, body: Vec<u8>| {
            let mut c = Case::new(family, detail, Method::POST, REQUEST_PATH)
                .header("content-type", media.as_bytes().to_vec())
                .body(body);
            if let Some(card) = card {
                c = c.header(CARD_CODE_HEADER, card.as_bytes().to_vec());
            }
            c
        };
    let fresh = fx.card_fresh.clone();
    let f1 = fresh.clone();
    let garbage = crate::shared::bytes(600)
        .prop_map(move |b| {
            request(
                "not a request",
                format!("{} bytes", b.len()),
                Some(&f1),
                REQUEST_MEDIA_TYPE,
                b,
            )
            .expect(Expect::OneOf(&[400, 422]))
        })
        .sboxed();
    let f2 = fresh.clone();
    let media = pick(&[
        "application/json",
        "text/plain",
        "application/private-token-response",
        "",
    ])
    .prop_map(move |m| {
        request("media type", m.to_owned(), Some(&f2), m, vec![0; 259])
            .expect(Expect::OneOf(&[400, 415]))
    })
    .sboxed();
    // A request the issuer could sign (a known key's truncated id, a message below the
    // modulus), paid with cards that cannot pay.
    let mut signable = vec![0u8, 2, fx.token_queue.token_key_id.0[31]];
    signable.extend_from_slice(&[1u8; 256]);
    let s1 = signable.clone();
    let cards = bad_card_code(fx)
        // A header carries only visible ASCII, spaces and tabs (the client refuses the rest).
        .prop_filter("a header value", |(code, _)| {
            code.bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        })
        .prop_map(move |(code, what)| {
            request(
                "card",
                format!("{what}: {code:.40?}"),
                Some(&code),
                REQUEST_MEDIA_TYPE,
                s1.clone(),
            )
        })
        .sboxed();
    let no_card = vec![
        Just(
            request(
                "no card",
                "no header".into(),
                None,
                REQUEST_MEDIA_TYPE,
                signable.clone(),
            )
            .expect(Expect::Status(400)),
        )
        .sboxed(),
        Just(request(
            "card",
            "a minted card never activated".into(),
            Some(&fx.card_minted),
            REQUEST_MEDIA_TYPE,
            signable,
        ))
        .sboxed(),
    ];
    let mut ep = Endpoint::new(
        Service::Issuer,
        "POST /v1/token-request",
        fx.issuer(),
        ISSUER_LIMIT,
        no_card,
        cases(vec![(3, garbage), (1, media), (3, cards)]),
        crate::INPUT_GET_CASES,
    );
    ep.rotate_source = true;
    ep
}
