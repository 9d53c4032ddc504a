//! The ledger's endpoints: signed requests and cosignatures (forged, replayed, for another
//! ledger, breaking a rule), nullifier lookups, and the key and log queries.
//!
//! Spends carry real tokens from the fixture's pools: a case is refused for the one thing it
//! breaks (a flipped authenticator bit, a token in another key's group, garbage), never for
//! tokens that would not verify anyway. Governance changes carry the approvals the case is
//! about; the others are a valid change a quorum (op-a and op-c) would apply. Every signed
//! request must be answered with its status and error code, and leave the ledger's head, its
//! governance sequence and the nullifiers of its tokens as they were.

use crate::fixture::Fixture;
use crate::harness::{Case, Endpoint, Expect, LedgerUnchanged, Service};
use crate::json::{JsonTarget, json_endpoint};
use crate::routes::raw_cases;
use crate::shared::{ascii, b64, chance, filler, method, pct, pick, weighted};
use crate::{INPUT_GET_CASES, LEDGER_LIMIT};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::SBoxedStrategy;
use reqwest::Method;
use scrip_spec::api::ErrorCode as _;
use scrip_spec::api::ledger::LedgerErrorCode as Code;
use scrip_spec::encoding::{b64_decode, b64_encode};
use scrip_spec::ledger::{
    Action, Approval, Change, Checkpoint, Cosignature, DEFAULT_MIN_REDEEM_WINDOW, Hash32,
    LedgerRequest, MAX_CLOCK_SKEW, MAX_SPEND_BATCH, OperatorInfo, Role, SpendGroup,
};
use scrip_spec::token::{TOKEN_BYTES, TOKEN_TYPE};
use scrip_spec::{
    Catalog, OperatorId, OperatorKey, Signed, Token, TokenChallenge, TokenKeyId, now,
};
use serde_json::Value;
use std::sync::Arc;

/// The randomness one signed request takes: its nonce, a seed for random bytes, another
/// 32-byte value, an offset, where in the token pools its tokens start, and a few choices.
#[derive(Debug, Clone)]
struct Draw {
    nonce: [u8; 16],
    seed: u64,
    other: [u8; 32],
    offset: u64,
    choice: Index,
    byte: Index,
    bit: u8,
    /// Where in the pools the request's valid tokens start.
    at: Index,
    /// Where the bad token goes among them.
    pos: Index,
    /// How many valid tokens come with it (see [`Draw::tokens`]).
    count: u8,
    flag: bool,
    /// Who submits a governance change.
    who: Index,
    /// Which valid change a governance case proposes.
    change: Index,
}

fn draw() -> impl Strategy<Value = Draw> {
    (
        (
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            0..1_000_000u64,
            any::<Index>(),
            any::<Index>(),
            0..8u8,
        ),
        (
            any::<Index>(),
            any::<Index>(),
            0..6u8,
            any::<bool>(),
            any::<Index>(),
            any::<Index>(),
        ),
    )
        .prop_map(
            |(
                (nonce, seed, other, offset, choice, byte, bit),
                (at, pos, count, flag, who, change),
            )| {
                Draw {
                    nonce,
                    seed,
                    other,
                    offset,
                    choice,
                    byte,
                    bit,
                    at,
                    pos,
                    count,
                    flag,
                    who,
                    change,
                }
            },
        )
}

impl Draw {
    /// Where the request's tokens start in the pools.
    fn start(&self) -> usize {
        self.at.index(1 << 16)
    }

    /// Valid pool tokens: one to three of the queue key, then none or one of the chunk key.
    fn tokens(&self, fx: &Fixture) -> Vec<Token> {
        let (queue, chunk) = (1 + usize::from(self.count % 3), usize::from(self.count / 3));
        let mut tokens = fx.pool(false, self.start(), queue);
        tokens.extend(fx.pool(true, self.start(), chunk));
        tokens
    }
}

