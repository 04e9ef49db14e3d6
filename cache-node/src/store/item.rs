//! How one entry is laid out inside a chunk: a short header, then the key, then the value.
//!
//! The header is what every read, write and sweep needs about the entry, packed because it is
//! paid once per entry (about 11 bytes for a 16-byte key with an expiry, against 116 bytes of
//! payload in a typical cache entry):
//!
//! | field | bytes | |
//! |---|---|---|
//! | flags | 1 | tombstone, has expiry, node tag inline |
//! | key length | LEB128 | |
//! | value length | LEB128 | |
//! | clock value of the version | LEB128 | zigzag difference from the chunk's first item's |
//! | node tag of the version | 1 or 8 | an index into the shard's node tags, or inline |
//! | expiry | LEB128 | milliseconds before the chunk's bucket fire time, if it expires |
//!
//! The expiry is stored relative to the bucket because contract 1 files every entry under
//! the first fire time at or after its expiry, so the difference is at most one schedule
//! period: three bytes for a schedule firing every few minutes, instead of eight. The
//! version's clock value is stored relative to the chunk's first one for the same reason:
//! a chunk fills within seconds, so about four bytes instead of eight.
//!
//! Nothing in an item is ever changed in place: an overwrite appends a new item and the old
//! one becomes a hole (see `chunk`). That is what lets a frozen chunk be shared with readers.

use crate::base::time::Timestamp;
use crate::base::version::Version;

const TOMBSTONE: u8 = 1;
const EXPIRES: u8 = 1 << 1;
const NODE_INLINE: u8 = 1 << 2;

/// The longest header: flags, two 10-byte lengths (the value's is at most 5 in practice),
/// a 10-byte clock value, an inline node tag and a 10-byte expiry.
pub(super) const MAX_HEADER: usize = 1 + 10 + 10 + 10 + 8 + 10;

/// What an item says about its entry, decoded from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Item {
    /// Where the key starts, from the item's start.
    pub(super) key_start: usize,
    pub(super) key_len: usize,
    pub(super) value_len: usize,
    pub(super) version: Version,
    /// The exact expiry.
    pub(super) expires_at: Option<Timestamp>,
    pub(super) tombstone: bool,
}

impl Item {
    /// Bytes the whole item takes in its chunk.
    pub(super) fn len(&self) -> usize {
        self.key_start + self.key_len + self.value_len
    }

    /// Where the value starts, from the item's start.
    pub(super) fn value_start(&self) -> usize {
        self.key_start + self.key_len
    }
}

/// The node tags a shard's items refer to by index: a cluster has a handful of nodes, so one
/// byte per item instead of eight. Past 255 distinct tags, new ones are stored inline.
#[derive(Debug, Default)]
pub(super) struct NodeTags {
    tags: Vec<u64>,
}

impl NodeTags {
    fn index_of(&mut self, tag: u64) -> Option<u8> {
        if let Some(index) = self.tags.iter().position(|t| *t == tag) {
            return u8::try_from(index).ok();
        }
        let index = u8::try_from(self.tags.len()).ok()?;
        self.tags.push(tag);
        Some(index)
    }

    fn tag(&self, index: u8) -> Option<u64> {
        self.tags.get(usize::from(index)).copied()
    }
}

/// What to write for one entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewItem<'a> {
    pub(super) key: &'a [u8],
    pub(super) value: &'a [u8],
    pub(super) version: Version,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) tombstone: bool,
}

/// The bytes `item` takes when encoded, at most: the node tag is counted inline, since
/// whether it fits in the shard's table is only known when [`encode`] assigns its index.
pub(super) fn encoded_len(item: &NewItem<'_>, bucket: Option<Timestamp>, base: u64) -> usize {
    let mut len = 1 + leb_len(item.key.len() as u64) + leb_len(item.value.len() as u64);
    len += leb_len(zigzag(item.version.get(), base)) + 8;
    if let Some(expiry) = item.expires_at {
        len += leb_len(expiry_delta(expiry, bucket));
    }
    len + item.key.len() + item.value.len()
}

/// Appends `item`, filed under `bucket`, to `out`, a chunk whose clock values are stored
/// relative to `base`.
pub(super) fn encode(
    item: &NewItem<'_>,
    bucket: Option<Timestamp>,
    base: u64,
    tags: &mut NodeTags,
    out: &mut impl bytes::BufMut,
) {
    let node = item.version.node();
    let node_index = tags.index_of(node);
    let mut flags = 0;
    if item.tombstone {
        flags |= TOMBSTONE;
    }
    if item.expires_at.is_some() {
        flags |= EXPIRES;
    }
    if node_index.is_none() {
        flags |= NODE_INLINE;
    }
    out.put_u8(flags);
    put_leb(out, item.key.len() as u64);
    put_leb(out, item.value.len() as u64);
    put_leb(out, zigzag(item.version.get(), base));
    match node_index {
        Some(index) => out.put_u8(index),
        None => out.put_u64_le(node),
    }
    if let Some(expiry) = item.expires_at {
        put_leb(out, expiry_delta(expiry, bucket));
    }
    out.put_slice(item.key);
    out.put_slice(item.value);
}

