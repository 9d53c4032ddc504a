//! The issuer's side of issuance: blind-signing a token request.

use crate::key::{MODULUS_BYTES, TokenSecretKey};
use crate::token::backend::{RsaBackend, RsaError};
use crate::token::request::TokenRequest;
use crate::token::response::TokenResponse;

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
    /// The blinded message is not in `2..n` for this key's modulus `n`
    /// ([`crate::TokenPublicKey::accepts_blinded_message`]).
    #[error("the blinded message is out of range for this key")]
    OutOfRange,
    /// The RSA backend failed, or its result did not verify (a fault): nothing is returned.
    #[error("the {backend} RSA backend could not sign")]
    Backend {
        /// The backend that ran.
        backend: RsaBackend,
        /// What it said.
        #[source]
        source: RsaError,
    },
}

impl TokenSecretKey {
    /// Blind-signs a request (RFC 9474 `BlindSign`, which checks its own result against the
    /// public key before returning it) on [`RsaBackend::DEFAULT`].
    pub fn blind_sign(&self, request: &TokenRequest) -> Result<TokenResponse, SignError> {
        self.blind_sign_with(RsaBackend::DEFAULT, request)
    }

    /// [`Self::blind_sign`] on the backend given.
    pub fn blind_sign_with(
        &self,
        backend: RsaBackend,
        request: &TokenRequest,
    ) -> Result<TokenResponse, SignError> {
        let ours = self.public_key().id().truncated();
        if request.truncated_token_key_id != ours {
            return Err(SignError::WrongKey {
                requested: request.truncated_token_key_id,
                ours,
            });
        }
        if !self
            .public_key()
            .accepts_blinded_message(&request.blinded_msg)
        {
            return Err(SignError::OutOfRange);
        }
        let failed = |source: RsaError| SignError::Backend { backend, source };
        let sig = match backend {
            RsaBackend::RustCrypto => {
                self.inner
                    .blind_sign(request.blinded_msg)
                    .map_err(|source| failed(source.into()))?
                    .0
            }
            #[cfg(feature = "openssl")]
            RsaBackend::OpenSsl => self
                .openssl
                .blind_sign(&request.blinded_msg)
                .map_err(failed)?,
        };
        let blind_sig = <[u8; MODULUS_BYTES]>::try_from(sig.as_slice())
            .map_err(|_| failed(RsaError::WrongLength { len: sig.len() }))?;
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
        for backend in RsaBackend::ALL {
            assert!(matches!(
                sk.blind_sign_with(*backend, &wrong),
                Err(SignError::WrongKey { .. })
            ));
            assert_eq!(
                sk.blind_sign_with(*backend, &too_big),
                Err(SignError::OutOfRange)
            );
            // The modulus itself is the smallest value out of range.
            let modulus = TokenRequest {
                truncated_token_key_id: ours,
                blinded_msg: *sk.public_key().modulus,
            };
            assert_eq!(
                sk.blind_sign_with(*backend, &modulus),
                Err(SignError::OutOfRange)
            );
        }
    }
}
