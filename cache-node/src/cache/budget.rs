//! The node-wide budget of transient memory: request bodies being received and responses
//! being built or sent. `--max-memory` bounds the entries; without this budget a client could
//! still make the node allocate without limit outside them (a batch get naming a 1 MiB value
//! a thousand times, hundreds of bodies held one byte short of complete).
//!
//! A front end takes a [`Charge`] before it buffers bytes and grows it as it buffers more;
//! the bytes return to the budget when the charge is dropped, that is when the buffer is gone.
//! Taking never waits: over the budget the request is refused at once (HTTP 503 with
//! `Retry-After`, a RESP error), so that memory pressure sheds load instead of queueing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes in flight, node-wide, against a fixed total. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    total: usize,
    used: AtomicUsize,
}

/// Bytes taken from a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Charge {
    shared: Arc<Shared>,
    bytes: usize,
}

impl Budget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Budget {
        Budget {
            shared: Arc::new(Shared {
                total,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The total.
    pub fn total(&self) -> usize {
        self.shared.total
    }

    /// The bytes charged now.
    pub fn used(&self) -> usize {
        self.shared.used.load(Ordering::Relaxed)
    }

    /// A charge of `bytes`, if they fit in what is left.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let mut charge = Charge {
            shared: self.shared.clone(),
            bytes: 0,
        };
        charge.try_grow(bytes).then_some(charge)
    }
}

impl Charge {
    /// Takes `more` bytes on top of this charge, if they fit; on `false` nothing changed.
    pub fn try_grow(&mut self, more: usize) -> bool {
        let shared = &self.shared;
        let taken = shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more)
                    .filter(|after| *after <= shared.total)
            })
            .is_ok();
        if taken {
            self.bytes += more;
        }
        taken
    }

    /// The bytes this charge holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shared.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_total_and_return_on_drop() {
        let budget = Budget::new(100);
        let mut first = budget.try_charge(60).expect("fits");
        assert!(budget.try_charge(41).is_none(), "over the total");
        assert!(!first.try_grow(41));
        assert_eq!(first.bytes(), 60, "a refused growth changes nothing");
        let second = budget.try_charge(40).expect("fits exactly");
        assert_eq!(budget.used(), 100);
        drop(first);
        assert_eq!(budget.used(), 40);
        drop(second);
        assert_eq!(budget.used(), 0);
        assert!(budget.try_charge(usize::MAX).is_none(), "no overflow");
    }
}
