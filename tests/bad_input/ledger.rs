//! The ledger's endpoints: signed requests and cosignatures (forged, replayed, for another
//! ledger, breaking a rule), nullifier lookups, and the key and log queries.

use crate::fixture::Fixture;
use crate::harness::{Case, Endpoint, Expect, Service};
use crate::json::{JsonTarget, json_endpoint};
use crate::routes::raw_cases;
use crate::shared::{ascii, b64, chance, method, pct, pick, weighted};
use crate::{INPUT_GET_CASES, LEDGER_LIMIT};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::SBoxedStrategy;
use reqwest::Method;
use scrip_spec::encoding::b64_decode;
use scrip_spec::ledger::{
    Action, Checkpoint, Cosignature, Hash32, LedgerRequest, MAX_SPEND_BATCH, OperatorInfo, Role,
    SpendGroup,
};
use scrip_spec::now;
use scrip_spec::{Catalog, OperatorKey, Signed, TokenKeyId};
use serde_json::Value;
use std::sync::Arc;

/// The randomness one signed request takes: its nonce, its nullifiers' seed, another 32-byte
/// value, an offset, and a few choices.
#[derive(Debug, Clone)]
struct Draw {
    nonce: [u8; 16],
    seed: u64,
    other: [u8; 32],
    offset: u64,
    choice: Index,
    byte: Index,
    bit: u8,
}

fn draw() -> impl Strategy<Value = Draw> {
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        0..1_000_000u64,
        any::<Index>(),
        any::<Index>(),
        0..8u8,
    )
        .prop_map(|(nonce, seed, other, offset, choice, byte, bit)| Draw {
            nonce,
            seed,
            other,
            offset,
            choice,
            byte,
            bit,
        })
}

pub fn submit(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/entries";
    let t = now();
    let valid = fx.signed(
        &fx.op_a,
        fx.request([1; 16], fx.ledger_id, t, fx.spend(1, 1)),
    );
    let refused = fx.signed(
        &fx.op_a,
        fx.request([2; 16], Hash32([2; 32]), t, fx.spend(2, 1)),
    );
    let target = JsonTarget {
        path,
        limit: LEDGER_LIMIT,
        valid,
        refused,
    };
    let mut once = raw_cases("POST", path, LEDGER_LIMIT, true);
    // The replay of the request the setup submitted, exactly and reformatted.
    once.push(
        Just(
            Case::new("replay", "the admitted request again", Method::POST, path)
                .json_body(fx.admitted.clone())
                .expect(Expect::Status(409)),
        )
        .sboxed(),
    );
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&fx.admitted).expect("json"))
            .expect("json");
    once.push(
        Just(
            Case::new(
                "replay",
                "the admitted request, reformatted",
                Method::POST,
                path,
            )
            .json_body(pretty)
            .expect(Expect::Status(409)),
        )
        .sboxed(),
    );
    let semantic = (0..SUBMIT_VARIANTS)
        .map(|v| {
            let fx = fx.clone();
            (
                1,
                draw()
                    .prop_map(move |d| submit_semantic(&fx, v, &d))
                    .sboxed(),
            )
        })
        .collect();
    json_endpoint(Service::Ledger, fx.ledger(), once, semantic, target)
}

const SUBMIT_VARIANTS: usize = 28;

