//! The log: one writer thread that appends every change to the segment of its area in this
//! node's own directory, with group commit and the fsync policy, and undoes in memory what it
//! could not make durable.
//!
//! # Group commit
//! Changes queue on a channel while the thread writes and syncs; each round takes everything
//! queued, appends each area's records with one `write`, syncs each touched segment once (under
//! `always`) and then answers every waiter. Concurrent writers therefore share one fsync. The
//! answers (waking each waiting writer) are delivered by a second thread, so that the next
//! round is appended meanwhile.
//!
//! # Guarantees
//! - A change is acknowledged only after its records were written (and, under `always`,
//!   synced). The order of one key's changes on disk is the order memory applied them in (the
//!   store calls [`Journal::append`] under the key's shard lock).
//! - A change whose records could not be written is reverted in memory to the key's last
//!   durable state and answered with [`CommitError::DiskFull`] or [`CommitError::Io`].
//! - A failed fsync stops the log: every later change is reverted and answered
//!   [`CommitError::Stopped`], and [`Log::stopped`] tells the node to exit non-zero, so that it
//!   restarts and recovers from what is really on disk (an fsync error cannot be retried: the
//!   kernel may have dropped the dirty pages).
//!
//! # Which area a record goes to
//! A value goes to its bucket (or the persistent area). A delete's tombstone goes to the area of
//! the entry it deletes, so that it lives exactly as long as the record it shadows. A write
//! that moves a key to another area also leaves a tombstone (same version) in the old one, so
//! that the older record cannot come back once the newer one's bucket has been deleted.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidecache_contract::Bucket;
use tidecache_contract::disk::{
    Area, ClusterRoot, DiskError, ObjectName, RecordRef, SegmentWriter, Version as DiskVersion,
    WriterOptions,
};

use super::compaction::{self, Compacted};
use super::metrics::PersistMetrics;
use super::{FsyncPolicy, PersistSettings};
use crate::base::journal::{Change, Commit, CommitError, CommitSender, Journal, Previous, Undo};
use crate::base::time::{Clock, Timestamp};

/// The most changes one round commits; bounds the latency of the first waiter of a round.
const MAX_BATCH: usize = 4096;
/// The most segments kept open at once; the least recently used is closed (after a sync)
/// beyond it. A schedule with many buckets ahead must not exhaust file descriptors.
const MAX_OPEN_SEGMENTS: usize = 64;
/// How often the thread wakes without work to sync (`everysec`), close the segments of expired
/// buckets and check whether the persistent area needs compaction.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// A message to the writer thread.
enum Message {
    /// A change to append, and its waiter.
    Change(Change, CommitSender),
    /// Sync everything and stop.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// The handle of the log: the store's [`Journal`], and the node's way to learn that it stopped.
#[derive(Debug)]
pub struct Log {
    /// The writer thread's queue.
    tx: Sender<Message>,
    /// Set with the reason once an fsync failed.
    stopped: tokio::sync::watch::Receiver<Option<String>>,
    /// The writer thread, joined by [`Log::close`].
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Makes the next fsync fail: the one failure tests cannot cause on a real disk.
    #[cfg(test)]
    fail_next_sync: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Change(change, _) => f.debug_tuple("Change").field(change).finish(),
            Message::Close(_) => f.write_str("Close"),
        }
    }
}

