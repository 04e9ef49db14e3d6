//! The command table and the dispatcher: looks a request's name up, checks its arity and
//! the session's state (authentication, an open `MULTI`, a loading cache), and runs it.
//!
//! # Layout
//! - this file: [`COMMANDS`] (name, arity, flags, key positions, group, summary: what
//!   `COMMAND` reports and what the dispatcher checks), [`execute`], argument helpers.
//! - `strings`: `GET`, `SET` and the other string commands; `keys`: `DEL`, `EXPIRE`,
//!   `SCAN` and the other keyspace commands; `server`: connection and server commands;
//!   `transaction`: `MULTI`/`EXEC`/`DISCARD`/`WATCH`/`UNWATCH`; `cluster`: `CLUSTER`,
//!   `READONLY`/`READWRITE`, and the `-CROSSSLOT`/`-MOVED` checks of partitioned mode.

mod cluster;
mod keys;
mod pubsub;
mod server;
mod strings;
mod transaction;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::RespState;
use super::connection::Session;
use super::error::CommandError;
use super::notify::Kind;
use super::reply::{Protocol, Reply};
use crate::base::time::Timestamp;
use crate::cache::Lifetime;
use crate::replication::Replicated;

/// What a command does, to dispatch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Append,
    Asking,
    Auth,
    Client,
    Cluster,
    Command,
    Config,
    Dbsize,
    Decr,
    Decrby,
    Del,
    Discard,
    Echo,
    Exec,
    Exists,
    Expire,
    Expireat,
    Expiretime,
    Flushall,
    Flushdb,
    Get,
    Getdel,
    Getex,
    Getrange,
    Getset,
    Hello,
    Incr,
    Incrby,
    Incrbyfloat,
    Info,
    Keys,
    Mget,
    Mset,
    Msetnx,
    Multi,
    Persist,
    Pexpire,
    Pexpireat,
    Pexpiretime,
    Ping,
    Psetex,
    Psubscribe,
    Pttl,
    Punsubscribe,
    Quit,
    Randomkey,
    Readonly,
    Readwrite,
    Reset,
    Scan,
    Select,
    Set,
    Setex,
    Setnx,
    Setrange,
    Strlen,
    Subscribe,
    Time,
    Ttl,
    Type,
    Unlink,
    Unsubscribe,
    Unwatch,
    Wait,
    Watch,
}

/// One command as `COMMAND INFO` describes it.
#[derive(Debug)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// What it does.
    pub cmd: Cmd,
    /// Redis' arity: `n` exactly n arguments (the name included), `-n` at least n.
    pub arity: i64,
    /// Redis' command flags.
    pub flags: &'static [&'static str],
    /// First key, last key (-1: the last argument), step between keys; 0, 0, 0 without keys.
    pub keys: (i64, i64, i64),
    /// The group `COMMAND DOCS` reports.
    pub group: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const RF: &[&str] = &["readonly", "fast"];
const R: &[&str] = &["readonly"];
const WD: &[&str] = &["write", "fast"];
const CONN: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];
const CONN_AUTH: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const PUBSUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

macro_rules! spec {
    ($name:literal, $cmd:ident, $arity:expr, $flags:expr, $keys:expr, $group:literal, $summary:literal) => {
        Spec {
            name: $name,
            cmd: Cmd::$cmd,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            summary: $summary,
        }
    };
}

