//! Operator identities (Ed25519) and signed envelopes.
//!
//! Everything an operator submits to the ledger is a [`Signed`] payload. The signature covers a
//! domain separator naming the payload's purpose and the payload's canonical encoding, so a
//! signature made for one purpose can never be replayed as another.

use crate::encoding::{b64_decode, b64_encode, canonical_bytes, serde_bytes_b64};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// Prefix of every signed message: protocol and version.
pub const SIGNING_PREFIX: &[u8] = b"scrip/v1/signed/";

/// An operator's public identity: its Ed25519 verifying key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OperatorId(#[serde(with = "serde_bytes_b64")] pub [u8; 32]);

crate::encoding::b64_id_fmt!(OperatorId);

impl std::str::FromStr for OperatorId {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, SignatureError> {
        let bytes = b64_decode(s.trim()).map_err(|_| SignatureError::MalformedKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::MalformedKey)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::MalformedKey)?;
        Ok(Self(bytes))
    }
}

/// First word of an operator key file.
pub const KEY_TEXT_LABEL: &str = "scrip-operator-key-v1";

/// The text is not an operator key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an operator key file: expected `{KEY_TEXT_LABEL} <base64url of 32 bytes>`")]
pub struct KeyTextError;

/// An operator key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read the key file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an operator key file.
    #[error("{path} is not an operator key file")]
    NotAKey {
        /// The file.
        path: String,
        /// What is wrong with its text.
        #[source]
        source: KeyTextError,
    },
}

/// An operator's signing key. Its `Debug` hides the secret.
pub struct OperatorKey(SigningKey);

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperatorKey({}, secret elided)", self.id())
    }
}

impl OperatorKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::fill(&mut seed[..]);
        Self(SigningKey::from_bytes(&seed))
    }

    /// The key from its 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for the key file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The key file's text: `scrip-operator-key-v1 <base64url seed>` and a newline. The
    /// caller writes it to a file readable by its owner only.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{KEY_TEXT_LABEL} {}\n", b64_encode(*self.seed())))
    }

    /// Reads a key file's text.
    pub fn from_text(text: &str) -> Result<Self, KeyTextError> {
        let body = text
            .trim()
            .strip_prefix(KEY_TEXT_LABEL)
            .ok_or(KeyTextError)?
            .trim();
        let bytes = Zeroizing::new(b64_decode(body).map_err(|_| KeyTextError)?);
        let seed: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyTextError)?;
        Ok(Self::from_seed(seed))
    }

    /// Reads a key file (see [`Self::to_text`]).
    pub fn read_file(path: &std::path::Path) -> Result<Self, KeyFileError> {
        let shown = || path.display().to_string();
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
                    path: shown(),
                    source,
                })?,
            );
        Self::from_text(&text).map_err(|source| KeyFileError::NotAKey {
            path: shown(),
            source,
        })
    }

    /// The public identity.
    pub fn id(&self) -> OperatorId {
        OperatorId(self.0.verifying_key().to_bytes())
    }

    /// Signs `payload` for its purpose and returns the bare signature, for a payload the
    /// caller keeps apart (a node's consensus messages and receipts).
    pub fn sign_detached<T: Signable>(&self, payload: &T) -> [u8; 64] {
        self.0.sign(&signing_message(payload)).to_bytes()
    }

    /// Signs `payload` for its purpose.
    pub fn sign<T: Signable>(&self, payload: T) -> Signed<T> {
        let signature = self.0.sign(&signing_message(&payload));
        Signed {
            signer: self.id(),
            payload,
            signature: signature.to_bytes(),
        }
    }
}

/// A payload that operators sign: its serde form is its canonical encoding, and it names its
/// purpose.
pub trait Signable: Serialize {
    /// The purpose, such as `ledger/request`: part of every signature, so signatures for
    /// different purposes never verify for one another.
    const DOMAIN: &'static str;
}