impl Log {
    /// Starts the writer thread for `settings`, reverting failed changes in `store`. The thread
    /// opens segments lazily, one per area written to.
    ///
    /// # Errors
    /// An I/O error if the thread cannot be spawned or this node's persistent area cannot be
    /// measured.
    pub fn start(
        settings: &PersistSettings,
        store: Arc<dyn Undo>,
        clock: Arc<dyn Clock>,
        metrics: PersistMetrics,
    ) -> io::Result<Log> {
        let (tx, rx) = mpsc::channel();
        let (answer_tx, answer_rx) = mpsc::channel::<Answers>();
        let answering = std::thread::Builder::new()
            .name("tidecache-answer".to_string())
            .spawn(move || {
                for answers in answer_rx {
                    deliver(answers);
                }
            })?;
        let (stop_tx, stopped) = tokio::sync::watch::channel(None);
        #[cfg(test)]
        let fail_next_sync = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let root = settings.root();
        let persistent_bytes = compaction::own_bytes(&root, &settings.node)
            .map_err(|error| io::Error::other(error.to_string()))?;
        let writer = Writer {
            root,
            node: settings.node.clone(),
            node_tag: settings.node.tag(),
            options: WriterOptions {
                max_segment_bytes: settings.segment_bytes,
            },
            policy: settings.fsync,
            store,
            clock,
            metrics,
            open: HashMap::new(),
            tick: 0,
            unsynced_since: None,
            last_sync: Instant::now(),
            durable: HashMap::new(),
            stopped: None,
            stop_tx,
            persistent_bytes,
            compacted_bytes: 0,
            compact_min_bytes: settings.compact_min_bytes,
            areas: AreaCache::default(),
            answers: Vec::new(),
            answer_tx,
            #[cfg(test)]
            fail_next_sync: fail_next_sync.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("tidecache-log".to_string())
            .spawn(move || {
                writer.run(rx);
                // The writer is gone with its queue: the answering thread delivers what is
                // left and ends, before `close` returns.
                let _ = answering.join();
            })?;
        Ok(Log {
            tx,
            stopped,
            thread: std::sync::Mutex::new(Some(thread)),
            #[cfg(test)]
            fail_next_sync,
        })
    }

    /// Makes the next fsync report an I/O error.
    #[cfg(test)]
    pub(super) fn fail_next_sync(&self) {
        self.fail_next_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Completes with the reason once the log has stopped after a failed fsync.
    pub async fn stopped(&self) -> String {
        let mut stopped = self.stopped.clone();
        match stopped.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the log thread ended".to_string(),
        }
    }

    /// Syncs everything appended and stops the writer thread; changes appended later are
    /// answered [`CommitError::Stopped`]. Blocks until the thread has ended.
    pub fn close(&self) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Message::Close(done_tx)).is_ok() {
            let _ = done_rx.blocking_recv();
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the log thread panicked");
        }
    }
}

impl Journal for Log {
    fn append(&self, change: Change) -> Commit {
        let (sender, commit) = Commit::pending();
        match self.tx.send(Message::Change(change, sender)) {
            Ok(()) => commit,
            // The thread is gone (closed): nothing can be made durable any more.
            Err(_) => Commit::done(Err(CommitError::Stopped)),
        }
    }
}

/// One open segment.
struct OpenSegment {
    writer: SegmentWriter,
    /// Appended to since its last sync.
    dirty: bool,
    /// The round it was last written in, for closing the least recently used.
    last_used: u64,
}

/// The writer thread's state.
struct Writer {
    root: ClusterRoot,
    node: ObjectName,
    /// The node half of every record's version.
    node_tag: u64,
    options: WriterOptions,
    policy: FsyncPolicy,
    /// Where failed changes are reverted.
    store: Arc<dyn Undo>,
    /// The store's clock: which buckets are expired.
    clock: Arc<dyn Clock>,
    metrics: PersistMetrics,
    /// Segments being written, by area.
    open: HashMap<Area, OpenSegment>,
    /// Rounds so far.
    tick: u64,
    /// When the oldest unsynced record was written.
    unsynced_since: Option<Instant>,
    /// When everything was last synced.
    last_sync: Instant,
    /// For each key with a failed change not yet followed by a durable one: its last durable
    /// state, which every revert of that key restores (a later failed change's `previous` may
    /// itself be a failed change).
    durable: HashMap<Bytes, Option<Previous>>,
    /// Why the log stopped, once an fsync failed.
    stopped: Option<String>,
    stop_tx: tokio::sync::watch::Sender<Option<String>>,
    /// Bytes of this node's persistent segments, including appends since start.
    persistent_bytes: u64,
    /// Their size after the last compaction (zero before one).
    compacted_bytes: u64,
    /// No compaction below this size.
    compact_min_bytes: u64,
    /// The areas of recently seen buckets.
    areas: AreaCache,
    /// This round's answers, handed to the answering thread at its end.
    answers: Answers,
    /// The answering thread's queue.
    answer_tx: Sender<Answers>,
    /// See [`Log::fail_next_sync`].
    #[cfg(test)]
    fail_next_sync: Arc<std::sync::atomic::AtomicBool>,
}

