//! Token keys: RSA-2048 blind-signature keys with the metadata that makes each one a
//! denomination (issuer, capacity kind, validity instants).

use crate::catalog::CapacityKind;
use crate::encoding::serde_bytes_b64;
pub use crate::time::UnixSeconds;
use blind_rsa_signatures::reexports::rsa::traits::PublicKeyParts as _;
use blind_rsa_signatures::{DefaultRng, KeyPairSha384PSSDeterministic};
use blind_rsa_signatures::{PublicKeySha384PSSDeterministic, SecretKeySha384PSSDeterministic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// `Nk`: the modulus length, and so the length of blinded messages and signatures, in bytes.
pub const MODULUS_BYTES: usize = 256;

/// Largest SPKI accepted on import; an RSA-2048 PSS SPKI is 342 bytes.
const MAX_SPKI_BYTES: usize = 600;

/// `token_key_id`: SHA-256 of the key's RSASSA-PSS SPKI encoding (RFC 9578 section 6.5).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenKeyId(#[serde(with = "serde_bytes_b64")] pub [u8; 32]);

impl TokenKeyId {
    /// `truncated_token_key_id`: the key id's last (least significant) byte.
    pub fn truncated(&self) -> u8 {
        self.0[31]
    }
}

crate::encoding::b64_id_fmt!(TokenKeyId);

/// Why a token key could not be generated, imported or exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes or text are not a key in the expected encoding.
    #[error("{format} is not a valid RSA key encoding")]
    Encoding {
        /// The encoding tried (SPKI, PEM, ...).
        format: &'static str,
        /// What the RSA library said.
        #[source]
        source: blind_rsa_signatures::Error,
    },
    /// The encoding is longer than any RSA-2048 key.
    #[error("{format} key encoding of {len} bytes is too large for RSA-2048")]
    TooLarge {
        /// The encoding tried.
        format: &'static str,
        /// Its length.
        len: usize,
    },
    /// The key is valid RSA but not 2048 bits.
    #[error("token keys are RSA-2048; this key has a {bytes}-byte modulus")]
    WrongSize {
        /// Modulus length in bytes.
        bytes: usize,
    },
    /// An RSA backend could not load the key.
    #[error("the RSA backend could not load the key")]
    Backend {
        /// What the backend said.
        #[source]
        source: crate::token::backend::RsaError,
    },
    /// Key generation failed.
    #[error("RSA key generation failed")]
    Generation {
        /// What the RSA library said.
        #[source]
        source: blind_rsa_signatures::Error,
    },
}

/// A token public key (RSASSA-PSS, SHA-384, 48-byte salt, deterministic message preparation),
/// with its SPKI encoding and key id computed once.
#[derive(Clone)]
pub struct TokenPublicKey {
    pub(crate) inner: PublicKeySha384PSSDeterministic,
    /// The modulus, big-endian: a blinded message must be below it.
    pub(crate) modulus: Box<[u8; MODULUS_BYTES]>,
    #[cfg(feature = "openssl")]
    pub(crate) openssl: crate::token::backend::openssl_rsa::PublicKey,
    spki: Vec<u8>,
    id: TokenKeyId,
}

impl PartialEq for TokenPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki == other.spki
    }
}
impl Eq for TokenPublicKey {}

impl fmt::Debug for TokenPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenPublicKey({})", self.id)
    }
}

impl TokenPublicKey {
    fn from_inner(inner: PublicKeySha384PSSDeterministic) -> Result<Self, KeyError> {
        let bytes = inner.as_ref().size();
        if bytes != MODULUS_BYTES {
            return Err(KeyError::WrongSize { bytes });
        }
        let spki = inner.to_spki().map_err(|source| KeyError::Encoding {
            format: "SPKI",
            source,
        })?;
        let id = TokenKeyId(Sha256::digest(&spki).into());
        let modulus: Box<[u8; MODULUS_BYTES]> = inner
            .as_ref()
            .n_bytes()
            .try_into()
            .map_err(|_| KeyError::WrongSize { bytes })?;
        #[cfg(feature = "openssl")]
        let openssl = crate::token::backend::openssl_rsa::PublicKey::from_components(
            modulus.as_slice(),
            &inner.as_ref().e_bytes(),
        )
        .map_err(|source| KeyError::Backend { source })?;
        Ok(Self {
            inner,
            modulus,
            #[cfg(feature = "openssl")]
            openssl,
            spki,
            id,
        })
    }

    /// Imports the RSASSA-PSS SPKI encoding used on the wire (RFC 9578 section 6.5).
    pub fn from_spki(spki: &[u8]) -> Result<Self, KeyError> {
        if spki.len() > MAX_SPKI_BYTES {
            return Err(KeyError::TooLarge {
                format: "SPKI",
                len: spki.len(),
            });
        }
        let inner = PublicKeySha384PSSDeterministic::from_spki(spki).map_err(|source| {
            KeyError::Encoding {
                format: "SPKI",
                source,
            }
        })?;
        let key = Self::from_inner(inner)?;
        // Re-encoding must give the same bytes, or the key id would not be the SHA-256 of
        // what was received.
        if key.spki != spki {
            return Err(KeyError::Encoding {
                format: "SPKI",
                source: blind_rsa_signatures::Error::EncodingError,
            });
        }
        Ok(key)
    }

