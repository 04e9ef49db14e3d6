//! Key events: the store announces the keys it removes on its own (expired, evicted), and
//! front ends that offer notifications (RESP's keyspace notifications) listen.
//!
//! Announcing costs one atomic load while no class is enabled or nobody listens, so the
//! sweep and the write path pay nothing for a feature most deployments leave off. The
//! channel is bounded: a listener that falls more than [`CAPACITY`] events behind misses
//! events and is told so ([`tokio::sync::broadcast::error::RecvError::Lagged`]), instead of
//! making the store hold every removed key for it.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Events a listener may fall behind by before it misses some.
pub const CAPACITY: usize = 16 * 1024;

/// Why the store removed a key on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEventKind {
    /// Its expiry passed (a sweep, or room made by removing an expired entry).
    Expired,
    /// It was evicted to make room under the memory capacity.
    Evicted,
}

impl KeyEventKind {
    /// The bit of this kind in [`KeyEvents::enable`]'s mask.
    pub const fn bit(self) -> u8 {
        match self {
            KeyEventKind::Expired => 1,
            KeyEventKind::Evicted => 2,
        }
    }

    /// The event's name in Redis' notifications.
    pub fn name(self) -> &'static str {
        match self {
            KeyEventKind::Expired => "expired",
            KeyEventKind::Evicted => "evicted",
        }
    }
}

/// One removed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// Why it was removed.
    pub kind: KeyEventKind,
    /// The key.
    pub key: Bytes,
}

/// The hub between the store and the listeners.
#[derive(Debug)]
pub struct KeyEvents {
    /// Bits of the kinds announced (see [`KeyEventKind::bit`]).
    enabled: AtomicU8,
    /// Where announced events go.
    sender: broadcast::Sender<KeyEvent>,
}

impl Default for KeyEvents {
    fn default() -> KeyEvents {
        KeyEvents {
            enabled: AtomicU8::new(0),
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl KeyEvents {
    /// Announces exactly the kinds whose bits are in `mask`.
    pub fn enable(&self, mask: u8) {
        self.enabled.store(mask, Ordering::Relaxed);
    }

    /// Whether an event of `kind` would reach anyone: the kind is enabled and someone
    /// listens. Callers check this before they copy a key out.
    pub fn wanted(&self, kind: KeyEventKind) -> bool {
        self.enabled.load(Ordering::Relaxed) & kind.bit() != 0 && self.sender.receiver_count() > 0
    }

    /// Announces that `key` was removed for `kind`, if that is [`wanted`](Self::wanted).
    pub fn announce(&self, kind: KeyEventKind, key: impl FnOnce() -> Bytes) {
        if self.wanted(kind) {
            // An error means the last listener left meanwhile: nobody to tell.
            let _ = self.sender.send(KeyEvent { kind, key: key() });
        }
    }

    /// A new listener, which sees events announced from now on.
    pub fn listen(&self) -> broadcast::Receiver<KeyEvent> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enabled_kinds_reach_listeners() {
        let events = KeyEvents::default();
        events.announce(KeyEventKind::Expired, || Bytes::from_static(b"nobody"));
        let mut listener = events.listen();
        events.announce(KeyEventKind::Expired, || Bytes::from_static(b"off"));
        events.enable(KeyEventKind::Expired.bit());
        events.announce(KeyEventKind::Evicted, || Bytes::from_static(b"not-asked"));
        events.announce(KeyEventKind::Expired, || Bytes::from_static(b"k"));
        let event = listener.try_recv().expect("one event");
        assert_eq!(
            event,
            KeyEvent {
                kind: KeyEventKind::Expired,
                key: Bytes::from_static(b"k")
            }
        );
        assert!(listener.try_recv().is_err(), "nothing else was announced");
    }

    #[test]
    fn a_listener_that_falls_behind_is_told_it_missed_events() {
        let events = KeyEvents::default();
        events.enable(KeyEventKind::Evicted.bit());
        let mut listener = events.listen();
        for _ in 0..CAPACITY + 1 {
            events.announce(KeyEventKind::Evicted, || Bytes::from_static(b"k"));
        }
        assert!(matches!(
            listener.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
    }
}
