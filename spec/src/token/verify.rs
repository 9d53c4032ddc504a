//! Checking a token: anyone holding the issuer's public key can do it.

use crate::key::{TokenKeyId, TokenPublicKey};
use crate::token::Token;
use crate::token::backend::{RsaBackend, RsaError};
use crate::token::challenge::TokenChallenge;
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
        /// What the RSA backend said.
        #[source]
        source: RsaError,
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
/// caches one per key), on [`RsaBackend::DEFAULT`].
pub fn verify_token_with_digest(
    key: &TokenPublicKey,
    expected_challenge_digest: &[u8; 32],
    token: &Token,
) -> Result<(), VerifyError> {
    verify_token_with_backend(RsaBackend::DEFAULT, key, expected_challenge_digest, token)
}

/// [`verify_token_with_digest`] on the backend given.
pub fn verify_token_with_backend(
    backend: RsaBackend,
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
    match backend {
        RsaBackend::RustCrypto => key
            .inner
            .verify(
                &Signature(token.authenticator.to_vec()),
                None,
                token.token_input(),
            )
            .map_err(|source| VerifyError::InvalidSignature {
                source: source.into(),
            }),
        #[cfg(feature = "openssl")]
        RsaBackend::OpenSsl => {
            if key
                .openssl
                .verify_pss(&token.token_input(), &token.authenticator)
            {
                Ok(())
            } else {
                Err(VerifyError::InvalidSignature {
                    source: RsaError::OpenSsl("RSASSA-PSS verification failed".into()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{other_key, test_key};
    use crate::token::wallet::{WalletSeed, blind, finalize};

    /// Every backend signs, and every backend verifies what each of them signed, and refuses
    /// every forgery.
    #[test]
    fn issue_then_verify_and_every_forgery_fails_on_every_backend() {
        let sk = test_key();
        let pk = sk.public_key();
        let challenge = TokenChallenge::for_issuer("issuer-a").expect("valid");
        let digest = challenge.digest();
        let other_issuer = TokenChallenge::for_issuer("issuer-b").expect("valid");
        for signer in RsaBackend::ALL {
            let (request, pending) =
                blind(&WalletSeed::generate(), 5, pk, &challenge).expect("blind");
            let response = sk.blind_sign_with(*signer, &request).expect("sign");
            let token = finalize(pk, &pending, &response).expect("finalize");
            for verifier in RsaBackend::ALL {
                let verify = |token: &Token, digest: &[u8; 32], key: &TokenPublicKey| {
                    verify_token_with_backend(*verifier, key, digest, token)
                };
                assert_eq!(
                    verify(&token, &digest, pk),
                    Ok(()),
                    "{signer} -> {verifier}"
                );
                assert_eq!(
                    verify(&token, &other_issuer.digest(), pk),
                    Err(VerifyError::WrongChallenge)
                );
                assert!(matches!(
                    verify(&token, &digest, other_key().public_key()),
                    Err(VerifyError::WrongKey { .. })
                ));
                let mut bad_sig = token.clone();
                bad_sig.authenticator[100] ^= 1;
                assert!(matches!(
                    verify(&bad_sig, &digest, pk),
                    Err(VerifyError::InvalidSignature { .. })
                ));
                // An authenticator above the modulus is malformed, not merely wrong.
                let mut huge = token.clone();
                huge.authenticator = [0xff; crate::key::MODULUS_BYTES];
                assert!(matches!(
                    verify(&huge, &digest, pk),
                    Err(VerifyError::InvalidSignature { .. })
                ));
                let mut other_nonce = token.clone();
                other_nonce.nonce[0] ^= 1;
                assert!(matches!(
                    verify(&other_nonce, &digest, pk),
                    Err(VerifyError::InvalidSignature { .. })
                ));
                // A token that claims the right challenge digest but was signed over another.
                let mut swapped = token.clone();
                swapped.challenge_digest = other_issuer.digest();
                assert!(verify(&swapped, &other_issuer.digest(), pk).is_err());
            }
        }
    }

    /// The backends agree byte for byte: RSA blind signatures are deterministic.
    #[test]
    fn backends_give_identical_signatures() {
        let sk = test_key();
        let challenge = TokenChallenge::for_issuer("issuer-a").expect("valid");
        let (request, _) =
            blind(&WalletSeed::generate(), 9, sk.public_key(), &challenge).expect("blind");
        let signatures: Vec<_> = RsaBackend::ALL
            .iter()
            .map(|backend| sk.blind_sign_with(*backend, &request).expect("sign"))
            .collect();
        assert!(signatures.windows(2).all(|pair| pair[0] == pair[1]));
    }
}
