//! The wallet's side of issuance: secrets derived from a seed, blinding, and finalization.
//!
//! Every secret of a token (its nonce, the PSS salt and the RSA blinding factor) comes from the
//! wallet seed and a counter, so a wallet restored from its seed can rebuild any request it
//! made and finalize a signature the issuer still holds for it.

use crate::key::{MODULUS_BYTES, TokenKeyId, TokenPublicKey};
use crate::token::challenge::TokenChallenge;
use crate::token::request::TokenRequest;
use crate::token::response::TokenResponse;
use crate::token::{Token, token_input};
use blind_rsa_signatures::{BlindSignature, BlindingResult, Secret};
use rand::{TryCryptoRng, TryRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Domain separator for token nonces.
pub const NONCE_DOMAIN: &[u8] = b"scrip/v1/wallet/nonce";
/// Domain separator for the blinding stream (PSS salt, then the RSA blinding factor).
pub const BLIND_DOMAIN: &[u8] = b"scrip/v1/wallet/blind";
/// Domain separator for opening request ids.
pub const REQUEST_DOMAIN: &[u8] = b"scrip/v1/wallet/request";
/// Prefix of a seed's backup code.
pub const BACKUP_PREFIX: &str = "sw1-";

/// Why a backup code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupCodeError {
    /// It does not start with `sw1-`.
    #[error("a wallet backup code starts with sw1-, as `wallet init` printed it")]
    NoPrefix,
    /// Characters outside base64url.
    #[error(
        "a wallet backup code is sw1- followed by 48 characters of A-Z, a-z, 0-9, - and _; check it against what you wrote down"
    )]
    BadCharacters,
    /// Too few or too many characters.
    #[error(
        "this backup code has {count} characters after sw1-, not 48; a character is missing or extra"
    )]
    WrongLength {
        /// Characters after the prefix.
        count: usize,
    },
    /// The check does not match: a mistyped character.
    #[error(
        "the backup code has a typo: its check does not match; compare it with what you wrote down, character by character"
    )]
    Typo,
}

/// Counters come in epochs of this many: an opening holds at most
/// [`MAX_OPEN_BATCH`](crate::api::issuer::MAX_OPEN_BATCH) counters, so an opening set aside
/// leaves a gap a restore crosses by looking at the next epoch or two (PROTOCOL.md 5.4, 5.5).
pub const COUNTER_EPOCH: u64 = 1024;

/// A wallet's master secret: 32 bytes from which every token secret is derived.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct WalletSeed([u8; 32]);

impl std::fmt::Debug for WalletSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WalletSeed(secret elided)")
    }
}

