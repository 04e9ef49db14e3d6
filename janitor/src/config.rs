//! The command line, as the operator's CronJob passes it, and its validation. Everything is
//! checked before the volume is touched, so a misconfigured CronJob fails loudly and deletes
//! nothing.

use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use clap::Parser;
use tidecache_contract::disk::{NameError, ObjectName};
use tidecache_contract::{Schedule, ScheduleError};

/// Deletes expired bucket directories of one CacheCluster from the shared volume.
#[derive(Debug, Clone, Parser)]
#[command(name = "janitor", version)]
pub struct Args {
    /// The shared volume's mount point.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The CacheCluster's namespace (a directory under the data dir).
    #[arg(long)]
    pub namespace: String,
    /// The CacheCluster's name (a directory under the namespace's).
    #[arg(long)]
    pub cluster: String,
    /// The expiry schedule (5-field cron expression), as in spec.expiry.schedule.
    #[arg(long, default_value = "* * * * *")]
    pub schedule: String,
    /// The schedule's IANA time zone, as in spec.expiry.timeZone (UTC when absent).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Clock-skew allowance: only buckets whose fire time is at or before now minus this are
    /// deleted. Seconds, or a number with s, m or h.
    #[arg(long, default_value = "60s")]
    pub grace: String,
    /// Report what would be deleted without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
    /// The current time (RFC 3339), for tests; the system clock when absent.
    #[arg(long)]
    pub now: Option<String>,
}

/// Why the command line was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--namespace` or `--cluster` is not a Kubernetes object name.
    #[error("--{flag}: {source}")]
    Name {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        source: NameError,
    },
    /// `--schedule` or `--time-zone` is invalid.
    #[error("--schedule/--time-zone: {0}")]
    Schedule(#[from] ScheduleError),
    /// `--grace` is not a duration.
    #[error("--grace \"{0}\" is not a duration; write e.g. 60s, 90, 5m or 1h")]
    Grace(String),
    /// `--now` is not RFC 3339.
    #[error("--now \"{text}\" is not an RFC 3339 time (e.g. 2026-11-23T14:05:00Z): {source}")]
    Now {
        /// The text given.
        text: String,
        /// The parser's complaint.
        source: chrono::ParseError,
    },
}

/// A validated run of the janitor.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared volume's mount point (may itself be a symbolic link, e.g. a mount path; the
    /// components below it may not).
    pub data_dir: PathBuf,
    /// The namespace directory's name.
    pub namespace: ObjectName,
    /// The cluster directory's name.
    pub cluster: ObjectName,
    /// The cluster's expiry schedule, used to report buckets that are not on it.
    pub schedule: Schedule,
    /// The clock-skew allowance.
    pub grace: Duration,
    /// The instant the run decides at.
    pub now: DateTime<Utc>,
    /// Whether to delete nothing and only report.
    pub dry_run: bool,
}

impl Args {
    /// Validates the arguments.
    ///
    /// # Errors
    /// [`ConfigError`] naming the flag that is wrong and how to fix it.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let name = |flag, text: &str| {
            ObjectName::new(text).map_err(|source| ConfigError::Name { flag, source })
        };
        let now = match &self.now {
            None => Utc::now(),
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map_err(|source| ConfigError::Now {
                    text: text.clone(),
                    source,
                })?
                .with_timezone(&Utc),
        };
        Ok(Config {
            namespace: name("namespace", &self.namespace)?,
            cluster: name("cluster", &self.cluster)?,
            schedule: Schedule::new(&self.schedule, self.time_zone.as_deref())?,
            grace: parse_grace(&self.grace).ok_or(ConfigError::Grace(self.grace))?,
            data_dir: self.data_dir,
            now,
            dry_run: self.dry_run,
        })
    }
}

/// Parses `--grace`: whole seconds, or a whole number followed by `s`, `m` or `h` (`60s`,
/// `90`, `5m`, `1h`), by the parser cache-node and the operator use for the same values.
pub fn parse_grace(text: &str) -> Option<Duration> {
    let parsed = tidecache_contract::units::parse_duration(text.trim()).ok()?;
    Duration::from_std(parsed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_forms() {
        assert_eq!(parse_grace("60s"), Some(Duration::seconds(60)));
        assert_eq!(parse_grace("90"), Some(Duration::seconds(90)));
        assert_eq!(parse_grace("5m"), Some(Duration::minutes(5)));
        assert_eq!(parse_grace("1h"), Some(Duration::hours(1)));
        assert_eq!(parse_grace("0s"), Some(Duration::zero()));
        for bad in ["", "s", "-1s", "1.5s", "1d", "abc", "99999999999999999999h"] {
            assert_eq!(parse_grace(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["janitor", "--data-dir", "/data", "--namespace", "default"];
            if !extra.contains(&"--cluster") {
                argv.extend(["--cluster", "demo"]);
            }
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).expect("parses").into_config()
        };
        assert!(args(&[]).is_ok());
        let message = |extra: &[&str]| args(extra).expect_err("refused").to_string();
        assert!(message(&["--grace", "soon"]).contains("--grace"));
        assert!(message(&["--now", "yesterday"]).contains("--now"));
        assert!(message(&["--schedule", "* * *"]).contains("--schedule"));
        assert!(message(&["--time-zone", "Mars/Base"]).contains("Mars/Base"));
        assert!(message(&["--cluster", "../etc"]).contains("--cluster"));
    }
}
