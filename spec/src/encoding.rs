//! Byte encodings shared by every message: unpadded base64url for JSON, a bounds-checked reader
//! for the binary wire formats, and the canonical encoding of anything that is signed or hashed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

/// Encodes bytes as unpadded base64url, the form of every binary field in JSON.
pub fn b64_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Encodes bytes as base64url with padding (RFC 4648 section 5), the form of the Privacy Pass
/// HTTP headers and the issuer directory (RFC 9577, RFC 9578).
pub fn b64_encode_padded(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// Decodes unpadded base64url; padding, whitespace and the standard alphabet are refused.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// The canonical byte encoding of a value: the postcard 1.0 wire format of its serde form.
///
/// Postcard writes struct fields in declaration order, integers as LEB128 varints, and byte
/// strings and sequences with a varint length prefix, so the same value always yields the same
/// bytes. Binary fields serialize as raw bytes here (postcard is not human readable) and as
/// base64url in JSON.
pub fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing plain data types into a Vec cannot fail: every type we sign is made of
    // integers, strings, byte strings, sequences and enums, all of which postcard supports.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a value from its canonical encoding. Refuses trailing bytes and any encoding that is
/// not the one [`canonical_bytes`] writes for the value (postcard's own decoder accepts
/// overlong varints, so two byte strings could otherwise carry the same value).
pub fn from_canonical_bytes<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, postcard::Error> {
    let value = from_postcard_bytes(bytes)?;
    if canonical_bytes(&value) == bytes {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

/// Decodes postcard bytes without requiring the unique encoding; refuses trailing bytes. For
/// local state files whose maps have no fixed order (the audit's state), never for what another
/// party sent or signed.
pub fn from_postcard_bytes<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

/// A cursor over untrusted bytes that never reads past the end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Takes exactly `n` bytes, or `None` if fewer remain.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array::<2>().map(u16::from_be_bytes)
    }

    /// Bytes left unread.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }
}

/// Serde adapters for binary fields: base64url strings in human-readable formats (JSON), raw
/// byte strings in binary ones (the canonical encoding).
pub mod serde_bytes_b64 {
    use super::{b64_decode, b64_encode};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes a byte slice.
    pub fn serialize<S: Serializer>(bytes: impl AsRef<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&b64_encode(bytes))
        } else {
            s.serialize_bytes(bytes.as_ref())
        }
    }

    /// Deserializes into any type built from a `Vec<u8>` (a fixed array checks its length).
    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<Vec<u8>>,
    {
        let bytes = if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            b64_decode(&text).map_err(|e| D::Error::custom(format!("invalid base64url: {e}")))?
        } else {
            serde_bytes_buf(d)?
        };
        let len = bytes.len();
        T::try_from(bytes).map_err(|_| D::Error::custom(format!("wrong length: {len} bytes")))
    }

    fn serde_bytes_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// Implements `Serialize`/`Deserialize` for a type with a fixed binary wire encoding, as
/// base64url of that encoding in JSON and as a byte string canonically. The type provides
/// `to_bytes(&self) -> Vec<u8>` and `from_bytes(&[u8]) -> Result<Self, E>`.
macro_rules! serde_via_wire_bytes {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::encoding::serde_bytes_b64::serialize(self.to_bytes(), s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes: Vec<u8> = $crate::encoding::serde_bytes_b64::deserialize(d)?;
                <$ty>::from_bytes(&bytes).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_wire_bytes;

/// `Display` as unpadded base64url and `Debug` as `Name(base64url)` for a 32-byte id newtype
/// (`.0` is the bytes): the way every id in logs and errors reads.
macro_rules! b64_id_fmt {
    ($ty:ident) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&$crate::encoding::b64_encode(self.0))
            }
        }
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }
    };
}
pub(crate) use b64_id_fmt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_is_unpadded_and_strict() {
        assert_eq!(b64_encode([0xfb, 0xff]), "-_8");
        assert_eq!(b64_decode("-_8").expect("valid"), vec![0xfb, 0xff]);
        assert!(b64_decode("-_8=").is_err(), "padding is refused");
        assert!(b64_decode("+/8").is_err(), "standard alphabet is refused");
        assert!(b64_decode("-_ 8").is_err(), "whitespace is refused");
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.take(2), None);
        assert_eq!(r.u8(), Some(3));
        assert_eq!(r.u8(), None);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn canonical_encoding_is_stable() {
        #[derive(Serialize)]
        struct Sample<'a> {
            a: u64,
            b: &'a str,
        }
        assert_eq!(
            canonical_bytes(&Sample { a: 300, b: "hi" }),
            vec![0xac, 0x02, 2, b'h', b'i']
        );
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Back {
            a: u64,
            b: String,
        }
        let back: Back = from_canonical_bytes(&[0xac, 0x02, 2, b'h', b'i']).expect("decodes");
        assert_eq!(
            back,
            Back {
                a: 300,
                b: "hi".into()
            }
        );
        assert!(from_canonical_bytes::<Back>(&[0xac, 0x02, 2, b'h', b'i', 0]).is_err());
        assert!(from_canonical_bytes::<Back>(&[0xac]).is_err());
        // 300 written with an overlong third varint byte: the same value, not the same bytes.
        assert!(from_canonical_bytes::<Back>(&[0xac, 0x82, 0x00, 2, b'h', b'i']).is_err());
        assert!(from_postcard_bytes::<Back>(&[0xac, 0x82, 0x00, 2, b'h', b'i']).is_ok());
    }
}
