//! The segment decoder (`tidecache_contract::disk::SegmentDecoder`), over segments the real
//! [`SegmentWriter`] wrote and the input then damaged, and over raw bytes.
//!
//! The first byte chooses the mode. Odd: the rest is a whole segment file. Even: the rest is
//! read by `arbitrary` as records to write (whose values may embed the exact bytes of earlier
//! records of the same segment, or records never written in the key-less encoding, as a
//! hostile client could send them) and damage to do to the file afterwards (flipped bits, truncation, overwritten,
//! inserted or copied bytes), the way a crash or a bad disk would.
//!
//! Properties, for any bytes: the decoded items tile the file after its header (each starts
//! where the previous one ended, a record spans its encoded length, a torn tail is last and
//! ends the file), and a decoder resumed at a position yields what the first decoder yielded
//! from there. For written segments: undamaged, exactly the records written are read back, in
//! order; damaged, every record read back is one that was written (never one smuggled inside a
//! value), every record none of whose bytes were changed or moved is still read at its offset
//! (also after damage to the records before it; unless bytes were copied within the file),
//! and a header nobody damaged is accepted.

use std::fs;
use std::ops::Range;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use tidecache_contract::disk::{
    Area, ClusterRoot, Decoded, ObjectName, Record, RecordRef, SEGMENT_HEADER_LEN, SegmentDecoder,
    SegmentWriter, Version, WriterOptions,
};

/// One record to write.
#[derive(Debug, Arbitrary)]
struct Written {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    hlc: u64,
    node: u64,
    expiry_unix_nanos: Option<i64>,
    /// Encodings of earlier records to append to the value.
    embed: Vec<Embed>,
}

/// An encoded record a value carries.
#[derive(Debug, Arbitrary)]
enum Embed {
    /// The bytes the writer wrote for an earlier record of this segment (index modulo their
    /// number).
    Written(u8),
    /// A record never written, in the key-less encoding ([`RecordRef::encode`]): what a
    /// client can forge without the segment's secret.
    Forged {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        hlc: u64,
    },
}

/// Damage done to the written file, positions modulo its length.
#[derive(Debug, Arbitrary)]
enum Damage {
    FlipBit { at: u16, bit: u8 },
    Truncate { at: u16 },
    Overwrite { at: u16, bytes: Vec<u8> },
    Insert { at: u16, bytes: Vec<u8> },
    Copy { from: u16, len: u8, to: u16 },
}

#[derive(Debug, Arbitrary)]
struct Scenario {
    records: Vec<Written>,
    damage: Vec<Damage>,
}

/// The check.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        decode(rest);
        return;
    }
    let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    written(&scenario);
}

/// Decodes `bytes` as a whole segment, checks the items tile it and that resuming gives the
/// same items, and returns them (`None` if the header is refused).
fn decode(bytes: &[u8]) -> Option<Vec<Decoded>> {
    let decoder = SegmentDecoder::new(bytes).ok()?;
    let start = decoder.position();
    let items: Vec<Decoded> = decoder.clone().collect();
    let mut expected = start as u64;
    for (index, item) in items.iter().enumerate() {
        let (offset, len) = match item {
            Decoded::Record { offset, record } => (*offset, record.borrowed().encoded_len() as u64),
            Decoded::Corrupt { offset, len } => (*offset, *len),
            Decoded::TornTail { offset, len } => {
                assert_eq!(index + 1, items.len(), "a torn tail is not the last item");
                (*offset, *len)
            }
        };
        assert_eq!(
            offset, expected,
            "item {index} does not start where the last ended"
        );
        assert!(len > 0, "item {index} is empty: {item:?}");
        expected += len;
    }
    assert_eq!(
        expected,
        (bytes.len() as u64).max(start as u64),
        "the items do not end at the end of the file"
    );
    let half = items.len() / 2;
    let mut partial = decoder.clone();
    partial.by_ref().take(half).for_each(drop);
    let resumed: Vec<Decoded> = decoder.resume_at(partial.position()).collect();
    assert_eq!(
        resumed,
        items[half..],
        "resuming at {} differs",
        partial.position()
    );
    Some(items)
}

