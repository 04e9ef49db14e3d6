//! Keyspace commands: deletes through [`Cache::delete_many`](crate::cache::Cache::delete_many),
//! expiry changes as read-modify-writes of the value with a new expiry, and the key walk.

use std::hash::{BuildHasher, RandomState};

use bytes::Bytes;

use super::strings::put_or_delete;
use super::{Ask, Ctx, Unit, deadline, integer, is};
use crate::cache::{Edit, WriteError};
use crate::resp::error::CommandError;
use crate::resp::glob;
use crate::resp::reply::Reply;
use crate::store::Preconditions;

/// How many keys one `KEYS` step takes from the walk.
const KEYS_STEP: usize = 1_000;

/// `DEL key [key ...]` / `UNLINK`: how many existed.
pub async fn del(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let deletes = args
        .iter()
        .map(|key| (Bytes::copy_from_slice(key), Preconditions::none()))
        .collect();
    let mut deleted = 0;
    for result in ctx.state.cache.delete_many(deletes, None).await {
        match result {
            Ok(removed) => {
                ctx.track(removed.replicated.as_ref());
                deleted += 1;
            }
            Err(WriteError::Delete(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    reply.integer(deleted);
    Ok(())
}

/// `EXISTS key [key ...]`: how many of them exist (a key named twice counts twice).
pub async fn exists(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let mut count = 0;
    for hit in ctx.state.cache.get_many(args).await {
        count += usize::from(hit?.is_some());
    }
    reply.integer(count as i64);
    Ok(())
}

/// `TYPE key`: `string`, or `none`.
pub async fn key_type(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    match ctx.state.cache.get(&args[0]).await? {
        Some(_) => reply.simple("string"),
        None => reply.simple("none"),
    }
    Ok(())
}

/// `EXPIRE`'s condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Condition {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

/// `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT key amount [NX | XX | GT | LT]`: 1 if the expiry
/// was set (or the key deleted for an expiry in the past), 0 if the key is absent or the
/// condition does not hold.
pub async fn expire(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
    unit: Unit,
    absolute: bool,
    command: &'static str,
) -> Result<(), CommandError> {
    let mut condition = Condition::default();
    for option in &args[2..] {
        if is(option, "nx") {
            condition.nx = true;
        } else if is(option, "xx") {
            condition.xx = true;
        } else if is(option, "gt") {
            condition.gt = true;
        } else if is(option, "lt") {
            condition.lt = true;
        } else {
            return Err(CommandError::UnsupportedOption(
                String::from_utf8_lossy(option).into_owned(),
            ));
        }
    }
    if condition.nx && (condition.xx || condition.gt || condition.lt) {
        return Err(CommandError::ExpireNxWithOthers);
    }
    if condition.gt && condition.lt {
        return Err(CommandError::ExpireGtWithLt);
    }
    // Redis checks the options before the amount.
    let amount = integer(&args[1])?;
    let now = ctx.state.cache.now();
    let at = deadline(amount, unit, absolute, now, command)?;
    let key = Bytes::copy_from_slice(&args[0]);
    let (updated, set) = ctx
        .state
        .cache
        .update(&key, |current| {
            let Some(hit) = current else {
                return Ok((Edit::Keep, false));
            };
            // A key without expiry counts as never expiring: GT never holds for it, LT
            // always does (also for an instant in the past, which deletes it).
            let holds = match hit.expires_at {
                None => !(condition.xx || condition.gt),
                Some(current) => {
                    !(condition.nx
                        || condition.gt && at <= current
                        || condition.lt && at >= current)
                }
            };
            if !holds {
                return Ok((Edit::Keep, false));
            }
            let expiry = ctx.expiry(Ask::Until(at), None, now)?;
            Ok::<_, CommandError>((put_or_delete(expiry, hit.value.clone()), true))
        })
        .await?;
    ctx.track(updated.replicated());
    reply.integer(i64::from(set));
    Ok(())
}

/// `TTL`/`PTTL` (remaining) and `EXPIRETIME`/`PEXPIRETIME` (absolute): -2 for an absent key,
/// -1 for one without expiry; seconds are rounded as Redis rounds them.
pub async fn ttl(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
    unit: Unit,
    absolute: bool,
) -> Result<(), CommandError> {
    let Some(hit) = ctx.state.cache.get(&args[0]).await? else {
        reply.integer(-2);
        return Ok(());
    };
    let Some(at) = hit.expires_at else {
        reply.integer(-1);
        return Ok(());
    };
    let millis = if absolute {
        at.as_millis()
    } else {
        (at.as_millis() - ctx.state.cache.now().as_millis()).max(0)
    };
    reply.integer(match unit {
        Unit::Millis => millis,
        Unit::Seconds => (millis + 500) / 1000,
    });
    Ok(())
}

/// `PERSIST key`: 1 if an expiry was removed. Refused under `--max-ttl`, where every key
/// must expire.
pub async fn persist(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let key = Bytes::copy_from_slice(&args[0]);
    let max_ttl = ctx.state.cache.limits().max_ttl;
    let (updated, removed) = ctx
        .state
        .cache
        .update(&key, |current| match current {
            Some(hit) if hit.expires_at.is_some() => match max_ttl {
                Some(max) => Err(CommandError::PersistRefused { max }),
                None => Ok((
                    Edit::Put {
                        value: hit.value.clone(),
                        expires_at: None,
                    },
                    true,
                )),
            },
            _ => Ok((Edit::Keep, false)),
        })
        .await?;
    ctx.track(updated.replicated());
    reply.integer(i64::from(removed));
    Ok(())
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub fn scan(ctx: &mut Ctx<'_>, args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .filter(|text| text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or(CommandError::InvalidCursor)?;
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10;
    let mut strings = true;
    let mut rest = args[1..].iter();
    while let Some(option) = rest.next() {
        let value = rest.next().ok_or(CommandError::Syntax)?;
        if is(option, "match") {
            pattern = Some(value);
        } else if is(option, "count") {
            count = integer(value)?;
            if count < 1 {
                return Err(CommandError::Syntax);
            }
        } else if is(option, "type") {
            strings = is(value, "string");
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let step = ctx
        .state
        .cache
        .scan(cursor, usize::try_from(count).unwrap_or(usize::MAX));
    let keys: Vec<&Bytes> = step
        .keys
        .iter()
        .filter(|key| strings && pattern.is_none_or(|pattern| glob::matches(pattern, key)))
        .collect();
    reply.array(2);
    reply.bulk_display(step.cursor);
    reply.array(keys.len());
    for key in keys {
        reply.bulk(key);
    }
    Ok(())
}

/// `KEYS pattern`: a whole walk of the keys.
pub fn keys(ctx: &mut Ctx<'_>, args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let pattern = &args[0];
    let mut found = Vec::new();
    let mut cursor = 0;
    loop {
        let step = ctx.state.cache.scan(cursor, KEYS_STEP);
        found.extend(
            step.keys
                .into_iter()
                .filter(|key| glob::matches(pattern, key)),
        );
        cursor = step.cursor;
        if cursor == 0 {
            break;
        }
    }
    reply.array(found.len());
    for key in &found {
        reply.bulk(key);
    }
    Ok(())
}

/// `RANDOMKEY`.
pub fn randomkey(ctx: &mut Ctx<'_>, reply: &mut Reply<'_>) -> Result<(), CommandError> {
    // A fresh `RandomState` draws new keys, so what it hashes to is a new random number.
    let seed = RandomState::new().hash_one(ctx.session.client.id);
    match ctx.state.cache.random_key(seed) {
        Some(key) => reply.bulk(&key),
        None => reply.null(),
    }
    Ok(())
}

/// `FLUSHDB`/`FLUSHALL [ASYNC | SYNC]`: every key deleted through the write path, when
/// `--resp-allow-flush` allows it.
pub async fn flush(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
    command: &'static str,
) -> Result<(), CommandError> {
    match args {
        [] => {}
        [mode] if is(mode, "async") || is(mode, "sync") => {}
        _ => return Err(CommandError::Syntax),
    }
    if !ctx.state.settings.allow_flush {
        return Err(CommandError::FlushDisabled(command));
    }
    let acks = &mut ctx.session.acks;
    ctx.state
        .cache
        .flush(|removed| acks.track(removed.replicated.as_ref()))
        .await?;
    reply.ok();
    Ok(())
}
