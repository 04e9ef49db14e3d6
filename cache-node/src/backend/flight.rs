//! Single-flight loads: while a key is being loaded, every other request for it waits for
//! that load instead of querying again, so that the expiry of a hot key costs the database
//! one query, not one per client. A batch joins the loads already running for some of its
//! keys and starts one query for the rest.
//!
//! The query runs in a task of its own: a client that gives up (a closed connection drops
//! its request) does not cancel the load the others wait for. A load stays registered until
//! the request that started it has stored the rows ([`Settle`] dropped), so a read arriving
//! between the query's answer and the store joins the load instead of querying again.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hashbrown::HashMap;
use tokio::sync::{oneshot, watch};

use super::{BackendError, Row};

/// What one key's load ends with.
type Outcome = Result<Option<Row>, BackendError>;

/// The loads running now, by key.
#[derive(Default)]
pub(super) struct Flights {
    running: Arc<Mutex<HashMap<Bytes, watch::Receiver<Option<Outcome>>>>>,
}

impl Flights {
    /// The rows of `keys` (one result per key, in order): `query` runs once, in a task of
    /// its own, for the keys no load is running for; the others wait for the running load.
    pub(super) async fn load<Q, F>(&self, keys: &[Bytes], query: Q) -> (Vec<Outcome>, Settle)
    where
        Q: FnOnce(Vec<Bytes>) -> F,
        F: Future<Output = Result<Vec<Option<Row>>, BackendError>> + Send + 'static,
    {
        let mut waits = Vec::with_capacity(keys.len());
        let mut lead = Vec::new();
        let mut senders = Vec::new();
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            for key in keys {
                let receiver = match running.get(key) {
                    Some(receiver) => receiver.clone(),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        running.insert(key.clone(), receiver.clone());
                        lead.push(key.clone());
                        senders.push(sender);
                        receiver
                    }
                };
                waits.push(receiver);
            }
        }
        let mut settle = Settle(None);
        if !lead.is_empty() {
            let load = query(lead.clone());
            let running = self.running.clone();
            let (settled, stored) = oneshot::channel::<()>();
            settle = Settle(Some(settled));
            tokio::spawn(async move {
                // Unregisters the keys however the task ends, a panicking query included.
                let registered = Registered {
                    running,
                    keys: lead,
                };
                match load.await {
                    Ok(rows) => {
                        for (sender, row) in senders.into_iter().zip(rows) {
                            sender.send_replace(Some(Ok(row)));
                        }
                        // Until the rows are stored (or the leading request gave up), later
                        // reads take this outcome instead of querying.
                        let _ = stored.await;
                        drop(registered);
                    }
                    Err(error) => {
                        // A failure is not kept for later reads: they try again.
                        drop(registered);
                        for sender in senders {
                            sender.send_replace(Some(Err(error.clone())));
                        }
                    }
                }
            });
        }
        let mut outcomes = Vec::with_capacity(waits.len());
        for mut receiver in waits {
            let outcome = match receiver.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().unwrap_or(Ok(None)),
                // The load's task ended without an answer (it panicked).
                Err(_) => Err(BackendError::Unavailable(
                    "the load of the key failed; try again".into(),
                )),
            };
            outcomes.push(outcome);
        }
        (outcomes, settle)
    }
}

/// The keys of a running load, unregistered when dropped.
struct Registered {
    running: Arc<Mutex<HashMap<Bytes, watch::Receiver<Option<Outcome>>>>>,
    keys: Vec<Bytes>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            running.remove(key);
        }
    }
}

/// Held by the request that started a load until it has stored the rows; dropping it lets
/// the next read of the keys query again.
#[derive(Debug)]
pub struct Settle(Option<oneshot::Sender<()>>);

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(stored) = self.0.take() {
            let _ = stored.send(());
        }
    }
}

#[cfg(test)]
mod unit {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn row(value: &'static str) -> Row {
        Row {
            value: Bytes::from_static(value.as_bytes()),
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn concurrent_loads_of_one_key_make_one_query() {
        let flights = Arc::new(Flights::default());
        let queries = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for _ in 0..200 {
            let flights = flights.clone();
            let queries = queries.clone();
            waiting.push(tokio::spawn(async move {
                flights
                    .load(&[Bytes::from_static(b"hot")], move |keys| async move {
                        queries.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(keys.iter().map(|_| Some(row("v"))).collect())
                    })
                    .await
                    .0
            }));
        }
        for waiting in waiting {
            assert_eq!(
                waiting.await.expect("the read ends"),
                vec![Ok(Some(row("v")))]
            );
        }
        assert_eq!(queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_batch_queries_only_the_keys_no_load_is_running_for() {
        let flights = Arc::new(Flights::default());
        let (started, wait) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .load(&[Bytes::from_static(b"a")], move |_| async move {
                        let _ = started.send(());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(vec![Some(row("a"))])
                    })
                    .await
                    .0
            })
        };
        wait.await.expect("the first load started");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let batch = flights
            .load(
                &[
                    Bytes::from_static(b"a"),
                    Bytes::from_static(b"b"),
                    Bytes::from_static(b"b"),
                ],
                move |keys| async move {
                    seen.lock().expect("not poisoned").extend(keys.clone());
                    Ok(keys.iter().map(|_| None).collect())
                },
            )
            .await
            .0;
        assert_eq!(batch, vec![Ok(Some(row("a"))), Ok(None), Ok(None)]);
        assert_eq!(
            *asked.lock().expect("not poisoned"),
            vec![Bytes::from_static(b"b")]
        );
        assert_eq!(
            first.await.expect("the first load ends"),
            vec![Ok(Some(row("a")))]
        );
    }

    #[tokio::test]
    async fn a_failed_load_fails_every_waiter_and_the_next_request_tries_again() {
        let flights = Flights::default();
        let key = [Bytes::from_static(b"k")];
        let failed = flights
            .load(&key, |_| async {
                Err(BackendError::Unavailable("down".into()))
            })
            .await
            .0;
        assert_eq!(failed, vec![Err(BackendError::Unavailable("down".into()))]);
        let (loaded, settle) = flights
            .load(&key, |_| async { Ok(vec![Some(row("back"))]) })
            .await;
        assert_eq!(loaded, vec![Ok(Some(row("back")))]);
        // Until the rows are stored, a later read takes the answer without a query.
        let (again, _) = flights
            .load(&key, |_| async { Ok(vec![Some(row("queried again"))]) })
            .await;
        assert_eq!(again, vec![Ok(Some(row("back")))]);
        drop(settle);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (after, _) = flights
            .load(&key, |_| async { Ok(vec![Some(row("queried again"))]) })
            .await;
        assert_eq!(after, vec![Ok(Some(row("queried again")))]);
    }
}
