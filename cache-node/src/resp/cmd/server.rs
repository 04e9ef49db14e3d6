//! Connection and server commands: the handshake (`HELLO`, `AUTH`, `CLIENT`, `SELECT`),
//! introspection client libraries run at connect (`COMMAND`, `INFO`, `CONFIG GET`), and
//! `PING`, `TIME`, `RESET`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{COMMANDS, Ctx, Spec, integer, is, lookup, transaction};
use crate::resp::error::CommandError;
use crate::resp::glob;
use crate::resp::notify::NotifyFlags;
use crate::resp::reply::{Protocol, Reply};
use crate::store::EvictionPolicy;

/// The Redis version whose commands and replies the front end follows; clients read it from
/// `HELLO` and `INFO` to decide what they may send.
pub const REDIS_VERSION: &str = "7.2.0";

/// `PING [message]`.
pub fn ping(args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    match args {
        [] => reply.simple("PONG"),
        [message] => reply.bulk(message),
        _ => return Err(CommandError::WrongArity("ping".to_string())),
    }
    Ok(())
}

/// Whether `user`/`password` log in: the user is `default` and the password is the
/// cluster's token (any password when there is none, as for Redis' `nopass` default user).
fn admits(ctx: &Ctx<'_>, user: &[u8], password: &[u8]) -> bool {
    user == b"default"
        && ctx
            .state
            .settings
            .auth
            .as_ref()
            .is_none_or(|token| token.admits_password(password))
}

/// `AUTH [user] password`.
pub fn auth(ctx: &mut Ctx<'_>, args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let admitted = match args {
        [password] => match &ctx.state.settings.auth {
            None => return Err(CommandError::NoPasswordConfigured),
            Some(token) => token.admits_password(password),
        },
        [user, password] => admits(ctx, user, password),
        _ => return Err(CommandError::Syntax),
    };
    if !admitted {
        return Err(CommandError::WrongPass);
    }
    ctx.session.authenticated = true;
    reply.ok();
    Ok(())
}

/// `HELLO [protover [AUTH user password] [SETNAME name]]`: switches the protocol and replies
/// with the server's description, in the new protocol.
pub fn hello(ctx: &mut Ctx<'_>, args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let mut protocol = ctx.session.protocol;
    let mut name = None;
    let mut login = None;
    if let Some((version, options)) = args.split_first() {
        protocol = match integer(version).map_err(|_| CommandError::ProtocolNotInteger)? {
            2 => Protocol::Resp2,
            3 => Protocol::Resp3,
            _ => return Err(CommandError::NoProto),
        };
        let mut rest = options.iter();
        while let Some(option) = rest.next() {
            let syntax = || CommandError::HelloSyntax(String::from_utf8_lossy(option).into_owned());
            if is(option, "auth") {
                let user = rest.next().ok_or_else(syntax)?;
                let password = rest.next().ok_or_else(syntax)?;
                login = Some((user, password));
            } else if is(option, "setname") {
                name = Some(rest.next().ok_or_else(syntax)?);
            } else {
                return Err(syntax());
            }
        }
    }
    if let Some((user, password)) = login {
        if !admits(ctx, user, password) {
            return Err(CommandError::WrongPass);
        }
        ctx.session.authenticated = true;
    }
    if !ctx.session.authenticated {
        return Err(CommandError::HelloNoAuth);
    }
    if let Some(name) = name {
        set_name(ctx, name)?;
    }
    ctx.session.protocol = protocol;
    ctx.session.client.names().resp = protocol.number();
    reply.set_protocol(protocol);
    reply.map(7);
    reply.bulk(b"server");
    reply.bulk(b"redis");
    reply.bulk(b"version");
    reply.bulk(REDIS_VERSION.as_bytes());
    reply.bulk(b"proto");
    reply.integer(protocol.number());
    reply.bulk(b"id");
    reply.integer(ctx.session.client.id as i64);
    reply.bulk(b"mode");
    reply.bulk(redis_mode(ctx).as_bytes());
    reply.bulk(b"role");
    reply.bulk(b"master");
    reply.bulk(b"modules");
    reply.array(0);
    Ok(())
}

/// `cluster` with `--resp-cluster-mode`, else `standalone`: what `HELLO` and `INFO server`
/// say, and what cluster-aware clients check.
fn redis_mode(ctx: &Ctx<'_>) -> &'static str {
    if ctx.state.settings.cluster_mode {
        "cluster"
    } else {
        "standalone"
    }
}

/// Sets the client's name (empty clears it), refusing spaces and control characters.
fn set_name(ctx: &mut Ctx<'_>, name: &[u8]) -> Result<(), CommandError> {
    if !name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err(CommandError::BadClientName);
    }
    ctx.session.client.names().name = String::from_utf8_lossy(name).into_owned();
    Ok(())
}

