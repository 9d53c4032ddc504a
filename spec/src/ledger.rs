//! The ledger's wire types: operators' signed requests, log entries, checkpoints and totals.
//!
//! Every accepted change is a [`LogEntry`]: a sequence number, the hash of the previous entry,
//! the instant the ledger recorded it, and a body. The body of an operator's change is the
//! operator's [`Signed`] [`LedgerRequest`] exactly as received, so anyone holding the log can
//! check every signature and recompute every effect.

use crate::catalog::{CapacityKind, Catalog};
use crate::encoding::{canonical_bytes, serde_bytes_b64};
use crate::key::{TokenKeyId, TokenKeyInfo, UnixSeconds};
use crate::operator::{OperatorId, Signable, Signed};
use crate::token::Nullifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// At most this many keys of one (issuer, kind) may be live (announced, not revoked, not past
/// `redeem_until`) at once, so an issuer cannot give each user a key of their own.
pub const MAX_LIVE_KEYS: usize = 3;
/// Most nullifiers in one spend request.
pub const MAX_SPEND_BATCH: usize = 10_000;
/// How far a request's timestamp may be from the ledger's clock, in seconds.
pub const MAX_CLOCK_SKEW: u64 = 300;

/// Domain separator of the ledger id.
pub const LEDGER_ID_DOMAIN: &[u8] = b"scrip/v1/ledger-id";
/// Domain separator of entry hashes.
pub const ENTRY_HASH_DOMAIN: &[u8] = b"scrip/v1/entry";
/// Domain separator of the totals digest.
pub const TOTALS_DOMAIN: &[u8] = b"scrip/v1/totals";
/// Domain separator of a pruning commitment.
pub const PRUNE_DOMAIN: &[u8] = b"scrip/v1/pruned";

/// A 32-byte hash, base64url in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash32(#[serde(with = "serde_bytes_b64")] pub [u8; 32]);

impl std::fmt::Display for Hash32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::encoding::b64_encode(self.0))
    }
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Announces and revokes its token keys, records card sales and issuance totals.
    Issuer,
    /// Spends tokens at its relays.
    Redeemer,
    /// Admits operators and changes the catalog.
    Admin,
}

/// A member of the consortium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorInfo {
    /// Unique name; for an issuer it is also the `issuer_name` of its token challenges.
    pub name: String,
    /// The Ed25519 key that signs its requests.
    pub id: OperatorId,
    /// What it may do.
    pub roles: Vec<Role>,
}

/// The first entry: who the members are, what is sold, and the ledger's own key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// A name for people.
    pub ledger_name: String,
    /// The ledger's key, which signs checkpoints and pruning records.
    pub ledger_key: OperatorId,
    /// When the ledger was created.
    pub created_at: UnixSeconds,
    /// The founding members.
    pub operators: Vec<OperatorInfo>,
    /// The starting catalog.
    pub catalog: Catalog,
}

impl Genesis {
    /// The ledger id: `SHA-256("scrip/v1/ledger-id" || canonical(genesis))`. Every request
    /// names it, so a request signed for one ledger is refused by any other.
    pub fn ledger_id(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(LEDGER_ID_DOMAIN);
        h.update(canonical_bytes(self));
        Hash32(h.finalize().into())
    }
}

/// The tokens of one key in a spend request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendGroup {
    /// The key the tokens were signed with.
    pub token_key_id: TokenKeyId,
    /// Their nullifiers.
    pub nullifiers: Vec<Nullifier>,
}

