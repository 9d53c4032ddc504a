//! The error every wire decoder returns.

/// Why bytes could not be decoded into a wire type. Decoders never panic and never accept
/// trailing bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the structure did.
    #[error("{what}: input is truncated")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
    },
    /// The input has bytes after the end of the structure.
    #[error("{what}: {count} unexpected trailing bytes")]
    TrailingBytes {
        /// The structure being decoded.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// The structure names a token type other than 0x0002.
    #[error("{what}: token type {found:#06x} is not supported (only 0x0002)")]
    WrongTokenType {
        /// The structure being decoded.
        what: &'static str,
        /// The token type found.
        found: u16,
    },
    /// A field is out of the range the protocol allows.
    #[error("{what}: {reason}")]
    Invalid {
        /// The structure being decoded.
        what: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Checks that a reader consumed its whole input.
pub(crate) fn expect_end(
    reader: &crate::encoding::Reader<'_>,
    what: &'static str,
) -> Result<(), DecodeError> {
    match reader.remaining() {
        0 => Ok(()),
        count => Err(DecodeError::TrailingBytes { what, count }),
    }
}

/// Reads the leading `token_type` and checks that it is 0x0002.
pub(crate) fn expect_token_type(
    reader: &mut crate::encoding::Reader<'_>,
    what: &'static str,
) -> Result<(), DecodeError> {
    match reader.u16() {
        None => Err(DecodeError::Truncated { what }),
        Some(crate::token::TOKEN_TYPE) => Ok(()),
        Some(found) => Err(DecodeError::WrongTokenType { what, found }),
    }
}
