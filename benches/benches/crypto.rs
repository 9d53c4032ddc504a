//! Token cryptography, one core: blind, blind sign, finalize and verify (RSA-2048) on each RSA
//! backend; the nullifier hash; Ed25519 signing and verification of a spend batch; and, in the
//! same run, issuance and verification of the same token type with the independent
//! `privacypass` crate, so ours can be compared with it as a ratio.
//!
//! `cargo bench -p scrip-benches --bench crypto`

use blind_rsa_signatures::{Deterministic, KeyPair, PSS, PublicKey, Sha384};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use privacypass::auth::authenticate::TokenChallenge as PpChallenge;
use privacypass::public_tokens::server::{
    IssuerKeyStore, IssuerServer, OriginKeyStore, OriginServer,
};
use privacypass::public_tokens::{TokenRequest as PpRequest, public_key_to_truncated_token_key_id};
use privacypass::{Nonce, NonceStore, TokenType};
use scrip_spec::ledger::{Action, LedgerRequest};
use scrip_spec::{
    OperatorKey, RsaBackend, TokenChallenge, TokenSecretKey, WalletSeed, blind, finalize,
    verify_token_with_backend,
};
use std::time::Duration;

type PpKeyPair = KeyPair<Sha384, PSS, Deterministic>;
type PpPublicKey = PublicKey<Sha384, PSS, Deterministic>;

/// privacypass's issuer looks keys up through an async store; this one holds one key pair.
struct OneIssuerKey(PpKeyPair);

#[async_trait::async_trait]
impl IssuerKeyStore for OneIssuerKey {
    async fn insert(&self, _: u8, _: PpKeyPair) -> bool {
        false
    }
    async fn get(&self, _: &u8) -> Option<PpKeyPair> {
        Some(self.0.clone())
    }
    async fn remove(&self, _: &u8) -> bool {
        false
    }
}

/// The origin's key store: one public key.
struct OneOriginKey(PpPublicKey);

#[async_trait::async_trait]
impl OriginKeyStore for OneOriginKey {
    async fn insert(&self, _: u8, _: PpPublicKey) {}
    async fn get(&self, _: &u8) -> Vec<PpPublicKey> {
        vec![self.0.clone()]
    }
    async fn remove(&self, _: &u8) -> bool {
        false
    }
}

/// Accepts every nonce: double spending is the ledger's job in scrip, so only the signature
/// check is compared.
struct AnyNonce;

#[async_trait::async_trait]
impl NonceStore for AnyNonce {
    async fn reserve(&self, _: &Nonce) -> bool {
        true
    }
    async fn commit(&self, _: &Nonce) {}
    async fn release(&self, _: &Nonce) {}
}

fn scrip_tokens(c: &mut Criterion) {
    let sk = TokenSecretKey::generate().expect("key");
    let pk = sk.public_key();
    let challenge = TokenChallenge::for_issuer("issuer.example").expect("challenge");
    let digest = challenge.digest();
    let seed = WalletSeed::generate();
    let (request, pending) = blind(&seed, 1, pk, &challenge).expect("blind");
    let response = sk.blind_sign(&request).expect("sign");
    let token = finalize(pk, &pending, &response).expect("finalize");

    let mut group = c.benchmark_group("token");
    group.measurement_time(Duration::from_secs(5));
    let mut counter = 0u64;
    group.bench_function("blind", |b| {
        b.iter(|| {
            counter += 1;
            blind(&seed, counter, pk, &challenge).expect("blind")
        })
    });
    group.bench_function("finalize", |b| {
        b.iter(|| finalize(pk, &pending, &response).expect("finalize"))
    });
    for backend in RsaBackend::ALL {
        group.bench_function(format!("blind_sign/{backend}"), |b| {
            b.iter(|| sk.blind_sign_with(*backend, &request).expect("sign"))
        });
        group.bench_function(format!("verify/{backend}"), |b| {
            b.iter(|| verify_token_with_backend(*backend, pk, &digest, &token).expect("valid"))
        });
    }
    group.bench_function("nullifier", |b| b.iter(|| token.nullifier()));
    group.finish();
}

fn privacypass_tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut rng = rand::rng();
    let pair = PpKeyPair::generate(&mut rng, 2048).expect("key");
    let pk = pair.pk.clone();
    let issuer_keys = OneIssuerKey(pair);
    let origin_keys = OneOriginKey(pk.clone());
    let (issuer, origin) = (IssuerServer::new(), OriginServer::new());
    let challenge = PpChallenge::new(TokenType::Public, "issuer.example", None, &[]);
    assert!(public_key_to_truncated_token_key_id(&pk).is_ok());
    let (request, state) = PpRequest::new(&mut rng, pk.clone(), &challenge).expect("request");
    let response = rt
        .block_on(issuer.issue_token_response(&issuer_keys, request.clone()))
        .expect("issue");
    let token = response.clone().issue_token(&state).expect("finalize");

    let mut group = c.benchmark_group("token");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("blind/privacypass", |b| {
        b.iter(|| PpRequest::new(&mut rng, pk.clone(), &challenge).expect("request"))
    });
    group.bench_function("blind_sign/privacypass", |b| {
        b.iter_batched(
            || request.clone(),
            |request| {
                rt.block_on(issuer.issue_token_response(&issuer_keys, request))
                    .expect("issue")
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("finalize/privacypass", |b| {
        b.iter_batched(
            || response.clone(),
            |response| response.issue_token(&state).expect("finalize"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verify/privacypass", |b| {
        b.iter_batched(
            || token.clone(),
            |token| {
                rt.block_on(origin.redeem_token(&origin_keys, &AnyNonce, token))
                    .expect("valid")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn spend_batch_signatures(c: &mut Criterion) {
    let operator = OperatorKey::generate();
    let sk = TokenSecretKey::generate().expect("key");
    let batch: u32 = 1000;
    let request = LedgerRequest::new(
        scrip_spec::ledger::Hash32([7; 32]),
        1_800_000_000,
        Action::spend_of(scrip_testkit::mint_tokens(&sk, "issuer", batch as usize)),
    );
    let signed = operator.sign(request.clone());
    let mut group = c.benchmark_group("spend_batch_1000");
    group.throughput(Throughput::Elements(batch.into()));
    group.bench_function("ed25519_sign", |b| {
        b.iter_batched(
            || request.clone(),
            |request| operator.sign(request),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ed25519_verify", |b| {
        b.iter(|| signed.verify().expect("valid"))
    });
    group.finish();
}

criterion_group!(
    benches,
    scrip_tokens,
    privacypass_tokens,
    spend_batch_signatures
);
criterion_main!(benches);
