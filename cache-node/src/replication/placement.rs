//! Placement: which nodes hold a key. Today every node holds every key (full replication),
//! so that any pod can answer any read from memory. The transport, acknowledgements and
//! anti-entropy ask this module and nothing else, so that a partitioned mode (R owners per
//! key, chosen by rendezvous hashing across zones) replaces one function, not the transport.

use super::membership::Peer;

/// Which nodes hold a key (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every node holds every key.
    #[default]
    Full,
    /// Each key has `replication_factor` owners, chosen by its hash slot.
    Partitioned {
        /// Owners per key.
        replication_factor: usize,
    },
}

/// How keys are placed on nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Every node holds every key.
    #[default]
    Full,
}

impl Placement {
    /// The peers (other than this node) that must receive a write of `key`.
    pub fn peers_for<'a>(self, _key: &[u8], peers: &'a [Peer]) -> &'a [Peer] {
        match self {
            Placement::Full => peers,
        }
    }

    /// How many replicas hold `key` (this node included) in a cluster of this node plus
    /// `peers`: what acknowledgement levels count against.
    pub fn replicas_for(self, key: &[u8], peers: &[Peer]) -> usize {
        self.peers_for(key, peers).len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_placement_puts_every_key_on_every_node() {
        let peers = vec![Peer::new("a:1"), Peer::new("b:1")];
        assert_eq!(Placement::Full.peers_for(b"k", &peers), &peers[..]);
        assert_eq!(Placement::Full.replicas_for(b"k", &peers), 3);
        assert_eq!(Placement::Full.replicas_for(b"k", &[]), 1);
    }
}
