//! Keyspace notifications: which of Redis' `notify-keyspace-events` classes are on, and a
//! connection's subscriptions to the channels they publish on.
//!
//! The store announces the keys it removes on its own ([`KeyEvents`]); a subscribed
//! connection turns each announcement into the messages Redis would send:
//! `__keyevent@0__:expired` with the key as payload (class `E`), and
//! `__keyspace@0__:<key>` with the event name as payload (class `K`), for the event classes
//! `x` (expired) and `e` (evicted). The other classes are accepted, as Redis' configuration
//! allows them, but tidecache publishes no events of theirs; `docs/resp.md` says so.
//!
//! # Bounds
//! A connection holds at most [`MAX_SUBSCRIPTIONS`] channels and patterns. One that falls
//! [`CAPACITY`](crate::base::events::CAPACITY) events behind is disconnected, as Redis
//! disconnects a subscriber over its pub/sub output buffer limit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::error::CommandError;
use super::glob;
use super::reply::Reply;
use crate::base::events::{KeyEvent, KeyEventKind, KeyEvents};

/// Channels plus patterns one connection may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// The class letters of `notify-keyspace-events`, in the order Redis prints them.
const CLASSES: &[(u8, u16)] = &[
    (b'g', 1 << 0),
    (b'$', 1 << 1),
    (b'l', 1 << 2),
    (b's', 1 << 3),
    (b'h', 1 << 4),
    (b'z', 1 << 5),
    (b'x', EXPIRED),
    (b'e', EVICTED),
    (b't', 1 << 8),
    (b'd', 1 << 9),
    (b'n', 1 << 13),
    (b'K', KEYSPACE),
    (b'E', KEYEVENT),
    (b'm', KEY_MISS),
];
const EXPIRED: u16 = 1 << 6;
const EVICTED: u16 = 1 << 7;
const KEYSPACE: u16 = 1 << 10;
const KEYEVENT: u16 = 1 << 11;
const KEY_MISS: u16 = 1 << 12;
/// What `A` stands for: every class but `m` and `n`, which Redis leaves out of it too.
const ALL: u16 = 0b11_1111_1111;

/// The parsed `notify-keyspace-events` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyFlags(u16);

impl NotifyFlags {
    /// Parses Redis' letters (`""` switches notifications off).
    ///
    /// # Errors
    /// [`CommandError::NotifyClass`] for a letter Redis does not know.
    pub fn parse(text: &[u8]) -> Result<NotifyFlags, CommandError> {
        let mut flags = 0;
        for &letter in text {
            flags |= match letter {
                b'A' => ALL,
                _ => CLASSES
                    .iter()
                    .find(|(class, _)| *class == letter)
                    .map(|(_, bit)| *bit)
                    .ok_or(CommandError::NotifyClass)?,
            };
        }
        Ok(NotifyFlags(flags))
    }

    /// The setting as `CONFIG GET` prints it: `A` replaces the event classes when all of
    /// them are on (and, as in Redis, hides `n`), then `K`, `E` and `m`.
    pub fn render(self) -> String {
        let all = self.0 & ALL == ALL;
        let mut text = String::from(if all { "A" } else { "" });
        for &(letter, bit) in CLASSES {
            let event_class = bit & (KEYSPACE | KEYEVENT | KEY_MISS) == 0;
            if self.0 & bit != 0 && !(all && event_class) {
                text.push(char::from(letter));
            }
        }
        text
    }

    /// The store events these flags publish: none unless a channel kind (`K` or `E`) is on.
    fn kinds(self) -> u8 {
        if self.0 & (KEYSPACE | KEYEVENT) == 0 {
            return 0;
        }
        let mut kinds = 0;
        if self.0 & EXPIRED != 0 {
            kinds |= KeyEventKind::Expired.bit();
        }
        if self.0 & EVICTED != 0 {
            kinds |= KeyEventKind::Evicted.bit();
        }
        kinds
    }
}

/// The node's current setting, shared by every connection.
#[derive(Debug, Default)]
pub struct Notify {
    flags: AtomicU16,
}

impl Notify {
    /// Sets the flags and tells the store which events to announce.
    pub fn set(&self, flags: NotifyFlags, events: &KeyEvents) {
        self.flags.store(flags.0, Ordering::Relaxed);
        events.enable(flags.kinds());
    }

    /// The flags now.
    pub fn get(&self) -> NotifyFlags {
        NotifyFlags(self.flags.load(Ordering::Relaxed))
    }
}

/// What a connection subscribed to.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Exact channels.
    channels: HashSet<Bytes>,
    /// Glob patterns, in the order subscribed.
    patterns: Vec<Bytes>,
    /// The store's announcements, while anything is subscribed.
    listener: Option<broadcast::Receiver<KeyEvent>>,
}

/// How `SUBSCRIBE` and friends changed a connection's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A channel.
    Channel,
    /// A pattern.
    Pattern,
}

impl Subscriptions {
    /// Channels plus patterns: what confirmations report as the count.
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Whether the connection is in subscribed mode.
    pub fn active(&self) -> bool {
        self.count() > 0
    }

