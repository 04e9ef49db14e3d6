//! The sweep: one streaming pass over the cluster root, removing expired bucket directories.
//!
//! # Guarantees
//! - Only directories directly under the root whose names parse as expired buckets are
//!   removed, with their contents. Nothing else under the root is touched.
//! - No symbolic link is ever followed. Every component is opened with `O_NOFOLLOW` relative to
//!   its parent's open handle and every removal is an `unlinkat` relative to an open handle, so
//!   a directory swapped for a link mid-run cannot redirect a removal outside the root: the
//!   open fails (the link is then removed as a link) or the handle still refers to the
//!   original directory.
//! - Memory does not grow with the number of files: directories are read in bounded chunks
//!   (`getdents`), one open directory per level, and at most [`MAX_DEPTH`] levels.
//! - Another janitor removing the same things, and cache-node appending to live buckets, are
//!   expected: a name that vanished is not an error, and a directory that is not empty when
//!   removed is emptied again, up to [`PASSES`] times.
//!
//! # Assumptions
//! cache-node never writes into a bucket after its fire time plus the grace (its clock is
//! within the grace of ours). A bucket that keeps refilling is reported as an error. A bucket
//! directory that someone renames away after the janitor opened it is still emptied where it
//! now is: those are the expired bucket's own files, and whoever can rename it could delete
//! them anyway.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use tidecache_contract::disk::{Area, ClusterRoot};

use crate::{Config, Event, Summary, peak_rss_kib};

/// How many times a directory is emptied before its removal is given up for this run.
const PASSES: usize = 3;
/// The deepest level removed below a bucket directory. The format has one (node
/// directories); a few more are tolerated, anything deeper is not ours and is reported.
const MAX_DEPTH: usize = 4;
/// After this many skipped names or errors only the counts go on, so a pathological volume
/// cannot flood the Job's logs.
const MAX_LOGGED: u64 = 100;

/// Sweeps the cluster root of `config` once, reporting each [`Event`] to `on_event`.
pub fn sweep(config: &Config, on_event: &mut dyn FnMut(&Event)) -> Summary {
    run_sweep(
        config,
        on_event,
        #[cfg(test)]
        None,
    )
}

fn run_sweep<'a>(
    config: &'a Config,
    on_event: &'a mut dyn FnMut(&Event),
    #[cfg(test)] after_emptying: Option<&'a mut dyn FnMut(&str)>,
) -> Summary {
    let started = Instant::now();
    let root = ClusterRoot::new(&config.data_dir, &config.namespace, &config.cluster);
    let cutoff = config.now.checked_sub_signed(config.grace);
    let mut run = Run {
        config,
        on_event,
        logged: 0,
        #[cfg(test)]
        after_emptying,
        summary: Summary {
            root: root.path().display().to_string(),
            schedule: config.schedule.expression().to_string(),
            time_zone: config.schedule.time_zone().to_string(),
            now: rfc3339(config.now),
            cutoff: cutoff.map(rfc3339).unwrap_or_default(),
            dry_run: config.dry_run,
            ..Summary::default()
        },
    };
    match open_root(config) {
        Ok(Some(fd)) => {
            run.summary.root_present = true;
            run.sweep_root(fd.as_fd());
        }
        Ok(None) => (run.on_event)(&Event::RootMissing {
            root: run.summary.root.clone(),
        }),
        Err(failure) => run.error(String::from("."), failure),
    }
    let mut summary = run.summary;
    summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    summary.peak_rss_kib = peak_rss_kib();
    summary
}

/// A failed system call and what it was for.
struct Failure {
    /// What was being done ("open", "remove", ...).
    action: &'static str,
    /// The OS error.
    errno: Errno,
}

fn failed(action: &'static str) -> impl FnOnce(Errno) -> Failure {
    move |errno| Failure { action, errno }
}