/// A change's records: at most a value and a tombstone.
type Planned<'a> = Vec<(Area, RecordRef<'a>)>;

/// One round's answers: each change (dropped after answering: it may hold the last reference
/// to a replaced value), its waiter and its outcome.
type Answers = Vec<(Change, CommitSender, Result<(), CommitError>)>;

/// Answers the waiters of one round. Waking a writer costs about as much as appending its
/// record, so a second thread does it while the log thread appends the next round.
fn deliver(answers: Answers) {
    for (change, sender, result) in answers {
        sender.send(result);
        drop(change);
    }
}

impl Writer {
    /// Takes rounds of changes until closed (or until the log is dropped).
    fn run(mut self, rx: Receiver<Message>) {
        let mut last_housekeeping = Instant::now();
        loop {
            let first = match rx.recv_timeout(self.wait()) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut close = None;
            let mut next = first;
            while let Some(message) = next {
                match message {
                    Message::Change(change, sender) => batch.push((change, sender)),
                    Message::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                next = if batch.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                self.commit(batch);
            }
            self.sync_if_due();
            if let Some(done) = close {
                self.sync_all();
                let _ = done.send(());
                // Anything still queued was appended after the close: refuse it.
                self.stop("the log was closed".to_string(), false);
                while let Ok(Message::Change(change, sender)) = rx.try_recv() {
                    self.fail(change, sender, CommitError::Stopped);
                }
                self.answer();
                return;
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING {
                last_housekeeping = Instant::now();
                self.housekeeping();
            }
        }
        self.sync_all();
    }

    /// How long to wait for changes before doing housekeeping.
    fn wait(&self) -> Duration {
        match (self.policy.sync_interval(), self.unsynced_since) {
            (Some(interval), Some(_)) => interval
                .saturating_sub(self.last_sync.elapsed())
                .min(HOUSEKEEPING),
            _ => HOUSEKEEPING,
        }
    }

    /// Appends, syncs (under `always`) and answers one round of changes.
    fn commit(&mut self, batch: Vec<(Change, CommitSender)>) {
        self.tick += 1;
        self.metrics.batch_changes.observe(batch.len() as f64);
        if self.stopped.is_some() {
            for (change, sender) in batch {
                self.fail(change, sender, CommitError::Stopped);
            }
            self.answer();
            return;
        }
        let mut results: Vec<Result<(), CommitError>> = vec![Ok(()); batch.len()];
        // A change's first record (its value, or a delete's tombstone) goes first; the shadow a
        // moved key leaves in its old area only once that succeeded: a shadow without its value
        // would delete the key on the next start.
        let mut primary: BTreeMap<Area, Vec<(usize, RecordRef<'_>)>> = BTreeMap::new();
        let mut shadows: Vec<(usize, Area, RecordRef<'_>)> = Vec::new();
        for (index, (change, _)) in batch.iter().enumerate() {
            match self.plan(change) {
                Ok(records) => {
                    for (nth, (area, record)) in records.into_iter().enumerate() {
                        if nth == 0 {
                            primary.entry(area).or_default().push((index, record));
                        } else {
                            shadows.push((index, area, record));
                        }
                    }
                }
                Err(error) => results[index] = Err(error),
            }
        }
        let mut written = Vec::new();
        for (area, records) in primary {
            if let Err(error) = self.append_all(area, &records, &mut written) {
                let error = self.classify(&error);
                for (index, _) in records {
                    results[index] = Err(error.clone());
                }
            }
        }
        let mut shadow_areas: BTreeMap<Area, Vec<(usize, RecordRef<'_>)>> = BTreeMap::new();
        for (index, area, record) in shadows {
            if results[index].is_ok() {
                shadow_areas.entry(area).or_default().push((index, record));
            }
        }
        for (area, records) in shadow_areas {
            // The values are durable and acknowledged; only the guard against an older record
            // reappearing after their bucket expires is missing.
            if let Err(error) = self.append_all(area, &records, &mut written) {
                PersistMetrics::count(&self.metrics.write_errors, "shadow", 1);
                tracing::error!(
                    %error,
                    keys = records.len(),
                    "cannot write the tombstones of moved keys; their older records may \
                     reappear after a restart once the newer ones expire"
                );
                if matches!(&error, DiskError::Io { action, .. } if *action == "sync") {
                    self.stop(format!("fsync failed: {error}"), true);
                }
            }
        }
        if self.policy == FsyncPolicy::Always {
            for area in written {
                self.sync(area);
            }
        }
        if self.stopped.is_some() {
            results.fill(Err(CommitError::Stopped));
        }
        for ((change, sender), result) in batch.into_iter().zip(results) {
            match result {
                Ok(()) => self.succeed(change, sender),
                Err(error) => self.fail(change, sender, error),
            }
        }
        self.answer();
    }

    /// The records of `change` and their areas.
    fn plan<'c>(&mut self, change: &'c Change) -> Result<Planned<'c>, CommitError> {
        // A replicated store's versions carry this node's tag already; a single node's do not,
        // and the disk still needs it to order two nodes' writes of the same clock value.
        let version = match change.version.node() {
            0 => DiskVersion {
                hlc: change.version.get(),
                node: self.node_tag,
            },
            _ => change.version.to_disk(),
        };
        let tombstone = |expires_at: Option<Timestamp>| RecordRef {
            key: &change.key,
            version,
            expiry_unix_nanos: expires_at.and_then(Timestamp::to_unix_nanos),
            value: None,
        };
        let mut records = Vec::with_capacity(2);
        match (&change.value, &change.previous) {
            (Some(value), previous) => {
                records.push((
                    self.areas.get(change.bucket)?,
                    RecordRef {
                        key: &change.key,
                        version,
                        expiry_unix_nanos: change.expires_at.and_then(Timestamp::to_unix_nanos),
                        value: Some(value),
                    },
                ));
                if let Some(previous) = previous
                    && previous.bucket != change.bucket
                {
                    let area = self.areas.get(previous.bucket)?;
                    records.push((area, tombstone(previous.expires_at)));
                }
            }
            (None, Some(previous)) => {
                let area = self.areas.get(previous.bucket)?;
                records.push((area, tombstone(previous.expires_at)));
            }
            (None, None) => records.push((Area::Persistent, tombstone(None))),
        }
        Ok(records)
    }

    /// Appends `records` to `area`, counts them and notes the area in `written`.
    fn append_all(
        &mut self,
        area: Area,
        records: &[(usize, RecordRef<'_>)],
        written: &mut Vec<Area>,
    ) -> Result<(), DiskError> {
        let bytes: u64 = records
            .iter()
            .map(|(_, record)| record.encoded_len() as u64)
            .sum();
        self.append(area, records.iter().map(|(_, record)| *record))?;
        self.metrics.records.inc_by(records.len() as u64);
        self.metrics.bytes.inc_by(bytes);
        if area == Area::Persistent {
            self.persistent_bytes += bytes;
        }
        if !written.contains(&area) {
            written.push(area);
        }
        Ok(())
    }

    /// Appends `records` to the segment of `area`, opening one if needed.
    fn append<'r>(
        &mut self,
        area: Area,
        records: impl Iterator<Item = RecordRef<'r>>,
    ) -> Result<(), DiskError> {
        if !self.open.contains_key(&area) {
            self.make_room();
            let writer = SegmentWriter::open(&self.root, area, &self.node, self.options)?;
            self.open.insert(
                area,
                OpenSegment {
                    writer,
                    dirty: false,
                    last_used: self.tick,
                },
            );
        }
        let Some(segment) = self.open.get_mut(&area) else {
            return Ok(());
        };
        segment.last_used = self.tick;
        // Set before the write: a failed write may still have put bytes in the page cache.
        segment.dirty = true;
        self.unsynced_since.get_or_insert_with(Instant::now);
        segment.writer.append_batch(records).map(|_| ())
    }

    /// Closes the least recently used segment if as many as allowed are open.
    fn make_room(&mut self) {
        if self.open.len() < MAX_OPEN_SEGMENTS {
            return;
        }
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, segment)| segment.last_used)
            .map(|(area, _)| *area);
        if let Some(area) = oldest {
            self.sync(area);
            self.open.remove(&area);
        }
    }

    /// Syncs one segment if it is dirty; a failure stops the log.
    fn sync(&mut self, area: Area) {
        let Some(segment) = self.open.get_mut(&area) else {
            return;
        };
        if !segment.dirty {
            return;
        }
        let started = Instant::now();
        let result = segment.writer.sync_data();
        #[cfg(test)]
        let result = if self
            .fail_next_sync
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            Err(DiskError::Io {
                action: "sync",
                path: segment.writer.segment_path(),
                source: io::Error::from_raw_os_error(5),
            })
        } else {
            result
        };
        self.metrics
            .fsync_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => segment.dirty = false,
            Err(error) => self.stop(format!("fsync failed: {error}"), true),
        }
        if self.open.values().all(|segment| !segment.dirty) {
            self.synced();
        }
    }

