//! The Redis Cluster protocol of partitioned mode: `CLUSTER SLOTS | SHARDS | NODES | MYID |
//! INFO | KEYSLOT | COUNTKEYSINSLOT | HELP`, `READONLY`/`READWRITE`, `-MOVED` for a key this
//! node does not own and `-ASK`/`ASKING` while its partition moves here
//! (`--resp-cluster-mode`), and `-CROSSSLOT` for the keys of one command
//! or transaction in different slots (partitioned mode, with or without cluster mode: a
//! request that spans owners could not be forwarded as one).
//!
//! # The topology as a Redis Cluster
//! Each slot range of the assignment has R owners: the first is its master, the others its
//! replicas. Every owner serves reads and writes of the range (they converge by
//! last-writer-wins), so a client may send anything to any owner, and a non-owner answers
//! `-MOVED` to the primary. A node is master of some ranges and replica of others, which
//! `CLUSTER NODES` cannot say: there every node is a master with the ranges it is primary
//! of, and `CLUSTER SLOTS` and `CLUSTER SHARDS` name the replicas. Node ids are the SHA-1 of
//! the member id, so every node names every node alike.
//!
//! # Slots that move
//! When the membership changes, the topology names the new owners at once, but a new owner
//! is still receiving the partition's data (it is gaining) and the cache serves the key from
//! a node that holds it all (a complete owner, or the former owner that keeps it). A client
//! sent to the new owner is then told `-ASK` to that node: "this once, ask there", without
//! changing its map, as Redis Cluster does while a slot migrates. The client sends `ASKING`
//! and the command there; `ASKING` makes the next command skip the redirects, so a former
//! owner, which the topology no longer names, serves it rather than answering `-MOVED` back.
//!
//! Without `--resp-cluster-mode` these commands answer as a Redis without cluster support.

use std::fmt::Write as _;

use bytes::Bytes;
use tidecache_contract::placement::{SLOTS, partition_of_slot, slot_of};

use super::{Ctx, Spec, integer, is, transaction};
use crate::base::node_info::RespPorts;
use crate::replication::{Peer, Route, Topology};
use crate::resp::RespState;
use crate::resp::error::CommandError;
use crate::resp::reply::Reply;

/// How many keys one step of `COUNTKEYSINSLOT`'s walk takes.
const COUNT_STEP: usize = 1_000;

/// `CLUSTER HELP`, in Redis' words for the subcommands served.
const HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "COUNTKEYSINSLOT <slot>",
    "    Return the number of keys in <slot>.",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "HELP",
    "    Prints this help.",
];

/// The subcommands served, with their arity (the `CLUSTER` included).
const SUBCOMMANDS: &[(&str, usize)] = &[
    ("countkeysinslot", 3),
    ("help", 2),
    ("info", 2),
    ("keyslot", 3),
    ("myid", 2),
    ("nodes", 2),
    ("shards", 2),
    ("slots", 2),
];

/// A shard as `CLUSTER SHARDS` lists it: its owners (primary first) and its slot ranges.
type Shard = (Vec<usize>, Vec<(u16, u16)>);

/// The 40 hex digits `CLUSTER` replies name the member `id` by: its SHA-1, the same on every
/// node (Redis' node ids are 160 random bits).
pub fn node_id(id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, id.as_bytes());
    digest.as_ref().iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// `CLUSTER <subcommand> ...`. Unknown subcommands and wrong arities are refused first, as
