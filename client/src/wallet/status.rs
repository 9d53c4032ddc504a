//! Asking the ledger which tokens are spent without telling it which tokens the wallet holds:
//! by nullifier prefix, one fresh connection per prefix, in random order (PROTOCOL.md
//! section 11.9, the threat model in 12.1).

use super::Wallet;
use scrip_spec::Nullifier;
use scrip_spec::api::ledger::{MAX_SPENT_PREFIX_ANSWER, NullifierPrefix, SpentNullifier};
use std::collections::{BTreeMap, HashMap};

/// Expected spent nullifiers per prefix the wallet aims for: as many as possible (each is
/// a decoy for the wallet's own), while an answer stays well under the ledger's limit.
const TARGET_PER_PREFIX: u64 = (MAX_SPENT_PREFIX_ANSWER / 4) as u64;

/// The longest prefix this wallet ever sends, in bytes: 2^24 buckets hold a spent set of
/// billions at [`TARGET_PER_PREFIX`] each, and a longer prefix would name a token of a small
/// ledger almost outright.
const MAX_WALLET_PREFIX_BYTES: usize = 3;

/// The prefix length, in bytes, for a spent set of `spent` nullifiers: the shortest whose
/// expected bucket is at most [`TARGET_PER_PREFIX`].
pub fn prefix_len_for(spent: u64) -> usize {
    let mut len = 1;
    let mut buckets: u64 = 256;
    while len < MAX_WALLET_PREFIX_BYTES && spent / buckets > TARGET_PER_PREFIX {
        len += 1;
        buckets = buckets.saturating_mul(256);
    }
    len
}

impl Wallet {
    /// Which of `nullifiers` the ledger records as spent, with their first spend. The ledger
    /// is asked only by prefix: it learns, per query, the first bytes of a nullifier the
    /// wallet holds or held, shared with every other spent nullifier in the answer.
    pub async fn spent_among(
        &self,
        nullifiers: &[Nullifier],
    ) -> anyhow::Result<HashMap<Nullifier, SpentNullifier>> {
        use anyhow::Context as _;
        if nullifiers.is_empty() {
            return Ok(HashMap::new());
        }
        let totals = self
            .status_ledger
            .totals()
            .await
            .context("cannot read the ledger's totals")?;
        let live: u64 = totals
            .keys
            .iter()
            .map(|k| k.spent.saturating_sub(k.pruned))
            .sum();
        let len = prefix_len_for(live);
        // One byte more than the spent set justifies, at most: a ledger that claims more
        // nullifiers share a prefix than its totals allow is not followed further.
        let longest = (len + 1).min(MAX_WALLET_PREFIX_BYTES);
        let mut groups: BTreeMap<NullifierPrefix, Vec<Nullifier>> = BTreeMap::new();
        for n in nullifiers {
            groups
                .entry(NullifierPrefix::of(n, len))
                .or_default()
                .push(*n);
        }
        let mut queue: Vec<(NullifierPrefix, Vec<Nullifier>)> = groups.into_iter().collect();
        let mut found = HashMap::new();
        while !queue.is_empty() {
            // Random order: the sequence of queries says nothing about the wallet's order.
            let (prefix, members) = queue.swap_remove(rand::random_range(0..queue.len()));
            let page = self
                .status_ledger
                .spent_with_prefix(&prefix)
                .await
                .with_context(|| {
                    format!("the ledger did not answer the query for prefix {prefix}")
                })?;
            let full = page
                .spent
                .iter()
                .filter(|s| prefix.matches(&s.nullifier))
                .count()
                >= MAX_SPENT_PREFIX_ANSWER;
            if !page.complete && full && prefix.as_bytes().len() < longest {
                // Too many share it: ask again for each longer prefix among the members.
                let mut longer: BTreeMap<NullifierPrefix, Vec<Nullifier>> = BTreeMap::new();
                for n in members {
                    longer
                        .entry(NullifierPrefix::of(&n, prefix.as_bytes().len() + 1))
                        .or_default()
                        .push(n);
                }
                queue.extend(longer);
                continue;
            }
            anyhow::ensure!(
                page.complete,
                "the ledger says more than {MAX_SPENT_PREFIX_ANSWER} spent nullifiers share prefix {prefix}, more than its totals ({live} live spends) allow; not asking with a longer prefix, which would say more about this wallet's tokens"
            );
            for spent in page.spent {
                // Only what was asked: an answer outside the prefix is ignored, not trusted.
                if prefix.matches(&spent.nullifier) && members.contains(&spent.nullifier) {
                    found.insert(spent.nullifier, spent);
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_grow_with_the_spent_set() {
        assert_eq!(prefix_len_for(0), 1);
        assert_eq!(prefix_len_for(256 * TARGET_PER_PREFIX), 1);
        assert_eq!(prefix_len_for(256 * TARGET_PER_PREFIX + 256), 2);
        assert_eq!(prefix_len_for(10_000_000), 2);
        assert_eq!(prefix_len_for(u64::MAX), MAX_WALLET_PREFIX_BYTES);
    }
}
