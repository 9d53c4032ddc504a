//! The redeemer sidecar's endpoints: tokens forged, cut, of another kind or type; grants
//! unknown, malformed or for another kind.

use crate::REDEEMER_LIMIT;
use crate::fixture::Fixture;
use crate::harness::{Case, Endpoint, Expect, Service};
use crate::json::{JsonTarget, json_endpoint};
use crate::routes::raw_cases;
use crate::shared::{ascii, bytes, pick, weighted};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::SBoxedStrategy;
use reqwest::Method;
use scrip_spec::encoding::b64_encode;
use serde_json::Value;
use std::sync::Arc;

pub fn redeem_body(token: &[u8], kind: &str) -> String {
    format!(
        "{{\"token\":{},\"kind\":{}}}",
        Value::String(b64_encode(token)),
        Value::String(kind.to_owned())
    )
}

const REDEEM_VARIANTS: u8 = 7;

/// What a redemption case takes: a variant and its choices.
#[derive(Debug, Clone)]
struct RedeemDraw {
    variant: u8,
    choice: Index,
    byte: Index,
    key_id_ok: bool,
    bit: u8,
    noise: Vec<u8>,
    known_key: bool,
}

fn redeem_semantic(fx: &Fixture, d: RedeemDraw) -> Case {
    let path = "/v1/redeem";
    let token = fx.token_queue.to_bytes();
    let (detail, body, expect): (String, String, Expect) = match d.variant {
        0 => {
            let k = *d.choice.get(&["chunk-64k", "chunk-1m", "nope"]);
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
            let mut at = d.byte.index(t.len());
            if (66..98).contains(&at) && !d.key_id_ok {
                at = d.choice.index(t.len() - 32);
                if at >= 66 {
                    at += 32;
                }
            }
            t[at] ^= 1 << d.bit;
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
            let n = *d
                .choice
                .get(&[0, 1, token.len() - 1, token.len() + 1, token.len() * 2]);
            let mut t = token.clone();
            t.resize(n, 0);
            (
                format!("token of {n} bytes"),
                redeem_body(&t, "queue"),
                Expect::Status(400),
            )
        }
        4 => {
            let mut t = d.noise.clone();
            t.resize(token.len(), 0);
            t[0] = 0;
            t[1] = 2;
            if d.known_key {
                t[66..98].copy_from_slice(&token[66..98]);
            }
            (
                format!(
                    "random token of the right type and length (known key: {})",
                    d.known_key
                ),
                redeem_body(&t, "queue"),
                Expect::Status(422),
            )
        }
        5 => {
            let k = d
                .choice
                .get(&[
                    "Queue".to_owned(),
                    String::new(),
                    "a b".into(),
                    "-x".into(),
                    "q".repeat(100),
                    "é".into(),
                ])
                .clone();
            (
                format!("kind {k:.20?}"),
                redeem_body(&token, &k),
                Expect::Status(400),
            )
        }
        _ => {
            let mut t = token.clone();
            t[1] = *d.choice.get(&[0, 1, 3, 0xff]);
            (
                "another token type".into(),
                redeem_body(&t, "queue"),
                Expect::Status(400),
            )
        }
    };
    Case::refused("token", path, detail, body, expect)
}

pub fn redeem(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/redeem";
    let token = fx.token_queue.to_bytes();
    let len = token.len();
    // The kept queue token, for a queue: a real redemption, never sent as is.
    let target = JsonTarget {
        path,
        limit: REDEEMER_LIMIT,
        valid: redeem_body(&token, "queue"),
        refused: redeem_body(&token, "chunk-64k"),
    };
    let semantic = (0..REDEEM_VARIANTS)
        .map(|variant| {
            let fx = fx.clone();
            let strategy = (
                any::<Index>(),
                any::<Index>(),
                proptest::bool::weighted(0.2),
                0..8u8,
                proptest::collection::vec(any::<u8>(), len),
                proptest::bool::weighted(0.8),
            )
                .prop_map(move |(choice, byte, key_id_ok, bit, noise, known_key)| {
                    let d = RedeemDraw {
                        variant,
                        choice,
                        byte,
                        key_id_ok,
                        bit,
                        noise,
                        known_key,
                    };
                    redeem_semantic(&fx, d)
                });
            (1, strategy.sboxed())
        })
        .collect();
    let once = raw_cases("POST", path, REDEEMER_LIMIT, true);
    json_endpoint(Service::Redeemer, fx.redeemer(), once, semantic, target)
}