/// The status the ledger answers `code` with (the table of `LedgerErrorCode`).
fn status_of(code: Code) -> u16 {
    match code {
        Code::MalformedRequest => 400,
        Code::UnknownOperator | Code::BadSignature | Code::StaleRequest => 401,
        Code::WrongLedger | Code::Forbidden | Code::NoQuorum => 403,
        Code::ReplayedRequest | Code::StaleProposal => 409,
        Code::BatchTooLarge => 413,
        Code::InvalidRequest | Code::InvalidToken => 422,
        other => panic!("no case expects {other:?}"),
    }
}

pub fn submit(fx: &Arc<Fixture>) -> Endpoint {
    let path = "/v1/entries";
    let t = now();
    // Pool tokens 0 and 1 of the queue key: never spent by a case (the test spends token 0
    // for real at the end).
    let valid = fx.signed(
        &fx.op_a,
        fx.request([1; 16], fx.ledger_id, t, fx.spend(0, 1)),
    );
    let refused = fx.signed(
        &fx.op_a,
        fx.request([2; 16], Hash32([2; 32]), t, fx.spend(1, 1)),
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
                .expect(Expect::Status(409))
                .code(Code::ReplayedRequest.as_str())
                .unchanged(fx.unchanged([])),
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
            .expect(Expect::Status(409))
            .code(Code::ReplayedRequest.as_str()),
        )
        .sboxed(),
    );
    let semantic = (0..SUBMIT_VARIANTS)
        .map(|v| {
            let fx = fx.clone();
            // The token and governance properties of the new protocol, twice as often.
            let weight = if (32..=36).contains(&v) || v == 40 {
                2
            } else {
                1
            };
            (
                weight,
                draw()
                    .prop_map(move |d| submit_semantic(&fx, v, &d))
                    .sboxed(),
            )
        })
        .collect();
    json_endpoint(Service::Ledger, fx.ledger(), once, semantic, target)
}

const SUBMIT_VARIANTS: usize = 42;

/// A governance change that applies if a quorum approves it (the quorum cases must be
/// refused for the approvals alone).
fn valid_change(fx: &Fixture, d: &Draw) -> (&'static str, Change) {
    match d.change.index(5) {
        0 => (
            "admit an operator",
            Change::AdmitOperator {
                operator: OperatorInfo {
                    name: format!("op-new-{}", d.offset),
                    id: OperatorKey::generate().id(),
                    roles: vec![Role::Redeemer],
                },
            },
        ),
        1 => (
            "set the catalog",
            Change::SetCatalog {
                catalog: Catalog::standard(),
            },
        ),
        2 => (
            "revoke op-a's queue key",
            Change::RevokeKey {
                token_key_id: fx.queue_key.public_key.id(),
                reason: "compromised".into(),
            },
        ),
        3 => (
            "make op-b a redeemer only",
            Change::SetRoles {
                operator: fx.op_b.id(),
                roles: vec![Role::Redeemer],
            },
        ),
        _ => (
            "remove op-b",
            Change::RemoveOperator {
                operator: fx.op_b.id(),
            },
        ),
    }
}

/// A signed approval whose signature is `seed`'s random bytes.
fn garbage_approval(admin: OperatorId, seed: u64) -> Approval {
    Approval {
        admin,
        signature: filler(seed, 64).try_into().expect("64 bytes"),
    }
}

