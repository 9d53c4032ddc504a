//! The wallet export format: unspent tokens with their keys, for backup or for another wallet.

use crate::key::TokenKeyInfo;
use crate::token::Token;
use serde::{Deserialize, Serialize};

/// Current version of the export format.
pub const EXPORT_VERSION: u32 = 1;

/// One exported token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedToken {
    /// The token in its RFC 9578 wire encoding (base64url).
    pub token: Token,
    /// Its key and metadata, as announced on the ledger.
    pub key: TokenKeyInfo,
}

/// A file of exported tokens. Whoever holds it can spend them: keep it as secret as the
/// wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    /// [`EXPORT_VERSION`].
    pub version: u32,
    /// The tokens.
    pub tokens: Vec<ExportedToken>,
}