pub fn consume_body(grant: &str, kind: &str) -> String {
    format!(
        "{{\"grant\":{},\"kind\":{}}}",
        Value::String(grant.to_owned()),
        Value::String(kind.to_owned())
    )
}

/// A grant code that is not one of the fixture's.
pub fn bad_grant(fx: &Arc<Fixture>) -> SBoxedStrategy<String> {
    let grant = fx.grant_queue.clone();
    let secret = grant.rsplit('.').next().expect("secret").to_owned();
    let (g0, g3, g7) = (grant.clone(), grant.clone(), grant.clone());
    let (s1, s5) = (secret.clone(), secret.clone());
    let fx = fx.clone();
    weighted(vec![
        (
            1,
            // One symbol of the secret changed, but the last (whose unused bits would make the
            // answer depend on the real grant): another, unknown grant.
            (1..22usize, any::<Index>())
                .prop_map(move |(back, to)| {
                    let mut s: Vec<u8> = g0.bytes().collect();
                    let at = s.len() - 1 - back;
                    let old = s[at];
                    let others: Vec<u8> = b"ABCDEFabcdef012345-_"
                        .iter()
                        .copied()
                        .filter(|&c| c != old)
                        .collect();
                    s[at] = *to.get(&others);
                    String::from_utf8(s).expect("ascii")
                })
                .sboxed(),
        ),
        (1, Just(format!("sg1.chunk-64k.{s1}")).sboxed()),
        (
            1,
            // The last symbol with its unused low bits set: not canonical base64url.
            Just(format!("{}B", &g7[..g7.len() - 1])).sboxed(),
        ),
        (
            1,
            pick(&[
                "",
                "sg1",
                "sg1..",
                "sg2.queue.AAAAAAAAAAAAAAAAAAAAAA",
                "sg1.queue.AAAA",
                "SG1.queue.AAAAAAAAAAAAAAAAAAAAAA",
            ])
            .prop_map(str::to_owned)
            .sboxed(),
        ),
        (1, Just(format!("{g3}.x")).sboxed()),
        (
            1,
            (23..200usize)
                .prop_map(|n| format!("sg1.queue.{}", "A".repeat(n)))
                .sboxed(),
        ),
        (
            1,
            pick(&["Queue", "q u", "-q", "é"])
                .prop_map(move |k| format!("sg1.{k}.{s5}"))
                .sboxed(),
        ),
        (1, ascii(80).sboxed()),
    ])
    .prop_filter("one of the fixture's grants", move |g| {
        *g != fx.grant_queue && *g != fx.grant_chunk
    })
    .sboxed()
}

pub fn consume(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/grants/consume";
    // Consuming the kept queue grant: never sent as is.
    let target = JsonTarget {
        path,
        limit: REDEEMER_LIMIT,
        valid: consume_body(&fx.grant_queue, "queue"),
        refused: consume_body(&fx.grant_queue, "chunk-64k"),
    };
    let grant = |detail: String, body: String, expect: Expect| {
        Case::refused("grant", path, detail, body, expect)
    };
    let (q0, q3) = (fx.grant_queue.clone(), fx.grant_queue.clone());
    let chunk = fx.grant_chunk.clone();
    let variants: Vec<SBoxedStrategy<Case>> = vec![
        pick(&["chunk-64k", "chunk-4m", "nope"])
            .prop_map(move |k| {
                grant(
                    format!("queue grant for {k}"),
                    consume_body(&q0, k),
                    Expect::Status(422),
                )
            })
            .sboxed(),
        Just(grant(
            "chunk grant for a queue".into(),
            consume_body(&chunk, "queue"),
            Expect::Status(422),
        ))
        .sboxed(),
        bad_grant(fx)
            .prop_map(move |g| {
                grant(
                    format!("grant {g:.60?}"),
                    consume_body(&g, "queue"),
                    Expect::OneOf(&[400, 404]),
                )
            })
            .sboxed(),
        pick(&[
            "Queue".to_owned(),
            String::new(),
            "a b".into(),
            "q".repeat(100),
        ])
        .prop_map(move |k| {
            grant(
                format!("kind {k:.20?}"),
                consume_body(&q3, &k),
                Expect::Status(400),
            )
        })
        .sboxed(),
    ];
    let semantic = variants.into_iter().map(|s| (1, s)).collect();
    json_endpoint(
        Service::Redeemer,
        fx.redeemer(),
        Vec::new(),
        semantic,
        target,
    )
}

