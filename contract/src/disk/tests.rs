//! The codec's properties on in-memory segments: round trip, torn tails at every offset,
//! flipped bits, and the strictness of names.

use proptest::prelude::*;

use super::*;

fn record_strategy() -> impl Strategy<Value = Record> {
    (
        prop::collection::vec(any::<u8>(), 1..40),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(any::<i64>()),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
    )
        .prop_map(|(key, hlc, node, expiry_unix_nanos, value)| Record {
            key,
            version: Version { hlc, node },
            expiry_unix_nanos,
            value,
        })
}

/// A segment file holding `records`, and where each record starts.
fn segment_of(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = segment::segment_header().to_vec();
    let mut offsets = Vec::new();
    for record in records {
        offsets.push(bytes.len());
        record
            .borrowed()
            .encode(&mut bytes)
            .expect("record within limits");
    }
    (bytes, offsets)
}

fn decode(bytes: &[u8]) -> Vec<Decoded> {
    SegmentDecoder::new(bytes).expect("valid header").collect()
}

fn records_of(items: &[Decoded]) -> Vec<Record> {
    items
        .iter()
        .filter_map(|item| match item {
            Decoded::Record { record, .. } => Some(record.clone()),
            _ => None,
        })
        .collect()
}

proptest! {
    #[test]
    fn round_trip(records in prop::collection::vec(record_strategy(), 0..20)) {
        let (bytes, offsets) = segment_of(&records);
        let items = decode(&bytes);
        prop_assert_eq!(items.len(), records.len());
        for ((item, record), offset) in items.iter().zip(&records).zip(&offsets) {
            prop_assert_eq!(item, &Decoded::Record { offset: *offset as u64, record: record.clone() });
        }
    }

    #[test]
    fn last_record_cut_at_every_offset(records in prop::collection::vec(record_strategy(), 1..8)) {
        let (bytes, offsets) = segment_of(&records);
        let last_start = offsets[offsets.len() - 1];
        for cut in last_start..bytes.len() {
            let items = decode(&bytes[..cut]);
            prop_assert_eq!(records_of(&items), &records[..records.len() - 1]);
            let tail = items.last().filter(|_| cut > last_start);
            if let Some(tail) = tail {
                prop_assert_eq!(tail, &Decoded::TornTail {
                    offset: last_start as u64,
                    len: (cut - last_start) as u64,
                });
            }
            let corrupt = items.iter().any(|i| matches!(i, Decoded::Corrupt { .. }));
            prop_assert!(!corrupt, "a torn tail is not corruption");
        }
    }

    #[test]
    fn flipped_bit_rejects_only_that_record(
        records in prop::collection::vec(record_strategy(), 1..8),
        which in any::<prop::sample::Index>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let (mut bytes, offsets) = segment_of(&records);
        let victim = which.index(records.len());
        let start = offsets[victim];
        let end = offsets.get(victim + 1).copied().unwrap_or(bytes.len());
        let bit = bit.index((end - start) * 8);
        bytes[start + bit / 8] ^= 1 << (bit % 8);
        let items = decode(&bytes);
        let mut expected = records.clone();
        expected.remove(victim);
        prop_assert_eq!(records_of(&items), expected);
        let damage = items.iter().filter(|i| !matches!(i, Decoded::Record { .. })).count();
        prop_assert_eq!(damage, 1);
    }

    /// Valid names are single, safe path components; the generator makes valid names and
    /// near misses (dots, slashes, upper case, empty parts) about equally often.
    #[test]
    fn names_are_single_safe_components(name in prop_oneof![
        "[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?){0,3}",
        "[-a-zA-Z0-9./]{0,12}",
        "\\PC{0,300}",
    ]) {
        match ObjectName::new(&name) {
            Ok(valid) => {
                let path = std::path::Path::new(valid.as_str());
                let mut components = path.components();
                prop_assert!(matches!(components.next(), Some(std::path::Component::Normal(_))));
                prop_assert!(components.next().is_none());
                prop_assert!(!valid.as_str().contains(".."));
                prop_assert!(!valid.as_str().contains('/'));
            }
            Err(_) => prop_assert!(
                name.is_empty()
                    || name.len() > 253
                    || name.split('.').any(|label| {
                        label.is_empty()
                            || !label.starts_with(|c: char| c.is_ascii_alphanumeric())
                            || !label.ends_with(|c: char| c.is_ascii_alphanumeric())
                            || !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    }),
                "{name:?} follows every rule but was refused"
            ),
        }
        prop_assert_eq!(SegmentId::from_file_name(&name).map(|id| id.file_name()).is_some(),
            SegmentId::from_file_name(&name).is_some_and(|id| id.file_name() == name));
    }
}

