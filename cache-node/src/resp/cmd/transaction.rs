//! `MULTI`/`EXEC`/`DISCARD`/`WATCH`/`UNWATCH` on the store's versions: `WATCH` records the
//! version of each key (or its absence), and `EXEC` runs the queued commands only if every
//! watched key still has it. A write by anyone, this client included, an expiry change or a
//! delete gives a key a new version and so aborts the transaction, as in Redis.
//!
//! Unlike Redis, the queued commands are not isolated from other clients: they run one after
//! another once the check passed, and other clients' commands may run between them.

use bytes::Bytes;

use super::{Cmd, Ctx, Spec, run};
use crate::resp::error::CommandError;
use crate::resp::reply::Reply;

/// A command arriving while `MULTI` is open: the transaction commands act, the others are
/// queued.
pub async fn in_multi(
    ctx: &mut Ctx<'_>,
    spec: &'static Spec,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    match spec.cmd {
        Cmd::Exec => exec(ctx, reply).await,
        Cmd::Discard => {
            discard(ctx);
            reply.ok();
            Ok(())
        }
        Cmd::Multi => Err(CommandError::MultiNested),
        Cmd::Watch => Err(CommandError::WatchInMulti),
        Cmd::Quit | Cmd::Reset => run(ctx, spec, args, reply).await,
        _ => {
            let queued = ctx.session.multi.get_or_insert_with(Vec::new);
            queued.push(args.to_vec());
            ctx.session.client.names().multi = Some(queued.len());
            reply.simple("QUEUED");
            Ok(())
        }
    }
}

/// The transaction commands outside `MULTI`.
pub async fn run_outside(
    ctx: &mut Ctx<'_>,
    cmd: Cmd,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<(), CommandError> {
    match cmd {
        Cmd::Multi => {
            ctx.session.multi = Some(Vec::new());
            ctx.session.multi_failed = false;
            ctx.session.client.names().multi = Some(0);
            reply.ok();
            Ok(())
        }
        Cmd::Exec => Err(CommandError::ExecWithoutMulti),
        Cmd::Discard => Err(CommandError::DiscardWithoutMulti),
        Cmd::Watch => {
            for key in args {
                if !ctx
                    .session
                    .watched
                    .iter()
                    .any(|(watched, _)| watched == key)
                {
                    let version = ctx.state.cache.get(key).await?.map(|hit| hit.version);
                    ctx.session
                        .watched
                        .push((Bytes::copy_from_slice(key), version));
                }
            }
            reply.ok();
            Ok(())
        }
        _ => {
            ctx.session.watched.clear();
            reply.ok();
            Ok(())
        }
    }
}

/// Ends the transaction and forgets the watched keys.
pub fn discard(ctx: &mut Ctx<'_>) {
    ctx.session.multi = None;
    ctx.session.multi_failed = false;
    ctx.session.watched.clear();
    ctx.session.client.names().multi = None;
}

/// `EXEC`: aborted (`EXECABORT`) after a refused queueing, `nil` if a watched key changed,
/// else an array of every queued command's reply.
async fn exec(ctx: &mut Ctx<'_>, reply: &mut Reply<'_>) -> Result<(), CommandError> {
    let queued = ctx.session.multi.take().unwrap_or_default();
    let failed = ctx.session.multi_failed;
    let mut unchanged = true;
    for (key, version) in &ctx.session.watched {
        unchanged &= ctx.state.cache.get(key).await?.map(|hit| hit.version) == *version;
    }
    discard(ctx);
    if failed {
        return Err(CommandError::ExecAbort);
    }
    if !unchanged {
        reply.null_array();
        return Ok(());
    }
    reply.array(queued.len());
    for args in &queued {
        // Looked up and checked when queued.
        if let Some(spec) = super::lookup(&args[0])
            && let Err(error) = run(ctx, spec, args, reply).await
        {
            reply.command_error(&error);
        }
    }
    Ok(())
}
