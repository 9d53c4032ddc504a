//! `Token` (RFC 9578 section 2.2), the bytes a wallet spends, and its nullifier.
//!
//! Everything about Privacy Pass publicly verifiable tokens (RFC 9578 type `0x0002`, RFC 9474
//! blind RSA): the challenge, the blinded request and its response, the wallet's blinding
//! and finalization, the issuer's signing, verification, and the RSA backends behind them.

pub mod backend;
pub mod challenge;
pub mod request;
pub mod response;
pub mod sign;
pub mod verify;
pub mod wallet;

use crate::decode::{DecodeError, expect_end, expect_token_type};
use crate::encoding::{Reader, serde_bytes_b64, serde_via_wire_bytes};
use crate::key::{MODULUS_BYTES, TokenKeyId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The only token type scrip uses: publicly verifiable, RSABSSA-SHA384-PSS-Deterministic.
pub const TOKEN_TYPE: u16 = 0x0002;

/// Length of an encoded token: type, nonce, challenge digest, key id, authenticator.
pub const TOKEN_BYTES: usize = 2 + 32 + 32 + 32 + MODULUS_BYTES;

/// Length of the part of a token that is signed (`token_input`).
pub const TOKEN_INPUT_BYTES: usize = TOKEN_BYTES - MODULUS_BYTES;

const WHAT: &str = "Token";

/// A spendable Privacy Pass token of type 0x0002.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Random nonce chosen by the wallet.
    pub nonce: [u8; 32],
    /// SHA-256 of the `TokenChallenge` the token was made for.
    pub challenge_digest: [u8; 32],
    /// The key that signed it.
    pub token_key_id: TokenKeyId,
    /// The RSA-PSS signature over [`Token::token_input`].
    pub authenticator: [u8; MODULUS_BYTES],
}

impl fmt::Debug for Token {
    // A token is a bearer secret until spent: show only its nullifier.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(nullifier {})", self.nullifier())
    }
}

impl Token {
    /// `token_input`: `token_type || nonce || challenge_digest || token_key_id`, the message the
    /// authenticator signs.
    pub fn token_input(&self) -> [u8; TOKEN_INPUT_BYTES] {
        token_input(&self.nonce, &self.challenge_digest, &self.token_key_id)
    }

    /// The wire encoding (`TOKEN_BYTES` bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOKEN_BYTES);
        out.extend_from_slice(&self.token_input());
        out.extend_from_slice(&self.authenticator);
        out
    }

    /// Decodes a token: exactly `TOKEN_BYTES` bytes of type 0x0002.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let truncated = DecodeError::Truncated { what: WHAT };
        let mut r = Reader::new(bytes);
        expect_token_type(&mut r, WHAT)?;
        let nonce = r.array().ok_or(truncated.clone())?;
        let challenge_digest = r.array().ok_or(truncated.clone())?;
        let token_key_id = TokenKeyId(r.array().ok_or(truncated.clone())?);
        let authenticator = r.array().ok_or(truncated)?;
        expect_end(&r, WHAT)?;
        Ok(Self {
            nonce,
            challenge_digest,
            token_key_id,
            authenticator,
        })
    }

    /// The token's nullifier: what the ledger's spent set records.
    pub fn nullifier(&self) -> Nullifier {
        Nullifier::of(&self.token_key_id, &self.nonce)
    }
}

serde_via_wire_bytes!(Token);

pub(crate) fn token_input(
    nonce: &[u8; 32],
    challenge_digest: &[u8; 32],
    key_id: &TokenKeyId,
) -> [u8; TOKEN_INPUT_BYTES] {
    let mut out = [0u8; TOKEN_INPUT_BYTES];
    out[..2].copy_from_slice(&TOKEN_TYPE.to_be_bytes());
    out[2..34].copy_from_slice(nonce);
    out[34..66].copy_from_slice(challenge_digest);
    out[66..].copy_from_slice(&key_id.0);
    out
}

/// Domain separator of the nullifier hash.
pub const NULLIFIER_DOMAIN: &[u8] = b"scrip/v1/nullifier";

/// `SHA-256("scrip/v1/nullifier" || token_key_id || nonce)`: identifies a spent token without
/// revealing the token, and is the key of the ledger's spent set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Nullifier(#[serde(with = "serde_bytes_b64")] pub [u8; 32]);

impl Nullifier {
    /// The nullifier of the token with this key id and nonce.
    pub fn of(key_id: &TokenKeyId, nonce: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(NULLIFIER_DOMAIN);
        h.update(key_id.0);
        h.update(nonce);
        Self(h.finalize().into())
    }
}

crate::encoding::b64_id_fmt!(Nullifier);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Token {
        Token {
            nonce: [1; 32],
            challenge_digest: [2; 32],
            token_key_id: TokenKeyId([3; 32]),
            authenticator: [4; MODULUS_BYTES],
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let token = sample();
        let bytes = token.to_bytes();
        assert_eq!(bytes.len(), TOKEN_BYTES);
        assert_eq!(&bytes[..3], &[0, 2, 1]);
        assert_eq!(Token::from_bytes(&bytes).expect("decodes"), token);
        let json = serde_json::to_string(&token).expect("json");
        assert_eq!(serde_json::from_str::<Token>(&json).expect("parse"), token);
    }

    #[test]
    fn decode_rejects_bad_input() {
        let bytes = sample().to_bytes();
        let mut other_type = bytes.clone();
        other_type[1] = 1;
        assert!(matches!(
            Token::from_bytes(&other_type),
            Err(DecodeError::WrongTokenType { found: 1, .. })
        ));
        assert!(matches!(
            Token::from_bytes(&bytes[..TOKEN_BYTES - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(9);
        assert!(matches!(
            Token::from_bytes(&long),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
        assert!(Token::from_bytes(&[]).is_err());
        assert!(serde_json::from_str::<Token>("\"AAEC\"").is_err());
        assert!(serde_json::from_str::<Token>("\"not base64!\"").is_err());
    }

    #[test]
    fn nullifier_depends_on_key_and_nonce() {
        let token = sample();
        let n = token.nullifier();
        let mut other_nonce = token.clone();
        other_nonce.nonce[0] ^= 1;
        let mut other_key = token.clone();
        other_key.token_key_id.0[0] ^= 1;
        assert_ne!(other_nonce.nullifier(), n);
        assert_ne!(other_key.nullifier(), n);
        // The authenticator does not enter the nullifier: re-randomized signatures of one
        // token still collide.
        let mut other_sig = token.clone();
        other_sig.authenticator[0] ^= 1;
        assert_eq!(other_sig.nullifier(), n);
        let mut h = Sha256::new();
        h.update(b"scrip/v1/nullifier");
        h.update([3u8; 32]);
        h.update([1u8; 32]);
        assert_eq!(n.0, <[u8; 32]>::from(h.finalize()));
    }
}
