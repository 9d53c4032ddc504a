//! Paying an origin that speaks Privacy Pass (RFC 9577, PROTOCOL.md 10.4): `GET`, and on a 401
//! whose challenges name a key this wallet holds tokens of, the same `GET` with one token in
//! `Authorization: PrivateToken`, sent to the URL that answered the 401 (after any redirect),
//! never to one that did not ask. The token is pending at the origin until it answers, as a
//! spend is pending at its redeemer, and a fetch whose answer was lost presents that same
//! token there again before any other.

use super::{Wallet, WalletError};
use crate::store::{StoredToken, TokenState};
use scrip_spec::api::private_token::{
    PrivateTokenChallenge, authorization, parse_www_authenticate,
};
use scrip_spec::api::redeemer::RedeemerErrorCode;
use scrip_spec::api::{ErrorAnswer, ErrorCode as _, ErrorDetails, ErrorObject};
use scrip_spec::{CapacityKind, now};
use std::time::Duration;

/// The largest body a fetch keeps; a longer answer is an error (a paid one with its token
/// spent), never its start handed over as the whole.
pub const MAX_FETCH_BODY: usize = 64 * 1024 * 1024;

/// What an origin answered.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The HTTP status.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// The kind of the token paid with, if one was.
    pub paid: Option<String>,
    /// Whether the token was one an earlier fetch left pending at this origin.
    pub presented_again: bool,
}

/// One answer, read whole up to [`MAX_FETCH_BODY`].
struct Answer {
    /// The URL that answered, after any redirect.
    url: String,
    status: u16,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    body: Vec<u8>,
    /// False if the body went on past [`MAX_FETCH_BODY`] (`body` is then only its start).
    complete: bool,
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    authorization: Option<String>,
) -> Result<Answer, reqwest::Error> {
    let mut request = http.get(url);
    if let Some(value) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let mut resp = request.send().await?;
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, www_authenticate) = (
        header(reqwest::header::CONTENT_TYPE),
        header(reqwest::header::WWW_AUTHENTICATE),
    );
    let status = resp.status().as_u16();
    let answered = resp.url().to_string();
    let mut body = Vec::new();
    let mut complete = true;
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_FETCH_BODY {
            complete = false;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        url: answered,
        status,
        content_type,
        www_authenticate,
        body,
        complete,
    })
}

/// Whether `stored` answers one of `challenges`, and is of `only_kind` if that is set.
fn fits(
    challenges: &[PrivateTokenChallenge],
    only_kind: Option<&str>,
    stored: &StoredToken,
) -> bool {
    only_kind.is_none_or(|k| stored.kind == k)
        && challenges.iter().any(|c| {
            c.token_key.id() == stored.token.token_key_id
                && c.challenge.digest() == stored.token.challenge_digest
        })
}

/// The error for an answer whose body is longer than [`MAX_FETCH_BODY`]: the body is not
/// handed over cut, as if it were whole.
fn too_long(url: &str, paid: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the answer of {url} is longer than {} MiB, the most a fetch keeps; {paid}",
        MAX_FETCH_BODY / (1024 * 1024)
    )
}

/// Whether an origin's answer to a token is a refusal of the token itself, made before
/// anything was spent (or because it was spent before): a 401 (RFC 9577: the token is not
/// taken, here is a fresh challenge), or the sidecar's 400 for a malformed token and its 429.
/// Any other answer may come from the route behind the gate, once the token is spent.
fn refused_before_spending(status: u16, code: RedeemerErrorCode) -> bool {
    matches!(
        (status, code),
        (401, _) | (400, RedeemerErrorCode::MalformedToken) | (429, RedeemerErrorCode::RateLimited)
    )
}

