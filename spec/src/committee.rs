//! The committee of a replicated ledger: the nodes the genesis names, the fault model they
//! give, what each node signs for clients, and the framing of the traffic between nodes.
//!
//! A ledger whose genesis names no committee is the one-node ledger. One that names `n` nodes
//! tolerates `f = (n - 1) / 3` faulty ones (PROTOCOL.md section 11): the order of requests is
//! decided by AlephBFT among the nodes, every node applies the ordered requests with the same
//! rules, and a client trusts an answer only when `f + 1` nodes signed the same one.

use crate::api::ledger::SpendResult;
use crate::encoding::serde_bytes_b64;
use crate::ledger::Hash32;
use crate::operator::{OperatorId, Signable};
use serde::{Deserialize, Serialize};

/// At most this many nodes in a committee.
pub const MAX_COMMITTEE: usize = 64;

/// Largest frame one node sends another: a unit carries at most
/// [`MAX_UNIT_REQUEST_BYTES`] of requests, and the rest of a message is small.
pub const MAX_PEER_FRAME: usize = 8 * 1024 * 1024;

/// At most this many bytes of signed requests in one node's unit.
pub const MAX_UNIT_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The first bytes each side of a node-to-node connection sends.
pub const PEER_MAGIC: &[u8; 8] = b"scripN01";

/// One node of the committee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeMember {
    /// The operator that runs it: a member's name in the genesis.
    pub operator: String,
    /// The node's own Ed25519 key: it signs the node's consensus messages and receipts.
    pub node_key: OperatorId,
    /// Where the other nodes reach it, `host:port`.
    pub peer_address: String,
    /// Where clients reach its HTTP API, for example `http://10.0.0.1:7400`.
    pub api_url: String,
}

/// The committee over time: the genesis's, changed by governance (admit or retire a node). A
/// change ordered in session `s` governs from session `s + 1`, so every node of a session
/// knows the session's committee before it starts, and a node that restarts within a session
/// finds the same one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeSchedule {
    /// The committee after the last change; empty while the genesis's governs.
    pub members: Vec<CommitteeMember>,
    /// The first session `members` governs.
    pub from_session: u64,
    /// The committee of the sessions before `from_session`, back to the change before.
    pub previous: Vec<CommitteeMember>,
}

impl CommitteeSchedule {
    /// The committee of `session`, given the genesis's.
    pub fn for_session<'a>(
        &'a self,
        genesis: &'a [CommitteeMember],
        session: u64,
    ) -> &'a [CommitteeMember] {
        if self.members.is_empty() {
            genesis
        } else if session >= self.from_session {
            &self.members
        } else {
            &self.previous
        }
    }

    /// The committee after every change so far (the one clients send requests to).
    pub fn latest<'a>(&'a self, genesis: &'a [CommitteeMember]) -> &'a [CommitteeMember] {
        if self.members.is_empty() {
            genesis
        } else {
            &self.members
        }
    }

    /// The schedule after `members` was set by a change ordered in `session`.
    pub fn changed(
        &self,
        genesis: &[CommitteeMember],
        session: u64,
        members: Vec<CommitteeMember>,
    ) -> Self {
        Self {
            previous: self.for_session(genesis, session).to_vec(),
            members,
            from_session: session + 1,
        }
    }
}

/// The most faulty nodes a committee of `n` tolerates: `(n - 1) / 3`.
pub fn max_faulty(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// Matching signed answers a client needs from a committee of `n`: `f + 1`, so at least one
/// comes from an honest node.
pub fn answer_quorum(n: usize) -> usize {
    max_faulty(n) + 1
}

/// Where an entry came from in the consensus order: the AlephBFT session, the position of its
/// unit among the units ordered in that session, and the request's position in the unit. A
/// node that restarts skips what its log already holds by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderedAt {
    /// The session.
    pub session: u64,
    /// The unit's position among the session's ordered units, from 0.
    pub unit: u64,
    /// The request's position among the unit's requests, from 0.
    pub request: u32,
}