fn submit_semantic(fx: &Fixture, variant: usize, d: &Draw) -> Case {
    let t = now();
    let id = fx.ledger_id;
    let queue_id = fx.queue_key.public_key.id();
    let (a, b) = (&fx.op_a, &fx.op_b);
    // A spend of one fresh nullifier, for the ledger `to`, timestamped `at`.
    let spend = |to: Hash32, at: u64| fx.request(d.nonce, to, at, fx.spend(d.seed, 1));
    let json = |s: &Signed<LedgerRequest>| serde_json::to_string(s).expect("json");
    // `action`, signed by `by`.
    let by = |by: &OperatorKey, action: Action| fx.signed(by, fx.request(d.nonce, id, t, action));
    let (detail, body, status): (&str, String, u16) = match variant {
        0 => (
            "signed for another ledger",
            fx.signed(a, spend(Hash32(d.other), t)),
            403,
        ),
        1 => (
            "timestamp in the past",
            fx.signed(a, spend(id, t - 301 - d.offset)),
            401,
        ),
        2 => (
            "timestamp in the future",
            fx.signed(a, spend(id, t + 301 + d.offset)),
            401,
        ),
        3 => (
            "timestamp 0 or u64::MAX",
            fx.signed(a, spend(id, *d.choice.get(&[0, u64::MAX]))),
            401,
        ),
        4 => (
            "spend without groups",
            fx.signed(
                a,
                fx.request(d.nonce, id, t, Action::Spend { groups: vec![] }),
            ),
            422,
        ),
        5 => {
            let action = Action::Spend {
                groups: vec![SpendGroup {
                    token_key_id: queue_id,
                    nullifiers: vec![],
                }],
            };
            ("spend group without nullifiers", by(a, action), 422)
        }
        6 => {
            let n = MAX_SPEND_BATCH + 1 + (d.offset % 100) as usize;
            let parts = d.choice.index(3) + 1;
            let groups = (0..parts)
                .map(|i| SpendGroup {
                    token_key_id: if i == 0 {
                        queue_id
                    } else {
                        fx.chunk_key.public_key.id()
                    },
                    nullifiers: fx.fresh_nullifiers(d.seed.wrapping_add(i as u64), n / parts + 1),
                })
                .collect();
            (
                "spend over MAX_SPEND_BATCH",
                by(a, Action::Spend { groups }),
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
                by(b, action),
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
            ("op-a admits op-b again", by(a, action), 422)
        }
        9 => {
            let (name, roles) = d
                .choice
                .get(&[
                    (String::new(), vec![Role::Redeemer]),
                    ("a b".to_owned(), vec![Role::Redeemer]),
                    ("x".repeat(256), vec![Role::Redeemer]),
                    ("op-new".to_owned(), vec![]),
                ])
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
                by(a, action),
                422,
            )
        }
        10 => {
            let action = Action::SetCatalog {
                catalog: Catalog::standard(),
            };
            ("op-b (no admin role) sets the catalog", by(b, action), 403)
        }
        11 => {
            let action = Action::SetCatalog {
                catalog: {
                    let mut c = Catalog::standard();
                    c.entries.clear();
                    c
                },
            };
            ("op-a sets an empty catalog", by(a, action), 422)
        }
        12 => {
            let mut key = fx.queue_key.clone();
            key.issuer = "op-b".into();
            (
                "op-a announces a key in op-b's name",
                by(a, Action::AnnounceKey { key }),
                403,
            )
        }
        13 => {
            let key = fx.queue_key.clone();
            (
                "op-b announces op-a's key",
                by(b, Action::AnnounceKey { key }),
                403,
            )
        }
        14 => {
            let key = fx.queue_key.clone();
            (
                "op-a announces its key again",
                by(a, Action::AnnounceKey { key }),
                422,
            )
        }
        15 => {
            let action = Action::RevokeKey {
                token_key_id: queue_id,
                reason: "mine now".into(),
            };
            ("op-b revokes op-a's key", by(b, action), 403)
        }
        16 => {
            let action = Action::RevokeKey {
                token_key_id: TokenKeyId(d.other),
                reason: String::new(),
            };
            ("op-a revokes an unknown key", by(a, action), 422)
        }
        17 => {
            let (count, credits) =
                *d.choice
                    .get(&[(0, 10), (10, 0), ((1 << 40) + 1, 1), (1, (1 << 40) + 1)]);
            let action = Action::CardsSold {
                batch: "b".into(),
                count,
                credits,
            };
            ("cards sold with a zero or huge count", by(a, action), 422)
        }
        18 => {
            let action = Action::TokensIssued {
                token_key_id: queue_id,
                count: 1,
                from: t - 10,
                until: t,
            };
            ("op-b reports issuance of op-a's key", by(b, action), 403)
        }
        19 => {
            let (token_key_id, count, from, until) = *d.choice.get(&[
                (queue_id, 1, t, t - 10),
                (queue_id, 0, t - 10, t),
                (TokenKeyId([9; 32]), 1, t - 10, t),
            ]);
            let action = Action::TokensIssued {
                token_key_id,
                count,
                from,
                until,
            };
            (
                "issuance report with from > until, count 0 or an unknown key",
                by(a, action),
                422,
            )
        }
        20 | 21 => {
            let (detail, key) = if variant == 20 {
                ("signed by a stranger", &OperatorKey::generate())
            } else {
                ("signed by the ledger's own key", &fx.ledger_key)
            };
            (detail, fx.signed(key, spend(id, t)), 401)
        }
        22 | 23 => {
            let (by, named, detail) = if variant == 22 {
                (a, b, "op-a's signature under op-b's name")
            } else {
                (b, a, "op-b's signature under op-a's name")
            };
            let mut s = by.sign(spend(id, t));
            s.signer = named.id();
            (detail, json(&s), 401)
        }
        24 => {
            let mut s = a.sign(spend(id, t));
            match d.bit % 3 {
                0 => s.payload.timestamp += 1,
                1 => s.payload.nonce[d.byte.index(16)] ^= 1,
                _ => {
                    if let Action::Spend { groups } = &mut s.payload.action {
                        groups[0].nullifiers[0].0[d.byte.index(32)] ^= 0x80;
                    }
                }
            }
            ("changed after signing", json(&s), 401)
        }
        25 => {
            let mut s = a.sign(spend(id, t));
            s.signature[d.byte.index(64)] ^= 1 << d.bit;
            ("signature bit flipped", json(&s), 401)
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
    Case::refused(
        "signed request",
        "/v1/entries",
        detail,
        body,
        Expect::Status(status),
    )
}

/// The latest checkpoint changed in one field (`how`), with `h` for the hashes.
fn changed(checkpoint: &Checkpoint, how: u8, h: [u8; 32]) -> Checkpoint {
    let mut c = checkpoint.clone();
    match how % 6 {
        0 => c.seq += 1,
        1 => c.seq -= 1,
        2 => c.head_hash = Hash32(h),
        3 => c.totals_digest = Hash32(h),
        4 => c.created_at += 1,
        _ => c.ledger_id = Hash32(h),
    }
    c
}

fn cosignature(key: &OperatorKey, checkpoint: Checkpoint) -> String {
    serde_json::to_string(&key.sign(Cosignature { checkpoint })).expect("json")
}

const COSIGN_VARIANTS: u8 = 6;

fn cosign_semantic(fx: &Fixture, variant: u8, by_a: bool, how: u8, h: [u8; 32], at: Index) -> Case {
    let path = "/v1/checkpoint/cosign";
    let (detail, body, status): (&str, String, u16) = match variant {
        0 => {
            let key = if by_a { &fx.op_a } else { &fx.op_b };
            (
                "cosignature of another checkpoint",
                cosignature(key, changed(&fx.checkpoint, how, h)),
                422,
            )
        }
        1 => (
            "stranger's cosignature",
            cosignature(&OperatorKey::generate(), fx.checkpoint.clone()),
            401,
        ),
        2 => (
            "the ledger key's cosignature",
            cosignature(&fx.ledger_key, fx.checkpoint.clone()),
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
            s.payload.checkpoint = changed(&fx.checkpoint, how, h);
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
            s.signature[at.index(64)] ^= 1;
            (
                "signature bit flipped",
                serde_json::to_string(&s).expect("json"),
                401,
            )
        }
    };
    Case::refused(
        "signed cosignature",
        path,
        detail,
        body,
        Expect::Status(status),
    )
}

pub fn cosign(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/checkpoint/cosign";
    // op-b's cosignature of the latest checkpoint is valid and new: never sent as is.
    let target = JsonTarget {
        path,
        limit: LEDGER_LIMIT,
        valid: cosignature(&fx.op_b, fx.checkpoint.clone()),
        refused: cosignature(&fx.op_b, changed(&fx.checkpoint, 2, [3; 32])),
    };
    let semantic = (0..COSIGN_VARIANTS)
        .map(|v| {
            let fx = fx.clone();
            let strategy = (any::<bool>(), 0..6u8, any::<[u8; 32]>(), any::<Index>())
                .prop_map(move |(by_a, how, h, at)| cosign_semantic(&fx, v, by_a, how, h, at));
            (1, strategy.sboxed())
        })
        .collect();
    let once = raw_cases("POST", path, LEDGER_LIMIT, true);
    json_endpoint(Service::Ledger, fx.ledger(), once, semantic, target)
}

/// A path segment that is not `bytes` bytes in unpadded base64url.
pub fn bad_segment(bytes: usize) -> SBoxedStrategy<String> {
    let n = bytes;
    weighted(vec![
        (1, ascii(60).prop_map(String::into_bytes).sboxed()),
        (
            1,
            pick(&[0, 1, 16, n - 1, n + 1, 2 * n])
                .prop_flat_map(b64)
                .prop_map(String::into_bytes)
                .sboxed(),
        ),
        (
            1,
            b64(n).prop_map(|s| format!("{s}=").into_bytes()).sboxed(),
        ),
        (
            1,
            (b64(n), any::<Index>(), pick(&b"!*+/.=~ "[..]))
                .prop_map(|(s, at, c)| {
                    let mut s = s.into_bytes();
                    let i = at.index(s.len());
                    s[i] = c;
                    s
                })
                .sboxed(),
        ),
        (
            1,
            // Non-canonical: the unused low bits of the last symbol set.
            (b64(n), pick(&b"BCDFHJ"[..]))
                .prop_map(|(s, c)| {
                    let mut s = s.into_bytes();
                    let last = s.len() - 1;
                    s[last] = c;
                    s
                })
                .sboxed(),
        ),
        (1, Just(vec![0xff, 0xfe, b'a']).sboxed()),
        (
            1,
            (1..30usize)
                .prop_map(|k| "é".repeat(k).into_bytes())
                .sboxed(),
        ),
        (
            1,
            pick(&[4096usize, 20_000])
                .prop_map(|k| "A".repeat(k).into_bytes())
                .sboxed(),
        ),
        (1, proptest::collection::vec(any::<u8>(), 1..40).sboxed()),
    ])
    .prop_filter("a valid segment", move |raw| {
        let dots = raw.is_empty() || raw.iter().all(|&b| b == b'.');
        let valid = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| b64_decode(s).ok())
            .is_some_and(|b| b.len() == n);
        !(dots || valid)
    })
    .prop_map(|raw| pct(&raw))
    .sboxed()
}

pub fn nullifier(fx: &Arc<Fixture>) -> Endpoint {
    let strategy = (
        bad_segment(32),
        chance(0.15),
        pick(&["POST", "PUT", "DELETE", "PATCH"]),
    )
        .prop_map(|(seg, wrong, m)| {
            let target = format!("/v1/nullifiers/{seg}");
            if wrong {
                Case::new(
                    "wrong method",
                    format!("{m} {target:.80}"),
                    method(m),
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
        })
        .sboxed();
    Endpoint::new(
        Service::Ledger,
        "GET /v1/nullifiers/{nullifier}",
        fx.ledger(),
        LEDGER_LIMIT,
        Vec::new(),
        strategy,
        INPUT_GET_CASES,
    )
}

/// A query string with at least one bad piece among `good` ones, in any order.
fn bad_query(good: &[&'static str], bad: Vec<String>) -> impl Strategy<Value = String> + use<> {
    (
        proptest::collection::vec(pick(good), 0..3),
        proptest::collection::vec(pick(&bad), 1..4),
    )
        .prop_map(|(good, bad)| {
            good.into_iter()
                .map(str::to_owned)
                .chain(bad)
                .collect::<Vec<String>>()
        })
        .prop_shuffle()
        .prop_map(|pieces| pieces.join("&"))
}

/// A ledger query at `path`: bad query strings (400), and now and then `wrong`, its wrong
/// method (405).
fn query_endpoint(
    fx: &Fixture,
    path: &'static str,
    good: &[&'static str],
    bad: Vec<String>,
    wrong: Method,
) -> Endpoint {
    let strategy = (bad_query(good, bad), chance(0.1))
        .prop_map(move |(q, wrong_method)| {
            let target = format!("{path}?{q}");
            if wrong_method {
                Case::new(
                    "wrong method",
                    format!("{wrong} {target:.100}"),
                    wrong.clone(),
                    &target,
                )
                .expect(Expect::Status(405))
            } else {
                Case::new("bad query", format!("{target:.100}"), Method::GET, &target)
                    .expect(Expect::Status(400))
            }
        })
        .sboxed();
    Endpoint::new(
        Service::Ledger,
        &format!("GET {path}"),
        fx.ledger(),
        LEDGER_LIMIT,
        Vec::new(),
        strategy,
        INPUT_GET_CASES,
    )
}

pub fn keys(fx: &Arc<Fixture>) -> Endpoint {
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
    let good = &["issuer=op-a", "kind=queue", "issuer=nobody"];
    query_endpoint(fx, "/v1/keys", good, bad, Method::POST)
}

pub fn log(fx: &Arc<Fixture>) -> Endpoint {
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
    query_endpoint(fx, "/v1/log", &["from=0", "limit=5"], bad, Method::DELETE)
}