/// Opens `data-dir/namespace/cluster`. The data dir is the admin's mount point and may be
/// reached through links; the two components below it are opened without following any.
/// `None` if the namespace or cluster directory does not exist.
fn open_root(config: &Config) -> Result<Option<OwnedFd>, Failure> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let data = rustix::fs::open(&config.data_dir, flags, Mode::empty())
        .map_err(failed("open the data directory"))?;
    let namespace = match open_dir_at(data.as_fd(), config.namespace.as_str()) {
        Err(Errno::NOENT) => return Ok(None),
        other => other.map_err(failed("open the namespace directory"))?,
    };
    match open_dir_at(namespace.as_fd(), config.cluster.as_str()) {
        Err(Errno::NOENT) => Ok(None),
        other => other
            .map(Some)
            .map_err(failed("open the cluster directory")),
    }
}

/// Opens the directory `name` in `parent`, refusing to follow a link (`ELOOP` or `ENOTDIR`).
fn open_dir_at<P: rustix::path::Arg>(parent: BorrowedFd<'_>, name: P) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(parent, name, flags, Mode::empty())
}

/// What became of a name the sweep tried to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The directory and its contents were removed.
    Removed,
    /// It was a symbolic link and was removed as one.
    LinkRemoved,
    /// It was neither a directory nor a link: left alone.
    NotADirectory,
    /// It had vanished (another janitor, or its owner removed it).
    Gone,
    /// A failure, already reported.
    Failed,
}

/// The state of one sweep.
struct Run<'a> {
    /// What to sweep and how.
    config: &'a Config,
    /// Where events go.
    on_event: &'a mut dyn FnMut(&Event),
    /// Skipped names and errors logged so far, against [`MAX_LOGGED`].
    logged: u64,
    /// The counts so far.
    summary: Summary,
    /// Tests only: called with a directory's path after it was emptied and before it is
    /// removed, standing in for a cache node that appends at that very moment.
    #[cfg(test)]
    after_emptying: Option<&'a mut dyn FnMut(&str)>,
}

