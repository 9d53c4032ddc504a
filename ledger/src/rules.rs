//! The rules every entry must satisfy, as pure functions over the ledger's state. The ledger
//! applies them before appending, and an auditor replaying the log applies the same ones.

use crate::store::{Effect, GovernanceEffect, NullifierGroup, Snapshot};
use scrip_spec::api::ledger::{KeyRecord, SpendRefusal};
use scrip_spec::committee::{CommitteeMember, CommitteeSchedule};
use scrip_spec::ledger::{
    Action, Approval, Change, Genesis, Hash32, LedgerRequest, MAX_CLOCK_SKEW, MAX_LIVE_KEYS,
    MAX_REFRESH_BATCH, MAX_RETAINED_KEYS, MAX_SPEND_BATCH, OperatorInfo, Proposal, RefreshOutput,
    Role, SpendGroup,
};
use scrip_spec::{
    Catalog, Nullifier, OperatorId, Signed, Token, TokenChallenge, TokenKeyId, UnixSeconds,
    verify_token_with_digest,
};
use std::collections::{HashMap, HashSet};

/// Most approvals one governance change may carry: checking them costs signature
/// verifications under the writer lock.
pub const MAX_APPROVALS: usize = 64;

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
    /// A spend request with too many tokens.
    #[error("a spend request carries at most {MAX_SPEND_BATCH} tokens; this has {count}")]
    TooLarge {
        /// Tokens in the request.
        count: usize,
    },
    /// A token of a spend does not verify: the whole request is refused, since a redeemer
    /// verifies every token before it spends it.
    #[error(
        "token {index} of the spend (counting from 0) does not verify: {reason}; nothing was spent"
    )]
    InvalidToken {
        /// Its position in the request.
        index: usize,
        /// What failed.
        reason: String,
    },
    /// An admin's approval of a governance change does not verify.
    #[error("the approval by admin {admin} does not verify for this proposal")]
    BadApproval {
        /// The admin named in the approval.
        admin: OperatorId,
    },
    /// A governance change without enough admin approvals.
    #[error(
        "a governance change needs {need} distinct admin approvals; this one has {have} valid ones"
    )]
    NoQuorum {
        /// Valid approvals by distinct current admins.
        have: u32,
        /// Approvals needed.
        need: u32,
    },
    /// A proposal approved before another governance change applied.
    #[error(
        "the proposal names governance_seq {proposal} but the ledger is at {current}; make and approve it again"
    )]
    StaleProposal {
        /// What the proposal names.
        proposal: u64,
        /// Where the ledger is.
        current: u64,
    },
    /// A refresh with more inputs or outputs than [`MAX_REFRESH_BATCH`].
    #[error(
        "a refresh carries at most {MAX_REFRESH_BATCH} input and {MAX_REFRESH_BATCH} output tokens; this has {count}"
    )]
    RefreshTooLarge {
        /// Tokens on the larger side.
        count: u64,
    },
    /// An input of a refresh was spent before: the whole refresh is refused, nothing spent.
    #[error(
        "input {index} of the refresh (counting from 0) was spent at {first_spent_at} by {first_spent_by} (entry {seq}); nothing was spent"
    )]
    AlreadySpent {
        /// Its position among the inputs.
        index: usize,
        /// When it was first spent.
        first_spent_at: UnixSeconds,
        /// Who first spent it.
        first_spent_by: String,
        /// The entry that spent it.
        seq: u64,
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
    /// Removed members by key: their names and keys are never given to anyone else.
    pub former: HashMap<OperatorId, OperatorInfo>,
    /// Current catalog.
    pub catalog: Catalog,
    /// Sequence number of the entry that set the current catalog (0: the genesis's).
    pub catalog_version: u64,
    /// Governance changes applied so far.
    pub governance_seq: u64,
    /// Keys by id.
    pub keys: HashMap<TokenKeyId, KeyRecord>,
    /// Last entry.
    pub head: (u64, Hash32),
    /// The committee's changes since the genesis (committee ledgers).
    #[serde(default)]
    pub committee: CommitteeSchedule,
}

/// A judged request: the effect to apply, and the nullifiers refused before the spent set.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// What to change.
    pub effect: Effect,
    /// For a spend, per token in request order: its key, its nullifier, and whether the key
    /// checks refused it.
    pub spends: Vec<(TokenKeyId, Nullifier, Option<SpendRefusal>)>,
}

/// Whether a judgement checks the operator's signature or was told it was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    Verify,
    Verified,
}

