//! Known-answer tests: every vector of RFC 9474 (blind RSA) and of an independent Go
//! implementation of RFC 9578 type 0x0002 tokens, byte for byte.

use blind_rsa_signatures::reexports::rsa::{BoxedUint, RsaPrivateKey};
use blind_rsa_signatures::{
    Deterministic, HashAlgorithm, MessagePrepare, PSS, PSSZero, Randomized, SaltMode, SecretKey,
    Sha384,
};
use rand::{TryCryptoRng, TryRng};
use scrip_spec::token::wallet::blind_with;
use scrip_spec::{
    RsaBackend, Token, TokenChallenge, TokenPublicKey, TokenRequest, TokenResponse, TokenSecretKey,
    finalize, verify_token, verify_token_with_backend,
};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;

/// Replays fixed byte strings as the random stream, one per `fill_bytes` call, as the vectors
/// fix the message randomizer, the PSS salt and the blinding factor.
struct Replay(VecDeque<Vec<u8>>);

impl TryRng for Replay {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        panic!("vectors feed only fill_bytes")
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        panic!("vectors feed only fill_bytes")
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let next = self
            .0
            .pop_front()
            .expect("the vector supplies this many draws");
        assert_eq!(next.len(), dst.len(), "draw of unexpected length");
        dst.copy_from_slice(&next);
        Ok(())
    }
}
impl TryCryptoRng for Replay {}

fn unhex(s: &str) -> Vec<u8> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let padded = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_owned()
    };
    hex::decode(padded).expect("vector hex")
}

/// A big-endian hex integer at the precision of `bits`.
fn uint(s: &str, bits: u32) -> BoxedUint {
    BoxedUint::from_be_slice(&unhex(s), bits).expect("fits")
}

/// The little-endian bytes that make `random_mod` draw exactly `r` (it fills the words of a
/// candidate from the stream and keeps it when below the modulus).
fn draw_for(r: &BoxedUint) -> Vec<u8> {
    r.to_le_bytes().to_vec()
}

#[derive(Deserialize)]
struct Rfc9474Vector {
    name: String,
    p: String,
    q: String,
    n: String,
    e: String,
    d: String,
    msg: String,
    msg_prefix: String,
    salt: String,
    inv: String,
    blinded_msg: String,
    blind_sig: String,
    sig: String,
}

fn run_rfc9474<H: HashAlgorithm, S: SaltMode, M: MessagePrepare>(v: &Rfc9474Vector) {
    // RFC 9474's vectors use an RSA-4096 key; take the precision from the modulus.
    let bits = 8 * unhex(&v.n).len() as u32;
    let n = uint(&v.n, bits);
    let inner = RsaPrivateKey::from_components(
        n.clone(),
        uint(&v.e, bits),
        uint(&v.d, bits),
        vec![uint(&v.p, bits / 2), uint(&v.q, bits / 2)],
    )
    .expect("vector key");
    let sk = SecretKey::<H, S, M>::new(inner);
    let pk = sk.public_key().expect("public key");

    let inv = uint(&v.inv, bits);
    let r = inv
        .invert_mod(&n.to_nz().expect("nonzero"))
        .into_option()
        .expect("inv is invertible");
    let mut draws = VecDeque::new();
    if M::RANDOMIZE {
        draws.push_back(unhex(&v.msg_prefix));
    }
    draws.push_back(unhex(&v.salt));
    draws.push_back(draw_for(&r));
    let msg = unhex(&v.msg);

    let blinded = pk.blind(&mut Replay(draws), &msg).expect("blind");
    assert_eq!(blinded.secret.0, unhex(&v.inv), "{}: inv", v.name);
    assert_eq!(
        blinded.blind_message.0,
        unhex(&v.blinded_msg),
        "{}: blinded_msg",
        v.name
    );
    let blind_sig = sk.blind_sign(&blinded.blind_message).expect("sign");
    assert_eq!(blind_sig.0, unhex(&v.blind_sig), "{}: blind_sig", v.name);
    let sig = pk.finalize(&blind_sig, &blinded, &msg).expect("finalize");
    assert_eq!(sig.0, unhex(&v.sig), "{}: sig", v.name);
    pk.verify(&sig, blinded.msg_randomizer, &msg)
        .expect("verify");
    let mut forged = sig.clone();
    forged.0[0] ^= 1;
    assert!(pk.verify(&forged, blinded.msg_randomizer, &msg).is_err());
}

