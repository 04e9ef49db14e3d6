//! The codec's properties on in-memory segments: round trip, torn tails at every offset,
//! flipped bits, damage next to values that embed encoded records (nothing but written
//! records is ever read back), format 1 segments, and the strictness of names; and on real
//! files, the smuggling case of the issue and links in place of directories.

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

/// A segment file holding `records` as a [`SegmentWriter`] writes it (under a random key),
/// and where each record starts.
fn segment_of(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let key = record::SegmentKey::random().expect("random key");
    let mut bytes = segment::keyed_segment_header(&key).to_vec();
    let mut offsets = Vec::new();
    for record in records {
        offsets.push(bytes.len());
        record
            .borrowed()
            .encode_keyed(&key, &mut bytes)
            .expect("record within limits");
    }
    (bytes, offsets)
}

/// A format 1 segment holding `records` (format 1 is read, never written, by this code).
fn v1_segment_of(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = b"TIDESEG\0".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut offsets = Vec::new();
    for record in records {
        offsets.push(bytes.len());
        let value = record.value.as_deref().unwrap_or_default();
        let mut header = [0u8; 48];
        header[0..4].copy_from_slice(&[b'T', b'C', b'R', 0xA5]);
        let body_crc = crc32c::crc32c_append(crc32c::crc32c(&record.key), value);
        header[8..12].copy_from_slice(&body_crc.to_le_bytes());
        let body_len = (record.key.len() + value.len()) as u32;
        header[12..16].copy_from_slice(&body_len.to_le_bytes());
        header[16..20].copy_from_slice(&(record.key.len() as u32).to_le_bytes());
        header[20] = u8::from(record.value.is_none());
        header[21] = u8::from(record.expiry_unix_nanos.is_some());
        header[24..32].copy_from_slice(&record.version.hlc.to_le_bytes());
        header[32..40].copy_from_slice(&record.version.node.to_le_bytes());
        header[40..48].copy_from_slice(&record.expiry_unix_nanos.unwrap_or(0).to_le_bytes());
        let header_crc = crc32c::crc32c(&header[8..]);
        header[4..8].copy_from_slice(&header_crc.to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&record.key);
        bytes.extend_from_slice(value);
    }
    (bytes, offsets)
}

/// How the bytes a client puts in a value imitate records: encoded as anyone can (the public
/// key), under some other segment's key, in format 1, or as a whole segment.
#[derive(Debug, Clone, Copy)]
enum Imitation {
    Public,
    OtherKey,
    FormatOne,
    WholeSegment,
}

/// A record whose value embeds encoded records (of its own key and of others, one or several
/// back to back) between random bytes: what a hostile client can store.
fn hostile_record_strategy() -> impl Strategy<Value = Record> {
    (
        record_strategy(),
        prop::collection::vec(record_strategy(), 1..4),
        prop::sample::select(vec![
            Imitation::Public,
            Imitation::OtherKey,
            Imitation::FormatOne,
            Imitation::WholeSegment,
        ]),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(
            |(mut outer, mut inner, imitation, same_key, before, after)| {
                if same_key {
                    inner[0].key = outer.key.clone();
                }
                let mut value = before;
                match imitation {
                    Imitation::Public => {
                        for record in &inner {
                            record.borrowed().encode(&mut value).expect("within limits");
                        }
                    }
                    Imitation::OtherKey => {
                        let key = record::SegmentKey::random().expect("random key");
                        for record in &inner {
                            record
                                .borrowed()
                                .encode_keyed(&key, &mut value)
                                .expect("within limits");
                        }
                    }
                    Imitation::FormatOne => {
                        let (segment, _) = v1_segment_of(&inner);
                        value.extend_from_slice(&segment[16..]);
                    }
                    Imitation::WholeSegment => {
                        value.extend_from_slice(&segment::segment_header());
                        for record in &inner {
                            record.borrowed().encode(&mut value).expect("within limits");
                        }
                    }
                }
                value.extend_from_slice(&after);
                outer.value = Some(value);
                outer
            },
        )
}

/// What happens to the bytes of a segment after its header.
#[derive(Debug, Clone)]
enum Damage {
    /// One bit flipped.
    Flip(prop::sample::Index, u8),
    /// The file cut short.
    Truncate(prop::sample::Index),
    /// A range overwritten with other bytes.
    Overwrite(prop::sample::Index, Vec<u8>),
    /// A range zeroed (a sector that never reached the disk).
    Zero(prop::sample::Index, usize),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(at, bytes)| Damage::Overwrite(at, bytes)),
        (any::<prop::sample::Index>(), 1usize..600).prop_map(|(at, len)| Damage::Zero(at, len)),
    ]
}

