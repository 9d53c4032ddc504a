//! What every decoder must do with untrusted input, shared by the fuzz targets (`fuzz/`, which
//! include this file) and the regression tests that replay their corpus
//! (`tests/fuzz_regressions.rs`): never panic, and whatever it accepts must re-encode to the
//! same bytes (or, for the canonical encoding, decode again to the same value).

#![allow(dead_code)]

use scrip_spec::api::issuer::{BalanceRequest, OpenRequest, ReplayRequest};
use scrip_spec::codes::export::ExportFile;
use scrip_spec::encoding::{canonical_bytes, from_canonical_bytes};
use scrip_spec::ledger::{Checkpoint, Cosignature, EntryBody, LedgerRequest, LogEntry};
use scrip_spec::{
    CardCode, GrantCode, OperatorId, OperatorKey, Signed, Token, TokenChallenge, TokenPublicKey,
    TokenRequest, TokenResponse, WalletSeed,
};

/// A fuzz target's check.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name; the corpus of each lives in `tests/fuzz-corpus/<name>/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("token_codecs", token_codecs),
    ("canonical_envelopes", canonical_envelopes),
    ("text_codes", text_codes),
    ("json_bodies", json_bodies),
    ("auth_headers", auth_headers),
];

/// The RFC 9578 binary structures and the SPKI key encoding.
pub fn token_codecs(data: &[u8]) {
    if let Ok(token) = Token::from_bytes(data) {
        assert_eq!(token.to_bytes(), data, "Token re-encodes");
    }
    if let Ok(request) = TokenRequest::from_bytes(data) {
        assert_eq!(request.to_bytes(), data, "TokenRequest re-encodes");
    }
    if let Ok(response) = TokenResponse::from_bytes(data) {
        assert_eq!(response.to_bytes(), data, "TokenResponse re-encodes");
    }
    if let Ok(challenge) = TokenChallenge::from_bytes(data) {
        assert_eq!(challenge.to_bytes(), data, "TokenChallenge re-encodes");
    }
    if let Ok(key) = TokenPublicKey::from_spki(data) {
        assert_eq!(key.spki(), data, "SPKI re-encodes");
    }
}

fn canonical<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = from_canonical_bytes::<T>(data) {
        let bytes = canonical_bytes(&value);
        assert_eq!(bytes, data, "the canonical encoding is unique");
        assert_eq!(from_canonical_bytes::<T>(&bytes).ok(), Some(value));
    }
}

/// Signed envelopes and log entries in the canonical (postcard) encoding, as stored.
pub fn canonical_envelopes(data: &[u8]) {
    canonical::<Signed<LedgerRequest>>(data);
    canonical::<LogEntry>(data);
    canonical::<EntryBody>(data);
    canonical::<Checkpoint>(data);
    canonical::<Cosignature>(data);
    if let Ok(signed) = from_canonical_bytes::<Signed<LedgerRequest>>(data) {
        // A forged or random signature must be refused, never panic.
        let _ = signed.verify();
    }
}

/// Codes people type or paste: card codes, grant codes, operator ids and keys, backup codes.
pub fn text_codes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = CardCode::parse(text) {
        assert_eq!(CardCode::parse(&code.to_string()).ok(), Some(code));
    }
    if let Ok(code) = GrantCode::parse(text) {
        assert_eq!(
            code.to_string(),
            text,
            "a grant code is accepted only as printed"
        );
    }
    if let Ok(id) = text.parse::<OperatorId>() {
        assert_eq!(id.to_string().parse::<OperatorId>().ok(), Some(id));
    }
    if let Ok(key) = OperatorKey::from_text(text) {
        let again = OperatorKey::from_text(&key.to_text()).map(|k| k.id()).ok();
        assert_eq!(again, Some(key.id()));
    }
    if let Ok(seed) = WalletSeed::from_backup_code(text) {
        let again = WalletSeed::from_backup_code(&seed.backup_code()).ok();
        assert!(again == Some(seed), "a backup code restores the same seed");
    }
}

fn json<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&value).expect("what decoded encodes");
        assert_eq!(serde_json::from_slice::<T>(&text).ok(), Some(value));
    }
}

/// The JSON bodies of the issuer's and the ledger's endpoints, and the wallet export file.
pub fn json_bodies(data: &[u8]) {
    json::<OpenRequest>(data);
    json::<BalanceRequest>(data);
    json::<ReplayRequest>(data);
    json::<Signed<LedgerRequest>>(data);
    json::<Cosignature>(data);
    json::<LogEntry>(data);
    json::<ExportFile>(data);
}

/// The RFC 9577 headers: what parses is produced again in scrip's form and parses to the same.
pub fn auth_headers(data: &[u8]) {
    use scrip_spec::api::private_token::{
        authorization, parse_authorization, parse_www_authenticate, www_authenticate,
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(challenges) = parse_www_authenticate(text) {
        let again = parse_www_authenticate(&www_authenticate(&challenges)).ok();
        assert_eq!(again, Some(challenges), "challenges re-encode");
    }
    if let Ok(token) = parse_authorization(text) {
        assert_eq!(
            parse_authorization(&authorization(&token)).ok(),
            Some(token)
        );
    }
}