    /// Subscribes to `name`, listening on `events` from the first subscription on; returns
    /// whether it is new.
    ///
    /// # Errors
    /// [`CommandError::TooManySubscriptions`] past [`MAX_SUBSCRIPTIONS`].
    pub fn add(
        &mut self,
        kind: Kind,
        name: &Bytes,
        events: &KeyEvents,
    ) -> Result<(), CommandError> {
        let known = match kind {
            Kind::Channel => self.channels.contains(name),
            Kind::Pattern => self.patterns.contains(name),
        };
        if known {
            return Ok(());
        }
        if self.count() >= MAX_SUBSCRIPTIONS {
            return Err(CommandError::TooManySubscriptions(MAX_SUBSCRIPTIONS));
        }
        match kind {
            Kind::Channel => {
                self.channels.insert(name.clone());
            }
            Kind::Pattern => self.patterns.push(name.clone()),
        }
        if self.listener.is_none() {
            self.listener = Some(events.listen());
        }
        Ok(())
    }

    /// Unsubscribes from `name`; stops listening once nothing is left.
    pub fn remove(&mut self, kind: Kind, name: &[u8]) {
        match kind {
            Kind::Channel => {
                self.channels.remove(name);
            }
            Kind::Pattern => self.patterns.retain(|pattern| pattern != name),
        }
        if !self.active() {
            self.listener = None;
        }
    }

    /// The channels or patterns subscribed to now (for an `UNSUBSCRIBE` without names).
    pub fn names(&self, kind: Kind) -> Vec<Bytes> {
        match kind {
            Kind::Channel => self.channels.iter().cloned().collect(),
            Kind::Pattern => self.patterns.clone(),
        }
    }

    /// Drops every subscription (`RESET`).
    pub fn clear(&mut self) {
        *self = Subscriptions::default();
    }

    /// The next announcement, while subscribed (never resolves otherwise, so that it can sit
    /// in a `select!` beside the socket read).
    pub async fn next(&mut self) -> Result<KeyEvent, broadcast::error::RecvError> {
        match &mut self.listener {
            Some(listener) => listener.recv().await,
            None => std::future::pending().await,
        }
    }

    /// An announcement already waiting, if any: lets one wake-up render a burst.
    pub fn try_next(&mut self) -> Option<Result<KeyEvent, broadcast::error::RecvError>> {
        use broadcast::error::{RecvError, TryRecvError};
        match self.listener.as_mut()?.try_recv() {
            Ok(event) => Some(Ok(event)),
            Err(TryRecvError::Lagged(missed)) => Some(Err(RecvError::Lagged(missed))),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }

    /// Writes the messages `event` makes for this connection under `flags`.
    pub fn deliver(&self, event: &KeyEvent, flags: NotifyFlags, reply: &mut Reply<'_>) {
        let class = match event.kind {
            KeyEventKind::Expired => EXPIRED,
            KeyEventKind::Evicted => EVICTED,
        };
        if flags.0 & class == 0 {
            return;
        }
        let name = event.kind.name().as_bytes();
        if flags.0 & KEYSPACE != 0 {
            let channel = [b"__keyspace@0__:".as_slice(), &event.key].concat();
            self.publish(&channel, name, reply);
        }
        if flags.0 & KEYEVENT != 0 {
            let channel = [b"__keyevent@0__:".as_slice(), name].concat();
            self.publish(&channel, &event.key, reply);
        }
    }

    /// One message on `channel` to the subscriptions that match it.
    fn publish(&self, channel: &[u8], payload: &[u8], reply: &mut Reply<'_>) {
        if self.channels.contains(channel) {
            reply.push(3);
            reply.bulk(b"message");
            reply.bulk(channel);
            reply.bulk(payload);
        }
        for pattern in &self.patterns {
            if glob::matches(pattern, channel) {
                reply.push(4);
                reply.bulk(b"pmessage");
                reply.bulk(pattern);
                reply.bulk(channel);
                reply.bulk(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print_as_redis_does() {
        for (text, printed) in [
            ("", ""),
            ("Ex", "xE"),
            ("KEA", "AKE"),
            ("xeK", "xeK"),
            ("g$lshzxetdKE", "AKE"),
            ("Km", "Km"),
            ("Kn", "nK"),
        ] {
            let flags = NotifyFlags::parse(text.as_bytes()).expect(text);
            assert_eq!(flags.render(), printed, "{text}");
            assert_eq!(NotifyFlags::parse(printed.as_bytes()), Ok(flags), "{text}");
        }
        // Redis, too, prints `A` and forgets the `n` beside it.
        assert_eq!(NotifyFlags::parse(b"KEAn").expect("flags").render(), "AKE");
        assert_eq!(NotifyFlags::parse(b"Eq"), Err(CommandError::NotifyClass));
    }

    #[test]
    fn events_are_announced_only_with_a_channel_kind_and_their_class() {
        let kinds = |text: &str| NotifyFlags::parse(text.as_bytes()).expect("flags").kinds();
        assert_eq!(kinds("x"), 0, "no K or E: nothing is published");
        assert_eq!(kinds("Ex"), KeyEventKind::Expired.bit());
        assert_eq!(kinds("Ke"), KeyEventKind::Evicted.bit());
        assert_eq!(
            kinds("KEA"),
            KeyEventKind::Expired.bit() | KeyEventKind::Evicted.bit()
        );
        assert_eq!(kinds("KE$g"), 0, "classes tidecache never publishes");
    }
}
