//! The ledger's HTTP messages (PROTOCOL.md section 11.6): info, signed requests and their
//! receipts, nullifier status, the key directory, log pages, checkpoints.

use crate::catalog::{CapacityKind, Catalog};
use crate::key::{TokenKeyInfo, UnixSeconds};
use crate::ledger::{Cosignature, Genesis, Hash32, LogEntry, OperatorInfo};
use crate::operator::Signed;
use crate::token::Nullifier;
use serde::{Deserialize, Serialize};

/// Most entries one log page returns.
pub const MAX_LOG_PAGE: u32 = 1000;
/// A log page stops once its entries' canonical bytes pass this (it always holds at least one
/// entry): about 5 MiB of JSON, whatever the entries hold.
pub const MAX_LOG_PAGE_BYTES: u64 = 4 * 1024 * 1024;

super::error_codes! {
    /// The ledger's error codes.
    ///
    /// | code | meaning |
    /// |---|---|
    /// | `unknown_operator` | 401: the signer is not a member. |
    /// | `bad_signature` | 401: the signature does not verify. |
    /// | `stale_request` | 401: the timestamp is too far from the ledger's clock. |
    /// | `wrong_ledger` | 403: signed for another ledger. |
    /// | `forbidden` | 403: the signer lacks the role or does not own the object. |
    /// | `replayed_request` | 409: this exact signed request is already in the log. |
    /// | `batch_too_large` | 413: a spend with too many tokens. |
    /// | `invalid_request` | 422: well formed but breaks a rule. |
    /// | `invalid_token` | 422: a spend carries a token that does not verify; nothing was spent. |
    /// | `no_quorum` | 403: a governance change without enough distinct admin approvals. |
    /// | `stale_proposal` | 409: a governance change approved before another change applied. |
    /// | `ledger_unavailable` | 503: the ledger could not complete the request; nothing changed. |
    /// | `malformed_nullifier` | 400: a nullifier that is not 32 bytes of base64url. |
    /// | `no_checkpoint` | 404: no checkpoint has been made yet. |
    /// | `malformed_prefix` | 400: a nullifier prefix that is not 2 to 8 hex digits, in pairs. |
    /// | `already_spent` | 409: an input of a refresh was spent before (`index`, `first_spent_at`, `first_spent_by`); nothing was spent. |
    pub enum LedgerErrorCode {
        UnknownOperator = "unknown_operator", BadSignature = "bad_signature",
        StaleRequest = "stale_request", WrongLedger = "wrong_ledger", Forbidden = "forbidden",
        ReplayedRequest = "replayed_request", BatchTooLarge = "batch_too_large",
        InvalidRequest = "invalid_request", LedgerUnavailable = "ledger_unavailable",
        MalformedNullifier = "malformed_nullifier", NoCheckpoint = "no_checkpoint",
        InvalidToken = "invalid_token", NoQuorum = "no_quorum", StaleProposal = "stale_proposal",
        MalformedPrefix = "malformed_prefix",
        AlreadySpent = "already_spent",
    }
}

/// `GET /v1/info`: what anyone may know about the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    /// The ledger id requests must name.
    pub ledger_id: Hash32,
    /// The genesis.
    pub genesis: Genesis,
    /// Current members.
    pub operators: Vec<OperatorInfo>,
    /// Current catalog.
    pub catalog: Catalog,
    /// Last entry.
    pub head_seq: u64,
    /// Its hash.
    pub head_hash: Hash32,
    /// Governance changes applied so far: the `governance_seq` the next proposal names.
    pub governance_seq: u64,
    /// Distinct admin approvals a governance change needs now.
    pub admin_quorum: u32,
    /// On a committee ledger, the consensus session the answering node is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// On a committee ledger, the committee after every membership change the answering node
    /// has applied (the genesis's if none): the nodes a client sends its requests to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub committee: Vec<crate::committee::CommitteeMember>,
}

/// `GET /v1/committee`: the committee after every membership change the answering node has
/// applied (empty on a one-node ledger). A client that knows the committee takes a new one
/// only when `f + 1` of the nodes it knows answer the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeView {
    /// The nodes, in committee order.
    pub members: Vec<crate::committee::CommitteeMember>,
}