/// Redis refuses them before it looks at whether cluster support is on.
pub async fn cluster(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let sub = &args[0];
    let Some(&(name, arity)) = SUBCOMMANDS.iter().find(|(name, _)| is(sub, name)) else {
        return Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(sub).into_owned(),
            command: "CLUSTER",
        });
    };
    if args.len() + 1 != arity {
        return Err(CommandError::WrongArity(format!("cluster|{name}")));
    }
    if !ctx.state.settings.cluster_mode {
        return Err(CommandError::ClusterDisabled);
    }
    match name {
        "help" => {
            reply.array(HELP.len());
            for line in HELP {
                reply.simple(line);
            }
        }
        "keyslot" => reply.integer(i64::from(slot_of(&args[1]))),
        "countkeysinslot" => {
            let slot = u16::try_from(integer(&args[1])?)
                .ok()
                .filter(|&slot| slot < SLOTS)
                .ok_or(CommandError::InvalidSlot)?;
            reply.integer(count_keys_in_slot(ctx, slot));
        }
        _ => {
            // A node in partitioned mode with cluster mode on always has a topology.
            let topology = ctx
                .state
                .cache
                .topology()
                .ok_or(CommandError::SlotNotServed)?;
            ctx.state.directory.refresh(&topology).await;
            let view = View::new(ctx, &topology);
            match name {
                "slots" => view.slots(reply),
                "shards" => view.shards(reply),
                "nodes" => reply.verbatim(&view.nodes()),
                "info" => reply.verbatim(&view.info()),
                _ => {
                    let local = topology.local.ok_or(CommandError::NotAMember)?;
                    reply.bulk(view.ids[local].as_bytes());
                }
            }
        }
    }
    Ok(())
}

/// This node's live keys in `slot`: a walk of every key it holds, as long as `DBSIZE` keys
/// take to list (the store has no index by slot).
fn count_keys_in_slot(ctx: &Ctx<'_>, slot: u16) -> i64 {
    let mut count = 0;
    let mut cursor = 0;
    loop {
        let step = ctx.state.cache.scan(cursor, COUNT_STEP);
        count += step.keys.iter().filter(|key| slot_of(key) == slot).count();
        cursor = step.cursor;
        if cursor == 0 {
            return count as i64;
        }
    }
}

/// `READONLY` (`readonly`) or `READWRITE`: remembered for `CLIENT LIST` (flag `r`); every
/// owner serves reads and writes either way.
pub fn readonly(
    ctx: &mut Ctx<'_>,
    readonly: bool,
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    if !ctx.state.settings.cluster_mode {
        return Err(CommandError::ClusterDisabled);
    }
    ctx.session.client.names().readonly = readonly;
    reply.ok();
    Ok(())
}

/// `ASKING`: the next command (or the transaction it opens) is served here whichever node
/// owns its slot; the dispatcher clears the flag after it.
pub fn asking(ctx: &mut Ctx<'_>, reply: &mut Reply<'_>) -> Result<(), CommandError> {
    if !ctx.state.settings.cluster_mode {
        return Err(CommandError::ClusterDisabled);
    }
    ctx.session.asking = true;
    reply.ok();
    Ok(())
}

/// The keys of a request (`args[0]` is the name) by the command's key positions.
fn keys<'a>(spec: &Spec, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> {
    let (first, last, step) = spec.keys;
    let len = args.len() as i64;
    let last = if last < 0 {
        len + last
    } else {
        last.min(len - 1)
    };
    let range = if first > 0 && step > 0 && last >= first {
        args.get(first as usize..=last as usize).unwrap_or(&[])
    } else {
        &[]
    };
    range.iter().step_by(step.max(1) as usize)
}

/// Whether a request may be served here as it is, before it runs or is queued: in
/// partitioned mode its keys must be in one slot, and with `--resp-cluster-mode` that slot
/// must be this node's and its data here, unless the connection said `ASKING`.
///
/// # Errors
/// `-CROSSSLOT`; `-MOVED` to the slot's primary; `-ASK` to the node that serves a slot
/// moving here; `-CLUSTERDOWN` while no node owns it.
pub async fn check(ctx: &Ctx<'_>, spec: &Spec, args: &[Bytes]) -> Result<(), CommandError> {
    if spec.keys.0 == 0 {
        return Ok(());
    }
    let Some(topology) = ctx.state.cache.topology() else {
        return Ok(());
    };
    let slot = one_slot(keys(spec, args))?;
    place(ctx, &topology, slot).await
}

