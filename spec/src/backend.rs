//! RSA backends: which implementation does the arithmetic of blind signing and of token
//! verification.
//!
//! The wire format, the checks and the results are the same whichever backend runs; both pass
//! the RFC 9474 and RFC 9578 vectors, and tests check that each verifies the other's output.
//! - [`RsaBackend::RustCrypto`]: pure Rust (`blind-rsa-signatures` on RustCrypto's `rsa`),
//!   always compiled in.
//! - [`RsaBackend::OpenSsl`]: OpenSSL's RSA, with the cargo feature `openssl`. Blind signing
//!   is OpenSSL's raw private-key operation (CRT, with OpenSSL's own base blinding against
//!   timing attacks), checked against the public key before it is returned, as RFC 9474's
//!   `BlindSign` requires. Verification is OpenSSL's RSASSA-PSS with SHA-384, MGF1-SHA-384
//!   and a 48-byte salt.
//!
//! [`RsaBackend::DEFAULT`] is the fastest one compiled in. Wallet-side blinding and
//! finalization always run on the pure-Rust backend: they need the deterministic blinding
//! stream of [`crate::client`], and their cost is the wallet's, not a service's.

use std::fmt;
use std::str::FromStr;

/// An RSA implementation behind [`crate::TokenSecretKey::blind_sign_with`] and
/// [`crate::verify::verify_token_with_backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RsaBackend {
    /// Pure Rust: `blind-rsa-signatures` on RustCrypto's `rsa`.
    RustCrypto,
    /// OpenSSL, through the `openssl` crate (cargo feature `openssl`).
    #[cfg(feature = "openssl")]
    OpenSsl,
}

impl RsaBackend {
    /// The fastest backend compiled in.
    #[cfg(feature = "openssl")]
    pub const DEFAULT: Self = Self::OpenSsl;
    /// The fastest backend compiled in.
    #[cfg(not(feature = "openssl"))]
    pub const DEFAULT: Self = Self::RustCrypto;

    /// Every backend compiled in.
    #[cfg(feature = "openssl")]
    pub const ALL: &'static [Self] = &[Self::RustCrypto, Self::OpenSsl];
    /// Every backend compiled in.
    #[cfg(not(feature = "openssl"))]
    pub const ALL: &'static [Self] = &[Self::RustCrypto];

    /// The backend's name, as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Self::RustCrypto => "rustcrypto",
            #[cfg(feature = "openssl")]
            Self::OpenSsl => "openssl",
        }
    }
}

impl fmt::Display for RsaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given is not a backend compiled into this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown RSA backend {name:?}; this build has: {available}")]
pub struct UnknownBackend {
    /// The name given.
    pub name: String,
    /// The backends this build has, comma-separated.
    pub available: String,
}

