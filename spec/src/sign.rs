//! The issuer's side of issuance: blind-signing a token request.

use crate::key::{MODULUS_BYTES, TokenSecretKey};
use crate::request::TokenRequest;
use crate::response::TokenResponse;

/// Why a token request was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The request's truncated key id is not this key's.
    #[error("the request is for key id ending {requested:#04x}, not this key (ending {ours:#04x})")]
    WrongKey {
        /// The truncated key id in the request.
        requested: u8,
        /// This key's truncated key id.
        ours: u8,
    },
    /// The blinded message is not a value modulo this key's modulus.
    #[error("the blinded message is out of range for this key")]
    OutOfRange {
        /// What the RSA library said.
        #[source]
        source: blind_rsa_signatures::Error,
    },
}

impl TokenSecretKey {
    /// Blind-signs a request (RFC 9474 `BlindSign`, which checks its own result against the
    /// public key before returning it).
    pub fn blind_sign(&self, request: &TokenRequest) -> Result<TokenResponse, SignError> {
        let ours = self.public_key().id().truncated();
        if request.truncated_token_key_id != ours {
            return Err(SignError::WrongKey {
                requested: request.truncated_token_key_id,
                ours,
            });
        }
        let sig = self
            .inner
            .blind_sign(request.blinded_msg)
            .map_err(|source| SignError::OutOfRange { source })?;
        let blind_sig: [u8; MODULUS_BYTES] =
            sig.0
                .as_slice()
                .try_into()
                .map_err(|_| SignError::OutOfRange {
                    source: blind_rsa_signatures::Error::InternalError,
                })?;
        Ok(TokenResponse { blind_sig })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test_key;

    #[test]
    fn refuses_requests_for_another_key_or_out_of_range() {
        let sk = test_key();
        let ours = sk.public_key().id().truncated();
        let wrong = TokenRequest {
            truncated_token_key_id: ours.wrapping_add(1),
            blinded_msg: [1; MODULUS_BYTES],
        };
        assert!(matches!(
            sk.blind_sign(&wrong),
            Err(SignError::WrongKey { .. })
        ));
        let too_big = TokenRequest {
            truncated_token_key_id: ours,
            blinded_msg: [0xff; MODULUS_BYTES],
        };
        assert!(matches!(
            sk.blind_sign(&too_big),
            Err(SignError::OutOfRange { .. })
        ));
    }
}
