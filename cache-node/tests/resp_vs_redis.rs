//! A property test against the reference: random command sequences sent to cache-node and to
//! a real `redis-server` (apt `redis-server`, started by the test on a free port) must get the
//! same replies, reply by reply; remaining lifetimes and expiry instants may differ by the time
//! between the two calls. Both databases are flushed before each sequence.
//!
//! Left out on purpose: `SET ... EXAT|PXAT <past>` (cache-node deletes the key; Redis 7.0
//! keeps it logically expired and `DBSIZE` counts it until reclaimed; see docs/resp.md),
//! lifetimes past 2262-04-11 (cache-node's last expiry), `INCRBYFLOAT` on values whose
//! sum a `long double` and a double round differently (so it has keys of its own, `f0` and
//! `f1`, holding sums of binary fractions), and replies that depend on randomness
//! (`RANDOMKEY`, `SCAN`'s order).
//!
//! Timing: a relative lifetime is counted from each server's own clock, so two equal amounts
//! sent a moment apart give deadlines a millisecond apart or none, and `GT`/`LT` would
//! decide on that millisecond. The test waits a few milliseconds before a `GT`/`LT`, so the
//! later deadline is later on both servers. Absolute instants (`@s+N`, `@ms+N`, resolved when
//! sent, the same text to both) lie far from every relative one, so comparing one with the
//! other never depends on when it was sent.

mod resp_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use resp_support::{Conn, Server, Value};

/// How far remaining lifetimes and expiry instants may differ: the two servers are asked a
/// few milliseconds apart, and seconds are rounded.
fn tolerance(command: &str) -> i64 {
    match command {
        "TTL" | "EXPIRETIME" => 1,
        "PTTL" | "PEXPIRETIME" => 250,
        _ => 0,
    }
}

fn close(command: &str, a: &Value, b: &Value) -> bool {
    if command == "KEYS" {
        return sorted(a) == sorted(b);
    }
    match (a, b) {
        (Value::Integer(a), Value::Integer(b)) => (a - b).abs() <= tolerance(command),
        _ => a == b,
    }
}

/// `KEYS`' reply in a fixed order: neither server promises one.
fn sorted(reply: &Value) -> Value {
    match reply {
        Value::Array(keys) => {
            let mut keys = keys.clone();
            keys.sort_by_key(|key| format!("{key:?}"));
            Value::Array(keys)
        }
        other => other.clone(),
    }
}

/// An argument as sent: `@s+N` / `@ms+N` become the Unix time N seconds / milliseconds from
/// now, in that unit.
fn resolve(arg: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let offset = |rest: &str| rest.parse::<u64>().expect("a placeholder's offset");
    if let Some(seconds) = arg.strip_prefix("@s+") {
        (now.as_secs() + offset(seconds)).to_string()
    } else if let Some(millis) = arg.strip_prefix("@ms+") {
        (now.as_millis() + u128::from(offset(millis))).to_string()
    } else {
        arg.to_string()
    }
}

fn key() -> impl Strategy<Value = String> {
    (0..4_u8).prop_map(|i| format!("k{i}"))
}

/// The keys `INCRBYFLOAT` works on.
fn float_key() -> impl Strategy<Value = String> {
    (0..2_u8).prop_map(|i| format!("f{i}"))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("-7".to_string()),
        Just("42".to_string()),
        Just("abc".to_string()),
        Just(String::new()),
        Just("x y".to_string()),
        Just("9223372036854775807".to_string()),
    ]
}