/// What a node signs about a request it applied: the receipt, bound to the ledger and to the
/// request's digest, so it cannot be passed off for another request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptStatement {
    /// The ledger.
    pub ledger_id: Hash32,
    /// The request's digest ([`crate::ledger::request_digest`]).
    pub request: Hash32,
    /// The entry appended, if any.
    pub seq: Option<u64>,
    /// Its hash.
    pub entry_hash: Option<Hash32>,
    /// Per nullifier, for spends.
    pub spends: Vec<SpendResult>,
}

impl Signable for ReceiptStatement {
    const DOMAIN: &'static str = "ledger/receipt";
}

/// A node's signature over a [`ReceiptStatement`], carried in the receipt it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttestation {
    /// The node's key (a `node_key` of the committee).
    pub node: OperatorId,
    /// The request's digest.
    pub request: Hash32,
    /// Signature over the statement.
    #[serde(with = "serde_bytes_b64")]
    pub signature: [u8; 64],
}

/// What the dialing side of a node-to-node connection proves, signed with its node key: the
/// ledger, both nodes' keys and the nonce the other side just sent, so the proof works for
/// that one connection only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerProof {
    /// The ledger.
    pub ledger_id: Hash32,
    /// Who proves.
    pub from: OperatorId,
    /// To whom.
    pub to: OperatorId,
    /// The nonce the other side sent.
    pub nonce: [u8; 32],
}

impl Signable for PeerProof {
    const DOMAIN: &'static str = "ledger/peer";
}

/// What the nodes of a committee sign at the end of each session: the ledger's head then.
/// `2f + 1` such signatures make a certificate, which the nodes append to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifiedHead {
    /// The ledger.
    pub ledger_id: Hash32,
    /// The last entry of the session.
    pub seq: u64,
    /// Its hash.
    pub head_hash: Hash32,
}

impl Signable for CertifiedHead {
    const DOMAIN: &'static str = "ledger/certified-head";
}

/// One node's signature in a [`Certificate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSignature {
    /// The node's key.
    pub node: OperatorId,
    /// Its signature over the [`CertifiedHead`].
    #[serde(with = "serde_bytes_b64")]
    pub signature: [u8; 64],
}

/// A head signed by `2f + 1` distinct nodes of the committee: the committee's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// What was signed.
    pub head: CertifiedHead,
    /// The signatures, in committee order.
    pub signatures: Vec<CertificateSignature>,
}

impl Certificate {
    /// Checks the certificate against `committee`: at least `2f + 1` valid signatures by
    /// distinct nodes of it, and nothing else.
    pub fn verify(&self, committee: &[CommitteeMember]) -> Result<(), &'static str> {
        let n = committee.len();
        let needed = n - max_faulty(n);
        let mut seen = std::collections::HashSet::new();
        for s in &self.signatures {
            if !committee.iter().any(|m| m.node_key == s.node) {
                return Err("a certificate signature by a key that is no node of the committee");
            }
            if !seen.insert(s.node) {
                return Err("a certificate signed twice by one node");
            }
            crate::operator::verify_detached(&s.node, &self.head, &s.signature)
                .map_err(|_| "a certificate signature does not verify")?;
        }
        if seen.len() < needed || n == 0 {
            return Err("a certificate with fewer than 2f+1 node signatures");
        }
        Ok(())
    }
}

/// The bytes AlephBFT asks a node to sign (its units and its messages about them), signed
/// under their own purpose so they never verify as anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConsensusMessage<'a>(pub &'a [u8]);

impl Signable for ConsensusMessage<'_> {
    const DOMAIN: &'static str = "ledger/consensus";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_tolerance_follows_n_at_least_3f_plus_1() {
        let table = [
            (1, 0, 1),
            (2, 0, 1),
            (3, 0, 1),
            (4, 1, 2),
            (6, 1, 2),
            (7, 2, 3),
        ];
        for (n, f, quorum) in table {
            assert_eq!(max_faulty(n), f, "n = {n}");
            assert_eq!(answer_quorum(n), quorum, "n = {n}");
            assert!(n > 3 * max_faulty(n));
        }
        assert_eq!(max_faulty(0), 0);
    }
}
