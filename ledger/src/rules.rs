//! The rules every entry must satisfy, as pure functions over the ledger's state. The ledger
//! applies them before appending, and an auditor replaying the log applies the same ones.

use crate::store::{Effect, Snapshot};
use scrip_spec::api::ledger::{KeyRecord, SpendRefusal};
use scrip_spec::ledger::{
    Action, Genesis, Hash32, LedgerRequest, MAX_CLOCK_SKEW, MAX_LIVE_KEYS, MAX_SPEND_BATCH,
    OperatorInfo, Role, SpendGroup,
};
use scrip_spec::{Catalog, Nullifier, OperatorId, Signed, TokenKeyId, UnixSeconds};
use std::collections::{HashMap, HashSet};

/// Largest count or credit total one entry may report: far above any real batch, and small
/// enough that a lifetime of entries cannot overflow the 63-bit counters of the databases.
pub const MAX_REPORTED_COUNT: u64 = 1 << 40;

/// Why a request was refused. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The signer is not a member.
    #[error("operator {operator} is not a member of this ledger")]
    UnknownOperator {
        /// The signer.
        operator: OperatorId,
    },
    /// The signature does not verify.
    #[error("the request's signature does not verify")]
    BadSignature,
    /// The request was signed for another ledger.
    #[error("the request is for another ledger")]
    WrongLedger,
    /// The timestamp is too far from the ledger's clock.
    #[error(
        "the request's timestamp {timestamp} is more than {MAX_CLOCK_SKEW} s from the ledger's clock ({now}); check the clock and sign a fresh request"
    )]
    Stale {
        /// The request's timestamp.
        timestamp: UnixSeconds,
        /// The ledger's clock.
        now: UnixSeconds,
    },
    /// The same signed request was already accepted.
    #[error("this exact request was already accepted; sign a new one to repeat the action")]
    Replayed,
    /// The signer lacks the role.
    #[error(
        "operator {operator} may not do this: it lacks the {role:?} role or does not own the object"
    )]
    Forbidden {
        /// The signer's name.
        operator: String,
        /// The role needed.
        role: Role,
    },
    /// A spend request with too many nullifiers.
    #[error("a spend request carries at most {MAX_SPEND_BATCH} nullifiers; this has {count}")]
    TooLarge {
        /// Nullifiers in the request.
        count: usize,
    },
    /// The request is well formed but breaks a rule.
    #[error("{reason}")]
    Invalid {
        /// What rule.
        reason: String,
    },
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        reason: reason.into(),
    }
}

/// The ledger's state: what the rules need to judge the next entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LedgerState {
    /// The ledger id.
    pub ledger_id: Hash32,
    /// The genesis.
    pub genesis: Genesis,
    /// Members by key.
    pub operators: HashMap<OperatorId, OperatorInfo>,
    /// Current catalog.
    pub catalog: Catalog,
    /// Keys by id.
    pub keys: HashMap<TokenKeyId, KeyRecord>,
    /// Last entry.
    pub head: (u64, Hash32),
}

/// A judged request: the effect to apply, and the nullifiers refused before the spent set.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// What to change.
    pub effect: Effect,
    /// For a spend, per nullifier in request order: refused by the key checks, or not.
    pub refused: Vec<Option<SpendRefusal>>,
}

impl LedgerState {
    /// The state after genesis alone.
    pub fn from_genesis(genesis: Genesis, head: (u64, Hash32)) -> Self {
        Self {
            ledger_id: genesis.ledger_id(),
            operators: genesis
                .operators
                .iter()
                .map(|o| (o.id, o.clone()))
                .collect(),
            catalog: genesis.catalog.clone(),
            keys: HashMap::new(),
            genesis,
            head,
        }
    }

    /// The state as stored.
    pub fn from_snapshot(s: Snapshot) -> Self {
        let mut state = Self::from_genesis(s.genesis, s.head);
        state.operators = s.operators.into_iter().map(|o| (o.id, o)).collect();
        state.catalog = s.catalog;
        state.keys = s
            .keys
            .into_iter()
            .map(|k| (k.info.public_key.id(), k))
            .collect();
        state
    }

    /// Checks a genesis before it is written.
    pub fn check_genesis(genesis: &Genesis) -> Result<(), Refusal> {
        genesis
            .catalog
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        if genesis.operators.is_empty() {
            return Err(invalid("the genesis names no operator"));
        }
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        for op in &genesis.operators {
            check_operator(op)?;
            if !names.insert(&op.name) || !ids.insert(op.id) || op.id == genesis.ledger_key {
                return Err(invalid(format!(
                    "operator {} appears twice or reuses a key",
                    op.name
                )));
            }
        }
        Ok(())
    }

