//! The store's side of the journal protocol (see [`crate::base::journal`]): attaching the
//! journal, and undoing changes it could not make durable.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use super::entry::{Entry, entry_charge};
use super::key::StoredKey;
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
        match restore.filter(|p| p.expires_at.is_none_or(|expiry| expiry > now)) {
            Some(previous) => {
                let charge = entry_charge(key.len(), previous.value.len());
                let old_charge = shard.peek(hash, key).map_or(0, Entry::charge);
                self.used.fetch_add(charge, Ordering::Relaxed);
                self.used.fetch_sub(old_charge, Ordering::Relaxed);
                let replaced = shard.upsert(NewEntry {
                    key: StoredKey::from_bytes(change.key.clone()),
                    value: previous.value.clone(),
                    hash,
                    version: previous.version,
                    expires_at: previous.expires_at,
                    bucket: previous.bucket,
                    tombstone: false,
                });
                drop(shard);
                if replaced.is_none() {
                    self.entries.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                let removed = shard.remove(hash, key);
                drop(shard);
                if let Some(removed) = removed {
                    self.release(&removed);
                }
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
            && let Some(removed) = shard.remove(hash, key)
        {
            drop(shard);
            self.release(&removed);
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
