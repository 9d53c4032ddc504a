//! The ledger's wire types: operators' signed requests, log entries, checkpoints and totals.
//!
//! Every accepted change is a [`LogEntry`]: a sequence number, the hash of the previous entry,
//! the instant the ledger recorded it, and a body. The body of an operator's change is the
//! operator's [`Signed`] [`LedgerRequest`] exactly as received, so anyone holding the log can
//! check every signature and recompute every effect.

use crate::catalog::{CapacityKind, Catalog};
use crate::encoding::{canonical_bytes, serde_bytes_b64};
use crate::key::{TokenKeyId, TokenKeyInfo, UnixSeconds};
use crate::operator::{OperatorId, OperatorKey, Signable, SignatureError, Signed, verify_detached};
use crate::token::{Nullifier, Token};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// At most this many keys of one (issuer, kind) may be live (announced, not revoked, not past
/// `redeem_until`) at once, so an issuer cannot give each user a key of their own.
pub const MAX_LIVE_KEYS: usize = 3;
/// At most this many keys of one (issuer, kind) may be in the directory and not yet past their
/// `forget_after`, so the directory an issuer can grow stays bounded (with [`MAX_LIVE_KEYS`]
/// and the genesis's `min_redeem_window`, it also bounds how fast an issuer can rotate).
pub const MAX_RETAINED_KEYS: usize = 4 * MAX_LIVE_KEYS;
/// Most tokens in one spend request.
pub const MAX_SPEND_BATCH: usize = 10_000;
/// Most input tokens, and most output tokens, in one refresh (the opening's batch cap: an
/// issuer signs the outputs in the same request).
pub const MAX_REFRESH_BATCH: usize = 1000;
/// The default floor of a key's remaining redemption window when it is announced, in seconds.
pub const DEFAULT_MIN_REDEEM_WINDOW: UnixSeconds = 3600;
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
    /// How many distinct admins must approve a governance change; `None` means a majority of
    /// the admins at the time of the change.
    #[serde(default)]
    pub admin_quorum: Option<u32>,
    /// A key is announced only if it can still be spent for at least this many seconds, so an
    /// issuer cannot rotate through short-lived keys to give users keys of their own.
    #[serde(default = "default_min_redeem_window")]
    pub min_redeem_window: UnixSeconds,
    /// The nodes of a replicated ledger, in index order; empty for the one-node ledger, whose
    /// `ledger_key` signs checkpoints instead (PROTOCOL.md section 11).
    // Always written: the canonical encoding (postcard) has no field names, so a field is
    // never left out.
    #[serde(default)]
    pub committee: Vec<crate::committee::CommitteeMember>,
}

fn default_min_redeem_window() -> UnixSeconds {
    DEFAULT_MIN_REDEEM_WINDOW
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
    /// The tokens themselves (RFC 9578 `Token`): the ledger verifies each one and derives its
    /// nullifier, so a redeemer cannot spend a token it does not hold.
    pub tokens: Vec<Token>,
}

impl SpendGroup {
    /// The nullifiers of the group's tokens, in order.
    pub fn nullifiers(&self) -> impl Iterator<Item = Nullifier> + '_ {
        self.tokens.iter().map(Token::nullifier)
    }
}

/// Tokens of one key that a refresh issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshOutput {
    /// The key the outputs are signed with (one of the refreshing issuer's own).
    pub token_key_id: TokenKeyId,
    /// How many tokens of it.
    pub count: u64,
}

/// A change to the rules of the consortium, applied only with a quorum of admin approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Admit a new member.
    AdmitOperator {
        /// The new member.
        operator: OperatorInfo,
    },
    /// Remove a member: its requests are refused from then on; its past entries stay.
    RemoveOperator {
        /// The member's key.
        operator: OperatorId,
    },
    /// Replace a member's roles.
    SetRoles {
        /// The member's key.
        operator: OperatorId,
        /// Its new roles.
        roles: Vec<Role>,
    },
    /// Replace the catalog (prices, kinds, the settlement fee). Past spends keep the value of
    /// the catalog in force when they were recorded.
    SetCatalog {
        /// The new catalog.
        catalog: Catalog,
    },
    /// Revoke any issuer's key (its issuer alone revokes it with [`Action::RevokeKey`]).
    RevokeKey {
        /// The key.
        token_key_id: TokenKeyId,
        /// Why, for the auditors.
        reason: String,
    },
    /// Add a node to a committee ledger's committee, from the session after the one that
    /// orders this change.
    AdmitNode {
        /// The node: its operator (a member), key and addresses.
        node: crate::committee::CommitteeMember,
    },
    /// Take a node out of the committee, from the session after the one that orders this
    /// change.
    RetireNode {
        /// The node's key.
        node_key: OperatorId,
    },
}

