//! Progress and teardown messages on stderr that can neither block nor abort the code
//! that writes them. The demo's output is often a pipe (`make demo 2>&1 | tee demo.log`)
//! whose reader dies with the same Ctrl-C that starts the teardown; Rust ignores SIGPIPE,
//! so a write then fails with EPIPE, and `eprintln!` turns that into a panic, which in
//! the signal handler's thread used to end the teardown before it began. A pipe whose
//! reader stopped reading would instead block the writer. So lines are handed to a
//! writer thread of their own and a failed write only loses its line.

use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

/// Lines handed to [`say`] and not yet written (or lost).
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Queues `line` for stderr; returns at once whatever stderr is.
pub fn say(line: impl Into<String>) {
    static WRITER: OnceLock<Option<Sender<String>>> = OnceLock::new();
    let writer = WRITER.get_or_init(|| {
        let (sender, lines) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                for line in lines {
                    // EPIPE or EBADF: the line is lost, which is all that can be done.
                    let _written = writeln!(std::io::stderr().lock(), "{line}");
                    PENDING.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .ok()
            .map(|_thread| sender)
    });
    // Without a writer thread (the machine refused one) the line is dropped rather than
    // written here, where it could block.
    if let Some(sender) = writer {
        PENDING.fetch_add(1, Ordering::SeqCst);
        if sender.send(line.into()).is_err() {
            PENDING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Waits until every queued line is written or lost, at most `timeout`: called before
/// the process exits, so that the last messages of a teardown are not cut off when
/// stderr works and do not hold up the exit when it does not.
pub fn flush(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while PENDING.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn say_returns_and_flush_waits_for_the_writer() {
        say("console: a test line");
        flush(Duration::from_secs(5));
        assert_eq!(PENDING.load(Ordering::SeqCst), 0);
    }
}