/// Why one nullifier of a spend was refused before reaching the spent set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendRefusal {
    /// The key is not announced on this ledger.
    UnknownKey,
    /// The key is revoked.
    KeyRevoked,
    /// The spend is outside the key's redemption window.
    NotRedeemable,
    /// The nullifier appears earlier in the same request.
    DuplicateInRequest,
}

/// The outcome of one nullifier of a spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SpendStatus {
    /// Spent now, by this request.
    Accepted,
    /// Spent before.
    AlreadySpent {
        /// When it was first spent.
        first_spent_at: UnixSeconds,
        /// The operator that first spent it.
        first_spent_by: String,
        /// The entry that spent it.
        seq: u64,
    },
    /// Refused by the key checks.
    Refused {
        /// Why.
        reason: SpendRefusal,
    },
}

/// One nullifier's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendResult {
    /// The nullifier.
    pub nullifier: Nullifier,
    /// What happened to it.
    #[serde(flatten)]
    pub status: SpendStatus,
}

/// `POST /v1/entries` answer: the receipt of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The entry appended, if any (a spend of nothing new appends nothing).
    pub seq: Option<u64>,
    /// Its hash.
    pub entry_hash: Option<Hash32>,
    /// Per nullifier, for spends, in request order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spends: Vec<SpendResult>,
    /// On a committee ledger, the answering node's signature over this receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::committee::NodeAttestation>,
}

/// `GET /v1/nullifiers/{nullifier}`: a nullifier's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NullifierStatus {
    /// Not in the spent set.
    Unspent,
    /// Spent.
    Spent {
        /// When.
        spent_at: u64,
        /// By which operator.
        spent_by: String,
        /// In which entry.
        seq: u64,
    },
}

/// The shortest nullifier prefix `GET /v1/spent/{prefix}` accepts, in bytes.
pub const MIN_SPENT_PREFIX_BYTES: usize = 1;
/// The longest nullifier prefix `GET /v1/spent/{prefix}` accepts, in bytes: a prefix query
/// is for not naming the nullifier; the full one is asked at `/v1/nullifiers/{nullifier}`.
pub const MAX_SPENT_PREFIX_BYTES: usize = 4;
/// Most spent nullifiers one prefix query returns; beyond, the page is marked incomplete and
/// the client asks again with a longer prefix.
pub const MAX_SPENT_PREFIX_ANSWER: usize = 4096;

/// The first 1 to 4 bytes of a nullifier: what a wallet asks the ledger about instead of a
/// nullifier it still holds (PROTOCOL.md section 11.9).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NullifierPrefix(Vec<u8>);

impl NullifierPrefix {
    /// The first `len` bytes of `nullifier` (`len` clamped to the accepted range).
    pub fn of(nullifier: &Nullifier, len: usize) -> Self {
        let len = len.clamp(MIN_SPENT_PREFIX_BYTES, MAX_SPENT_PREFIX_BYTES);
        Self(nullifier.0[..len].to_vec())
    }

    /// Parses lowercase or uppercase hex, 2 to 8 digits in pairs.
    pub fn parse_hex(text: &str) -> Option<Self> {
        let len = text.len();
        if !len.is_multiple_of(2)
            || !(2 * MIN_SPENT_PREFIX_BYTES..=2 * MAX_SPENT_PREFIX_BYTES).contains(&len)
            || !text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        let bytes = (0..len)
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(Self(bytes))
    }

    /// The prefix's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `nullifier` starts with it.
    pub fn matches(&self, nullifier: &Nullifier) -> bool {
        nullifier.0.starts_with(&self.0)
    }

    /// The smallest and the largest nullifier with this prefix.
    pub fn range(&self) -> (Nullifier, Nullifier) {
        let (mut low, mut high) = ([0u8; 32], [0xffu8; 32]);
        low[..self.0.len()].copy_from_slice(&self.0);
        high[..self.0.len()].copy_from_slice(&self.0);
        (Nullifier(low), Nullifier(high))
    }
}

impl std::fmt::Display for NullifierPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One spent nullifier in a prefix query's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpentNullifier {
    /// The nullifier.
    pub nullifier: Nullifier,
    /// When it was spent.
    pub spent_at: u64,
    /// By which operator.
    pub spent_by: String,
    /// In which entry.
    pub seq: u64,
}