/// A change an operator asks the ledger to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Admit a new member (admin).
    AdmitOperator {
        /// The new member.
        operator: OperatorInfo,
    },
    /// Replace the catalog (admin).
    SetCatalog {
        /// The new catalog.
        catalog: Catalog,
    },
    /// Announce a token key (its issuer). A key can sign and be spent only once announced.
    AnnounceKey {
        /// The key and its metadata.
        key: TokenKeyInfo,
    },
    /// Revoke a token key (its issuer or an admin): no more spends of it are accepted.
    RevokeKey {
        /// The key.
        token_key_id: TokenKeyId,
        /// Why, for the auditors.
        reason: String,
    },
    /// A batch of cards was activated for sale (the issuer): an aggregate, never per buyer.
    CardsSold {
        /// The issuer's batch label.
        batch: String,
        /// Cards in the batch.
        count: u64,
        /// Total credits of the batch.
        credits: u64,
    },
    /// Tokens signed with a key over an interval (its issuer): an aggregate, never per card.
    TokensIssued {
        /// The key.
        token_key_id: TokenKeyId,
        /// Tokens signed in the interval.
        count: u64,
        /// Start of the interval.
        from: UnixSeconds,
        /// End of the interval.
        until: UnixSeconds,
    },
    /// Spend tokens at the signer's relays (a redeemer). Each nullifier is accepted at most
    /// once across the whole ledger.
    Spend {
        /// The tokens, grouped by key.
        groups: Vec<SpendGroup>,
    },
}

impl Action {
    /// The entry kind's name, as stored and shown.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Action::AdmitOperator { .. } => "operator_admitted",
            Action::SetCatalog { .. } => "catalog_set",
            Action::AnnounceKey { .. } => "key_announced",
            Action::RevokeKey { .. } => "key_revoked",
            Action::CardsSold { .. } => "cards_sold",
            Action::TokensIssued { .. } => "tokens_issued",
            Action::Spend { .. } => "tokens_spent",
        }
    }
}

/// An operator's request: the action, bound to one ledger and one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerRequest {
    /// The ledger the request is for.
    pub ledger_id: Hash32,
    /// When the operator made it; the ledger refuses it beyond [`MAX_CLOCK_SKEW`].
    pub timestamp: UnixSeconds,
    /// Random, so two identical actions at the same second are different requests.
    #[serde(with = "serde_bytes_b64")]
    pub nonce: [u8; 16],
    /// What to do.
    pub action: Action,
}

impl Signable for LedgerRequest {
    const DOMAIN: &'static str = "ledger/request";
}

impl LedgerRequest {
    /// A request for `action` now, with a fresh nonce.
    pub fn new(ledger_id: Hash32, timestamp: UnixSeconds, action: Action) -> Self {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        Self {
            ledger_id,
            timestamp,
            nonce,
            action,
        }
    }
}

/// A checkpoint: the ledger's signed statement of its head and totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The ledger.
    pub ledger_id: Hash32,
    /// Sequence number of the last entry covered.
    pub seq: u64,
    /// Hash of that entry.
    pub head_hash: Hash32,
    /// [`Totals::digest`] of the totals after it.
    pub totals_digest: Hash32,
    /// When it was made.
    pub created_at: UnixSeconds,
}

impl Signable for Checkpoint {
    const DOMAIN: &'static str = "ledger/checkpoint";
}

/// An operator's cosignature of a checkpoint it has verified the log up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosignature {
    /// The checkpoint cosigned.
    pub checkpoint: Checkpoint,
}

impl Signable for Cosignature {
    const DOMAIN: &'static str = "ledger/cosign";
}

/// The ledger's record that the spent set of a key past `forget_after` was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pruned {
    /// The ledger.
    pub ledger_id: Hash32,
    /// The key whose nullifiers were dropped.
    pub token_key_id: TokenKeyId,
    /// How many.
    pub count: u64,
    /// [`prune_commitment`] of them.
    pub commitment: Hash32,
}

impl Signable for Pruned {
    const DOMAIN: &'static str = "ledger/pruned";
}

/// `SHA-256("scrip/v1/pruned" || n_1 || … || n_k)` over the dropped nullifiers in ascending
/// byte order.
pub fn prune_commitment(sorted_nullifiers: &[Nullifier]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(PRUNE_DOMAIN);
    for n in sorted_nullifiers {
        h.update(n.0);
    }
    Hash32(h.finalize().into())
}

/// What a log entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryBody {
    /// Entry 0.
    Genesis(Genesis),
    /// An operator's accepted request.
    Request(Signed<LedgerRequest>),
    /// A checkpoint signed by the ledger key.
    Checkpoint(Signed<Checkpoint>),
    /// A pruning record signed by the ledger key.
    Pruned(Signed<Pruned>),
}

