//! What the root test targets share about the in-process consortium (`scrip::consortium`):
//! the test kit cannot hold it, it is the binary's.

use scrip::consortium::{Consortium, Operator};
use scrip_redeemer::Mode;
use scrip_spec::ledger::{Checkpoint, EntryBody};

/// A strict consortium of the operators `names`, in `c/` of a fresh temporary directory.
pub async fn consortium(names: &[&str]) -> (tempfile::TempDir, Consortium) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Consortium::start(&dir.path().join("c"), names, Mode::Strict)
        .await
        .expect("consortium");
    (dir, c)
}

/// [`consortium`], every issuer with its keys made and announced.
pub async fn consortium_with_keys(names: &[&str]) -> (tempfile::TempDir, Consortium) {
    let (dir, c) = consortium(names).await;
    for op in &c.operators {
        op.issuer.rotate_keys().await.expect("keys");
    }
    (dir, c)
}

/// `count` cards of `value` credits printed by `op` and put on sale; their codes.
pub async fn cards_on_sale(op: &Operator, value: u64, count: usize) -> Vec<String> {
    let (batch, codes) = op.issuer.mint_cards(value, count).await.expect("mint");
    assert!(op.issuer.activate_batch(&batch).await.expect("activate"));
    codes.iter().map(ToString::to_string).collect()
}

/// Makes a checkpoint of the ledger now (the log must have grown since the last); returns it.
pub async fn checkpoint(c: &Consortium) -> Checkpoint {
    let entry = c
        .ledger
        .checkpoint()
        .await
        .expect("checkpoint")
        .expect("made");
    let EntryBody::Checkpoint(signed) = entry.body else {
        panic!("not a checkpoint entry")
    };
    signed.payload
}
