//! Backup: moving unspent tokens in the export format, and rebuilding every token from the
//! seed alone through the issuers' replay endpoint.

use super::{Wallet, WalletError};
use crate::store::TokenState;
use scrip_spec::api::issuer::RequestId;
use scrip_spec::api::ledger::NullifierStatus;
use scrip_spec::codes::export::{EXPORT_VERSION, ExportFile, ExportedToken};
use scrip_spec::{TokenChallenge, blind, finalize, now, verify_token};

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
    /// valid, each nullifier unspent. Returns how many were new.
    pub async fn import(&self, file: &ExportFile) -> Result<usize, WalletError> {
        if file.version != EXPORT_VERSION {
            return Err(anyhow::anyhow!(
                "export format version {} is not supported (expected {EXPORT_VERSION})",
                file.version
            )
            .into());
        }
        let directory = self.directory(None).await?;
        let mut accepted = Vec::new();
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
            if let Ok(NullifierStatus::Spent { .. }) =
                self.ledger.nullifier(&e.token.nullifier()).await
            {
                continue;
            }
            accepted.push((e.token.clone(), e.key.clone(), None));
        }
        Ok(self.store.add_tokens(&accepted, now()).await?)
    }

    /// Rebuilds the tokens of every opening this seed made at `issuers`, walking request ids
    /// from counter 0 (PROTOCOL.md section 5.5). Returns how many tokens were recovered.
    pub async fn restore(&self, issuers: &[String]) -> Result<usize, WalletError> {
        let directory = self.directory(None).await?;
        let mut counter = 0u64;
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
                for (token, _, _) in &tokens {
                    if let Ok(NullifierStatus::Spent { .. }) =
                        self.ledger.nullifier(&token.nullifier()).await
                    {
                        self.store
                            .set_state(
                                &token.nullifier(),
                                TokenState::Spent,
                                None,
                                Some("restored: spent"),
                                now(),
                            )
                            .await?;
                    }
                }
                counter += replay.requests.len().max(1) as u64;
                // Never lower the counter: openings beyond a gap at an issuer not listed here
                // must not be overwritten by new ones.
                if self.store.next_counter().await? < counter {
                    self.store
                        .set_meta("next_counter", &counter.to_string())
                        .await?;
                }
                continue 'walk;
            }
            break;
        }
        Ok(recovered)
    }
}