/// `GET /v1/redeem/{kind}` (RFC 9577): `Authorization` values that are not a spendable token
/// (garbage, cut, oversized, another scheme, forged), and kinds no key is for.
pub fn redeem_by_header(fx: &Arc<Fixture>) -> Endpoint {
    use base64::Engine as _;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    let path = "/v1/redeem/queue";
    let with = |family: &'static str, value: String, expect: Expect| {
        Case::new(family, format!("{value:.60}"), Method::GET, path)
            .header("authorization", value.into_bytes())
            .expect(expect)
    };
    let garbage = (bytes(600), any::<bool>(), any::<bool>())
        .prop_map(move |(b, padded, quoted)| {
            let v = if padded {
                URL_SAFE.encode(&b)
            } else {
                URL_SAFE_NO_PAD.encode(&b)
            };
            let v = if quoted { format!("\"{v}\"") } else { v };
            with(
                "not a token",
                format!("PrivateToken token={v}"),
                Expect::Status(400),
            )
        })
        .sboxed();
    let text = ascii(200)
        .prop_map(move |t| with("any text", t, Expect::OneOf(&[400, 401])))
        .sboxed();
    let schemes = pick(&["Bearer", "Basic", "privatetoken", "PrivateToken", "Token"])
        .prop_flat_map(move |scheme| {
            ascii(80).prop_map(move |rest| {
                with(
                    "schemes",
                    format!("{scheme} {rest}"),
                    Expect::OneOf(&[400, 401]),
                )
            })
        })
        .sboxed();
    let token = fx.token_queue.to_bytes();
    // A bit flipped past the key id: the key is known, the signature or nonce is not.
    let forged = (98..token.len(), 0..8u8)
        .prop_map(move |(at, bit)| {
            let mut t = token.clone();
            t[at] ^= 1 << bit;
            let v = URL_SAFE.encode(&t);
            with(
                "forged",
                format!("PrivateToken token=\"{v}\""),
                Expect::Status(401),
            )
        })
        .sboxed();
    let kinds = pick(&[
        "nope",
        "chunk-99k",
        "NOPE",
        "q!",
        "a-very-long-kind-name-past-24",
    ])
    .prop_map(|k| {
        Case::new("kinds", k, Method::GET, &format!("/v1/redeem/{k}"))
            .expect(Expect::OneOf(&[400, 404]))
    })
    .sboxed();
    let oversized = vec![
        Just(with(
            "oversized",
            format!("PrivateToken token=\"{}\"", "A".repeat(20_000)),
            Expect::Status(400),
        ))
        .sboxed(),
        Just(with(
            "no value",
            "PrivateToken token=".into(),
            Expect::Status(400),
        ))
        .sboxed(),
    ];
    Endpoint::new(
        Service::Redeemer,
        "GET /v1/redeem/{kind}",
        fx.redeemer(),
        REDEEMER_LIMIT,
        oversized,
        crate::shared::cases(vec![
            (3, garbage),
            (2, text),
            (2, schemes),
            (2, forged),
            (1, kinds),
        ]),
        crate::INPUT_GET_CASES,
    )
}