/// Every command served.
pub static COMMANDS: &[Spec] = &[
    spec!(
        "append",
        Append,
        3,
        WF,
        (1, 1, 1),
        "string",
        "Appends a string to the value of a key. Creates the key if it doesn't exist."
    ),
    spec!(
        "asking",
        Asking,
        1,
        &["fast"],
        (0, 0, 0),
        "cluster",
        "Signals that a cluster client is following an -ASK redirect."
    ),
    spec!(
        "auth",
        Auth,
        -2,
        CONN,
        (0, 0, 0),
        "connection",
        "Authenticates the connection."
    ),
    spec!(
        "client",
        Client,
        -2,
        CONN_AUTH,
        (0, 0, 0),
        "connection",
        "A container for client connection commands."
    ),
    spec!(
        "cluster",
        Cluster,
        -2,
        &["stale"],
        (0, 0, 0),
        "cluster",
        "A container for Redis Cluster commands."
    ),
    spec!(
        "command",
        Command,
        -1,
        &["loading", "stale"],
        (0, 0, 0),
        "server",
        "Returns detailed information about all commands."
    ),
    spec!(
        "config",
        Config,
        -2,
        &["admin", "noscript", "loading", "stale"],
        (0, 0, 0),
        "server",
        "A container for server configuration commands."
    ),
    spec!(
        "dbsize",
        Dbsize,
        1,
        RF,
        (0, 0, 0),
        "server",
        "Returns the number of keys in the database."
    ),
    spec!(
        "decr",
        Decr,
        2,
        WF,
        (1, 1, 1),
        "string",
        "Decrements the integer value of a key by one."
    ),
    spec!(
        "decrby",
        Decrby,
        3,
        WF,
        (1, 1, 1),
        "string",
        "Decrements a number from the integer value of a key."
    ),
    spec!(
        "del",
        Del,
        -2,
        &["write"],
        (1, -1, 1),
        "generic",
        "Deletes one or more keys."
    ),
    spec!(
        "discard",
        Discard,
        1,
        TX,
        (0, 0, 0),
        "transactions",
        "Discards a transaction."
    ),
    spec!(
        "echo",
        Echo,
        2,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Returns the given string."
    ),
    spec!(
        "exec",
        Exec,
        1,
        &["noscript", "loading", "stale"],
        (0, 0, 0),
        "transactions",
        "Executes all commands in a transaction."
    ),
    spec!(
        "exists",
        Exists,
        -2,
        RF,
        (1, -1, 1),
        "generic",
        "Determines whether one or more keys exist."
    ),
    spec!(
        "expire",
        Expire,
        -3,
        WD,
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key in seconds."
    ),
    spec!(
        "expireat",
        Expireat,
        -3,
        WD,
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key to a Unix timestamp."
    ),
    spec!(
        "expiretime",
        Expiretime,
        2,
        RF,
        (1, 1, 1),
        "generic",
        "Returns the expiration time of a key as a Unix timestamp."
    ),
    spec!(
        "flushall",
        Flushall,
        -1,
        &["write"],
        (0, 0, 0),
        "server",
        "Removes all keys from all databases."
    ),
    spec!(
        "flushdb",
        Flushdb,
        -1,
        &["write"],
        (0, 0, 0),
        "server",
        "Remove all keys from the current database."
    ),
    spec!(
        "get",
        Get,
        2,
        RF,
        (1, 1, 1),
        "string",
        "Returns the string value of a key."
    ),
    spec!(
        "getdel",
        Getdel,
        2,
        WD,
        (1, 1, 1),
        "string",
        "Returns the string value of a key after deleting the key."
    ),
    spec!(
        "getex",
        Getex,
        -2,
        WD,
        (1, 1, 1),
        "string",
        "Returns the string value of a key after setting its expiration time."
    ),
    spec!(
        "getrange",
        Getrange,
        4,
        R,
        (1, 1, 1),
        "string",
        "Returns a substring of the string stored at a key."
    ),
    spec!(
        "getset",
        Getset,
        3,
        WF,
        (1, 1, 1),
        "string",
        "Returns the previous string value of a key after setting it to a new value."
    ),
    spec!(
        "hello",
        Hello,
        -1,
        CONN,
        (0, 0, 0),
        "connection",
        "Handshakes with the Redis server."
    ),
    spec!(
        "incr",
        Incr,
        2,
        WF,
        (1, 1, 1),
        "string",
        "Increments the integer value of a key by one."
    ),
    spec!(
        "incrby",
        Incrby,
        3,
        WF,
        (1, 1, 1),
        "string",
        "Increments the integer value of a key by a number."
    ),
    spec!(
        "incrbyfloat",
        Incrbyfloat,
        3,
        WF,
        (1, 1, 1),
        "string",
        "Increment the floating point value of a key by a number."
    ),
    spec!(
        "info",
        Info,
        -1,
        &["loading", "stale"],
        (0, 0, 0),
        "server",
        "Returns information and statistics about the server."
    ),
    spec!(
        "keys",
        Keys,
        2,
        R,
        (0, 0, 0),
        "generic",
        "Returns all key names that match a pattern."
    ),
    spec!(
        "mget",
        Mget,
        -2,
        RF,
        (1, -1, 1),
        "string",
        "Atomically returns the string values of one or more keys."
    ),
    spec!(
        "mset",
        Mset,
        -3,
        W,
        (1, -1, 2),
        "string",
        "Creates or modifies the value of one or more keys."
    ),
    spec!(
        "msetnx",
        Msetnx,
        -3,
        W,
        (1, -1, 2),
        "string",
        "Modifies the value of one or more keys only when all keys don't exist."
    ),
    spec!(
        "multi",
        Multi,
        1,
        TX,
        (0, 0, 0),
        "transactions",
        "Starts a transaction."
    ),
    spec!(
        "persist",
        Persist,
        2,
        WD,
        (1, 1, 1),
        "generic",
        "Removes the expiration time of a key."
    ),
    spec!(
        "pexpire",
        Pexpire,
        -3,
        WD,
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key in milliseconds."
    ),
    spec!(
        "pexpireat",
        Pexpireat,
        -3,
        WD,
        (1, 1, 1),
        "generic",
        "Sets the expiration time of a key to a Unix milliseconds timestamp."
    ),
    spec!(
        "pexpiretime",
        Pexpiretime,
        2,
        RF,
        (1, 1, 1),
        "generic",
        "Returns the expiration time of a key as a Unix milliseconds timestamp."
    ),
    spec!(
        "ping",
        Ping,
        -1,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Returns the server's liveliness response."
    ),
    spec!(
        "psetex",
        Psetex,
        4,
        W,
        (1, 1, 1),
        "string",
        "Sets both string value and expiration time in milliseconds of a key."
    ),
    spec!(
        "psubscribe",
        Psubscribe,
        -2,
        PUBSUB,
        (0, 0, 0),
        "pubsub",
        "Listens for messages published to channels that match one or more patterns."
    ),
    spec!(
        "pttl",
        Pttl,
        2,
        RF,
        (1, 1, 1),
        "generic",
        "Returns the expiration time in milliseconds of a key."
    ),
    spec!(
        "punsubscribe",
        Punsubscribe,
        -1,
        PUBSUB,
        (0, 0, 0),
        "pubsub",
        "Stops listening to messages published to channels that match one or more patterns."
    ),
    spec!(
        "quit",
        Quit,
        -1,
        CONN,
        (0, 0, 0),
        "connection",
        "Closes the connection."
    ),
    spec!(
        "randomkey",
        Randomkey,
        1,
        R,
        (0, 0, 0),
        "generic",
        "Returns a random key name from the database."
    ),
    spec!(
        "readonly",
        Readonly,
        1,
        &["loading", "stale", "fast"],
        (0, 0, 0),
        "cluster",
        "Enables read-only queries for a connection to a Redis Cluster replica node."
    ),
    spec!(
        "readwrite",
        Readwrite,
        1,
        &["loading", "stale", "fast"],
        (0, 0, 0),
        "cluster",
        "Enables read-write queries for a connection to a Redis Cluster replica node."
    ),
    spec!(
        "reset",
        Reset,
        1,
        CONN,
        (0, 0, 0),
        "connection",
        "Resets the connection."
    ),
    spec!(
        "scan",
        Scan,
        -2,
        R,
        (0, 0, 0),
        "generic",
        "Iterates over the key names in the database."
    ),
    spec!(
        "select",
        Select,
        2,
        CONN_AUTH,
        (0, 0, 0),
        "connection",
        "Changes the selected database."
    ),
    spec!(
        "set",
        Set,
        -3,
        W,
        (1, 1, 1),
        "string",
        "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist."
    ),
    spec!(
        "setex",
        Setex,
        4,
        W,
        (1, 1, 1),
        "string",
        "Sets the string value and expiration time of a key. Creates the key if it doesn't exist."
    ),
    spec!(
        "setnx",
        Setnx,
        3,
        WF,
        (1, 1, 1),
        "string",
        "Set the string value of a key only when the key doesn't exist."
    ),
    spec!(
        "setrange",
        Setrange,
        4,
        W,
        (1, 1, 1),
        "string",
        "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist."
    ),
    spec!(
        "strlen",
        Strlen,
        2,
        RF,
        (1, 1, 1),
        "string",
        "Returns the length of a string value."
    ),
    spec!(
        "subscribe",
        Subscribe,
        -2,
        PUBSUB,
        (0, 0, 0),
        "pubsub",
        "Listens for messages published to channels."
    ),
    spec!(
        "time",
        Time,
        1,
        &["loading", "stale", "fast"],
        (0, 0, 0),
        "server",
        "Returns the server time."
    ),
    spec!(
        "ttl",
        Ttl,
        2,
        RF,
        (1, 1, 1),
        "generic",
        "Returns the expiration time in seconds of a key."
    ),
    spec!(
        "type",
        Type,
        2,
        RF,
        (1, 1, 1),
        "generic",
        "Determines the type of value stored at a key."
    ),
    spec!(
        "unlink",
        Unlink,
        -2,
        WD,
        (1, -1, 1),
        "generic",
        "Asynchronously deletes one or more keys."
    ),
    spec!(
        "unsubscribe",
        Unsubscribe,
        -1,
        PUBSUB,
        (0, 0, 0),
        "pubsub",
        "Stops listening to messages posted to channels."
    ),
    spec!(
        "unwatch",
        Unwatch,
        1,
        TX,
        (0, 0, 0),
        "transactions",
        "Forgets about watched keys of a transaction."
    ),
    spec!(
        "wait",
        Wait,
        3,
        &["noscript"],
        (0, 0, 0),
        "generic",
        "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed."
    ),
    spec!(
        "watch",
        Watch,
        -2,
        TX,
        (1, -1, 1),
        "transactions",
        "Monitors changes to keys to determine the execution of a transaction."
    ),
];

