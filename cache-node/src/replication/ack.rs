//! Write acknowledgements: how many replicas must hold a write before the client hears it
//! succeeded (`Tidecache-Ack: one|quorum|all`, default `--ack`), and the waiting for them.
//!
//! # Guarantees
//! - The accepting node counts as the first acknowledgement: its store applied the write
//!   before replication starts.
//! - A waiter is never reported as successful with fewer acknowledgements than asked for:
//!   when the deadline passes, or when too few peers are left that could still answer, the
//!   caller gets [`AckError`] with the count reached.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderName;
use tokio::sync::Notify;

/// The request (and response) header naming the acknowledgement level.
pub const ACK_HEADER: HeaderName = HeaderName::from_static("tidecache-ack");
/// The response header saying how many replicas (this node included) acknowledged a write.
pub const ACKED_HEADER: HeaderName = HeaderName::from_static("tidecache-acked");
/// The response header saying how many replicas hold the key (the cluster size).
pub const REPLICAS_HEADER: HeaderName = HeaderName::from_static("tidecache-replicas");

/// How many replicas must acknowledge a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AckLevel {
    /// The accepting node alone; peers get the write asynchronously.
    #[default]
    One,
    /// A majority of the replicas: the write survives the loss of any minority of pods.
    Quorum,
    /// Every replica known when the write was made.
    All,
}

impl AckLevel {
    /// The acknowledgements this level needs among `replicas` replicas (at least one).
    pub fn required(self, replicas: usize) -> usize {
        let replicas = replicas.max(1);
        match self {
            AckLevel::One => 1,
            AckLevel::Quorum => replicas / 2 + 1,
            AckLevel::All => replicas,
        }
    }
}

impl fmt::Display for AckLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckLevel::One => "one",
            AckLevel::Quorum => "quorum",
            AckLevel::All => "all",
        })
    }
}

/// Why a text is not an acknowledgement level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an acknowledgement level (expected one, quorum or all)")]
pub struct ParseAckLevelError(pub String);

impl FromStr for AckLevel {
    type Err = ParseAckLevelError;

    fn from_str(text: &str) -> Result<AckLevel, ParseAckLevelError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "one" | "1" => Ok(AckLevel::One),
            "quorum" => Ok(AckLevel::Quorum),
            "all" => Ok(AckLevel::All),
            _ => Err(ParseAckLevelError(text.to_string())),
        }
    }
}

/// A write whose acknowledgement level was not reached. The write is applied on the
/// accepting node (and possibly on some peers) and will still spread by anti-entropy; the
/// client must treat it as "maybe durable", never as acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error(
    "acknowledgement level {level} needs {required} of {replicas} replicas but only {acked} \
     acknowledged {why}"
)]
pub struct AckError {
    /// The level asked for.
    pub level: AckLevel,
    /// Acknowledgements it needs.
    pub required: usize,
    /// Acknowledgements received (the accepting node included).
    pub acked: usize,
    /// Replicas of the key when the write was made.
    pub replicas: usize,
    /// Why waiting stopped.
    pub why: AckShortfall,
}

/// Why an acknowledgement level was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AckShortfall {
    /// The deadline passed.
    Timeout(Duration),
    /// Too many peers failed or are unreachable for the level to be reachable at all.
    Unreachable,
}

impl fmt::Display for AckShortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckShortfall::Timeout(after) => write!(f, "within {} ms", after.as_millis()),
            AckShortfall::Unreachable => f.write_str("(too few peers reachable)"),
        }
    }
}

/// The acknowledgements of one write: peers' transport tasks report success or failure,
/// the request handler waits.
#[derive(Debug)]
pub struct AckWaiter {
    /// Acknowledgements so far; starts at 1 (the accepting node).
    acked: AtomicUsize,
    /// Peers that gave up on the write (dropped or failed for good).
    failed: AtomicUsize,
    /// Peers the write was sent to.
    peers: usize,
    /// Wakes the waiting handler.
    notify: Notify,
}

impl AckWaiter {
    /// A waiter for a write sent to `peers` peers, already acknowledged by this node.
    pub fn new(peers: usize) -> AckWaiter {
        AckWaiter {
            acked: AtomicUsize::new(1),
            failed: AtomicUsize::new(0),
            peers,
            notify: Notify::new(),
        }
    }

    /// A peer applied the write.
    pub fn ack(&self) {
        self.acked.fetch_add(1, Ordering::AcqRel);
        // Every waiter: the write's own, and a later `WAIT` watching it.
        self.notify.notify_waiters();
    }

