//! The disk format on real files: writer and reader agree, rotation and reopening start new
//! segments, listings tell ours from foreign, and hostile keys never reach a path.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tidecache_contract::Bucket;
use tidecache_contract::disk::{
    Area, AreaReader, ClusterRoot, Decoded, ObjectName, Record, RecordRef, SEGMENT_HEADER_LEN,
    SegmentId, SegmentReader, SegmentWriter, Version, WriterOptions,
};

fn name(text: &str) -> ObjectName {
    ObjectName::new(text).expect("valid name")
}

fn root_in(dir: &Path) -> ClusterRoot {
    ClusterRoot::new(dir, &name("default"), &name("demo"))
}

fn bucket(text: &str) -> Area {
    Area::Bucket(Bucket::from_dir_name(text).expect("bucket name"))
}

fn put<'a>(key: &'a [u8], value: &'a [u8], hlc: u64) -> RecordRef<'a> {
    RecordRef {
        key,
        version: Version { hlc, node: 1 },
        expiry_unix_nanos: Some(1_795_000_000_000_000_000),
        value: Some(value),
    }
}

fn read_all(root: &ClusterRoot, area: Area) -> Vec<Record> {
    let mut reader = AreaReader::open(root, area).expect("list");
    let mut records = Vec::new();
    while let Some(item) = reader.next() {
        match item.expect("readable segment") {
            Decoded::Record { record, .. } => records.push(record),
            other => panic!("unexpected {other:?} in {:?}", reader.segment()),
        }
    }
    records
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).expect("inside").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writer_and_reader_agree_across_rotation_and_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = root_in(tmp.path());
    let area = bucket("20261123T140500Z");
    let node = name("cache-0");
    let options = WriterOptions {
        max_segment_bytes: 300,
    };
    let mut writer = SegmentWriter::open(&root, area, &node, options).expect("open");
    assert_eq!(writer.segment_id(), SegmentId(0));
    let values: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 50]).collect();
    for (i, value) in values.iter().enumerate() {
        writer.append(put(b"key", value, i as u64)).expect("append");
    }
    writer.sync_data().expect("sync");
    assert!(writer.segment_id() > SegmentId(1), "rotated by size");
    let reopened = SegmentWriter::open(&root, area, &node, options).expect("reopen");
    assert_eq!(reopened.segment_id(), writer.segment_id().next());
    let records = read_all(&root, area);
    let read_values: Vec<Vec<u8>> = records.into_iter().filter_map(|r| r.value).collect();
    assert_eq!(read_values, values);
}

#[test]
fn batch_is_one_contiguous_append() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = root_in(tmp.path());
    let mut writer =
        SegmentWriter::open(&root, Area::Persistent, &name("n"), Default::default()).expect("open");
    let tombstone = RecordRef {
        value: None,
        expiry_unix_nanos: None,
        ..put(b"b", b"", 3)
    };
    let first = writer
        .append_batch([put(b"a", b"1", 1), tombstone])
        .expect("batch");
    assert_eq!(first, SEGMENT_HEADER_LEN as u64);
    let records = read_all(&root, Area::Persistent);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].value, None);
    assert_eq!(records[1].expiry(), None);
}

#[test]
fn listings_report_foreign_names_and_never_follow_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = root_in(tmp.path());
    let area = bucket("20261123T140500Z");
    SegmentWriter::open(&root, area, &name("cache-0"), Default::default()).expect("open");
    SegmentWriter::open(
        &root,
        Area::Persistent,
        &name("cache-0"),
        Default::default(),
    )
    .expect("open");
    std::fs::create_dir(root.path().join("lost+found")).expect("mkdir");
    std::fs::write(root.area_dir(area).join("README"), b"x").expect("write");
    std::os::unix::fs::symlink(tmp.path(), root.path().join("20261123T140600Z")).expect("link");
    let areas = root.list_areas().expect("areas");
    assert_eq!(areas.items, [area, Area::Persistent]);
    assert_eq!(areas.foreign.len(), 2, "{:?}", areas.foreign);
    let segments = root.list_segments(area).expect("segments");
    assert_eq!(segments.items.len(), 1);
    assert_eq!(segments.foreign, [root.area_dir(area).join("README")]);
}

#[test]
fn writer_refuses_a_linked_node_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = root_in(&tmp.path().join("data"));
    let area = bucket("20261123T140500Z");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::create_dir_all(root.area_dir(area)).expect("mkdir");
    std::os::unix::fs::symlink(&outside, root.node_dir(area, &name("cache-0"))).expect("link");
    let error = SegmentWriter::open(&root, area, &name("cache-0"), Default::default())
        .expect_err("refused");
    assert!(error.to_string().contains("not a directory"), "{error}");
    assert_eq!(std::fs::read_dir(&outside).expect("list").count(), 0);
}

#[test]
fn area_reader_reports_a_bad_segment_and_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = root_in(tmp.path());
    let area = bucket("20261123T140500Z");
    for node in ["cache-0", "cache-1"] {
        let mut writer =
            SegmentWriter::open(&root, area, &name(node), Default::default()).expect("open");
        writer
            .append(put(node.as_bytes(), b"v", 1))
            .expect("append");
    }
    let bad = root
        .node_dir(area, &name("cache-0"))
        .join(SegmentId(5).file_name());
    std::fs::write(&bad, b"definitely not a segment header").expect("write");
    let mut torn = std::fs::read(
        root.node_dir(area, &name("cache-1"))
            .join(SegmentId(0).file_name()),
    )
    .expect("read");
    torn.truncate(torn.len() - 1);
    std::fs::write(
        root.node_dir(area, &name("cache-1"))
            .join(SegmentId(1).file_name()),
        &torn,
    )
    .expect("write");
    let items: Vec<_> = AreaReader::open(&root, area).expect("open").collect();
    assert_eq!(items.len(), 4, "{items:?}");
    assert!(matches!(&items[0], Ok(Decoded::Record { record, .. }) if record.key == b"cache-0"));
    assert!(items[1].is_err(), "the bad segment is reported");
    assert!(matches!(&items[2], Ok(Decoded::Record { record, .. }) if record.key == b"cache-1"));
    assert!(
        matches!(items[3], Ok(Decoded::TornTail { offset, .. }) if offset == SEGMENT_HEADER_LEN as u64)
    );
    assert!(SegmentReader::open(&bad).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn hostile_keys_never_affect_paths(
        keys in prop::collection::vec(prop_oneof![
            Just(b"../x".to_vec()),
            Just(b"/etc/passwd".to_vec()),
            Just(b"a\0b".to_vec()),
            Just(b"%2e%2e%2fescape".to_vec()),
            Just(vec![b'k'; 4096]),
            prop::collection::vec(any::<u8>(), 1..64),
        ], 1..10)
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let root = root_in(&data);
        let area = bucket("20261123T140500Z");
        let mut writer = SegmentWriter::open(&root, area, &name("cache-0"), Default::default())
            .expect("open");
        for key in &keys {
            writer.append(put(key, b"v", 1)).expect("append");
        }
        prop_assert_eq!(
            files_under(tmp.path()),
            [PathBuf::from("data/default/demo/20261123T140500Z/cache-0/00000000000000000000.seg")]
        );
        let read: Vec<Vec<u8>> = read_all(&root, area).into_iter().map(|r| r.key).collect();
        prop_assert_eq!(read, keys);
    }
}
