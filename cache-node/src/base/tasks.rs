//! Task ownership: every background task of the node (discovery, per-peer links, the
//! membership watcher, anti-entropy, the sweeper) is spawned through a [`Tasks`], which can
//! stop them and wait until each has ended. Shutdown can then happen in a stated order (see
//! `node`), and nothing runs on after the part it uses has been closed.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A group of tasks stopped together. Clones share the group.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    /// Every task spawned in the group, to wait for.
    tracker: TaskTracker,
    /// Cancelled to stop the group (and the groups made with [`Tasks::child`]).
    cancel: CancellationToken,
}

impl Tasks {
    /// An empty group.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// A group stopped with this one, or on its own with [`Tasks::stop`]: one layer's
    /// tasks (replication's, say) can be stopped before another's.
    pub fn child(&self) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            cancel: self.cancel.child_token(),
        }
    }

    /// Runs `task` until it ends or the group is stopped, whichever comes first. Must be
    /// called inside a tokio runtime.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Stops every task of the group and waits until each has ended (dropped what it held).
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Closes the group to new tasks and waits up to `grace` for its tasks to end on their
    /// own (connections finishing their last request), then stops the rest. Returns how
    /// many had to be stopped.
    pub async fn drain(&self, grace: std::time::Duration) -> usize {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.tracker.len();
        self.stop().await;
        left
    }

    /// Tasks of the group that have not ended.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_ends_every_task_and_waits_for_them() {
        let tasks = Tasks::new();
        let child = tasks.child();
        let ticks = Arc::new(AtomicUsize::new(0));
        for group in [&tasks, &child] {
            let ticks = ticks.clone();
            group.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(55)).await;
        child.stop().await;
        assert_eq!(child.running(), 0);
        assert_eq!(
            tasks.running(),
            1,
            "stopping a child leaves the parent's tasks"
        );
        tasks.stop().await;
        assert_eq!(tasks.running(), 0);
        let after = ticks.load(Ordering::SeqCst);
        assert!(after >= 5, "both tasks ran: {after}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            after,
            "nothing runs after stop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_that_end_and_stops_the_rest() {
        let tasks = Tasks::new();
        tasks.spawn(tokio::time::sleep(Duration::from_millis(10)));
        assert_eq!(tasks.drain(Duration::from_secs(1)).await, 0);
        let tasks = Tasks::new();
        tasks.spawn(tokio::time::sleep(Duration::from_millis(10)));
        tasks.spawn(std::future::pending());
        assert_eq!(tasks.drain(Duration::from_millis(100)).await, 1);
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn stopping_the_parent_stops_its_children() {
        let tasks = Tasks::new();
        let child = tasks.child();
        child.spawn(std::future::pending());
        tasks.stop().await;
        child.stop().await;
        assert_eq!(child.running(), 0);
    }
}