/// `EXEC` in partitioned mode: the queued commands' keys must all be in one slot (and with
/// `--resp-cluster-mode` this node's), or the transaction is discarded, as Redis does.
///
/// # Errors
/// As [`check`].
pub async fn check_exec(ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    let Some(topology) = ctx.state.cache.topology() else {
        return Ok(());
    };
    // Decided before anything is awaited: the key iterator borrows the queue, and a future
    // holding it across an await would not be `Send`.
    let slot = {
        let queued = ctx.session.multi.as_deref().unwrap_or_default();
        one_slot(queued.iter().flat_map(|args| {
            super::lookup(&args[0])
                .into_iter()
                .flat_map(move |spec| keys(spec, args))
        }))
    };
    let checked = match slot {
        Ok(slot) => place(ctx, &topology, slot).await,
        Err(error) => Err(error),
    };
    if checked.is_err() {
        transaction::discard(ctx);
    }
    checked
}

/// With `--resp-cluster-mode`, [`redirect`] for the keys' slot and one of them (`None`: no
/// keys).
async fn place(
    ctx: &Ctx<'_>,
    topology: &Topology,
    slot: Option<(u16, Bytes)>,
) -> Result<(), CommandError> {
    match slot {
        Some((slot, key)) if ctx.state.settings.cluster_mode => {
            redirect(ctx, topology, slot, &key).await
        }
        _ => Ok(()),
    }
}

/// The one slot all `keys` hash to, with the first key; `None` for no keys.
fn one_slot<'a>(
    keys: impl Iterator<Item = &'a Bytes>,
) -> Result<Option<(u16, Bytes)>, CommandError> {
    let mut slot: Option<(u16, Bytes)> = None;
    for key in keys {
        let this = slot_of(key);
        match &slot {
            None => slot = Some((this, key.clone())),
            Some((first, _)) if *first != this => return Err(CommandError::CrossSlot),
            Some(_) => {}
        }
    }
    Ok(slot)
}

/// `Ok` if the connection said `ASKING`, or this node owns `slot` and serves `key` (of that
/// slot) itself; `-ASK` to the node that serves it while its partition moves here; `-MOVED`
/// to the primary of a slot this node does not own.
async fn redirect(
    ctx: &Ctx<'_>,
    topology: &Topology,
    slot: u16,
    key: &[u8],
) -> Result<(), CommandError> {
    if ctx.session.asking {
        return Ok(());
    }
    let partition = partition_of_slot(slot);
    let (peer, moved) = if topology.owns_partition(partition) {
        match ask_target(ctx.state, topology, key) {
            Some(peer) => (peer, false),
            None => return Ok(()),
        }
    } else {
        let primary = topology
            .assignment
            .owners(partition)
            .next()
            .ok_or(CommandError::SlotNotServed)?;
        (topology.nodes[primary].clone(), true)
    };
    let directory = &ctx.state.directory;
    directory.refresh(topology).await;
    let port = client_port(directory.ports(&peer), is_tls(ctx), directory.own());
    let host = host_of(peer.address()).to_string();
    Err(match moved {
        true => CommandError::Moved { slot, host, port },
        false => CommandError::Ask { slot, host, port },
    })
}

/// The node a client is sent to with `-ASK` for `key`, of a partition this node owns: the
/// first the cache would forward the key to, because this node does not hold all of it yet.
/// `None` where this node serves it, and where that node is no member of `topology` (a former
/// one that keeps the partition): its RESP port is not known, so this node forwards instead.
fn ask_target(state: &RespState, topology: &Topology, key: &[u8]) -> Option<Peer> {
    match state.cache.route(key) {
        Route::Local => None,
        Route::Forward(peers) => peers.into_iter().next().filter(|peer| {
            topology
                .nodes
                .iter()
                .any(|node| node.address() == peer.address())
        }),
    }
}