    /// A peer will not apply the write through the transport (queue full, gave up).
    pub fn fail(&self) {
        self.failed.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Whether every peer has answered: no count changes any more.
    fn settled(&self) -> bool {
        self.acked() + self.failed.load(Ordering::Acquire) > self.peers
    }

    /// Acknowledgements so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    /// Waits until `level` is reached among `replicas` replicas, it can no longer be, or
    /// `timeout` passes. Returns the acknowledgements counted.
    ///
    /// # Errors
    /// [`AckError`] with the count reached when the level is not.
    pub async fn wait(
        &self,
        level: AckLevel,
        replicas: usize,
        timeout: Duration,
    ) -> Result<usize, AckError> {
        let required = level.required(replicas);
        let error = |acked, why| AckError {
            level,
            required,
            acked,
            replicas,
            why,
        };
        let waiting = async {
            loop {
                let notified = self.notify.notified();
                let acked = self.acked();
                if acked >= required {
                    return Ok(acked);
                }
                let still_possible = 1 + self.peers - self.failed.load(Ordering::Acquire);
                if still_possible < required {
                    return Err(error(acked, AckShortfall::Unreachable));
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, waiting).await {
            Ok(result) => result,
            Err(_) => Err(error(self.acked(), AckShortfall::Timeout(timeout))),
        }
    }
}

/// A write's acknowledgements, watched after the write itself returned: RESP's `WAIT`
/// asks how many peers hold every write a connection made, including writes acknowledged
/// at level `one`, which did not wait for peers.
#[derive(Debug, Clone)]
pub struct AckWatch(Arc<AckWaiter>);

/// Two watches are equal when they watch the same write.
impl PartialEq for AckWatch {
    fn eq(&self, other: &AckWatch) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for AckWatch {}

impl AckWatch {
    /// Watches `waiter`.
    pub fn new(waiter: Arc<AckWaiter>) -> AckWatch {
        AckWatch(waiter)
    }

    /// Peers (this node not counted) that applied the write so far.
    pub fn peers_acked(&self) -> usize {
        self.0.acked() - 1
    }

    /// Whether every peer answered, so [`peers_acked`](Self::peers_acked) is final.
    pub fn settled(&self) -> bool {
        self.0.settled()
    }

    /// Waits until `peers` peers applied the write or every peer answered.
    pub async fn wait_for(&self, peers: usize) {
        loop {
            let notified = self.0.notify.notified();
            if self.peers_acked() >= peers || self.settled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_need_one_a_majority_or_every_replica() {
        assert_eq!(AckLevel::One.required(3), 1);
        assert_eq!(AckLevel::Quorum.required(3), 2);
        assert_eq!(AckLevel::Quorum.required(4), 3);
        assert_eq!(AckLevel::Quorum.required(1), 1);
        assert_eq!(AckLevel::All.required(3), 3);
        assert_eq!(AckLevel::All.required(0), 1);
        assert_eq!("Quorum".parse(), Ok(AckLevel::Quorum));
        assert!("most".parse::<AckLevel>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_succeeds_once_enough_peers_acknowledge() {
        let waiter = Arc::new(AckWaiter::new(2));
        let acker = waiter.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            acker.ack();
        });
        let acked = waiter
            .wait(AckLevel::Quorum, 3, Duration::from_secs(1))
            .await;
        assert_eq!(acked, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_reports_how_many_acknowledged_when_time_runs_out() {
        let waiter = AckWaiter::new(2);
        waiter.ack();
        let error = waiter
            .wait(AckLevel::All, 3, Duration::from_millis(100))
            .await
            .expect_err("one peer never answers");
        assert_eq!((error.acked, error.required), (2, 3));
        assert!(error.to_string().contains("only 2 acknowledged"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_follows_a_write_until_every_peer_answered() {
        let waiter = Arc::new(AckWaiter::new(2));
        let watch = AckWatch::new(waiter.clone());
        let acker = waiter.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            acker.ack();
            tokio::time::sleep(Duration::from_millis(5)).await;
            acker.fail();
        });
        watch.wait_for(1).await;
        assert_eq!((watch.peers_acked(), watch.settled()), (1, false));
        watch.wait_for(2).await;
        assert_eq!(
            (watch.peers_acked(), watch.settled()),
            (1, true),
            "the second peer gave up: one peer holds the write, for good"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_once_when_too_few_peers_are_left() {
        let waiter = AckWaiter::new(2);
        waiter.fail();
        waiter.fail();
        let error = waiter
            .wait(AckLevel::Quorum, 3, Duration::from_secs(3600))
            .await
            .expect_err("both peers failed");
        assert_eq!(error.why, AckShortfall::Unreachable);
        assert_eq!(error.acked, 1);
    }
}