    /// Live keys of (issuer, kind) at `now`.
    pub fn live_keys(&self, issuer: &str, kind: &scrip_spec::CapacityKind, now: u64) -> usize {
        self.keys
            .values()
            .filter(|k| k.is_live(now) && k.info.issuer == issuer && &k.info.kind == kind)
            .count()
    }

    /// Judges a signed request at `now`: authentication, authorization and the action's own
    /// rules. Replay of an accepted request is caught by the store's unique index.
    pub fn judge(
        &self,
        signed: &Signed<LedgerRequest>,
        now: UnixSeconds,
    ) -> Result<Judgement, Refusal> {
        let operator = self
            .operators
            .get(&signed.signer)
            .ok_or(Refusal::UnknownOperator {
                operator: signed.signer,
            })?;
        let request = signed.verify().map_err(|_| Refusal::BadSignature)?;
        if request.ledger_id != self.ledger_id {
            return Err(Refusal::WrongLedger);
        }
        if request.timestamp.abs_diff(now) > MAX_CLOCK_SKEW {
            return Err(Refusal::Stale {
                timestamp: request.timestamp,
                now,
            });
        }
        let need = |role: Role| -> Result<(), Refusal> {
            if operator.roles.contains(&role) {
                Ok(())
            } else {
                Err(Refusal::Forbidden {
                    operator: operator.name.clone(),
                    role,
                })
            }
        };
        let plain = |effect| {
            Ok(Judgement {
                effect,
                refused: Vec::new(),
            })
        };
        match &request.action {
            Action::AdmitOperator { operator: new } => {
                need(Role::Admin)?;
                check_operator(new)?;
                if self.operators.contains_key(&new.id)
                    || self.operators.values().any(|o| o.name == new.name)
                    || new.id == self.genesis.ledger_key
                {
                    return Err(invalid(format!(
                        "operator {} or its key is already a member",
                        new.name
                    )));
                }
                plain(Effect::AdmitOperator(new.clone()))
            }
            Action::SetCatalog { catalog } => {
                need(Role::Admin)?;
                catalog.validate().map_err(|e| invalid(e.to_string()))?;
                plain(Effect::SetCatalog(catalog.clone()))
            }
            Action::AnnounceKey { key } => {
                need(Role::Issuer)?;
                if key.issuer != operator.name {
                    return Err(Refusal::Forbidden {
                        operator: operator.name.clone(),
                        role: Role::Issuer,
                    });
                }
                key.validate().map_err(|e| invalid(e.to_string()))?;
                if self.catalog.price(&key.kind).is_none() {
                    return Err(invalid(format!("kind {} is not in the catalog", key.kind)));
                }
                if key.redeem_until < now {
                    return Err(invalid("the key's redemption window is already over"));
                }
                if self.keys.contains_key(&key.public_key.id()) {
                    return Err(invalid(format!(
                        "key {} is already announced",
                        key.public_key.id()
                    )));
                }
                if self.live_keys(&key.issuer, &key.kind, now) >= MAX_LIVE_KEYS {
                    return Err(invalid(format!(
                        "issuer {} already has {MAX_LIVE_KEYS} live keys for {}; at most {MAX_LIVE_KEYS} may be live at once",
                        key.issuer, key.kind
                    )));
                }
                plain(Effect::AnnounceKey(key.clone()))
            }
            Action::RevokeKey {
                token_key_id,
                reason: _,
            } => {
                let key = self
                    .keys
                    .get(token_key_id)
                    .ok_or_else(|| invalid(format!("key {token_key_id} is not announced")))?;
                let owner = key.info.issuer == operator.name;
                if !owner && !operator.roles.contains(&Role::Admin) {
                    return Err(Refusal::Forbidden {
                        operator: operator.name.clone(),
                        role: Role::Admin,
                    });
                }
                if key.revoked {
                    return Err(invalid(format!("key {token_key_id} is already revoked")));
                }
                plain(Effect::RevokeKey(*token_key_id))
            }
            Action::CardsSold {
                batch: _,
                count,
                credits,
            } => {
                need(Role::Issuer)?;
                if *count == 0 || *credits == 0 {
                    return Err(invalid("a sold batch has at least one card and one credit"));
                }
                if *count > MAX_REPORTED_COUNT || *credits > MAX_REPORTED_COUNT {
                    return Err(invalid(format!(
                        "counts and credits in one entry are at most {MAX_REPORTED_COUNT}"
                    )));
                }
                plain(Effect::CardsSold {
                    issuer: operator.name.clone(),
                    count: *count,
                    credits: *credits,
                })
            }
            Action::TokensIssued {
                token_key_id,
                count,
                from,
                until,
            } => {
                need(Role::Issuer)?;
                let key = self
                    .keys
                    .get(token_key_id)
                    .ok_or_else(|| invalid(format!("key {token_key_id} is not announced")))?;
                if key.info.issuer != operator.name {
                    return Err(Refusal::Forbidden {
                        operator: operator.name.clone(),
                        role: Role::Issuer,
                    });
                }
                if from > until || *count == 0 || *count > MAX_REPORTED_COUNT {
                    return Err(invalid(format!(
                        "an issuance report needs from <= until and 0 < count <= {MAX_REPORTED_COUNT}"
                    )));
                }
                plain(Effect::TokensIssued {
                    token_key_id: *token_key_id,
                    count: *count,
                })
            }
            Action::Spend { groups } => {
                need(Role::Redeemer)?;
                let count: usize = groups.iter().map(|g| g.nullifiers.len()).sum();
                if count > MAX_SPEND_BATCH {
                    return Err(Refusal::TooLarge { count });
                }
                if count == 0 {
                    return Err(invalid("a spend request carries at least one nullifier"));
                }
                Ok(self.judge_spend(groups, now))
            }
        }
    }

