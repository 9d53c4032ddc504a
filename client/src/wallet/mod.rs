//! The wallet: opening cards, keeping tokens, spending them, and never losing one.
//!
//! One file per part: [`keys`] (which issuer keys to trust), [`open`] (opening cards),
//! [`spend`] (spending and settling unknown outcomes), [`backup`] (export, import, restore).

mod backup;
mod fetch;
mod keys;
mod open;
mod refresh;
mod spend;
mod status;

pub use backup::ImportSummary;
pub use fetch::{Fetched, MAX_FETCH_BODY};
pub use open::SetAside;
pub use status::prefix_len_for;

pub use refresh::{REFRESH_THRESHOLD_SECS, RefreshSummary};

use crate::store::{StoredToken, TokenState, WalletStore};
use scrip_common::clients::{
    ClientError, Http, IssuerClient, IssuerClientError, LedgerClient, RedeemerClient,
};
use scrip_spec::api::issuer::IssuerErrorCode;
use scrip_spec::api::redeemer::RedeemerErrorCode;
use scrip_spec::ledger::MAX_LIVE_KEYS;
use scrip_spec::{Token, UnixSeconds, WalletSeed};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Warn about tokens this close to their `redeem_until`.
pub const EXPIRY_WARNING_SECS: u64 = 3 * 86_400;

use scrip_spec::now;

/// Why a wallet operation failed, with what to do next.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The issuer offers a key the ledger does not list identically: possibly a tagging key.
    #[error(
        "the issuer's {kind} key {key} is not on the ledger's key directory as announced; refusing it (it could identify you)"
    )]
    UntrustedKey {
        /// The kind.
        kind: String,
        /// The key id.
        key: String,
    },
    /// The issuer does not offer the key the ledger's directory says every wallet must use
    /// now: it may be hiding it to give this wallet a key nobody else holds.
    #[error(
        "{issuer} does not offer its {kind} key {key}, the one the ledger's directory says every wallet must use now; refusing (a wallet given another key could be told apart). If the key was announced a moment ago, try again in a minute"
    )]
    KeyWithheld {
        /// The issuer.
        issuer: String,
        /// The kind.
        kind: String,
        /// The key the directory names.
        key: String,
    },
    /// The ledger lists more live keys for one issuer and kind than allowed.
    #[error(
        "the ledger lists {count} live {kind} keys for {issuer}, more than {MAX_LIVE_KEYS}; refusing (possible key tagging)"
    )]
    TooManyKeys {
        /// The issuer.
        issuer: String,
        /// The kind.
        kind: String,
        /// Live keys.
        count: usize,
    },
    /// No usable key for a kind.
    #[error("{issuer} has no key for {kind} that can issue now")]
    NoKey {
        /// The issuer.
        issuer: String,
        /// The kind.
        kind: String,
    },
    /// The issuer refused.
    #[error("the issuer refused: {code}: {message}")]
    IssuerRefused {
        /// Error code.
        code: IssuerErrorCode,
        /// Message.
        message: String,
    },
    /// An earlier opening is still unanswered; no new one starts until it is settled.
    #[error(
        "an earlier opening at {issuer_url} is not answered yet; run the command again later, or stop waiting for it with `scrip wallet open --abandon` (it is kept and still delivers its tokens if the issuer answers)"
    )]
    OpeningPending {
        /// The issuer it was sent to.
        issuer_url: String,
    },
    /// An earlier refresh is still unanswered; its inputs are set aside and no new opening
    /// or refresh starts until it is settled.
    #[error("an earlier refresh at {issuer_url} is not answered yet; run the command again later")]
    RefreshPending {
        /// The issuer it was sent to.
        issuer_url: String,
    },
    /// The redeemer refused.
    #[error("the redeemer refused ({status}): {code}: {message}")]
    RedeemerRefused {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: RedeemerErrorCode,
        /// Message.
        message: String,
    },
    /// The redeemer answered a 408 or a 5xx (or an origin, to a token, anything but a refusal
    /// of the token): the spend may have committed, so the token is kept for that redeemer,
    /// which grants again (an origin: answers) when it is presented there again.
    #[error(
        "the redeemer at {redeemer} could not finish ({status}: {code}: {message}); the token is kept for it: run the same spend again to collect its grant"
    )]
    RedeemerUnsure {
        /// The redeemer.
        redeemer: String,
        /// HTTP status.
        status: u16,
        /// Error code.
        code: RedeemerErrorCode,
        /// Message.
        message: String,
    },
    /// The token was spent before.
    #[error(
        "that token was already spent (at {first_spent_at} by {first_spent_by}); it is marked spent"
    )]
    AlreadySpent {
        /// When.
        first_spent_at: u64,
        /// By whom.
        first_spent_by: String,
    },
    /// No answer; the work is saved and is resumed by running the command again.
    #[error("no answer from {what} ({source}); nothing is lost: run the command again to resume")]
    NoAnswer {
        /// Which service.
        what: &'static str,
        /// Why: the HTTP client's error, or why the answer could not be read.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No unspent token of the kind.
    #[error("{}", no_token_message(kind, held_kinds, pending_at))]
    NoToken {
        /// The kind.
        kind: String,
        /// The kinds the wallet does hold unspent tokens of.
        held_kinds: Vec<String>,
        /// Redeemers holding a pending spend of a token of the kind.
        pending_at: Vec<String>,
    },
    /// An origin asks for a token of keys this wallet holds no unspent token of.
    #[error(
        "{origin} asks for a token of {}; this wallet holds none it takes{}",
        issuers.join(" or "),
        if held_kinds.is_empty() { String::new() } else { format!(" (it holds {})", held_kinds.join(", ")) }
    )]
    NoTokenForOrigin {
        /// The origin.
        origin: String,
        /// The issuers of the keys it challenged for.
        issuers: Vec<String>,
        /// The kinds the wallet does hold unspent tokens of.
        held_kinds: Vec<String>,
    },
    /// A card code that cannot be right (a wrong symbol, a missing one): caught before any
    /// request.
    #[error("{0} (nothing was sent to the issuer)")]
    BadCardCode(#[source] scrip_spec::codes::card::CardCodeError),
    /// Too few tokens for a change.
    #[error(
        "changing into {target} needs at least {need} unspent {kind} tokens at one issuer; the wallet has {have}"
    )]
    NotEnough {
        /// The kind given in.
        kind: String,
        /// Tokens needed.
        need: u64,
        /// Tokens held.
        have: u64,
        /// The kind asked for.
        target: String,
    },
    /// A change would give up value no kind fits; nothing was done.
    #[error(
        "this change would give up {credits} credit(s) that no kind fits; nothing was done (pass --accept-loss to go ahead, or change another count)"
    )]
    ChangeLoses {
        /// Credits that would be lost.
        credits: u64,
    },
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn no_token_message(kind: &str, held: &[String], pending_at: &[String]) -> String {
    let mut m = format!("no unspent {kind} token");
    if let Some(at) = pending_at.first() {
        m.push_str(&format!(
            "; one is pending at {at}: spend there (`--redeemer {at}`) to collect its grant"
        ));
    }
    if held.is_empty() {
        m.push_str("; open a card first (`scrip wallet open`)");
    } else {
        m.push_str(&format!("; this wallet holds {}", held.join(", ")));
    }
    m
}

