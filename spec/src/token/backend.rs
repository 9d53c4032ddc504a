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
//! stream of [`crate::token::wallet`], and their cost is the wallet's, not a service's.

use std::fmt;
use std::str::FromStr;

/// An RSA implementation behind [`crate::TokenSecretKey::blind_sign_with`] and
/// [`crate::token::verify::verify_token_with_backend`].
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
    /// A signature of another length than the modulus's.
    #[error("the backend returned a {len}-byte signature")]
    WrongLength {
        /// Its length.
        len: usize,
    },
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
    use openssl::pkey::{PKey, Private, Public};
    use openssl::rsa::{Padding, Rsa};
    use sha2::{Digest as _, Sha384};

    /// SHA-384's output length.
    const HASH: usize = 48;
    /// RFC 9474 RSABSSA-SHA384-PSS: the salt is as long as the hash.
    const SALT_BYTES: usize = HASH;

    fn openssl_error(error: openssl::error::ErrorStack) -> RsaError {
        RsaError::OpenSsl(error.to_string())
    }

    /// A public key as OpenSSL holds it.
    #[derive(Clone)]
    pub(crate) struct PublicKey(Rsa<Public>);

    impl PublicKey {
        pub(crate) fn from_components(n: &[u8], e: &[u8]) -> Result<Self, RsaError> {
            Rsa::from_public_components(
                BigNum::from_slice(n).map_err(openssl_error)?,
                BigNum::from_slice(e).map_err(openssl_error)?,
            )
            .map(Self)
            .map_err(openssl_error)
        }

        /// RSASSA-PSS verification (RFC 8017 section 8.1.2) of `signature` over `message`. A
        /// malformed signature is simply not valid.
        ///
        /// OpenSSL does the public-key operation (RSAVP1, which refuses a signature not below
        /// the modulus); the encoding check is done here. OpenSSL's `EVP_PKEY` verifier does
        /// the same but sets up a context per call, which cost a third of the time.
        pub(crate) fn verify_pss(&self, message: &[u8], signature: &[u8]) -> bool {
            let size = self.0.size() as usize;
            if signature.len() != size {
                return false;
            }
            let mut encoded = vec![0u8; size];
            match self
                .0
                .public_encrypt(signature, &mut encoded, Padding::NONE)
            {
                Ok(written) if written == size => {}
                // Not below the modulus: a malformed signature, so an invalid one.
                _ => return false,
            }
            let modulus_bits = self.0.n().num_bits() as usize;
            emsa_pss_verify(message, &encoded, modulus_bits - 1)
        }
    }

    /// EMSA-PSS-VERIFY (RFC 8017 section 9.1.2) with SHA-384, MGF1-SHA-384 and a 48-byte salt.
    /// Everything it reads is public, so it need not be constant-time.
    fn emsa_pss_verify(message: &[u8], encoded: &[u8], em_bits: usize) -> bool {
        let em_len = em_bits.div_ceil(8);
        // RSAVP1's output has the modulus's length: one byte more than `em_len` when em_bits
        // is a multiple of 8, and that byte must be zero.
        let em = match encoded.len().checked_sub(em_len) {
            Some(0) => encoded,
            Some(1) if encoded[0] == 0 => &encoded[1..],
            _ => return false,
        };
        if em_len < HASH + SALT_BYTES + 2 || em[em_len - 1] != 0xbc {
            return false;
        }
        let (masked_db, rest) = em.split_at(em_len - HASH - 1);
        let h = &rest[..HASH];
        let unused_bits = 8 * em_len - em_bits;
        if unused_bits > 0 && masked_db[0] >> (8 - unused_bits) != 0 {
            return false;
        }
        let mut db = masked_db.to_vec();
        mgf1_xor(&mut db, h);
        db[0] &= 0xff >> unused_bits;
        let padding = em_len - HASH - SALT_BYTES - 2;
        if db[..padding].iter().any(|&byte| byte != 0) || db[padding] != 0x01 {
            return false;
        }
        let salt = &db[padding + 1..];
        let expected = Sha384::new()
            .chain_update([0u8; 8])
            .chain_update(Sha384::digest(message))
            .chain_update(salt)
            .finalize();
        expected.as_slice() == h
    }

    /// XORs `block` with MGF1-SHA-384(`seed`) (RFC 8017 appendix B.2.1).
    fn mgf1_xor(block: &mut [u8], seed: &[u8]) {
        for (counter, chunk) in block.chunks_mut(HASH).enumerate() {
            let mask = Sha384::new()
                .chain_update(seed)
                .chain_update((counter as u32).to_be_bytes())
                .finalize();
            chunk.iter_mut().zip(mask).for_each(|(byte, m)| *byte ^= m);
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
            let rsa =
                Rsa::from_private_components(number(&v.n), number(&v.e), d, p, q, dp, dq, qinv)
                    .expect("vector key");
            SecretKey(rsa)
        }

        /// EMSA-PSS-ENCODE (RFC 8017 section 9.1.1) for a 2048-bit modulus, to build both
        /// valid encodings and ones broken in one place each.
        fn pss_encode(message: &[u8], salt: &[u8; 48]) -> Vec<u8> {
            let hash = Sha384::new()
                .chain_update([0u8; 8])
                .chain_update(Sha384::digest(message))
                .chain_update(salt)
                .finalize();
            let mut db = vec![0u8; 256 - 48 - 1];
            db[256 - 48 - 48 - 2] = 1;
            db[256 - 48 - 48 - 1..].copy_from_slice(salt);
            mgf1_xor(&mut db, &hash);
            db[0] &= 0x7f;
            [db, hash.to_vec(), vec![0xbc]].concat()
        }

        #[test]
        fn pss_check_refuses_each_malformed_encoding() {
            let rsa = Rsa::generate(2048).expect("key");
            let sk = SecretKey(rsa.clone());
            let pk = PublicKey::from_components(&rsa.n().to_vec(), &rsa.e().to_vec()).expect("pk");
            let message = b"token input";
            let valid = pss_encode(message, &[9; 48]);
            let sign = |em: &[u8]| sk.blind_sign(em).expect("raw private operation");
            assert!(pk.verify_pss(message, &sign(&valid)));
            assert!(!pk.verify_pss(b"other input", &sign(&valid)));
            type Break = Box<dyn Fn(&mut Vec<u8>)>;
            let broken: Vec<(&str, Break)> = vec![
                ("trailer", Box::new(|em| em[255] = 0xbd)),
                // The smallest top byte with the top bit set, so the value stays below n.
                ("top bit", Box::new(|em| em[0] = 0x80)),
                ("hash", Box::new(|em| em[230] ^= 1)),
                // A change in the masked block changes the salt or the padding after unmasking.
                ("padding", Box::new(|em| em[3] ^= 1)),
                ("separator", Box::new(|em| em[256 - 48 - 48 - 2] ^= 1)),
                ("salt", Box::new(|em| em[200] ^= 1)),
            ];
            for (what, breaks) in broken {
                let mut em = valid.clone();
                breaks(&mut em);
                if em >= rsa.n().to_vec() {
                    continue; // not a value any signature can produce (top bit, rare n)
                }
                assert!(!pk.verify_pss(message, &sign(&em)), "{what}");
            }
            // Wrong lengths and values not below the modulus are invalid, not errors.
            let signature = sign(&valid);
            assert!(!pk.verify_pss(message, &signature[1..]));
            assert!(!pk.verify_pss(message, &[0xff; 256]));
            assert!(!pk.verify_pss(message, &rsa.n().to_vec()));
        }

        #[test]
        fn rfc9474_vectors_on_openssl() {
            let vectors: Vec<Vector> =
                serde_json::from_str(include_str!("../../vectors/rfc9474.json")).expect("vectors");
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
                assert!(pk.verify_pss(&msg, &sig), "{}: sig", v.name);
                sig[7] ^= 0x10;
                assert!(!pk.verify_pss(&msg, &sig), "{}: forged", v.name);
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