fn submit_semantic(fx: &Fixture, variant: usize, d: &Draw) -> Case {
    let t = now();
    let id = fx.ledger_id;
    let queue_id = fx.queue_key.public_key.id();
    let chunk_id = fx.chunk_key.public_key.id();
    let (a, b, c) = (&fx.op_a, &fx.op_b, &fx.op_c);
    let who = [a, b, c][d.who.index(3)];
    let redeemer = if d.flag { b } else { a };
    // A valid spend of one to three pool tokens, for the ledger `to`, timestamped `at`.
    let spent = fx.pool(false, d.start(), 1 + usize::from(d.count % 3));
    let spend = |to: Hash32, at: u64| fx.request(d.nonce, to, at, Action::spend_of(spent.clone()));
    let json = |s: &Signed<LedgerRequest>| serde_json::to_string(s).expect("json");
    // `action`, signed by `by`.
    let by = |by: &OperatorKey, action: Action| fx.signed(by, fx.request(d.nonce, id, t, action));
    let nothing = fx.unchanged([]);
    let with_spent = fx.unchanged(&spent);
    let (detail, body, code, unchanged): (String, String, Code, LedgerUnchanged) = match variant {
        0 => (
            "signed for another ledger".into(),
            fx.signed(a, spend(Hash32(d.other), t)),
            Code::WrongLedger,
            with_spent,
        ),
        1 => (
            "timestamp in the past".into(),
            fx.signed(a, spend(id, t - 301 - d.offset)),
            Code::StaleRequest,
            with_spent,
        ),
        2 => (
            "timestamp in the future".into(),
            fx.signed(a, spend(id, t + 301 + d.offset)),
            Code::StaleRequest,
            with_spent,
        ),
        3 => (
            "timestamp 0 or u64::MAX".into(),
            fx.signed(a, spend(id, *d.choice.get(&[0, u64::MAX]))),
            Code::StaleRequest,
            with_spent,
        ),
        4 => (
            "spend without groups".into(),
            fx.signed(
                a,
                fx.request(d.nonce, id, t, Action::Spend { groups: vec![] }),
            ),
            Code::InvalidRequest,
            nothing,
        ),
        5 => {
            let token_key_id = if d.flag { chunk_id } else { queue_id };
            let action = Action::Spend {
                groups: vec![SpendGroup {
                    token_key_id,
                    tokens: vec![],
                }],
            };
            (
                "spend group without tokens".into(),
                by(a, action),
                Code::InvalidRequest,
                nothing,
            )
        }
        6 => {
            // Valid pool tokens, repeated: the count is refused, not the tokens.
            let n = MAX_SPEND_BATCH + 1 + (d.offset % 100) as usize;
            let parts = d.choice.index(3) + 1;
            let groups: Vec<SpendGroup> = (0..parts)
                .map(|i| SpendGroup {
                    token_key_id: if i == 0 { queue_id } else { chunk_id },
                    tokens: fx.pool(i > 0, d.start() + i, n / parts + 1),
                })
                .collect();
            let total: usize = groups.iter().map(|g| g.tokens.len()).sum();
            let unchanged = fx.unchanged(groups.iter().flat_map(|g| &g.tokens));
            (
                format!("spend of {total} valid tokens, over MAX_SPEND_BATCH"),
                by(redeemer, Action::Spend { groups }),
                Code::BatchTooLarge,
                unchanged,
            )
        }
        7 => {
            let proposal = fx.proposal(Change::AdmitOperator {
                operator: OperatorInfo {
                    name: "op-d".into(),
                    id: OperatorKey::generate().id(),
                    roles: vec![Role::Admin],
                },
            });
            (
                "op-b (no admin role) admits an operator with its own approval".into(),
                by(b, fx.govern(proposal, &[b])),
                Code::NoQuorum,
                nothing,
            )
        }
        8 => {
            let fresh = OperatorKey::generate().id();
            let (what, name, operator) = *d.choice.get(&[
                ("op-b again", "op-b", b.id()),
                ("op-b's key under another name", "op-e", b.id()),
                ("a new key under op-a's name", "op-a", fresh),
                ("the ledger's key", "op-e", fx.ledger_key.id()),
            ]);
            let proposal = fx.proposal(Change::AdmitOperator {
                operator: OperatorInfo {
                    name: name.into(),
                    id: operator,
                    roles: vec![Role::Redeemer],
                },
            });
            (
                format!("a quorum admits {what}"),
                by(who, fx.govern(proposal, &fx.admins())),
                Code::InvalidRequest,
                nothing,
            )
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
            let proposal = fx.proposal(Change::AdmitOperator {
                operator: OperatorInfo {
                    name,
                    id: OperatorKey::generate().id(),
                    roles,
                },
            });
            (
                "a quorum admits an operator with a bad name or no role".into(),
                by(who, fx.govern(proposal, &fx.admins())),
                Code::InvalidRequest,
                nothing,
            )
        }
        10 => {
            let proposal = fx.proposal(Change::SetCatalog {
                catalog: Catalog::standard(),
            });
            (
                "op-b (no admin role) sets the catalog with its own approval".into(),
                by(b, fx.govern(proposal, &[b])),
                Code::NoQuorum,
                nothing,
            )
        }
        11 => {
            let stranger = OperatorId(d.other);
            let (what, change) = match d.choice.index(6) {
                0 => ("an empty catalog", {
                    let mut catalog = Catalog::standard();
                    catalog.entries.clear();
                    Change::SetCatalog { catalog }
                }),
                1 => (
                    "the removal of a non-member",
                    Change::RemoveOperator { operator: stranger },
                ),
                2 => (
                    "roles for a non-member",
                    Change::SetRoles {
                        operator: stranger,
                        roles: vec![Role::Redeemer],
                    },
                ),
                3 => (
                    "no roles for op-b",
                    Change::SetRoles {
                        operator: b.id(),
                        roles: vec![],
                    },
                ),
                4 => (
                    "the revocation of an unknown key",
                    Change::RevokeKey {
                        token_key_id: TokenKeyId(d.other),
                        reason: String::new(),
                    },
                ),
                _ => (
                    "the revocation of a key never announced",
                    Change::RevokeKey {
                        token_key_id: fx.unannounced.public_key.id(),
                        reason: String::new(),
                    },
                ),
            };
            (
                format!("a quorum approves {what}"),
                by(who, fx.govern(fx.proposal(change), &fx.admins())),
                Code::InvalidRequest,
                nothing,
            )
        }
        12 => {
            let mut key = fx.queue_key.clone();
            key.issuer = "op-b".into();
            (
                "op-a announces a key in op-b's name".into(),
                by(a, Action::AnnounceKey { key }),
                Code::Forbidden,
                nothing,
            )
        }
        13 => {
            let key = fx.queue_key.clone();
            (
                "op-b announces op-a's key".into(),
                by(b, Action::AnnounceKey { key }),
                Code::Forbidden,
                nothing,
            )
        }
        14 => {
            let key = fx.queue_key.clone();
            (
                "op-a announces its key again".into(),
                by(a, Action::AnnounceKey { key }),
                Code::InvalidRequest,
                nothing,
            )
        }
        15 => {
            let action = Action::RevokeKey {
                token_key_id: queue_id,
                reason: "mine now".into(),
            };
            (
                "op-b revokes op-a's key".into(),
                by(b, action),
                Code::Forbidden,
                nothing,
            )
        }
        16 => {
            let action = Action::RevokeKey {
                token_key_id: TokenKeyId(d.other),
                reason: String::new(),
            };
            (
                "op-a revokes an unknown key".into(),
                by(a, action),
                Code::InvalidRequest,
                nothing,
            )
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
            (
                "cards sold with a zero or huge count".into(),
                by(a, action),
                Code::InvalidRequest,
                nothing,
            )
        }
        18 => {
            let action = Action::TokensIssued {
                token_key_id: queue_id,
                count: 1,
                from: fx.queue_reported_until,
                until: t,
            };
            (
                "op-b reports issuance of op-a's key".into(),
                by(b, action),
                Code::Forbidden,
                nothing,
            )
        }
        19 => {
            let from = fx.queue_reported_until;
            let (token_key_id, count, from, until) = *d.choice.get(&[
                (queue_id, 1, t, t - 10),
                (queue_id, 0, from, t),
                (TokenKeyId([9; 32]), 1, from, t),
            ]);
            let action = Action::TokensIssued {
                token_key_id,
                count,
                from,
                until,
            };
            (
                "issuance report with from > until, count 0 or an unknown key".into(),
                by(a, action),
                Code::InvalidRequest,
                nothing,
            )
        }
        20 | 21 => {
            let (detail, key) = if variant == 20 {
                ("signed by a stranger", &OperatorKey::generate())
            } else {
                ("signed by the ledger's own key", &fx.ledger_key)
            };
            (
                detail.into(),
                fx.signed(key, spend(id, t)),
                Code::UnknownOperator,
                with_spent,
            )
        }
        22 | 23 => {
            let (by, named, detail) = if variant == 22 {
                (a, b, "op-a's signature under op-b's name")
            } else {
                (b, a, "op-b's signature under op-a's name")
            };
            let mut s = by.sign(spend(id, t));
            s.signer = named.id();
            (detail.into(), json(&s), Code::BadSignature, with_spent)
        }
        24 => {
            let mut s = a.sign(spend(id, t));
            match d.bit % 3 {
                0 => s.payload.timestamp += 1,
                1 => s.payload.nonce[d.byte.index(16)] ^= 1,
                _ => {
                    if let Action::Spend { groups } = &mut s.payload.action {
                        groups[0].tokens[0].nonce[d.byte.index(32)] ^= 0x80;
                    }
                }
            }
            (
                "changed after signing".into(),
                json(&s),
                Code::BadSignature,
                with_spent,
            )
        }
        25 => {
            let mut s = a.sign(spend(id, t));
            s.signature[d.byte.index(64)] ^= 1 << d.bit;
            (
                "signature bit flipped".into(),
                json(&s),
                Code::BadSignature,
                with_spent,
            )
        }
        26 => (
            "replay of the admitted request".into(),
            fx.admitted.clone(),
            Code::ReplayedRequest,
            nothing,
        ),
        27 => {
            // Replayed with its fields in another order.
            let v: Value = serde_json::from_str(&fx.admitted).expect("json");
            let reordered = format!(
                "{{\"signature\":{},\"payload\":{},\"signer\":{}}}",
                v["signature"], v["payload"], v["signer"]
            );
            (
                "replay with the fields reordered".into(),
                reordered,
                Code::ReplayedRequest,
                nothing,
            )
        }
        28 => {
            let action = Action::RevokeKey {
                token_key_id: *d.choice.get(&[queue_id, chunk_id]),
                reason: "admin".into(),
            };
            (
                "op-c (admin) revokes op-a's key without governance".into(),
                by(c, action),
                Code::Forbidden,
                nothing,
            )
        }
        29 => {
            // Spendable for less than min_redeem_window: ending too soon, or starting so
            // late that the window left after it is too short.
            let window = DEFAULT_MIN_REDEEM_WINDOW;
            let mut key = fx.unannounced.clone();
            let start = if d.flag {
                t + 86_400 + d.offset
            } else {
                t - 10
            };
            key.valid_from = start;
            key.issue_until = start + 60;
            key.redeem_until = start.max(t) + window - 1 - d.offset % 3000;
            key.forget_after = key.redeem_until + 3600;
            (
                format!(
                    "op-a announces a key spendable for {} s",
                    key.redeem_until - start.max(t)
                ),
                by(a, Action::AnnounceKey { key }),
                Code::InvalidRequest,
                nothing,
            )
        }
        30 => (
            "op-a announces a fourth live queue key".into(),
            by(
                a,
                Action::AnnounceKey {
                    key: fx.unannounced.clone(),
                },
            ),
            Code::InvalidRequest,
            nothing,
        ),
        31 => {
            let reported = fx.queue_reported_until;
            let count = 1 + d.offset % 1000;
            let (what, from, until) = match d.choice.index(3) {
                0 => ("leaves a gap", reported + 1, (reported + 1).max(t)),
                1 => (
                    "overlaps the last one",
                    reported - 1 - d.offset % 100,
                    reported.max(t),
                ),
                _ => (
                    "ends in the future",
                    reported,
                    t + MAX_CLOCK_SKEW + 60 + d.offset,
                ),
            };
            let action = Action::TokensIssued {
                token_key_id: queue_id,
                count,
                from,
                until,
            };
            (
                format!("issuance report that {what}"),
                by(a, action),
                Code::InvalidRequest,
                nothing,
            )
        }
        32 => {
            // One valid token of the spend with a bit of its authenticator flipped: the
            // nullifier is the same (it does not cover the authenticator), and stays unspent.
            let mut tokens = d.tokens(fx);
            let unchanged = fx.unchanged(&tokens);
            let victim = d.pos.index(tokens.len());
            let at = d.byte.index(tokens[victim].authenticator.len());
            tokens[victim].authenticator[at] ^= 1 << d.bit;
            (
                format!(
                    "token {victim} of {} with bit {} of authenticator byte {at} flipped",
                    tokens.len(),
                    d.bit
                ),
                by(redeemer, Action::spend_of(tokens)),
                Code::InvalidToken,
                unchanged,
            )
        }
        33 => {
            // A token that does not belong in its group, among valid ones.
            let Action::Spend { mut groups } = Action::spend_of(d.tokens(fx)) else {
                unreachable!("a spend")
            };
            let g = d.choice.index(groups.len());
            let in_queue = groups[g].token_key_id == queue_id;
            let other = d.start() + 97;
            let (what, intruder) = match d.offset % 3 {
                0 => (
                    "a token of the other live key",
                    fx.pool(in_queue, other, 1).remove(0),
                ),
                1 => (
                    "a token of a key never announced",
                    fx.unannounced_tokens[other % fx.unannounced_tokens.len()].clone(),
                ),
                _ => (
                    "a queue-key token made for op-b's challenge",
                    fx.wrong_challenge[other % fx.wrong_challenge.len()].clone(),
                ),
            };
            let group = &mut groups[g].tokens;
            let at = d.pos.index(group.len() + 1);
            group.insert(at, intruder);
            let unchanged = fx.unchanged(groups.iter().flat_map(|g| &g.tokens));
            let kind = if in_queue { "queue" } else { "chunk" };
            (
                format!("{what} at {at} of the {kind} key's group"),
                by(redeemer, Action::Spend { groups }),
                Code::InvalidToken,
                unchanged,
            )
        }
        34 => return garbage_token(fx, d, redeemer),
        35 => {
            let (what, change) = valid_change(fx, d);
            let (approvers, by_whom): (Vec<&OperatorKey>, &str) = match d.choice.index(5) {
                0 => (vec![], "no one"),
                1 => (vec![a], "op-a alone"),
                2 => (vec![c], "op-c alone"),
                3 => (vec![a, a], "op-a twice"),
                _ => (vec![c, c, c], "op-c three times"),
            };
            (
                format!("{what}, approved by {by_whom} (quorum 2)"),
                by(who, fx.govern(fx.proposal(change), &approvers)),
                Code::NoQuorum,
                nothing,
            )
        }
        36 => {
            // One admin's approval and others' that must not count, whether their signatures
            // verify or not.
            let (what, change) = valid_change(fx, d);
            let proposal = fx.proposal(change);
            let admin = fx.admins()[usize::from(d.flag)];
            let stranger = OperatorKey::generate();
            let extra: Vec<(&str, Approval)> = vec![
                ("op-b", Approval::sign(b, &proposal)),
                ("a stranger", Approval::sign(&stranger, &proposal)),
                ("the ledger key", Approval::sign(&fx.ledger_key, &proposal)),
                (
                    "a stranger, forged",
                    garbage_approval(stranger.id(), d.seed),
                ),
                ("op-b, forged", garbage_approval(b.id(), d.seed)),
            ];
            let k = 1 + usize::from(d.count) % extra.len();
            let first = d.pos.index(extra.len());
            let mut approvals = vec![Approval::sign(admin, &proposal)];
            let mut names = Vec::new();
            for (name, approval) in extra.iter().cycle().skip(first).take(k) {
                approvals.push(approval.clone());
                names.push(*name);
            }
            let len = approvals.len();
            approvals.rotate_left(d.at.index(len));
            (
                format!(
                    "{what}, approved by one admin and by {}",
                    names.join(" and ")
                ),
                by(
                    who,
                    Action::Govern {
                        proposal,
                        approvals,
                    },
                ),
                Code::NoQuorum,
                nothing,
            )
        }
        37 => {
            // The change applied in the set-up, with its approvals, in a new request.
            let (proposal, approvals) = fx.applied.clone();
            (
                "the approvals of an applied change, again".into(),
                by(
                    who,
                    Action::Govern {
                        proposal,
                        approvals,
                    },
                ),
                Code::StaleProposal,
                nothing,
            )
        }
        38 => {
            let (what, change) = valid_change(fx, d);
            let current = fx.governance_seq;
            let seq = *d.choice.get(&[
                0,
                current - 1,
                current + 1,
                current + 1 + d.offset,
                u64::MAX,
            ]);
            let mut proposal = fx.proposal(change);
            proposal.governance_seq = seq;
            (
                format!("{what} at governance_seq {seq} (the ledger is at {current})"),
                by(who, fx.govern(proposal, &fx.admins())),
                Code::StaleProposal,
                nothing,
            )
        }
        39 => {
            let (what, change) = valid_change(fx, d);
            let mut proposal = fx.proposal(change);
            proposal.ledger_id = Hash32(d.other);
            (
                format!("{what}, proposed for another ledger"),
                by(who, fx.govern(proposal, &fx.admins())),
                Code::WrongLedger,
                nothing,
            )
        }
        40 => {
            let (what, change) = valid_change(fx, d);
            let proposal = fx.proposal(change);
            let [good, bad] = if d.flag { [a, c] } else { [c, a] };
            let mut other = proposal.clone();
            other.governance_seq += 1;
            let (how, broken) = match d.choice.index(4) {
                0 => {
                    let mut ap = Approval::sign(bad, &proposal);
                    ap.signature[d.byte.index(64)] ^= 1 << d.bit;
                    ("a bit flipped", ap)
                }
                1 => ("signed for another proposal", {
                    let mut ap = Approval::sign(bad, &other);
                    ap.admin = bad.id();
                    ap
                }),
                2 => ("signed by op-b under its name", {
                    let mut ap = Approval::sign(b, &proposal);
                    ap.admin = bad.id();
                    ap
                }),
                _ => ("random bytes", garbage_approval(bad.id(), d.seed)),
            };
            let mut approvals = vec![Approval::sign(good, &proposal), broken];
            if d.pos.index(2) == 1 {
                approvals.reverse();
            }
            (
                format!("{what}, one admin's approval with {how}"),
                by(
                    who,
                    Action::Govern {
                        proposal,
                        approvals,
                    },
                ),
                Code::BadSignature,
                nothing,
            )
        }
        _ => {
            let (what, change) = valid_change(fx, d);
            let stranger = OperatorKey::generate();
            (
                format!("{what}, approved by a quorum, submitted by a stranger"),
                by(&stranger, fx.govern(fx.proposal(change), &fx.admins())),
                Code::UnknownOperator,
                nothing,
            )
        }
    };
    Case::refused(
        "signed request",
        "/v1/entries",
        detail,
        body,
        Expect::Status(status_of(code)),
    )
    .code(code.as_str())
    .unchanged(unchanged)
}

