//! The redeemer sidecar's HTTP messages (PROTOCOL.md section 10): `POST /v1/redeem` and
//! `POST /v1/grants/consume`.

use crate::catalog::CapacityKind;
use crate::key::UnixSeconds;
use serde::{Deserialize, Serialize};

super::error_codes! {
    /// The redeemer's error codes.
    pub enum RedeemerErrorCode {
        /// 400: the token does not decode.
        MalformedToken = "malformed_token",
        /// 422: the token's key is not in this redeemer's directory.
        UnknownKey = "unknown_key",
        /// 422: the key is outside its redemption window.
        KeyNotRedeemable = "key_not_redeemable",
        /// 422: the token, or the grant, is for another kind.
        WrongKind = "wrong_kind",
        /// 422: the token's challenge is not the one expected for the key's issuer.
        WrongChallenge = "wrong_challenge",
        /// 422: the token's signature does not verify.
        InvalidSignature = "invalid_signature",
        /// 409: spent before (`first_spent_at`, `first_spent_by`).
        AlreadySpent = "already_spent",
        /// 503: the ledger did not confirm the spend; the token was not spent here.
        LedgerUnavailable = "ledger_unavailable",
        /// 503: the redeemer failed inside.
        Unavailable = "unavailable",
        /// 400: the grant code does not decode.
        MalformedGrant = "malformed_grant",
        /// 404: no such grant.
        UnknownGrant = "unknown_grant",
        /// 403: the grant was revoked (its token turned out spent elsewhere).
        GrantRevoked = "grant_revoked",
        /// 409: the grant was used.
        GrantUsed = "grant_used",
        /// 410: the grant expired.
        GrantExpired = "grant_expired",
    }
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
