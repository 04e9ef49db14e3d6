//! String commands. Plain writes (`SET`, `SETEX`, `MSET`, `SETNX`) go straight to
//! [`Cache::put`](crate::cache::Cache::put) / `put_many` with the preconditions Redis' options
//! mean (`NX`: create only, `XX`: the key must exist); anything that reads before it writes
//! (`GET`, `KEEPTTL`, `INCR`, `APPEND`, `SETRANGE`, `GETEX`, `GETDEL`) is a
//! [`Cache::update`](crate::cache::Cache::update).

use bytes::{Bytes, BytesMut};

use super::{Ask, Ctx, Expiry, Unit, deadline, float, integer, is, parse_float, parse_integer};
use crate::base::time::Timestamp;
use crate::cache::{Edit, Write, WriteError};
use crate::resp::error::CommandError;
use crate::resp::reply::Reply;
use crate::store::{EtagMatch, Preconditions, PutError};

/// `GET key`.
pub fn get(ctx: &mut Ctx<'_>, args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let hit = ctx.state.cache.get(&args[0]);
    ctx.count_read(hit.is_some());
    match hit {
        Some(hit) => reply.bulk(&hit.value),
        None => reply.null(),
    }
    Ok(())
}

/// `MGET key [key ...]`.
pub fn mget(ctx: &mut Ctx<'_>, args: &[Bytes], reply: &mut Reply<'_>) -> Result<(), CommandError> {
    reply.array(args.len());
    for key in args {
        let hit = ctx.state.cache.get(key);
        ctx.count_read(hit.is_some());
        match hit {
            Some(hit) => reply.bulk(&hit.value),
            None => reply.null(),
        }
    }
    Ok(())
}

/// `STRLEN key`.
pub fn strlen(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let len = ctx
        .state
        .cache
        .get(&args[0])
        .map_or(0, |hit| hit.value.len());
    reply.integer(len as i64);
    Ok(())
}

/// `GETRANGE key start end`, with Redis' clamping of negative and out-of-range offsets.
pub fn getrange(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let (start, end) = (integer(&args[1])?, integer(&args[2])?);
    let value = ctx
        .state
        .cache
        .get(&args[0])
        .map(|hit| hit.value)
        .unwrap_or_default();
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        reply.bulk(b"");
        return Ok(());
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if len == 0 || start > end {
        reply.bulk(b"");
    } else {
        reply.bulk(&value[start as usize..=end as usize]);
    }
    Ok(())
}

