//! Backup: moving unspent tokens in the export format, and rebuilding every token from the
//! seed alone through the issuers' replay endpoint.

use super::{Wallet, WalletError};
use crate::store::TokenState;
use scrip_spec::api::issuer::RequestId;
use scrip_spec::codes::export::{EXPORT_VERSION, ExportFile, ExportedToken};
use scrip_spec::{TokenChallenge, WalletSeed, blind, finalize, now, verify_token};

/// Epochs a restore looks past an empty counter before it stops: a set-aside opening leaves
/// a gap of at most two, and a few in a row are allowed for.
const MAX_RESTORE_GAPS: u32 = 6;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Tokens new to this wallet, now unspent in it.
    pub added: usize,
    /// Tokens it held already.
    pub already_held: usize,
    /// Tokens left out because the ledger records them as spent.
    pub spent_skipped: usize,
}

impl Wallet {
    /// The unspent tokens with their keys, in the export format.
    pub async fn export(&self) -> anyhow::Result<ExportFile> {
        let mut tokens = Vec::new();
        for t in self.store.tokens(TokenState::Unspent).await? {
            let key = self
                .store
                .key(&t.token.token_key_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("a token's key is missing"))?;
            tokens.push(ExportedToken {
                token: t.token,
                key,
            });
        }
        Ok(ExportFile {
            version: EXPORT_VERSION,
            tokens,
        })
    }

    /// Imports tokens: each key must be on the ledger's directory as given, each signature
    /// valid; tokens the ledger records as spent are skipped (asked by prefix, so the ledger
    /// does not learn which tokens this wallet now holds).
    pub async fn import(&self, file: &ExportFile) -> Result<ImportSummary, WalletError> {
        if file.version != EXPORT_VERSION {
            return Err(anyhow::anyhow!(
                "export format version {} is not supported (expected {EXPORT_VERSION})",
                file.version
            )
            .into());
        }
        let directory = self.directory(None).await?;
        let mut checked = Vec::new();
        for e in &file.tokens {
            if !directory.iter().any(|r| r.info == e.key && !r.revoked) {
                return Err(WalletError::UntrustedKey {
                    kind: e.key.kind.to_string(),
                    key: e.key.public_key.id().to_string(),
                });
            }
            let challenge =
                TokenChallenge::for_issuer(&e.key.issuer).map_err(anyhow::Error::from)?;
            verify_token(&e.key.public_key, &challenge, &e.token)
                .map_err(|err| anyhow::anyhow!(err).context("an imported token is invalid"))?;
            checked.push(e);
        }
        let nullifiers: Vec<_> = checked.iter().map(|e| e.token.nullifier()).collect();
        let spent = self.spent_among(&nullifiers).await?;
        let accepted: Vec<_> = checked
            .iter()
            .filter(|e| !spent.contains_key(&e.token.nullifier()))
            .map(|e| (e.token.clone(), e.key.clone(), None))
            .collect();
        let added = self.store.add_tokens(&accepted, now()).await?;
        Ok(ImportSummary {
            added,
            already_held: accepted.len() - added,
            spent_skipped: checked.len() - accepted.len(),
        })
    }

    /// Rebuilds the tokens of every opening this seed made at `issuers`, walking request ids
    /// from counter 0 (PROTOCOL.md section 5.5). Returns how many tokens were recovered.
    pub async fn restore(&self, issuers: &[String]) -> Result<usize, WalletError> {
        let directory = self.directory(None).await?;
        let mut counter = 0u64;
        let mut misses = 0;
        let mut recovered = 0;
        'walk: loop {
            let id = RequestId(self.seed.request_id(counter));
            for issuer in issuers {
                let Some(replay) = self.replay(issuer, &id).await? else {
                    continue;
                };
                let mut tokens = Vec::new();
                for (j, (req, resp)) in replay.requests.iter().zip(&replay.responses).enumerate() {
                    let Some(record) = directory
                        .iter()
                        .find(|r| r.info.public_key.id() == req.token_key_id)
                    else {
                        continue;
                    };
                    let challenge = TokenChallenge::for_issuer(&record.info.issuer)
                        .map_err(anyhow::Error::from)?;
                    let (rebuilt, state) = blind(
                        &self.seed,
                        counter + j as u64,
                        &record.info.public_key,
                        &challenge,
                    )
                    .map_err(anyhow::Error::from)?;
                    if rebuilt != req.token_request {
                        continue;
                    }
                    if let Ok(token) = finalize(&record.info.public_key, &state, resp) {
                        tokens.push((token, record.info.clone(), Some(counter + j as u64)));
                    }
                }
                recovered += self.store.add_tokens(&tokens, now()).await?;
                let nullifiers: Vec<_> = tokens.iter().map(|(t, _, _)| t.nullifier()).collect();
                for n in self.spent_among(&nullifiers).await?.keys() {
                    self.store
                        .set_state(n, TokenState::Spent, None, Some("restored: spent"), now())
                        .await?;
                }
                counter += replay.requests.len().max(1) as u64;
                // Never lower the counter: openings beyond a gap at an issuer not listed here
                // must not be overwritten by new ones.
                if self.store.next_counter().await? < counter {
                    self.store
                        .set_meta("next_counter", &counter.to_string())
                        .await?;
                }
                misses = 0;
                continue 'walk;
            }
            // Nothing recorded here: an opening set aside may have left a gap, after which
            // the wallet started at the next epoch (PROTOCOL.md 5.4). Look a few epochs on.
            misses += 1;
            if misses > MAX_RESTORE_GAPS {
                break;
            }
            counter = WalletSeed::next_epoch(counter + 1);
        }
        Ok(recovered)
    }
}
