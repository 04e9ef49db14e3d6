//! The write-behind queue: every write acknowledged in write-behind mode is first appended
//! here, on the node's own disk, and flushed to the table afterwards.
//!
//! # Guarantees
//! - A write is acknowledged only after its record is fsynced here ([`Appended::durable`]),
//!   so a crash of the node (even `kill -9`, even of the machine) loses no acknowledged write:
//!   the queue is read again at start and flushed.
//! - Flushes take the oldest writes first, up to `flush_batch` at a time, keep the last write
//!   of each key in the batch, and apply them in one transaction; writes of one key reach the
//!   table in the order they were applied to the cache (the cache assigns sequence numbers
//!   under the key's lock).
//! - At least once: a flush whose commit the node did not see confirmed is sent again, so a
//!   row may be written twice with the same value, never an older value after a newer one.
//! - A failed flush is retried with backoff (100 ms doubling to 5 s) while the database is
//!   unavailable. A write the database refuses on its own (a constraint) is moved to the
//!   file `refused.log` beside the queue, logged with its key and counted, and the queue
//!   goes on: kept, not lost, for an operator to replay.
//! - The queue is bounded (`max_entries`, `max_bytes`): past it, writes are refused
//!   ([`BackendError::QueueFull`]) and nothing is acknowledged that could not be kept.
//!
//! # Files
//! `wb-<first sequence>.log` files of records `u32 length, u32 CRC-32C, payload` (postcard),
//! rotated at 16 MiB, and `flushed`, the last sequence number in the table (written to a
//! temporary file, fsynced and renamed). A file is deleted once every record in it is
//! flushed. At start a torn last record (a crash mid-append, never acknowledged) is cut off;
//! a damaged record elsewhere stops the reading of that file, with an error in the log.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;
use tokio::sync::{Notify, watch};

use super::{Backend, BackendError, BackendMetrics, QueueSettings};
use crate::base::tasks::Tasks;
use crate::base::time::Timestamp;

/// Queue files are rotated at this size, so that flushed ones can be deleted.
const FILE_BYTES: u64 = 16 << 20;

/// Backoff of a flush while the database is unavailable.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One queued change of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The key.
    pub key: Bytes,
    /// The new value; `None` deletes the row.
    pub value: Option<Bytes>,
    /// The entry's expiry (the expiry column's new value).
    pub expires_at: Option<Timestamp>,
}

impl Op {
    /// What the write costs against the queue's byte bound.
    pub fn cost(&self) -> u64 {
        op_bytes(self)
    }
}

/// A record on disk.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    seq: u64,
    key: Bytes,
    value: Option<Bytes>,
    expires_ms: Option<i64>,
}

/// Why the queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The directory or a file in it.
    #[error("the write-behind queue in {path} cannot be read: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A write in the queue, waiting to be on disk.
#[derive(Debug)]
pub struct Appended {
    seq: u64,
    synced: watch::Receiver<Synced>,
}

impl Appended {
    /// Waits until the write's record is fsynced.
    ///
    /// # Errors
    /// [`BackendError::Queue`]: the queue could not be written (the node stops).
    pub async fn durable(mut self) -> Result<(), BackendError> {
        let seq = self.seq;
        let synced = self
            .synced
            .wait_for(|synced| synced.failed.is_some() || synced.seq >= seq)
            .await
            .map_err(|_| BackendError::Queue("the queue was closed".into()))?;
        match &synced.failed {
            Some(error) if synced.seq < seq => Err(BackendError::Queue(error.clone())),
            _ => Ok(()),
        }
    }
}

/// How far the queue is on disk.
#[derive(Debug, Clone, Default)]
struct Synced {
    /// Every record up to this sequence number is fsynced.
    seq: u64,
    /// Set once a write or fsync failed: nothing after `seq` will be.
    failed: Option<String>,
}

/// A write waiting to reach the table.
struct Queued {
    seq: u64,
    op: Op,
    bytes: u64,
    at: Instant,
}