/// `CLIENT ID | SETNAME | GETNAME | INFO | LIST | SETINFO`.
pub fn client(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let (sub, rest) = args
        .split_first()
        .ok_or(CommandError::WrongArity("client".to_string()))?;
    let arity = |n: usize, name: &str| {
        if rest.len() == n {
            Ok(())
        } else {
            Err(CommandError::WrongArity(format!("client|{name}")))
        }
    };
    if is(sub, "id") {
        arity(0, "id")?;
        reply.integer(ctx.session.client.id as i64);
    } else if is(sub, "setname") {
        arity(1, "setname")?;
        set_name(ctx, &rest[0])?;
        reply.ok();
    } else if is(sub, "getname") {
        arity(0, "getname")?;
        let name = ctx.session.client.names().name.clone();
        if name.is_empty() {
            reply.null();
        } else {
            reply.bulk(name.as_bytes());
        }
    } else if is(sub, "info") {
        arity(0, "info")?;
        reply.verbatim(&ctx.session.client.line());
    } else if is(sub, "list") {
        reply.verbatim(&ctx.state.clients.list());
    } else if is(sub, "setinfo") {
        arity(2, "setinfo")?;
        let value = String::from_utf8_lossy(&rest[1]).into_owned();
        if value.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
            return Err(CommandError::BadClientName);
        }
        let mut names = ctx.session.client.names();
        if is(&rest[0], "lib-name") {
            names.lib_name = value;
        } else if is(&rest[0], "lib-ver") {
            names.lib_ver = value;
        } else {
            return Err(CommandError::UnrecognizedOption(
                String::from_utf8_lossy(&rest[0]).into_owned(),
            ));
        }
        drop(names);
        reply.ok();
    } else {
        return Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(sub).into_owned(),
            command: "CLIENT",
        });
    }
    Ok(())
}

/// `SELECT index`: only database 0 exists.
pub fn select(args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    if integer(&args[0])? != 0 {
        return Err(CommandError::DbOutOfRange);
    }
    reply.ok();
    Ok(())
}

/// `RESET`: ends a transaction, forgets watched keys and the name, goes back to RESP2 and
/// READWRITE, and logs out when the cluster has a token.
pub fn reset(ctx: &mut Ctx<'_>, reply: &mut Reply<'_>) -> Result<(), CommandError> {
    transaction::discard(ctx);
    ctx.session.subscriptions.clear();
    ctx.session.authenticated = ctx.state.settings.auth.is_none();
    ctx.session.protocol = Protocol::Resp2;
    {
        let mut names = ctx.session.client.names();
        names.name.clear();
        names.resp = 2;
        names.readonly = false;
    }
    reply.set_protocol(Protocol::Resp2);
    reply.simple("RESET");
    Ok(())
}

/// `WAIT numreplicas timeout`: how many peers applied every write this connection made
/// since its previous `WAIT`, after waiting up to `timeout` ms (0: no limit) for
/// `numreplicas` of them. Returns early once no count can grow (every peer answered).
pub async fn wait(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let wanted = integer(&args[0])?;
    let timeout = integer(&args[1]).map_err(|_| CommandError::TimeoutNotInteger)?;
    let timeout = match u64::try_from(timeout) {
        Err(_) => return Err(CommandError::NegativeTimeout),
        Ok(0) => None,
        Ok(millis) => Some(Duration::from_millis(millis)),
    };
    let peers = ctx.state.cache.live_peers();
    let wanted = usize::try_from(wanted).unwrap_or(0);
    let reached = ctx.session.acks.wait(wanted, timeout, peers).await;
    reply.integer(reached as i64);
    Ok(())
}

/// `TIME`: seconds and microseconds since the epoch.
pub fn time(reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    reply.array(2);
    reply.bulk_display(now.as_secs());
    reply.bulk_display(now.subsec_micros());
    Ok(())
}