/// Whether a SET without options may skip [`check`] and join a batch: always but for a key
/// that `--resp-cluster-mode` redirects (`-MOVED` or `-ASK`).
pub fn serves_here(state: &RespState, key: &[u8]) -> bool {
    if !state.settings.cluster_mode {
        return true;
    }
    state
        .cache
        .topology()
        .is_some_and(|topology| topology.owns(key) && ask_target(state, &topology, key).is_none())
}

/// Whether the client is connected over TLS: it came in on the TLS listener's port.
fn is_tls(ctx: &Ctx<'_>) -> bool {
    let port = ctx.session.client.laddr.port();
    ctx.state.directory.own().resp_tls_port == Some(port)
        && ctx.state.directory.own().resp_port != Some(port)
}

/// The port a client on TLS (`tls`) or not is sent to on a node serving `ports`: this node's
/// own where the node has no such listener known.
fn client_port(ports: RespPorts, tls: bool, own: RespPorts) -> u16 {
    ports
        .for_client(tls)
        .or_else(|| own.for_client(tls))
        .unwrap_or(0)
}

/// The host of a `host:port` address (an IPv6 host without its brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host)
}

/// The port of a `host:port` address, 0 if it has none.
fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(0)
}

/// The topology as one client sees it: each member's id and ports.
struct View<'a> {
    topology: &'a Topology,
    /// Node ids, by member index.
    ids: Vec<String>,
    /// RESP ports, by member index.
    ports: Vec<RespPorts>,
    /// Whether the client is connected over TLS (it is sent to TLS ports).
    tls: bool,
    /// This node's ports, the stand-in where a node has no port of the kind.
    own: RespPorts,
    /// Whether this node has loaded its data (`SHARDS`' health).
    loaded: bool,
}