/// Decodes the item at the start of `bytes`, filed under `bucket` in a chunk with clock
/// values relative to `base`. `None` if the bytes do not hold a whole item: only the store
/// writes chunks, so that is a bug, and callers treat the item as absent rather than panic
/// under a shard lock.
pub(super) fn decode(
    bytes: &[u8],
    bucket: Option<Timestamp>,
    base: u64,
    tags: &NodeTags,
) -> Option<Item> {
    let flags = *bytes.first()?;
    let mut at = 1;
    let key_len = usize::try_from(get_leb(bytes, &mut at)?).ok()?;
    let value_len = usize::try_from(get_leb(bytes, &mut at)?).ok()?;
    let hlc = unzigzag(get_leb(bytes, &mut at)?, base);
    let node = if flags & NODE_INLINE != 0 {
        let node = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        node
    } else {
        let index = *bytes.get(at)?;
        at += 1;
        tags.tag(index)?
    };
    let expires_at = if flags & EXPIRES != 0 {
        let delta = get_leb(bytes, &mut at)?;
        let fire = bucket?.as_millis();
        Some(Timestamp::from_millis(
            fire.checked_sub(i64::try_from(delta).ok()?)?,
        ))
    } else {
        None
    };
    let item = Item {
        key_start: at,
        key_len,
        value_len,
        version: Version::with_node(hlc, node),
        expires_at,
        tombstone: flags & TOMBSTONE != 0,
    };
    (item.len() <= bytes.len()).then_some(item)
}

/// Milliseconds from the expiry to its bucket's fire time (0 without a bucket: the store
/// never keeps an expiring entry outside one).
fn expiry_delta(expiry: Timestamp, bucket: Option<Timestamp>) -> u64 {
    bucket.map_or(0, |fire| {
        u64::try_from(fire.as_millis().saturating_sub(expiry.as_millis())).unwrap_or(0)
    })
}

/// `value - base` as an unsigned number, small when either is close to the other.
fn zigzag(value: u64, base: u64) -> u64 {
    let difference = value.wrapping_sub(base) as i64;
    ((difference << 1) ^ (difference >> 63)) as u64
}

fn unzigzag(encoded: u64, base: u64) -> u64 {
    let difference = ((encoded >> 1) as i64) ^ -((encoded & 1) as i64);
    base.wrapping_add(difference as u64)
}

fn leb_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn put_leb(out: &mut impl bytes::BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn get_leb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0_u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever is encoded decodes to the same entry, the encoded length is what
        /// `encoded_len` promised (or less, when the node tag went into the table), and items
        /// follow each other in a buffer without separators.
        #[test]
        fn items_round_trip(
            entries in proptest::collection::vec((
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(any::<u8>(), 0..3000),
                any::<u64>(),
                prop_oneof![Just(0_u64), 1_u64..4, any::<u64>()],
                proptest::option::of(0_i64..10_000_000),
                any::<bool>(),
            ), 1..20),
            tag_count in 0_usize..300,
            base in prop_oneof![Just(0_u64), any::<u64>()],
        ) {
            let mut tags = NodeTags::default();
            for tag in 0..tag_count as u64 {
                tags.index_of(tag + 1_000);
            }
            let bucket = Timestamp::from_millis(1_795_046_460_000);
            let mut buffer = Vec::new();
            let mut expected = Vec::new();
            for (key, value, hlc, node, before, tombstone) in &entries {
                let item = NewItem {
                    key,
                    value,
                    version: Version::with_node(*hlc, *node),
                    expires_at: before.map(|b| Timestamp::from_millis(bucket.as_millis() - b)),
                    tombstone: *tombstone,
                };
                let start = buffer.len();
                let bound = encoded_len(&item, Some(bucket), base);
                encode(&item, Some(bucket), base, &mut tags, &mut buffer);
                prop_assert!(buffer.len() - start <= bound);
                expected.push((start, item.version, item.expires_at, *tombstone, key, value));
            }
            for (start, version, expires_at, tombstone, key, value) in expected {
                let item = decode(&buffer[start..], Some(bucket), base, &tags).expect("decodes");
                prop_assert_eq!(item.version, version);
                prop_assert_eq!(item.expires_at, expires_at);
                prop_assert_eq!(item.tombstone, tombstone);
                let at = start + item.key_start;
                prop_assert_eq!(&buffer[at..at + item.key_len], &key[..]);
                let at = start + item.value_start();
                prop_assert_eq!(&buffer[at..at + item.value_len], &value[..]);
            }
        }

        /// A truncated item is reported as not decodable, never read past its end.
        #[test]
        fn a_cut_item_does_not_decode(len in 0_usize..40, cut in 1_usize..40) {
            let mut tags = NodeTags::default();
            let key = vec![7_u8; len];
            let item = NewItem {
                key: &key,
                value: b"value",
                version: Version::new(5),
                expires_at: None,
                tombstone: false,
            };
            let mut buffer = Vec::new();
            encode(&item, None, 3, &mut tags, &mut buffer);
            let cut = cut.min(buffer.len());
            prop_assert!(decode(&buffer[..buffer.len() - cut], None, 3, &tags).is_none());
        }
    }

    #[test]
    fn a_typical_header_is_eleven_bytes() {
        let mut tags = NodeTags::default();
        let bucket = Timestamp::from_millis(1_795_046_460_000);
        // Written a second after the chunk's first item.
        let hlc = 1_795_046_400_000_u64 << 16;
        let item = NewItem {
            key: &[b'k'; 16],
            value: &[b'v'; 100],
            version: Version::new(hlc + (1_000 << 16)),
            expires_at: Some(Timestamp::from_millis(bucket.as_millis() - 59_000)),
            tombstone: false,
        };
        let mut buffer = Vec::new();
        encode(&item, Some(bucket), hlc, &mut tags, &mut buffer);
        assert_eq!(buffer.len() - 116, 11);
    }
}