/// Which spent tokens' signatures a judgement may take as verified.
#[derive(Debug, Clone, Copy)]
pub enum Verified<'a> {
    /// The tokens of these keys were verified (by [`LedgerState::verify_spend`]).
    Keys(&'a HashSet<TokenKeyId>),
    /// All of them: the ledger's own log, re-read at start-up, was verified when written.
    All,
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
            former: HashMap::new(),
            catalog: genesis.catalog.clone(),
            catalog_version: 0,
            governance_seq: 0,
            keys: HashMap::new(),
            genesis,
            head,
            committee: CommitteeSchedule::default(),
        }
    }

    /// The state as stored.
    pub fn from_snapshot(s: Snapshot) -> Self {
        let mut state = Self::from_genesis(s.genesis, s.head);
        state.operators = s.operators.into_iter().map(|o| (o.id, o)).collect();
        state.former = s.former.into_iter().map(|o| (o.id, o)).collect();
        state.catalog = s.catalog;
        state.catalog_version = s.catalog_version;
        state.governance_seq = s.governance_seq;
        state.committee = s.committee;
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
        check_committee(genesis, &ids)?;
        let admins = admins_in(genesis.operators.iter());
        if let Some(quorum) = genesis.admin_quorum
            && (quorum == 0 || quorum > admins)
        {
            return Err(invalid(format!(
                "admin_quorum {quorum} must be between 1 and the {admins} admins of the genesis"
            )));
        }
        Ok(())
    }

    /// The committee that orders `session` (empty for a one-node ledger).
    pub fn committee_for(&self, session: u64) -> &[CommitteeMember] {
        self.committee.for_session(&self.genesis.committee, session)
    }

    /// The committee after every change so far: the nodes clients send requests to.
    pub fn latest_committee(&self) -> &[CommitteeMember] {
        self.committee.latest(&self.genesis.committee)
    }

    /// Distinct admin approvals a governance change needs now: the genesis's `admin_quorum`,
    /// or a majority of the current admins.
    pub fn admin_quorum(&self) -> u32 {
        self.genesis
            .admin_quorum
            .unwrap_or_else(|| admins_in(self.operators.values()) / 2 + 1)
    }

    /// Live keys of (issuer, kind) at `now`.
    pub fn live_keys(&self, issuer: &str, kind: &scrip_spec::CapacityKind, now: u64) -> usize {
        self.keys
            .values()
            .filter(|k| k.is_live(now) && k.info.issuer == issuer && &k.info.kind == kind)
            .count()
    }

    /// The name of an operator, current or removed; its key if the ledger never knew it.
    pub fn operator_name(&self, id: &OperatorId) -> String {
        self.operators
            .get(id)
            .or_else(|| self.former.get(id))
            .map(|o| o.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Checks what needs no ledger state beyond membership: the signer is a member, the
    /// signature verifies, the request is for this ledger and recent. The ledger runs it
    /// before it takes the writer lock.
    pub fn authenticate<'s>(
        &'s self,
        signed: &Signed<LedgerRequest>,
        now: UnixSeconds,
    ) -> Result<&'s OperatorInfo, Refusal> {
        self.authenticate_as(signed, now, Signature::Verify)
    }

    fn authenticate_as<'s>(
        &'s self,
        signed: &Signed<LedgerRequest>,
        now: UnixSeconds,
        signature: Signature,
    ) -> Result<&'s OperatorInfo, Refusal> {
        let operator = self
            .operators
            .get(&signed.signer)
            .ok_or(Refusal::UnknownOperator {
                operator: signed.signer,
            })?;
        if signature == Signature::Verify {
            signed.verify().map_err(|_| Refusal::BadSignature)?;
        }
        let request = &signed.payload;
        if request.ledger_id != self.ledger_id {
            return Err(Refusal::WrongLedger);
        }
        if request.timestamp.abs_diff(now) > MAX_CLOCK_SKEW {
            return Err(Refusal::Stale {
                timestamp: request.timestamp,
                now,
            });
        }
        Ok(operator)
    }

    /// What a spend request must be before any of its tokens is looked at: from a redeemer,
    /// with 1 to [`MAX_SPEND_BATCH`] tokens. Checked before the RSA work, so that a member
    /// without the role, or an oversized batch, costs no verification.
    pub fn check_spend_shape(
        operator: &OperatorInfo,
        groups: &[SpendGroup],
    ) -> Result<(), Refusal> {
        if !operator.roles.contains(&Role::Redeemer) {
            return Err(forbidden(operator, Role::Redeemer));
        }
        let count: usize = groups.iter().map(|g| g.tokens.len()).sum();
        if count > MAX_SPEND_BATCH {
            return Err(Refusal::TooLarge { count });
        }
        if count == 0 {
            return Err(invalid("a spend request carries at least one token"));
        }
        Ok(())
    }

    /// What a refresh must be before any of its tokens is looked at: from an issuer, with 1 to
    /// [`MAX_REFRESH_BATCH`] inputs and as many outputs, each output count at least 1.
    pub fn check_refresh_shape(
        operator: &OperatorInfo,
        inputs: &[SpendGroup],
        outputs: &[RefreshOutput],
    ) -> Result<(), Refusal> {
        if !operator.roles.contains(&Role::Issuer) {
            return Err(forbidden(operator, Role::Issuer));
        }
        let ins = inputs.iter().map(|g| g.tokens.len() as u64).sum::<u64>();
        let outs = outputs
            .iter()
            .map(|o| o.count)
            .fold(0u64, u64::saturating_add);
        let most = ins.max(outs);
        if most > MAX_REFRESH_BATCH as u64 {
            return Err(Refusal::RefreshTooLarge { count: most });
        }
        if ins == 0 || outputs.is_empty() || outputs.iter().any(|o| o.count == 0) {
            return Err(invalid(
                "a refresh carries at least one input token and one output token per output key",
            ));
        }
        Ok(())
    }

    /// The keys of a spend whose tokens pass the key checks at `now` (known, not revoked, in
    /// the redemption window): the ones whose tokens must be verified.
    pub fn keys_to_verify(&self, groups: &[SpendGroup], now: UnixSeconds) -> HashSet<TokenKeyId> {
        groups
            .iter()
            .filter(|g| self.key_verdict(&g.token_key_id, now).is_none())
            .map(|g| g.token_key_id)
            .collect()
    }

    /// Verifies every token of the spend's groups of `keys` (key id, challenge digest of the
    /// key's issuer, RSA signature), spread over all cores. The first failure, in request
    /// order, refuses the whole request.
    pub fn verify_spend(
        &self,
        groups: &[SpendGroup],
        keys: &HashSet<TokenKeyId>,
    ) -> Result<(), Refusal> {
        let mut work: Vec<(usize, &Token, &scrip_spec::TokenPublicKey, [u8; 32])> = Vec::new();
        let mut index = 0;
        for group in groups {
            let record = keys
                .contains(&group.token_key_id)
                .then(|| self.keys.get(&group.token_key_id))
                .flatten();
            if let Some(record) = record {
                let digest = TokenChallenge::for_issuer(&record.info.issuer)
                    .map_err(|e| invalid(format!("key {}: {e}", group.token_key_id)))?
                    .digest();
                for token in &group.tokens {
                    work.push((index, token, &record.info.public_key, digest));
                    index += 1;
                }
            } else {
                index += group.tokens.len();
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let first_failure =
            first_failure_on_all_cores(&work, threads, |(i, token, key, digest)| {
                verdict_of(*i, || verify_token_with_digest(key, digest, token))
            });
        match first_failure {
            Some((index, reason)) => Err(Refusal::InvalidToken { index, reason }),
            None => Ok(()),
        }
    }

    /// Judges a signed request at `now`: authentication, authorization and the action's own
    /// rules. The tokens of a spend must have been verified as `verified` says. Replay of an
    /// accepted request is caught by the store's unique index.
    pub fn judge(
        &self,
        signed: &Signed<LedgerRequest>,
        now: UnixSeconds,
        session: Option<u64>,
        verified: Verified<'_>,
    ) -> Result<Judgement, Refusal> {
        self.judge_as(signed, now, session, verified, Signature::Verify)
    }

    /// [`Self::judge`] of a request whose operator signature [`Self::authenticate`] already
    /// verified (the ledger, before its writer lock): membership, ledger id and clock are
    /// checked again, the signature is not.
    pub fn judge_authenticated(
        &self,
        signed: &Signed<LedgerRequest>,
        now: UnixSeconds,
        session: Option<u64>,
        verified: Verified<'_>,
    ) -> Result<Judgement, Refusal> {
        self.judge_as(signed, now, session, verified, Signature::Verified)
    }

    /// `session`: the consensus session that ordered the request (committee ledgers), which
    /// a membership change needs.
    fn judge_as(
        &self,
        signed: &Signed<LedgerRequest>,
        now: UnixSeconds,
        session: Option<u64>,
        verified: Verified<'_>,
        signature: Signature,
    ) -> Result<Judgement, Refusal> {
        let operator = self.authenticate_as(signed, now, signature)?;
        let request = &signed.payload;
        let need = |role: Role| -> Result<(), Refusal> {
            if operator.roles.contains(&role) {
                Ok(())
            } else {
                Err(forbidden(operator, role))
            }
        };
        let plain = |effect| {
            Ok(Judgement {
                effect,
                spends: Vec::new(),
            })
        };
        match &request.action {
            Action::Govern {
                proposal,
                approvals,
            } => plain(self.judge_governance(proposal, approvals, session)?),
            Action::AnnounceKey { key } => {
                need(Role::Issuer)?;
                if key.issuer != operator.name {
                    return Err(forbidden(operator, Role::Issuer));
                }
                key.validate().map_err(|e| invalid(e.to_string()))?;
                if self.catalog.price(&key.kind).is_none() {
                    return Err(invalid(format!("kind {} is not in the catalog", key.kind)));
                }
                let remaining = key.redeem_until.saturating_sub(now.max(key.valid_from));
                if remaining < self.genesis.min_redeem_window {
                    return Err(invalid(format!(
                        "the key can be spent for {remaining} s more; this ledger announces only keys spendable for at least {} s (min_redeem_window)",
                        self.genesis.min_redeem_window
                    )));
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
                let retained = self
                    .keys
                    .values()
                    .filter(|k| {
                        k.info.issuer == key.issuer
                            && k.info.kind == key.kind
                            && now <= k.info.forget_after
                    })
                    .count();
                if retained >= MAX_RETAINED_KEYS {
                    return Err(invalid(format!(
                        "issuer {} already has {MAX_RETAINED_KEYS} {} keys not yet past forget_after; at most {MAX_RETAINED_KEYS} may be kept",
                        key.issuer, key.kind
                    )));
                }
                plain(Effect::AnnounceKey(key.clone()))
            }
            Action::RevokeKey {
                token_key_id,
                reason: _,
            } => {
                if self.announced(token_key_id)?.info.issuer != operator.name {
                    return Err(forbidden(operator, Role::Issuer));
                }
                self.check_revocable(token_key_id)?;
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
                let key = self.announced(token_key_id)?;
                if key.info.issuer != operator.name {
                    return Err(forbidden(operator, Role::Issuer));
                }
                if from > until || *count == 0 || *count > MAX_REPORTED_COUNT {
                    return Err(invalid(format!(
                        "an issuance report needs from <= until and 0 < count <= {MAX_REPORTED_COUNT}"
                    )));
                }
                if *from != key.reported_until || *until > now + MAX_CLOCK_SKEW {
                    return Err(invalid(format!(
                        "an issuance report of key {token_key_id} covers the interval from the end of its previous report ({}) until the report is made; this one is {from}..{until}",
                        key.reported_until
                    )));
                }
                plain(Effect::TokensIssued {
                    token_key_id: *token_key_id,
                    count: *count,
                    until: *until,
                })
            }
            Action::Spend { groups } => {
                Self::check_spend_shape(operator, groups)?;
                self.judge_spend(groups, now, verified)
            }
            Action::Refresh { inputs, outputs } => {
                Self::check_refresh_shape(operator, inputs, outputs)?;
                plain(self.judge_refresh(operator, inputs, outputs, now, verified)?)
            }
        }
    }

    /// A refresh: every input and output key is the signer's own; inputs redeemable now,
    /// verified and not repeated; outputs issuable now; outputs worth no more than the
    /// inputs at the current catalog. Whether an input was spent before is the store's
    /// decision, in the append's transaction, as for a spend.
    fn judge_refresh(
        &self,
        operator: &OperatorInfo,
        inputs: &[SpendGroup],
        outputs: &[RefreshOutput],
        now: UnixSeconds,
        verified: Verified<'_>,
    ) -> Result<Effect, Refusal> {
        let own = |id: &TokenKeyId| -> Result<&KeyRecord, Refusal> {
            let key = self.announced(id)?;
            if key.info.issuer != operator.name {
                return Err(forbidden(operator, Role::Issuer));
            }
            if key.revoked {
                return Err(invalid(format!("key {id} is revoked")));
            }
            Ok(key)
        };
        let price = |key: &KeyRecord| {
            self.catalog
                .price(&key.info.kind)
                .ok_or_else(|| invalid(format!("kind {} is not in the catalog", key.info.kind)))
        };
        let mut seen = HashSet::new();
        let mut groups: Vec<NullifierGroup> = Vec::new();
        let mut value_in = 0u64;
        let mut index = 0usize;
        for group in inputs {
            let key = own(&group.token_key_id)?;
            if !key.info.can_redeem_at(now) {
                return Err(invalid(format!(
                    "input key {} cannot be redeemed now",
                    group.token_key_id
                )));
            }
            if let Verified::Keys(keys) = verified
                && !keys.contains(&group.token_key_id)
            {
                return Err(invalid(format!(
                    "the tokens of key {} were not verified",
                    group.token_key_id
                )));
            }
            let p = price(key)?;
            let mut nullifiers = Vec::with_capacity(group.tokens.len());
            for n in group.nullifiers() {
                if !seen.insert(n) {
                    return Err(invalid(format!(
                        "input {index} of the refresh appears earlier in it"
                    )));
                }
                nullifiers.push(n);
                value_in = value_in.saturating_add(p);
                index += 1;
            }
            match groups
                .iter_mut()
                .find(|g| g.token_key_id == group.token_key_id)
            {
                Some(g) => g.nullifiers.extend(nullifiers),
                None => groups.push(NullifierGroup {
                    token_key_id: group.token_key_id,
                    nullifiers,
                }),
            }
        }
        let mut issued: Vec<(TokenKeyId, u64)> = Vec::new();
        let mut value_out = 0u64;
        for output in outputs {
            let key = own(&output.token_key_id)?;
            if !key.info.can_issue_at(now) {
                return Err(invalid(format!(
                    "output key {} cannot issue now",
                    output.token_key_id
                )));
            }
            value_out = value_out.saturating_add(price(key)?.saturating_mul(output.count));
            match issued.iter_mut().find(|(k, _)| *k == output.token_key_id) {
                Some((_, n)) => *n += output.count,
                None => issued.push((output.token_key_id, output.count)),
            }
        }
        if value_out > value_in {
            return Err(invalid(format!(
                "the refresh's outputs are worth {value_out} credits, more than its inputs' {value_in}"
            )));
        }
        Ok(Effect::Refresh {
            inputs: groups,
            outputs: issued,
        })
    }

    fn judge_governance(
        &self,
        proposal: &Proposal,
        approvals: &[Approval],
        session: Option<u64>,
    ) -> Result<Effect, Refusal> {
        if proposal.ledger_id != self.ledger_id {
            return Err(Refusal::WrongLedger);
        }
        if proposal.governance_seq != self.governance_seq {
            return Err(Refusal::StaleProposal {
                proposal: proposal.governance_seq,
                current: self.governance_seq,
            });
        }
        if approvals.len() > MAX_APPROVALS {
            return Err(invalid(format!(
                "a governance change carries at most {MAX_APPROVALS} approvals"
            )));
        }
        let mut approvers = HashSet::new();
        for approval in approvals {
            let is_admin = self
                .operators
                .get(&approval.admin)
                .is_some_and(|o| o.roles.contains(&Role::Admin));
            // Each admin's signature is checked once, and only an admin's.
            if !is_admin || approvers.contains(&approval.admin) {
                continue;
            }
            approval
                .verify(proposal)
                .map_err(|_| Refusal::BadApproval {
                    admin: approval.admin,
                })?;
            approvers.insert(approval.admin);
        }
        let (have, need) = (approvers.len() as u32, self.admin_quorum());
        if have < need {
            return Err(Refusal::NoQuorum { have, need });
        }
        let member = |id: &OperatorId| {
            self.operators
                .get(id)
                .ok_or_else(|| invalid(format!("operator {id} is not a member")))
        };
        let change = match &proposal.change {
            Change::AdmitOperator { operator: new } => {
                check_operator(new)?;
                let taken = |o: &OperatorInfo| o.id == new.id || o.name == new.name;
                if self
                    .operators
                    .values()
                    .chain(self.former.values())
                    .any(taken)
                    || new.id == self.genesis.ledger_key
                {
                    return Err(invalid(format!(
                        "operator {} or its key is or was already a member",
                        new.name
                    )));
                }
                GovernanceEffect::AdmitOperator(new.clone())
            }
            Change::RemoveOperator { operator } => {
                member(operator)?;
                self.check_admins_after(operator, &[])?;
                GovernanceEffect::RemoveOperator(*operator)
            }
            Change::SetRoles { operator, roles } => {
                let mut changed = member(operator)?.clone();
                changed.roles = roles.clone();
                check_operator(&changed)?;
                self.check_admins_after(operator, roles)?;
                GovernanceEffect::SetRoles(changed)
            }
            Change::SetCatalog { catalog } => {
                catalog.validate().map_err(|e| invalid(e.to_string()))?;
                GovernanceEffect::SetCatalog(catalog.clone())
            }
            Change::RevokeKey {
                token_key_id,
                reason: _,
            } => {
                self.check_revocable(token_key_id)?;
                GovernanceEffect::RevokeKey(*token_key_id)
            }
            Change::AdmitNode { node } => {
                let session = self.ordering_session(session)?;
                let mut members = self.latest_committee().to_vec();
                members.push(node.clone());
                self.check_members(&members)?;
                GovernanceEffect::SetCommittee(self.committee.changed(
                    &self.genesis.committee,
                    session,
                    members,
                ))
            }
            Change::RetireNode { node_key } => {
                let session = self.ordering_session(session)?;
                let mut members = self.latest_committee().to_vec();
                let before = members.len();
                members.retain(|m| m.node_key != *node_key);
                if members.len() == before {
                    return Err(invalid(format!("node {node_key} is not in the committee")));
                }
                if members.is_empty() {
                    return Err(invalid("the committee's last node cannot be retired"));
                }
                GovernanceEffect::SetCommittee(self.committee.changed(
                    &self.genesis.committee,
                    session,
                    members,
                ))
            }
        };
        Ok(Effect::Governance {
            change,
            governance_seq: self.governance_seq + 1,
        })
    }

    /// The session a membership change is ordered in: only a committee ledger has one.
    fn ordering_session(&self, session: Option<u64>) -> Result<u64, Refusal> {
        match session {
            Some(session) if !self.genesis.committee.is_empty() => Ok(session),
            _ => Err(invalid(
                "this ledger has no committee: a one-node ledger cannot admit or retire nodes",
            )),
        }
    }

    /// A committee after a change: each node run by a current member, with a key of its
    /// own, at most [`MAX_COMMITTEE`](scrip_spec::committee::MAX_COMMITTEE) nodes.
    fn check_members(&self, members: &[CommitteeMember]) -> Result<(), Refusal> {
        let operator_keys: HashSet<OperatorId> = self
            .operators
            .keys()
            .chain(self.former.keys())
            .copied()
            .collect();
        let names: HashSet<&str> = self.operators.values().map(|o| o.name.as_str()).collect();
        check_nodes(members, &names, &operator_keys)
    }

    /// Refuses a change that would leave fewer admins than a governance change needs, so the
    /// consortium can never lock itself out of its own rules.
    fn check_admins_after(&self, operator: &OperatorId, new_roles: &[Role]) -> Result<(), Refusal> {
        let remaining = self
            .operators
            .values()
            .filter(|o| {
                if &o.id == operator {
                    new_roles.contains(&Role::Admin)
                } else {
                    o.roles.contains(&Role::Admin)
                }
            })
            .count() as u32;
        let floor = self.genesis.admin_quorum.unwrap_or(1);
        if remaining < floor {
            return Err(invalid(format!(
                "the change would leave {remaining} admins; governance needs at least {floor}"
            )));
        }
        Ok(())
    }

    fn announced(&self, id: &TokenKeyId) -> Result<&KeyRecord, Refusal> {
        self.keys
            .get(id)
            .ok_or_else(|| invalid(format!("key {id} is not announced")))
    }

    fn check_revocable(&self, id: &TokenKeyId) -> Result<(), Refusal> {
        if self.announced(id)?.revoked {
            return Err(invalid(format!("key {id} is already revoked")));
        }
        Ok(())
    }

    fn key_verdict(&self, key: &TokenKeyId, now: UnixSeconds) -> Option<SpendRefusal> {
        match self.keys.get(key) {
            None => Some(SpendRefusal::UnknownKey),
            Some(k) if k.revoked => Some(SpendRefusal::KeyRevoked),
            Some(k) if !k.info.can_redeem_at(now) => Some(SpendRefusal::NotRedeemable),
            Some(_) => None,
        }
    }

    fn judge_spend(
        &self,
        groups: &[SpendGroup],
        now: UnixSeconds,
        verified: Verified<'_>,
    ) -> Result<Judgement, Refusal> {
        let mut seen = HashSet::new();
        let mut valid: Vec<NullifierGroup> = Vec::new();
        let mut spends = Vec::new();
        for group in groups {
            let verdict = self.key_verdict(&group.token_key_id, now);
            if verdict.is_none()
                && let Verified::Keys(keys) = verified
                && !keys.contains(&group.token_key_id)
            {
                // The caller verifies every key that passes the checks; one left out would
                // be spent unverified.
                return Err(invalid(format!(
                    "the tokens of key {} were not verified",
                    group.token_key_id
                )));
            }
            let nullifiers: Vec<Nullifier> = group.nullifiers().collect();
            spends.extend(nullifiers.iter().map(|n| (group.token_key_id, *n, verdict)));
            if verdict.is_some() {
                continue;
            }
            // A nullifier repeated within one request is inserted once; its later
            // occurrences are answered `duplicate_in_request`.
            let fresh = nullifiers.into_iter().filter(|n| seen.insert(*n));
            match valid
                .iter_mut()
                .find(|g| g.token_key_id == group.token_key_id)
            {
                Some(existing) => existing.nullifiers.extend(fresh),
                None => valid.push(NullifierGroup {
                    token_key_id: group.token_key_id,
                    nullifiers: fresh.collect(),
                }),
            }
        }
        Ok(Judgement {
            effect: Effect::Spend { groups: valid },
            spends,
        })
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
            Effect::Governance {
                change,
                governance_seq,
            } => {
                self.governance_seq = *governance_seq;
                match change {
                    GovernanceEffect::AdmitOperator(op) | GovernanceEffect::SetRoles(op) => {
                        self.operators.insert(op.id, op.clone());
                    }
                    GovernanceEffect::RemoveOperator(id) => {
                        if let Some(op) = self.operators.remove(id) {
                            self.former.insert(*id, op);
                        }
                    }
                    GovernanceEffect::SetCatalog(c) => {
                        self.catalog = c.clone();
                        self.catalog_version = head.0;
                    }
                    GovernanceEffect::RevokeKey(id) => self.revoke(id),
                    GovernanceEffect::SetCommittee(schedule) => self.committee = schedule.clone(),
                }
            }
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
                        reported_until: info.valid_from,
                    },
                );
            }
            Effect::RevokeKey(id) => self.revoke(id),
            Effect::TokensIssued {
                token_key_id,
                count,
                until,
            } => {
                if let Some(k) = self.keys.get_mut(token_key_id) {
                    k.issued = k.issued.saturating_add(*count);
                    k.reported_until = *until;
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
            // Appended only with every input newly spent (the store refuses it otherwise).
            Effect::Refresh { inputs, outputs } => {
                for g in inputs {
                    if let Some(k) = self.keys.get_mut(&g.token_key_id) {
                        k.spent = k.spent.saturating_add(g.nullifiers.len() as u64);
                    }
                }
                for (id, n) in outputs {
                    if let Some(k) = self.keys.get_mut(id) {
                        k.issued = k.issued.saturating_add(*n);
                    }
                }
            }
            Effect::Genesis(_) | Effect::CardsSold { .. } | Effect::None => {}
        }
    }

    fn revoke(&mut self, id: &TokenKeyId) {
        if let Some(k) = self.keys.get_mut(id) {
            k.revoked = true;
        }
    }
}

