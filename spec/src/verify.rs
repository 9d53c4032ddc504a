//! Checking a token: anyone holding the issuer's public key can do it.

use crate::challenge::TokenChallenge;
use crate::key::{TokenKeyId, TokenPublicKey};
use crate::token::Token;
use blind_rsa_signatures::Signature;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token names another key.
    #[error("the token is for key {token}, not key {key}")]
    WrongKey {
        /// Key id in the token.
        token: TokenKeyId,
        /// Key id of the key given.
        key: TokenKeyId,
    },
    /// The token's challenge digest is not the one expected for this issuer.
    #[error("the token was not made for this issuer's challenge")]
    WrongChallenge,
    /// The authenticator is not a valid signature by the key.
    #[error("the token's signature is invalid")]
    InvalidSignature {
        /// What the RSA library said.
        #[source]
        source: blind_rsa_signatures::Error,
    },
}

/// Verifies `token` against `key` and the challenge the verifier expects.
///
/// The expected challenge is recomputed by the verifier (for scrip,
/// [`TokenChallenge::for_issuer`] with the key's issuer); the digest the token carries is only
/// compared with it, never trusted.
pub fn verify_token(
    key: &TokenPublicKey,
    expected_challenge: &TokenChallenge,
    token: &Token,
) -> Result<(), VerifyError> {
    verify_token_with_digest(key, &expected_challenge.digest(), token)
}

/// [`verify_token`] with the expected challenge digest computed once by the caller (a redeemer
/// caches one per key).
pub fn verify_token_with_digest(
    key: &TokenPublicKey,
    expected_challenge_digest: &[u8; 32],
    token: &Token,
) -> Result<(), VerifyError> {
    if token.token_key_id != key.id() {
        return Err(VerifyError::WrongKey {
            token: token.token_key_id,
            key: key.id(),
        });
    }
    if &token.challenge_digest != expected_challenge_digest {
        return Err(VerifyError::WrongChallenge);
    }
    key.inner
        .verify(
            &Signature(token.authenticator.to_vec()),
            None,
            token.token_input(),
        )
        .map_err(|source| VerifyError::InvalidSignature { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{WalletSeed, blind, finalize};
    use crate::test_support::{other_key, test_key};

    #[test]
    fn issue_then_verify_and_every_forgery_fails() {
        let sk = test_key();
        let pk = sk.public_key();
        let challenge = TokenChallenge::for_issuer("issuer-a").expect("valid");
        let (request, pending) = blind(&WalletSeed::generate(), 5, pk, &challenge).expect("blind");
        let token = finalize(pk, &pending, &sk.blind_sign(&request).expect("sign")).expect("fin");
        assert_eq!(verify_token(pk, &challenge, &token), Ok(()));

        let other_issuer = TokenChallenge::for_issuer("issuer-b").expect("valid");
        assert_eq!(
            verify_token(pk, &other_issuer, &token),
            Err(VerifyError::WrongChallenge)
        );
        assert!(matches!(
            verify_token(other_key().public_key(), &challenge, &token),
            Err(VerifyError::WrongKey { .. })
        ));
        let mut bad_sig = token.clone();
        bad_sig.authenticator[100] ^= 1;
        assert!(matches!(
            verify_token(pk, &challenge, &bad_sig),
            Err(VerifyError::InvalidSignature { .. })
        ));
        let mut other_nonce = token.clone();
        other_nonce.nonce[0] ^= 1;
        assert!(matches!(
            verify_token(pk, &challenge, &other_nonce),
            Err(VerifyError::InvalidSignature { .. })
        ));
        // A token that claims the right challenge digest but was signed over another one.
        let mut swapped = token.clone();
        swapped.challenge_digest = other_issuer.digest();
        assert!(verify_token_with_digest(pk, &other_issuer.digest(), &swapped).is_err());
    }
}