fn words(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// One of `options`, as words.
fn one_of(options: &[&[&'static str]]) -> impl Strategy<Value = Vec<String>> + use<> {
    let options: Vec<Vec<String>> = options.iter().map(|option| words(option)).collect();
    proptest::sample::select(options)
}

fn set_options() -> impl Strategy<Value = Vec<String>> {
    one_of(&[
        &[],
        &["NX"],
        &["XX"],
        &["GET"],
        &["EX", "100"],
        &["PX", "100000"],
        &["EXAT", "@s+300"],
        &["PXAT", "@ms+400000"],
        &["KEEPTTL"],
        &["NX", "GET"],
        &["XX", "KEEPTTL", "GET"],
        &["EXAT", "@s+300", "GET", "NX"],
        &["EX", "0"],
        &["EX", "abc"],
        &["EX"],
        &["NX", "XX"],
        &["NX", "NX"],
        &["GET", "GET", "XX"],
        &["KEEPTTL", "KEEPTTL"],
        &["EX", "10", "KEEPTTL"],
        &["EX", "100", "EX", "200"],
        &["EX", "0", "EX", "100"],
        &["PX", "100000", "PX", "abc"],
        &["EX", "100", "PX", "100000"],
        &["EX", "0", "KEEPTTL"],
        &["EX", "abc", "NX", "XX"],
        &["EX", "-1", "BOGUS"],
        &["EX", "9223372036854775807"],
        &["PX", "9223372036854775807"],
    ])
}

fn getex_options() -> impl Strategy<Value = Vec<String>> {
    one_of(&[
        &[],
        &["EX", "150"],
        &["PX", "150000"],
        &["EXAT", "@s+400"],
        &["PXAT", "@ms+300000"],
        &["EXAT", "1"],
        &["PERSIST"],
        &["PERSIST", "PERSIST"],
        &["EX", "150", "EX", "200"],
        &["EX", "150", "PERSIST"],
        &["PERSIST", "EX", "150"],
        &["EX", "abc", "PERSIST"],
        &["EX", "0"],
        &["EX", "abc"],
        &["PX", "-7"],
        &["EX"],
        &["KEEPTTL"],
        &["NX"],
    ])
}

fn expire_options() -> impl Strategy<Value = Vec<String>> {
    one_of(&[
        &[],
        &[],
        &["NX"],
        &["XX"],
        &["GT"],
        &["LT"],
        &["NX", "LT"],
        &["GT", "LT"],
        &["XX", "GT"],
        &["BOGUS"],
    ])
}

/// An `EXPIRE`-family command with amounts of its unit and kind.
fn expire() -> impl Strategy<Value = Vec<String>> {
    let family = prop_oneof![
        Just((
            "EXPIRE",
            &["-1", "100", "200", "abc", "9223372036854775807"][..]
        )),
        Just((
            "PEXPIRE",
            &["-5", "100000", "150000", "9223372036854775807"][..]
        )),
        Just((
            "EXPIREAT",
            &["1", "@s+300", "@s+400", "-9223372036854775808"][..]
        )),
        Just((
            "PEXPIREAT",
            &["1", "@ms+300000", "@ms+400000", "-9223372036854775808"][..]
        )),
    ];
    (
        family,
        any::<proptest::sample::Index>(),
        key(),
        expire_options(),
    )
        .prop_map(|((name, amounts), amount, k, options)| {
            [
                vec![name.to_string(), k, amount.get(amounts).to_string()],
                options,
            ]
            .concat()
        })
}

/// One `INCRBYFLOAT` or another command on its keys.
fn float_command() -> impl Strategy<Value = Vec<String>> {
    // Binary fractions, so that a double and a `long double` hold every sum exactly; `1e-20`
    // is too small to show in 17 decimals.
    let increment = prop_oneof![
        Just("0.5"),
        Just("-1.25"),
        Just("3"),
        Just("1e2"),
        Just("0.125"),
        Just("5.0e3"),
        Just("1e-20"),
        Just("-1e-20"),
        Just("abc"),
        Just("inf"),
        Just(" 1"),
    ];
    let stored = prop_oneof![
        Just("1.5"),
        Just("-0.25"),
        Just("10"),
        Just("1e3"),
        Just("abc"),
        Just(" 2")
    ];
    prop_oneof![
        3 => (float_key(), increment).prop_map(|(k, by)| vec!["INCRBYFLOAT".into(), k, by.into()]),
        1 => (float_key(), stored).prop_map(|(k, v)| vec!["SET".into(), k, v.into()]),
        1 => float_key().prop_map(|k| vec!["GET".into(), k]),
        1 => float_key().prop_map(|k| vec!["INCR".into(), k]),
        1 => float_key().prop_map(|k| vec!["DEL".into(), k]),
        1 => float_key().prop_map(|k| vec!["EXPIRE".into(), k, "100".into()]),
        1 => float_key().prop_map(|k| vec!["TTL".into(), k]),
    ]
}

/// One random command.
fn command() -> impl Strategy<Value = Vec<String>> {
    let seconds = prop_oneof![Just("100"), Just("0"), Just("-1"), Just("abc")];
    let millis = prop_oneof![Just("100000"), Just("0"), Just("abc")];
    let integer = prop_oneof![
        (-100_i64..100).prop_map(|n| n.to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("abc".to_string()),
    ];
    prop_oneof![
        1 => key().prop_map(|k| vec!["GET".into(), k]),
        2 => (key(), value(), set_options())
            .prop_map(|(k, v, o)| [vec!["SET".into(), k, v], o].concat()),
        1 => (key(), value()).prop_map(|(k, v)| vec!["SETNX".into(), k, v]),
        1 => (key(), seconds, value()).prop_map(|(k, s, v)| vec!["SETEX".into(), k, s.into(), v]),
        1 => (key(), millis, value()).prop_map(|(k, ms, v)| vec!["PSETEX".into(), k, ms.into(), v]),
        1 => (key(), value()).prop_map(|(k, v)| vec!["GETSET".into(), k, v]),
        1 => key().prop_map(|k| vec!["GETDEL".into(), k]),
        2 => (key(), getex_options()).prop_map(|(k, o)| [vec!["GETEX".into(), k], o].concat()),
        1 => (key(), key()).prop_map(|(a, b)| vec!["MGET".into(), a, b]),
        1 => (key(), value(), key(), value()).prop_map(|(a, x, b, y)| vec!["MSET".into(), a, x, b, y]),
        1 => (key(), value(), key(), value()).prop_map(|(a, x, b, y)| vec!["MSETNX".into(), a, x, b, y]),
        1 => (key(), value()).prop_map(|(k, v)| vec!["APPEND".into(), k, v]),
        1 => key().prop_map(|k| vec!["STRLEN".into(), k]),
        1 => (key(), -10_i32..10, -10_i32..10).prop_map(|(k, s, e)| vec![
            "GETRANGE".into(),
            k,
            s.to_string(),
            e.to_string()
        ]),
        1 => (key(), prop_oneof![Just("-1"), Just("0"), Just("2"), Just("5"), Just("10")], value())
            .prop_map(|(k, o, v)| vec!["SETRANGE".into(), k, o.into(), v]),
        1 => key().prop_map(|k| vec!["INCR".into(), k]),
        1 => key().prop_map(|k| vec!["DECR".into(), k]),
        1 => (key(), integer.clone()).prop_map(|(k, n)| vec!["INCRBY".into(), k, n]),
        1 => (key(), integer).prop_map(|(k, n)| vec!["DECRBY".into(), k, n]),
        2 => float_command(),
        1 => (key(), key()).prop_map(|(a, b)| vec!["DEL".into(), a, b]),
        1 => key().prop_map(|k| vec!["UNLINK".into(), k]),
        1 => (key(), key()).prop_map(|(a, b)| vec!["EXISTS".into(), a, b]),
        1 => key().prop_map(|k| vec!["TYPE".into(), k]),
        4 => expire(),
        1 => key().prop_map(|k| vec!["TTL".into(), k]),
        1 => key().prop_map(|k| vec!["PTTL".into(), k]),
        1 => key().prop_map(|k| vec!["EXPIRETIME".into(), k]),
        1 => key().prop_map(|k| vec!["PEXPIRETIME".into(), k]),
        1 => key().prop_map(|k| vec!["PERSIST".into(), k]),
        1 => Just(words(&["DBSIZE"])),
        1 => Just(words(&["GET"])),
        1 => key().prop_map(|k| vec!["NOSUCH".into(), k]),
        1 => Just(words(&["MULTI"])),
        1 => Just(words(&["EXEC"])),
        1 => Just(words(&["DISCARD"])),
        1 => prop_oneof![Just("0"), Just("1")].prop_map(|db| vec!["SELECT".into(), db.into()]),
        1 => value().prop_map(|v| vec!["ECHO".into(), v]),
        1 => Just(words(&["PING"])),
        1 => Just(words(&["KEYS", "*"])),
    ]
}

/// Sends `command` to both servers and compares the replies; inside `MULTI` the `EXEC`
/// reply is compared element by element with each queued command's tolerance.
fn compare(
    ours: &mut Conn,
    theirs: &mut Conn,
    command: &[String],
    queued: &mut Option<Vec<String>>,
) -> Result<(), String> {
    if command.iter().any(|arg| arg == "GT" || arg == "LT") {
        // See the module documentation: a deadline now is later than any set before.
        std::thread::sleep(Duration::from_millis(3));
    }
    let command: Vec<String> = command.iter().map(|arg| resolve(arg)).collect();
    let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
    let mine = ours.call(&args);
    let reference = theirs.call(&args);
    let name = command[0].as_str();
    let agree = match (&mine, &reference, name) {
        (Value::Array(a), Value::Array(b), "EXEC") if queued.is_some() => {
            let names = queued.clone().unwrap_or_default();
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .zip(names.iter().chain(std::iter::repeat(&String::new())))
                    .all(|((a, b), name)| close(name, a, b))
        }
        _ => close(name, &mine, &reference),
    };
    // Track the transaction as the reference sees it.
    match (name, &reference) {
        ("MULTI", Value::Simple(ok)) if ok == "OK" => *queued = Some(Vec::new()),
        ("EXEC" | "DISCARD", _) => *queued = None,
        (_, Value::Simple(q)) if q == "QUEUED" => {
            if let Some(queued) = queued {
                queued.push(name.to_string());
            }
        }
        _ => {}
    }
    if agree {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: cache-node answered {mine:?}, redis-server {reference:?}"
        ))
    }
}

#[test]
fn random_command_sequences_get_the_replies_redis_gives() {
    let redis = Server::redis_server();
    let node = Server::cache_node(&["--resp-allow-flush"]);
    // A fixed seed: CI runs the same sequences every time.
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = proptest::collection::vec(command(), 1..40);
    let result = runner.run(&strategy, |commands| {
        let mut ours = node.connect();
        let mut theirs = redis.connect();
        for conn in [&mut ours, &mut theirs] {
            assert_eq!(conn.cmd(&["FLUSHALL"]), Value::Simple("OK".into()));
        }
        let mut queued = None;
        for command in &commands {
            compare(&mut ours, &mut theirs, command, &mut queued).map_err(TestCaseError::fail)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}\ncache-node's log:\n{}", node.log());
    }
}