    fn judge_spend(&self, groups: &[SpendGroup], now: UnixSeconds) -> Judgement {
        let mut seen = HashSet::new();
        let mut valid: Vec<SpendGroup> = Vec::new();
        let mut refused: Vec<Option<SpendRefusal>> = Vec::new();
        for group in groups {
            let verdict = match self.keys.get(&group.token_key_id) {
                None => Some(SpendRefusal::UnknownKey),
                Some(k) if k.revoked => Some(SpendRefusal::KeyRevoked),
                Some(k) if !k.info.can_redeem_at(now) => Some(SpendRefusal::NotRedeemable),
                Some(_) => None,
            };
            match verdict {
                Some(why) => refused.extend(group.nullifiers.iter().map(|_| Some(why))),
                None => {
                    refused.extend(group.nullifiers.iter().map(|_| None));
                    // A nullifier repeated within one request is inserted once; its later
                    // occurrences are answered `duplicate_in_request`.
                    let fresh: Vec<Nullifier> = group
                        .nullifiers
                        .iter()
                        .filter(|n| seen.insert(**n))
                        .copied()
                        .collect();
                    if let Some(existing) = valid
                        .iter_mut()
                        .find(|g| g.token_key_id == group.token_key_id)
                    {
                        existing.nullifiers.extend(fresh);
                    } else {
                        valid.push(SpendGroup {
                            token_key_id: group.token_key_id,
                            nullifiers: fresh,
                        });
                    }
                }
            }
        }
        Judgement {
            effect: Effect::Spend { groups: valid },
            refused,
        }
    }

    /// Updates the state after an entry with `effect` was appended at `head`.
    pub fn apply(
        &mut self,
        effect: &Effect,
        head: (u64, Hash32),
        accepted_spends: &[(TokenKeyId, u64)],
    ) {
        self.head = head;
        match effect {
            Effect::AdmitOperator(op) => {
                self.operators.insert(op.id, op.clone());
            }
            Effect::SetCatalog(c) => self.catalog = c.clone(),
            Effect::AnnounceKey(info) => {
                self.keys.insert(
                    info.public_key.id(),
                    KeyRecord {
                        info: info.clone(),
                        announced_seq: head.0,
                        revoked: false,
                        issued: 0,
                        spent: 0,
                        pruned: 0,
                    },
                );
            }
            Effect::RevokeKey(id) => {
                if let Some(k) = self.keys.get_mut(id) {
                    k.revoked = true;
                }
            }
            Effect::TokensIssued {
                token_key_id,
                count,
            } => {
                if let Some(k) = self.keys.get_mut(token_key_id) {
                    k.issued = k.issued.saturating_add(*count);
                }
            }
            Effect::Spend { .. } => {
                for (id, n) in accepted_spends {
                    if let Some(k) = self.keys.get_mut(id) {
                        k.spent = k.spent.saturating_add(*n);
                    }
                }
            }
            Effect::Pruned {
                token_key_id,
                count,
            } => {
                if let Some(k) = self.keys.get_mut(token_key_id) {
                    k.pruned = k.pruned.saturating_add(*count);
                }
            }
            Effect::Genesis(_) | Effect::CardsSold { .. } | Effect::None => {}
        }
    }
}

fn check_operator(op: &OperatorInfo) -> Result<(), Refusal> {
    let ok_name = !op.name.is_empty()
        && op.name.len() <= 255
        && op
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !ok_name {
        return Err(invalid(format!(
            "operator name {:?} must be 1 to 255 characters of letters, digits, '-', '.', '_'",
            op.name
        )));
    }
    if op.roles.is_empty() {
        return Err(invalid(format!("operator {} has no role", op.name)));
    }
    Ok(())
}