impl<'a> View<'a> {
    fn new(ctx: &Ctx<'_>, topology: &'a Topology) -> View<'a> {
        let directory = &ctx.state.directory;
        View {
            topology,
            ids: topology
                .nodes
                .iter()
                .map(|peer| node_id(peer.id()))
                .collect(),
            ports: topology
                .nodes
                .iter()
                .map(|peer| directory.ports(peer))
                .collect(),
            tls: is_tls(ctx),
            own: directory.own(),
            loaded: ctx.state.cache.is_loaded(),
        }
    }

    fn host(&self, member: usize) -> &str {
        host_of(self.topology.nodes[member].address())
    }

    fn port(&self, member: usize) -> u16 {
        client_port(self.ports[member], self.tls, self.own)
    }

    /// `CLUSTER SLOTS`: per slot range, its first and last slot and its owners, the primary
    /// first, each as host, port, id and a map of further endpoints (none).
    fn slots(&self, reply: &mut Reply<'_>) {
        let ranges = self.topology.assignment.slot_ranges();
        reply.array(ranges.len());
        for (first, last, owners) in &ranges {
            reply.array(2 + owners.len());
            reply.integer(i64::from(*first));
            reply.integer(i64::from(*last));
            for &member in owners {
                reply.array(4);
                reply.bulk(self.host(member).as_bytes());
                reply.integer(i64::from(self.port(member)));
                reply.bulk(self.ids[member].as_bytes());
                reply.map(0);
            }
        }
    }

    /// `CLUSTER SHARDS`: one shard per distinct list of owners, with its slot ranges as
    /// first/last pairs and its nodes (the primary first, as `master`).
    fn shards(&self, reply: &mut Reply<'_>) {
        let mut shards: Vec<Shard> = Vec::new();
        for (first, last, owners) in self.topology.assignment.slot_ranges() {
            match shards.iter_mut().find(|(them, _)| *them == owners) {
                Some((_, ranges)) => ranges.push((first, last)),
                None => shards.push((owners, vec![(first, last)])),
            }
        }
        reply.array(shards.len());
        for (owners, ranges) in &shards {
            reply.map(2);
            reply.bulk(b"slots");
            reply.array(2 * ranges.len());
            for (first, last) in ranges {
                reply.integer(i64::from(*first));
                reply.integer(i64::from(*last));
            }
            reply.bulk(b"nodes");
            reply.array(owners.len());
            for (rank, &member) in owners.iter().enumerate() {
                self.shard_node(member, rank == 0, reply);
            }
        }
    }

    /// One node of a `CLUSTER SHARDS` shard, with Redis 7's fields.
    fn shard_node(&self, member: usize, primary: bool, reply: &mut Reply<'_>) {
        let ports = self.ports[member];
        let local = self.topology.local == Some(member);
        let fields =
            6 + usize::from(ports.resp_port.is_some()) + usize::from(ports.resp_tls_port.is_some());
        reply.map(fields);
        reply.bulk(b"id");
        reply.bulk(self.ids[member].as_bytes());
        if let Some(port) = ports.resp_port {
            reply.bulk(b"port");
            reply.integer(i64::from(port));
        }
        if let Some(port) = ports.resp_tls_port {
            reply.bulk(b"tls-port");
            reply.integer(i64::from(port));
        }
        reply.bulk(b"ip");
        reply.bulk(self.host(member).as_bytes());
        reply.bulk(b"endpoint");
        reply.bulk(self.host(member).as_bytes());
        reply.bulk(b"role");
        reply.bulk(if primary { b"master" } else { b"replica" });
        reply.bulk(b"replication-offset");
        reply.integer(0);
        reply.bulk(b"health");
        reply.bulk(if local && !self.loaded {
            b"loading"
        } else {
            b"online"
        });
    }

    /// `CLUSTER NODES`: one line per node, every node a master of the ranges it is primary
    /// of; the bus port is the node's HTTP port, over which peers talk.
    fn nodes(&self) -> String {
        let mut primary: Vec<Vec<(u16, u16)>> = vec![Vec::new(); self.topology.nodes.len()];
        for (first, last, owners) in self.topology.assignment.slot_ranges() {
            let ranges = &mut primary[owners[0]];
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == first => *end = last,
                _ => ranges.push((first, last)),
            }
        }
        let mut text = String::new();
        for (member, peer) in self.topology.nodes.iter().enumerate() {
            let flags = if self.topology.local == Some(member) {
                "myself,master"
            } else {
                "master"
            };
            // Writing into a `String` cannot fail.
            let _ = write!(
                text,
                "{} {}:{}@{} {flags} - 0 0 {} connected",
                self.ids[member],
                self.host(member),
                self.port(member),
                port_of(peer.address()),
                self.topology.epoch,
            );
            for (first, last) in &primary[member] {
                let _ = match first == last {
                    true => write!(text, " {first}"),
                    false => write!(text, " {first}-{last}"),
                };
            }
            text.push('\n');
        }
        text
    }

    /// `CLUSTER INFO`: the state and sizes Redis reports (no bus message counters: there is
    /// no bus).
    fn info(&self) -> String {
        let ranges = self.topology.assignment.slot_ranges();
        let assigned: usize = ranges
            .iter()
            .map(|(first, last, _)| usize::from(last - first) + 1)
            .sum();
        let mut primaries: Vec<usize> = ranges.iter().map(|(_, _, owners)| owners[0]).collect();
        primaries.sort_unstable();
        primaries.dedup();
        let state = if assigned == usize::from(SLOTS) {
            "ok"
        } else {
            "fail"
        };
        let epoch = self.topology.epoch;
        format!(
            "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
             cluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
             cluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{epoch}\r\n\
             cluster_my_epoch:{epoch}\r\n",
            self.topology.nodes.len(),
            primaries.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tidecache_contract::placement::{Assignment, Member};

    use super::*;
    use crate::replication::Peer;
    use crate::resp::reply::Protocol;

    /// A reply, parsed.
    #[derive(Debug, Clone, PartialEq)]
    enum Value {
        Simple(String),
        Integer(i64),
        Bulk(String),
        Array(Vec<Value>),
        Map(Vec<(Value, Value)>),
    }

    impl Value {
        fn int(&self) -> i64 {
            match self {
                Value::Integer(n) => *n,
                other => panic!("not an integer: {other:?}"),
            }
        }

        fn text(&self) -> &str {
            match self {
                Value::Bulk(text) | Value::Simple(text) => text,
                other => panic!("not a string: {other:?}"),
            }
        }

        fn items(&self) -> &[Value] {
            match self {
                Value::Array(items) => items,
                other => panic!("not an array: {other:?}"),
            }
        }

        fn pairs(&self) -> &[(Value, Value)] {
            match self {
                Value::Map(pairs) => pairs,
                other => panic!("not a map: {other:?}"),
            }
        }
    }

    /// Parses one reply off the front of `input`.
    fn parse(input: &mut &[u8]) -> Value {
        let end = input.windows(2).position(|w| w == b"\r\n").expect("a line");
        let line = std::str::from_utf8(&input[1..end])
            .expect("text")
            .to_string();
        let kind = input[0];
        *input = &input[end + 2..];
        let len = || line.parse::<usize>().expect("a length");
        match kind {
            b'+' => Value::Simple(line),
            b':' => Value::Integer(line.parse().expect("an integer")),
            b'$' => {
                let text = String::from_utf8(input[..len()].to_vec()).expect("text");
                *input = &input[len() + 2..];
                Value::Bulk(text)
            }
            b'*' => Value::Array((0..len()).map(|_| parse(input)).collect()),
            b'%' => Value::Map((0..len()).map(|_| (parse(input), parse(input))).collect()),
            other => panic!("unexpected reply type {}", other as char),
        }
    }

    /// 3 members in 3 zones, R=2, this node the first; member `i` serves RESP on 7000 + i
    /// (and TLS on 7100 + i) and HTTP on 8080.
    fn topology() -> Topology {
        let peers: Vec<Peer> = (0..3)
            .map(|i| {
                let peer = Peer::new(format!("10.0.0.{i}:8080"))
                    .with_id(format!("cache-{i}"))
                    .in_zone(Some(format!("zone-{i}")));
                if i == 0 { peer.local() } else { peer }
            })
            .collect();
        let assignment = Assignment::compute(
            peers.iter().map(|peer| Member::new(peer.id(), peer.zone())),
            2,
        );
        // The members are sorted by id, as the peers are.
        assert_eq!(assignment.members()[1].id, "cache-1");
        Topology {
            assignment,
            nodes: peers,
            local: Some(0),
            epoch: 3,
            fingerprint: 0,
        }
    }

    fn ports(i: u16) -> RespPorts {
        RespPorts {
            resp_port: Some(7000 + i),
            resp_tls_port: Some(7100 + i),
        }
    }

    fn view(topology: &Topology, tls: bool) -> View<'_> {
        View {
            topology,
            ids: topology
                .nodes
                .iter()
                .map(|peer| node_id(peer.id()))
                .collect(),
            ports: (0..3).map(ports).collect(),
            tls,
            own: ports(0),
            loaded: true,
        }
    }

    fn render(protocol: Protocol, write: impl FnOnce(&mut Reply<'_>)) -> Value {
        let mut out = BytesMut::new();
        write(&mut Reply::new(&mut out, protocol));
        let mut input = &out[..];
        let value = parse(&mut input);
        assert!(input.is_empty(), "one reply");
        value
    }

    #[test]
    fn node_ids_are_the_sha1_of_the_member_id() {
        assert_eq!(
            node_id("cache-0"),
            "4c2dc5c9d07d824b9187e95ed8fd694967416f9d"
        );
        assert_ne!(node_id("cache-1"), node_id("cache-0"));
    }

    #[test]
    fn slots_cover_every_slot_once_with_two_owners_in_distinct_zones() {
        let topology = topology();
        let view = view(&topology, false);
        let zone_of = |id: &str| {
            let member = view
                .ids
                .iter()
                .position(|known| known == id)
                .expect("known id");
            topology.nodes[member].zone().map(str::to_string)
        };
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            let slots = render(protocol, |reply| view.slots(reply));
            let mut next = 0;
            for range in slots.items() {
                let [first, last, owners @ ..] = range.items() else {
                    panic!("a range: {range:?}");
                };
                assert_eq!(first.int(), next, "ranges are contiguous and in order");
                next = last.int() + 1;
                assert_eq!(owners.len(), 2, "{range:?}");
                let mut zones = Vec::new();
                for owner in owners {
                    let [host, port, id, metadata] = owner.items() else {
                        panic!("an owner: {owner:?}");
                    };
                    let member = view.ids.iter().position(|known| known == id.text());
                    let member = member.expect("a known node id");
                    assert_eq!(host.text(), format!("10.0.0.{member}"));
                    assert_eq!(port.int(), 7000 + member as i64);
                    zones.push(zone_of(id.text()));
                    match protocol {
                        Protocol::Resp2 => assert_eq!(*metadata, Value::Array(vec![])),
                        Protocol::Resp3 => assert_eq!(*metadata, Value::Map(vec![])),
                    }
                }
                assert_ne!(zones[0], zones[1], "owners in distinct zones");
            }
            assert_eq!(next, 16_384, "every slot");
        }
    }

    #[test]
    fn a_client_on_tls_is_sent_to_tls_ports() {
        let topology = topology();
        let slots = render(Protocol::Resp2, |reply| view(&topology, true).slots(reply));
        let owner = &slots.items()[0].items()[2];
        let host = owner.items()[0].text();
        let member: i64 = host
            .rsplit('.')
            .next()
            .expect("an IPv4 address")
            .parse()
            .expect("a number");
        assert_eq!(owner.items()[1].int(), 7100 + member);
    }

    #[test]
    fn shards_group_ranges_by_owners_with_redis_fields() {
        let topology = topology();
        let view = view(&topology, false);
        let shards = render(Protocol::Resp3, |reply| view.shards(reply));
        let mut covered = vec![0_u32; 16_384];
        let mut owner_lists = Vec::new();
        for shard in shards.items() {
            let [(slots_key, slots), (nodes_key, nodes)] = shard.pairs() else {
                panic!("a shard: {shard:?}");
            };
            assert_eq!((slots_key.text(), nodes_key.text()), ("slots", "nodes"));
            for pair in slots.items().chunks(2) {
                for slot in pair[0].int()..=pair[1].int() {
                    covered[slot as usize] += 1;
                }
            }
            let mut ids = Vec::new();
            for (rank, node) in nodes.items().iter().enumerate() {
                let fields: Vec<&str> = node.pairs().iter().map(|(key, _)| key.text()).collect();
                assert_eq!(
                    fields,
                    [
                        "id",
                        "port",
                        "tls-port",
                        "ip",
                        "endpoint",
                        "role",
                        "replication-offset",
                        "health"
                    ]
                );
                let field = |name: &str| {
                    &node.pairs()[fields
                        .iter()
                        .position(|f| *f == name)
                        .expect("a field of the reply")]
                    .1
                };
                let role = if rank == 0 { "master" } else { "replica" };
                assert_eq!(field("role").text(), role);
                assert_eq!(field("health").text(), "online");
                let member = view
                    .ids
                    .iter()
                    .position(|id| id == field("id").text())
                    .expect("a known node id");
                assert_eq!(field("port").int(), 7000 + member as i64);
                assert_eq!(field("tls-port").int(), 7100 + member as i64);
                assert_eq!(field("ip").text(), format!("10.0.0.{member}"));
                ids.push(member);
            }
            assert_eq!(ids.len(), 2);
            owner_lists.push(ids);
        }
        assert!(
            covered.iter().all(|&n| n == 1),
            "every slot in exactly one shard"
        );
        let distinct = owner_lists.len();
        owner_lists.sort();
        owner_lists.dedup();
        assert_eq!(owner_lists.len(), distinct, "one shard per list of owners");
    }

    #[test]
    fn nodes_names_every_node_as_master_of_the_ranges_it_is_primary_of() {
        let topology = topology();
        let view = view(&topology, false);
        let text = view.nodes();
        assert!(text.ends_with('\n'));
        let mut covered = vec![0_u32; 16_384];
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for (member, line) in lines.iter().enumerate() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields[0], node_id(&format!("cache-{member}")));
            assert_eq!(fields[1], format!("10.0.0.{member}:{}@8080", 7000 + member));
            let flags = if member == 0 {
                "myself,master"
            } else {
                "master"
            };
            assert_eq!(fields[2..8], [flags, "-", "0", "0", "3", "connected"]);
            assert!(
                fields.len() > 8,
                "every node is primary of some ranges: {line}"
            );
            for range in &fields[8..] {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                let first: usize = first.parse().expect("a slot");
                let last: usize = last.parse().expect("a slot");
                for count in &mut covered[first..=last] {
                    *count += 1;
                }
            }
        }
        assert!(
            covered.iter().all(|&n| n == 1),
            "every slot has one primary"
        );
    }

    #[test]
    fn info_reports_every_slot_served() {
        let topology = topology();
        assert_eq!(
            view(&topology, false).info(),
            "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:3\r\n\
             cluster_size:3\r\ncluster_current_epoch:3\r\ncluster_my_epoch:3\r\n"
        );
        let empty = Topology {
            assignment: Assignment::compute([], 2),
            nodes: Vec::new(),
            local: None,
            epoch: 0,
            fingerprint: 0,
        };
        let info = view(&empty, false).info();
        assert!(
            info.starts_with("cluster_state:fail\r\ncluster_slots_assigned:0\r\n"),
            "{info}"
        );
    }

    #[test]
    fn keys_are_read_at_the_commands_key_positions() {
        let args = |words: &[&str]| -> Vec<Bytes> {
            words
                .iter()
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect()
        };
        let keys_of = |name: &str, words: &[&str]| -> Vec<String> {
            let spec = super::super::lookup(name.as_bytes()).expect("a command");
            keys(spec, &args(words))
                .map(|key| String::from_utf8_lossy(key).into_owned())
                .collect()
        };
        assert_eq!(keys_of("mset", &["mset", "a", "1", "b", "2"]), ["a", "b"]);
        assert_eq!(keys_of("del", &["del", "a", "b", "c"]), ["a", "b", "c"]);
        assert_eq!(keys_of("get", &["get", "a"]), ["a"]);
        assert_eq!(keys_of("set", &["set", "a", "v", "EX", "10"]), ["a"]);
        assert_eq!(keys_of("watch", &["watch", "a", "b"]), ["a", "b"]);
        assert!(keys_of("ping", &["ping"]).is_empty());
        assert_eq!(
            one_slot(args(&["{u1}a", "{u1}b"]).iter()),
            Ok(Some((slot_of(b"u1"), Bytes::from_static(b"{u1}a"))))
        );
        assert_eq!(
            one_slot(args(&["a", "b"]).iter()),
            Err(CommandError::CrossSlot)
        );
        assert_eq!(one_slot(args(&[]).iter()), Ok(None));
    }

    #[test]
    fn hosts_and_ports_are_split_off_addresses() {
        assert_eq!(host_of("10.0.0.1:8080"), "10.0.0.1");
        assert_eq!(host_of("[fd00::1]:8080"), "fd00::1");
        assert_eq!(host_of("cache-0.cache:8080"), "cache-0.cache");
        assert_eq!(port_of("[fd00::1]:8080"), 8080);
        assert_eq!(client_port(RespPorts::default(), false, ports(0)), 7000);
    }
}