impl WalletSeed {
    /// A new seed from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        Self(seed)
    }

    /// Wraps existing seed bytes (for restore).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The seed bytes, for the wallet's backup.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, domain: &[u8], counter: u64) -> [u8; 32] {
        // SHA-256 over fixed-length fields (domain, 32-byte seed, 8-byte counter) is a PRF here:
        // every derived input has the same length, so length extension yields nothing usable.
        let mut h = Sha256::new();
        h.update(domain);
        h.update(self.0);
        h.update(counter.to_be_bytes());
        h.finalize().into()
    }

    /// The nonce of token number `counter`.
    pub fn nonce(&self, counter: u64) -> [u8; 32] {
        self.derive(NONCE_DOMAIN, counter)
    }

    /// The first counter at or after `counter` that starts an epoch (PROTOCOL.md 5.4): where
    /// a wallet starts its next opening after setting an unanswered one aside, and where a
    /// restore looks past a gap.
    pub fn next_epoch(counter: u64) -> u64 {
        counter
            .div_ceil(COUNTER_EPOCH)
            .saturating_mul(COUNTER_EPOCH)
    }

    /// The id of the opening whose first token is number `first`:
    /// `SHA-256("scrip/v1/wallet/request" || seed || u64be(first))`.
    pub fn request_id(&self, first: u64) -> [u8; 32] {
        self.derive(REQUEST_DOMAIN, first)
    }

    /// The backup code: `sw1-` and base64url of the seed followed by the first 4 bytes of its
    /// SHA-256, so a mistyped code is caught.
    pub fn backup_code(&self) -> zeroize::Zeroizing<String> {
        let check = Sha256::digest(self.0);
        let mut bytes = zeroize::Zeroizing::new([0u8; 36]);
        bytes[..32].copy_from_slice(&self.0);
        bytes[32..].copy_from_slice(&check[..4]);
        zeroize::Zeroizing::new(format!(
            "{BACKUP_PREFIX}{}",
            crate::encoding::b64_encode(&bytes[..])
        ))
    }

    /// Reads a backup code (surrounding whitespace ignored).
    pub fn from_backup_code(code: &str) -> Result<Self, BackupCodeError> {
        let body = code
            .trim()
            .strip_prefix(BACKUP_PREFIX)
            .ok_or(BackupCodeError::NoPrefix)?;
        if body.len() != 48 {
            return Err(BackupCodeError::WrongLength { count: body.len() });
        }
        let bytes = zeroize::Zeroizing::new(
            crate::encoding::b64_decode(body).map_err(|_| BackupCodeError::BadCharacters)?,
        );
        if bytes.len() != 36 {
            return Err(BackupCodeError::BadCharacters);
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let check = Sha256::digest(seed);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&check[..4], &bytes[32..])) {
            seed.zeroize();
            return Err(BackupCodeError::Typo);
        }
        Ok(Self(seed))
    }

    /// The blinding stream of token number `counter`.
    pub fn blinding_stream(&self, counter: u64) -> BlindingStream {
        BlindingStream::new(self.derive(BLIND_DOMAIN, counter))
    }
}

/// A deterministic random stream: block `i` is `SHA-256(key || i as u64 big-endian)`.
///
/// RFC 9474's `Blind` draws the PSS salt and then the blinding factor from it; since both come
/// from one key, the same key always yields the same blinded message.
pub struct BlindingStream {
    key: [u8; 32],
    block: u64,
    buf: [u8; 32],
    used: usize,
}

impl Drop for BlindingStream {
    fn drop(&mut self) {
        self.key.zeroize();
        self.buf.zeroize();
    }
}

impl BlindingStream {
    /// A stream from its 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            block: 0,
            buf: [0; 32],
            used: 32,
        }
    }
}

impl TryRng for BlindingStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        for byte in dest {
            if self.used == self.buf.len() {
                let mut h = Sha256::new();
                h.update(self.key);
                h.update(self.block.to_be_bytes());
                self.buf = h.finalize().into();
                self.block += 1;
                self.used = 0;
            }
            *byte = self.buf[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for BlindingStream {}

/// What a wallet keeps between sending a [`TokenRequest`] and finalizing the response.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingToken {
    /// The token's nonce.
    #[serde(with = "crate::encoding::serde_bytes_b64")]
    pub nonce: [u8; 32],
    /// Digest of the challenge the token is for.
    #[serde(with = "crate::encoding::serde_bytes_b64")]
    pub challenge_digest: [u8; 32],
    /// The key asked to sign.
    pub token_key_id: TokenKeyId,
    /// The blinded message sent (kept so a response can be matched to it).
    #[serde(with = "crate::encoding::serde_bytes_b64")]
    pub blinded_msg: [u8; MODULUS_BYTES],
    /// The unblinding factor `inv` (RFC 9474); secret.
    #[serde(with = "crate::encoding::serde_bytes_b64")]
    pub inv: [u8; MODULUS_BYTES],
}

impl std::fmt::Debug for PendingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingToken(key {}, secrets elided)", self.token_key_id)
    }
}

impl Drop for PendingToken {
    fn drop(&mut self) {
        self.nonce.zeroize();
        self.inv.zeroize();
    }
}

/// Why blinding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlindError {
    /// The RSA library refused (for example a message not coprime with the modulus, which a
    /// real key makes astronomically unlikely).
    #[error("blinding failed")]
    Rsa {
        /// What the RSA library said.
        #[source]
        source: blind_rsa_signatures::Error,
    },
}

