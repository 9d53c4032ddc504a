//! A one-node ledger served in process on a loopback port.

use crate::db::TestDb;
use crate::keys::announcement;
use scrip_ledger::{Ledger, local};
use scrip_spec::ledger::{Hash32, OperatorInfo};
use scrip_spec::{OperatorKey, TokenKeyInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A ledger with a fresh genesis on its own database, served on port 0 until stopped or
/// dropped.
pub struct TestLedger {
    /// Its base URL.
    pub url: String,
    /// The ledger, for calls in process.
    pub ledger: Arc<Ledger>,
    /// Its id.
    pub ledger_id: Hash32,
    /// The ledger key's seed (a restart opens the ledger with it).
    pub key_seed: [u8; 32],
    /// Its database.
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
}

impl TestLedger {
    /// Makes a ledger called `name` with `operators` on `db`, with a fresh ledger key, and
    /// serves it on a free loopback port.
    pub async fn start(db: TestDb, name: &str, operators: Vec<OperatorInfo>) -> Self {
        let key = OperatorKey::generate();
        let key_seed = *key.seed();
        let ledger = local::init(&db.url, key, name, operators)
            .await
            .expect("a fresh ledger");
        let ledger = Arc::new(ledger);
        let ledger_id = ledger.info().await.ledger_id;
        let (url, stop) = serve(ledger.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind the ledger");
        Self {
            url,
            ledger,
            ledger_id,
            key_seed,
            db,
            stop: Some(stop),
        }
    }

    /// Announces `key` in process, signed by `by`; panics if the ledger refuses it.
    pub async fn announce(&self, by: &OperatorKey, key: TokenKeyInfo) {
        self.ledger
            .submit(announcement(by, self.ledger_id, key))
            .await
            .expect("announce a key");
    }

    /// Stops serving (the port closes; the database stays).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Opens the ledger again from its database and serves it on its old port (retrying while
    /// the old listener lets go of it).
    pub async fn restart(&mut self) {
        let addr: SocketAddr = self
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("addr");
        for _ in 0..50 {
            let store = scrip_ledger::connect(&self.db.url).await.expect("store");
            let ledger = Ledger::open(store, OperatorKey::from_seed(&self.key_seed))
                .await
                .expect("open");
            let ledger = Arc::new(ledger);
            if let Ok((_, stop)) = serve(ledger.clone(), addr).await {
                self.ledger = ledger;
                self.stop = Some(stop);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the ledger did not restart on {addr}");
    }
}

async fn serve(
    ledger: Arc<Ledger>,
    addr: SocketAddr,
) -> anyhow::Result<(String, oneshot::Sender<()>)> {
    let (stop, stopped) = oneshot::channel::<()>();
    let url = local::serve(ledger, addr, async {
        let _ = stopped.await;
    })
    .await?;
    Ok((url, stop))
}