fn forbidden(operator: &OperatorInfo, role: Role) -> Refusal {
    Refusal::Forbidden {
        operator: operator.name.clone(),
        role,
    }
}

fn admins_in<'a>(operators: impl Iterator<Item = &'a OperatorInfo>) -> u32 {
    operators.filter(|o| o.roles.contains(&Role::Admin)).count() as u32
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

/// The genesis's committee: nodes of founding members (see [`check_nodes`]).
fn check_committee(genesis: &Genesis, operator_ids: &HashSet<OperatorId>) -> Result<(), Refusal> {
    let names: HashSet<&str> = genesis.operators.iter().map(|o| o.name.as_str()).collect();
    check_nodes(&genesis.committee, &names, operator_ids)
}

/// A committee: at most [`MAX_COMMITTEE`](scrip_spec::committee::MAX_COMMITTEE) nodes, each
/// run by a member of `operators` (by name), with a key of its own (no operator key of
/// `operator_ids`, no other node's) and addresses.
fn check_nodes(
    nodes: &[CommitteeMember],
    operators: &HashSet<&str>,
    operator_ids: &HashSet<OperatorId>,
) -> Result<(), Refusal> {
    use scrip_spec::committee::MAX_COMMITTEE;
    if nodes.len() > MAX_COMMITTEE {
        return Err(invalid(format!(
            "a committee has at most {MAX_COMMITTEE} nodes, this one {}",
            nodes.len()
        )));
    }
    let mut keys = HashSet::new();
    for node in nodes {
        if !operators.contains(node.operator.as_str()) {
            return Err(invalid(format!(
                "committee node of {:?}: no member has that name",
                node.operator
            )));
        }
        if operator_ids.contains(&node.node_key) || !keys.insert(node.node_key) {
            return Err(invalid(format!(
                "committee node of {}: its node key is another node's or an operator's key; each node has a key of its own",
                node.operator
            )));
        }
        if node.peer_address.trim().is_empty() || node.api_url.trim().is_empty() {
            return Err(invalid(format!(
                "committee node of {}: peer_address and api_url are required",
                node.operator
            )));
        }
    }
    Ok(())
}

/// A token's verdict from `verify`: `None` if it passes, else its index and why. A verifier
/// that panics refuses the token: every node then refuses the same request the same way,
/// where passing it would accept a token nobody verified and failing the whole request with
/// an internal error would stop every node's apply loop on it.
fn verdict_of<E: std::fmt::Display>(
    index: usize,
    verify: impl FnOnce() -> Result<(), E>,
) -> Option<(usize, String)> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(verify)) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some((index, e.to_string())),
        Err(_) => Some((index, "the token's verification failed".to_owned())),
    }
}