/// The longest command name.
const LONGEST_NAME: usize = 16;

impl Spec {
    /// Whether `args` (the name included) satisfy the arity.
    fn arity_holds(&self, args: usize) -> bool {
        let args = args as i64;
        if self.arity >= 0 {
            args == self.arity
        } else {
            args >= -self.arity
        }
    }

    /// Whether a RESP2 connection in subscribed mode may run it.
    fn allowed_subscribed(&self) -> bool {
        matches!(
            self.cmd,
            Cmd::Subscribe
                | Cmd::Psubscribe
                | Cmd::Unsubscribe
                | Cmd::Punsubscribe
                | Cmd::Ping
                | Cmd::Quit
                | Cmd::Reset
        )
    }

    /// Whether the flags include `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }
}

/// The command named `name` (any case); no allocation.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    static BY_NAME: OnceLock<HashMap<&'static [u8], &'static Spec>> = OnceLock::new();
    if name.len() > LONGEST_NAME {
        return None;
    }
    let mut lower = [0; LONGEST_NAME];
    for (to, from) in lower.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    BY_NAME
        .get_or_init(|| {
            COMMANDS
                .iter()
                .map(|spec| (spec.name.as_bytes(), spec))
                .collect()
        })
        .get(&lower[..name.len()])
        .copied()
}