/// Blinds token number `counter` of `seed` for `key` and `challenge`: the request to send and
/// the state to keep.
pub fn blind(
    seed: &WalletSeed,
    counter: u64,
    key: &TokenPublicKey,
    challenge: &TokenChallenge,
) -> Result<(TokenRequest, PendingToken), BlindError> {
    blind_with(
        seed.nonce(counter),
        &mut seed.blinding_stream(counter),
        key,
        challenge,
    )
}

/// Blinds with an explicit nonce and random stream (used by [`blind`] and by the known-answer
/// tests, which replay the salt and blinding factor of published vectors).
pub fn blind_with<R: TryCryptoRng<Error = Infallible> + ?Sized>(
    nonce: [u8; 32],
    rng: &mut R,
    key: &TokenPublicKey,
    challenge: &TokenChallenge,
) -> Result<(TokenRequest, PendingToken), BlindError> {
    let challenge_digest = challenge.digest();
    let token_key_id = key.id();
    let input = token_input(&nonce, &challenge_digest, &token_key_id);
    let result = key
        .inner
        .blind(rng, input)
        .map_err(|source| BlindError::Rsa { source })?;
    let fixed = |v: &[u8]| -> Result<[u8; MODULUS_BYTES], BlindError> {
        v.try_into().map_err(|_| BlindError::Rsa {
            source: blind_rsa_signatures::Error::InternalError,
        })
    };
    let blinded_msg = fixed(&result.blind_message)?;
    let inv = fixed(&result.secret)?;
    let request = TokenRequest {
        truncated_token_key_id: token_key_id.truncated(),
        blinded_msg,
    };
    Ok((
        request,
        PendingToken {
            nonce,
            challenge_digest,
            token_key_id,
            blinded_msg,
            inv,
        },
    ))
}

/// Why a response could not be turned into a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinalizeError {
    /// The key given is not the key the request was made for.
    #[error("the response is finalized with key {given}, but the request was for {expected}")]
    WrongKey {
        /// The key the request was for.
        expected: TokenKeyId,
        /// The key given.
        given: TokenKeyId,
    },
    /// The unblinded signature does not verify: the issuer signed with another key, or the
    /// response was corrupted or forged.
    #[error("the issuer's response does not yield a valid signature")]
    InvalidSignature {
        /// What the RSA library said.
        #[source]
        source: blind_rsa_signatures::Error,
    },
}