/// `SET`'s options, parsed.
#[derive(Debug, Default)]
struct SetOptions {
    /// `NX`.
    nx: bool,
    /// `XX`.
    xx: bool,
    /// `GET`.
    get: bool,
    /// `EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`; `None` for none of them.
    lifetime: Option<Ask>,
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL]`.
pub async fn set(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let now = ctx.state.cache.now();
    let mut options = SetOptions::default();
    let mut rest = args[2..].iter();
    while let Some(option) = rest.next() {
        let timed = [
            ("ex", Unit::Seconds, false),
            ("px", Unit::Millis, false),
            ("exat", Unit::Seconds, true),
            ("pxat", Unit::Millis, true),
        ]
        .into_iter()
        .find(|(name, _, _)| is(option, name));
        if let Some((_, unit, absolute)) = timed {
            if matches!(options.lifetime, Some(Ask::Keep)) {
                return Err(CommandError::Syntax);
            }
            let amount = rest.next().ok_or(CommandError::Syntax)?;
            let amount = integer(amount)?;
            if amount <= 0 {
                return Err(CommandError::InvalidExpire("set"));
            }
            if options.lifetime.is_some() {
                return Err(CommandError::Syntax);
            }
            options.lifetime = Some(Ask::Until(deadline(amount, unit, absolute, now, "set")?));
        } else if is(option, "keepttl") && options.lifetime.is_none_or(|l| l == Ask::Keep) {
            options.lifetime = Some(Ask::Keep);
        } else if is(option, "nx") && !options.xx {
            options.nx = true;
        } else if is(option, "xx") && !options.nx {
            options.xx = true;
        } else if is(option, "get") {
            options.get = true;
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let key = ctx.key(&args[0])?;
    let value = ctx.value(&args[1])?;
    let lifetime = options.lifetime.unwrap_or(Ask::Default);
    if !options.get && lifetime != Ask::Keep {
        // No read needed: one conditional write.
        let conditions = match (options.nx, options.xx) {
            (true, _) => Preconditions::create_only(),
            (_, true) => Preconditions {
                if_match: Some(EtagMatch::Any),
                if_none_match: None,
            },
            _ => Preconditions::none(),
        };
        let stored = match ctx.expiry(lifetime, None, now)? {
            Expiry::At(expires_at) => write(ctx, key, value, expires_at, conditions).await?,
            Expiry::Past => {
                let current = ctx.state.cache.get(&key);
                let allowed = !(options.nx && current.is_some() || options.xx && current.is_none());
                if allowed {
                    delete_quietly(ctx, key).await?;
                }
                allowed
            }
        };
        if stored {
            reply.ok();
        } else {
            reply.null();
        }
        return Ok(());
    }
    let (_, (stored, old)) = ctx
        .state
        .cache
        .update(&key, |current| {
            let old = current.map(|hit| hit.value.clone());
            if options.nx && current.is_some() || options.xx && current.is_none() {
                return Ok((Edit::Keep, (false, old)));
            }
            let edit =
                match ctx.expiry(lifetime, Some(current.and_then(|hit| hit.expires_at)), now)? {
                    Expiry::At(expires_at) => Edit::Put {
                        value: value.clone(),
                        expires_at,
                    },
                    Expiry::Past => Edit::Delete,
                };
            Ok::<_, CommandError>((edit, (true, old)))
        })
        .await?;
    if options.get {
        match old {
            Some(old) => reply.bulk(&old),
            None => reply.null(),
        }
    } else if stored {
        reply.ok();
    } else {
        reply.null();
    }
    Ok(())
}

/// `SETNX key value`: 1 if set, 0 if the key existed.
pub async fn setnx(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let key = ctx.key(&args[0])?;
    let value = ctx.value(&args[1])?;
    let now = ctx.state.cache.now();
    let expires_at = ctx.default_expiry(now)?;
    let stored = write(ctx, key, value, expires_at, Preconditions::create_only()).await?;
    reply.integer(i64::from(stored));
    Ok(())
}

/// `SETEX key seconds value` / `PSETEX key milliseconds value`.
pub async fn setex(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
    unit: Unit,
    command: &'static str,
) -> Result<(), CommandError> {
    let amount = integer(&args[1])?;
    if amount <= 0 {
        return Err(CommandError::InvalidExpire(command));
    }
    let now = ctx.state.cache.now();
    let at = deadline(amount, unit, false, now, command)?;
    let key = ctx.key(&args[0])?;
    let value = ctx.value(&args[2])?;
    let Expiry::At(expires_at) = ctx.expiry(Ask::Until(at), None, now)? else {
        return Err(CommandError::InvalidExpire(command));
    };
    write(ctx, key, value, expires_at, Preconditions::none()).await?;
    reply.ok();
    Ok(())
}

/// `GETSET key value`: `SET key value GET`, the TTL reset.
pub async fn getset(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let key = ctx.key(&args[0])?;
    let value = ctx.value(&args[1])?;
    let now = ctx.state.cache.now();
    let (_, old) = ctx
        .state
        .cache
        .update(&key, |current| {
            let expires_at = ctx.default_expiry(now)?;
            Ok::<_, CommandError>((
                Edit::Put {
                    value: value.clone(),
                    expires_at,
                },
                current.map(|hit| hit.value.clone()),
            ))
        })
        .await?;
    match old {
        Some(old) => reply.bulk(&old),
        None => reply.null(),
    }
    Ok(())
}

/// `GETDEL key`.
pub async fn getdel(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let key = Bytes::copy_from_slice(&args[0]);
    let (_, old) = ctx
        .state
        .cache
        .update(&key, |current| {
            Ok::<_, CommandError>((Edit::Delete, current.map(|hit| hit.value.clone())))
        })
        .await?;
    ctx.count_read(old.is_some());
    match old {
        Some(old) => reply.bulk(&old),
        None => reply.null(),
    }
    Ok(())
}

/// `GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]`. As in Redis, the options are
/// checked first, then an absent key answers nil, and only then is the amount read.
pub async fn getex(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let now = ctx.state.cache.now();
    // `Some(None)`: PERSIST; `Some(Some(..))`: an expiry still to read.
    let mut asked: Option<Option<(Unit, bool, &Bytes)>> = None;
    let mut rest = args[1..].iter();
    while let Some(option) = rest.next() {
        let timed = [
            ("ex", Unit::Seconds, false),
            ("px", Unit::Millis, false),
            ("exat", Unit::Seconds, true),
            ("pxat", Unit::Millis, true),
        ]
        .into_iter()
        .find(|(name, _, _)| is(option, name));
        if let Some((_, unit, absolute)) = timed {
            let amount = rest.next().ok_or(CommandError::Syntax)?;
            if asked.is_some() {
                return Err(CommandError::Syntax);
            }
            asked = Some(Some((unit, absolute, amount)));
        } else if is(option, "persist") && asked.is_none() {
            asked = Some(None);
        } else {
            return Err(CommandError::Syntax);
        }
    }
    let Some(asked) = asked else {
        return get(ctx, args, reply);
    };
    if ctx.state.cache.get(&args[0]).is_none() {
        ctx.count_read(false);
        reply.null();
        return Ok(());
    }
    let change = match asked {
        None => None,
        Some((unit, absolute, amount)) => {
            let amount = integer(amount)?;
            if amount <= 0 {
                return Err(CommandError::InvalidExpire("getex"));
            }
            Some(Ask::Until(deadline(amount, unit, absolute, now, "getex")?))
        }
    };
    let limits = ctx.state.cache.limits().clone();
    let key = Bytes::copy_from_slice(&args[0]);
    let (_, old) = ctx
        .state
        .cache
        .update(&key, |current| {
            let Some(hit) = current else {
                return Ok((Edit::Keep, None));
            };
            let edit = match change {
                None if hit.expires_at.is_none() => Edit::Keep,
                None => match limits.max_ttl {
                    Some(max) => return Err(CommandError::PersistRefused { max }),
                    None => Edit::Put {
                        value: hit.value.clone(),
                        expires_at: None,
                    },
                },
                Some(ask) => match ctx.expiry(ask, None, now)? {
                    Expiry::At(expires_at) => Edit::Put {
                        value: hit.value.clone(),
                        expires_at,
                    },
                    Expiry::Past => Edit::Delete,
                },
            };
            Ok((edit, Some(hit.value.clone())))
        })
        .await?;
    ctx.count_read(old.is_some());
    match old {
        Some(old) => reply.bulk(&old),
        None => reply.null(),
    }
    Ok(())
}

/// `MSET key value [key value ...]`: every pair through one batch of the write path (not
/// atomic across keys, unlike Redis).
pub async fn mset(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let writes = pairs(ctx, args, "mset", Preconditions::none())?;
    for result in ctx.state.cache.put_many(writes, None).await {
        result?;
    }
    reply.ok();
    Ok(())
}

/// `MSETNX key value [key value ...]`: 1 and every key set if none existed, else 0 and
/// nothing set. The check and the writes are one batch of create-only writes; if a key
/// appeared meanwhile, the keys this batch created are deleted again.
pub async fn msetnx(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let mut writes = pairs(ctx, args, "msetnx", Preconditions::create_only())?;
    // The last value of a repeated key wins, as in Redis.
    let mut seen = std::collections::HashSet::new();
    writes.reverse();
    writes.retain(|write| seen.insert(write.key.clone()));
    writes.reverse();
    if writes
        .iter()
        .any(|write| ctx.state.cache.get(&write.key).is_some())
    {
        reply.integer(0);
        return Ok(());
    }
    let keys: Vec<Bytes> = writes.iter().map(|write| write.key.clone()).collect();
    let results = ctx.state.cache.put_many(writes, None).await;
    let mut conflict = false;
    let mut created = Vec::new();
    let mut failure = None;
    for (key, result) in keys.into_iter().zip(results) {
        match result {
            Ok(written) => created.push((key, Preconditions::if_version(written.version))),
            Err(WriteError::Put(PutError::PreconditionFailed { .. })) => conflict = true,
            Err(error) => failure = failure.or(Some(error)),
        }
    }
    if conflict || failure.is_some() {
        for result in ctx.state.cache.delete_many(created, None).await {
            // A key written again meanwhile is someone else's now.
            let _ = result;
        }
    }
    if let Some(error) = failure {
        return Err(error.into());
    }
    reply.integer(i64::from(!conflict));
    Ok(())
}

/// The writes of `MSET`-style key/value pairs, each with `conditions`.
fn pairs(
    ctx: &Ctx<'_>,
    args: &[Bytes],
    command: &str,
    conditions: Preconditions,
) -> Result<Vec<Write>, CommandError> {
    if !args.len().is_multiple_of(2) {
        return Err(CommandError::WrongArity(command.to_string()));
    }
    let now = ctx.state.cache.now();
    let expires_at = ctx.default_expiry(now)?;
    args.chunks_exact(2)
        .map(|pair| {
            Ok(Write {
                key: ctx.key(&pair[0])?,
                value: ctx.value(&pair[1])?,
                expires_at,
                conditions: conditions.clone(),
            })
        })
        .collect()
}

/// `APPEND key value`: the new length.
pub async fn append(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let key = ctx.key(&args[0])?;
    let suffix = &args[1];
    let now = ctx.state.cache.now();
    let (_, len) = ctx
        .state
        .cache
        .update(&key, |current| {
            let old = current.map(|hit| &hit.value[..]).unwrap_or_default();
            ctx.check_value_len(old.len() + suffix.len())?;
            let mut value = BytesMut::with_capacity(old.len() + suffix.len());
            value.extend_from_slice(old);
            value.extend_from_slice(suffix);
            let len = value.len();
            let expires_at = kept_expiry(ctx, current.map(|hit| hit.expires_at), now)?;
            Ok::<_, CommandError>((
                Edit::Put {
                    value: value.freeze(),
                    expires_at,
                },
                len,
            ))
        })
        .await?;
    reply.integer(len as i64);
    Ok(())
}

/// `SETRANGE key offset value`: the new length.
pub async fn setrange(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let offset = integer(&args[1])?;
    if offset < 0 {
        return Err(CommandError::OffsetOutOfRange);
    }
    let offset = usize::try_from(offset).map_err(|_| CommandError::OffsetOutOfRange)?;
    let patch = &args[2];
    let key = ctx.key(&args[0])?;
    let now = ctx.state.cache.now();
    let (_, len) = ctx
        .state
        .cache
        .update(&key, |current| {
            let old = current.map(|hit| &hit.value[..]).unwrap_or_default();
            if patch.is_empty() {
                return Ok((Edit::Keep, old.len()));
            }
            let len = old.len().max(offset.saturating_add(patch.len()));
            ctx.check_value_len(len)?;
            let mut value = BytesMut::zeroed(len);
            value[..old.len()].copy_from_slice(old);
            value[offset..offset + patch.len()].copy_from_slice(patch);
            let expires_at = kept_expiry(ctx, current.map(|hit| hit.expires_at), now)?;
            Ok::<_, CommandError>((
                Edit::Put {
                    value: value.freeze(),
                    expires_at,
                },
                len,
            ))
        })
        .await?;
    reply.integer(len as i64);
    Ok(())
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`: the new value.
pub async fn incr_by(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    by: i64,
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let key = ctx.key(key)?;
    let now = ctx.state.cache.now();
    let (_, value) = ctx
        .state
        .cache
        .update(&key, |current| {
            let old = match current {
                Some(hit) => parse_integer(&hit.value).ok_or(CommandError::NotInteger)?,
                None => 0,
            };
            let new = old.checked_add(by).ok_or(CommandError::Overflow)?;
            let expires_at = kept_expiry(ctx, current.map(|hit| hit.expires_at), now)?;
            let value = Bytes::from(new.to_string());
            Ok::<_, CommandError>((Edit::Put { value, expires_at }, new))
        })
        .await?;
    reply.integer(value);
    Ok(())
}