impl Run<'_> {
    fn sweep_root(&mut self, root: BorrowedFd<'_>) {
        let mut listing = match Dir::read_from(root) {
            Ok(listing) => listing,
            Err(errno) => return self.error(String::from("."), failed("list")(errno)),
        };
        while let Some(entry) = listing.read() {
            match entry {
                Ok(entry) => self.visit_root_entry(root, entry.file_name()),
                Err(errno) => return self.error(String::from("."), failed("list")(errno)),
            }
        }
    }

    /// Decides about one name directly under the root.
    fn visit_root_entry(&mut self, root: BorrowedFd<'_>, name: &CStr) {
        if is_dot(name) {
            return;
        }
        let Ok(text) = name.to_str() else {
            return self.skip(name, "not a bucket name (not UTF-8)");
        };
        let bucket = match Area::from_dir_name(text) {
            None => return self.skip(name, "not a bucket name"),
            Some(Area::Persistent) => {
                return self.skip(name, "the persistent area is compacted, never swept");
            }
            Some(Area::Bucket(bucket)) => bucket,
        };
        if !self.config.schedule.is_fire_time(bucket.fire_time()) {
            self.summary.buckets_off_schedule += 1;
        }
        if !bucket.is_expired(self.config.now, self.config.grace) {
            self.summary.buckets_live += 1;
            return;
        }
        let (files, bytes) = (self.summary.files_removed, self.summary.bytes_freed);
        match self.remove_dir(root, name, "", 0) {
            Outcome::Removed => {
                self.summary.buckets_deleted += 1;
                (self.on_event)(&Event::BucketDeleted {
                    bucket: text.to_string(),
                    files: self.summary.files_removed - files,
                    bytes: self.summary.bytes_freed - bytes,
                    dry_run: self.config.dry_run,
                });
            }
            Outcome::NotADirectory => self.skip(name, "has a bucket name but is not a directory"),
            Outcome::LinkRemoved | Outcome::Gone | Outcome::Failed => {}
        }
    }

    /// Removes the directory `name` in `parent` and everything in it; `depth` 0 is a bucket.
    fn remove_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        parent_path: &str,
        depth: usize,
    ) -> Outcome {
        if depth > MAX_DEPTH {
            let path = join(parent_path, name);
            self.error(
                path,
                failed("remove (nested deeper than the format allows)")(Errno::LOOP),
            );
            return Outcome::Failed;
        }
        for _ in 0..PASSES {
            let dir = match open_dir_at(parent, name) {
                Ok(dir) => dir,
                Err(Errno::NOENT) => return Outcome::Gone,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return self.remove_non_dir(parent, name, parent_path, depth, false);
                }
                Err(errno) => {
                    self.error(join(parent_path, name), failed("open")(errno));
                    return Outcome::Failed;
                }
            };
            let path = join(parent_path, name);
            if !self.remove_contents(dir.as_fd(), &path, depth) {
                return Outcome::Failed;
            }
            drop(dir);
            #[cfg(test)]
            if let Some(hook) = self.after_emptying.as_mut() {
                hook(&path);
            }
            if self.config.dry_run {
                self.summary.dirs_removed += 1;
                return Outcome::Removed;
            }
            match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
                Ok(()) => {
                    self.summary.dirs_removed += 1;
                    return Outcome::Removed;
                }
                Err(Errno::NOENT) => return Outcome::Gone,
                // Written to since it was emptied, or swapped: look again.
                Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => {}
                Err(errno) => {
                    self.error(path, failed("remove")(errno));
                    return Outcome::Failed;
                }
            }
        }
        self.error(
            join(parent_path, name),
            failed(
                "remove (still not empty after repeated passes: something writes into an \
                 expired bucket; check clock skew against --grace)",
            )(Errno::NOTEMPTY),
        );
        Outcome::Failed
    }

    /// Removes everything in the open directory `dir`. False if anything failed.
    fn remove_contents(&mut self, dir: BorrowedFd<'_>, path: &str, depth: usize) -> bool {
        let mut listing = match Dir::read_from(dir) {
            Ok(listing) => listing,
            Err(errno) => {
                self.error(path.to_string(), failed("list")(errno));
                return false;
            }
        };
        let mut ok = true;
        while let Some(entry) = listing.read() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(errno) => {
                    self.error(path.to_string(), failed("list")(errno));
                    return false;
                }
            };
            let name = entry.file_name();
            if is_dot(name) {
                continue;
            }
            let outcome = if entry.file_type() == FileType::Directory {
                self.remove_dir(dir, name, path, depth + 1)
            } else {
                self.remove_non_dir(dir, name, path, depth + 1, true)
            };
            ok &= outcome != Outcome::Failed;
        }
        ok
    }

    /// Removes `name` in `parent` without following it: a link is removed as a link, a file
    /// inside a bucket is removed. Anything that is not a directory where a bucket should be is
    /// left alone. A directory (the listing did not know the type) is removed as one if
    /// `may_descend`; it is false when [`Run::remove_dir`] just found a non-directory there, so
    /// that a name flipping between a link and a directory cannot make the two recurse.
    fn remove_non_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        parent_path: &str,
        depth: usize,
        may_descend: bool,
    ) -> Outcome {
        let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Outcome::Gone,
            Err(errno) => {
                self.error(join(parent_path, name), failed("inspect")(errno));
                return Outcome::Failed;
            }
        };
        let file_type = FileType::from_raw_mode(stat.st_mode);
        if file_type == FileType::Directory {
            return self.remove_changed_dir(parent, name, parent_path, depth, may_descend);
        }
        let is_link = file_type == FileType::Symlink;
        if !is_link && depth == 0 {
            return Outcome::NotADirectory;
        }
        if !self.config.dry_run {
            match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOENT) => return Outcome::Gone,
                // Replaced by a directory since the stat.
                Err(Errno::ISDIR) => {
                    return self.remove_changed_dir(parent, name, parent_path, depth, may_descend);
                }
                Err(errno) => {
                    self.error(join(parent_path, name), failed("remove")(errno));
                    return Outcome::Failed;
                }
            }
        }
        if is_link {
            self.summary.links_removed += 1;
            (self.on_event)(&Event::LinkRemoved {
                path: join(parent_path, name),
                dry_run: self.config.dry_run,
            });
            Outcome::LinkRemoved
        } else {
            self.summary.files_removed += 1;
            self.summary.bytes_freed += u64::try_from(stat.st_size).unwrap_or(0);
            Outcome::Removed
        }
    }

    /// A name that turned out to be a directory after all: removed as one if `may_descend`,
    /// else reported and left for the next run.
    fn remove_changed_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        parent_path: &str,
        depth: usize,
        may_descend: bool,
    ) -> Outcome {
        if may_descend {
            return self.remove_dir(parent, name, parent_path, depth);
        }
        self.error(
            join(parent_path, name),
            failed("remove (it changed between a directory and something else while being removed; left for the next run)")(Errno::AGAIN),
        );
        Outcome::Failed
    }

    fn skip(&mut self, name: &CStr, reason: &'static str) {
        self.summary.names_skipped += 1;
        if self.log_allowed() {
            let name = name.to_string_lossy().into_owned();
            (self.on_event)(&Event::Skipped { name, reason });
        }
    }

    fn error(&mut self, path: String, failure: Failure) {
        let message = format!(
            "cannot {}: {}",
            failure.action,
            std::io::Error::from(failure.errno)
        );
        self.summary.errors += 1;
        if self.summary.first_error.is_none() {
            self.summary.first_error = Some(format!("{path}: {message}"));
        }
        if self.log_allowed() {
            (self.on_event)(&Event::Error { path, message });
        }
    }

    fn log_allowed(&mut self) -> bool {
        self.logged += 1;
        self.logged <= MAX_LOGGED
    }
}