/// What admins approve: one change, bound to one ledger and to the number of governance
/// changes applied before it, so an approval counts once and a proposal overtaken by another
/// change must be approved again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// The ledger.
    pub ledger_id: Hash32,
    /// Governance changes applied before this one (`governance_seq` in `/v1/info`).
    pub governance_seq: u64,
    /// The change.
    pub change: Change,
}

impl Signable for Proposal {
    const DOMAIN: &'static str = "ledger/proposal";
}

/// One admin's signature over a [`Proposal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The admin.
    pub admin: OperatorId,
    /// Its Ed25519 signature over the proposal's signing message.
    #[serde(with = "serde_bytes_b64")]
    pub signature: [u8; 64],
}

impl Approval {
    /// `admin`'s approval of `proposal`.
    pub fn sign(admin: &OperatorKey, proposal: &Proposal) -> Self {
        let signed = admin.sign(proposal.clone());
        Self {
            admin: signed.signer,
            signature: signed.signature,
        }
    }

    /// Checks the signature (not whether the signer is an admin).
    pub fn verify(&self, proposal: &Proposal) -> Result<(), SignatureError> {
        verify_detached(&self.admin, proposal, &self.signature)
    }
}

/// A change an operator asks the ledger to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// A governance change with the approvals of a quorum of admins (any member may submit
    /// it).
    Govern {
        /// What was approved.
        proposal: Proposal,
        /// The admins' signatures over it.
        approvals: Vec<Approval>,
    },
    /// Announce a token key (its issuer). A key can sign and be spent only once announced.
    AnnounceKey {
        /// The key and its metadata.
        key: TokenKeyInfo,
    },
    /// Revoke a token key (its issuer): no more spends of it are accepted.
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
    /// A key's reports tile time: the first starts at the key's `valid_from`, each next one
    /// where the previous ended, so no report reveals when an opening happened.
    TokensIssued {
        /// The key.
        token_key_id: TokenKeyId,
        /// Tokens signed in the interval.
        count: u64,
        /// Start of the interval: the end of the key's previous report.
        from: UnixSeconds,
        /// End of the interval: when the report was made.
        until: UnixSeconds,
    },
    /// Spend tokens at the signer's relays (a redeemer). Each token is verified, and its
    /// nullifier accepted at most once across the whole ledger.
    Spend {
        /// The tokens, grouped by key.
        groups: Vec<SpendGroup>,
    },
    /// Exchange tokens of the signer's own keys for new tokens of its own keys, of no greater
    /// value (an issuer, for a wallet). The inputs are verified and spent like a spend's, all
    /// or none; the outputs count as issued for their keys. Left out of settlement: no one
    /// owes anyone for a swap.
    Refresh {
        /// The tokens given in, grouped by key.
        inputs: Vec<SpendGroup>,
        /// The tokens signed in exchange, per key.
        outputs: Vec<RefreshOutput>,
    },
}

impl Action {
    /// A spend of `tokens`, grouped by key in the order the keys first appear.
    pub fn spend_of(tokens: impl IntoIterator<Item = Token>) -> Self {
        let mut groups: Vec<SpendGroup> = Vec::new();
        for token in tokens {
            match groups
                .iter_mut()
                .find(|g| g.token_key_id == token.token_key_id)
            {
                Some(group) => group.tokens.push(token),
                None => groups.push(SpendGroup {
                    token_key_id: token.token_key_id,
                    tokens: vec![token],
                }),
            }
        }
        Action::Spend { groups }
    }

    /// The entry kind's name, as stored and shown.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Action::Govern { proposal, .. } => proposal.change.kind_name(),
            Action::AnnounceKey { .. } => "key_announced",
            Action::RevokeKey { .. } => "key_revoked",
            Action::CardsSold { .. } => "cards_sold",
            Action::TokensIssued { .. } => "tokens_issued",
            Action::Spend { .. } => "tokens_spent",
            Action::Refresh { .. } => "tokens_refreshed",
        }
    }
}