    /// Syncs every dirty segment.
    fn sync_all(&mut self) {
        let dirty: Vec<Area> = self
            .open
            .iter()
            .filter(|(_, segment)| segment.dirty)
            .map(|(area, _)| *area)
            .collect();
        for area in dirty {
            self.sync(area);
        }
        self.synced();
    }

    /// Records that nothing is unsynced any more.
    fn synced(&mut self) {
        if let Some(since) = self.unsynced_since.take() {
            self.metrics
                .fsync_lag
                .observe(since.elapsed().as_secs_f64());
        }
        self.last_sync = Instant::now();
    }

    /// The `everysec` sync, once its interval has passed since the last one.
    fn sync_if_due(&mut self) {
        if let (Some(interval), Some(_)) = (self.policy.sync_interval(), self.unsynced_since)
            && self.last_sync.elapsed() >= interval
        {
            self.sync_all();
        }
    }

    /// The periodic work: closing segments of expired buckets (the
    /// janitor deletes their directories), and compacting the persistent area.
    fn housekeeping(&mut self) {
        let now = self.clock.now().to_datetime();
        let expired: Vec<Area> = self
            .open
            .keys()
            .filter(|area| match (area, now) {
                (Area::Bucket(bucket), Some(now)) => bucket.fire_time() <= now,
                _ => false,
            })
            .copied()
            .collect();
        for area in expired {
            self.sync(area);
            self.open.remove(&area);
        }
        let threshold = self.compact_min_bytes.max(self.compacted_bytes * 2);
        if self.stopped.is_none() && self.persistent_bytes > threshold {
            self.compact();
        }
    }

