//! Token keys: loaded from the store, rotated, announced on the ledger, offered to wallets.

use super::{Issuer, now};
use crate::store::StoredKey;
use scrip_spec::api::issuer::IssuerKeys;
use scrip_spec::api::ledger::LedgerErrorCode;
use scrip_spec::ledger::Action;
use scrip_spec::{TokenKeyId, TokenKeyInfo, TokenSecretKey};
use std::collections::HashMap;
use std::sync::Arc;

const DAY: u64 = 86_400;

/// Keys generated at most for one kind in a rotation to find a free truncated id: with up to
/// 12 live keys per kind and a few kinds, fewer than one in four ids are taken.
const MAX_KEY_TRIES: usize = 64;

/// A key ready to sign.
#[derive(Debug)]
pub struct LoadedKey {
    /// Its metadata.
    pub info: TokenKeyInfo,
    /// The secret key.
    pub secret: TokenSecretKey,
}

impl Issuer {
    /// Reloads the announced keys from the store and the catalog from the ledger (if it
    /// answers).
    pub async fn reload_keys(&self) -> anyhow::Result<()> {
        self.keys.reload(|| self.load_keys()).await
    }

    async fn load_keys(&self) -> anyhow::Result<HashMap<TokenKeyId, Arc<LoadedKey>>> {
        use anyhow::Context as _;
        let mut loaded = HashMap::new();
        for k in self.store.keys().await? {
            if !k.announced {
                continue;
            }
            let pem = std::fs::read_to_string(&k.pem_path)
                .with_context(|| format!("cannot read token key {}", k.pem_path))?;
            let secret = TokenSecretKey::from_pem(&pem)?;
            loaded.insert(
                k.info.public_key.id(),
                Arc::new(LoadedKey {
                    info: k.info,
                    secret,
                }),
            );
        }
        if let Ok(catalog) = self.ledger.catalog().await
            && let Ok(mut c) = self.catalog.write()
        {
            *c = catalog;
        }
        Ok(loaded)
    }

    /// Generates the next key of every catalog kind, writes it (mode 0600), records it, and
    /// announces it and any key left unannounced before. Returns the keys announced now.
    pub async fn rotate_keys(&self) -> anyhow::Result<Vec<TokenKeyInfo>> {
        use anyhow::Context as _;
        // A key is usable only once announced: with the ledger down, making keys would only
        // leave them unannounced, and the next rotation would make more.
        let catalog = self.ledger.catalog().await.with_context(|| {
            format!(
                "keys are rotated only while the ledger at {} answers (a key is usable once announced); start it or fix ledger_url",
                self.ledger.url()
            )
        })?;
        if let Ok(mut c) = self.catalog.write() {
            *c = catalog;
        }
        std::fs::create_dir_all(&self.config.keys_dir)
            .with_context(|| format!("cannot create {}", self.config.keys_dir.display()))?;
        let catalog = self
            .catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let t = now();
        // Truncated ids (the last byte of a key id) stay unique among the keys that can sign,
        // so a standard token request names one key (RFC 9578 section 5).
        let mut taken: std::collections::HashSet<u8> = self
            .store
            .keys()
            .await?
            .iter()
            .filter(|k| k.info.issue_until >= t)
            .map(|k| k.info.public_key.id().0[31])
            .collect();
        for entry in &catalog.entries {
            let mut secret = TokenSecretKey::generate()?;
            for _ in 0..MAX_KEY_TRIES {
                if !taken.contains(&secret.public_key().id().0[31]) {
                    break;
                }
                secret = TokenSecretKey::generate()?;
            }
            anyhow::ensure!(
                taken.insert(secret.public_key().id().0[31]),
                "no key with a free truncated id in {MAX_KEY_TRIES} tries; {} keys can sign now",
                taken.len()
            );
            let issue_until = t + self.config.issue_days * DAY;
            let redeem_until = issue_until + self.config.redeem_days * DAY;
            let info = TokenKeyInfo {
                public_key: secret.public_key().clone(),
                issuer: self.name.clone(),
                kind: entry.kind.clone(),
                valid_from: t,
                issue_until,
                redeem_until,
                forget_after: redeem_until + self.config.forget_days * DAY,
            };
            let path =
                self.config
                    .keys_dir
                    .join(format!("{}-{}.pem", entry.kind, info.public_key.id()));
            scrip_spec::secret_file::write_private(&path, secret.to_pem()?.as_bytes(), false)?;
            self.store
                .insert_key(
                    &StoredKey {
                        info,
                        pem_path: path.display().to_string(),
                        announced: false,
                    },
                    t,
                )
                .await?;
        }
        let mut announced = Vec::new();
        for k in self.store.keys().await? {
            if k.announced || k.info.redeem_until < t {
                continue;
            }
            let id = k.info.public_key.id();
            let request = self.sign(
                Action::AnnounceKey {
                    key: k.info.clone(),
                },
                now(),
            );
            match self.ledger.submit(&request).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(LedgerErrorCode::ReplayedRequest) => {}
                Err(e) => {
                    // An earlier run's announcement may have landed without this store
                    // hearing of it: the ledger's directory says.
                    let listed = self
                        .ledger
                        .keys(Some(&self.name), Some(&k.info.kind))
                        .await
                        .map(|dir| dir.iter().any(|r| r.info == k.info))
                        .unwrap_or(false);
                    if !listed {
                        return Err(anyhow::Error::new(e).context(format!(
                            "the ledger did not accept key {id} ({})",
                            k.info.kind
                        )));
                    }
                }
            }
            self.store.mark_announced(&id).await?;
            announced.push(k.info);
        }
        self.reload_keys().await?;
        Ok(announced)
    }

    /// The keys wallets may ask for: announced, and able to issue now or later.
    pub fn public_keys(&self) -> IssuerKeys {
        let t = now();
        let mut keys: Vec<TokenKeyInfo> = self
            .keys
            .all()
            .iter()
            .filter(|k| k.info.issue_until >= t)
            .map(|k| k.info.clone())
            .collect();
        keys.sort_by(|a, b| (a.kind.as_str(), a.valid_from).cmp(&(b.kind.as_str(), b.valid_from)));
        IssuerKeys {
            issuer: self.name.clone(),
            keys,
        }
    }

    /// The key that signs a standard token request, by the last byte of its id (RFC 9578
    /// section 5): rotation keeps those bytes unique among the keys that can sign.
    pub fn key_for_truncated_id(&self, truncated: u8) -> Result<TokenKeyId, super::OpenError> {
        let ids: Vec<TokenKeyId> = self
            .public_keys()
            .keys
            .iter()
            .map(|k| k.public_key.id())
            .filter(|id| id.0[31] == truncated)
            .collect();
        match ids.as_slice() {
            [id] => Ok(*id),
            [] => Err(super::OpenError::UnknownKey { index: 0 }),
            _ => Err(super::OpenError::Malformed(format!(
                "{} keys that can sign share the truncated id {truncated}; ask by full key id with POST /v1/cards/open",
                ids.len()
            ))),
        }
    }

    /// A signing key by id; reloads once from the store if it is not known (a key rotated by
    /// another process).
    pub(super) async fn key(&self, id: &TokenKeyId) -> Option<Arc<LoadedKey>> {
        self.keys
            .get_or_reload(id, || self.load_keys())
            .await
            .ok()
            .flatten()
    }
}