impl Change {
    /// The entry kind's name, as stored and shown.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Change::AdmitOperator { .. } => "operator_admitted",
            Change::RemoveOperator { .. } => "operator_removed",
            Change::SetRoles { .. } => "roles_set",
            Change::SetCatalog { .. } => "catalog_set",
            Change::RevokeKey { .. } => "key_revoked",
            Change::AdmitNode { .. } => "node_admitted",
            Change::RetireNode { .. } => "node_retired",
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

/// The digest that names a signed request: `SHA-256(signer || signing message)`. The log
/// holds a request at most once by it, and a committee node's receipt names it.
pub fn request_digest(r: &Signed<LedgerRequest>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(r.signer.0);
    h.update(crate::operator::signing_message(&r.payload));
    h.finalize().into()
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
    /// A committee's certificate of a session's last head, signed by `2f + 1` nodes.
    Certificate(crate::committee::Certificate),
    /// A pruning record of a committee ledger: every node writes the same one at the same
    /// place in the order, once the agreed time passes the key's `forget_after`, so it needs
    /// no signature (the next certificate vouches for it, and an auditor recomputes it).
    CommitteePruned(Pruned),
}

impl EntryBody {
    /// The entry kind's name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            EntryBody::Genesis(_) => "genesis",
            EntryBody::Request(r) => r.payload.action.kind_name(),
            EntryBody::Checkpoint(_) => "checkpoint",
            EntryBody::Pruned(_) | EntryBody::CommitteePruned(_) => "pruned",
            EntryBody::Certificate(_) => "certificate",
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
    /// When the ledger appended it: on a committee ledger, the time the nodes agreed from
    /// the ordered data, not one node's clock.
    pub recorded_at: UnixSeconds,
    /// What it records.
    pub body: EntryBody,
    /// On a committee ledger, where in the consensus order the entry's request came from.
    #[serde(default)]
    pub ordered: Option<crate::committee::OrderedAt>,
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
            admin_quorum: None,
            min_redeem_window: DEFAULT_MIN_REDEEM_WINDOW,
            committee: Vec::new(),
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
            ordered: None,
        };
        let mut later = entry.clone();
        later.recorded_at = 2;
        assert_ne!(entry.hash(), later.hash());

        let json = serde_json::to_string(&entry).expect("json");
        let back: LogEntry = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.hash(), entry.hash());
    }

    #[test]
    fn approvals_bind_the_proposal() {
        let (l, admin) = (OperatorKey::generate(), OperatorKey::generate());
        let proposal = Proposal {
            ledger_id: genesis(&l, &admin).ledger_id(),
            governance_seq: 0,
            change: Change::RemoveOperator { operator: l.id() },
        };
        let approval = Approval::sign(&admin, &proposal);
        assert_eq!(approval.verify(&proposal), Ok(()));
        let mut later = proposal.clone();
        later.governance_seq = 1;
        assert!(approval.verify(&later).is_err());
        let mut forged = approval.clone();
        forged.admin = l.id();
        assert!(forged.verify(&proposal).is_err());
    }

    #[test]
    fn signed_requests_survive_json_and_bind_the_ledger() {
        let (l, o) = (OperatorKey::generate(), OperatorKey::generate());
        let id = genesis(&l, &o).ledger_id();
        let req = o.sign(LedgerRequest::new(
            id,
            10,
            Action::RevokeKey {
                token_key_id: TokenKeyId([1; 32]),
                reason: "test".into(),
            },
        ));
        let json = serde_json::to_string(&req).expect("json");
        let back: Signed<LedgerRequest> = serde_json::from_str(&json).expect("parse");
        assert!(back.verify().is_ok());
        let mut other_ledger = back.clone();
        other_ledger.payload.ledger_id = Hash32([9; 32]);
        assert!(other_ledger.verify().is_err());
        assert!(
            serde_json::from_str::<Signed<LedgerRequest>>(
                &json.replace("\"revoke_key\"", "\"revoke_keyx\"")
            )
            .is_err()
        );
    }
}
