//! Token key announcements.

use crate::http::Http;
use scrip_spec::ledger::{Action, Hash32, LedgerRequest};
use scrip_spec::{
    OperatorKey, Token, TokenChallenge, TokenKeyId, TokenKeyInfo, TokenPublicKey, TokenSecretKey,
    UnixSeconds, WalletSeed, blind, finalize, now,
};

/// What the ledger is told about `public_key`: a key of `issuer` for `kind`, valid from ten
/// seconds ago, issuing for `hours`, redeemable for `hours` more and kept `hours` after that.
pub fn key_info(public_key: &TokenPublicKey, issuer: &str, kind: &str, hours: u64) -> TokenKeyInfo {
    let t = now();
    let span: UnixSeconds = hours * 3600;
    TokenKeyInfo {
        public_key: public_key.clone(),
        issuer: issuer.into(),
        kind: kind.parse().expect("a capacity kind"),
        valid_from: t - 10,
        issue_until: t + span,
        redeem_until: t + 2 * span,
        forget_after: t + 3 * span,
    }
}

/// The signed request announcing `key`, by `by`.
pub fn announcement(
    by: &OperatorKey,
    ledger_id: Hash32,
    key: TokenKeyInfo,
) -> scrip_spec::Signed<LedgerRequest> {
    by.sign(LedgerRequest::new(
        ledger_id,
        now(),
        Action::AnnounceKey { key },
    ))
}

/// Announces a fresh `queue` key of the operator `by`, named `issuer` (valid for an hour), at
/// the ledger at `base` over HTTP; returns the ledger id and a pool of tokens of the key.
pub async fn announce_key(
    client: &reqwest::Client,
    base: &str,
    by: &OperatorKey,
    issuer: &str,
) -> (Hash32, TokenPool) {
    let http = Http {
        base: base.to_owned(),
        client: client.clone(),
    };
    let (_, info) = http.get("/v1/info").await;
    let ledger_id: Hash32 = serde_json::from_value(info["ledger_id"].clone()).expect("ledger id");
    let secret = TokenSecretKey::generate().expect("keygen");
    let key = key_info(secret.public_key(), issuer, "queue", 1);
    let (status, _) = http
        .post("/v1/entries", &announcement(by, ledger_id, key))
        .await;
    assert!(status.is_success(), "announce: {status}");
    (ledger_id, TokenPool::new(secret, issuer))
}

/// Valid tokens of one key, minted in bulk as they are taken.
#[derive(Debug)]
pub struct TokenPool {
    secret: TokenSecretKey,
    issuer: String,
    minted: std::sync::Mutex<Vec<Token>>,
}

impl TokenPool {
    /// Tokens minted at once when the pool runs short.
    const REFILL: usize = 2000;

    /// An empty pool of `secret`'s tokens for `issuer`.
    pub fn new(secret: TokenSecretKey, issuer: &str) -> Self {
        Self {
            secret,
            issuer: issuer.to_owned(),
            minted: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The key's id.
    pub fn key_id(&self) -> TokenKeyId {
        self.secret.public_key().id()
    }

    /// Mints `n` more tokens now, so that later takes do not wait for minting.
    pub fn fill(&self, n: usize) {
        let more = mint_tokens(&self.secret, &self.issuer, n);
        self.minted.lock().expect("token pool").extend(more);
    }

    /// `n` fresh tokens (minted now if the pool holds fewer; each is given out once).
    pub fn take(&self, n: usize) -> Vec<Token> {
        let mut minted = self.minted.lock().expect("token pool");
        if minted.len() < n {
            let more = mint_tokens(&self.secret, &self.issuer, n.max(Self::REFILL));
            minted.extend(more);
        }
        let at = minted.len() - n;
        minted.split_off(at)
    }
}

/// `count` valid tokens of `secret`'s key for `issuer`, made as a wallet makes them (blinded,
/// signed, finalized), on all cores.
pub fn mint_tokens(secret: &TokenSecretKey, issuer: &str, count: usize) -> Vec<Token> {
    let challenge = TokenChallenge::for_issuer(issuer).expect("issuer name");
    let seed = WalletSeed::generate();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = count.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .step_by(per_thread)
            .map(|start| {
                let (seed, challenge) = (&seed, &challenge);
                scope.spawn(move || {
                    (start..(start + per_thread).min(count))
                        .map(|i| {
                            let pk = secret.public_key();
                            let (request, pending) =
                                blind(seed, i as u64, pk, challenge).expect("blind");
                            let response = secret.blind_sign(&request).expect("sign");
                            finalize(pk, &pending, &response).expect("finalize")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    })
}
