//! String commands. Plain writes (`SET`, `SETEX`, `MSET`, `SETNX`) go straight to
//! [`Cache::put`](crate::cache::Cache::put) / `put_many` with the preconditions Redis' options
//! mean (`NX`: create only, `XX`: the key must exist); anything that reads before it writes
//! (`GET`, `KEEPTTL`, `INCR`, `APPEND`, `SETRANGE`, `GETEX`, `GETDEL`) is a
//! [`Cache::update`](crate::cache::Cache::update), and those that only rewrite the value
//! (`APPEND`, `SETRANGE`, `INCR*`) share [`rewrite`].

use bytes::{Bytes, BytesMut};

use super::{Ask, Ctx, Expiry, Unit, deadline, float, integer, is, parse_float, parse_integer};
use crate::base::time::Timestamp;
use crate::cache::{Edit, Write, WriteError};
use crate::resp::error::CommandError;
use crate::resp::reply::Reply;
use crate::store::{EtagMatch, Preconditions, PutError};

/// `GET key`.
pub async fn get(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let hit = ctx.state.cache.get(&args[0]).await?;
    ctx.count_read(hit.is_some());
    bulk_or_null(reply, hit.as_ref().map(|hit| &hit.value[..]));
    Ok(())
}

/// `MGET key [key ...]`: refused, before any of the reply is buffered, if the values found
/// would make the reply larger than `--max-response-bytes` (naming one large key many times
/// would otherwise buffer it that many times).
pub async fn mget(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let max = ctx.state.cache.limits().max_response_bytes;
    let mut size = 0usize;
    let mut hits = Vec::with_capacity(args.len());
    for hit in ctx.state.cache.get_many(args).await {
        let hit = hit?;
        // A bulk string's header and CRLF, at most this many bytes besides the value.
        size += hit.as_ref().map_or(0, |hit| hit.value.len()) + MGET_ENTRY_OVERHEAD;
        if size > max {
            return Err(CommandError::ReplyTooLarge { max });
        }
        hits.push(hit);
    }
    reply.array(args.len());
    for hit in hits {
        ctx.count_read(hit.is_some());
        bulk_or_null(reply, hit.as_ref().map(|hit| &hit.value[..]));
    }
    Ok(())
}

/// The bytes of an `MGET` reply element besides its value: `$<len>\r\n` and `\r\n`.
const MGET_ENTRY_OVERHEAD: usize = 16;

/// `STRLEN key`.
pub async fn strlen(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let len = ctx
        .state
        .cache
        .get(&args[0])
        .await?
        .map_or(0, |hit| hit.value.len());
    reply.integer(len as i64);
    Ok(())
}

/// `GETRANGE key start end`, with Redis' clamping of negative and out-of-range offsets.
pub async fn getrange(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let (start, end) = (integer(&args[1])?, integer(&args[2])?);
    let value = ctx
        .state
        .cache
        .get(&args[0])
        .await?
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

/// The expiry options `SET` and `GETEX` take an amount with: name, unit, absolute.
const TIMED: [(&str, Unit, bool); 4] = [
    ("ex", Unit::Seconds, false),
    ("px", Unit::Millis, false),
    ("exat", Unit::Seconds, true),
    ("pxat", Unit::Millis, true),
];

/// Whose options [`Options::parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// `SET`: `NX`, `XX`, `GET`, the timed options and `KEEPTTL`.
    Set,
    /// `GETEX`: the timed options and `PERSIST`.
    Getex,
}

/// The lifetime option of a `SET` or a `GETEX`.
#[derive(Debug, Clone, Copy)]
enum Lifetime<'a> {
    /// `EX`, `PX`, `EXAT` or `PXAT` with its amount, not read yet.
    Timed {
        unit: Unit,
        absolute: bool,
        amount: &'a [u8],
    },
    /// The command's option without an amount: `KEEPTTL` for `SET` (keep the key's expiry),
    /// `PERSIST` for `GETEX` (remove it).
    Word,
}

impl Lifetime<'_> {
    /// Whether both are the same option (which Redis lets repeat).
    fn same_option(self, other: Lifetime<'_>) -> bool {
        match (self, other) {
            (
                Lifetime::Timed { unit, absolute, .. },
                Lifetime::Timed {
                    unit: other_unit,
                    absolute: other_absolute,
                    ..
                },
            ) => unit == other_unit && absolute == other_absolute,
            (Lifetime::Word, Lifetime::Word) => true,
            _ => false,
        }
    }
}