/// `GET /v1/spent/{prefix}`: every spent nullifier (not pruned) that starts with the prefix,
/// in order, at most [`MAX_SPENT_PREFIX_ANSWER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpentByPrefix {
    /// The prefix asked, in lowercase hex.
    pub prefix: String,
    /// The spent nullifiers that start with it.
    pub spent: Vec<SpentNullifier>,
    /// False if more nullifiers share the prefix than one answer holds: ask with a longer one.
    pub complete: bool,
}

/// A key as the directory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key and its metadata.
    pub info: TokenKeyInfo,
    /// The entry that announced it.
    pub announced_seq: u64,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Tokens reported issued.
    pub issued: u64,
    /// Nullifiers accepted.
    pub spent: u64,
    /// Nullifiers pruned.
    pub pruned: u64,
    /// End of the key's last issuance report (its `valid_from` before the first): where the
    /// next report's interval must start.
    pub reported_until: UnixSeconds,
}

impl KeyRecord {
    /// Whether the key counts as live at `now`: not revoked, and its tokens still spendable.
    /// The one definition of "live" behind the per-(issuer, kind) limit, the audit and the
    /// wallet's key choice.
    pub fn is_live(&self, now: UnixSeconds) -> bool {
        !self.revoked && now <= self.info.redeem_until
    }
}

/// The key every wallet must use to get tokens of `kind` from `issuer` at `now`: of the keys
/// the directory lists for them, not revoked and able to issue at `now`, the one with the
/// latest `valid_from`, and of those the one with the smallest key id. Every wallet that reads the same
/// directory at the same moment gets the same key, so an issuer cannot give one wallet a key
/// of its own by leaving the others out of what it offers (PROTOCOL.md section 4.3).
pub fn issuance_key<'a>(
    directory: &'a [KeyRecord],
    issuer: &str,
    kind: &CapacityKind,
    now: UnixSeconds,
) -> Option<&'a KeyRecord> {
    directory
        .iter()
        .filter(|r| r.info.issuer == issuer && &r.info.kind == kind)
        .filter(|r| !r.revoked && r.info.can_issue_at(now))
        .max_by_key(|r| (r.info.valid_from, std::cmp::Reverse(r.info.public_key.id())))
}

/// `GET /v1/keys` query: both filters optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFilter {
    /// Only this issuer's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Only keys of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CapacityKind>,
}

/// `GET /v1/keys` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirectory {
    /// Keys, oldest first.
    pub keys: Vec<KeyRecord>,
}

/// `GET /v1/log` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRange {
    /// The first sequence number wanted.
    #[serde(default)]
    pub from: u64,
    /// Most entries wanted (at most [`MAX_LOG_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /v1/log` answer: a page of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    /// Entries in order.
    pub entries: Vec<LogEntry>,
    /// Where the next page starts, if the log goes on.
    pub next: Option<u64>,
}

/// `GET /v1/checkpoint`: the latest checkpoint with its cosignatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// The checkpoint entry.
    pub entry: LogEntry,
    /// Operators' cosignatures of it.
    pub cosignatures: Vec<Signed<Cosignature>>,
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    #[test]
    fn prefixes_parse_from_hex_pairs_only() {
        let p = NullifierPrefix::parse_hex("aB12").expect("two bytes");
        assert_eq!(p.as_bytes(), &[0xab, 0x12]);
        assert_eq!(p.to_string(), "ab12");
        for bad in ["", "a", "abc", "zz", "0011223344", "+1", "é1"] {
            assert_eq!(NullifierPrefix::parse_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_prefix_range_holds_exactly_its_nullifiers() {
        let mut n = [0x5au8; 32];
        n[0] = 0xff;
        let nullifier = Nullifier(n);
        let p = NullifierPrefix::of(&nullifier, 1);
        let (low, high) = p.range();
        assert!(low <= nullifier && nullifier <= high);
        assert!(p.matches(&nullifier));
        assert!(!p.matches(&Nullifier([0xfe; 32])));
        assert_eq!(
            NullifierPrefix::of(&nullifier, 99).as_bytes().len(),
            MAX_SPENT_PREFIX_BYTES
        );
    }
}