#[test]
fn rfc9474_every_vector() {
    let vectors: Vec<Rfc9474Vector> =
        serde_json::from_str(include_str!("../vectors/rfc9474.json")).expect("vector file");
    assert_eq!(vectors.len(), 4);
    for v in &vectors {
        match v.name.as_str() {
            "RSABSSA-SHA384-PSS-Randomized" => run_rfc9474::<Sha384, PSS, Randomized>(v),
            "RSABSSA-SHA384-PSSZERO-Randomized" => run_rfc9474::<Sha384, PSSZero, Randomized>(v),
            "RSABSSA-SHA384-PSS-Deterministic" => run_rfc9474::<Sha384, PSS, Deterministic>(v),
            "RSABSSA-SHA384-PSSZERO-Deterministic" => {
                run_rfc9474::<Sha384, PSSZero, Deterministic>(v)
            }
            other => panic!("unknown vector {other}"),
        }
    }
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct PrivacyPassVector {
    skS: String,
    pkS: String,
    token_challenge: String,
    nonce: String,
    blind: String,
    salt: String,
    token_request: String,
    token_response: String,
    token: String,
}

#[test]
fn privacypass_go_every_vector_byte_for_byte() {
    let vectors: Vec<PrivacyPassVector> =
        serde_json::from_str(include_str!("../vectors/privacypass-public-token-go.json"))
            .expect("vector file");
    assert_eq!(vectors.len(), 5);
    for (i, v) in vectors.iter().enumerate() {
        let pem = String::from_utf8(unhex(&v.skS)).expect("PEM text");
        let sk = TokenSecretKey::from_pem(&pem).expect("vector secret key");
        let pk = TokenPublicKey::from_spki(&unhex(&v.pkS)).expect("vector SPKI");
        assert_eq!(
            sk.public_key().spki(),
            unhex(&v.pkS).as_slice(),
            "{i}: SPKI"
        );
        assert_eq!(sk.public_key().id(), pk.id());

        let challenge_bytes = unhex(&v.token_challenge);
        let challenge = TokenChallenge::from_bytes(&challenge_bytes).expect("challenge");
        assert_eq!(
            challenge.to_bytes(),
            challenge_bytes,
            "{i}: challenge re-encodes"
        );

        let nonce: [u8; 32] = unhex(&v.nonce).try_into().expect("32-byte nonce");
        let r = BoxedUint::from_be_slice(&unhex(&v.blind), 2048).expect("blind");
        let draws = VecDeque::from([unhex(&v.salt), draw_for(&r)]);
        let (request, pending) =
            blind_with(nonce, &mut Replay(draws), &pk, &challenge).expect("blind");
        assert_eq!(
            request.to_bytes(),
            unhex(&v.token_request),
            "{i}: token_request"
        );
        assert_eq!(
            TokenRequest::from_bytes(&unhex(&v.token_request)).expect("decodes"),
            request
        );

        for backend in RsaBackend::ALL {
            let response = sk.blind_sign_with(*backend, &request).expect("blind sign");
            assert_eq!(
                response.to_bytes(),
                unhex(&v.token_response),
                "{i}: token_response on {backend}"
            );
        }
        let response = TokenResponse::from_bytes(&unhex(&v.token_response)).expect("decodes");

        let token = finalize(&pk, &pending, &response).expect("finalize");
        assert_eq!(token.to_bytes(), unhex(&v.token), "{i}: token");
        let decoded = Token::from_bytes(&unhex(&v.token)).expect("decodes");
        assert_eq!(decoded, token);
        for backend in RsaBackend::ALL {
            verify_token_with_backend(*backend, &pk, &challenge.digest(), &decoded)
                .unwrap_or_else(|e| panic!("{i}: the Go token verifies on {backend}: {e}"));
        }
    }
}

#[test]
fn scrip_challenge_matches_the_vector_with_empty_context_and_origin() {
    // Vector 3 is (0x0002, "issuer.example", empty, empty): exactly a scrip challenge.
    let vectors: Vec<PrivacyPassVector> =
        serde_json::from_str(include_str!("../vectors/privacypass-public-token-go.json"))
            .expect("vector file");
    let ours = TokenChallenge::for_issuer("issuer.example").expect("valid");
    assert_eq!(ours.to_bytes(), unhex(&vectors[3].token_challenge));
    let token = Token::from_bytes(&unhex(&vectors[3].token)).expect("decodes");
    assert_eq!(token.challenge_digest, ours.digest());
    let pk = TokenPublicKey::from_spki(&unhex(&vectors[3].pkS)).expect("SPKI");
    verify_token(&pk, &ours, &token).expect("verifies as a scrip token");
}