/// Random 354-byte garbage as a token in the group of a live key, among valid tokens: what
/// does not decode as a token is refused by the JSON decoder (400), what does by the ledger
/// (422). Some have the token type, some also the group's key id and the issuer's challenge
/// digest (then only the RSA signature is wrong, and the nonce is fresh).
fn garbage_token(fx: &Fixture, d: &Draw, by: &OperatorKey) -> Case {
    let t = now();
    let chunk = d.flag;
    let key_id = if chunk {
        fx.chunk_key.public_key.id()
    } else {
        fx.queue_key.public_key.id()
    };
    let mut garbage = filler(d.seed, TOKEN_BYTES);
    let how = match d.choice.index(4) {
        0 => "random bytes",
        1 => {
            garbage[..2].copy_from_slice(&TOKEN_TYPE.to_be_bytes());
            "random bytes of the token type"
        }
        2 => {
            garbage[..2].copy_from_slice(&[0x00, 0x01 + 2 * (d.bit % 2)]);
            "random bytes of another token type"
        }
        _ => {
            let digest = TokenChallenge::for_issuer("op-a")
                .expect("challenge")
                .digest();
            garbage[..2].copy_from_slice(&TOKEN_TYPE.to_be_bytes());
            garbage[34..66].copy_from_slice(&digest);
            garbage[66..98].copy_from_slice(&key_id.0);
            "a token of the key with a random nonce and authenticator"
        }
    };
    let mut tokens = fx.pool(chunk, d.start(), 1 + usize::from(d.count % 3));
    let at = d.pos.index(tokens.len() + 1);
    let mut unchanged = fx.unchanged(&tokens);
    let kind = if chunk { "chunk" } else { "queue" };
    let group = |tokens: Vec<Token>| Action::Spend {
        groups: vec![SpendGroup {
            token_key_id: key_id,
            tokens,
        }],
    };
    let (body, code) = match Token::from_bytes(&garbage) {
        Ok(token) => {
            unchanged.unspent.push(token.nullifier());
            tokens.insert(at, token);
            let request = fx.request(d.nonce, fx.ledger_id, t, group(tokens));
            (fx.signed(by, request), Code::InvalidToken)
        }
        Err(_) => {
            // A placeholder signed in its place (no pool token of the request), then the
            // garbage written over it: the decoder refuses it before any signature check.
            let placeholder = fx.wrong_challenge[0].clone();
            let placeholder_b64 = b64_encode(placeholder.to_bytes());
            tokens.insert(at, placeholder);
            let request = fx.request(d.nonce, fx.ledger_id, t, group(tokens));
            let body = fx.signed(by, request);
            assert_eq!(body.matches(&placeholder_b64).count(), 1, "one placeholder");
            (
                body.replace(&placeholder_b64, &b64_encode(&garbage)),
                Code::MalformedRequest,
            )
        }
    };
    Case::refused(
        "signed request",
        "/v1/entries",
        format!("{how} as token {at} of the {kind} key's group"),
        body,
        Expect::Status(status_of(code)),
    )
    .code(code.as_str())
    .unchanged(unchanged)
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

/// Prefixes `GET /v1/spent/{prefix}` refuses: odd lengths, too short or long, not hex,
/// percent-encoded junk.
fn bad_prefix() -> SBoxedStrategy<String> {
    weighted(vec![
        (1, ascii(12).prop_map(String::into_bytes).sboxed()),
        (
            1,
            pick(&[1usize, 3, 5, 7, 10, 12, 64, 65])
                .prop_map(|n| "a".repeat(n).into_bytes())
                .sboxed(),
        ),
        (
            1,
            pick(&["0g", "zz12", "+1", "-1", "0x12", "ab cd", "ééé"])
                .prop_map(|s| s.as_bytes().to_vec())
                .sboxed(),
        ),
        (1, proptest::collection::vec(any::<u8>(), 1..12).sboxed()),
    ])
    .prop_filter("a valid prefix", |raw| {
        let dots = raw.is_empty() || raw.iter().all(|&b| b == b'.');
        let valid = std::str::from_utf8(raw)
            .ok()
            .and_then(scrip_spec::api::ledger::NullifierPrefix::parse_hex)
            .is_some();
        !(dots || valid)
    })
    .prop_map(|raw| pct(&raw))
    .sboxed()
}

pub fn spent_prefix(fx: &Arc<Fixture>) -> Endpoint {
    let strategy = (bad_prefix(), chance(0.15), pick(&["POST", "PUT", "DELETE"]))
        .prop_map(|(prefix, wrong, m)| {
            let target = format!("/v1/spent/{prefix}");
            if wrong {
                Case::new(
                    "wrong method",
                    format!("{m} {target:.80}"),
                    method(m),
                    &target,
                )
                .expect(Expect::Status(405))
            } else {
                Case::new("bad prefix", format!("{target:.100}"), Method::GET, &target)
            }
        })
        .sboxed();
    Endpoint::new(
        Service::Ledger,
        "GET /v1/spent/{prefix}",
        fx.ledger(),
        LEDGER_LIMIT,
        Vec::new(),
        strategy,
        INPUT_GET_CASES,
    )
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
