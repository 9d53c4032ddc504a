#![doc = include_str!("../README.md")]

pub mod backend;
pub mod card;
pub mod catalog;
pub mod challenge;
pub mod client;
pub mod decode;
pub mod encoding;
pub mod export;
pub mod grant;
pub mod issuance;
pub mod key;
pub mod ledger;
pub mod operator;
pub mod request;
pub mod response;
pub mod secret_file;
pub mod sign;
pub mod token;
pub mod verify;

pub use backend::{RsaBackend, RsaError, UnknownBackend};
pub use card::{CardCode, CardCodeError};
pub use catalog::{CapacityKind, Catalog, CatalogEntry, CatalogError, KindError};
pub use challenge::TokenChallenge;
pub use client::{BlindError, FinalizeError, PendingToken, WalletSeed, blind, finalize};
pub use decode::DecodeError;
pub use grant::{GrantCode, GrantCodeError};
pub use key::{
    KeyError, KeyInfoError, TokenKeyId, TokenKeyInfo, TokenPublicKey, TokenSecretKey, UnixSeconds,
};
pub use operator::{KeyTextError, OperatorId, OperatorKey, Signable, SignatureError, Signed};
pub use request::TokenRequest;
pub use response::TokenResponse;
pub use sign::SignError;
pub use token::{Nullifier, TOKEN_TYPE, Token};
pub use verify::{VerifyError, verify_token, verify_token_with_backend, verify_token_with_digest};

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