/// The exact bytes signed: `"scrip/v1/signed/" || DOMAIN || 0x00 || canonical(payload)`.
pub fn signing_message<T: Signable>(payload: &T) -> Vec<u8> {
    let body = canonical_bytes(payload);
    let mut msg = Vec::with_capacity(SIGNING_PREFIX.len() + T::DOMAIN.len() + 1 + body.len());
    msg.extend_from_slice(SIGNING_PREFIX);
    msg.extend_from_slice(T::DOMAIN.as_bytes());
    msg.push(0);
    msg.extend_from_slice(&body);
    msg
}

/// A payload with its signer and Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed<T> {
    /// Who signed.
    pub signer: OperatorId,
    /// What was signed.
    pub payload: T,
    /// The signature over [`signing_message`] of the payload.
    #[serde(with = "serde_bytes_b64")]
    pub signature: [u8; 64],
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signer's key is not a valid Ed25519 point.
    #[error("the signer's public key is malformed")]
    MalformedKey,
    /// The signature does not verify for this signer, purpose and payload.
    #[error("the signature does not verify")]
    BadSignature,
}

impl<T: Signable> Signed<T> {
    /// Verifies the signature (strictly: no malleable or small-order encodings) and returns the
    /// payload. Whether the signer is allowed to sign it is for the caller to decide.
    pub fn verify(&self) -> Result<&T, SignatureError> {
        verify_detached(&self.signer, &self.payload, &self.signature)?;
        Ok(&self.payload)
    }
}

/// Verifies a signature by `signer` over `payload` kept apart from it (an admin's approval of
/// a proposal), as strictly as [`Signed::verify`].
pub fn verify_detached<T: Signable>(
    signer: &OperatorId,
    payload: &T,
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(&signer.0).map_err(|_| SignatureError::MalformedKey)?;
    key.verify_strict(&signing_message(payload), &Signature::from_bytes(signature))
        .map_err(|_| SignatureError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Note {
        text: String,
        n: u64,
    }
    impl Signable for Note {
        const DOMAIN: &'static str = "test/note";
    }
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct OtherNote {
        text: String,
        n: u64,
    }
    impl Signable for OtherNote {
        const DOMAIN: &'static str = "test/other";
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = OperatorKey::generate();
        let signed = key.sign(Note {
            text: "hello".into(),
            n: 3,
        });
        assert_eq!(signed.verify().expect("valid").n, 3);

        let json = serde_json::to_string(&signed).expect("json");
        let back: Signed<Note> = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.verify(), Ok(&signed.payload));

        let mut changed = signed.clone();
        changed.payload.n = 4;
        assert_eq!(changed.verify(), Err(SignatureError::BadSignature));

        let mut other_signer = signed.clone();
        other_signer.signer = OperatorKey::generate().id();
        assert_eq!(other_signer.verify(), Err(SignatureError::BadSignature));

        // Same fields, different purpose: the signature does not carry over.
        let cross = Signed {
            signer: signed.signer,
            payload: OtherNote {
                text: "hello".into(),
                n: 3,
            },
            signature: signed.signature,
        };
        assert_eq!(cross.verify(), Err(SignatureError::BadSignature));
    }

    #[test]
    fn ids_parse_and_keys_round_trip() {
        let key = OperatorKey::generate();
        let id = key.id();
        assert_eq!(id.to_string().parse::<OperatorId>(), Ok(id));
        assert!("AAAA".parse::<OperatorId>().is_err());
        assert_eq!(OperatorKey::from_seed(&key.seed()).id(), id);
        let text = key.to_text();
        assert!(text.starts_with("scrip-operator-key-v1 "));
        assert_eq!(OperatorKey::from_text(&text).expect("parses").id(), id);
        for bad in [
            "",
            "scrip-operator-key-v1",
            "scrip-operator-key-v1 AAAA",
            "other AAAA",
        ] {
            assert_eq!(
                OperatorKey::from_text(bad).map(|k| k.id()),
                Err(KeyTextError)
            );
        }
        assert!(!format!("{key:?}").contains(&b64_encode(*key.seed())));
    }

    #[test]
    fn signing_message_layout() {
        let msg = signing_message(&Note {
            text: "a".into(),
            n: 1,
        });
        assert_eq!(msg, b"scrip/v1/signed/test/note\x00\x01a\x01".to_vec());
    }
}
