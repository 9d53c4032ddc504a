//! Every body that crosses HTTP between scrip's services and their clients: one module per
//! service, each with its requests, answers and the [`ErrorCode`] enum of its error answers.
//!
//! Every error answer has the same shape, [`ErrorAnswer`]:
//! `{"error": {"code": "...", "message": "...", ...details}}`. Servers emit codes from these
//! enums and clients match on them; no code is compared as a string anywhere.

pub mod issuer;
pub mod ledger;
pub mod private_token;
pub mod redeemer;
pub mod relay;

use serde::{Deserialize, Serialize};

/// An error code of one service: a closed set of stable names, with `Unknown` for a code a
/// newer server may send that this version does not know.
pub trait ErrorCode:
    Copy + std::fmt::Debug + Send + Sync + Serialize + serde::de::DeserializeOwned + 'static
{
    /// The code as it appears on the wire.
    fn as_str(self) -> &'static str;
    /// The code a wire name stands for ([`Self::unknown`] if none).
    fn parse(text: &str) -> Self;
    /// The code for names this version does not know.
    fn unknown() -> Self;
}

/// Defines an [`ErrorCode`] enum: each variant with its wire name (documented in a table in
/// the enum's own doc comment, so the list of variants stays a compact table too). Every
/// service's enum also has the codes the shared HTTP layer emits outside handlers (see
/// [`GenericCode`]).
macro_rules! error_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[doc = concat!("`", $text, "` (see the table above).")]
                $variant,
            )*
            /// 400: the body, path or query is not what the endpoint takes.
            MalformedRequest,
            /// 400: a query string that does not parse.
            MalformedQuery,
            /// 413: the body is larger than the endpoint accepts.
            BodyTooLarge,
            /// 408: the request took too long to arrive or to answer.
            Timeout,
            /// 404: no such endpoint.
            NotFound,
            /// 405: the endpoint does not take that method.
            MethodNotAllowed,
            /// 429: too many requests; see `Retry-After`.
            RateLimited,
            /// 5xx: the service failed inside; nothing was changed.
            Internal,
            /// A code this version does not know.
            Unknown,
        }

        impl $crate::api::ErrorCode for $name {
            fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::MalformedRequest => "malformed_request",
                    Self::MalformedQuery => "malformed_query",
                    Self::BodyTooLarge => "body_too_large",
                    Self::Timeout => "timeout",
                    Self::NotFound => "not_found",
                    Self::MethodNotAllowed => "method_not_allowed",
                    Self::RateLimited => "rate_limited",
                    Self::Internal => "internal",
                    Self::Unknown => "unknown",
                }
            }

            fn parse(text: &str) -> Self {
                match text {
                    $( $text => Self::$variant, )*
                    "malformed_request" => Self::MalformedRequest,
                    "malformed_query" => Self::MalformedQuery,
                    "body_too_large" => Self::BodyTooLarge,
                    "timeout" => Self::Timeout,
                    "not_found" => Self::NotFound,
                    "method_not_allowed" => Self::MethodNotAllowed,
                    "rate_limited" => Self::RateLimited,
                    "internal" => Self::Internal,
                    _ => Self::Unknown,
                }
            }

            fn unknown() -> Self {
                Self::Unknown
            }
        }

        impl $name {
            /// Every code this version knows, for tests and documentation.
            pub const ALL: &'static [$name] = &[
                $( Self::$variant, )*
                Self::MalformedRequest, Self::MalformedQuery, Self::BodyTooLarge, Self::Timeout,
                Self::NotFound, Self::MethodNotAllowed, Self::RateLimited, Self::Internal,
            ];
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::api::ErrorCode::as_str(*self))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::api::ErrorCode::as_str(*self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(<Self as $crate::api::ErrorCode>::parse(&text))
            }
        }
    };
}
pub(crate) use error_codes;

error_codes! {
    /// The codes the shared HTTP layer emits by itself, outside any handler (unknown routes,
    /// body and time limits). Every service's enum includes them.
    pub enum GenericCode {
    }
}

/// An error answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer<C> {
    /// The error.
    pub error: ErrorObject<C>,
}

/// The `error` object of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject<C> {
    /// The stable code, for programs.
    pub code: C,
    /// What happened and what to do, for people.
    pub message: String,
    /// Fields some codes carry.
    #[serde(flatten)]
    pub details: ErrorDetails,
}

/// The fields some error codes carry besides `code` and `message`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetails {
    /// The position of the offending item in the request's list (issuer: `unknown_key`,
    /// `key_not_issuable`, `key_mismatch`, `invalid_request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Credits left on the card (issuer: `insufficient_credits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_credits: Option<u64>,
    /// When the token was first spent (redeemer: `already_spent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_spent_at: Option<u64>,
    /// Which operator first spent it (redeemer: `already_spent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_spent_by: Option<String>,
}

/// `GET /healthz` on every service: 200 when it can serve, 503 when not, with what it
/// checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` or `"unavailable"`.
    pub status: HealthStatus,
    /// Each dependency checked (`store`, `ledger`, `redeemer`, ...) and whether it answered.
    pub checks: std::collections::BTreeMap<String, bool>,
}

/// Whether a service can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every check passed.
    Ok,
    /// A check failed.
    Unavailable,
}

impl Health {
    /// The answer for these checks: ok when every one passed.
    pub fn from_checks<'a>(checks: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        let checks: std::collections::BTreeMap<String, bool> =
            checks.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let status = if checks.values().all(|ok| *ok) {
            HealthStatus::Ok
        } else {
            HealthStatus::Unavailable
        };
        Self { status, checks }
    }

    /// Whether the service can serve.
    pub fn is_ok(&self) -> bool {
        self.status == HealthStatus::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_parse() {
        for code in ledger::LedgerErrorCode::ALL {
            let json = serde_json::to_string(code).expect("json");
            assert_eq!(
                serde_json::from_str::<ledger::LedgerErrorCode>(&json).expect("parse"),
                *code
            );
        }
        assert_eq!(
            serde_json::from_str::<redeemer::RedeemerErrorCode>("\"from_the_future\"")
                .expect("parse"),
            redeemer::RedeemerErrorCode::Unknown
        );
        let answer: ErrorAnswer<issuer::IssuerErrorCode> = serde_json::from_str(
            r#"{"error":{"code":"insufficient_credits","message":"m","remaining_credits":3}}"#,
        )
        .expect("parse");
        assert_eq!(
            answer.error.code,
            issuer::IssuerErrorCode::InsufficientCredits
        );
        assert_eq!(answer.error.details.remaining_credits, Some(3));
    }

    #[test]
    fn every_code_has_a_distinct_name() {
        fn distinct<C: ErrorCode>(all: &[C]) {
            let names: std::collections::HashSet<_> = all.iter().map(|c| c.as_str()).collect();
            assert_eq!(names.len(), all.len());
            assert!(!names.contains("unknown"));
        }
        distinct(ledger::LedgerErrorCode::ALL);
        distinct(issuer::IssuerErrorCode::ALL);
        distinct(redeemer::RedeemerErrorCode::ALL);
        distinct(GenericCode::ALL);
    }
}
