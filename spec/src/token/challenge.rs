//! `TokenChallenge` (RFC 9578 section 2.1) and its digest.

use crate::decode::{DecodeError, expect_end, expect_token_type};
use crate::encoding::{Reader, serde_via_wire_bytes};
use crate::token::TOKEN_TYPE;
use sha2::{Digest, Sha256};

/// A Privacy Pass token challenge.
///
/// scrip issues tokens ahead of use, so its challenges have an empty `redemption_context` and
/// an empty `origin_info`: the only thing a challenge binds is the issuer's name
/// ([`TokenChallenge::for_issuer`]). Any challenge can still be decoded and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenChallenge {
    issuer_name: Vec<u8>,
    redemption_context: Vec<u8>,
    origin_info: Vec<u8>,
}

const WHAT: &str = "TokenChallenge";

impl TokenChallenge {
    /// The challenge scrip uses for every token of an issuer: type 0x0002, the issuer's name,
    /// empty redemption context and empty origin info.
    pub fn for_issuer(issuer_name: &str) -> Result<Self, DecodeError> {
        Self::new(issuer_name.as_bytes(), &[], &[])
    }

    /// A challenge with every field given; lengths are checked against RFC 9578's limits.
    pub fn new(
        issuer_name: &[u8],
        redemption_context: &[u8],
        origin_info: &[u8],
    ) -> Result<Self, DecodeError> {
        if issuer_name.is_empty() || issuer_name.len() > usize::from(u16::MAX) {
            return Err(DecodeError::Invalid {
                what: WHAT,
                reason: "issuer_name must be 1 to 65535 bytes",
            });
        }
        if !(redemption_context.is_empty() || redemption_context.len() == 32) {
            return Err(DecodeError::Invalid {
                what: WHAT,
                reason: "redemption_context must be empty or 32 bytes",
            });
        }
        if origin_info.len() > usize::from(u16::MAX) {
            return Err(DecodeError::Invalid {
                what: WHAT,
                reason: "origin_info must be at most 65535 bytes",
            });
        }
        Ok(Self {
            issuer_name: issuer_name.to_vec(),
            redemption_context: redemption_context.to_vec(),
            origin_info: origin_info.to_vec(),
        })
    }

    /// The issuer name.
    pub fn issuer_name(&self) -> &[u8] {
        &self.issuer_name
    }

    /// The redemption context (empty for scrip challenges).
    pub fn redemption_context(&self) -> &[u8] {
        &self.redemption_context
    }

    /// The origin info (empty for scrip challenges).
    pub fn origin_info(&self) -> &[u8] {
        &self.origin_info
    }

    /// The TLS-presentation-language encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + 2
                + self.issuer_name.len()
                + 1
                + self.redemption_context.len()
                + 2
                + self.origin_info.len(),
        );
        out.extend_from_slice(&TOKEN_TYPE.to_be_bytes());
        // Lengths were checked on construction, so these narrowing casts cannot truncate.
        out.extend_from_slice(&(self.issuer_name.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.issuer_name);
        out.push(self.redemption_context.len() as u8);
        out.extend_from_slice(&self.redemption_context);
        out.extend_from_slice(&(self.origin_info.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.origin_info);
        out
    }

    /// Decodes a challenge; refuses other token types, bad lengths and trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let truncated = DecodeError::Truncated { what: WHAT };
        let mut r = Reader::new(bytes);
        expect_token_type(&mut r, WHAT)?;
        let len = r.u16().ok_or(truncated.clone())?;
        let issuer_name = r.take(usize::from(len)).ok_or(truncated.clone())?;
        let len = r.u8().ok_or(truncated.clone())?;
        let redemption_context = r.take(usize::from(len)).ok_or(truncated.clone())?;
        let len = r.u16().ok_or(truncated.clone())?;
        let origin_info = r.take(usize::from(len)).ok_or(truncated)?;
        expect_end(&r, WHAT)?;
        Self::new(issuer_name, redemption_context, origin_info)
    }

    /// `challenge_digest`: SHA-256 of the encoding.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }
}

serde_via_wire_bytes!(TokenChallenge);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrip_challenge_round_trips() {
        let c = TokenChallenge::for_issuer("issuer-a.example").expect("valid");
        let bytes = c.to_bytes();
        assert_eq!(&bytes[..2], &[0, 2]);
        assert_eq!(bytes.len(), 2 + 2 + 16 + 1 + 2);
        assert_eq!(TokenChallenge::from_bytes(&bytes).expect("decodes"), c);
    }

    #[test]
    fn decode_rejects_bad_input() {
        let good = TokenChallenge::for_issuer("i").expect("valid").to_bytes();
        let mut wrong_type = good.clone();
        wrong_type[1] = 1;
        assert!(matches!(
            TokenChallenge::from_bytes(&wrong_type),
            Err(DecodeError::WrongTokenType { found: 1, .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            TokenChallenge::from_bytes(&trailing),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
        for cut in 0..good.len() {
            assert!(
                TokenChallenge::from_bytes(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A 5-byte redemption context is neither empty nor 32 bytes.
        let bad_context = [0, 2, 0, 1, b'i', 5, 1, 2, 3, 4, 5, 0, 0];
        assert!(matches!(
            TokenChallenge::from_bytes(&bad_context),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(TokenChallenge::for_issuer("").is_err());
    }
}