/// What writers and the flusher share.
#[derive(Default)]
struct State {
    next_seq: u64,
    pending: VecDeque<Queued>,
    bytes: u64,
    /// Writes pending per key, and the newest of them: reads of such a key answer from it
    /// and refreshes leave it alone (the cache is ahead of the table).
    keys: HashMap<Bytes, PendingKey>,
    /// Encoded records not yet written, and the last sequence number among them.
    unsynced: Vec<u8>,
    unsynced_last: u64,
}

/// A key's writes not yet in the table.
struct PendingKey {
    count: u32,
    newest: Op,
}

/// The file being appended to.
struct Writer {
    file: File,
    len: u64,
    path: PathBuf,
    last: u64,
}

/// The write-behind queue. Share it behind an `Arc`.
pub struct Outbox {
    settings: QueueSettings,
    state: Mutex<State>,
    writer: Mutex<Writer>,
    /// Closed files, oldest first, with the last sequence number in each.
    closed: Mutex<VecDeque<(PathBuf, u64)>>,
    synced: watch::Sender<Synced>,
    wake_sync: Notify,
    wake_flush: Notify,
    metrics: BackendMetrics,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("dir", &self.settings.dir)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens the queue in `settings.dir` (created if missing) and reads back every write
    /// not yet flushed. Blocking: call it off the runtime's worker threads.
    ///
    /// # Errors
    /// [`OutboxError`]: the directory cannot be created or read.
    pub fn open(settings: QueueSettings, metrics: BackendMetrics) -> Result<Outbox, OutboxError> {
        let dir = settings.dir.clone();
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OutboxError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let flushed = read_flushed(&dir).map_err(io_error(&dir.join("flushed")))?;
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_error(&dir))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("wb-") && name.ends_with(".log"))
            })
            .collect();
        names.sort();
        let mut state = State {
            next_seq: flushed + 1,
            ..State::default()
        };
        let mut closed = VecDeque::new();
        let last_file = names.len().saturating_sub(1);
        for (i, path) in names.into_iter().enumerate() {
            let (records, good_len, damaged) = read_file(&path).map_err(io_error(&path))?;
            if damaged {
                if i == last_file {
                    // A torn last append: never acknowledged.
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    file.set_len(good_len).map_err(io_error(&path))?;
                    file.sync_all().map_err(io_error(&path))?;
                } else {
                    tracing::error!(
                        file = %path.display(),
                        offset = good_len,
                        "a damaged record in the write-behind queue: the rest of this file is \
                         not flushed"
                    );
                    metrics.queue_damage.inc();
                }
            }
            let mut last = 0;
            for record in records {
                last = last.max(record.seq);
                state.next_seq = state.next_seq.max(record.seq + 1);
                if record.seq > flushed {
                    let op = Op {
                        key: record.key,
                        value: record.value,
                        expires_at: record.expires_ms.map(Timestamp::from_millis),
                    };
                    push(&mut state, record.seq, op);
                }
            }
            if last <= flushed {
                let _ = fs::remove_file(&path);
            } else {
                closed.push_back((path, last));
            }
        }
        let path = dir.join(format!("wb-{:020}.log", state.next_seq));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        sync_dir(&dir).map_err(io_error(&dir))?;
        let restored = state.pending.len();
        if restored > 0 {
            tracing::info!(
                writes = restored,
                bytes = state.bytes,
                "write-behind queue read back: these writes are flushed to the table first"
            );
        }
        let synced_to = state.next_seq - 1;
        metrics.queue_entries.set(state.pending.len() as i64);
        metrics.queue_bytes.set(state.bytes as i64);
        Ok(Outbox {
            settings,
            state: Mutex::new(state),
            writer: Mutex::new(Writer {
                file,
                len: 0,
                path,
                last: synced_to,
            }),
            closed: Mutex::new(closed),
            synced: watch::Sender::new(Synced {
                seq: synced_to,
                failed: None,
            }),
            wake_sync: Notify::new(),
            wake_flush: Notify::new(),
            metrics,
        })
    }

    /// Refuses when `entries` more writes of `bytes` would pass the queue's bounds. Checked
    /// before the writes are applied to the cache, so that a write applied is always queued
    /// (concurrent writers may pass the bounds by what they checked together).
    ///
    /// # Errors
    /// [`BackendError::QueueFull`]; [`BackendError::Queue`] once the queue could not be
    /// written.
    pub fn check_room(&self, entries: usize, bytes: u64) -> Result<(), BackendError> {
        if let Some(error) = &self.synced.borrow().failed {
            return Err(BackendError::Queue(error.clone()));
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.pending.len() + entries > self.settings.max_entries
            || state.bytes + bytes > self.settings.max_bytes
        {
            self.metrics.queue_refused.inc();
            return Err(BackendError::QueueFull {
                entries: state.pending.len(),
                bytes: state.bytes,
            });
        }
        Ok(())
    }

    /// Queues `op`; the write is acknowledged once [`Appended::durable`] completes. Call it
    /// while holding the key's lock, right after the write was applied to the cache: the
    /// order of the queue is then the order of the cache. The bounds were checked before
    /// ([`Outbox::check_room`]).
    ///
    /// # Errors
    /// [`BackendError::Queue`] once the queue could not be written.
    pub fn enqueue(&self, op: Op) -> Result<Appended, BackendError> {
        if let Some(error) = &self.synced.borrow().failed {
            return Err(BackendError::Queue(error.clone()));
        }
        let seq = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let seq = state.next_seq;
            state.next_seq += 1;
            let record = Record {
                seq,
                key: op.key.clone(),
                value: op.value.clone(),
                expires_ms: op.expires_at.map(Timestamp::as_millis),
            };
            encode(&record, &mut state.unsynced);
            state.unsynced_last = seq;
            push(&mut state, seq, op);
            self.metrics.queue_entries.set(state.pending.len() as i64);
            self.metrics.queue_bytes.set(state.bytes as i64);
            seq
        };
        self.wake_sync.notify_one();
        Ok(Appended {
            seq,
            synced: self.synced.subscribe(),
        })
    }

    /// Whether `key` has writes not yet in the table.
    pub fn is_pending(&self, key: &[u8]) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.keys.contains_key(key)
    }

    /// The newest write of `key` not yet in the table, if any: what a read of the key must
    /// answer instead of the table's row.
    pub fn newest(&self, key: &[u8]) -> Option<Op> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.keys.get(key).map(|pending| pending.newest.clone())
    }

    /// Writes queued and not yet in the table.
    pub fn pending(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.len()
    }

    /// Completes with the reason once the queue could not be written: the node must stop.
    pub async fn failed(&self) -> String {
        let mut synced = self.synced.subscribe();
        match synced.wait_for(|synced| synced.failed.is_some()).await {
            Ok(synced) => synced.failed.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Starts the task that writes and fsyncs appended records, and the flusher.
    pub fn start(self: &Arc<Outbox>, backend: Arc<Backend>, tasks: &Tasks) {
        let outbox = self.clone();
        tasks.spawn(async move { outbox.sync_loop().await });
        let outbox = self.clone();
        tasks.spawn(async move { outbox.flush_loop(backend).await });
    }

    /// Waits until every queued write is in the table, or `timeout` passed; returns how many
    /// were left.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.pending();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            self.wake_flush.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sync_loop(self: Arc<Outbox>) {
        loop {
            self.wake_sync.notified().await;
            let (buffer, last) = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                (std::mem::take(&mut state.unsynced), state.unsynced_last)
            };
            if buffer.is_empty() {
                continue;
            }
            let outbox = self.clone();
            let written = tokio::task::spawn_blocking(move || outbox.append(&buffer, last))
                .await
                .map_err(io::Error::other)
                .and_then(|result| result);
            match written {
                Ok(()) => {
                    self.synced.send_modify(|synced| synced.seq = last);
                    self.wake_flush.notify_one();
                }
                Err(error) => {
                    tracing::error!(%error, "the write-behind queue cannot be written");
                    self.synced
                        .send_modify(|synced| synced.failed = Some(error.to_string()));
                    return;
                }
            }
        }
    }

    /// Appends `buffer` (records up to `last`) and fsyncs; rotates the file past its size.
    /// Once the records are synced they count as written: a failed rotation is logged and
    /// the file grows on.
    fn append(&self, buffer: &[u8], last: u64) -> io::Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer.file.write_all(buffer)?;
        writer.file.sync_data()?;
        writer.len += buffer.len() as u64;
        writer.last = last;
        if writer.len >= FILE_BYTES {
            let path = self.settings.dir.join(format!("wb-{:020}.log", last + 1));
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|file| sync_dir(&self.settings.dir).map(|()| file));
            match opened {
                Ok(file) => {
                    let old = std::mem::replace(
                        &mut *writer,
                        Writer {
                            file,
                            len: 0,
                            path,
                            last,
                        },
                    );
                    self.closed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back((old.path, old.last));
                }
                Err(error) => {
                    tracing::warn!(%error, file = %path.display(), "cannot start a new write-behind queue file; appending to the current one");
                }
            }
        }
        Ok(())
    }

    async fn flush_loop(self: Arc<Outbox>, backend: Arc<Backend>) {
        let mut backoff = BACKOFF_START;
        loop {
            let batch = self.next_batch();
            self.update_lag();
            if batch.is_empty() {
                tokio::select! {
                    () = self.wake_flush.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let last = batch.last().map_or(0, |(seq, _)| *seq);
            let ops = last_per_key(batch.iter().map(|(_, op)| op));
            match backend.apply(&ops).await {
                Ok(()) => {
                    backoff = BACKOFF_START;
                    self.flushed(last, batch.len()).await;
                }
                Err(error) if !error.is_about_the_row() => {
                    tracing::warn!(%error, writes = ops.len(), retry_in = ?backoff, "write-behind flush failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(error) => {
                    // One write the table refuses must not hold back the others: each goes
                    // on its own, and the refused ones are set aside.
                    tracing::warn!(%error, writes = ops.len(), "write-behind flush refused; flushing the writes one by one");
                    self.isolate(&backend, ops).await;
                    self.flushed(last, batch.len()).await;
                    backoff = BACKOFF_START;
                }
            }
        }
    }

    /// Flushes `ops` one at a time, setting aside those the table refuses for what they
    /// hold; any other failure is retried with backoff until the write is in the table or
    /// set aside, so that no write is set aside twice or skipped.
    async fn isolate(&self, backend: &Backend, ops: Vec<Op>) {
        for op in ops {
            let mut backoff = BACKOFF_START;
            loop {
                match backend.apply(std::slice::from_ref(&op)).await {
                    Ok(()) => break,
                    Err(error) if error.is_about_the_row() => {
                        if self.set_aside(&error, &op).await {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "write-behind flush failed");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Keeps a write the table refused in `refused.log`; false if that file cannot be
    /// written (the write is then retried).
    async fn set_aside(&self, error: &BackendError, op: &Op) -> bool {
        let key = String::from_utf8_lossy(&op.key).into_owned();
        let dir = self.settings.dir.clone();
        let kept_op = op.clone();
        let kept = tokio::task::spawn_blocking(move || set_aside(&dir, &kept_op)).await;
        if matches!(kept, Ok(Ok(()))) {
            tracing::error!(%error, key = %key, "the backend refused a write-behind write; it is kept in refused.log");
            self.metrics.queue_set_aside.inc();
            true
        } else {
            tracing::error!(key = %key, "refused.log cannot be written; the write stays queued");
            false
        }
    }

    /// The oldest synced writes, up to a batch.
    fn next_batch(&self) -> Vec<(u64, Op)> {
        let synced = self.synced.borrow().seq;
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .pending
            .iter()
            .take_while(|queued| queued.seq <= synced)
            .take(self.settings.flush_batch.max(1))
            .map(|queued| (queued.seq, queued.op.clone()))
            .collect()
    }

    /// Removes the `n` oldest writes (in the table up to `last`) and records it on disk.
    async fn flushed(&self, last: u64, n: usize) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..n {
                let Some(queued) = state.pending.pop_front() else {
                    break;
                };
                state.bytes -= queued.bytes;
                if let hashbrown::hash_map::EntryRef::Occupied(mut entry) =
                    state.keys.entry_ref(&queued.op.key[..])
                {
                    entry.get_mut().count -= 1;
                    if entry.get().count == 0 {
                        entry.remove();
                    }
                }
            }
            self.metrics.queue_entries.set(state.pending.len() as i64);
            self.metrics.queue_bytes.set(state.bytes as i64);
        }
        self.metrics.flushed.inc_by(n as u64);
        let dir = self.settings.dir.clone();
        let done: Vec<PathBuf> = {
            let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
            let mut done = Vec::new();
            while closed
                .front()
                .is_some_and(|(_, file_last)| *file_last <= last)
            {
                if let Some((path, _)) = closed.pop_front() {
                    done.push(path);
                }
            }
            done
        };
        let written = tokio::task::spawn_blocking(move || {
            write_flushed(&dir, last)?;
            for path in done {
                fs::remove_file(path)?;
            }
            Ok::<_, io::Error>(())
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            // The writes are in the table; if the node restarts before the next flush
            // records a later number, they are flushed again (at least once).
            tracing::warn!("the write-behind queue's flushed mark could not be written");
        }
    }

    /// The age of the oldest write not yet in the table.
    fn update_lag(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let lag = state
            .pending
            .front()
            .map_or(0.0, |queued| queued.at.elapsed().as_secs_f64());
        self.metrics.queue_lag.set(lag);
    }
}

/// Adds a write to the pending ones.
fn push(state: &mut State, seq: u64, op: Op) {
    let bytes = op_bytes(&op);
    state
        .keys
        .entry(op.key.clone())
        .and_modify(|pending| {
            pending.count += 1;
            pending.newest = op.clone();
        })
        .or_insert_with(|| PendingKey {
            count: 1,
            newest: op.clone(),
        });
    state.bytes += bytes;
    state.pending.push_back(Queued {
        seq,
        op,
        bytes,
        at: Instant::now(),
    });
}

/// What a write costs against the queue's byte bound.
fn op_bytes(op: &Op) -> u64 {
    (op.key.len() + op.value.as_ref().map_or(0, Bytes::len) + 32) as u64
}

/// The last write of each key, in the order of their last writes.
fn last_per_key<'a>(ops: impl Iterator<Item = &'a Op>) -> Vec<Op> {
    let ops: Vec<&Op> = ops.collect();
    let mut last = HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        last.insert(&op.key, i);
    }
    ops.iter()
        .enumerate()
        .filter(|(i, op)| last.get(&op.key) == Some(i))
        .map(|(_, op)| (*op).clone())
        .collect()
}

fn encode(record: &Record, out: &mut Vec<u8>) {
    let payload = postcard::to_stdvec(record).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// The records of a queue file, the length of its intact prefix, and whether anything
/// after that prefix was damaged.
fn read_file(path: &Path) -> io::Result<(Vec<Record>, u64, bool)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            return Ok((records, at as u64, true));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            return Ok((records, at as u64, true));
        };
        if crc32c::crc32c(payload) != crc {
            return Ok((records, at as u64, true));
        }
        match postcard::from_bytes::<Record>(payload) {
            Ok(record) => records.push(record),
            Err(_) => return Ok((records, at as u64, true)),
        }
        at += 8 + len;
    }
    Ok((records, at as u64, false))
}

fn read_flushed(dir: &Path) -> io::Result<u64> {
    match fs::read_to_string(dir.join("flushed")) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not a sequence number")),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error),
    }
}

fn write_flushed(dir: &Path, last: u64) -> io::Result<()> {
    let temporary = dir.join("flushed.tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(last.to_string().as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join("flushed"))?;
    sync_dir(dir)
}

fn set_aside(dir: &Path, op: &Op) -> io::Result<()> {
    let mut buffer = Vec::new();
    encode(
        &Record {
            seq: 0,
            key: op.key.clone(),
            value: op.value.clone(),
            expires_ms: op.expires_at.map(Timestamp::as_millis),
        },
        &mut buffer,
    );
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("refused.log"))?;
    file.write_all(&buffer)?;
    file.sync_data()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod unit {
    use proptest::prelude::*;

    use super::*;

    fn record(seq: u64, key: Vec<u8>, value: Option<Vec<u8>>, expires_ms: Option<i64>) -> Record {
        Record {
            seq,
            key: Bytes::from(key),
            value: value.map(Bytes::from),
            expires_ms,
        }
    }

    fn same(a: &Record, b: &Record) -> bool {
        a.seq == b.seq && a.key == b.key && a.value == b.value && a.expires_ms == b.expires_ms
    }

    proptest! {
        /// Records read back as written; a file cut anywhere reads back as the records
        /// wholly before the cut, and says it was damaged unless the cut falls between two.
        #[test]
        fn records_read_back_and_a_cut_file_keeps_its_whole_records(
            ops in prop::collection::vec(
                (
                    prop::collection::vec(any::<u8>(), 0..40),
                    prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
                    prop::option::of(any::<i64>()),
                ),
                1..20,
            ),
            cut in any::<prop::sample::Index>(),
        ) {
            let records: Vec<Record> = ops
                .into_iter()
                .enumerate()
                .map(|(i, (key, value, expires))| record(i as u64 + 1, key, value, expires))
                .collect();
            let mut bytes = Vec::new();
            let mut ends = vec![0];
            for record in &records {
                encode(record, &mut bytes);
                ends.push(bytes.len());
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("wb-1.log");
            std::fs::write(&path, &bytes).expect("write");
            let (read, len, damaged) = read_file(&path).expect("read");
            prop_assert!(!damaged);
            prop_assert_eq!(len as usize, bytes.len());
            prop_assert!(read.iter().zip(&records).all(|(a, b)| same(a, b)));
            prop_assert_eq!(read.len(), records.len());

            let at = cut.index(bytes.len() + 1);
            std::fs::write(&path, &bytes[..at]).expect("write");
            let (read, len, damaged) = read_file(&path).expect("read");
            let whole = ends.iter().filter(|&&end| end <= at).count() - 1;
            prop_assert_eq!(read.len(), whole);
            prop_assert_eq!(len as usize, ends[whole]);
            prop_assert_eq!(damaged, !ends.contains(&at));
        }

        /// A flipped byte is never taken for a record: the file reads back as the records
        /// before the damaged one.
        #[test]
        fn a_flipped_byte_stops_the_read_at_the_damaged_record(
            values in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..50), 2..10),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            let mut ends = vec![0];
            for (i, value) in values.iter().enumerate() {
                encode(&record(i as u64 + 1, b"k".to_vec(), Some(value.clone()), None), &mut bytes);
                ends.push(bytes.len());
            }
            let at = flip.index(bytes.len());
            bytes[at] ^= 0x5a;
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("wb-1.log");
            std::fs::write(&path, &bytes).expect("write");
            let (read, _, damaged) = read_file(&path).expect("read");
            let before = ends.iter().filter(|&&end| end <= at).count() - 1;
            prop_assert!(damaged);
            prop_assert_eq!(read.len(), before);
        }
    }

    #[test]
    fn the_last_write_of_each_key_is_kept_in_the_order_of_the_last_writes() {
        let op = |key: &'static str, value: &'static str| Op {
            key: Bytes::from_static(key.as_bytes()),
            value: Some(Bytes::from_static(value.as_bytes())),
            expires_at: None,
        };
        let ops = [
            op("a", "1"),
            op("b", "1"),
            op("a", "2"),
            op("c", "1"),
            op("b", "2"),
        ];
        let kept: Vec<(Bytes, Option<Bytes>)> = last_per_key(ops.iter())
            .into_iter()
            .map(|op| (op.key, op.value))
            .collect();
        let expected: Vec<(Bytes, Option<Bytes>)> = [("a", "2"), ("c", "1"), ("b", "2")]
            .into_iter()
            .map(|(k, v)| {
                (
                    Bytes::from_static(k.as_bytes()),
                    Some(Bytes::from_static(v.as_bytes())),
                )
            })
            .collect();
        assert_eq!(kept, expected);
    }
}