    /// Compacts this node's persistent area, continuing in the segment the compaction wrote.
    fn compact(&mut self) {
        // Everything appended so far must be in the segments compaction reads and durable
        // before they are deleted.
        self.sync(Area::Persistent);
        if self.stopped.is_some() {
            return;
        }
        // The compacted segment is numbered after every existing one; the old writer would
        // collide with it when rotating, so it is dropped here.
        self.open.remove(&Area::Persistent);
        let started = Instant::now();
        match compaction::compact(&self.root, &self.node, self.options) {
            Ok(Compacted::Rewritten {
                writer,
                before,
                after,
            }) => {
                PersistMetrics::count(&self.metrics.compactions, "rewritten", 1);
                self.metrics
                    .compaction_reclaimed
                    .inc_by(before.saturating_sub(after));
                tracing::info!(
                    before_bytes = before,
                    after_bytes = after,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compacted the persistent area"
                );
                self.persistent_bytes = after;
                self.compacted_bytes = after;
                if let Some(writer) = writer {
                    self.open.insert(
                        Area::Persistent,
                        OpenSegment {
                            writer,
                            dirty: false,
                            last_used: self.tick,
                        },
                    );
                }
            }
            Ok(Compacted::Skipped { bytes, garbage }) => {
                PersistMetrics::count(&self.metrics.compactions, "skipped", 1);
                tracing::debug!(bytes, garbage, "persistent area not worth compacting yet");
                self.compacted_bytes = bytes;
            }
            Err(error) => {
                PersistMetrics::count(&self.metrics.compactions, "failed", 1);
                if error.fatal {
                    self.stop(format!("compaction: {}", error.source), true);
                } else {
                    tracing::warn!(error = %error.source, "compaction of the persistent area failed; will retry");
                    self.compacted_bytes = self.persistent_bytes;
                }
            }
        }
    }

