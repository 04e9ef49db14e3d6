//! What the kubelet saw and decided about each container, in order: every probe result
//! with the run of failures it made, readiness changes and kills for failed probes.
//!
//! Tests about probes read this instead of inferring the kubelet's decisions from how
//! long they waited: "the pod was not restarted because the liveness probe never failed
//! `failureThreshold` times in a row" is then a fact to assert, not a race between the
//! test's sleep and the probe period on a loaded machine.

use std::time::Instant;

/// A probe the kubelet runs on a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Gates the other two until it has passed once.
    Startup,
    /// Kills the container at its failure threshold.
    Liveness,
    /// Decides whether the container is ready.
    Readiness,
}

/// One thing the kubelet saw or did, as it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A probe ran. `failures` is the run of consecutive failures it ends (0 when it
    /// passed), the number compared with the probe's `failureThreshold`.
    Probe {
        /// Which probe.
        kind: ProbeKind,
        /// Whether it passed.
        passed: bool,
        /// Consecutive failures including this one.
        failures: i32,
    },
    /// The readiness the kubelet reports for the container changed.
    Ready(bool),
    /// The kubelet killed the container because this probe reached its failure
    /// threshold (the restart policy then applies).
    Killed(ProbeKind),
}

/// An [`Observed`] event of one container of a pod, with when the kubelet noted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// When the kubelet noted it.
    pub at: Instant,
    /// The container's name.
    pub container: String,
    /// What it saw or did.
    pub event: Observed,
}

/// When a container first turned not ready in a stretch of observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unready {
    /// When the kubelet turned it not ready.
    pub at: Instant,
    /// The run of consecutive liveness failures at that moment.
    pub liveness_failures: i32,
}

/// What a stretch of observations of one container amounts to, for assertions about
/// its probes and restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The first time it turned not ready, if it did.
    pub unready: Option<Unready>,
    /// The longest run of consecutive liveness failures.
    pub longest_liveness_failures: i32,
    /// The probes whose failures made the kubelet kill it, in order.
    pub kills: Vec<ProbeKind>,
    /// Whether it was ready again after it last turned not ready.
    pub ready_again: bool,
}

impl Summary {
    /// Sums up the observations of `container` among `observations`.
    pub fn of(observations: &[Observation], container: &str) -> Self {
        let mut summary = Self::default();
        let mut liveness_failures = 0;
        for o in observations.iter().filter(|o| o.container == container) {
            match o.event {
                Observed::Probe {
                    kind: ProbeKind::Liveness,
                    failures,
                    ..
                } => {
                    liveness_failures = failures;
                    summary.longest_liveness_failures =
                        summary.longest_liveness_failures.max(failures);
                }
                Observed::Probe { .. } => {}
                Observed::Ready(false) => {
                    summary.ready_again = false;
                    summary.unready.get_or_insert(Unready {
                        at: o.at,
                        liveness_failures,
                    });
                }
                Observed::Ready(true) => summary.ready_again = summary.unready.is_some(),
                Observed::Killed(kind) => {
                    summary.kills.push(kind);
                    // The restarted container's probes count from zero.
                    liveness_failures = 0;
                }
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(container: &str, event: Observed) -> Observation {
        Observation {
            at: Instant::now(),
            container: container.into(),
            event,
        }
    }

    fn probe(kind: ProbeKind, failures: i32) -> Observed {
        Observed::Probe {
            kind,
            passed: failures == 0,
            failures,
        }
    }

    #[test]
    fn a_short_cut_turns_unready_before_liveness_gives_up() {
        use ProbeKind::{Liveness, Readiness};
        let seen = [
            at("c", probe(Readiness, 1)),
            at("c", probe(Liveness, 1)),
            at("other", probe(Liveness, 2)),
            at("c", probe(Readiness, 2)),
            at("c", Observed::Ready(false)),
            at("c", probe(Liveness, 2)),
            at("c", probe(Liveness, 0)),
            at("c", probe(Readiness, 0)),
            at("c", Observed::Ready(true)),
        ];
        let summary = Summary::of(&seen, "c");
        assert_eq!(summary.unready.map(|u| u.liveness_failures), Some(1));
        assert_eq!(summary.unready.map(|u| u.at), Some(seen[4].at));
        assert_eq!(summary.longest_liveness_failures, 2);
        assert!(summary.kills.is_empty());
        assert!(summary.ready_again);
    }

    #[test]
    fn a_kill_resets_the_run_and_counts() {
        use ProbeKind::Liveness;
        let seen = [
            at("c", probe(Liveness, 1)),
            at("c", probe(Liveness, 2)),
            at("c", probe(Liveness, 3)),
            at("c", Observed::Killed(Liveness)),
            at("c", Observed::Ready(false)),
        ];
        let summary = Summary::of(&seen, "c");
        assert_eq!(summary.kills, [Liveness]);
        assert_eq!(summary.longest_liveness_failures, 3);
        assert_eq!(summary.unready.map(|u| u.liveness_failures), Some(0));
        assert!(!summary.ready_again);
        assert_eq!(Summary::of(&seen, "other"), Summary::default());
    }
}
