//! Which issuer keys the wallet trusts: only keys the ledger's directory lists identically,
//! within the live-key limit, so an issuer cannot tag a user with a key of its own.

use super::{Wallet, WalletError};
use scrip_spec::ledger::MAX_LIVE_KEYS;
use scrip_spec::{CapacityKind, TokenKeyInfo, now};
use std::collections::BTreeMap;

impl Wallet {
    /// The issuer's keys for each kind asked, each checked against the ledger's directory:
    /// the same key with the same metadata, not revoked, and no more than the allowed number
    /// of live keys for that issuer and kind (a key per user would exceed it).
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
            let mut best: Option<&TokenKeyInfo> = None;
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
                if best.is_none_or(|b| b.valid_from < k.valid_from) {
                    best = Some(k);
                }
            }
            let best = best.ok_or_else(|| WalletError::NoKey {
                issuer: offered.issuer.clone(),
                kind: kind.to_string(),
            })?;
            chosen.insert(kind.clone(), best.clone());
        }
        Ok(chosen)
    }
}