/// `COMMAND`, `COMMAND COUNT | LIST | INFO [name ...] | DOCS [name ...]`.
pub fn command(args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let Some((sub, names)) = args.split_first() else {
        reply.array(COMMANDS.len());
        for spec in COMMANDS {
            info_entry(spec, reply);
        }
        return Ok(());
    };
    let chosen = |names: &[Bytes]| -> Vec<Option<&'static Spec>> {
        if names.is_empty() {
            COMMANDS.iter().map(Some).collect()
        } else {
            names.iter().map(|name| lookup(name)).collect()
        }
    };
    if is(sub, "count") {
        reply.integer(COMMANDS.len() as i64);
    } else if is(sub, "list") {
        reply.array(COMMANDS.len());
        for spec in COMMANDS {
            reply.bulk(spec.name.as_bytes());
        }
    } else if is(sub, "info") {
        let specs = chosen(names);
        reply.array(specs.len());
        for spec in specs {
            match spec {
                Some(spec) => info_entry(spec, reply),
                None => reply.null(),
            }
        }
    } else if is(sub, "docs") {
        let specs: Vec<&Spec> = chosen(names).into_iter().flatten().collect();
        reply.map(specs.len());
        for spec in specs {
            reply.bulk(spec.name.as_bytes());
            reply.map(3);
            reply.bulk(b"summary");
            reply.bulk(spec.summary.as_bytes());
            reply.bulk(b"since");
            reply.bulk(b"1.0.0");
            reply.bulk(b"group");
            reply.bulk(spec.group.as_bytes());
        }
    } else {
        return Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(sub).into_owned(),
            command: "COMMAND",
        });
    }
    Ok(())
}

/// One command's `COMMAND INFO` entry, in Redis 7's ten fields.
fn info_entry(spec: &Spec, reply: &mut Reply<'_>) {
    reply.array(10);
    reply.bulk(spec.name.as_bytes());
    reply.integer(spec.arity);
    reply.set(spec.flags.len());
    for flag in spec.flags {
        reply.simple(flag);
    }
    reply.integer(spec.keys.0);
    reply.integer(spec.keys.1);
    reply.integer(spec.keys.2);
    reply.set(0); // ACL categories
    reply.array(0); // tips
    reply.array(0); // key specifications
    reply.array(0); // subcommands
}

/// The parameters `CONFIG GET` reports, with their values.
fn parameters(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let cache = &ctx.state.cache;
    let stats = cache.store().stats();
    let maxmemory = if stats.capacity_bytes == u64::MAX {
        0
    } else {
        stats.capacity_bytes
    };
    vec![
        ("maxmemory", maxmemory.to_string()),
        ("maxmemory-policy", policy_name(ctx).to_string()),
        ("databases", "1".to_string()),
        (
            "appendonly",
            if cache.is_persistent() { "yes" } else { "no" }.to_string(),
        ),
        ("save", String::new()),
        ("notify-keyspace-events", ctx.state.notify.get().render()),
        ("timeout", "0".to_string()),
        ("maxclients", "10000".to_string()),
        ("port", ctx.state.listen.port().to_string()),
        ("bind", ctx.state.listen.ip().to_string()),
        ("proto-max-bulk-len", ctx.state.limits.max_bulk.to_string()),
        (
            "client-query-buffer-limit",
            ctx.state.limits.max_query.to_string(),
        ),
        (
            "cluster-enabled",
            if ctx.state.settings.cluster_mode {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ),
        ("replica-read-only", "yes".to_string()),
    ]
}

/// The Redis name of the eviction policy: CLOCK approximates LRU over every key.
fn policy_name(ctx: &Ctx<'_>) -> &'static str {
    match ctx.state.cache.store().policy() {
        EvictionPolicy::Clock => "allkeys-lru",
        EvictionPolicy::NoEviction => "noeviction",
    }
}

/// `CONFIG GET parameter [parameter ...]`; the other subcommands are refused.
pub fn config(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let (sub, patterns) = args
        .split_first()
        .ok_or(CommandError::WrongArity("config".to_string()))?;
    if is(sub, "set") {
        return config_set(ctx, patterns, reply);
    }
    for (name, readonly) in [("rewrite", "REWRITE"), ("resetstat", "RESETSTAT")] {
        if is(sub, name) {
            return Err(CommandError::ConfigReadOnly(readonly));
        }
    }
    if !is(sub, "get") {
        return Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(sub).into_owned(),
            command: "CONFIG",
        });
    }
    if patterns.is_empty() {
        return Err(CommandError::WrongArity("config|get".to_string()));
    }
    let found: Vec<(&str, String)> = parameters(ctx)
        .into_iter()
        .filter(|(name, _)| {
            patterns
                .iter()
                .any(|pattern| glob::matches(&pattern.to_ascii_lowercase(), name.as_bytes()))
        })
        .collect();
    reply.map(found.len());
    for (name, value) in found {
        reply.bulk(name.as_bytes());
        reply.bulk(value.as_bytes());
    }
    Ok(())
}

