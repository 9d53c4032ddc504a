//! The committee's keys as AlephBFT sees them: each node signs its units and messages with
//! its Ed25519 node key, under a purpose of their own, and checks the others' against the
//! keys the genesis names.

use aleph_bft::{Index, NodeCount, NodeIndex, SignatureSet};
use codec::{Decode, Encode};
use scrip_spec::committee::ConsensusMessage;
use scrip_spec::operator::verify_detached;
use scrip_spec::{OperatorId, OperatorKey};
use std::sync::Arc;

/// An Ed25519 signature in AlephBFT's messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct NodeSignature(pub [u8; 64]);

/// This node's key and every node's public key, in committee order.
#[derive(Clone)]
pub struct NodeKeychain {
    key: Arc<OperatorKey>,
    index: NodeIndex,
    nodes: Arc<Vec<OperatorId>>,
}

impl std::fmt::Debug for NodeKeychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeychain")
            .field("index", &self.index.0)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl NodeKeychain {
    /// The keychain of the node holding `key` among `nodes`; `None` if `key` is not one of
    /// them.
    pub fn new(key: Arc<OperatorKey>, nodes: Vec<OperatorId>) -> Option<Self> {
        let index = nodes.iter().position(|id| *id == key.id())?;
        Some(Self {
            key,
            index: NodeIndex(index),
            nodes: Arc::new(nodes),
        })
    }
}

impl Index for NodeKeychain {
    fn index(&self) -> NodeIndex {
        self.index
    }
}

impl aleph_bft::Keychain for NodeKeychain {
    type Signature = NodeSignature;

    fn node_count(&self) -> NodeCount {
        NodeCount(self.nodes.len())
    }

    fn sign(&self, msg: &[u8]) -> NodeSignature {
        NodeSignature(self.key.sign_detached(&ConsensusMessage(msg)))
    }

    fn verify(&self, msg: &[u8], sgn: &NodeSignature, index: NodeIndex) -> bool {
        self.nodes
            .get(index.0)
            .is_some_and(|id| verify_detached(id, &ConsensusMessage(msg), &sgn.0).is_ok())
    }
}

impl aleph_bft::MultiKeychain for NodeKeychain {
    type PartialMultisignature = SignatureSet<NodeSignature>;

    fn bootstrap_multi(
        &self,
        signature: &NodeSignature,
        index: NodeIndex,
    ) -> Self::PartialMultisignature {
        use aleph_bft::PartialMultisignature as _;
        SignatureSet::with_size(aleph_bft::Keychain::node_count(self))
            .add_signature(signature, index)
    }

    fn is_complete(&self, msg: &[u8], partial: &Self::PartialMultisignature) -> bool {
        use aleph_bft::Keychain as _;
        partial.iter().count() >= self.node_count().consensus_threshold().0
            && partial.iter().all(|(i, sgn)| self.verify(msg, sgn, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aleph_bft::{Keychain as _, MultiKeychain as _};

    #[test]
    fn signatures_verify_for_their_node_only_and_quorums_need_2f_plus_1() {
        let keys: Vec<Arc<OperatorKey>> =
            (0..4).map(|_| Arc::new(OperatorKey::generate())).collect();
        let ids: Vec<OperatorId> = keys.iter().map(|k| k.id()).collect();
        let chains: Vec<NodeKeychain> = keys
            .iter()
            .map(|k| NodeKeychain::new(k.clone(), ids.clone()).expect("a member"))
            .collect();
        assert!(NodeKeychain::new(Arc::new(OperatorKey::generate()), ids.clone()).is_none());
        let sig = chains[1].sign(b"unit");
        assert!(chains[0].verify(b"unit", &sig, NodeIndex(1)));
        assert!(
            !chains[0].verify(b"unit", &sig, NodeIndex(2)),
            "another node's index"
        );
        assert!(
            !chains[0].verify(b"other", &sig, NodeIndex(1)),
            "another message"
        );
        assert!(
            !chains[0].verify(b"unit", &sig, NodeIndex(9)),
            "no such node"
        );
        // A signature made for another purpose with the same key does not verify.
        let other_purpose = keys[1].sign_detached(&scrip_spec::committee::PeerProof {
            ledger_id: scrip_spec::ledger::Hash32([0; 32]),
            from: ids[1],
            to: ids[0],
            nonce: [0; 32],
        });
        assert!(!chains[0].verify(b"unit", &NodeSignature(other_purpose), NodeIndex(1)));

        use aleph_bft::PartialMultisignature as _;
        let mut partial = chains[0].bootstrap_multi(&chains[0].sign(b"m"), NodeIndex(0));
        partial = partial.add_signature(&chains[1].sign(b"m"), NodeIndex(1));
        assert!(!chains[0].is_complete(b"m", &partial), "2 of 4 is not 2f+1");
        let forged = partial
            .clone()
            .add_signature(&chains[3].sign(b"x"), NodeIndex(2));
        assert!(
            !chains[0].is_complete(b"m", &forged),
            "a bad signature spoils the set"
        );
        partial = partial.add_signature(&chains[2].sign(b"m"), NodeIndex(2));
        assert!(chains[0].is_complete(b"m", &partial));
    }
}