#[test]
fn corrupt_middle_record_is_reported_not_returned() {
    let records: Vec<Record> = (0..3u8)
        .map(|i| Record {
            key: vec![b'k', i],
            version: Version {
                hlc: u64::from(i),
                node: 7,
            },
            expiry_unix_nanos: None,
            value: Some(vec![i; 10]),
        })
        .collect();
    let (mut bytes, offsets) = segment_of(&records);
    bytes[offsets[1] + RECORD_HEADER_LEN + 3] ^= 0x40;
    let items = decode(&bytes);
    assert_eq!(
        items[1],
        Decoded::Corrupt {
            offset: offsets[1] as u64,
            len: (offsets[2] - offsets[1]) as u64
        }
    );
    assert_eq!(records_of(&items), [records[0].clone(), records[2].clone()]);
}

#[test]
fn segment_header_is_checked() {
    let mut bytes = segment::segment_header().to_vec();
    assert_eq!(decode(&bytes), []);
    assert_eq!(
        decode(&bytes[..5]),
        [Decoded::TornTail { offset: 0, len: 5 }]
    );
    assert_eq!(decode(&[0; 40]), [Decoded::TornTail { offset: 0, len: 40 }]);
    bytes[9] = 9;
    assert_eq!(
        SegmentDecoder::new(&bytes).err(),
        Some(SegmentError::HeaderChecksum)
    );
    bytes[0] = b'X';
    assert_eq!(
        SegmentDecoder::new(&bytes).err(),
        Some(SegmentError::BadMagic)
    );
}

#[test]
fn limits_are_enforced_when_encoding() {
    let long_key = vec![b'k'; MAX_KEY_LEN + 1];
    let record = |key: &'static [u8]| RecordRef {
        key,
        version: Version::default(),
        expiry_unix_nanos: None,
        value: None,
    };
    let mut out = Vec::new();
    assert_eq!(record(b"").encode(&mut out), Err(RecordError::EmptyKey));
    let too_long = RecordRef {
        key: &long_key,
        ..record(b"k")
    };
    assert_eq!(
        too_long.encode(&mut out),
        Err(RecordError::KeyTooLong {
            len: MAX_KEY_LEN + 1
        })
    );
    assert!(out.is_empty());
}

#[test]
fn object_names() {
    for good in ["a", "cache-0", "my.cluster-1", "x9"] {
        assert!(ObjectName::new(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "-a",
        "a-",
        "A",
        "a..b",
        "a\0b",
        &"a".repeat(254),
    ] {
        assert!(ObjectName::new(bad).is_err(), "{bad:?}");
    }
    let name = ObjectName::new("cache-0").expect("valid");
    assert_eq!(name.tag(), ObjectName::new("cache-0").expect("valid").tag());
    assert_ne!(name.tag(), ObjectName::new("cache-1").expect("valid").tag());
}

#[test]
fn areas_and_segment_names() {
    assert_eq!(Area::from_dir_name(PERSISTENT_DIR), Some(Area::Persistent));
    assert_eq!(Area::from_dir_name("persistent2"), None);
    let bucket = Area::from_dir_name("20261123T140500Z").expect("a bucket name");
    assert_eq!(bucket.dir_name(), "20261123T140500Z");
    assert_eq!(SegmentId(7).file_name(), "00000000000000000007.seg");
    assert_eq!(
        SegmentId::from_file_name("00000000000000000007.seg"),
        Some(SegmentId(7))
    );
    for bad in [
        "7.seg",
        "0000000000000000000a.seg",
        "00000000000000000007.se",
    ] {
        assert_eq!(SegmentId::from_file_name(bad), None, "{bad}");
    }
    assert_eq!(SegmentId::from_file_name("99999999999999999999.seg"), None);
}
