//! Every refusal a RESP client can hear, as one enum whose `Display` is the error line Redis
//! sends for the same case (the first word is the error code clients match on: `ERR`,
//! `NOAUTH`, `WRONGPASS`, `OOM`, `EXECABORT`, ...), and the frame errors that close a
//! connection.

use std::time::Duration;

use crate::base::journal::CommitError;
use crate::base::time::Timestamp;
use crate::cache::{LifetimeError, ReadError, Unreachable, UpdateError, WriteError};
use crate::store::{DeleteError, PutError};

/// A command refused; the connection goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such command.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The name as sent (shortened, control characters blanked).
        name: String,
        /// The first arguments, each quoted and followed by a space, as Redis lists them.
        args: String,
    },
    /// No such subcommand.
    #[error("ERR unknown subcommand '{sub}'. Try {command} HELP.")]
    UnknownSubcommand {
        /// The subcommand as sent.
        sub: String,
        /// The command, upper case.
        command: &'static str,
    },
    /// Too few or too many arguments.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    /// An option that does not exist or does not combine with the others.
    #[error("ERR syntax error")]
    Syntax,
    /// An argument (or a stored value) that must be a 64-bit integer is not.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// An argument (or a stored value) that must be a float is not.
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// `INCR` and friends past the 64-bit range.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// `DECRBY` of the most negative integer, which cannot be negated.
    #[error("ERR decrement would overflow")]
    DecrementOverflow,
    /// An `EXPIRE` option that does not exist.
    #[error("ERR Unsupported option {0}")]
    UnsupportedOption(String),
    /// A `HELLO` option that does not exist, or lacks its arguments.
    #[error("ERR Syntax error in HELLO option '{0}'")]
    HelloSyntax(String),
    /// `HELLO` with a version that is not a number.
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolNotInteger,
    /// A `CLIENT SETINFO` attribute that does not exist.
    #[error("ERR Unrecognized option '{0}'")]
    UnrecognizedOption(String),
    /// `INCRBYFLOAT` to a NaN or an infinity.
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// A non-positive or overflowing expiry.
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    /// `EXPIRE ... NX` with `XX`, `GT` or `LT`.
    #[error("ERR NX and XX, GT or LT options at the same time are not compatible")]
    ExpireNxWithOthers,
    /// `EXPIRE ... GT LT`.
    #[error("ERR GT and LT options at the same time are not compatible")]
    ExpireGtWithLt,
    /// A negative `SETRANGE` offset.
    #[error("ERR offset is out of range")]
    OffsetOutOfRange,
    /// A value above `--max-value-bytes`.
    #[error(
        "ERR string exceeds maximum allowed size (the value would be {len} bytes; \
         --max-value-bytes is {max})"
    )]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty key, or one above `--max-key-bytes`.
    #[error("ERR the key is {len} bytes; keys must be 1 to {max} bytes (--max-key-bytes)")]
    BadKey {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write without a lifetime under `--max-ttl` and no default.
    #[error(
        "ERR a lifetime is required (the maximum TTL is {}s and there is no default): add EX \
         or PX (or use SETEX)", max.as_secs()
    )]
    TtlRequired {
        /// The maximum in force.
        max: Duration,
    },
    /// A lifetime beyond `--max-ttl`.
    #[error("ERR the lifetime of {}s exceeds the maximum TTL of {}s; ask for less", asked.as_secs(), max.as_secs())]
    TtlOverMax {
        /// The lifetime asked for.
        asked: Duration,
        /// The maximum in force.
        max: Duration,
    },
    /// `PERSIST` under `--max-ttl`.
    #[error(
        "ERR PERSIST is refused: the maximum TTL is {}s, so every key must expire",
        max.as_secs()
    )]
    PersistRefused {
        /// The maximum in force.
        max: Duration,
    },
    /// An expiry the schedule cannot file.
    #[error("ERR {0}")]
    Unschedulable(String),
    /// An expiry after the last one records can hold (Redis takes any 64-bit instant).
    #[error(
        "ERR the expiry is after {last} (PXAT {}), the last one tidecache can store \
         (expiries are kept as 64-bit Unix nanoseconds); ask for an earlier one",
        last.as_millis()
    )]
    ExpiryOutOfRange {
        /// The last expiry accepted.
        last: Timestamp,
    },
    /// No room under `noeviction`, or an entry larger than the whole capacity (HTTP's 507).
    #[error("OOM command not allowed when used memory > 'maxmemory'.")]
    OutOfMemory,
    /// A read (`MGET`) whose reply would exceed `--max-response-bytes`.
    #[error(
        "ERR the reply would be larger than the maximum of {max} bytes (--max-response-bytes); \
         ask for fewer keys per command"
    )]
    ReplyTooLarge {
        /// The maximum reply size.
        max: usize,
    },
    /// The data volume is full (HTTP's 507 `disk_full`): Redis' error for a failed write to
    /// its append-only file.
    #[error("MISCONF Errors writing to the AOF file: {0}")]
    DiskFull(String),
    /// The write could not be made durable for another reason.
    #[error("ERR {0}")]
    Persistence(String),
    /// Too few replicas acknowledged in time (the write stays applied here).
    #[error("NOREPLICAS Not enough good replicas to write: {0}")]
    NotReplicated(String),
    /// Partitioned mode: no owner of the key answered this node's forwarded request.
    #[error("TRYAGAIN {0}")]
    OwnerUnreachable(String),
    /// The database behind the cache is unavailable or refused the write (the message
    /// names the backend); nothing changed.
    #[error("ERR {0}")]
    Backend(String),
    /// Other writers kept changing the key.
    #[error("ERR the key kept changing under concurrent writes; try again")]
    Contended,
    /// A command other than `AUTH`, `HELLO`, `QUIT`, `RESET` before authenticating.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// `HELLO` without `AUTH` on a connection that has not authenticated.
    #[error(
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
         select the RESP protocol version at the same time"
    )]
    HelloNoAuth,
    /// A wrong user or password.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    /// `AUTH <password>` when the cluster has no token.
    #[error(
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    )]
    NoPasswordConfigured,
    /// `HELLO` with a version other than 2 or 3.
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    /// `SELECT` of a database other than 0.
    #[error("ERR DB index is out of range")]
    DbOutOfRange,
    /// A client name with spaces or control characters.
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    BadClientName,
    /// `SCAN` with a cursor that is not a number.
    #[error("ERR invalid cursor")]
    InvalidCursor,
    /// `FLUSHDB`/`FLUSHALL` without `--resp-allow-flush`.
    #[error(
        "ERR {0} is disabled on this server: it deletes every key of the cluster; start \
         cache-node with --resp-allow-flush to allow it"
    )]
    FlushDisabled(&'static str),
    /// `CONFIG SET` and friends: the node is configured by its flags.
    #[error("ERR CONFIG {0} is not supported: cache-node is configured by its flags")]
    ConfigReadOnly(&'static str),
    /// `CONFIG SET` of a parameter other than `notify-keyspace-events`.
    #[error(
        "ERR CONFIG SET of '{0}' is not supported: cache-node is configured by its flags; only \
         notify-keyspace-events can be set at run time"
    )]
    ConfigSetUnsupported(String),
    /// A `notify-keyspace-events` letter Redis does not know.
    #[error(
        "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - \
         Invalid event class character. Use 'Ag$lshzxeKEtmdn'."
    )]
    NotifyClass,
    /// Past the subscriptions one connection may hold.
    #[error(
        "ERR too many subscriptions on this connection (at most {0} channels and patterns); \
         subscribe to a pattern instead"
    )]
    TooManySubscriptions(usize),
    /// A command other than the pub/sub ones on a RESP2 connection in subscribed mode.
    #[error(
        "ERR Can't execute '{0}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
         are allowed in this context"
    )]
    SubscribedContext(&'static str),
    /// A `WAIT` timeout that is not an integer.
    #[error("ERR timeout is not an integer or out of range")]
    TimeoutNotInteger,
    /// A negative `WAIT` timeout.
    #[error("ERR timeout is negative")]
    NegativeTimeout,
    /// Key commands while the data volume loads.
    #[error("LOADING Redis is loading the dataset in memory")]
    Loading,
    /// `MULTI` inside `MULTI`.
    #[error("ERR MULTI calls can not be nested")]
    MultiNested,
    /// `EXEC` outside `MULTI`.
    #[error("ERR EXEC without MULTI")]
    ExecWithoutMulti,
    /// `DISCARD` outside `MULTI`.
    #[error("ERR DISCARD without MULTI")]
    DiscardWithoutMulti,
    /// `WATCH` inside `MULTI`.
    #[error("ERR WATCH inside MULTI is not allowed")]
    WatchInMulti,
    /// `EXEC` after a command of the transaction was refused while queueing.
    #[error("EXECABORT Transaction discarded because of previous errors.")]
    ExecAbort,
    /// `CLUSTER` (but for unknown subcommands and arities), `READONLY` and `READWRITE`
    /// without `--resp-cluster-mode`, as a Redis started without `cluster-enabled` answers.
    #[error("ERR This instance has cluster support disabled")]
    ClusterDisabled,
    /// Partitioned mode: the keys of a multi-key command (or of a transaction) are in
    /// different hash slots; a `{hash tag}` puts keys in one slot.
    #[error("CROSSSLOT Keys in request don't hash to the same slot")]
    CrossSlot,
    /// `--resp-cluster-mode`: this node does not own the key's slot; its primary does.
    #[error("MOVED {slot} {host}:{port}")]
    Moved {
        /// The key's hash slot.
        slot: u16,
        /// The primary's host.
        host: String,
        /// The primary's RESP port (its TLS port for a client connected over TLS).
        port: u16,
    },
    /// `--resp-cluster-mode`: this node owns the key's slot but is still receiving its data
    /// (the partition moves here); the node named serves it meanwhile, for this command only
    /// (`ASKING` first).
    #[error("ASK {slot} {host}:{port}")]
    Ask {
        /// The key's hash slot.
        slot: u16,
        /// The serving node's host.
        host: String,
        /// Its RESP port (its TLS port for a client connected over TLS).
        port: u16,
    },
    /// `--resp-cluster-mode` with no member to own the slot (discovery lists no node yet).
    #[error("CLUSTERDOWN Hash slot not served")]
    SlotNotServed,
    /// `CLUSTER COUNTKEYSINSLOT` of a slot outside 0 to 16383.
    #[error("ERR Invalid slot")]
    InvalidSlot,
    /// `CLUSTER MYID` while discovery does not list this node.
    #[error(
        "ERR this node is not a member of the cluster yet: discovery does not list it \
         (check --peers, --peers-file or --peers-service)"
    )]
    NotAMember,
}

