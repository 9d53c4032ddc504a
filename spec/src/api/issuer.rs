//! The issuer's HTTP messages (PROTOCOL.md section 9): card opening, balance, replay, keys,
//! and its error codes.

use crate::encoding::serde_bytes_b64;
use crate::key::{TokenKeyId, TokenKeyInfo};
use crate::token::Token;
use crate::token::request::TokenRequest;
use crate::token::response::TokenResponse;
use serde::{Deserialize, Serialize};

/// Most token requests in one opening.
pub const MAX_OPEN_BATCH: usize = 1000;

super::error_codes! {
    /// The issuer's error codes.
    ///
    /// | code | meaning |
    /// |---|---|
    /// | `malformed_card_code` | 400: the card code does not parse (length, alphabet or check symbol). |
    /// | `invalid_card` | 403: no such card, or not active. |
    /// | `request_id_reused` | 409: this request id was used with other content. |
    /// | `unknown_key` | 422: request `index` names a key this issuer does not have (`index`). |
    /// | `key_not_issuable` | 422: the key cannot sign now (`index`). |
    /// | `key_mismatch` | 422: the request's truncated key id does not match its key (`index`). |
    /// | `invalid_request` | 422: a blinded request the key cannot sign (`index`). |
    /// | `insufficient_credits` | 422: the card has fewer credits than the tokens cost (`remaining_credits`). |
    /// | `unknown_request` | 404: no opening with this request id. |
    /// | `unavailable` | 503: the issuer could not complete the request; nothing was charged. |
    /// | `unknown_input_key` | 422: refresh input `index` is not of one of this issuer's announced, unrevoked keys. |
    /// | `input_not_redeemable` | 422: refresh input `index` is of a key outside its redemption window. |
    /// | `invalid_token` | 422: refresh input `index` does not verify. |
    /// | `duplicate_token` | 422: refresh input `index` appears earlier in the same refresh. |
    /// | `value_exceeded` | 422: the refresh's outputs are worth more than its inputs. |
    /// | `already_spent` | 409: refresh input `index` was spent or refreshed before (`first_spent_at`, `first_spent_by` when known); nothing was signed. |
    pub enum IssuerErrorCode {
        MalformedCardCode = "malformed_card_code", InvalidCard = "invalid_card",
        RequestIdReused = "request_id_reused", UnknownKey = "unknown_key",
        KeyNotIssuable = "key_not_issuable", KeyMismatch = "key_mismatch",
        InvalidRequest = "invalid_request", InsufficientCredits = "insufficient_credits",
        UnknownRequest = "unknown_request", Unavailable = "unavailable",
        UnknownInputKey = "unknown_input_key", InputNotRedeemable = "input_not_redeemable",
        InvalidToken = "invalid_token", DuplicateToken = "duplicate_token",
        ValueExceeded = "value_exceeded", AlreadySpent = "already_spent",
    }
}

/// A 32-byte request id chosen by the wallet (derived from its seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(#[serde(with = "serde_bytes_b64")] pub [u8; 32]);

/// One blinded request and the key it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedTokenRequest {
    /// The key asked to sign.
    pub token_key_id: TokenKeyId,
    /// The blinded request.
    pub token_request: TokenRequest,
}

/// `POST /v1/cards/open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// The card code as printed (parsed by the issuer).
    pub card_code: String,
    /// The wallet's id for this opening; a repeat with the same id and content is answered
    /// with the same responses and charges nothing.
    pub request_id: RequestId,
    /// 1 to [`MAX_OPEN_BATCH`] requests.
    pub requests: Vec<KeyedTokenRequest>,
}

/// The answer to an opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenResponse {
    /// The request id.
    pub request_id: RequestId,
    /// `responses[j]` answers `requests[j]`.
    pub responses: Vec<TokenResponse>,
    /// Credits left on the card.
    pub remaining_credits: u64,
}

/// `POST /v1/cards/balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceRequest {
    /// The card code.
    pub card_code: String,
}

/// A card's state as the buyer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardState {
    /// Created, not yet for sale.
    Minted,
    /// For sale or sold, nothing opened.
    Active,
    /// Partly opened.
    Opened,
    /// No credits left.
    Used,
    /// Cancelled.
    Void,
}

impl CardState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CardState::Minted => "minted",
            CardState::Active => "active",
            CardState::Opened => "opened",
            CardState::Used => "used",
            CardState::Void => "void",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "minted" => CardState::Minted,
            "active" => CardState::Active,
            "opened" => CardState::Opened,
            "used" => CardState::Used,
            "void" => CardState::Void,
            _ => return None,
        })
    }
}