impl Wallet {
    /// `GET url`, paying with one token if the origin asks for one this wallet holds (see the
    /// module), of `only_kind` if given: the origin chooses the kind it asks for, so a user who
    /// expects to pay for a chunk says so. An answer that asks for no token is returned as it
    /// is; one that asks for none the wallet can give is [`WalletError::NoTokenForOrigin`].
    pub async fn fetch(
        &self,
        url: &str,
        only_kind: Option<&CapacityKind>,
    ) -> Result<Fetched, WalletError> {
        let only_kind = only_kind.map(CapacityKind::as_str);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        let no_answer = |source: reqwest::Error| WalletError::NoAnswer {
            what: "the origin",
            source: source.into(),
        };
        let first = get(&http, url, None).await.map_err(no_answer)?;
        let challenges = match (first.status, &first.www_authenticate) {
            (401, Some(header)) => parse_www_authenticate(header).unwrap_or_default(),
            _ => Vec::new(),
        };
        if challenges.is_empty() {
            if !first.complete {
                return Err(too_long(url, "nothing was paid").into());
            }
            return Ok(Fetched {
                status: first.status,
                content_type: first.content_type,
                body: first.body,
                paid: None,
                presented_again: false,
            });
        }
        // The token goes to the URL that asked for it (after any redirect), never to one
        // that did not; a token left pending there is looked up by that URL too.
        let url = first.url.as_str();
        let pending = self.store.tokens(TokenState::Pending).await?;
        let again = pending
            .into_iter()
            .find(|p| p.redeemer_url.as_deref() == Some(url) && fits(&challenges, only_kind, p));
        let (stored, presented_again) = match again {
            Some(p) => (p, true),
            None => (self.take_fitting(&challenges, only_kind, url).await?, false),
        };
        let nullifier = stored.token.nullifier();
        let paid = get(&http, url, Some(authorization(&stored.token))).await;
        let answer = match paid {
            Ok(answer) => answer,
            Err(source) => {
                self.keep_pending(&nullifier, now()).await?;
                return Err(no_answer(source));
            }
        };
        if (200..300).contains(&answer.status) {
            self.store
                .set_state(
                    &nullifier,
                    TokenState::Spent,
                    None,
                    Some("paid at the origin"),
                    now(),
                )
                .await?;
            if !answer.complete {
                return Err(too_long(url, "the token paid for it and is spent").into());
            }
            return Ok(Fetched {
                status: answer.status,
                content_type: answer.content_type,
                body: answer.body,
                paid: Some(stored.kind),
                presented_again,
            });
        }
        let error = serde_json::from_slice::<ErrorAnswer<RedeemerErrorCode>>(&answer.body)
            .map(|a| a.error)
            .unwrap_or_else(|_| ErrorObject {
                code: RedeemerErrorCode::unknown(),
                message: String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect(),
                details: ErrorDetails::default(),
            });
        if !refused_before_spending(answer.status, error.code) {
            // The origin may have spent it (a 408 or a 5xx; or its route refused the request
            // after its gate had spent the token, a 403 or a 404 of its own): kept for this
            // origin, presented again first.
            self.keep_pending(&nullifier, now()).await?;
            return Err(WalletError::RedeemerUnsure {
                redeemer: url.to_owned(),
                status: answer.status,
                code: error.code,
                message: error.message,
            });
        }
        let error = self
            .spent_says_the_ledger(&nullifier, answer.status, error, presented_again)
            .await;
        Err(self
            .settle_refusal(&nullifier, answer.status, error, presented_again)
            .await?)
    }

    /// `error`, or `already_spent` if the ledger shows the token spent, for a 401 that does
    /// not say the token was spent but may be because it was: one without scrip's error object
    /// (nginx's `auth_request` block answers a bare 401), or one to a token presented again
    /// after a lost answer, which spent it. Without this the token would go back among the
    /// unspent, or stay pending at the origin, and be presented there at every fetch, refused
    /// each time. If the ledger does not answer, `error` as it is.
    async fn spent_says_the_ledger(
        &self,
        nullifier: &scrip_spec::Nullifier,
        status: u16,
        error: ErrorObject<RedeemerErrorCode>,
        presented_again: bool,
    ) -> ErrorObject<RedeemerErrorCode> {
        let unsure = status == 401
            && error.code != RedeemerErrorCode::AlreadySpent
            && (presented_again || error.code == RedeemerErrorCode::unknown());
        if !unsure {
            return error;
        }
        let Ok(spent) = self.spent_among(std::slice::from_ref(nullifier)).await else {
            return error;
        };
        let Some(first) = spent.get(nullifier) else {
            return error;
        };
        ErrorObject {
            code: RedeemerErrorCode::AlreadySpent,
            message: "the origin refused the token, and the ledger shows it spent".into(),
            details: ErrorDetails {
                first_spent_at: Some(first.spent_at),
                first_spent_by: Some(first.spent_by.clone()),
                ..ErrorDetails::default()
            },
        }
    }

    /// The unspent token closest to expiry among those the challenges accept, marked
    /// pending at `url`.
    async fn take_fitting(
        &self,
        challenges: &[PrivateTokenChallenge],
        only_kind: Option<&str>,
        url: &str,
    ) -> Result<StoredToken, WalletError> {
        let t = now();
        let unspent = self.store.tokens(TokenState::Unspent).await?;
        let Some(chosen) = unspent
            .iter()
            .filter(|tok| tok.redeem_until >= t && fits(challenges, only_kind, tok))
            .min_by_key(|tok| (tok.redeem_until, tok.token.nullifier().0))
        else {
            let mut held: Vec<String> = unspent.iter().map(|t| t.kind.clone()).collect();
            held.sort();
            held.dedup();
            let mut issuers: Vec<String> = challenges
                .iter()
                .map(|c| String::from_utf8_lossy(c.challenge.issuer_name()).into_owned())
                .collect();
            issuers.sort();
            issuers.dedup();
            return Err(WalletError::NoTokenForOrigin {
                origin: url.to_owned(),
                issuers,
                held_kinds: held,
            });
        };
        Ok(self
            .store
            .take_token(&chosen.token.nullifier(), url, t)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the {} token was taken meanwhile; run the fetch again",
                    chosen.kind
                )
            })?)
    }
}