impl CommandError {
    /// The error for an unknown command, listing its first arguments as Redis does (up to
    /// about 128 characters).
    pub fn unknown(name: &[u8], args: &[bytes::Bytes]) -> CommandError {
        let mut listed = String::new();
        for arg in args {
            if listed.len() >= 128 {
                break;
            }
            let room = 128 - listed.len();
            listed.push('\'');
            listed.push_str(&printable(&arg[..arg.len().min(room)]));
            listed.push_str("' ");
        }
        CommandError::UnknownCommand {
            name: printable(&name[..name.len().min(128)]),
            args: listed,
        }
    }

    /// Whether queueing this error inside `MULTI` dooms the transaction (Redis flags the
    /// transaction for unknown commands, wrong arities and cluster redirections only).
    pub fn aborts_transaction(&self) -> bool {
        matches!(
            self,
            CommandError::UnknownCommand { .. }
                | CommandError::WrongArity(_)
                | CommandError::NoAuth
                | CommandError::Loading
                | CommandError::CrossSlot
                | CommandError::Moved { .. }
                | CommandError::Ask { .. }
                | CommandError::SlotNotServed
        )
    }
}

/// `bytes` as text with line breaks blanked, so that an error stays one line.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

impl From<LifetimeError> for CommandError {
    fn from(error: LifetimeError) -> CommandError {
        match error {
            LifetimeError::Required { max } => CommandError::TtlRequired { max },
            LifetimeError::OverMax { asked, max } => CommandError::TtlOverMax { asked, max },
            LifetimeError::AfterLast { last } => CommandError::ExpiryOutOfRange { last },
            // Callers handle instants in the past themselves (Redis deletes the key); one
            // that slips through is an out-of-range expiry.
            LifetimeError::InPast => CommandError::InvalidExpire("set"),
        }
    }
}

