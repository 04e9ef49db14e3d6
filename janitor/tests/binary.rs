//! The real binary as the CronJob runs it: one JSON summary line on stdout, events on stderr,
//! exit codes, dry runs, two janitors at once, and a cache node appending to a live bucket
//! during sweeps.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use chrono::Duration;
use serde_json::Value;
use tidecache_contract::Schedule;
use tidecache_contract::disk::{Area, RecordRef, SegmentWriter, Version, WriterOptions};

use common::{Entry, buckets_on_disk, load, name, root, utc, write_entries};

const NOW: &str = "2026-11-23T15:00:00Z";

fn janitor(data: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_janitor"));
    command
        .arg("--data-dir")
        .arg(data)
        .args([
            "--namespace",
            common::NAMESPACE,
            "--cluster",
            common::CLUSTER,
        ])
        .args(["--now", NOW])
        .args(extra);
    command
}

fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one summary line: {stdout}");
    serde_json::from_str(lines[0]).expect("JSON summary")
}

/// Entries every 10 minutes from 13:00 to 16:50 on three nodes: 24 buckets, 12 expired at NOW
/// with the default grace (13:00..=14:50 plus 14:59 → 15:00 is not at or before 14:59).
fn populate(data: &Path) -> Vec<Entry> {
    let entries: Vec<Entry> = (0..72)
        .map(|i| Entry {
            key: format!("key-{i}").into_bytes(),
            node: (i % 3) as usize,
            expiry: utc("2026-11-23T13:00:00Z") + Duration::minutes(10 * (i / 3)),
        })
        .collect();
    write_entries(&root(data), &Schedule::every_minute(), &entries);
    entries
}

#[test]
fn summary_line_events_and_exit_code() {
    let tmp = tempfile::tempdir().expect("tempdir");
    populate(tmp.path());
    fs::create_dir(root(tmp.path()).path().join("lost+found")).expect("mkdir");
    let output = janitor(tmp.path(), &[]).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    let summary = summary(&output);
    assert_eq!(summary["buckets_deleted"], 12);
    assert_eq!(summary["buckets_live"], 12);
    assert_eq!(summary["files_removed"], 36);
    assert_eq!(summary["names_skipped"], 1);
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["cutoff"], "2026-11-23T14:59:00Z");
    assert!(summary["bytes_freed"].as_u64().expect("number") > 0);
    assert!(summary["duration_ms"].is_u64());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("deleted expired bucket 20261123T130000Z: 3 files"),
        "{stderr}"
    );
    assert!(
        stderr.contains("left \"lost+found\" alone: not a bucket name"),
        "{stderr}"
    );
    assert_eq!(buckets_on_disk(&root(tmp.path())).len(), 12);
}

#[test]
fn dry_run_deletes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    populate(tmp.path());
    let link = root(tmp.path()).path().join("20261123T120000Z");
    std::os::unix::fs::symlink(tmp.path(), &link).expect("link");
    let before = load(&root(tmp.path()));
    let output = janitor(tmp.path(), &["--dry-run"]).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    let summary = summary(&output);
    assert_eq!(
        (
            summary["dry_run"].clone(),
            summary["buckets_deleted"].clone()
        ),
        (true.into(), 12.into())
    );
    assert_eq!(summary["links_removed"], 1);
    assert_eq!(load(&root(tmp.path())), before);
    assert!(
        fs::symlink_metadata(&link).is_ok(),
        "the link is still there"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("would delete expired bucket"), "{stderr}");
    assert!(stderr.contains("would remove symbolic link"), "{stderr}");
}

/// Peak memory of a run over a bucket of `files` files.
fn peak_memory_kib(files: usize) -> u64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = root(tmp.path())
        .path()
        .join("20261123T140000Z")
        .join("cache-0");
    fs::create_dir_all(&node).expect("mkdir");
    for i in 0..files {
        fs::write(node.join(format!("{i:020}.seg")), b"").expect("write");
    }
    let output = janitor(tmp.path(), &[]).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    let summary = summary(&output);
    assert_eq!(summary["files_removed"], files);
    summary["peak_rss_kib"]
        .as_u64()
        .expect("peak memory reported on Linux")
}