    /// Answers a change that is durable.
    fn succeed(&mut self, change: Change, sender: CommitSender) {
        if !self.durable.is_empty() {
            self.durable.remove(&change.key);
        }
        if change.is_delete() {
            self.store.settle_delete(&change.key, change.version);
        }
        self.answers.push((change, sender, Ok(())));
    }

    /// Reverts a change that is not durable and answers it with `error`.
    fn fail(&mut self, change: Change, sender: CommitSender, error: CommitError) {
        let kind = match error {
            CommitError::DiskFull(_) => "disk_full",
            CommitError::Io(_) => "io",
            CommitError::Stopped => "stopped",
        };
        PersistMetrics::count(&self.metrics.write_errors, kind, 1);
        let restore = self
            .durable
            .entry(change.key.clone())
            .or_insert_with(|| change.previous.clone());
        self.store.revert(&change, restore.as_ref());
        self.answers.push((change, sender, Err(error)));
    }

    /// Hands this round's answers to the answering thread.
    fn answer(&mut self) {
        if self.answers.is_empty() {
            return;
        }
        let answers = std::mem::take(&mut self.answers);
        if let Err(mpsc::SendError(answers)) = self.answer_tx.send(answers) {
            // The answering thread is gone (it panicked): answer here.
            deliver(answers);
        }
    }

    /// The client-facing error of a failed append; a failed sync (a rotation syncs) stops the
    /// log.
    fn classify(&mut self, error: &DiskError) -> CommitError {
        tracing::error!(%error, "cannot append to the data volume; the write is refused");
        match error {
            DiskError::Io { action, .. } if *action == "sync" => {
                self.stop(format!("fsync failed: {error}"), true);
                CommitError::Stopped
            }
            DiskError::Io { source, .. } if is_disk_full(source) => {
                CommitError::DiskFull(error.to_string())
            }
            _ => CommitError::Io(error.to_string()),
        }
    }

    /// Stops the log: nothing is acknowledged any more. `fatal` tells the node to exit.
    fn stop(&mut self, reason: String, fatal: bool) {
        if self.stopped.is_some() {
            return;
        }
        if fatal {
            tracing::error!(%reason, "persistence stopped: no more writes are acknowledged");
            let _ = self.stop_tx.send(Some(reason.clone()));
        }
        self.stopped = Some(reason);
    }
}

/// Whether an I/O error means the volume is out of space or quota.
pub(super) fn is_disk_full(error: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(error.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// The area of an entry filed under `bucket` (`None`: no expiry).
fn area_of(bucket: Option<Timestamp>) -> Result<Area, CommitError> {
    match bucket {
        None => Ok(Area::Persistent),
        Some(fire) => fire
            .to_datetime()
            .and_then(Bucket::new)
            .map(Area::Bucket)
            .ok_or_else(|| CommitError::Io(format!("bucket {fire} has no directory name"))),
    }
}

/// [`area_of`] for the buckets seen recently: checking a bucket's name formats a date, which
/// would otherwise cost more than encoding the record.
#[derive(Default)]
struct AreaCache(HashMap<Timestamp, Area>);

impl AreaCache {
    /// Buckets remembered before the cache starts over.
    const MAX: usize = 1024;

    fn get(&mut self, bucket: Option<Timestamp>) -> Result<Area, CommitError> {
        let Some(fire) = bucket else {
            return Ok(Area::Persistent);
        };
        if let Some(area) = self.0.get(&fire) {
            return Ok(*area);
        }
        let area = area_of(bucket)?;
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(fire, area);
        Ok(area)
    }
}