impl From<Unreachable> for CommandError {
    fn from(error: Unreachable) -> CommandError {
        CommandError::OwnerUnreachable(error.to_string())
    }
}

impl From<ReadError> for CommandError {
    fn from(error: ReadError) -> CommandError {
        match error {
            ReadError::Unreachable(error) => error.into(),
            ReadError::Backend(error) => CommandError::Backend(error.to_string()),
        }
    }
}

impl From<WriteError> for CommandError {
    fn from(error: WriteError) -> CommandError {
        match error {
            WriteError::Put(PutError::EntryTooLarge { .. })
            | WriteError::Put(PutError::InsufficientStorage { .. }) => CommandError::OutOfMemory,
            WriteError::Put(error @ PutError::NoBucket { .. }) => {
                CommandError::Unschedulable(error.to_string())
            }
            WriteError::Put(
                PutError::PreconditionFailed { .. } | PutError::AlreadyExpired { .. },
            )
            | WriteError::Delete(DeleteError::PreconditionFailed { .. } | DeleteError::NotFound) => {
                CommandError::Contended
            }
            WriteError::Commit(CommitError::DiskFull(reason)) => CommandError::DiskFull(reason),
            WriteError::Commit(error) => CommandError::Persistence(error.to_string()),
            WriteError::Ack(error) => CommandError::NotReplicated(error.to_string()),
            WriteError::Encode(error) => CommandError::Persistence(error),
            WriteError::Unreachable(error) => CommandError::OwnerUnreachable(error.to_string()),
            WriteError::Backend(error) => CommandError::Backend(error.to_string()),
        }
    }
}

