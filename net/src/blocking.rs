//! Blocking commands (BLPOP, BLMOVE, BZPOPMIN, BZMPOP, ...): a blocked
//! client looks at its keys every [`BLOCKED_RETRY_MS`] (on a cluster
//! [`BLOCKED_RETRY_ON_CLUSTER_MS`]) without the
//! node's exclusive turn, and takes that turn only to try its command once a
//! key holds something; the client that blocked first on a key is served
//! first; a client that disconnects stops waiting (`server::until_closed`).
//!
//! Must not touch: what a command takes (the list and sorted-set modules').

use crate::resp::Reply;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// How often a blocked command looks again.
pub const BLOCKED_RETRY_MS: u64 = 10;
/// How often a blocked command looks again on a cluster, where each look is
/// a round to the key's replicas.
pub const BLOCKED_RETRY_ON_CLUSTER_MS: u64 = 100;

/// How often a blocked command looks again, on a cluster (`routed`) or not.
fn retry_ms(routed: bool) -> u64 {
    if routed {
        BLOCKED_RETRY_ON_CLUSTER_MS
    } else {
        BLOCKED_RETRY_MS
    }
}

/// Whether a command blocks: it gives up its connection's turn and takes
/// the node's exclusive one only for each try.
pub fn blocks(name: &str) -> bool {
    crate::list::blocks(name) || matches!(name, "bzpopmin" | "bzpopmax" | "bzmpop")
}

/// Clients waiting in a blocking pop now (INFO's `blocked_clients`).
pub static BLOCKED_CLIENTS: AtomicU64 = AtomicU64::new(0);

/// Blocked clients in the order they blocked: ticket -> the (database,
/// key)s each waits on. The first to block on a key is served first.
static WAITING: std::sync::Mutex<BTreeMap<u64, Vec<(u8, Bytes)>>> =
    std::sync::Mutex::new(BTreeMap::new());
static NEXT_TICKET: AtomicU64 = AtomicU64::new(0);

fn waiting() -> std::sync::MutexGuard<'static, BTreeMap<u64, Vec<(u8, Bytes)>>> {
    WAITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// One blocked client, counted and queued while it lives.
struct Blocked {
    ticket: u64,
}

impl Blocked {
    fn new(ns: u8, keys: &[Bytes]) -> Blocked {
        BLOCKED_CLIENTS.fetch_add(1, Ordering::Relaxed);
        let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
        let keys = keys.iter().map(|k| (ns, k.clone())).collect();
        waiting().insert(ticket, keys);
        Blocked { ticket }
    }

    /// Whether no client that blocked earlier waits on `key` too.
    fn is_first_for(&self, ns: u8, key: &Bytes) -> bool {
        waiting()
            .range(..self.ticket)
            .all(|(_, keys)| !keys.iter().any(|(n, k)| *n == ns && k == key))
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        waiting().remove(&self.ticket);
        BLOCKED_CLIENTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One look or one try of a blocked command, at one key.
pub type Try<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Reply>> + Send + 'a>>;

/// Wait until `take` takes something from one of `keys` (in database
/// `ns`): each try looks with `holds` first, without the exclusive turn (a
/// blocked client must not stall the node every try), then takes under it.
/// `None` once `timeout_ms` passed (0: never). Looks every [`retry_ms`]
/// (longer on a cluster: `routed`).
pub async fn wait_for<'a, T>(
    ns: u8,
    keys: &[Bytes],
    (timeout_ms, isolation, routed): (u64, &crate::shared::Isolation, bool),
    mut holds: impl FnMut(Bytes) -> Try<'a, bool>,
    mut take: impl FnMut(Bytes) -> Try<'a, Option<T>>,
) -> Result<Option<T>, Reply> {
    let started = tokio::time::Instant::now();
    let blocked = Blocked::new(ns, keys);
    loop {
        for key in keys {
            if !blocked.is_first_for(ns, key) || !holds(key.clone()).await? {
                continue;
            }
            let _alone = isolation.exclusive().await;
            if let Some(taken) = take(key.clone()).await? {
                return Ok(Some(taken));
            }
        }
        if timeout_ms > 0 && started.elapsed().as_millis() as u64 >= timeout_ms {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(retry_ms(routed))).await;
    }
}
