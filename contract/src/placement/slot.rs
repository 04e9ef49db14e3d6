//! Hash slots: the function Redis Cluster uses, so that a cluster-aware Redis client computes
//! the same slot for a key as every node does.

/// Hash slots in a cluster, as in Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys
/// with.
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The part of `key` that is hashed: the text between the first `{` and the first `}` after
/// it, if that text is not empty; otherwise the whole key. Keys that share a hash tag share a
/// slot, which is what lets a multi-key command name several keys (`MSET {user1}.a {user1}.b`).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The hash slot of `key`, `0..SLOTS`.
pub fn slot_of(key: &[u8]) -> u16 {
    CRC16.checksum(hash_tag(key)) & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from Redis' `CLUSTER KEYSLOT` and its cluster specification.
        assert_eq!(CRC16.checksum(b"123456789"), 0x31c3);
        assert_eq!(slot_of(b"foo"), 12_182);
        assert_eq!(slot_of(b"bar"), 5_061);
        assert_eq!(slot_of(b"somekey"), 11_058);
        assert_eq!(slot_of(b""), 0);
    }

    #[test]
    fn hash_tags_follow_the_specification() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no tag"), b"no tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
    }

    proptest! {
        #[test]
        fn keys_with_one_tag_share_a_slot(
            tag in proptest::collection::vec(any::<u8>().prop_filter("no brace", |b| *b != b'}' && *b != b'{'), 1..12),
            a in proptest::collection::vec(any::<u8>().prop_filter("no brace", |b| *b != b'{'), 0..12),
            b in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let key = |suffix: &[u8]| [&a[..], b"{", &tag, b"}", suffix].concat();
            prop_assert_eq!(slot_of(&key(&b)), slot_of(&key(b"x")));
            prop_assert_eq!(slot_of(&key(&b)), slot_of(&tag));
        }

        #[test]
        fn every_key_has_a_slot_in_range(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert!(slot_of(&key) < SLOTS);
        }
    }
}