impl<E: Into<CommandError>> From<UpdateError<E>> for CommandError {
    fn from(error: UpdateError<E>) -> CommandError {
        match error {
            UpdateError::Decide(error) => error.into(),
            UpdateError::Write(error) => error.into(),
            UpdateError::Contended => CommandError::Contended,
        }
    }
}

/// A request that breaks the protocol: the connection hears the error and is closed (what
/// it already had executed stays).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `*<n>` that is not a number or is above the multibulk limit.
    #[error("ERR Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// `$<n>` that is not a number or is above the bulk limit.
    #[error("ERR Protocol error: invalid bulk length")]
    BulkLength,
    /// An element of a multibulk request that is not a bulk string.
    #[error("ERR Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A bulk string not followed by CRLF.
    #[error("ERR Protocol error: expected CRLF after a bulk string")]
    ExpectedCrlf,
    /// A `*<n>` line longer than the inline limit.
    #[error("ERR Protocol error: too big mbulk count string")]
    MultibulkLineTooLong,
    /// A `$<n>` line longer than the inline limit.
    #[error("ERR Protocol error: too big bulk count string")]
    BulkLineTooLong,
    /// An inline command longer than the inline limit.
    #[error("ERR Protocol error: too big inline request")]
    InlineTooLong,
    /// An inline command with an unbalanced quote.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A request larger than the query buffer limit.
    #[error(
        "ERR Protocol error: the request exceeds the query buffer limit of {limit} bytes \
         (client-query-buffer-limit)"
    )]
    QueryBufferFull {
        /// The limit.
        limit: usize,
    },
}