/// `INCRBYFLOAT key increment`: the new value as a bulk string, in the shortest form that
/// reads back as the same double (Redis computes in `long double`; see `docs/resp.md`).
pub async fn incrbyfloat(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let by = float(&args[1])?;
    let key = ctx.key(&args[0])?;
    let now = ctx.state.cache.now();
    let (_, text) = ctx
        .state
        .cache
        .update(&key, |current| {
            let old = match current {
                Some(hit) => parse_float(&hit.value).ok_or(CommandError::NotFloat)?,
                None => 0.0,
            };
            let new = old + by;
            if !new.is_finite() {
                return Err(CommandError::NanOrInfinity);
            }
            let text = Bytes::from(format_float(new));
            let expires_at = kept_expiry(ctx, current.map(|hit| hit.expires_at), now)?;
            Ok((
                Edit::Put {
                    value: text.clone(),
                    expires_at,
                },
                text,
            ))
        })
        .await?;
    reply.bulk(&text);
    Ok(())
}

/// A double as `INCRBYFLOAT` stores it: no exponent, no trailing zeros.
fn format_float(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    format!("{value}")
}

/// The expiry a read-modify-write keeps: the key's own (`current` is `Some` for an existing
/// key), or the default lifetime for a new key.
fn kept_expiry(
    ctx: &Ctx<'_>,
    current: Option<Option<Timestamp>>,
    now: Timestamp,
) -> Result<Option<Timestamp>, CommandError> {
    match ctx.expiry(Ask::Keep, current, now)? {
        Expiry::At(expires_at) => Ok(expires_at),
        // Expired between the read and now: it is written anew with the default lifetime.
        Expiry::Past => ctx.default_expiry(now),
    }
}

/// Stores a value; `false` when the preconditions did not hold.
async fn write(
    ctx: &Ctx<'_>,
    key: Bytes,
    value: Bytes,
    expires_at: Option<Timestamp>,
    conditions: Preconditions,
) -> Result<bool, CommandError> {
    let write = Write {
        key,
        value,
        expires_at,
        conditions,
    };
    match ctx.state.cache.put(write, None).await {
        Ok(_) => Ok(true),
        Err(WriteError::Put(PutError::PreconditionFailed { .. })) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Deletes a key if it exists.
async fn delete_quietly(ctx: &Ctx<'_>, key: Bytes) -> Result<(), CommandError> {
    match ctx
        .state
        .cache
        .delete(key, Preconditions::none(), None)
        .await
    {
        Ok(_) | Err(WriteError::Delete(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
