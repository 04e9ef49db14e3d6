//! `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`: subscriptions to the keyspace
//! notification channels (see `notify`). Each name gets its own confirmation, as in Redis;
//! the messages themselves are written by the connection loop as the store announces
//! removed keys. There is no `PUBLISH`: clients' own channels would reach only the
//! subscribers of the pod they happen to be routed to.

use bytes::Bytes;

use super::Ctx;
use crate::resp::error::CommandError;
use crate::resp::notify::Kind;
use crate::resp::reply::Reply;

/// `SUBSCRIBE channel [channel ...]` or `PSUBSCRIBE pattern [pattern ...]`.
pub fn subscribe(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    names: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let events = ctx.state.cache.store().events();
    for name in names {
        ctx.session.subscriptions.add(kind, name, events)?;
        confirm(
            reply,
            kind,
            true,
            Some(name),
            ctx.session.subscriptions.count(),
        );
    }
    Ok(())
}

/// `UNSUBSCRIBE [channel ...]` or `PUNSUBSCRIBE [pattern ...]`; without names, from every
/// channel (or pattern).
pub fn unsubscribe(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    names: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let subscriptions = &mut ctx.session.subscriptions;
    let names = if names.is_empty() {
        subscriptions.names(kind)
    } else {
        names.to_vec()
    };
    if names.is_empty() {
        confirm(reply, kind, false, None, subscriptions.count());
    }
    for name in &names {
        subscriptions.remove(kind, name);
        confirm(reply, kind, false, Some(name), subscriptions.count());
    }
    Ok(())
}

/// `PING` in subscribed mode on RESP2: `["pong", message]`, as Redis answers there.
pub fn ping_subscribed(args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let message = match args {
        [] => &[][..],
        [message] => message,
        _ => return Err(CommandError::WrongArity("ping".to_string())),
    };
    reply.array(2);
    reply.bulk(b"pong");
    reply.bulk(message);
    Ok(())
}

/// One confirmation: `[kind, name, subscriptions left]`.
fn confirm(reply: &mut Reply<'_>, kind: Kind, subscribed: bool, name: Option<&[u8]>, count: usize) {
    let word: &[u8] = match (kind, subscribed) {
        (Kind::Channel, true) => b"subscribe",
        (Kind::Pattern, true) => b"psubscribe",
        (Kind::Channel, false) => b"unsubscribe",
        (Kind::Pattern, false) => b"punsubscribe",
    };
    reply.push(3);
    reply.bulk(word);
    match name {
        Some(name) => reply.bulk(name),
        None => reply.null(),
    }
    reply.integer(count as i64);
}
