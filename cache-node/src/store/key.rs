//! Keys as an entry stores them: short keys inside the entry, longer ones in an allocation of
//! their own. Most cache keys are short (ids, hashes, `user:1234`), and inlining them saves
//! an allocation per entry: memory on the allocator's header and rounding, time on every
//! insert and every eviction.

use std::ops::Deref;

use bytes::Bytes;

/// The longest key kept inline; chosen so that the key takes 24 bytes either way.
pub const INLINE_KEY_BYTES: usize = 22;

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StoredKey {
    /// A key of at most [`INLINE_KEY_BYTES`] bytes.
    Inline {
        /// How many bytes of `bytes` are the key.
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    /// A longer key.
    Heap(Box<[u8]>),
}

impl StoredKey {
    /// Stores `key`, reusing its allocation when it is long and the caller's `Bytes` owns it
    /// alone.
    pub(super) fn from_bytes(key: Bytes) -> StoredKey {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(&key);
            StoredKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            StoredKey::Heap(Vec::from(key).into_boxed_slice())
        }
    }

    /// The key as `Bytes`, to hand back to a caller.
    pub(super) fn into_bytes(self) -> Bytes {
        match self {
            StoredKey::Inline { .. } => Bytes::copy_from_slice(&self),
            StoredKey::Heap(bytes) => Bytes::from(bytes),
        }
    }
}

impl Deref for StoredKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Heap(bytes) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_inline_long_keys_on_the_heap() {
        for len in [0, 1, INLINE_KEY_BYTES, INLINE_KEY_BYTES + 1, 1024] {
            let key = Bytes::from(vec![b'k'; len]);
            let stored = StoredKey::from_bytes(key.clone());
            assert_eq!(
                matches!(stored, StoredKey::Inline { .. }),
                len <= INLINE_KEY_BYTES
            );
            assert_eq!(&*stored, &key[..]);
            assert_eq!(stored.into_bytes(), key);
        }
        assert_eq!(std::mem::size_of::<StoredKey>(), 24);
    }
}
