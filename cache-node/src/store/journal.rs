//! The store's side of the journal protocol (see [`crate::base::journal`]): attaching the
//! journal, and undoing changes it could not make durable.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use super::shard::NewEntry;
use crate::base::journal::{Change, Journal, Previous, Undo};
use crate::base::version::Version;

impl Store {
    /// Attaches the journal every later write and delete goes through. Only the first call
    /// has an effect (returns `false` after that): a store has one journal for its lifetime.
    pub fn attach_journal(&self, journal: Arc<dyn Journal>) -> bool {
        self.journal.set(journal).is_ok()
    }

    /// See [`Undo::revert`]. A restored entry that has expired meanwhile is dropped instead;
    /// its bytes are charged without evicting, as they were before the change.
    fn revert_change(&self, change: &Change, restore: Option<&Previous>) {
        let key = &change.key[..];
        let hash = self.hasher.hash_one(key);
        let now = self.clock.now();
        let mut shard = self.lock(self.shard_of(hash));
        // A delete left a tombstone at its version (replicated stores) or nothing.
        let applies = match shard.peek(hash, key) {
            Some(entry) => entry.version == change.version && entry.tombstone == change.is_delete(),
            None => change.is_delete(),
        };
        if !applies {
            return;
        }
        let before = shard.footprint();
        match restore.filter(|p| p.expires_at.is_none_or(|expiry| expiry > now)) {
            Some(previous) => {
                // Charged without evicting, as it was before the change: the bytes are taken
                // even past the capacity.
                let new = NewEntry {
                    key,
                    value: &previous.value,
                    hash,
                    version: previous.version,
                    expires_at: previous.expires_at,
                    bucket: previous.bucket,
                    tombstone: false,
                };
                let cost = shard.cost(&new).unwrap_or(0);
                self.used.fetch_add(cost, Ordering::Relaxed);
                let restored = shard.upsert(&new);
                self.settle(before, shard.footprint(), cost);
                if restored.is_err() {
                    let before = shard.footprint();
                    shard.remove(hash, key);
                    self.settle(before, shard.footprint(), 0);
                }
            }
            None => {
                shard.remove(hash, key);
                self.settle(before, shard.footprint(), 0);
            }
        }
    }

    /// See [`Undo::settle_delete`].
    fn settle_deleted(&self, key: &[u8], tombstone: Version) {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.lock(self.shard_of(hash));
        if shard
            .peek(hash, key)
            .is_some_and(|entry| !entry.tombstone && entry.version < tombstone)
        {
            let before = shard.footprint();
            shard.remove(hash, key);
            self.settle(before, shard.footprint(), 0);
        }
    }
}
impl Undo for Store {
    fn revert(&self, change: &Change, restore: Option<&Previous>) {
        self.revert_change(change, restore);
    }

    fn settle_delete(&self, key: &[u8], tombstone: Version) {
        self.settle_deleted(key, tombstone);
    }
}
