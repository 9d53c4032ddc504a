//! Small strategies and helpers the endpoints' generators share.

use crate::harness::Case;
use proptest::prelude::*;
use proptest::strategy::{SBoxedStrategy, Union};
use rand::SeedableRng as _;
use scrip_spec::CapacityKind;

pub fn kind(k: &str) -> CapacityKind {
    CapacityKind::new(k).expect("kind")
}

/// One of `items`.
pub fn pick<T: Clone + std::fmt::Debug + Send + Sync + 'static>(
    items: &[T],
) -> proptest::sample::Select<T> {
    proptest::sample::select(items.to_vec())
}

/// True with probability `p`.
pub fn chance(p: f64) -> proptest::bool::Weighted {
    proptest::bool::weighted(p)
}

/// One of the strategies, each as often as its weight says.
pub fn weighted<T: std::fmt::Debug + 'static>(
    options: Vec<(u32, SBoxedStrategy<T>)>,
) -> SBoxedStrategy<T> {
    Union::new_weighted(options).sboxed()
}

/// The same, for cases.
pub fn cases(options: Vec<(u32, SBoxedStrategy<Case>)>) -> SBoxedStrategy<Case> {
    weighted(options)
}

/// Up to `max` bytes, each any value (small bodies: proptest shrinks them byte by byte).
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// `len` random bytes in unpadded base64url.
pub fn b64(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), len).prop_map(scrip_spec::encoding::b64_encode)
}

/// Printable ASCII, up to `max` characters.
pub fn ascii(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0x20u8..0x7f, 0..=max)
        .prop_map(|b| b.into_iter().map(char::from).collect())
}

/// `n` random bytes from `seed`: bodies of up to megabytes, too big for a value tree of one
/// node per byte.
pub fn filler(seed: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut b);
    b
}

/// Percent-encodes everything but unreserved characters, so the URL parser keeps the path
/// exactly as generated.
pub fn pct(s: &[u8]) -> String {
    s.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An HTTP method from its name.
pub fn method(m: &str) -> reqwest::Method {
    reqwest::Method::from_bytes(m.as_bytes()).expect("method")
}
