//! The operator's command line for the janitor ([`JanitorArgs`]) read by the janitor's own
//! parser, so that a flag renamed on one side fails here, not in the CronJob's first run.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use janitor::Args;
use tidecache_contract::Schedule;
use tidecache_contract::args::{Invocation, JanitorArgs};

/// Every field set, each to a value that is not the janitor's default, so that a setting that
/// does not arrive cannot pass for one that did.
fn janitor_args() -> JanitorArgs {
    JanitorArgs {
        data_dir: PathBuf::from("/data"),
        schedule: Schedule::new("*/5 * * * *", Some("Europe/Berlin")).expect("valid schedule"),
        grace: Duration::from_secs(90),
        namespace: "team-a".into(),
        cluster: "sessions".into(),
    }
}

#[test]
fn every_variable_is_one_the_janitor_reads() {
    let command = Args::command();
    for var in janitor_args().to_env() {
        assert!(
            command
                .get_arguments()
                .any(|arg| arg.get_env() == Some(OsStr::new(var.name))),
            "the janitor's Args declare no env = \"{}\"",
            var.name
        );
    }
}

#[test]
fn every_field_reaches_the_janitors_config() {
    let janitor = janitor_args();
    let config =
        Args::try_parse_from(std::iter::once("janitor".to_string()).chain(janitor.to_args()))
            .unwrap_or_else(|error| panic!("the janitor refuses the operator's flags: {error}"))
            .into_config()
            .unwrap_or_else(|error| panic!("the janitor refuses the operator's settings: {error}"));
    // Destructured without `..`: a field added to JanitorArgs does not compile here until it
    // is checked.
    let JanitorArgs {
        data_dir,
        schedule,
        grace,
        namespace,
        cluster,
    } = janitor;
    assert_eq!(config.data_dir, data_dir);
    assert_eq!(config.schedule, schedule);
    assert_eq!(
        config.grace,
        chrono::Duration::from_std(grace).expect("in range")
    );
    assert_eq!(config.namespace.as_str(), namespace);
    assert_eq!(config.cluster.as_str(), cluster);
    assert!(!config.dry_run, "the operator's janitor deletes");
}