impl WalletError {
    /// A stable name of the error, for programs driving the CLI (`--json`).
    pub fn code(&self) -> &'static str {
        match self {
            WalletError::UntrustedKey { .. } => "untrusted_key",
            WalletError::TooManyKeys { .. } => "too_many_keys",
            WalletError::KeyWithheld { .. } => "key_withheld",
            WalletError::NoKey { .. } => "no_key",
            WalletError::IssuerRefused { .. } => "issuer_refused",
            WalletError::OpeningPending { .. } => "opening_pending",
            WalletError::RedeemerRefused { .. } => "redeemer_refused",
            WalletError::RedeemerUnsure { .. } => "outcome_unknown",
            WalletError::AlreadySpent { .. } => "already_spent",
            WalletError::NoAnswer { .. } => "no_answer",
            WalletError::NoToken { .. } | WalletError::NoTokenForOrigin { .. } => "no_token",
            WalletError::BadCardCode(_) => "bad_card_code",
            WalletError::RefreshPending { .. } => "refresh_pending",
            WalletError::NotEnough { .. } => "not_enough",
            WalletError::ChangeLoses { .. } => "change_loses",
            WalletError::Other(_) => "failed",
        }
    }

    /// An issuer call's failure: its refusal, or no answer.
    fn from_issuer(e: IssuerClientError) -> Self {
        match e {
            ClientError::Refused { error, .. } => WalletError::IssuerRefused {
                code: error.code,
                message: error.message,
            },
            ClientError::Unreachable { source, .. } => WalletError::NoAnswer {
                what: "the issuer",
                source: source.into(),
            },
            ClientError::BadAnswer { source, .. } => WalletError::NoAnswer {
                what: "the issuer",
                source: source.into(),
            },
        }
    }
}

/// What an opening produced.
#[derive(Debug, Clone, Default)]
pub struct OpenSummary {
    /// Tokens stored, per kind.
    pub tokens: BTreeMap<String, u64>,
    /// Credits left on the card.
    pub remaining_credits: u64,
}

/// A spend's result.
#[derive(Debug, Clone)]
pub struct SpendReceipt {
    /// The grant code to hand to the relay.
    pub grant: String,
    /// Its kind.
    pub kind: String,
    /// Its expiry.
    pub expires_at: u64,
    /// Whether the token had been presented before with an unknown outcome, so this grant
    /// is the one that presentation earned.
    pub presented_again: bool,
}

/// Tokens per kind and expiry.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Balance {
    /// `(kind, redeem_until) → unspent count`.
    pub unspent: BTreeMap<(String, u64), u64>,
    /// Tokens whose spend or refresh outcome is being resolved.
    pub pending: u64,
    /// Spent tokens.
    pub spent: u64,
    /// Spent tokens whose grant the wallet received (the others were spent elsewhere first).
    pub granted: u64,
    /// Tokens that expired unspent.
    pub expired: u64,
}