/// Writes the scenario's records with the real writer, damages the file, and decodes it.
fn written(scenario: &Scenario) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let name = ObjectName::new("fuzz").expect("a valid name");
    let root = ClusterRoot::new(dir.path(), &name, &name);
    let mut writer = SegmentWriter::open(&root, Area::Persistent, &name, WriterOptions::default())
        .expect("the writer opens in a fresh directory");
    let path = writer.segment_path();
    // (offset, encoded length, the record read back should equal)
    let mut records: Vec<(usize, usize, Record)> = Vec::new();
    // The file as last read: only when a value embeds a record written after that.
    let mut file = Vec::new();
    for spec in &scenario.records {
        let mut value = spec.value.clone();
        if let Some(value) = value.as_mut() {
            for embed in &spec.embed {
                embed_into(value, embed, &records, &mut file, &path);
            }
        }
        let key = if spec.key.is_empty() {
            b"k".to_vec()
        } else {
            spec.key.clone()
        };
        let record = Record {
            key,
            version: Version {
                hlc: spec.hlc,
                node: spec.node,
            },
            expiry_unix_nanos: spec.expiry_unix_nanos,
            value,
        };
        let Ok(offset) = writer.append(record.borrowed()) else {
            continue;
        };
        let offset = usize::try_from(offset).expect("a small file");
        records.push((offset, record.borrowed().encoded_len(), record));
    }
    drop(writer);
    let mut bytes = fs::read(&path).expect("the segment is readable");
    let Damaged {
        first: first_damage,
        ranges: damaged,
        shifted_from,
    } = damage(&mut bytes, &scenario.damage);
    let Some(items) = decode(&bytes) else {
        assert!(
            first_damage.is_some_and(|at| at < SEGMENT_HEADER_LEN),
            "the undamaged header of a written segment is refused"
        );
        return;
    };
    let read: Vec<(u64, &Record)> = items
        .iter()
        .filter_map(|item| match item {
            Decoded::Record { offset, record } => Some((*offset, record)),
            _ => None,
        })
        .collect();
    let spans: Vec<(usize, usize)> = records
        .iter()
        .map(|(offset, len, _)| (*offset, *len))
        .collect();
    for (offset, record) in &read {
        assert!(
            records.iter().any(|(_, _, written)| written == *record),
            "a record that was never written was read at {offset}: {record:?}; written \
             (offset, length): {spans:?}; damage: {:?}",
            scenario.damage
        );
    }
    if first_damage.is_none() {
        let written: Vec<(u64, &Record)> = records
            .iter()
            .map(|(offset, _, record)| (*offset as u64, record))
            .collect();
        assert_eq!(read, written, "an undamaged segment reads back differently");
        return;
    }
    // A record none of whose bytes were changed or moved is still read, at its offset,
    // whatever happened to the records around it. Not after bytes of the segment were copied
    // within it: a copied record header verifies, the decoder trusts the length it gives, and
    // skipping that span may skip intact records after it (a known limit, docs/fuzzing.md).
    let copied = scenario
        .damage
        .iter()
        .any(|step| matches!(step, Damage::Copy { .. }));
    if copied {
        return;
    }
    for (offset, len, record) in &records {
        let end = offset + len;
        let touched = damaged
            .iter()
            .any(|range| range.start < end && *offset < range.end);
        if touched || shifted_from.is_some_and(|at| at < end) {
            continue;
        }
        assert!(
            read.contains(&(*offset as u64, record)),
            "the intact record at {offset} (length {len}) was lost; written (offset, \
             length): {spans:?}; damage: {:?}",
            scenario.damage
        );
    }
}

/// Appends the encoding `embed` names to `value`.
fn embed_into(
    value: &mut Vec<u8>,
    embed: &Embed,
    records: &[(usize, usize, Record)],
    file: &mut Vec<u8>,
    path: &Path,
) {
    match embed {
        Embed::Written(index) if !records.is_empty() => {
            let (offset, len, _) = records[usize::from(*index) % records.len()];
            if file.len() < offset + len {
                *file = fs::read(path).expect("the segment is readable");
            }
            value.extend_from_slice(&file[offset..offset + len]);
        }
        Embed::Forged {
            key,
            value: forged,
            hlc,
        } => {
            let record = RecordRef {
                key,
                version: Version { hlc: *hlc, node: 0 },
                expiry_unix_nanos: None,
                value: forged.as_deref(),
            };
            // A record the format cannot hold (an empty key) is simply not embedded.
            let _ = record.encode(value);
        }
        _ => {}
    }
}

/// Where [`damage`] changed the file.
struct Damaged {
    /// The first offset that may differ from what was written.
    first: Option<usize>,
    /// The ranges of bytes changed in place.
    ranges: Vec<Range<usize>>,
    /// The first offset from which bytes were cut off or moved by an insertion.
    shifted_from: Option<usize>,
}

/// Damages `bytes`, and says where.
fn damage(bytes: &mut Vec<u8>, damage: &[Damage]) -> Damaged {
    let mut ranges = Vec::new();
    let mut shifted_from: Option<usize> = None;
    let mut shift = |at: usize| shifted_from = Some(shifted_from.map_or(at, |s| s.min(at)));
    for step in damage {
        let len = bytes.len();
        let pos = |at: u16| usize::from(at) % (len + 1);
        match step {
            Damage::FlipBit { at, bit } if len > 0 => {
                let at = usize::from(*at) % len;
                bytes[at] ^= 1 << (bit % 8);
                ranges.push(at..at + 1);
            }
            Damage::Truncate { at } => {
                let at = pos(*at);
                if at < len {
                    bytes.truncate(at);
                    shift(at);
                }
            }
            Damage::Overwrite { at, bytes: new } => {
                let at = pos(*at);
                let end = (at + new.len()).min(len);
                if at < end {
                    bytes[at..end].copy_from_slice(&new[..end - at]);
                    ranges.push(at..end);
                }
            }
            Damage::Insert { at, bytes: new } if !new.is_empty() => {
                let at = pos(*at);
                bytes.splice(at..at, new.iter().copied());
                shift(at);
            }
            Damage::Copy {
                from,
                len: count,
                to,
            } if len > 0 => {
                let from = usize::from(*from) % len;
                let end = (from + usize::from(*count)).min(len);
                let piece = bytes[from..end].to_vec();
                let to = pos(*to);
                let stop = (to + piece.len()).min(len);
                if to < stop {
                    bytes[to..stop].copy_from_slice(&piece[..stop - to]);
                    ranges.push(to..stop);
                }
            }
            _ => {}
        }
    }
    let first = ranges
        .iter()
        .map(|range| range.start)
        .chain(shifted_from)
        .min();
    Damaged {
        first,
        ranges,
        shifted_from,
    }
}
