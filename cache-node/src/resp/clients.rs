//! The connected clients: what `CLIENT LIST`, `CLIENT INFO` and `INFO clients` report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Every connected client, by id.
#[derive(Debug, Default)]
pub struct Clients {
    /// The id the next client gets (Redis ids start at 1 and are never reused).
    next_id: AtomicU64,
    /// The clients connected now.
    connected: Mutex<BTreeMap<u64, Arc<Client>>>,
}

/// One client as `CLIENT LIST` shows it.
#[derive(Debug)]
pub struct Client {
    /// Its id (`CLIENT ID`).
    pub id: u64,
    /// The peer's address.
    pub addr: SocketAddr,
    /// The local address it connected to.
    pub laddr: SocketAddr,
    /// The socket's file descriptor.
    pub fd: i32,
    /// When it connected.
    pub connected: Instant,
    /// Milliseconds after `connected` of its last request, for `idle=`.
    pub last_active_ms: AtomicU64,
    /// What it said about itself (`CLIENT SETNAME`, `CLIENT SETINFO`, `HELLO`).
    pub names: Mutex<Names>,
}

/// The names a client gives itself.
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// `CLIENT SETNAME`.
    pub name: String,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: String,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: String,
    /// The protocol it speaks, 2 or 3.
    pub resp: i64,
    /// Whether a `MULTI` is open, and with how many commands queued.
    pub multi: Option<usize>,
    /// Set by `READONLY`, cleared by `READWRITE` and `RESET`.
    pub readonly: bool,
}

/// Removes its client from the registry when the connection ends, however it ends.
#[derive(Debug)]
pub struct Registration<'a> {
    clients: &'a Clients,
    /// The client registered.
    pub client: Arc<Client>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(&self.clients.connected).remove(&self.client.id);
    }
}

impl Clients {
    /// Registers a new connection; it is listed until the returned guard is dropped.
    pub fn register(&self, addr: SocketAddr, laddr: SocketAddr, fd: i32) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let client = Arc::new(Client {
            id,
            addr,
            laddr,
            fd,
            connected: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            names: Mutex::new(Names {
                resp: 2,
                ..Names::default()
            }),
        });
        lock(&self.connected).insert(id, client.clone());
        Registration {
            clients: self,
            client,
        }
    }

    /// How many clients are connected.
    pub fn count(&self) -> usize {
        lock(&self.connected).len()
    }

    /// Every client's `CLIENT LIST` line, by id.
    pub fn list(&self) -> String {
        let clients: Vec<Arc<Client>> = lock(&self.connected).values().cloned().collect();
        clients.iter().map(|client| client.line()).collect()
    }
}

impl Client {
    /// Notes a request now, for `idle=`.
    pub fn touch(&self) {
        let ms = self.connected.elapsed().as_millis();
        self.last_active_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The client's names.
    pub fn names(&self) -> MutexGuard<'_, Names> {
        lock(&self.names)
    }

    /// The client's `CLIENT LIST` / `CLIENT INFO` line, with Redis' fields.
    pub fn line(&self) -> String {
        let names = self.names().clone();
        let age = self.connected.elapsed();
        let idle_ms =
            (age.as_millis() as u64).saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        // Redis' letters in Redis' order: `x` in a MULTI, `r` after READONLY, else `N`.
        let mut flags = String::new();
        let multi = match names.multi {
            Some(queued) => {
                flags.push('x');
                queued as i64
            }
            None => -1,
        };
        if names.readonly {
            flags.push('r');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 sub=0 \
             psub=0 ssub=0 multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 \
             rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=NULL user=default redir=-1 \
             resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            names.name,
            age.as_secs(),
            idle_ms / 1000,
            names.resp,
            names.lib_name,
            names.lib_ver,
        )
    }
}

/// Registry updates are single map operations, so a panic elsewhere cannot leave the map
/// half-updated: a poisoned lock is taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