/// What a command runs with.
pub struct Ctx<'a> {
    /// The front end's shared state.
    pub state: &'a RespState,
    /// The connection's session.
    pub session: &'a mut Session,
}

/// Runs one request (`args[0]` is the name) and writes its reply; never fails, a refusal is
/// the reply.
pub async fn execute(
    state: &RespState,
    session: &mut Session,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) {
    let mut ctx = Ctx { state, session };
    if let Err(error) = dispatch(&mut ctx, args, reply).await {
        if ctx.session.multi.is_some() && error.aborts_transaction() {
            ctx.session.multi_failed = true;
        }
        reply.command_error(&error);
    }
    // `ASKING` lasts for the next command only, or through a transaction it opened until
    // `EXEC` or `DISCARD`, as Redis keeps it.
    if ctx.session.multi.is_none() && !args.first().is_some_and(|name| is(name, "asking")) {
        ctx.session.asking = false;
    }
}

/// Whether `args` is a `SET key value` without options that may join a run of them
/// ([`execute_set_run`]): outside `MULTI` and subscribed mode, authenticated, loaded.
pub fn joins_set_run(state: &RespState, session: &Session, args: &[Bytes]) -> bool {
    args.len() == 3
        && is(&args[0], "set")
        && session.authenticated
        && session.multi.is_none()
        && !session.asking
        && !session.subscriptions.active()
        && state.cache.is_loaded()
        && cluster::serves_here(state, &args[1])
}

/// Runs consecutive requests of a pipeline that [`joins_set_run`] admitted, as one batch of
/// the write path, and writes their replies in order.
pub async fn execute_set_run(
    state: &RespState,
    session: &mut Session,
    requests: &[Vec<Bytes>],
    reply: &mut Reply<'_>,
) {
    state
        .stats
        .commands
        .fetch_add(requests.len() as u64, Ordering::Relaxed);
    strings::set_run(&mut Ctx { state, session }, requests, reply).await;
}

