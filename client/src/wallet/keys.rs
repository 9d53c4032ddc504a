//! Which issuer key the wallet uses: the one the ledger's directory says every wallet must
//! use at this moment ([`issuance_key`]), and only if the issuer offers exactly that key, so an
//! issuer cannot tag a user with a key of its own, or by hiding its newest key from one user.

use super::{Wallet, WalletError};
use scrip_spec::api::ledger::issuance_key;
use scrip_spec::ledger::MAX_LIVE_KEYS;
use scrip_spec::{CapacityKind, TokenKeyInfo, now};
use std::collections::BTreeMap;

impl Wallet {
    /// The key to use for each kind asked at this issuer: chosen from the ledger's directory,
    /// never from what the issuer offers. The issuer is refused, before anything is sent to
    /// it, if it does not offer that key with the same metadata, if it offers a key the
    /// directory does not list, or if the directory lists more live keys for it and a kind
    /// than allowed.
    pub async fn trusted_keys(
        &self,
        issuer_url: &str,
        kinds: &[CapacityKind],
    ) -> Result<BTreeMap<CapacityKind, TokenKeyInfo>, WalletError> {
        let offered = self
            .issuer(issuer_url)
            .keys()
            .await
            .map_err(WalletError::from_issuer)?;
        let directory = self.directory(Some(&offered.issuer)).await?;
        let t = now();
        let mut chosen = BTreeMap::new();
        for kind in kinds {
            let live = directory
                .iter()
                .filter(|r| &r.info.kind == kind && r.is_live(t))
                .count();
            if live > MAX_LIVE_KEYS {
                return Err(WalletError::TooManyKeys {
                    issuer: offered.issuer.clone(),
                    kind: kind.to_string(),
                    count: live,
                });
            }
            // Whatever it offers for the kind must be on the directory as announced.
            for k in offered
                .keys
                .iter()
                .filter(|k| &k.kind == kind && k.can_issue_at(t))
            {
                let listed = directory.iter().any(|r| &r.info == k && !r.revoked);
                if !listed || k.issuer != offered.issuer {
                    return Err(WalletError::UntrustedKey {
                        kind: kind.to_string(),
                        key: k.public_key.id().to_string(),
                    });
                }
            }
            let must = issuance_key(&directory, &offered.issuer, kind, t).ok_or_else(|| {
                WalletError::NoKey {
                    issuer: offered.issuer.clone(),
                    kind: kind.to_string(),
                }
            })?;
            if !offered.keys.iter().any(|k| k == &must.info) {
                return Err(WalletError::KeyWithheld {
                    issuer: offered.issuer.clone(),
                    kind: kind.to_string(),
                    key: must.info.public_key.id().to_string(),
                });
            }
            chosen.insert(kind.clone(), must.info.clone());
        }
        Ok(chosen)
    }
}
