//! `TokenResponse` (RFC 9578 section 6.2): the issuer's blind signature.

use crate::decode::{DecodeError, expect_end};
use crate::encoding::{Reader, serde_via_wire_bytes};
use crate::key::MODULUS_BYTES;

const WHAT: &str = "TokenResponse";

/// A blind signature, `Nk` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The blind signature.
    pub blind_sig: [u8; MODULUS_BYTES],
}

impl TokenResponse {
    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.blind_sig.to_vec()
    }

    /// Decodes a response: exactly `Nk` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let blind_sig = r.array().ok_or(DecodeError::Truncated { what: WHAT })?;
        expect_end(&r, WHAT)?;
        Ok(Self { blind_sig })
    }
}

serde_via_wire_bytes!(TokenResponse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let resp = TokenResponse {
            blind_sig: [5; MODULUS_BYTES],
        };
        assert_eq!(
            TokenResponse::from_bytes(&resp.to_bytes()).expect("ok"),
            resp
        );
        assert!(TokenResponse::from_bytes(&[0; MODULUS_BYTES - 1]).is_err());
        assert!(TokenResponse::from_bytes(&[0; MODULUS_BYTES + 1]).is_err());
    }
}