async fn dispatch(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let Some((name, rest)) = args.split_first() else {
        return Ok(());
    };
    let Some(spec) = lookup(name) else {
        return Err(CommandError::unknown(name, rest));
    };
    if !spec.arity_holds(args.len()) {
        return Err(CommandError::WrongArity(spec.name.to_string()));
    }
    if !ctx.session.authenticated && !spec.has("no_auth") {
        return Err(CommandError::NoAuth);
    }
    if ctx.session.subscriptions.active()
        && ctx.session.protocol == Protocol::Resp2
        && !spec.allowed_subscribed()
    {
        return Err(CommandError::SubscribedContext(spec.name));
    }
    cluster::check(ctx, spec, args).await?;
    if ctx.session.multi.is_some() {
        if spec.cmd == Cmd::Exec {
            cluster::check_exec(ctx).await?;
        }
        return transaction::in_multi(ctx, spec, args, reply).await;
    }
    run(ctx, spec, args, reply).await
}

/// Runs a command outside `MULTI` (or as part of `EXEC`).
async fn run(
    ctx: &mut Ctx<'_>,
    spec: &Spec,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    if !spec.has("loading") && !ctx.state.cache.is_loaded() {
        return Err(CommandError::Loading);
    }
    ctx.state.stats.commands.fetch_add(1, Ordering::Relaxed);
    let args = &args[1..];
    match spec.cmd {
        Cmd::Get => strings::get(ctx, args, reply).await,
        Cmd::Set => strings::set(ctx, args, reply).await,
        Cmd::Setnx => strings::setnx(ctx, args, reply).await,
        Cmd::Setex => strings::setex(ctx, args, reply, Unit::Seconds, "setex").await,
        Cmd::Psetex => strings::setex(ctx, args, reply, Unit::Millis, "psetex").await,
        Cmd::Getex => strings::getex(ctx, args, reply).await,
        Cmd::Getdel => strings::getdel(ctx, args, reply).await,
        Cmd::Getset => strings::getset(ctx, args, reply).await,
        Cmd::Mget => strings::mget(ctx, args, reply).await,
        Cmd::Mset => strings::mset(ctx, args, reply).await,
        Cmd::Msetnx => strings::msetnx(ctx, args, reply).await,
        Cmd::Append => strings::append(ctx, args, reply).await,
        Cmd::Strlen => strings::strlen(ctx, args, reply).await,
        Cmd::Getrange => strings::getrange(ctx, args, reply).await,
        Cmd::Setrange => strings::setrange(ctx, args, reply).await,
        Cmd::Incr => strings::incr_by(ctx, &args[0], 1, reply).await,
        Cmd::Decr => strings::incr_by(ctx, &args[0], -1, reply).await,
        Cmd::Incrby => {
            let by = integer(&args[1])?;
            strings::incr_by(ctx, &args[0], by, reply).await
        }
        Cmd::Decrby => {
            let by = integer(&args[1])?
                .checked_neg()
                .ok_or(CommandError::DecrementOverflow)?;
            strings::incr_by(ctx, &args[0], by, reply).await
        }
        Cmd::Incrbyfloat => strings::incrbyfloat(ctx, args, reply).await,
        Cmd::Del | Cmd::Unlink => keys::del(ctx, args, reply).await,
        Cmd::Exists => keys::exists(ctx, args, reply).await,
        Cmd::Type => keys::key_type(ctx, args, reply).await,
        Cmd::Expire => keys::expire(ctx, args, reply, Unit::Seconds, false, "expire").await,
        Cmd::Pexpire => keys::expire(ctx, args, reply, Unit::Millis, false, "pexpire").await,
        Cmd::Expireat => keys::expire(ctx, args, reply, Unit::Seconds, true, "expireat").await,
        Cmd::Pexpireat => keys::expire(ctx, args, reply, Unit::Millis, true, "pexpireat").await,
        Cmd::Ttl => keys::ttl(ctx, args, reply, Unit::Seconds, false).await,
        Cmd::Pttl => keys::ttl(ctx, args, reply, Unit::Millis, false).await,
        Cmd::Expiretime => keys::ttl(ctx, args, reply, Unit::Seconds, true).await,
        Cmd::Pexpiretime => keys::ttl(ctx, args, reply, Unit::Millis, true).await,
        Cmd::Persist => keys::persist(ctx, args, reply).await,
        Cmd::Scan => keys::scan(ctx, args, reply),
        Cmd::Keys => keys::keys(ctx, args, reply),
        Cmd::Randomkey => keys::randomkey(ctx, reply),
        Cmd::Dbsize => {
            reply.integer(ctx.state.cache.key_count().keys as i64);
            Ok(())
        }
        Cmd::Flushdb => keys::flush(ctx, args, reply, "FLUSHDB").await,
        Cmd::Flushall => keys::flush(ctx, args, reply, "FLUSHALL").await,
        Cmd::Ping if ctx.session.subscriptions.active() && reply.protocol() == Protocol::Resp2 => {
            pubsub::ping_subscribed(args, reply)
        }
        Cmd::Ping => server::ping(args, reply),
        Cmd::Subscribe => pubsub::subscribe(ctx, Kind::Channel, args, reply),
        Cmd::Psubscribe => pubsub::subscribe(ctx, Kind::Pattern, args, reply),
        Cmd::Unsubscribe => pubsub::unsubscribe(ctx, Kind::Channel, args, reply),
        Cmd::Punsubscribe => pubsub::unsubscribe(ctx, Kind::Pattern, args, reply),
        Cmd::Echo => {
            reply.bulk(&args[0]);
            Ok(())
        }
        Cmd::Hello => server::hello(ctx, args, reply),
        Cmd::Auth => server::auth(ctx, args, reply),
        Cmd::Client => server::client(ctx, args, reply),
        Cmd::Select => server::select(args, reply),
        Cmd::Quit => {
            ctx.session.quit = true;
            reply.ok();
            Ok(())
        }
        Cmd::Reset => server::reset(ctx, reply),
        Cmd::Command => server::command(args, reply),
        Cmd::Cluster => cluster::cluster(ctx, args, reply).await,
        Cmd::Asking => cluster::asking(ctx, reply),
        Cmd::Readonly => cluster::readonly(ctx, true, reply),
        Cmd::Readwrite => cluster::readonly(ctx, false, reply),
        Cmd::Info => server::info(ctx, args, reply),
        Cmd::Config => server::config(ctx, args, reply),
        Cmd::Time => server::time(reply),
        Cmd::Wait => server::wait(ctx, args, reply).await,
        Cmd::Multi | Cmd::Exec | Cmd::Discard | Cmd::Watch | Cmd::Unwatch => {
            transaction::run_outside(ctx, spec.cmd, args, reply).await
        }
    }
}

