//! `WAIT numreplicas timeout` on replication acknowledgements: a connection remembers the
//! acknowledgements of the writes it made since its previous `WAIT`, and `WAIT` counts the
//! peers that applied every one of them.
//!
//! Redis compares replication offsets; tidecache's peers acknowledge each write, so the
//! count is the smallest number of peers that acknowledged any of the connection's writes.
//! A write whose peers all answered (applied, or given up on: anti-entropy repairs those)
//! cannot change any more; its count is folded into a floor and the write forgotten, which
//! bounds what a connection holds to the writes still in flight.

use std::time::Duration;

use crate::replication::{AckWatch, Replicated};

/// Writes in flight a connection remembers; past it, the oldest is folded in with the
/// acknowledgements it has so far (`WAIT` may then report fewer peers, never more).
const MAX_IN_FLIGHT: usize = 4096;

/// The acknowledgements of a connection's writes since its previous `WAIT`.
#[derive(Debug, Default)]
pub struct Acks {
    /// Writes whose peers have not all answered.
    in_flight: Vec<AckWatch>,
    /// The fewest peers any forgotten write reached; `None` if none was forgotten.
    floor: Option<usize>,
}

impl Acks {
    /// Remembers a write the connection made.
    pub fn track(&mut self, replicated: Option<&Replicated>) {
        let Some(watch) = replicated.and_then(|replicated| replicated.watch.clone()) else {
            return;
        };
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.fold_settled();
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                let oldest = self.in_flight.remove(0);
                self.lower_floor(oldest.peers_acked());
            }
        }
        self.in_flight.push(watch);
    }

    /// Waits until `wanted` peers applied every remembered write, every peer answered, or
    /// `timeout` passed (`None`: no limit); returns how many peers applied them all, or
    /// `peers` (every peer) when the connection wrote nothing, and forgets the writes.
    pub async fn wait(&mut self, wanted: usize, timeout: Option<Duration>, peers: usize) -> usize {
        let all = async {
            for watch in &self.in_flight {
                watch.wait_for(wanted).await;
            }
        };
        match timeout {
            Some(timeout) => {
                let _ = tokio::time::timeout(timeout, all).await;
            }
            None => all.await,
        }
        let reached = self
            .in_flight
            .drain(..)
            .map(|watch| watch.peers_acked())
            .chain(self.floor.take())
            .min();
        reached.unwrap_or(peers)
    }

    /// Forgets the writes whose count is final, keeping it in the floor.
    fn fold_settled(&mut self) {
        let mut lowest = None::<usize>;
        self.in_flight.retain(|watch| {
            if watch.settled() {
                let acked = watch.peers_acked();
                lowest = Some(lowest.map_or(acked, |low| low.min(acked)));
                false
            } else {
                true
            }
        });
        if let Some(lowest) = lowest {
            self.lower_floor(lowest);
        }
    }

    fn lower_floor(&mut self, acked: usize) {
        self.floor = Some(self.floor.map_or(acked, |floor| floor.min(acked)));
    }
}
