//! The capacity catalog: the kinds of capacity a token buys and their prices in credits.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest capacity-kind name: short enough that a grant code stays within 64 characters.
pub const MAX_KIND_LEN: usize = 24;

/// A kind of capacity, such as `queue` or `chunk-1m`: 1 to 24 characters of `a-z`, `0-9` and
/// `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CapacityKind(String);

/// Why a capacity-kind name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid capacity kind {name:?}: use 1 to {MAX_KIND_LEN} characters of a-z, 0-9 and '-', not starting with '-'"
)]
pub struct KindError {
    /// The refused name, cut to a printable length.
    pub name: String,
}

impl CapacityKind {
    /// Checks and wraps a kind name.
    pub fn new(name: &str) -> Result<Self, KindError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_KIND_LEN
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(KindError {
                name: name.chars().take(2 * MAX_KIND_LEN).collect(),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CapacityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CapacityKind {
    type Err = KindError;
    fn from_str(s: &str) -> Result<Self, KindError> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for CapacityKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&name).map_err(serde::de::Error::custom)
    }
}

/// One catalog line: a kind, its price, and what it buys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// The capacity kind.
    pub kind: CapacityKind,
    /// Price of one token of this kind, in credits (at least 1).
    pub price: u64,
    /// What one token buys, for people.
    pub description: String,
}

/// The consortium's catalog: set in the ledger's genesis, changed only by signed entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The kinds on sale, each once.
    pub entries: Vec<CatalogEntry>,
    /// Settlement fee, in basis points of the value redeemed, that a redeeming operator keeps
    /// from what the issuer owes it (0 = none). Applied by the settlement report.
    #[serde(default)]
    pub settlement_fee_bps: u16,
}

/// Why a catalog was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The catalog lists no kind.
    #[error("the catalog lists no capacity kind")]
    Empty,
    /// A kind appears twice.
    #[error("capacity kind {kind} is listed twice")]
    Duplicate {
        /// The repeated kind.
        kind: CapacityKind,
    },
    /// A kind has price zero.
    #[error("capacity kind {kind} has price 0; prices are at least 1 credit")]
    ZeroPrice {
        /// The free kind.
        kind: CapacityKind,
    },
    /// The fee is above 100%.
    #[error("settlement fee {bps} basis points is above 10000 (100%)")]
    FeeTooHigh {
        /// The fee given.
        bps: u16,
    },
}

impl Catalog {
    /// The starting catalog: one message queue for a month, and one file chunk of each XFTP size
    /// class stored for 48 hours.
    pub fn standard() -> Self {
        let line = |kind: &str, price, description: &str| CatalogEntry {
            kind: CapacityKind(kind.to_owned()),
            price,
            description: description.to_owned(),
        };
        Self {
            entries: vec![
                line("queue", 10, "one message queue for 30 days"),
                line(
                    "chunk-64k",
                    1,
                    "one file chunk up to 64 KiB, stored 48 hours",
                ),
                line(
                    "chunk-256k",
                    2,
                    "one file chunk up to 256 KiB, stored 48 hours",
                ),
                line("chunk-1m", 4, "one file chunk up to 1 MiB, stored 48 hours"),
                line(
                    "chunk-4m",
                    12,
                    "one file chunk up to 4 MiB, stored 48 hours",
                ),
            ],
            settlement_fee_bps: 0,
        }
    }

    /// Checks the catalog's rules: not empty, no duplicate, no free kind, fee at most 100%.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.entries.is_empty() {
            return Err(CatalogError::Empty);
        }
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.price == 0 {
                return Err(CatalogError::ZeroPrice {
                    kind: entry.kind.clone(),
                });
            }
            if self.entries[..i].iter().any(|e| e.kind == entry.kind) {
                return Err(CatalogError::Duplicate {
                    kind: entry.kind.clone(),
                });
            }
        }
        if self.settlement_fee_bps > 10_000 {
            return Err(CatalogError::FeeTooHigh {
                bps: self.settlement_fee_bps,
            });
        }
        Ok(())
    }

    /// The price of one token of `kind`, if the catalog lists it.
    pub fn price(&self, kind: &CapacityKind) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| &e.kind == kind)
            .map(|e| e.price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_checked() {
        for good in ["queue", "chunk-4m", "a", "x0-9"] {
            assert_eq!(CapacityKind::new(good).expect(good).as_str(), good);
        }
        for bad in [
            "",
            "-x",
            "Queue",
            "chunk 1m",
            "a/b",
            "chunk_1m",
            &"a".repeat(25),
        ] {
            assert!(CapacityKind::new(bad).is_err(), "{bad:?} accepted");
        }
        let parsed: Result<CapacityKind, _> = serde_json::from_str("\"Bad Kind\"");
        assert!(parsed.is_err());
    }

    #[test]
    fn standard_catalog_is_valid_and_priced() {
        let catalog = Catalog::standard();
        assert_eq!(catalog.validate(), Ok(()));
        let queue = CapacityKind::new("queue").expect("valid");
        assert_eq!(catalog.price(&queue), Some(10));
        assert_eq!(
            catalog.price(&CapacityKind::new("nope").expect("valid")),
            None
        );
    }

    #[test]
    fn catalog_rules_are_enforced() {
        let mut dup = Catalog::standard();
        dup.entries.push(dup.entries[0].clone());
        assert!(matches!(
            dup.validate(),
            Err(CatalogError::Duplicate { .. })
        ));
        let mut free = Catalog::standard();
        free.entries[1].price = 0;
        assert!(matches!(
            free.validate(),
            Err(CatalogError::ZeroPrice { .. })
        ));
        let mut fee = Catalog::standard();
        fee.settlement_fee_bps = 10_001;
        assert!(matches!(
            fee.validate(),
            Err(CatalogError::FeeTooHigh { .. })
        ));
        let empty = Catalog {
            entries: vec![],
            settlement_fee_bps: 0,
        };
        assert_eq!(empty.validate(), Err(CatalogError::Empty));
    }
}
