//! Placement in partitioned mode: which members of a cluster own which keys. cache-node routes
//! and replicates by it, and the operator reports it in the status, so both compute it with
//! this module from the same membership (the pods' names and zones).
//!
//! - `slot`: the Redis Cluster hash slot of a key (CRC16 of the key or its `{hash tag}`).
//! - `assign`: [`Assignment`], the owners of each partition (a run of
//!   [`SLOTS_PER_PARTITION`] slots), zone-distinct, balanced, and moved little by a
//!   membership change.
//!
//! Slots are grouped into partitions because placement, digests and moves work per
//! partition: 1024 of them keep `CLUSTER SLOTS` at most 1024 ranges long and still spread
//! load within one partition in a thousand per owner.

pub(crate) mod assign;
mod slot;

#[cfg(test)]
mod tests;

pub use assign::{Assignment, Member};
pub use slot::{SLOTS, hash_tag, slot_of};

/// Partitions of the slot space.
pub const PARTITIONS: usize = 1024;

/// Consecutive slots per partition.
pub const SLOTS_PER_PARTITION: u16 = 16;

/// The partition of `slot`.
pub fn partition_of_slot(slot: u16) -> usize {
    usize::from(slot / SLOTS_PER_PARTITION)
}

/// The partition of `key`.
pub fn partition_of(key: &[u8]) -> usize {
    partition_of_slot(slot_of(key))
}
