//! Group commit for grants: concurrent redemptions hand their grant to one writer task, which
//! stores everything that arrived while it was writing in one transaction.
//!
//! One grant per transaction made every redemption wait its turn for SQLite's single write
//! lock, with five hops between tokio and sqlx's SQLite thread for each; that capped
//! redemption at about 2,000/s on the development machine (BENCHMARKS.md).

use crate::store::{LiveGrant, NewGrant, NoGrant, RedeemerStore};
use scrip_common::metrics::Latency;
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<Result<LiveGrant, NoGrant>, String>>;

/// Hands grants to the writer task.
#[derive(Debug, Clone)]
pub struct GrantWriter {
    tx: mpsc::Sender<(NewGrant, Reply)>,
}

impl GrantWriter {
    /// Starts the writer; a transaction holds at most `max` grants, and each commit's time goes
    /// into `commit`.
    pub fn start(store: RedeemerStore, max: usize, commit: Latency) -> Self {
        let (tx, mut rx) = mpsc::channel::<(NewGrant, Reply)>(max.max(1) * 4);
        tokio::spawn(async move {
            let mut jobs = Vec::new();
            while rx.recv_many(&mut jobs, max.max(1)).await > 0 {
                let (grants, replies): (Vec<NewGrant>, Vec<Reply>) = jobs.drain(..).unzip();
                let committing = std::time::Instant::now();
                let stored = store.insert_grants(&grants).await;
                commit.since(committing);
                match stored {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(error) => {
                        // Nothing of the batch was stored; each caller reports a failure.
                        let message = format!("{error:#}");
                        for reply in replies {
                            let _ = reply.send(Err(message.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Gives one token its grant with whatever else is being stored; see
    /// [`RedeemerStore::insert_grants`].
    pub async fn insert(&self, grant: NewGrant) -> anyhow::Result<Result<LiveGrant, NoGrant>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((grant, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the grant writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the grant writer has stopped"))?
            .map_err(|message| anyhow::anyhow!("storing grants failed: {message}"))
    }
}
