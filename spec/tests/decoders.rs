//! Property tests: no decoder panics on arbitrary input, and every accepted input re-encodes to
//! exactly the bytes it came from.

use proptest::prelude::*;
use scrip_spec::{
    CardCode, GrantCode, OperatorId, Signed, Token, TokenChallenge, TokenPublicKey, TokenRequest,
    TokenResponse,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn binary_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        if let Ok(t) = Token::from_bytes(&bytes) {
            prop_assert_eq!(t.to_bytes(), bytes.clone());
        }
        if let Ok(r) = TokenRequest::from_bytes(&bytes) {
            prop_assert_eq!(r.to_bytes(), bytes.clone());
        }
        if let Ok(r) = TokenResponse::from_bytes(&bytes) {
            prop_assert_eq!(r.to_bytes(), bytes.clone());
        }
        if let Ok(c) = TokenChallenge::from_bytes(&bytes) {
            prop_assert_eq!(c.to_bytes(), bytes.clone());
        }
        if let Ok(k) = TokenPublicKey::from_spki(&bytes) {
            prop_assert_eq!(k.spki(), bytes.as_slice());
        }
    }

    #[test]
    fn token_shaped_input_never_panics(
        token_type in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = token_type.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let decoded = Token::from_bytes(&bytes);
        prop_assert_eq!(decoded.is_ok(), token_type == 2 && body.len() == 96 + 256);
        let decoded = TokenRequest::from_bytes(&bytes);
        prop_assert_eq!(decoded.is_ok(), token_type == 2 && body.len() == 1 + 256);
    }

    #[test]
    fn text_decoders_never_panic(text in "\\PC{0,80}") {
        let _ = CardCode::parse(&text);
        if let Ok(code) = GrantCode::parse(&text) {
            prop_assert_eq!(code.to_string(), text.clone());
        }
        let _ = text.parse::<OperatorId>();
        let _ = scrip_spec::api::private_token::parse_www_authenticate(&text);
        let _ = scrip_spec::api::private_token::parse_authorization(&text);
        let json = serde_json::to_string(&text).expect("a string serializes");
        let _ = serde_json::from_str::<Token>(&json);
        let _ = serde_json::from_str::<TokenPublicKey>(&json);
    }

    #[test]
    fn json_envelopes_never_panic(text in "\\PC{0,200}") {
        let _ = serde_json::from_str::<Signed<scrip_spec::Catalog>>(&text);
        let _ = serde_json::from_str::<scrip_spec::TokenKeyInfo>(&text);
    }
}