fn rfc3339(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn is_dot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// A path relative to the root, for messages only (never opened).
fn join(parent_path: &str, name: &CStr) -> String {
    let name = name.to_string_lossy();
    if parent_path.is_empty() {
        name.into_owned()
    } else {
        format!("{parent_path}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use chrono::TimeZone;
    use tidecache_contract::Schedule;
    use tidecache_contract::disk::ObjectName;

    use super::*;

    const BUCKET: &str = "20261123T100000Z";

    fn config(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            namespace: ObjectName::new("default").expect("name"),
            cluster: ObjectName::new("demo").expect("name"),
            schedule: Schedule::every_minute(),
            grace: chrono::Duration::zero(),
            now: Utc
                .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
                .single()
                .expect("valid"),
            dry_run: false,
        }
    }

    /// An expired bucket with one node directory and one segment; its path.
    fn bucket(data_dir: &Path) -> std::path::PathBuf {
        let bucket = data_dir.join("default/demo").join(BUCKET);
        fs::create_dir_all(bucket.join("cache-0")).expect("mkdir");
        fs::write(bucket.join("cache-0/00000000000000000000.seg"), b"x").expect("write");
        bucket
    }

    /// Sweeps with a writer that puts a new segment into the bucket after it was emptied, the
    /// first `refills` times.
    fn sweep_refilled(data_dir: &Path, refills: usize) -> (Summary, Vec<Event>, usize) {
        let bucket = bucket(data_dir);
        let config = config(data_dir);
        let mut events = Vec::new();
        let mut on_event = |event: &Event| events.push(event.clone());
        let mut done = 0;
        let mut refill = |path: &str| {
            if path == BUCKET && done < refills {
                done += 1;
                fs::write(bucket.join(format!("late-{done}.seg")), b"y").expect("refill");
            }
        };
        let summary = run_sweep(&config, &mut on_event, Some(&mut refill));
        (summary, events, done)
    }

    #[test]
    fn a_bucket_written_into_during_removal_is_emptied_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (summary, _, refills) = sweep_refilled(tmp.path(), PASSES - 1);
        assert_eq!(
            refills,
            PASSES - 1,
            "the writer refilled it on every pass but the last"
        );
        assert_eq!((summary.buckets_deleted, summary.errors), (1, 0));
        assert_eq!(summary.files_removed, 1 + (PASSES as u64 - 1));
        assert!(!tmp.path().join("default/demo").join(BUCKET).exists());
    }

    #[test]
    fn a_bucket_that_keeps_refilling_is_given_up_after_three_passes_and_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (summary, events, refills) = sweep_refilled(tmp.path(), usize::MAX);
        assert_eq!(
            refills, PASSES,
            "one refill per pass, then the janitor gives up"
        );
        assert_eq!((summary.buckets_deleted, summary.errors), (0, 1));
        let reported = events.iter().any(|event| {
            matches!(event, Event::Error { path, message }
                if path == BUCKET && message.contains("still not empty after repeated passes"))
        });
        assert!(reported, "{events:?}");
        assert!(
            tmp.path().join("default/demo").join(BUCKET).exists(),
            "what was written last stays"
        );
    }
}
