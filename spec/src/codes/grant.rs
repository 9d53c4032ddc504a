//! Grant codes: the compact single-use codes a relay consumes in exchange for capacity.
//!
//! Format: `sg1.<kind>.<secret>` where `<secret>` is 16 random bytes in unpadded base64url
//! (22 characters). At most 4 + 24 + 1 + 22 = 51 characters, no whitespace, `@`, `:` or `/`,
//! so a code fits where an SMP or XFTP server takes its basic-auth password.

use crate::catalog::CapacityKind;
use crate::encoding::{b64_decode, b64_encode};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq as _;

/// Prefix and version of every grant code.
pub const GRANT_PREFIX: &str = "sg1";
/// Longest grant code.
pub const MAX_GRANT_CODE_LEN: usize = 64;
/// Domain separator of the stored grant hash.
pub const GRANT_HASH_DOMAIN: &[u8] = b"scrip/v1/grant";

/// A grant code. The secret part is compared in constant time and never printed by `Debug`.
#[derive(Clone)]
pub struct GrantCode {
    kind: CapacityKind,
    secret: [u8; 16],
}

/// Why a string is not a grant code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantCodeError {
    /// Longer than any grant code.
    #[error("a grant code is at most {MAX_GRANT_CODE_LEN} characters")]
    TooLong,
    /// Not `sg1.<kind>.<secret>`.
    #[error("not a grant code: expected sg1.<kind>.<22 base64url characters>")]
    Malformed,
    /// The kind part is not a valid capacity kind.
    #[error(transparent)]
    Kind(#[from] crate::catalog::KindError),
}

impl GrantCode {
    /// A new code for `kind` with a secret from the operating system's CSPRNG.
    pub fn generate(kind: CapacityKind) -> Self {
        let mut secret = [0u8; 16];
        rand::fill(&mut secret);
        Self { kind, secret }
    }

    /// The code for `kind` with the secret `secret`: for a redeemer that derives its secrets
    /// from a key of its own, so it can give the same code again without storing it.
    pub fn from_secret(kind: CapacityKind, secret: [u8; 16]) -> Self {
        Self { kind, secret }
    }

    /// Parses a code; never panics.
    pub fn parse(code: &str) -> Result<Self, GrantCodeError> {
        if code.len() > MAX_GRANT_CODE_LEN {
            return Err(GrantCodeError::TooLong);
        }
        let mut parts = code.split('.');
        let (Some(prefix), Some(kind), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GrantCodeError::Malformed);
        };
        if prefix != GRANT_PREFIX || secret.len() != 22 {
            return Err(GrantCodeError::Malformed);
        }
        let kind = CapacityKind::new(kind)?;
        let secret = b64_decode(secret)
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or(GrantCodeError::Malformed)?;
        Ok(Self { kind, secret })
    }

    /// The kind of capacity the code grants.
    pub fn kind(&self) -> &CapacityKind {
        &self.kind
    }

    /// What a redeemer stores instead of the code: `SHA-256("scrip/v1/grant" || code)`.
    pub fn storage_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(GRANT_HASH_DOMAIN);
        h.update(self.to_string());
        h.finalize().into()
    }
}

impl PartialEq for GrantCode {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && bool::from(self.secret.ct_eq(&other.secret))
    }
}
impl Eq for GrantCode {}

impl fmt::Display for GrantCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{GRANT_PREFIX}.{}.{}",
            self.kind,
            b64_encode(self.secret)
        )
    }
}

impl fmt::Debug for GrantCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantCode({}, secret elided)", self.kind)
    }
}

impl std::str::FromStr for GrantCode {
    type Err = GrantCodeError;
    fn from_str(s: &str) -> Result<Self, GrantCodeError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fit_a_password_field_and_round_trip() {
        let longest = CapacityKind::new(&"k".repeat(24)).expect("valid");
        for kind in [CapacityKind::new("queue").expect("valid"), longest] {
            let code = GrantCode::generate(kind.clone());
            let text = code.to_string();
            assert!(text.len() <= MAX_GRANT_CODE_LEN, "{}", text.len());
            assert!(!text.contains(|c: char| c.is_whitespace() || "@:/".contains(c)));
            let back = GrantCode::parse(&text).expect("parses");
            assert_eq!(back, code);
            assert_eq!(back.kind(), &kind);
            assert_eq!(back.storage_hash(), code.storage_hash());
        }
        let derived = GrantCode::from_secret(CapacityKind::new("chunk-1m").expect("valid"), {
            let mut s = [0u8; 16];
            for (i, b) in s.iter_mut().enumerate() {
                *b = i as u8;
            }
            s
        });
        // PROTOCOL.md 6.2's example.
        assert_eq!(derived.to_string(), "sg1.chunk-1m.AAECAwQFBgcICQoLDA0ODw");
        let a = GrantCode::generate(CapacityKind::new("queue").expect("valid"));
        let b = GrantCode::generate(CapacityKind::new("queue").expect("valid"));
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains(&a.to_string()));
    }

    #[test]
    fn malformed_codes_are_refused() {
        let good = GrantCode::generate(CapacityKind::new("queue").expect("valid")).to_string();
        let cases = [
            String::new(),
            "sg1".into(),
            good.replacen("sg1", "sg2", 1),
            format!("{good}.x"),
            good[..good.len() - 1].to_string(),
            format!("{good}A"),
            good.replacen("queue", "Queue", 1),
            format!("sg1.queue.{}", "!".repeat(22)),
            "x".repeat(1000),
        ];
        for case in cases {
            assert!(GrantCode::parse(&case).is_err(), "{case:?} accepted");
        }
    }
}
