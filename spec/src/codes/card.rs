//! Gift-card codes: what a buyer types from a printed card.
//!
//! A code is 26 random symbols of Crockford base32 (130 bits) and one Luhn mod 32 check symbol,
//! printed in groups of four: `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXX`. Parsing ignores case,
//! hyphens and spaces, reads `O` as `0` and `I`/`L` as `1`, and catches every single mistyped
//! symbol and most swaps of neighbours before any request is made.

use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Random symbols in a code.
pub const CARD_SYMBOLS: usize = 26;
/// Domain separator of the stored card hash.
pub const CARD_HASH_DOMAIN: &[u8] = b"scrip/v1/card";

/// A card code. Compared in constant time; `Debug` does not print it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CardCode([u8; CARD_SYMBOLS]);

/// Why a string is not a card code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardCodeError {
    /// Wrong number of symbols.
    #[error("a card code has 27 characters (not counting hyphens); this has {count}")]
    WrongLength {
        /// Symbols found.
        count: usize,
    },
    /// A character outside the alphabet.
    #[error(
        "a card code uses only 0-9 and A-Z without U; check the character at position {position}"
    )]
    BadCharacter {
        /// 1-based position among the symbols.
        position: usize,
    },
    /// The check symbol does not match: a typo.
    #[error("the card code has a typo: please check it against the card")]
    CheckFailed,
}

fn symbol_value(c: u8) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        other => other,
    };
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Luhn mod N (N = 32) check symbol over `values`.
fn check_value(values: &[u8]) -> u8 {
    let mut sum = 0u32;
    for (i, &v) in values.iter().rev().enumerate() {
        let mut addend = u32::from(v);
        if i % 2 == 0 {
            addend *= 2;
            addend = addend / 32 + addend % 32;
        }
        sum += addend;
    }
    ((32 - sum % 32) % 32) as u8
}

impl CardCode {
    /// A new code from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut symbols = [0u8; CARD_SYMBOLS];
        rand::fill(&mut symbols);
        // 256 is a multiple of 32, so masking keeps the symbols uniform.
        for s in &mut symbols {
            *s &= 31;
        }
        Self(symbols)
    }

    /// Parses what a person typed.
    pub fn parse(text: &str) -> Result<Self, CardCodeError> {
        let mut values = Vec::with_capacity(CARD_SYMBOLS + 1);
        for c in text.bytes().filter(|c| !matches!(c, b'-' | b' ')) {
            if values.len() > CARD_SYMBOLS + 1 {
                break;
            }
            let v = symbol_value(c).ok_or(CardCodeError::BadCharacter {
                position: values.len() + 1,
            })?;
            values.push(v);
        }
        let count = text.bytes().filter(|c| !matches!(c, b'-' | b' ')).count();
        if count != CARD_SYMBOLS + 1 {
            values.zeroize();
            return Err(CardCodeError::WrongLength { count });
        }
        let (body, check) = values.split_at(CARD_SYMBOLS);
        let ok = check_value(body) == check[0];
        let mut symbols = [0u8; CARD_SYMBOLS];
        symbols.copy_from_slice(body);
        values.zeroize();
        if ok {
            Ok(Self(symbols))
        } else {
            symbols.zeroize();
            Err(CardCodeError::CheckFailed)
        }
    }

    /// What an issuer stores instead of the code: `SHA-256("scrip/v1/card" || 26 symbols)`.
    /// The code has 130 random bits, so the hash needs no salt.
    pub fn storage_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(CARD_HASH_DOMAIN);
        h.update(self.0.map(|v| ALPHABET[usize::from(v)]));
        h.finalize().into()
    }
}

impl PartialEq for CardCode {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for CardCode {}

impl fmt::Display for CardCode {
    /// The printed form, in groups of four.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let check = check_value(&self.0);
        for (i, v) in self.0.iter().chain(std::iter::once(&check)).enumerate() {
            if i > 0 && i % 4 == 0 {
                f.write_str("-")?;
            }
            write!(f, "{}", char::from(ALPHABET[usize::from(*v)]))?;
        }
        Ok(())
    }
}

impl fmt::Debug for CardCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardCode(secret elided)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_form_round_trips_with_typing_slack() {
        let code = CardCode::generate();
        let printed = code.to_string();
        assert_eq!(printed.len(), 27 + 6);
        assert_eq!(CardCode::parse(&printed).expect("parses"), code);
        let sloppy = printed.to_lowercase().replace('-', " ").replace('0', "o");
        assert_eq!(CardCode::parse(&sloppy).expect("parses"), code);
        assert!(!format!("{code:?}").contains(&printed));
    }

    #[test]
    fn every_single_substitution_is_caught() {
        let code = CardCode::generate();
        let printed: Vec<u8> = code.to_string().into_bytes();
        for (i, &c) in printed.iter().enumerate() {
            if c == b'-' {
                continue;
            }
            for &other in ALPHABET {
                if other == c {
                    continue;
                }
                let mut typo = printed.clone();
                typo[i] = other;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(
                    CardCode::parse(&typo),
                    Err(CardCodeError::CheckFailed),
                    "{typo}"
                );
            }
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        let printed = CardCode::generate().to_string();
        assert!(matches!(
            CardCode::parse(&printed[..printed.len() - 1]),
            Err(CardCodeError::WrongLength { count: 26 })
        ));
        assert!(matches!(
            CardCode::parse(&format!("{printed}A")),
            Err(CardCodeError::WrongLength { count: 28 })
        ));
        assert!(matches!(
            CardCode::parse(&printed.replacen(|c: char| c.is_ascii_alphanumeric(), "U", 1)),
            Err(CardCodeError::BadCharacter { position: 1 })
        ));
        assert!(CardCode::parse("").is_err());
        assert!(CardCode::parse(&"é".repeat(40)).is_err());
    }

    #[test]
    fn storage_hash_distinguishes_codes() {
        let a = CardCode::generate();
        assert_eq!(a.storage_hash(), a.clone().storage_hash());
        assert_ne!(a.storage_hash(), CardCode::generate().storage_hash());
    }
}