/// Applies `damage` to `bytes` after the first `header` bytes; returns the damaged range
/// (a truncation damages everything from the cut).
fn apply(damage: &Damage, bytes: &mut Vec<u8>, header: usize) -> std::ops::Range<usize> {
    let span = bytes.len() - header;
    match damage {
        Damage::Flip(at, bit) => {
            let at = header + at.index(span);
            bytes[at] ^= 1 << bit;
            at..at + 1
        }
        Damage::Truncate(at) => {
            let at = header + at.index(span);
            let end = bytes.len();
            bytes.truncate(at);
            at..end
        }
        Damage::Overwrite(at, with) => {
            let at = header + at.index(span);
            let end = (at + with.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&with[..end - at]);
            at..end
        }
        Damage::Zero(at, len) => {
            let at = header + at.index(span);
            let end = (at + len).min(bytes.len());
            bytes[at..end].fill(0);
            at..end
        }
    }
}

/// Checks that every record decoded is one of `records`, read where it was written, and that
/// the items tile the file (of `len` bytes) after its header of `header` bytes in order.
/// Returns the indexes of the records read.
fn check_only_written(
    items: &[Decoded],
    records: &[Record],
    offsets: &[usize],
    header: usize,
    len: usize,
) -> Result<Vec<usize>, TestCaseError> {
    // Format 1 records have 48-byte headers, format 2 ones 52.
    let record_header = if header == 16 { 48 } else { RECORD_HEADER_LEN };
    let mut read = Vec::new();
    let mut at = header as u64;
    for item in items {
        let (offset, next) = match item {
            Decoded::Record { offset, record } => {
                let index = offsets.iter().position(|o| *o as u64 == *offset);
                prop_assert!(
                    index.is_some_and(|i| records[i] == *record),
                    "record at {offset} was not written there: {record:?}"
                );
                let index = index.unwrap_or_default();
                read.push(index);
                let body = record.borrowed().encoded_len() - RECORD_HEADER_LEN;
                (*offset, offset + (record_header + body) as u64)
            }
            Decoded::Corrupt { offset, len } | Decoded::TornTail { offset, len } => {
                prop_assert!(*len > 0);
                (*offset, offset + len)
            }
        };
        prop_assert_eq!(offset, at, "items tile the file");
        at = next;
    }
    prop_assert_eq!(at, len as u64, "items cover the file");
    let torn = items
        .iter()
        .position(|item| matches!(item, Decoded::TornTail { .. }));
    prop_assert!(
        torn.is_none_or(|i| i == items.len() - 1),
        "a torn tail is last"
    );
    Ok(read)
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

    /// Values that embed encoded records, then one damage anywhere after the segment header:
    /// every record read is a record written, at the offset it was written at; and every
    /// record whose bytes the damage did not touch is read, also the ones after it.
    #[test]
    fn damage_never_yields_a_record_that_was_not_written(
        records in prop::collection::vec(
            prop_oneof![record_strategy(), hostile_record_strategy()], 1..8),
        damage in damage_strategy(),
    ) {
        let (mut bytes, offsets) = segment_of(&records);
        let damaged = apply(&damage, &mut bytes, SEGMENT_HEADER_LEN);
        let items = decode(&bytes);
        let read = check_only_written(&items, &records, &offsets, SEGMENT_HEADER_LEN, bytes.len())?;
        for (i, start) in offsets.iter().enumerate() {
            let end = offsets.get(i + 1).copied().unwrap_or(bytes.len().max(damaged.end));
            let untouched = end <= damaged.start || *start >= damaged.end;
            prop_assert!(!untouched || read.contains(&i), "record {i} untouched but not read: {items:?}");
        }
    }

    /// Format 1 segments (written before format 2) with the same hostile values and damage:
    /// never a record that was not written; every record before the damage is read.
    #[test]
    fn format_one_damage_never_yields_a_record_that_was_not_written(
        records in prop::collection::vec(
            prop_oneof![record_strategy(), hostile_record_strategy()], 1..8),
        damage in damage_strategy(),
    ) {
        let (mut bytes, offsets) = v1_segment_of(&records);
        let damaged = apply(&damage, &mut bytes, 16);
        let items = decode(&bytes);
        let read = check_only_written(&items, &records, &offsets, 16, bytes.len())?;
        for i in 0..offsets.len() {
            let end = offsets.get(i + 1).copied().unwrap_or(bytes.len().max(damaged.end));
            prop_assert!(end > damaged.start || read.contains(&i), "record {i} before the damage not read");
        }
    }

    /// Any bytes after a valid header (dense with record magic), and any bytes at all: the
    /// decoder never panics, its items tile the file, and it ends.
    #[test]
    fn any_bytes_decode_without_panicking(
        chunks in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            Just(vec![b'T', b'C', b'R', 0xA5]),
        ], 0..40),
        with_header in prop::sample::select(vec![0u32, 1, 2]),
    ) {
        let mut bytes = match with_header {
            1 => v1_segment_of(&[]).0,
            2 => segment_of(&[]).0,
            _ => Vec::new(),
        };
        bytes.extend(chunks.concat());
        if let Ok(decoder) = SegmentDecoder::new(&bytes) {
            let mut at = decoder.position() as u64;
            for item in decoder {
                let (offset, len) = match &item {
                    // Format 1 record headers are 4 bytes shorter.
                    Decoded::Record { offset, record } => (
                        *offset,
                        (record.borrowed().encoded_len() - if with_header == 1 { 4 } else { 0 }) as u64,
                    ),
                    Decoded::Corrupt { offset, len } | Decoded::TornTail { offset, len } => (*offset, *len),
                };
                prop_assert_eq!(offset, at);
                prop_assert!(len > 0);
                at = offset + len;
            }
        }
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

/// An intact format 1 segment is read whole; damage to a format 2 segment header refuses the
/// whole segment (its key cannot be trusted), and a newer version is refused as such.
#[test]
fn format_one_is_read_and_damaged_headers_are_refused() {
    let records: Vec<Record> = (0..3u8)
        .map(|i| Record {
            key: vec![b'k', i],
            version: Version {
                hlc: u64::from(i),
                node: 7,
            },
            expiry_unix_nanos: Some(i64::from(i) * 1000),
            value: (i != 1).then(|| vec![i; 10]),
        })
        .collect();
    let (bytes, _) = v1_segment_of(&records);
    assert_eq!(records_of(&decode(&bytes)), records);

    let (bytes, _) = segment_of(&records);
    for at in 0..SEGMENT_HEADER_LEN {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        let refused = SegmentDecoder::new(&damaged).err();
        assert!(
            matches!(
                refused,
                Some(SegmentError::BadMagic | SegmentError::HeaderChecksum)
            ),
            "byte {at}: {refused:?}"
        );
    }
    let mut newer = bytes[..SEGMENT_HEADER_LEN].to_vec();
    newer[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c::crc32c(&newer[..28]);
    newer[28..32].copy_from_slice(&crc.to_le_bytes());
    let refused = SegmentDecoder::new(&newer).err();
    assert_eq!(refused, Some(SegmentError::UnsupportedVersion(3)));
    assert!(
        refused
            .expect("refused")
            .to_string()
            .contains("upgrade this binary"),
        "says what to do"
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

/// The smuggling case on real files: a client's value holding a perfectly encoded
/// record (the public encoding anyone can produce), then one flipped bit in the header of the
/// record that carries it. The embedded record must never be read; the record after the
/// damaged one must be.
#[test]
fn a_record_embedded_in_a_value_is_never_read_after_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ClusterRoot::new(
        dir.path(),
        &ObjectName::new("default").expect("name"),
        &ObjectName::new("demo").expect("name"),
    );
    let node = ObjectName::new("node-a").expect("name");
    let smuggled = Record {
        key: b"smuggled".to_vec(),
        version: Version { hlc: 1, node: 0 },
        expiry_unix_nanos: None,
        value: Some(b"never written by a client".to_vec()),
    };
    let mut value = b"harmless prefix ".to_vec();
    smuggled
        .borrowed()
        .encode(&mut value)
        .expect("within limits");
    let outer = RecordRef {
        key: b"outer",
        version: Version { hlc: 5, node: 0 },
        expiry_unix_nanos: None,
        value: Some(&value),
    };
    let after = RecordRef {
        key: b"after",
        version: Version { hlc: 6, node: 0 },
        expiry_unix_nanos: None,
        value: Some(b"intact"),
    };
    let mut writer = SegmentWriter::open(&root, Area::Persistent, &node, WriterOptions::default())
        .expect("writer");
    let at = writer.append(outer).expect("append") as usize;
    writer.append(after).expect("append");
    writer.sync_data().expect("sync");
    let path = writer.segment_path();
    drop(writer);
    let written = std::fs::read(&path).expect("read");
    // Every bit of the header after the magic: the length, the checksums, the fields.
    for bit in 32..RECORD_HEADER_LEN * 8 {
        let mut damaged = written.clone();
        damaged[at + bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &damaged).expect("write");
        let reader = SegmentReader::open(&path).expect("a readable segment");
        let items: Vec<Decoded> = reader.records().expect("header").collect();
        let keys: Vec<&[u8]> = items
            .iter()
            .filter_map(|item| match item {
                Decoded::Record { record, .. } => Some(record.key.as_slice()),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [&b"after"[..]], "bit {bit} of the header flipped");
    }
}

/// A bucket directory that is a symbolic link to a directory outside the data dir: the
/// writer refuses, names the link, and creates nothing in the link's target.
#[cfg(unix)]
#[test]
fn a_symlinked_bucket_directory_is_refused_and_nothing_is_created_outside() {
    let data = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let root = ClusterRoot::new(
        data.path(),
        &ObjectName::new("default").expect("name"),
        &ObjectName::new("demo").expect("name"),
    );
    let bucket = Area::from_dir_name("20261123T140500Z").expect("bucket");
    std::fs::create_dir_all(root.path()).expect("root");
    std::os::unix::fs::symlink(outside.path(), root.area_dir(bucket)).expect("link");
    let node = ObjectName::new("p1").expect("name");
    let refused = SegmentWriter::open(&root, bucket, &node, WriterOptions::default())
        .expect_err("a link in place of the bucket directory");
    assert!(
        matches!(&refused, DiskError::NotADirectory { path } if *path == root.area_dir(bucket)),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("20261123T140500Z"),
        "the message names the link: {refused}"
    );
    let created: Vec<_> = std::fs::read_dir(outside.path()).expect("list").collect();
    assert!(
        created.is_empty(),
        "created outside the data dir: {created:?}"
    );
    // A link in place of the node directory is refused the same way.
    std::fs::remove_file(root.area_dir(bucket)).expect("unlink");
    std::fs::create_dir(root.area_dir(bucket)).expect("bucket");
    std::os::unix::fs::symlink(outside.path(), root.node_dir(bucket, &node)).expect("link");
    let refused = SegmentWriter::open(&root, bucket, &node, WriterOptions::default())
        .expect_err("a link in place of the node directory");
    assert!(
        matches!(&refused, DiskError::NotADirectory { path } if *path == root.node_dir(bucket, &node)),
        "{refused:?}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).expect("list").count(), 0);
    // A link where the next segment goes is not written through either.
    std::fs::remove_file(root.node_dir(bucket, &node)).expect("unlink");
    std::fs::create_dir(root.node_dir(bucket, &node)).expect("node");
    let target = outside.path().join("target");
    std::fs::write(&target, b"untouched").expect("target");
    let segment = root.node_dir(bucket, &node).join(SegmentId(0).file_name());
    std::os::unix::fs::symlink(&target, &segment).expect("link");
    let refused = SegmentWriter::open(&root, bucket, &node, WriterOptions::default())
        .expect_err("a link in place of the segment");
    assert!(
        refused.to_string().contains(&segment.display().to_string()),
        "{refused}"
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"untouched");
}