#[test]
fn memory_does_not_grow_with_the_number_of_files() {
    let small = peak_memory_kib(10);
    let large = peak_memory_kib(20_000);
    assert!(
        large < small + 1024,
        "10 files: {small} KiB, 20000 files: {large} KiB"
    );
}

#[test]
fn missing_root_is_not_an_error_but_a_missing_data_dir_is() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = janitor(tmp.path(), &[]).output().expect("runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(summary(&output)["root_present"], false);

    let output = janitor(&tmp.path().join("not-mounted"), &[])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let summary = summary(&output);
    assert_eq!(summary["errors"], 1);
    assert!(
        summary["first_error"]
            .as_str()
            .expect("message")
            .contains("data directory")
    );
}

#[test]
fn bad_flags_exit_2_before_touching_anything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    populate(tmp.path());
    for bad in [
        &["--grace", "soon"][..],
        &["--schedule", "61 * * * *"],
        &["--cluster", "A"],
    ] {
        let output = janitor(tmp.path(), bad).output().expect("runs");
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
        assert!(output.stdout.is_empty());
    }
    assert_eq!(buckets_on_disk(&root(tmp.path())).len(), 24);
}

#[test]
fn two_janitors_at_once_share_the_work_without_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let entries: Vec<Entry> = (0..3000)
        .map(|i| Entry {
            key: format!("key-{i}").into_bytes(),
            node: (i % 5) as usize,
            expiry: utc("2026-11-23T10:00:00Z") + Duration::seconds(i * 3),
        })
        .collect();
    let written = write_entries(&root(tmp.path()), &Schedule::every_minute(), &entries);
    let children: Vec<_> = (0..2)
        .map(|_| {
            janitor(tmp.path(), &["--grace", "0s"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut deleted = 0;
    for child in children {
        let output = child.wait_with_output().expect("runs");
        assert!(output.status.success(), "{output:?}");
        deleted += summary(&output)["buckets_deleted"]
            .as_u64()
            .expect("number");
    }
    assert_eq!(
        deleted as usize,
        written.len(),
        "each bucket removed by exactly one janitor"
    );
    assert!(buckets_on_disk(&root(tmp.path())).is_empty());
}

#[test]
fn appends_to_a_live_bucket_during_sweeps_are_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    populate(tmp.path());
    let live = Area::from_dir_name("20261123T160000Z").expect("bucket");
    let data = tmp.path().to_path_buf();
    // The writer appends until told to stop, so every janitor run below overlaps it.
    let stop = Arc::new(AtomicBool::new(false));
    let writing = stop.clone();
    let writer = thread::spawn(move || {
        let options = WriterOptions {
            max_segment_bytes: 2048,
        };
        let mut writer =
            SegmentWriter::open(&root(&data), live, &name("cache-9"), options).expect("open");
        let mut written = 0u32;
        while !writing.load(Ordering::Relaxed) || written < 2000 {
            let key = format!("live-{written}");
            writer
                .append(RecordRef {
                    key: key.as_bytes(),
                    version: Version {
                        hlc: u64::from(written),
                        node: 9,
                    },
                    expiry_unix_nanos: utc("2026-11-23T15:59:00Z").timestamp_nanos_opt(),
                    value: Some(b"v"),
                })
                .expect("append");
            written += 1;
            if written.is_multiple_of(256) {
                thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        written
    });
    let runs = 5;
    for _ in 0..runs {
        let output = janitor(tmp.path(), &[]).output().expect("runs");
        assert!(output.status.success(), "{output:?}");
        assert!(!writer.is_finished(), "the writer runs through every sweep");
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    let live_keys = load(&root(tmp.path()))
        .into_iter()
        .filter(|(key, _)| key.starts_with(b"live-"))
        .count();
    assert_eq!(
        live_keys, written as usize,
        "{runs} sweeps during the appends lost none"
    );
}
