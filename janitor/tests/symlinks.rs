//! Symbolic-link attacks: links planted in the root, inside a bucket, in place of the cluster
//! directory, and a bucket directory swapped for a link to an outside directory while the
//! janitor runs, at least 10^4 times. Zero files outside the root may be deleted.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use chrono::Duration;
use janitor::Summary;
use tidecache_contract::Schedule;

use common::{config, root, run, utc};

const EXPIRED: &str = "20261123T140000Z";
const LIVE: &str = "20261123T160000Z";
const NOW: &str = "2026-11-23T15:00:00Z";

/// A directory outside the root with files a naive janitor would delete through a link.
fn outside(tmp: &Path) -> PathBuf {
    let outside = tmp.join("outside");
    fs::create_dir_all(outside.join("cache-0")).expect("mkdir");
    for i in 0..5 {
        fs::write(outside.join(format!("precious-{i}")), b"keep").expect("write");
        fs::write(
            outside.join("cache-0").join(format!("{i:020}.seg")),
            b"keep",
        )
        .expect("write");
    }
    outside
}

fn assert_outside_intact(outside: &Path) {
    for i in 0..5 {
        assert_eq!(
            fs::read(outside.join(format!("precious-{i}"))).expect("kept"),
            b"keep"
        );
        let seg = outside.join("cache-0").join(format!("{i:020}.seg"));
        assert_eq!(fs::read(seg).expect("kept"), b"keep");
    }
}

fn sweep_now(data: &Path) -> Summary {
    run(&config(
        data,
        &Schedule::every_minute(),
        utc(NOW),
        Duration::seconds(60),
    ))
}

fn make_bucket(root: &Path, name: &str) {
    assert!(try_make_bucket(root, name), "bucket created");
}

/// Creates a bucket with one node and one segment; false if a concurrent janitor removed part
/// of it meanwhile.
fn try_make_bucket(root: &Path, name: &str) -> bool {
    let node = root.join(name).join("cache-0");
    fs::create_dir_all(&node).is_ok() && fs::write(node.join(format!("{:020}.seg", 0)), b"").is_ok()
}

#[test]
fn links_in_the_root_and_in_buckets_are_removed_as_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = outside(tmp.path());
    let data = tmp.path().join("data");
    let root = root(&data);
    let root = root.path();
    fs::create_dir_all(root).expect("mkdir");
    // A link with an expired bucket name, one with a live bucket name, one with another name.
    symlink(&outside, root.join("20261123T130000Z")).expect("link");
    symlink(&outside, root.join(LIVE)).expect("link");
    symlink(&outside, root.join("escape")).expect("link");
    // An expired bucket whose node directory and segment are links outside.
    make_bucket(root, EXPIRED);
    symlink(outside.join("cache-0"), root.join(EXPIRED).join("cache-1")).expect("link");
    symlink(
        outside.join("precious-0"),
        root.join(EXPIRED)
            .join("cache-0")
            .join(format!("{:020}.seg", 1)),
    )
    .expect("link");

    let summary = sweep_now(&data);
    assert_eq!(summary.errors, 0, "{:?}", summary.first_error);
    assert_eq!(summary.buckets_deleted, 1);
    assert_eq!(summary.links_removed, 3);
    assert_eq!(summary.files_removed, 1);
    assert_eq!(summary.buckets_live, 1);
    assert_eq!(summary.names_skipped, 1);
    assert_outside_intact(&outside);
    assert!(!root.join(EXPIRED).exists());
    assert!(
        fs::symlink_metadata(root.join(LIVE)).is_ok(),
        "a live name is left alone"
    );
    assert!(
        fs::symlink_metadata(root.join("escape")).is_ok(),
        "a foreign name is left alone"
    );
}

#[test]
fn linked_cluster_directory_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tmp.path().join("elsewhere");
    make_bucket(&outside, EXPIRED);
    let data = tmp.path().join("data");
    fs::create_dir_all(data.join(common::NAMESPACE)).expect("mkdir");
    symlink(&outside, data.join(common::NAMESPACE).join(common::CLUSTER)).expect("link");
    let summary = sweep_now(&data);
    assert_eq!(summary.errors, 1);
    assert!(outside.join(EXPIRED).join("cache-0").exists());
}

#[test]
fn file_with_a_bucket_name_is_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let root = root(&data);
    fs::create_dir_all(root.path()).expect("mkdir");
    fs::write(root.path().join(EXPIRED), b"not a directory").expect("write");
    let summary = sweep_now(&data);
    assert_eq!((summary.errors, summary.names_skipped), (0, 1));
    assert!(root.path().join(EXPIRED).is_file());
}

/// Swaps the expired bucket (or its node directory) for a link to the outside directory,
/// again and again, while janitors sweep in a loop.
#[test]
fn bucket_swapped_for_a_link_during_sweeps() {
    // 10^4 in every test run; set JANITOR_RACE_SWAPS for a longer soak.
    let swaps_wanted: u64 = std::env::var("JANITOR_RACE_SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = outside(tmp.path());
    let data = tmp.path().join("data");
    let root = root(&data).path().to_path_buf();
    fs::create_dir_all(&root).expect("mkdir");

    let stop = Arc::new(AtomicBool::new(false));
    let sweeps = Arc::new(AtomicU64::new(0));
    let removed = Arc::new(AtomicU64::new(0));
    let janitor = {
        let (stop, sweeps, removed, data) =
            (stop.clone(), sweeps.clone(), removed.clone(), data.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let summary = sweep_now(&data);
                removed.fetch_add(
                    summary.buckets_deleted + summary.links_removed,
                    Ordering::Relaxed,
                );
                sweeps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let bucket = root.join(EXPIRED);
    let mut swaps = 0;
    let mut round = 0u64;
    while swaps < swaps_wanted {
        round += 1;
        if !try_make_bucket(&root, EXPIRED) {
            continue;
        }
        // Alternate between swapping the bucket itself and its node directory.
        let (target, link_to) = if round.is_multiple_of(2) {
            (bucket.clone(), outside.clone())
        } else {
            (bucket.join("cache-0"), outside.join("cache-0"))
        };
        // The stash has a name that is not a bucket's, so the janitor leaves it alone; putting
        // it back afterwards saves recreating the bucket in most rounds.
        let stash = root.join("stash");
        if fs::rename(&target, &stash).is_ok() {
            if symlink(&link_to, &target).is_ok() {
                swaps += 1;
                thread::yield_now();
                let _ = fs::remove_file(&target);
            }
            if fs::rename(&stash, &target).is_err() {
                let _ = fs::remove_dir_all(&stash);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    janitor.join().expect("janitor thread");

    assert_outside_intact(&outside);
    let sweeps = sweeps.load(Ordering::Relaxed);
    assert!(
        sweeps >= 100,
        "the janitor ran concurrently ({sweeps} sweeps)"
    );
    assert!(
        removed.load(Ordering::Relaxed) > 0,
        "the janitor raced the swaps"
    );
}