/// Unblinds the issuer's response and checks the signature, giving a spendable token.
pub fn finalize(
    key: &TokenPublicKey,
    pending: &PendingToken,
    response: &TokenResponse,
) -> Result<Token, FinalizeError> {
    if key.id() != pending.token_key_id {
        return Err(FinalizeError::WrongKey {
            expected: pending.token_key_id,
            given: key.id(),
        });
    }
    let input = token_input(
        &pending.nonce,
        &pending.challenge_digest,
        &pending.token_key_id,
    );
    let state = BlindingResult {
        blind_message: blind_rsa_signatures::BlindMessage(pending.blinded_msg.to_vec()),
        secret: Secret(pending.inv.to_vec()),
        msg_randomizer: None,
    };
    let sig = key
        .inner
        .finalize(&BlindSignature(response.blind_sig.to_vec()), &state, input)
        .map_err(|source| FinalizeError::InvalidSignature { source })?;
    let authenticator =
        sig.0
            .as_slice()
            .try_into()
            .map_err(|_| FinalizeError::InvalidSignature {
                source: blind_rsa_signatures::Error::InternalError,
            })?;
    Ok(Token {
        nonce: pending.nonce,
        challenge_digest: pending.challenge_digest,
        token_key_id: pending.token_key_id,
        authenticator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{other_key, test_key};

    #[test]
    fn derivation_is_deterministic_and_separated() {
        let seed = WalletSeed::from_bytes([7; 32]);
        assert_eq!(seed.nonce(1), seed.nonce(1));
        assert_ne!(seed.nonce(1), seed.nonce(2));
        let mut a = [0u8; 100];
        let mut b = [0u8; 100];
        seed.blinding_stream(1)
            .try_fill_bytes(&mut a)
            .expect("infallible");
        seed.blinding_stream(1)
            .try_fill_bytes(&mut b)
            .expect("infallible");
        assert_eq!(a, b);
        assert_ne!(
            &a[..32],
            &seed.nonce(1),
            "blinding and nonce are domain separated"
        );
    }

    #[test]
    fn request_ids_and_backup_codes() {
        let zero = WalletSeed::from_bytes([0; 32]);
        // PROTOCOL.md section 5.4's example.
        assert_eq!(
            crate::encoding::b64_encode(zero.request_id(0)),
            "KgKDEEy4MDFkqo6U_wK5Sl5lYaG9573qljM-o_5ASms"
        );
        let seed = WalletSeed::generate();
        let code = seed.backup_code();
        assert!(code.starts_with("sw1-") && code.len() == 4 + 48);
        assert!(WalletSeed::from_backup_code(&format!(" {} ", *code)).expect("parses") == seed);
        let mut typo: Vec<char> = code.chars().collect();
        typo[10] = if typo[10] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(
            WalletSeed::from_backup_code(&typo),
            Err(BackupCodeError::Typo)
        );
        assert!(BackupCodeError::Typo.to_string().contains("typo"));
        assert_eq!(
            WalletSeed::from_backup_code("sw1-AAAA"),
            Err(BackupCodeError::WrongLength { count: 4 })
        );
        let mut bad = code.to_string();
        bad.replace_range(10..11, "*");
        assert_eq!(
            WalletSeed::from_backup_code(&bad),
            Err(BackupCodeError::BadCharacters)
        );
        assert_eq!(
            WalletSeed::from_backup_code(&code[4..]),
            Err(BackupCodeError::NoPrefix)
        );
    }

    #[test]
    fn same_seed_and_counter_rebuild_the_same_request() {
        let pk = test_key().public_key();
        let challenge = TokenChallenge::for_issuer("issuer-a").expect("valid");
        let seed = WalletSeed::from_bytes([1; 32]);
        let (r1, p1) = blind(&seed, 42, pk, &challenge).expect("blind");
        let (r2, p2) = blind(&seed, 42, pk, &challenge).expect("blind");
        assert_eq!(r1, r2);
        assert!(p1 == p2);
        let (r3, _) = blind(&seed, 43, pk, &challenge).expect("blind");
        assert_ne!(r1, r3);
        assert_eq!(r1.truncated_token_key_id, pk.id().truncated());
    }

    #[test]
    fn finalize_refuses_forged_or_misdirected_responses() {
        let sk = test_key();
        let challenge = TokenChallenge::for_issuer("issuer-a").expect("valid");
        let seed = WalletSeed::generate();
        let (request, pending) = blind(&seed, 0, sk.public_key(), &challenge).expect("blind");
        let response = sk.blind_sign(&request).expect("sign");
        let mut forged = response.clone();
        forged.blind_sig[10] ^= 1;
        assert!(matches!(
            finalize(sk.public_key(), &pending, &forged),
            Err(FinalizeError::InvalidSignature { .. })
        ));
        assert!(matches!(
            finalize(other_key().public_key(), &pending, &response),
            Err(FinalizeError::WrongKey { .. })
        ));
        // A signature made by another key over the same blinded message does not finalize.
        let mut misdirected = request.clone();
        misdirected.truncated_token_key_id = other_key().public_key().id().truncated();
        // (The other key refuses outright when the value is beyond its modulus.)
        match other_key().blind_sign(&misdirected) {
            Ok(by_other) => assert!(finalize(sk.public_key(), &pending, &by_other).is_err()),
            Err(e) => assert!(matches!(e, crate::token::sign::SignError::OutOfRange)),
        }
        let token = finalize(sk.public_key(), &pending, &response).expect("finalize");
        assert_eq!(token.nonce, seed.nonce(0));
    }
}