/// `CONFIG SET parameter value [parameter value ...]`: only `notify-keyspace-events`, on
/// this node; every other setting comes from the node's flags. Nothing is changed unless
/// every pair is accepted.
fn config_set(
    ctx: &mut Ctx<'_>,
    pairs: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(CommandError::WrongArity("config|set".to_string()));
    }
    let mut flags = None;
    for pair in pairs.chunks(2) {
        if !is(&pair[0], "notify-keyspace-events") {
            return Err(CommandError::ConfigSetUnsupported(
                String::from_utf8_lossy(&pair[0]).into_owned(),
            ));
        }
        flags = Some(NotifyFlags::parse(&pair[1])?);
    }
    if let Some(flags) = flags {
        ctx.state
            .notify
            .set(flags, ctx.state.cache.store().events());
    }
    reply.ok();
    Ok(())
}

/// `INFO [section ...]`: server, clients, memory, persistence, stats, replication, cluster,
/// keyspace (all of them without a section, or for `all`, `default`, `everything`).
pub fn info(ctx: &mut Ctx<'_>, args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    const SECTIONS: [&str; 8] = [
        "server",
        "clients",
        "memory",
        "persistence",
        "stats",
        "replication",
        "cluster",
        "keyspace",
    ];
    let everything = args.is_empty()
        || args
            .iter()
            .any(|a| is(a, "all") || is(a, "default") || is(a, "everything"));
    let mut text = String::new();
    for section in SECTIONS {
        if everything || args.iter().any(|a| is(a, section)) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            write_section(ctx, section, &mut text);
        }
    }
    reply.verbatim(&text);
    Ok(())
}

fn write_section(ctx: &Ctx<'_>, section: &str, text: &mut String) {
    let state = ctx.state;
    let cache = &state.cache;
    let stats = cache.store().stats();
    let uptime = state.started.elapsed().as_secs();
    let maxmemory = if stats.capacity_bytes == u64::MAX {
        0
    } else {
        stats.capacity_bytes
    };
    // Writing into a `String` cannot fail.
    let _ = match section {
        "server" => write!(
            text,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\ntidecache_version:{}\r\nredis_mode:{}\r\n\
             os:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\ntcp_port:{}\r\n\
             uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:cache-node\r\n",
            env!("CARGO_PKG_VERSION"),
            redis_mode(ctx),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            state.listen.port(),
            uptime / 86_400,
        ),
        "clients" => write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:10000\r\nblocked_clients:0\r\n",
            state.clients.count()
        ),
        "memory" => write!(
            text,
            "# Memory\r\nused_memory:{}\r\nused_memory_human:{}\r\nmaxmemory:{maxmemory}\r\n\
             maxmemory_human:{}\r\nmaxmemory_policy:{}\r\n",
            stats.used_bytes,
            human(stats.used_bytes),
            human(maxmemory),
            policy_name(ctx),
        ),
        "persistence" => write!(
            text,
            "# Persistence\r\nloading:{}\r\naof_enabled:{}\r\nrdb_bgsave_in_progress:0\r\n",
            u8::from(!cache.is_loaded()),
            u8::from(cache.is_persistent()),
        ),
        "stats" => write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:0\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\n\
             keyspace_misses:{}\r\n",
            state.stats.connections.load(Ordering::Relaxed),
            state.stats.commands.load(Ordering::Relaxed),
            stats.evicted_expired,
            stats.evicted_capacity,
            state.stats.hits.load(Ordering::Relaxed),
            state.stats.misses.load(Ordering::Relaxed),
        ),
        "replication" => write!(
            text,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\ntidecache_replicated:{}\r\n\
             tidecache_peers_up:{}\r\n",
            if cache.is_replicated() { "yes" } else { "no" },
            cache.live_peers(),
        ),
        "cluster" => write!(
            text,
            "# Cluster\r\ncluster_enabled:{}\r\n",
            u8::from(state.settings.cluster_mode)
        ),
        _ => {
            let live = cache.key_count();
            text.push_str("# Keyspace\r\n");
            if live.keys > 0 {
                write!(
                    text,
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    live.keys, live.expiring
                )
            } else {
                Ok(())
            }
        }
    };
}

/// Bytes as Redis' `*_human` fields write them.
fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            return format!("{:.2}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}