/// The answer to a balance query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceResponse {
    /// The card's state.
    pub state: CardState,
    /// Face value in credits.
    pub value: u64,
    /// Credits left.
    pub remaining_credits: u64,
}

/// `POST /v1/requests/replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The opening's id.
    pub request_id: RequestId,
}

/// A recorded opening, for a wallet restoring from its seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayResponse {
    /// The opening's id.
    pub request_id: RequestId,
    /// The requests as recorded.
    pub requests: Vec<KeyedTokenRequest>,
    /// The responses.
    pub responses: Vec<TokenResponse>,
}

/// `POST /v1/refresh`: tokens of this issuer's keys exchanged for new blind signatures of no
/// greater total value (PROTOCOL.md section 9.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The wallet's id for this refresh, derived like an opening's; a repeat with the same id
    /// and content is answered with the same responses and spends nothing more.
    pub request_id: RequestId,
    /// 1 to [`crate::ledger::MAX_REFRESH_BATCH`] tokens given in.
    pub tokens: Vec<Token>,
    /// 1 to [`crate::ledger::MAX_REFRESH_BATCH`] blinded requests for the new tokens.
    pub requests: Vec<KeyedTokenRequest>,
}

/// The answer to a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshResponse {
    /// The request id.
    pub request_id: RequestId,
    /// `responses[j]` answers `requests[j]`.
    pub responses: Vec<TokenResponse>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerKeys {
    /// The issuer's name.
    pub issuer: String,
    /// Its announced keys that can issue now or later.
    pub keys: Vec<TokenKeyInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::MODULUS_BYTES;

    #[test]
    fn open_request_json_round_trip_and_rejections() {
        let req = OpenRequest {
            card_code: "X".into(),
            request_id: RequestId([1; 32]),
            requests: vec![KeyedTokenRequest {
                token_key_id: TokenKeyId([2; 32]),
                token_request: TokenRequest {
                    truncated_token_key_id: 2,
                    blinded_msg: [3; MODULUS_BYTES],
                },
            }],
        };
        let json = serde_json::to_value(&req).expect("json");
        assert_eq!(
            serde_json::from_value::<OpenRequest>(json.clone()).expect("parse"),
            req
        );
        let mut extra = json.clone();
        extra["x"] = 1.into();
        assert!(serde_json::from_value::<OpenRequest>(extra).is_err());
        let mut short = json;
        short["request_id"] = "AAAA".into();
        assert!(serde_json::from_value::<OpenRequest>(short).is_err());
        for s in ["minted", "active", "opened", "used", "void"] {
            assert_eq!(CardState::parse(s).map(CardState::as_str), Some(s));
        }
        assert_eq!(CardState::parse("x"), None);
    }
}

/// RFC 9578 issuance at the issuer (PROTOCOL.md 9.9): the directory, the media types, and the
/// header that carries the card paying for a token.
pub mod standard {
    use serde::{Deserialize, Serialize};

    /// Where the issuer directory is served (RFC 9578 section 4).
    pub const DIRECTORY_PATH: &str = "/.well-known/private-token-issuer-directory";
    /// Where one token request is sent; the directory names it (relative to itself).
    pub const REQUEST_PATH: &str = "/v1/token-request";
    /// The media type of a request body: one 259-byte `TokenRequest`.
    pub const REQUEST_MEDIA_TYPE: &str = "application/private-token-request";
    /// The media type of an answer: one 256-byte `TokenResponse`.
    pub const RESPONSE_MEDIA_TYPE: &str = "application/private-token-response";
    /// The request header carrying the card code that pays, as printed.
    pub const CARD_CODE_HEADER: &str = "scrip-card-code";

    /// `GET /.well-known/private-token-issuer-directory`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct IssuerDirectory {
        /// Where token requests go (here relative to the directory: [`REQUEST_PATH`]).
        #[serde(rename = "issuer-request-uri")]
        pub issuer_request_uri: String,
        /// The keys that sign now: announced on the ledger and within their issuing window.
        #[serde(rename = "token-keys")]
        pub token_keys: Vec<DirectoryKey>,
    }

    /// One key of the directory.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DirectoryKey {
        /// 2 (blind RSA, RFC 9578 section 6).
        #[serde(rename = "token-type")]
        pub token_type: u16,
        /// The key's SPKI (RSASSA-PSS), base64url with padding.
        #[serde(rename = "token-key")]
        pub token_key: String,
        /// When it starts signing (Unix seconds).
        #[serde(
            rename = "not-before",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub not_before: Option<u64>,
    }
}