    /// Imports a PEM public key (`BEGIN PUBLIC KEY` with rsaEncryption, or `BEGIN RSA PUBLIC
    /// KEY`), as OpenSSL writes it.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if pem.len() > 2 * MAX_SPKI_BYTES {
            return Err(KeyError::TooLarge {
                format: "PEM",
                len: pem.len(),
            });
        }
        let inner = PublicKeySha384PSSDeterministic::from_pem(pem).map_err(|source| {
            KeyError::Encoding {
                format: "PEM",
                source,
            }
        })?;
        Self::from_inner(inner)
    }

    /// Exports as PEM (`BEGIN PUBLIC KEY`, rsaEncryption), readable by OpenSSL.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.inner.to_pem().map_err(|source| KeyError::Encoding {
            format: "PEM",
            source,
        })
    }

    /// The RSASSA-PSS SPKI encoding.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// `token_key_id`.
    pub fn id(&self) -> TokenKeyId {
        self.id
    }

    /// Whether this key may blind-sign `blinded_msg`: [`MODULUS_BYTES`] long, and, read as a
    /// big-endian integer, at least 2 and below the modulus. A cheap public check, so an issuer
    /// can refuse a whole opening before its first private-key operation.
    ///
    /// 0 and 1 are refused as well: they are RSA's fixed points (their "signature" is the
    /// input itself, which even a broken backend that echoes its input would pass the check
    /// against the public key), and an honest wallet's blinded message is one of them with
    /// probability about 2^-2047.
    pub fn accepts_blinded_message(&self, blinded_msg: &[u8]) -> bool {
        let Ok(value) = <&[u8; MODULUS_BYTES]>::try_from(blinded_msg) else {
            return false;
        };
        let (high, last) = value.split_at(MODULUS_BYTES - 1);
        let fixed_point = high.iter().all(|b| *b == 0) && last.iter().all(|b| *b <= 1);
        // Both are big-endian and of equal length, so byte order is numeric order.
        !fixed_point && value < &*self.modulus
    }
}

impl TokenPublicKey {
    fn to_bytes(&self) -> Vec<u8> {
        self.spki.clone()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        Self::from_spki(bytes)
    }
}
crate::encoding::serde_via_wire_bytes!(TokenPublicKey);

/// A token secret key. Kept by its issuer only; never serialized except to its PEM file.
#[derive(Clone)]
pub struct TokenSecretKey {
    pub(crate) inner: SecretKeySha384PSSDeterministic,
    #[cfg(feature = "openssl")]
    pub(crate) openssl: crate::token::backend::openssl_rsa::SecretKey,
    public: TokenPublicKey,
}

impl fmt::Debug for TokenSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecretKey({}, secret elided)", self.public.id)
    }
}

impl TokenSecretKey {
    /// Generates a fresh RSA-2048 key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = KeyPairSha384PSSDeterministic::generate(&mut DefaultRng, 8 * MODULUS_BYTES)
            .map_err(|source| KeyError::Generation { source })?;
        Self::from_parts(pair.sk, TokenPublicKey::from_inner(pair.pk)?)
    }

    fn from_parts(
        inner: SecretKeySha384PSSDeterministic,
        public: TokenPublicKey,
    ) -> Result<Self, KeyError> {
        #[cfg(feature = "openssl")]
        let openssl = {
            let der =
                zeroize::Zeroizing::new(inner.to_der().map_err(|source| KeyError::Encoding {
                    format: "PKCS#8",
                    source,
                })?);
            crate::token::backend::openssl_rsa::SecretKey::from_pkcs8_der(&der)
                .map_err(|source| KeyError::Backend { source })?
        };
        Ok(Self {
            inner,
            #[cfg(feature = "openssl")]
            openssl,
            public,
        })
    }

    /// Imports a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let inner = SecretKeySha384PSSDeterministic::from_pem(pem).map_err(|source| {
            KeyError::Encoding {
                format: "PEM",
                source,
            }
        })?;
        let public = inner.public_key().map_err(|source| KeyError::Encoding {
            format: "PEM",
            source,
        })?;
        Self::from_parts(inner, TokenPublicKey::from_inner(public)?)
    }

    /// Exports as PKCS#8 PEM. The caller writes it to a file readable by its owner only.
    pub fn to_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        self.inner
            .to_pem()
            .map(zeroize::Zeroizing::new)
            .map_err(|source| KeyError::Encoding {
                format: "PEM",
                source,
            })
    }

    /// The matching public key.
    pub fn public_key(&self) -> &TokenPublicKey {
        &self.public
    }
}