impl FromStr for RsaBackend {
    type Err = UnknownBackend;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|backend| backend.name() == name)
            .ok_or_else(|| UnknownBackend {
                name: name.to_owned(),
                available: Self::ALL
                    .iter()
                    .map(|backend| backend.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// What an RSA backend reported when it could not complete an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsaError {
    /// The pure-Rust backend's error.
    #[error(transparent)]
    RustCrypto(#[from] blind_rsa_signatures::Error),
    /// OpenSSL's error stack, as text (its own type is neither comparable nor stable).
    #[cfg(feature = "openssl")]
    #[error("OpenSSL: {0}")]
    OpenSsl(String),
}

#[cfg(feature = "openssl")]
pub(crate) mod openssl_rsa {
    //! The OpenSSL halves of token keys, built once when a key is loaded.

    use super::RsaError;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private, Public};
    use openssl::rsa::{Padding, Rsa};
    use openssl::sign::{RsaPssSaltlen, Verifier};

    /// RFC 9474 RSABSSA-SHA384-PSS: the salt is as long as the hash.
    const SALT_BYTES: i32 = 48;

    fn openssl_error(error: openssl::error::ErrorStack) -> RsaError {
        RsaError::OpenSsl(error.to_string())
    }

    /// A public key as OpenSSL holds it.
    #[derive(Clone)]
    pub(crate) struct PublicKey(PKey<Public>);

    impl PublicKey {
        pub(crate) fn from_components(n: &[u8], e: &[u8]) -> Result<Self, RsaError> {
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(n).map_err(openssl_error)?,
                BigNum::from_slice(e).map_err(openssl_error)?,
            )
            .map_err(openssl_error)?;
            PKey::from_rsa(rsa).map(Self).map_err(openssl_error)
        }

        /// RSASSA-PSS verification of `signature` over `message`; `Ok(false)` means the
        /// signature is not valid.
        pub(crate) fn verify_pss(&self, message: &[u8], signature: &[u8]) -> Result<bool, RsaError> {
            let mut verifier =
                Verifier::new(MessageDigest::sha384(), &self.0).map_err(openssl_error)?;
            verifier
                .set_rsa_padding(Padding::PKCS1_PSS)
                .and_then(|()| verifier.set_rsa_mgf1_md(MessageDigest::sha384()))
                .and_then(|()| verifier.set_rsa_pss_saltlen(RsaPssSaltlen::custom(SALT_BYTES)))
                .map_err(openssl_error)?;
            // OpenSSL reports a malformed encoding as an error and a wrong signature as
            // `false`; to a verifier both mean "invalid".
            Ok(verifier.verify_oneshot(signature, message).unwrap_or(false))
        }
    }

    /// A secret key as OpenSSL holds it.
    #[derive(Clone)]
    pub(crate) struct SecretKey(Rsa<Private>);

    impl SecretKey {
        pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, RsaError> {
            let pkey = PKey::private_key_from_der(der).map_err(openssl_error)?;
            let rsa = pkey.rsa().map_err(openssl_error)?;
            if !rsa.check_key().map_err(openssl_error)? {
                return Err(RsaError::OpenSsl("inconsistent RSA private key".into()));
            }
            Ok(Self(rsa))
        }

        /// RFC 9474 `BlindSign`: `s = m^d mod n`, then `s^e mod n` must give back `m`. The
        /// caller has checked that `m < n`; `m` is as long as the modulus.
        pub(crate) fn blind_sign(&self, blinded_msg: &[u8]) -> Result<Vec<u8>, RsaError> {
            let size = self.0.size() as usize;
            if blinded_msg.len() != size {
                return Err(RsaError::OpenSsl(format!(
                    "a {}-byte message for a {size}-byte modulus",
                    blinded_msg.len()
                )));
            }
            let mut signature = vec![0u8; size];
            let written = self
                .0
                .private_decrypt(blinded_msg, &mut signature, Padding::NONE)
                .map_err(openssl_error)?;
            if written != size {
                return Err(RsaError::OpenSsl(format!(
                    "raw RSA returned {written} bytes, not {size}"
                )));
            }
            let mut check = vec![0u8; size];
            self.0
                .public_encrypt(&signature, &mut check, Padding::NONE)
                .map_err(openssl_error)?;
            if check != blinded_msg {
                return Err(RsaError::OpenSsl(
                    "the signature does not verify against the public key".into(),
                ));
            }
            Ok(signature)
        }
    }

    #[cfg(test)]
    mod tests {
        //! RFC 9474's vectors are RSA-4096, which token keys never are; these run the
        //! OpenSSL operations on them directly. The pure-Rust backend runs them in
        //! `tests/known_answers.rs`, and the Privacy Pass vectors run on both backends there.

        use super::*;
        use serde::Deserialize;

        #[derive(Deserialize)]
        struct Vector {
            name: String,
            p: String,
            q: String,
            n: String,
            e: String,
            d: String,
            input_msg: String,
            blinded_msg: String,
            blind_sig: String,
            sig: String,
        }

        fn unhex(text: &str) -> Vec<u8> {
            let text = text.strip_prefix("0x").unwrap_or(text);
            let even = if text.len() % 2 == 1 {
                format!("0{text}")
            } else {
                text.to_owned()
            };
            (0..even.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&even[i..i + 2], 16).expect("vector hex"))
                .collect()
        }

        fn number(text: &str) -> BigNum {
            BigNum::from_slice(&unhex(text)).expect("bignum")
        }

        fn secret_key(v: &Vector) -> SecretKey {
            let (p, q, d) = (number(&v.p), number(&v.q), number(&v.d));
            let one = BigNum::from_u32(1).expect("one");
            let mut ctx = openssl::bn::BigNumContext::new().expect("ctx");
            let (mut p1, mut q1) = (BigNum::new().expect("bn"), BigNum::new().expect("bn"));
            p1.checked_sub(&p, &one).expect("p - 1");
            q1.checked_sub(&q, &one).expect("q - 1");
            let (mut dp, mut dq, mut qinv) = (
                BigNum::new().expect("bn"),
                BigNum::new().expect("bn"),
                BigNum::new().expect("bn"),
            );
            dp.nnmod(&d, &p1, &mut ctx).expect("d mod p-1");
            dq.nnmod(&d, &q1, &mut ctx).expect("d mod q-1");
            qinv.mod_inverse(&q, &p, &mut ctx).expect("q^-1 mod p");
            let rsa = Rsa::from_private_components(number(&v.n), number(&v.e), d, p, q, dp, dq, qinv)
                .expect("vector key");
            SecretKey(rsa)
        }

        #[test]
        fn rfc9474_vectors_on_openssl() {
            let vectors: Vec<Vector> =
                serde_json::from_str(include_str!("../vectors/rfc9474.json")).expect("vectors");
            assert_eq!(vectors.len(), 4);
            for v in &vectors {
                let sk = secret_key(v);
                let blind_sig = sk.blind_sign(&unhex(&v.blinded_msg)).expect("blind sign");
                assert_eq!(blind_sig, unhex(&v.blind_sig), "{}: blind_sig", v.name);
                let mut wrong = unhex(&v.blinded_msg);
                wrong[0] ^= 1;
                assert_ne!(sk.blind_sign(&wrong).ok(), Some(blind_sig));
                assert!(sk.blind_sign(&wrong[1..]).is_err(), "short message");
                // Verification is fixed to a 48-byte salt, so only the PSS vectors apply.
                if v.name.contains("PSSZERO") {
                    continue;
                }
                let pk = PublicKey::from_components(&unhex(&v.n), &unhex(&v.e)).expect("pk");
                let (msg, mut sig) = (unhex(&v.input_msg), unhex(&v.sig));
                assert_eq!(pk.verify_pss(&msg, &sig), Ok(true), "{}: sig", v.name);
                sig[7] ^= 0x10;
                assert_eq!(pk.verify_pss(&msg, &sig), Ok(false), "{}: forged", v.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_what_exists() {
        for backend in RsaBackend::ALL {
            assert_eq!(backend.name().parse::<RsaBackend>(), Ok(*backend));
        }
        let error = "gmp".parse::<RsaBackend>().expect_err("no such backend");
        assert!(error.to_string().contains("rustcrypto"), "{error}");
        assert!(RsaBackend::ALL.contains(&RsaBackend::DEFAULT));
    }
}