/// The unit of a relative or absolute expiry argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `EX`, `EXAT`, `EXPIRE`, `TTL`.
    Seconds,
    /// `PX`, `PXAT`, `PEXPIRE`, `PTTL`.
    Millis,
}

impl Unit {
    /// `amount` of this unit in milliseconds, if it fits.
    pub fn millis(self, amount: i64) -> Option<i64> {
        match self {
            Unit::Seconds => amount.checked_mul(1000),
            Unit::Millis => Some(amount),
        }
    }
}

/// The lifetime a write asks for, before the policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Nothing asked: the default TTL, or none.
    Default,
    /// `KEEPTTL`: whatever the key has now.
    Keep,
    /// Until this instant (`EX`/`PX` are turned into one at parse time).
    Until(Timestamp),
}

/// What an asked lifetime comes to under the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Store with this expiry.
    At(Option<Timestamp>),
    /// The instant has passed: the key is deleted (Redis' behaviour for an expiry in the
    /// past).
    Past,
}

impl Ctx<'_> {
    /// `ask` for a key whose current expiry is `current` (`None` if it has none or is
    /// absent), under the cache's lifetime policy, at `now`.
    pub fn expiry(
        &self,
        ask: Ask,
        current: Option<Option<Timestamp>>,
        now: Timestamp,
    ) -> Result<Expiry, CommandError> {
        let limits = self.state.cache.limits();
        let lifetime = match ask {
            Ask::Until(at) if at <= now => return Ok(Expiry::Past),
            Ask::Until(at) => Lifetime::Until(at),
            Ask::Keep => match current {
                Some(Some(at)) if at <= now => return Ok(Expiry::Past),
                // The entry was written under the same policy, and its lifetime only shrank.
                Some(Some(at)) => return Ok(Expiry::At(Some(at))),
                Some(None) if limits.max_ttl.is_none() => return Ok(Expiry::At(None)),
                _ => Lifetime::Default,
            },
            Ask::Default => Lifetime::Default,
        };
        Ok(Expiry::At(limits.expiry(lifetime, now)?))
    }

    /// The expiry of a write that asks for no lifetime: the default TTL, or none.
    pub fn default_expiry(&self, now: Timestamp) -> Result<Option<Timestamp>, CommandError> {
        Ok(self.state.cache.limits().expiry(Lifetime::Default, now)?)
    }

    /// A key a write may use, copied out of the request buffer.
    pub fn key(&self, key: &[u8]) -> Result<Bytes, CommandError> {
        let max = self.state.cache.limits().max_key_bytes;
        if key.is_empty() || key.len() > max {
            return Err(CommandError::BadKey {
                len: key.len(),
                max,
            });
        }
        Ok(Bytes::copy_from_slice(key))
    }

    /// Refuses a value above the value limit.
    pub fn check_value_len(&self, len: usize) -> Result<(), CommandError> {
        let max = self.state.cache.limits().max_value_bytes;
        if len > max {
            return Err(CommandError::ValueTooLarge { len, max });
        }
        Ok(())
    }

    /// A value a write may store, copied out of the request buffer (a slice would keep the
    /// whole read buffer alive as long as the entry).
    pub fn value(&self, value: &[u8]) -> Result<Bytes, CommandError> {
        self.check_value_len(value.len())?;
        Ok(Bytes::copy_from_slice(value))
    }

    /// Remembers a write's acknowledgements for the connection's next `WAIT`.
    pub fn track(&mut self, replicated: Option<&Replicated>) {
        self.session.acks.track(replicated);
    }

    /// Counts a key read for `INFO stats`.
    pub fn count_read(&self, found: bool) {
        self.state.stats.read(found);
    }
}