/// How long after a spend attempt with an unknown outcome the ledger's "unspent" is taken as
/// final: a request signed at the attempt can land until [`MAX_CLOCK_SKEW`] past it by the
/// ledger's clock, the redeemer's clock may itself be [`MAX_CLOCK_SKEW`] ahead, and a redeemer
/// retries for under a minute.
///
/// [`MAX_CLOCK_SKEW`]: scrip_spec::ledger::MAX_CLOCK_SKEW
pub const SETTLE_HORIZON_SECS: UnixSeconds = 2 * scrip_spec::ledger::MAX_CLOCK_SKEW + 60;

/// How long the wallet waits for an issuer or a redeemer.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// A wallet.
pub struct Wallet {
    store: WalletStore,
    seed: WalletSeed,
    ledger: LedgerClient,
    /// The same ledger on a client that opens a new connection per call: status queries.
    status_ledger: LedgerClient,
    http: Http,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").finish_non_exhaustive()
    }
}

impl Wallet {
    /// Creates a wallet file (owner-only) with a new seed, or with `seed` for a restore.
    pub async fn create(
        path: &Path,
        ledger_url: &str,
        seed: Option<WalletSeed>,
    ) -> anyhow::Result<Self> {
        let store = WalletStore::open(path, true).await?;
        let seed = seed.unwrap_or_else(WalletSeed::generate);
        store.set_meta("seed", &seed.backup_code()).await?;
        store.set_meta("ledger_url", ledger_url).await?;
        Ok(Self::assemble(store, seed, ledger_url))
    }

    /// Opens an existing wallet file.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let store = WalletStore::open(path, false).await?;
        let seed = store
            .meta("seed")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the wallet has no seed"))?;
        let seed = WalletSeed::from_backup_code(&seed)?;
        let ledger_url = store
            .meta("ledger_url")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the wallet names no ledger"))?;
        Ok(Self::assemble(store, seed, &ledger_url))
    }

    fn assemble(store: WalletStore, seed: WalletSeed, ledger_url: &str) -> Self {
        Self {
            store,
            seed,
            ledger: LedgerClient::new(ledger_url),
            status_ledger: LedgerClient::on(ledger_url, Http::unpooled(SERVICE_TIMEOUT)),
            http: Http::new(SERVICE_TIMEOUT),
        }
    }

    /// The seed's backup code.
    pub fn backup_code(&self) -> zeroize::Zeroizing<String> {
        self.seed.backup_code()
    }

    /// The store (for inspection).
    pub fn store(&self) -> &WalletStore {
        &self.store
    }

    fn issuer(&self, url: &str) -> IssuerClient {
        IssuerClient::on(url, self.http.clone())
    }

    fn redeemer(&self, url: &str) -> RedeemerClient {
        RedeemerClient::on(url, self.http.clone())
    }

    /// The ledger's key directory: every key, or one issuer's.
    async fn directory(
        &self,
        issuer: Option<&str>,
    ) -> anyhow::Result<Vec<scrip_spec::api::ledger::KeyRecord>> {
        self.ledger
            .keys(issuer, None)
            .await
            .map_err(|e| anyhow::anyhow!(e).context("cannot read the ledger's key directory"))
    }

    /// Tokens per kind and expiry; marks tokens past their window expired first.
    pub async fn balance(&self) -> anyhow::Result<Balance> {
        self.store.expire(now()).await?;
        let mut b = Balance::default();
        for t in self.store.tokens(TokenState::Unspent).await? {
            *b.unspent.entry((t.kind, t.redeem_until)).or_default() += 1;
        }
        // Counted in the database: a wallet's spent tokens grow without bound.
        let counts = self.store.counts().await?;
        let count = |state| {
            counts.get(&(state, false)).copied().unwrap_or(0)
                + counts.get(&(state, true)).copied().unwrap_or(0)
        };
        b.pending = count(TokenState::Pending) + count(TokenState::Refreshing);
        b.spent = count(TokenState::Spent);
        b.granted = counts.get(&(TokenState::Spent, true)).copied().unwrap_or(0);
        b.expired = count(TokenState::Expired);
        Ok(b)
    }

    /// The stored token behind a nullifier (tests, inspection).
    pub async fn token(
        &self,
        nullifier: &scrip_spec::Nullifier,
    ) -> anyhow::Result<Option<StoredToken>> {
        self.store.token(nullifier).await
    }

    /// Every token in a state.
    pub async fn tokens(&self, state: TokenState) -> anyhow::Result<Vec<StoredToken>> {
        self.store.tokens(state).await
    }

    /// An unspent token of `kind`, as stored (for inspection, and the demo's double spend).
    pub async fn unspent_token(&self, kind: &str) -> anyhow::Result<Option<Token>> {
        Ok(self
            .store
            .tokens(TokenState::Unspent)
            .await?
            .into_iter()
            .find(|t| t.kind == kind)
            .map(|t| t.token))
    }
}
