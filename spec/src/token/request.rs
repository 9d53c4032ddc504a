//! `TokenRequest` (RFC 9578 section 6.1): what a wallet sends the issuer to be blind-signed.

use crate::decode::{DecodeError, expect_end, expect_token_type};
use crate::encoding::{Reader, serde_via_wire_bytes};
use crate::key::MODULUS_BYTES;
use crate::token::TOKEN_TYPE;

/// Length of an encoded token request.
pub const TOKEN_REQUEST_BYTES: usize = 2 + 1 + MODULUS_BYTES;

const WHAT: &str = "TokenRequest";

/// A blinded token request of type 0x0002.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Last byte of the key id the request is for.
    pub truncated_token_key_id: u8,
    /// The blinded message.
    pub blinded_msg: [u8; MODULUS_BYTES],
}

impl TokenRequest {
    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOKEN_REQUEST_BYTES);
        out.extend_from_slice(&TOKEN_TYPE.to_be_bytes());
        out.push(self.truncated_token_key_id);
        out.extend_from_slice(&self.blinded_msg);
        out
    }

    /// Decodes a request: exactly `TOKEN_REQUEST_BYTES` bytes of type 0x0002.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let truncated = DecodeError::Truncated { what: WHAT };
        let mut r = Reader::new(bytes);
        expect_token_type(&mut r, WHAT)?;
        let truncated_token_key_id = r.u8().ok_or(truncated.clone())?;
        let blinded_msg = r.array().ok_or(truncated)?;
        expect_end(&r, WHAT)?;
        Ok(Self {
            truncated_token_key_id,
            blinded_msg,
        })
    }
}

serde_via_wire_bytes!(TokenRequest);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let req = TokenRequest {
            truncated_token_key_id: 7,
            blinded_msg: [9; MODULUS_BYTES],
        };
        let bytes = req.to_bytes();
        assert_eq!(bytes.len(), TOKEN_REQUEST_BYTES);
        assert_eq!(TokenRequest::from_bytes(&bytes).expect("decodes"), req);
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            TokenRequest::from_bytes(&long),
            Err(DecodeError::TrailingBytes { .. })
        ));
        assert!(matches!(
            TokenRequest::from_bytes(&bytes[..10]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut typ = bytes;
        typ[0] = 0xff;
        assert!(matches!(
            TokenRequest::from_bytes(&typ),
            Err(DecodeError::WrongTokenType { found: 0xff02, .. })
        ));
    }
}
