//! Entry versions: what an `ETag` names, what `If-Match` compares and what replication
//! orders writes by.
//!
//! A version is a hybrid-logical-clock value plus the tag of the node that issued it
//! (contract 4; see `replication::hlc`): wall-clock milliseconds and a counter, so versions
//! grow across restarts and follow every version a node has seen, and the node tag breaks ties
//! the same way on every node. Last writer wins: the larger version is the newer write.

use std::fmt;
use std::str::FromStr;

use tidecache_contract::disk;

/// The version of one write (or delete) of one key. Ordered by clock value, then node tag.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(from = "(u64, u64)", into = "(u64, u64)")]
pub struct Version(disk::Version);

/// A version as the forwarding between nodes carries it: (clock value, node tag).
impl From<(u64, u64)> for Version {
    fn from((hlc, node): (u64, u64)) -> Version {
        Version(disk::Version { hlc, node })
    }
}

impl From<Version> for (u64, u64) {
    fn from(version: Version) -> (u64, u64) {
        (version.0.hlc, version.0.node)
    }
}

impl Version {
    /// A version with clock value `hlc` issued by the node tagged 0 (tests and single nodes
    /// without a `--node-id`).
    pub const fn new(hlc: u64) -> Version {
        Version(disk::Version { hlc, node: 0 })
    }

    /// The version `hlc` issued by the node tagged `node`.
    pub const fn with_node(hlc: u64, node: u64) -> Version {
        Version(disk::Version { hlc, node })
    }

    /// The clock value.
    pub const fn get(self) -> u64 {
        self.0.hlc
    }

    /// The issuing node's tag.
    pub const fn node(self) -> u64 {
        self.0.node
    }

    /// The version as the disk and wire format stores it.
    pub const fn to_disk(self) -> disk::Version {
        self.0
    }
}

impl From<disk::Version> for Version {
    fn from(version: disk::Version) -> Version {
        Version(version)
    }
}

impl fmt::Display for Version {
    /// `<hlc>` for node 0, `<hlc>-<node in hex>` otherwise: opaque to clients, unique per
    /// write across the cluster.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.node {
            0 => write!(f, "{}", self.0.hlc),
            node => write!(f, "{}-{node:x}", self.0.hlc),
        }
    }
}

/// Why a text is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a version (expected an ETag as issued by tidecache)")]
pub struct ParseVersionError(String);

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(text: &str) -> Result<Version, ParseVersionError> {
        let error = || ParseVersionError(text.to_string());
        let (hlc, node) = match text.split_once('-') {
            Some((hlc, node)) => (hlc, Some(node)),
            None => (text, None),
        };
        let decimal = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let hex = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit());
        if !decimal(hlc) || node.is_some_and(|n| !hex(n)) {
            return Err(error());
        }
        let hlc = hlc.parse().map_err(|_| error())?;
        let node = match node {
            Some(node) => u64::from_str_radix(node, 16).map_err(|_| error())?,
            None => 0,
        };
        Ok(Version::with_node(hlc, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_only_from_plain_decimals() {
        assert_eq!("42".parse(), Ok(Version::new(42)));
        assert!("".parse::<Version>().is_err());
        assert!("+42".parse::<Version>().is_err());
        assert!("4 2".parse::<Version>().is_err());
        assert!("99999999999999999999999".parse::<Version>().is_err());
        let replicated = Version::with_node(42, 0xbeef);
        assert_eq!(replicated.to_string(), "42-beef");
        assert_eq!("42-beef".parse(), Ok(replicated));
        assert!("42-".parse::<Version>().is_err());
        assert!("42-xyz".parse::<Version>().is_err());
        assert!(Version::with_node(42, 1) < Version::with_node(42, 2));
        assert!(Version::with_node(42, 9) < Version::new(43));
    }
}