/// What makes a token key a denomination: who issues it, what it buys, and when it may be
/// used. The three instants follow GNU Taler's denomination keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKeyInfo {
    /// The key itself.
    pub public_key: TokenPublicKey,
    /// The issuing operator's name; it is also the `issuer_name` of the key's challenge.
    pub issuer: String,
    /// The capacity one token of this key buys.
    pub kind: CapacityKind,
    /// First instant the key may sign.
    pub valid_from: UnixSeconds,
    /// No blind signature after this instant.
    pub issue_until: UnixSeconds,
    /// No spend after this instant.
    pub redeem_until: UnixSeconds,
    /// The spent set of this key may be pruned after this instant.
    pub forget_after: UnixSeconds,
}

/// Why key metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyInfoError {
    /// The instants are out of order.
    #[error("key instants must satisfy valid_from < issue_until <= redeem_until <= forget_after")]
    InstantsOutOfOrder,
    /// The issuer name is empty or too long.
    #[error("issuer name must be 1 to 255 bytes")]
    IssuerName,
}

impl TokenKeyInfo {
    /// Checks the metadata's own rules.
    pub fn validate(&self) -> Result<(), KeyInfoError> {
        if self.issuer.is_empty() || self.issuer.len() > 255 {
            return Err(KeyInfoError::IssuerName);
        }
        if !(self.valid_from < self.issue_until
            && self.issue_until <= self.redeem_until
            && self.redeem_until <= self.forget_after)
        {
            return Err(KeyInfoError::InstantsOutOfOrder);
        }
        Ok(())
    }

    /// May the key sign at `now`?
    pub fn can_issue_at(&self, now: UnixSeconds) -> bool {
        self.valid_from <= now && now <= self.issue_until
    }

    /// May a token of this key be spent at `now`?
    pub fn can_redeem_at(&self, now: UnixSeconds) -> bool {
        self.valid_from <= now && now <= self.redeem_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test_key;

    #[test]
    fn spki_round_trip_keeps_the_key_id() {
        let pk = test_key().public_key();
        assert_eq!(pk.spki().len(), 342);
        let again = TokenPublicKey::from_spki(pk.spki()).expect("import");
        assert_eq!(again.id(), pk.id());
        let from_pem = TokenPublicKey::from_pem(&pk.to_pem().expect("pem")).expect("import pem");
        assert_eq!(from_pem.id(), pk.id());
    }

    #[test]
    fn secret_key_pem_round_trip() {
        let sk = test_key();
        let pem = sk.to_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = TokenSecretKey::from_pem(&pem).expect("import");
        assert_eq!(again.public_key(), sk.public_key());
    }

    #[test]
    fn blinded_messages_must_be_between_2_and_the_modulus() {
        let pk = test_key().public_key();
        let n = *pk.modulus;
        let mut below = n;
        // n is odd (a product of two odd primes), so n - 1 only clears the last bit.
        below[MODULUS_BYTES - 1] -= 1;
        assert!(pk.accepts_blinded_message(&below), "n - 1");
        assert!(!pk.accepts_blinded_message(&n), "n itself");
        assert!(
            !pk.accepts_blinded_message(&[0xff; MODULUS_BYTES]),
            "above n"
        );
        let mut small = [0u8; MODULUS_BYTES];
        for (v, ok) in [(0u8, false), (1, false), (2, true)] {
            small[MODULUS_BYTES - 1] = v;
            assert_eq!(pk.accepts_blinded_message(&small), ok, "{v}");
        }
        let mut high_one = [0u8; MODULUS_BYTES];
        high_one[0] = 1;
        assert!(pk.accepts_blinded_message(&high_one), "2^2040 + 0");
        assert!(!pk.accepts_blinded_message(&below[1..]), "one byte short");
        let mut long = below.to_vec();
        long.push(0);
        assert!(!pk.accepts_blinded_message(&long), "one byte long");
    }

    #[test]
    fn bad_spki_is_refused() {
        let spki = test_key().public_key().spki().to_vec();
        assert!(TokenPublicKey::from_spki(&spki[..100]).is_err());
        let mut trailing = spki.clone();
        trailing.push(0);
        assert!(TokenPublicKey::from_spki(&trailing).is_err());
        assert!(matches!(
            TokenPublicKey::from_spki(&vec![0x30; 4096]),
            Err(KeyError::TooLarge { .. })
        ));
        assert!(TokenPublicKey::from_pem("not a key").is_err());
    }

    #[test]
    fn key_info_rules() {
        let mut info = TokenKeyInfo {
            public_key: test_key().public_key().clone(),
            issuer: "issuer-a".into(),
            kind: CapacityKind::new("queue").expect("valid"),
            valid_from: 100,
            issue_until: 200,
            redeem_until: 300,
            forget_after: 400,
        };
        assert_eq!(info.validate(), Ok(()));
        assert!(info.can_issue_at(150) && !info.can_issue_at(250));
        assert!(info.can_redeem_at(250) && !info.can_redeem_at(301) && !info.can_redeem_at(99));
        let json = serde_json::to_string(&info).expect("json");
        let back: TokenKeyInfo = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, info);
        info.redeem_until = 150;
        assert_eq!(info.validate(), Err(KeyInfoError::InstantsOutOfOrder));
        info.redeem_until = 300;
        info.issuer = String::new();
        assert_eq!(info.validate(), Err(KeyInfoError::IssuerName));
    }
}