/// An argument that must be a 64-bit integer, spelled as Redis accepts it (no sign but `-`,
/// no leading zeros, no spaces).
pub fn integer(arg: &[u8]) -> Result<i64, CommandError> {
    parse_integer(arg).ok_or(CommandError::NotInteger)
}

/// [`integer`] without the error: stored values are parsed the same way.
pub fn parse_integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [] => false,
        [b'0'] => text.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical || text.len() > 20 {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// An argument that must be a float.
pub fn float(arg: &[u8]) -> Result<f64, CommandError> {
    parse_float(arg).ok_or(CommandError::NotFloat)
}

/// A float as Redis reads one (`strtold` over the whole text, no surrounding spaces, no NaN).
pub fn parse_float(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty()
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| !value.is_nan())
}

/// Whether `arg` is `option` in any case.
pub fn is(arg: &[u8], option: &str) -> bool {
    arg.eq_ignore_ascii_case(option.as_bytes())
}

/// The instant `amount` units after `now` (relative) or at `amount` units since the epoch
/// (absolute), refusing non-positive amounts and overflows as Redis does.
pub fn deadline(
    amount: i64,
    unit: Unit,
    absolute: bool,
    now: Timestamp,
    command: &'static str,
) -> Result<Timestamp, CommandError> {
    let invalid = CommandError::InvalidExpire(command);
    let millis = unit.millis(amount).ok_or(invalid.clone())?;
    let at = if absolute {
        millis
    } else {
        now.as_millis().checked_add(millis).ok_or(invalid)?
    };
    Ok(Timestamp::from_millis(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_redis_parses_them() {
        for (text, value) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
        ] {
            assert_eq!(parse_integer(text.as_bytes()), value, "{text}");
        }
        for text in [
            "",
            "-",
            "01",
            "-0",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
            "abc",
        ] {
            assert_eq!(parse_integer(text.as_bytes()), None, "{text}");
        }
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_float(b"1.5e2"), Some(150.0));
        assert_eq!(parse_float(b" 1"), None);
        assert_eq!(parse_float(b"nan"), None);
    }

    #[test]
    fn every_command_is_found_in_any_case_and_no_name_is_too_long() {
        for spec in COMMANDS {
            assert!(spec.name.len() <= LONGEST_NAME, "{}", spec.name);
            assert_eq!(
                lookup(spec.name.to_uppercase().as_bytes()).map(|s| s.cmd),
                Some(spec.cmd)
            );
        }
        assert!(lookup(b"nosuchcommand").is_none());
        let mut names: Vec<_> = COMMANDS.iter().map(|spec| spec.name).collect();
        names.dedup();
        assert_eq!(
            names.len(),
            COMMANDS.len(),
            "the table is sorted and has no duplicates"
        );
    }
}