impl EntryBody {
    /// The entry kind's name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            EntryBody::Genesis(_) => "genesis",
            EntryBody::Request(r) => r.payload.action.kind_name(),
            EntryBody::Checkpoint(_) => "checkpoint",
            EntryBody::Pruned(_) => "pruned",
        }
    }
}

/// One entry of the append-only log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// Position in the log, from 0 (genesis), without gaps.
    pub seq: u64,
    /// Hash of entry `seq - 1` (all zero for genesis).
    pub prev_hash: Hash32,
    /// When the ledger appended it.
    pub recorded_at: UnixSeconds,
    /// What it records.
    pub body: EntryBody,
}

impl LogEntry {
    /// `SHA-256("scrip/v1/entry" || canonical(entry))`.
    pub fn hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(ENTRY_HASH_DOMAIN);
        h.update(canonical_bytes(self));
        Hash32(h.finalize().into())
    }
}

/// Counters of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTotals {
    /// The key.
    pub token_key_id: TokenKeyId,
    /// Its issuer.
    pub issuer: String,
    /// Its kind.
    pub kind: CapacityKind,
    /// Tokens reported issued.
    pub issued: u64,
    /// Nullifiers accepted.
    pub spent: u64,
    /// Nullifiers pruned from the live spent set.
    pub pruned: u64,
}

/// Counters of one issuer's card sales.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerTotals {
    /// The issuer.
    pub issuer: String,
    /// Cards activated for sale.
    pub cards_sold: u64,
    /// Credits of those cards.
    pub credits_sold: u64,
}

/// The totals a checkpoint commits to, in a canonical order (keys by id, issuers by name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Per key.
    pub keys: Vec<KeyTotals>,
    /// Per issuer.
    pub issuers: Vec<IssuerTotals>,
}

impl Totals {
    /// `SHA-256("scrip/v1/totals" || canonical(totals))`.
    pub fn digest(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(TOTALS_DOMAIN);
        h.update(canonical_bytes(self));
        Hash32(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::OperatorKey;

    fn genesis(ledger: &OperatorKey, op: &OperatorKey) -> Genesis {
        Genesis {
            ledger_name: "test".into(),
            ledger_key: ledger.id(),
            created_at: 1,
            operators: vec![OperatorInfo {
                name: "a".into(),
                id: op.id(),
                roles: vec![Role::Issuer, Role::Redeemer],
            }],
            catalog: Catalog::standard(),
        }
    }

    #[test]
    fn ledger_id_and_entry_hash_change_with_any_field() {
        let (l, o) = (OperatorKey::generate(), OperatorKey::generate());
        let g = genesis(&l, &o);
        let mut g2 = g.clone();
        g2.created_at = 2;
        assert_ne!(g.ledger_id(), g2.ledger_id());

        let entry = LogEntry {
            seq: 0,
            prev_hash: Hash32([0; 32]),
            recorded_at: 1,
            body: EntryBody::Genesis(g.clone()),
        };
        let mut later = entry.clone();
        later.recorded_at = 2;
        assert_ne!(entry.hash(), later.hash());

        let json = serde_json::to_string(&entry).expect("json");
        let back: LogEntry = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.hash(), entry.hash());
    }

    #[test]
    fn signed_requests_survive_json_and_bind_the_ledger() {
        let (l, o) = (OperatorKey::generate(), OperatorKey::generate());
        let id = genesis(&l, &o).ledger_id();
        let req = o.sign(LedgerRequest::new(
            id,
            10,
            Action::Spend {
                groups: vec![SpendGroup {
                    token_key_id: TokenKeyId([1; 32]),
                    nullifiers: vec![Nullifier([2; 32])],
                }],
            },
        ));
        let json = serde_json::to_string(&req).expect("json");
        let back: Signed<LedgerRequest> = serde_json::from_str(&json).expect("parse");
        assert!(back.verify().is_ok());
        let mut other_ledger = back.clone();
        other_ledger.payload.ledger_id = Hash32([9; 32]);
        assert!(other_ledger.verify().is_err());
        assert!(
            serde_json::from_str::<Signed<LedgerRequest>>(&json.replace("\"spend\"", "\"spendx\""))
                .is_err()
        );
    }
}