/// `SET`'s and `GETEX`'s options, read as Redis reads both (one parser): an option may
/// repeat (the last amount counts), but two different lifetime options, `NX` with `XX`, an
/// option the command does not take, or a timed option without an amount are a syntax
/// error. Amounts are read only after every option, so a syntax error wins over a bad amount
/// (`SET k v EX 0 KEEPTTL` is a syntax error, `SET k v EX 0 EX 10` is fine).
#[derive(Debug, Default)]
struct Options<'a> {
    /// `NX`.
    nx: bool,
    /// `XX`.
    xx: bool,
    /// `GET`.
    get: bool,
    /// The lifetime option, if any.
    lifetime: Option<Lifetime<'a>>,
}

impl<'a> Options<'a> {
    fn parse(args: &'a [Bytes], command: Command) -> Result<Options<'a>, CommandError> {
        let set = command == Command::Set;
        let word = if set { "keepttl" } else { "persist" };
        let mut options = Options::default();
        let mut rest = args.iter();
        while let Some(option) = rest.next() {
            let lifetime = match TIMED.into_iter().find(|(name, _, _)| is(option, name)) {
                Some((_, unit, absolute)) => Lifetime::Timed {
                    unit,
                    absolute,
                    amount: rest.next().ok_or(CommandError::Syntax)?,
                },
                None if is(option, word) => Lifetime::Word,
                None if set && is(option, "nx") && !options.xx => {
                    options.nx = true;
                    continue;
                }
                None if set && is(option, "xx") && !options.nx => {
                    options.xx = true;
                    continue;
                }
                None if set && is(option, "get") => {
                    options.get = true;
                    continue;
                }
                None => return Err(CommandError::Syntax),
            };
            if options
                .lifetime
                .is_some_and(|asked| !asked.same_option(lifetime))
            {
                return Err(CommandError::Syntax);
            }
            options.lifetime = Some(lifetime);
        }
        Ok(options)
    }
}

/// The instant an expiry amount asks for, which must be a positive integer (`EX`, `PX`,
/// `EXAT`, `PXAT`, `SETEX`, `PSETEX`).
fn positive_deadline(
    amount: &[u8],
    unit: Unit,
    absolute: bool,
    now: Timestamp,
    command: &'static str,
) -> Result<Timestamp, CommandError> {
    let amount = integer(amount)?;
    if amount <= 0 {
        return Err(CommandError::InvalidExpire(command));
    }
    deadline(amount, unit, absolute, now, command)
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL]`.
pub async fn set(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let options = Options::parse(&args[2..], Command::Set)?;
    let now = ctx.state.cache.now();
    let lifetime = match options.lifetime {
        None => Ask::Default,
        Some(Lifetime::Word) => Ask::Keep,
        Some(Lifetime::Timed {
            unit,
            absolute,
            amount,
        }) => Ask::Until(positive_deadline(amount, unit, absolute, now, "set")?),
    };
    let key = ctx.key(&args[0])?;
    let value = ctx.value(&args[1])?;
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
                let current = ctx.state.cache.get(&key).await?;
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
    let (updated, (stored, old)) = ctx
        .state
        .cache
        .update(&key, |current| {
            let old = current.map(|hit| hit.value.clone());
            if options.nx && current.is_some() || options.xx && current.is_none() {
                return Ok((Edit::Keep, (false, old)));
            }
            let expiry = ctx.expiry(lifetime, Some(current.and_then(|hit| hit.expires_at)), now)?;
            Ok::<_, CommandError>((put_or_delete(expiry, value.clone()), (true, old)))
        })
        .await?;
    ctx.track(updated.replicated());
    if options.get {
        bulk_or_null(reply, old.as_deref());
    } else if stored {
        reply.ok();
    } else {
        reply.null();
    }
    Ok(())
}

/// A run of plain `SET key value` requests of one pipeline (each `[SET, key, value]`) as
/// one batch of the write path: the run shares group commits and peer batches instead of
/// waiting for each write's commit before the next request is read. Replies, errors and
/// their order are those of one `SET` after another.
pub async fn set_run(ctx: &mut Ctx<'_>, requests: &[Vec<Bytes>], reply: &mut Reply<'_>) {
    let now = ctx.state.cache.now();
    let mut refused = Vec::with_capacity(requests.len());
    let mut writes = Vec::with_capacity(requests.len());
    for args in requests {
        // The checks of `set`, in its order: key, value, lifetime policy.
        let write = ctx.key(&args[1]).and_then(|key| {
            Ok(Write {
                key,
                value: ctx.value(&args[2])?,
                expires_at: ctx.default_expiry(now)?,
                conditions: Preconditions::none(),
            })
        });
        match write {
            Ok(write) => {
                refused.push(None);
                writes.push(write);
            }
            Err(error) => refused.push(Some(error)),
        }
    }
    let mut results = ctx.state.cache.put_many(writes, None).await.into_iter();
    for refusal in refused {
        let outcome = match refusal {
            Some(error) => Err(error),
            None => match results.next() {
                Some(Ok(written)) => {
                    ctx.track(written.replicated.as_ref());
                    Ok(())
                }
                Some(Err(error)) => Err(error.into()),
                None => unreachable!("put_many answers every write"),
            },
        };
        match outcome {
            Ok(()) => reply.ok(),
            Err(error) => reply.command_error(&error),
        }
    }
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
    let now = ctx.state.cache.now();
    let at = positive_deadline(&args[1], unit, false, now, command)?;
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
    let (updated, old) = ctx
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
    ctx.track(updated.replicated());
    bulk_or_null(reply, old.as_deref());
    Ok(())
}

/// `GETDEL key`.
pub async fn getdel(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let key = Bytes::copy_from_slice(&args[0]);
    let (updated, old) = ctx
        .state
        .cache
        .update(&key, |current| {
            Ok::<_, CommandError>((Edit::Delete, current.map(|hit| hit.value.clone())))
        })
        .await?;
    ctx.track(updated.replicated());
    ctx.count_read(old.is_some());
    bulk_or_null(reply, old.as_deref());
    Ok(())
}

/// `GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]`. As in Redis, the options are
/// checked first, then an absent key answers nil, and only then is the amount read.
pub async fn getex(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let Some(lifetime) = Options::parse(&args[1..], Command::Getex)?.lifetime else {
        return get(ctx, args, reply).await;
    };
    if ctx.state.cache.get(&args[0]).await?.is_none() {
        ctx.count_read(false);
        reply.null();
        return Ok(());
    }
    let now = ctx.state.cache.now();
    // `None`: PERSIST.
    let until = match lifetime {
        Lifetime::Word => None,
        Lifetime::Timed {
            unit,
            absolute,
            amount,
        } => Some(positive_deadline(amount, unit, absolute, now, "getex")?),
    };
    let limits = ctx.state.cache.limits().clone();
    let key = Bytes::copy_from_slice(&args[0]);
    let (updated, old) = ctx
        .state
        .cache
        .update(&key, |current| {
            let Some(hit) = current else {
                return Ok((Edit::Keep, None));
            };
            let edit = match until {
                None if hit.expires_at.is_none() => Edit::Keep,
                None => match limits.max_ttl {
                    Some(max) => return Err(CommandError::PersistRefused { max }),
                    None => Edit::Put {
                        value: hit.value.clone(),
                        expires_at: None,
                    },
                },
                Some(at) => {
                    put_or_delete(ctx.expiry(Ask::Until(at), None, now)?, hit.value.clone())
                }
            };
            Ok((edit, Some(hit.value.clone())))
        })
        .await?;
    ctx.track(updated.replicated());
    ctx.count_read(old.is_some());
    bulk_or_null(reply, old.as_deref());
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
        ctx.track(result?.replicated.as_ref());
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
    let keys: Vec<Bytes> = writes.iter().map(|write| write.key.clone()).collect();
    let mut present = false;
    for hit in ctx.state.cache.get_many(&keys).await {
        present |= hit?.is_some();
    }
    if present {
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
            Ok(written) => {
                ctx.track(written.replicated.as_ref());
                created.push((key, Preconditions::if_version(written.version)));
            }
            Err(WriteError::Put(PutError::PreconditionFailed { .. })) => conflict = true,
            Err(error) => failure = failure.or(Some(error)),
        }
    }
    if conflict || failure.is_some() {
        // A key written again meanwhile is someone else's now: its refusal is ignored.
        for removed in ctx
            .state
            .cache
            .delete_many(created, None)
            .await
            .into_iter()
            .flatten()
        {
            ctx.track(removed.replicated.as_ref());
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
    let len = rewrite(ctx, &key, |ctx, old| {
        let old = old.unwrap_or_default();
        ctx.check_value_len(old.len() + suffix.len())?;
        let mut value = BytesMut::with_capacity(old.len() + suffix.len());
        value.extend_from_slice(old);
        value.extend_from_slice(suffix);
        let len = value.len();
        Ok((Some(value.freeze()), len))
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
    let len = rewrite(ctx, &key, |ctx, old| {
        let old = old.unwrap_or_default();
        if patch.is_empty() {
            return Ok((None, old.len()));
        }
        let len = old.len().max(offset.saturating_add(patch.len()));
        ctx.check_value_len(len)?;
        let mut value = BytesMut::zeroed(len);
        value[..old.len()].copy_from_slice(old);
        value[offset..offset + patch.len()].copy_from_slice(patch);
        Ok((Some(value.freeze()), len))
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
    let new = rewrite(ctx, &key, |_, old| {
        let old = match old {
            Some(old) => parse_integer(old).ok_or(CommandError::NotInteger)?,
            None => 0,
        };
        let new = old.checked_add(by).ok_or(CommandError::Overflow)?;
        Ok((Some(Bytes::from(new.to_string())), new))
    })
    .await?;
    reply.integer(new);
    Ok(())
}

/// `INCRBYFLOAT key increment`: the new value as a bulk string (see [`format_float`]).
pub async fn incrbyfloat(
    ctx: &mut Ctx<'_>,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    let by = float(&args[1])?;
    let key = ctx.key(&args[0])?;
    let text = rewrite(ctx, &key, |_, old| {
        let old = match old {
            Some(old) => parse_float(old).ok_or(CommandError::NotFloat)?,
            None => 0.0,
        };
        let new = old + by;
        if !new.is_finite() {
            return Err(CommandError::NanOrInfinity);
        }
        let text = Bytes::from(format_float(new));
        Ok((Some(text.clone()), text))
    })
    .await?;
    reply.bulk(&text);
    Ok(())
}

/// A double as `INCRBYFLOAT` stores it. Redis prints its `long double` with `%.17Lf` and
/// trims trailing zeros: no exponent, at most 17 decimals (`1e-20` is `0`), and `0` for
/// either zero. Within 17 decimals this is the shortest text that reads back as the same
/// double, which is what Redis prints unless its 80-bit `long double` differs from the
/// double in a digit that shows (see `docs/resp.md`).
fn format_float(value: f64) -> String {
    let shortest = value.to_string();
    let text = match shortest.split_once('.') {
        Some((_, decimals)) if decimals.len() > 17 => format!("{value:.17}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
        _ => shortest,
    };
    if text == "-0" { "0".to_string() } else { text }
}

/// A read-modify-write of the value that keeps the key's expiry (a new key gets the default
/// lifetime): `change` makes, from the current value (`None` for an absent key), the new
/// value (`None` leaves the key as it is) and what the command answers.
async fn rewrite<T>(
    ctx: &mut Ctx<'_>,
    key: &Bytes,
    mut change: impl FnMut(&Ctx<'_>, Option<&[u8]>) -> Result<(Option<Bytes>, T), CommandError>,
) -> Result<T, CommandError> {
    let now = ctx.state.cache.now();
    let shared: &Ctx<'_> = ctx;
    let (updated, answer) = shared
        .state
        .cache
        .update(key, |current| {
            let (value, answer) = change(shared, current.map(|hit| &hit.value[..]))?;
            let Some(value) = value else {
                return Ok((Edit::Keep, answer));
            };
            let expires_at = kept_expiry(shared, current.map(|hit| hit.expires_at), now)?;
            Ok::<_, CommandError>((Edit::Put { value, expires_at }, answer))
        })
        .await?;
    ctx.track(updated.replicated());
    Ok(answer)
}

/// The edit that stores `value` with `expiry`, or deletes the key when the expiry has passed.
pub(super) fn put_or_delete(expiry: Expiry, value: Bytes) -> Edit {
    match expiry {
        Expiry::At(expires_at) => Edit::Put { value, expires_at },
        Expiry::Past => Edit::Delete,
    }
}

/// A value read, or nil for none.
fn bulk_or_null(reply: &mut Reply<'_>, value: Option<&[u8]>) {
    match value {
        Some(value) => reply.bulk(value),
        None => reply.null(),
    }
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
    ctx: &mut Ctx<'_>,
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
        Ok(written) => {
            ctx.track(written.replicated.as_ref());
            Ok(true)
        }
        Err(WriteError::Put(PutError::PreconditionFailed { .. })) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Deletes a key if it exists.
async fn delete_quietly(ctx: &mut Ctx<'_>, key: Bytes) -> Result<(), CommandError> {
    match ctx
        .state
        .cache
        .delete(key, Preconditions::none(), None)
        .await
    {
        Ok(removed) => {
            ctx.track(removed.replicated.as_ref());
            Ok(())
        }
        Err(WriteError::Delete(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
