//! The janitor's settings as the operator's CronJob gives them. Every pod of the CronJob is
//! the same, so everything is a flag.

use std::path::PathBuf;
use std::time::Duration;

use super::{EnvVar, Invocation};
use crate::Schedule;
use crate::units::format_duration;

/// Everything the operator sets on the janitor container.
#[derive(Debug, Clone, PartialEq)]
pub struct JanitorArgs {
    /// Where the shared volume is mounted (`--data-dir`).
    pub data_dir: PathBuf,
    /// The expiry schedule and its time zone, the cache nodes' own (`--schedule`,
    /// `--time-zone`).
    pub schedule: Schedule,
    /// The clock-skew allowance before a bucket is deleted, in whole seconds (`--grace`).
    pub grace: Duration,
    /// The CacheCluster's namespace, a path component on the volume (`--namespace`).
    pub namespace: String,
    /// The CacheCluster's name, a path component on the volume (`--cluster`).
    pub cluster: String,
}

impl Invocation for JanitorArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            format!("--data-dir={}", self.data_dir.display()),
            format!("--schedule={}", self.schedule.expression()),
            format!("--time-zone={}", self.schedule.time_zone()),
            format!("--grace={}", format_duration(self.grace)),
            format!("--namespace={}", self.namespace),
            format!("--cluster={}", self.cluster),
        ]
    }

    /// None: nothing differs between the CronJob's pods and nothing is secret.
    fn to_env(&self) -> Vec<EnvVar> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_rendered_in_order() {
        let args = JanitorArgs {
            data_dir: PathBuf::from("/data"),
            schedule: Schedule::new("@hourly", None).expect("valid"),
            grace: Duration::from_secs(30),
            namespace: "web".into(),
            cluster: "sessions".into(),
        };
        assert_eq!(
            args.to_args(),
            [
                "--data-dir=/data",
                "--schedule=@hourly",
                "--time-zone=UTC",
                "--grace=30s",
                "--namespace=web",
                "--cluster=sessions",
            ]
        );
        assert!(args.to_env().is_empty());
    }
}
