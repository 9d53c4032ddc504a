#![doc = include_str!("../README.md")]

pub mod api;
pub mod catalog;
pub mod codes;
pub mod committee;
pub mod decode;
pub mod encoding;
pub mod key;
pub mod ledger;
pub mod operator;
pub mod secret_file;
pub mod time;
pub mod token;

pub use catalog::{CapacityKind, Catalog, CatalogEntry, CatalogError, KindError};
pub use codes::card::{CardCode, CardCodeError};
pub use codes::grant::{GrantCode, GrantCodeError};
pub use decode::DecodeError;
pub use key::{KeyError, KeyInfoError, TokenKeyId, TokenKeyInfo, TokenPublicKey, TokenSecretKey};
pub use operator::{
    KeyFileError, KeyTextError, OperatorId, OperatorKey, Signable, SignatureError, Signed,
};
pub use time::{UnixSeconds, now};
pub use token::backend::{RsaBackend, RsaError, UnknownBackend};
pub use token::challenge::TokenChallenge;
pub use token::request::TokenRequest;
pub use token::response::TokenResponse;
pub use token::sign::SignError;
pub use token::verify::{
    VerifyError, verify_token, verify_token_with_backend, verify_token_with_digest,
};
pub use token::wallet::{
    BlindError, COUNTER_EPOCH, FinalizeError, PendingToken, WalletSeed, blind, finalize,
};
pub use token::{Nullifier, TOKEN_TYPE, Token};

#[cfg(test)]
pub(crate) mod test_support {
    use crate::key::TokenSecretKey;
    use std::sync::OnceLock;

    /// RSA key generation is slow; unit tests share two keys.
    pub(crate) fn test_key() -> &'static TokenSecretKey {
        static KEY: OnceLock<TokenSecretKey> = OnceLock::new();
        KEY.get_or_init(|| TokenSecretKey::generate().expect("generate"))
    }

    pub(crate) fn other_key() -> &'static TokenSecretKey {
        static KEY: OnceLock<TokenSecretKey> = OnceLock::new();
        KEY.get_or_init(|| TokenSecretKey::generate().expect("generate"))
    }
}
