//! The redeemer sidecar's HTTP messages (PROTOCOL.md section 10): `POST /v1/redeem` and
//! `POST /v1/grants/consume`.

use crate::catalog::CapacityKind;
use crate::key::UnixSeconds;
use serde::{Deserialize, Serialize};

super::error_codes! {
    /// The redeemer's error codes.
    ///
    /// | code | meaning |
    /// |---|---|
    /// | `malformed_token` | 400: the token does not decode. |
    /// | `unknown_key` | 422: the token's key is not in this redeemer's directory. |
    /// | `key_not_redeemable` | 422: the key is outside its redemption window. |
    /// | `wrong_kind` | 422: the token, or the grant, is for another kind. |
    /// | `wrong_challenge` | 422: the token's challenge is not the one expected for the key's issuer. |
    /// | `invalid_signature` | 422: the token's signature does not verify. |
    /// | `already_spent` | 409: spent before (`first_spent_at`, `first_spent_by`). |
    /// | `ledger_unavailable` | 503: the ledger did not confirm the spend; the token was not spent here. |
    /// | `unavailable` | 503: the redeemer failed inside. |
    /// | `malformed_grant` | 400: the grant code does not decode. |
    /// | `unknown_grant` | 404: no such grant. |
    /// | `grant_revoked` | 403: the grant was revoked (its token turned out spent elsewhere). |
    /// | `grant_used` | 409: the grant was used. |
    /// | `grant_expired` | 410: the grant expired. |
    /// | `token_required` | 401: `GET /v1/redeem/{kind}` without `Authorization: PrivateToken` (the `WWW-Authenticate` header has the challenges). |
    /// | `no_key` | 404: no key of the kind can be spent now (or the kind is not the catalog's), so there is nothing to challenge for. |
    pub enum RedeemerErrorCode {
        MalformedToken = "malformed_token", UnknownKey = "unknown_key",
        KeyNotRedeemable = "key_not_redeemable", WrongKind = "wrong_kind",
        WrongChallenge = "wrong_challenge", InvalidSignature = "invalid_signature",
        AlreadySpent = "already_spent", LedgerUnavailable = "ledger_unavailable",
        Unavailable = "unavailable", MalformedGrant = "malformed_grant",
        UnknownGrant = "unknown_grant", GrantRevoked = "grant_revoked", GrantUsed = "grant_used",
        GrantExpired = "grant_expired", TokenRequired = "token_required", NoKey = "no_key",
    }
}

/// `GET /v1/redeem/{kind}` answer once the token in `Authorization` is spent: the origin
/// serves the request (the grant is used at once, so the token pays for this one request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaidResponse {
    /// The kind paid for.
    pub kind: String,
}

/// `POST /v1/redeem` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The token, base64url (parsed by the redeemer, so a bad one gets `malformed_token`).
    pub token: String,
    /// The capacity asked for.
    pub kind: String,
}

/// `POST /v1/redeem` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemResponse {
    /// The grant code.
    pub grant: String,
    /// Its kind.
    pub kind: CapacityKind,
    /// Its expiry.
    pub expires_at: UnixSeconds,
}

/// `POST /v1/grants/consume` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    /// The grant code.
    pub grant: String,
    /// The capacity the relay is about to give.
    pub kind: String,
}

/// `POST /v1/grants/consume` answer: the grant is used up, give the capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeResponse {
    /// Always `true`: a refusal is an error answer.
    pub ok: bool,
    /// The kind consumed.
    pub kind: CapacityKind,
}
