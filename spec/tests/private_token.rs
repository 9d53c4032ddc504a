//! RFC 9577 headers: produced in the RFC's form and parsed as RFC 9110 section 11 allows,
//! with the keys, challenges and tokens of the independent Go vectors.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use scrip_spec::api::private_token::{
    HeaderError, MAX_HEADER_LEN, PrivateTokenChallenge, authorization, parse_authorization,
    parse_www_authenticate, www_authenticate,
};
use scrip_spec::{Token, TokenChallenge, TokenPublicKey};
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Vector {
    pkS: String,
    token_challenge: String,
    token: String,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The Go vectors' challenges, each with its key and token.
fn vectors() -> Vec<(PrivateTokenChallenge, Token)> {
    let vectors: Vec<Vector> =
        serde_json::from_str(include_str!("../vectors/privacypass-public-token-go.json"))
            .expect("vector file");
    vectors
        .iter()
        .map(|v| {
            let challenge = PrivateTokenChallenge {
                challenge: TokenChallenge::from_bytes(&unhex(&v.token_challenge))
                    .expect("challenge"),
                token_key: TokenPublicKey::from_spki(&unhex(&v.pkS)).expect("key"),
                max_age: Some(10),
            };
            (
                challenge,
                Token::from_bytes(&unhex(&v.token)).expect("token"),
            )
        })
        .collect()
}

#[test]
fn challenges_round_trip_several_to_a_header_among_other_schemes() {
    let all: Vec<PrivateTokenChallenge> = vectors().into_iter().map(|(c, _)| c).collect();
    let header = www_authenticate(&all);
    // The RFC's form: quoted, padded base64url values.
    assert!(header.starts_with("PrivateToken challenge=\""), "{header}");
    let first = URL_SAFE.encode(all[0].challenge.to_bytes());
    assert!(header.contains(&format!("challenge=\"{first}\"")));
    assert_eq!(parse_www_authenticate(&header).expect("parses"), all);

    // Among other schemes, with odd spacing and case, unknown parameters ignored.
    let mixed = format!(
        "Basic realm=\"x, y\", privatetoken  Challenge = \"{}\" , TOKEN-KEY={}, origin-info=\"ignored\", max-age=10, Bearer abc=",
        URL_SAFE.encode(all[1].challenge.to_bytes()),
        URL_SAFE_NO_PAD.encode(all[1].token_key.spki()),
    );
    assert_eq!(
        parse_www_authenticate(&mixed).expect("parses"),
        [all[1].clone()]
    );

    // One broken challenge beside a good one: the good one is taken.
    let one_broken = format!(
        "PrivateToken challenge=\"AAAA\", token-key=\"AAAA\", {}",
        all[2].header_value()
    );
    assert_eq!(
        parse_www_authenticate(&one_broken).expect("parses"),
        [all[2].clone()]
    );
}

/// A consortium of many issuers, each with a few keys that can be spent: the header an origin
/// sends stays one its clients read (at most [`MAX_HEADER_LEN`]), with the first challenges in
/// their order, rather than one every client refuses as too long.
#[test]
fn a_header_of_many_challenges_stays_within_what_clients_read() {
    let (c, _) = vectors().remove(0);
    let all: Vec<PrivateTokenChallenge> = (0..40)
        .map(|i| PrivateTokenChallenge {
            challenge: TokenChallenge::for_issuer(&format!("issuer-{i:02}.example"))
                .expect("challenge"),
            ..c.clone()
        })
        .collect();
    let header = www_authenticate(&all);
    assert!(header.len() <= MAX_HEADER_LEN, "{} bytes", header.len());
    let read = parse_www_authenticate(&header).expect("a client reads it");
    assert!(read.len() >= 25, "{} challenges fit", read.len());
    assert_eq!(read, all[..read.len()]);
    // A header a little under the limit is kept whole.
    let few = &all[..read.len()];
    assert_eq!(
        parse_www_authenticate(&www_authenticate(few)).expect("parses"),
        few
    );
}

#[test]
fn challenge_errors_say_what_is_wrong() {
    let (c, _) = vectors().remove(0);
    let challenge = URL_SAFE.encode(c.challenge.to_bytes());
    let key = URL_SAFE.encode(c.token_key.spki());
    let cases = [
        (
            "Basic realm=\"x\"".to_owned(),
            HeaderError::NotPrivateToken { what: "challenge" },
        ),
        (
            format!("PrivateToken token-key=\"{key}\""),
            HeaderError::Missing { param: "challenge" },
        ),
        (
            format!("PrivateToken challenge=\"{challenge}\""),
            HeaderError::Missing { param: "token-key" },
        ),
        (
            format!(
                "PrivateToken challenge=\"{challenge}\", challenge=\"{challenge}\", token-key=\"{key}\""
            ),
            HeaderError::Repeated { param: "challenge" },
        ),
        (
            format!(
                "PrivateToken challenge=\"{challenge}\", token-key=\"{}\"",
                URL_SAFE.encode(b"not a key")
            ),
            HeaderError::Invalid {
                param: "token-key",
                expected: "RSA-PSS public key",
            },
        ),
        (
            format!("PrivateToken challenge=\"{challenge}\", token-key=\"{key}\", max-age=soon"),
            HeaderError::Invalid {
                param: "max-age",
                expected: "number of seconds",
            },
        ),
        (
            format!(
                "PrivateToken challenge=\"{}\", token-key=\"{key}\"",
                challenge.replace('A', "+")
            ),
            HeaderError::Invalid {
                param: "challenge",
                expected: "base64url value",
            },
        ),
        (
            format!("PrivateToken challenge=\"{challenge}"),
            HeaderError::Grammar,
        ),
        (" ".repeat(MAX_HEADER_LEN + 1), HeaderError::TooLong),
    ];
    for (header, expected) in cases {
        assert_eq!(
            parse_www_authenticate(&header).err(),
            Some(expected),
            "{}",
            &header[..header.len().min(80)]
        );
    }
}

#[test]
fn a_token_round_trips_through_authorization_in_every_spelling() {
    for (_, token) in vectors() {
        let value = authorization(&token);
        assert!(value.starts_with("PrivateToken token=\""), "{value}");
        assert_eq!(parse_authorization(&value).expect("parses"), token);
        let padded = URL_SAFE.encode(token.to_bytes());
        let unpadded = URL_SAFE_NO_PAD.encode(token.to_bytes());
        for spelling in [
            format!("PrivateToken token={padded}"),
            format!("privatetoken TOKEN=\"{unpadded}\""),
            format!("PrivateToken  token = {unpadded} , unknown=1"),
        ] {
            assert_eq!(
                parse_authorization(&spelling).expect("parses"),
                token,
                "{spelling}"
            );
        }
    }
}

#[test]
fn authorization_errors_say_what_is_wrong() {
    let (_, token) = vectors().remove(0);
    let good = URL_SAFE.encode(token.to_bytes());
    let cases = [
        (
            "Bearer abc".to_owned(),
            HeaderError::NotPrivateToken { what: "token" },
        ),
        (
            String::new(),
            HeaderError::NotPrivateToken { what: "token" },
        ),
        (
            format!("PrivateToken token=\"{good}\", Basic x"),
            HeaderError::NotPrivateToken { what: "token" },
        ),
        (
            "PrivateToken other=1".to_owned(),
            HeaderError::Missing { param: "token" },
        ),
        (
            format!("PrivateToken token={good}, token={good}"),
            HeaderError::Repeated { param: "token" },
        ),
        (
            "PrivateToken token=\"AAAA\"".to_owned(),
            HeaderError::Invalid {
                param: "token",
                expected: "token of type 0x0002",
            },
        ),
        (
            format!("PrivateToken token=\"{good}=\""),
            HeaderError::Invalid {
                param: "token",
                expected: "base64url value",
            },
        ),
        // `token=` with no value reads as a token68, so the parameter is missing.
        (
            "PrivateToken token=".to_owned(),
            HeaderError::Missing { param: "token" },
        ),
        ("PrivateToken token=\"abc".to_owned(), HeaderError::Grammar),
        (
            format!("PrivateToken token=\"{}\"", "A".repeat(MAX_HEADER_LEN)),
            HeaderError::TooLong,
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(
            parse_authorization(&header).err(),
            Some(expected),
            "{}",
            &header[..header.len().min(80)]
        );
    }
}