/// Fewest tokens worth a thread of their own: a small batch (what a lightly loaded ledger
/// gets) is verified on the calling thread rather than spread over threads started for it;
/// the difference was within the noise (BENCHMARKS.md, "Issue 17, sixth session").
const MIN_TOKENS_PER_THREAD: usize = 32;

/// The first `Some` that `check` gives over `items`, by position, with the items split over up
/// to `threads` threads. A check that panics fails the whole call (the panic goes on to the
/// caller) rather than counting as a pass.
fn first_failure_on_all_cores<T: Sync, F: Send>(
    items: &[T],
    threads: usize,
    check: impl Fn(&T) -> Option<(usize, F)> + Sync,
) -> Option<(usize, F)> {
    let chunk = items
        .len()
        .div_ceil(threads.max(1))
        .max(MIN_TOKENS_PER_THREAD);
    let check_all = |items: &[T]| items.iter().find_map(&check);
    if items.len() <= chunk {
        return check_all(items);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| check_all(part)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .min_by_key(|(i, _)| *i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items numbered by position, some marked bad; the check reports a bad one's position.
    fn bad(item: &(usize, bool)) -> Option<(usize, ())> {
        item.1.then_some((item.0, ()))
    }

    #[test]
    fn the_first_failure_by_position_wins_however_the_items_are_split() {
        let mut items: Vec<(usize, bool)> = (0..1000).map(|i| (i, false)).collect();
        for threads in [1, 2, 3, 8] {
            assert!(first_failure_on_all_cores(&items, threads, bad).is_none());
        }
        // Failures in several chunks: the first in item order is reported.
        for at in [999, 700, 401, 40] {
            items[at].1 = true;
        }
        for threads in [1, 2, 3, 8] {
            let first = first_failure_on_all_cores(&items, threads, bad);
            assert_eq!(first.map(|(i, ())| i), Some(40), "threads {threads}");
        }
    }

    #[test]
    fn a_verifier_that_panics_refuses_its_token() {
        assert_eq!(verdict_of(3, || Ok::<(), String>(())), None);
        assert_eq!(
            verdict_of(3, || Err::<(), _>("bad signature")),
            Some((3, "bad signature".to_owned()))
        );
        let refused = verdict_of(7, || -> Result<(), String> { panic!("the verifier broke") });
        assert_eq!(refused.map(|(i, _)| i), Some(7));
    }

    #[test]
    fn a_check_that_panics_fails_the_call_instead_of_passing() {
        // A verifier that panics on one token must not let the batch through: before, the
        // panicked thread was skipped and the batch read as verified.
        let items: Vec<usize> = (0..1000).collect();
        let outcome = std::panic::catch_unwind(|| {
            first_failure_on_all_cores(&items, 2, |i: &usize| {
                assert!(*i != 900, "the verifier broke");
                None::<(usize, ())>
            })
        });
        assert!(
            outcome.is_err(),
            "a panic in a verifier thread reaches the caller"
        );
        // Small batches run on the calling thread: the same holds there.
        let few: Vec<usize> = (0..10).collect();
        let outcome = std::panic::catch_unwind(|| {
            first_failure_on_all_cores(&few, 2, |i: &usize| {
                assert!(*i != 5, "the verifier broke");
                None::<(usize, ())>
            })
        });
        assert!(outcome.is_err());
    }
}
