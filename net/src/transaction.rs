//! A connection's transaction state: MULTI's queue (bounded in commands and
//! bytes), whether a command was refused while queueing (EXEC then aborts), and
//! the keys WATCH fingerprinted. EXEC runs the queue holding the node's
//! exclusive turn (`shared::Isolation`), so no command of another connection
//! of this node interleaves with a transaction's.
//!
//! Must not touch: running commands (`commands` runs the queue at EXEC), how a
//! read travels (`backend`).

use crate::backend::Backend;
use crate::reply::err;
use crate::reply::Step;
use crate::resp::Reply;
use bytes::Bytes;
use shoal_engine::digest::set_hash;

/// Commands one MULTI may queue.
pub const QUEUED_COMMANDS_MAX: usize = 100_000;
/// Bytes of arguments one MULTI may queue.
pub const QUEUED_BYTES_MAX: usize = 64 << 20;
/// Keys one connection may WATCH at once.
pub const WATCHED_KEYS_MAX: usize = 10_000;

/// Commands that run at once even inside MULTI (Redis's list).
pub fn runs_while_queueing(name: &str) -> bool {
    matches!(
        name,
        "multi" | "exec" | "discard" | "watch" | "quit" | "reset"
    )
}

/// Commands refused inside MULTI (Redis's `no-multi` ones): the refusal
/// aborts EXEC.
pub fn refused_inside(name: &str) -> bool {
    matches!(name, "save" | "shutdown" | "monitor")
}

/// One key WATCH saw: its namespace, and a hash of its sibling set then
/// (`None`: absent). Any write to the key changes the set's dots or context.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Watched {
    namespace: u8,
    key: Bytes,
    fingerprint: Option<u64>,
}

/// Why EXEC will discard the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aborted {
    /// A command was refused while queued (unknown, wrong arity, NOAUTH).
    Refused,
    /// The queue passed its limit in commands or bytes.
    TooLarge,
}

#[derive(Default)]
struct Queue {
    commands: Vec<Vec<Bytes>>,
    bytes: usize,
    aborted: Option<Aborted>,
}

/// A connection's MULTI queue and watched keys.
#[derive(Default)]
pub struct Transaction {
    queue: Option<Queue>,
    watched: Vec<Watched>,
}

/// What EXEC is to do.
pub enum ExecPlan {
    /// Reply this (EXEC without MULTI, EXECABORT) and run nothing.
    Refuse(Step),
    /// Check the watched keys, then run these commands in order.
    Run {
        commands: Vec<Vec<Bytes>>,
        watched: Vec<(u8, Bytes, Option<u64>)>,
    },
}

impl Transaction {
    pub fn is_queueing(&self) -> bool {
        self.queue.is_some()
    }

    /// Commands queued since MULTI, or `None` outside a transaction.
    pub fn queued_len(&self) -> Option<usize> {
        self.queue.as_ref().map(|q| q.commands.len())
    }

    /// MULTI.
    pub fn begin(&mut self) -> Step {
        if self.queue.is_some() {
            return err("ERR MULTI calls can not be nested");
        }
        self.queue = Some(Queue::default());
        Step::Reply(Reply::ok())
    }

    /// DISCARD.
    pub fn discard(&mut self) -> Step {
        if self.queue.take().is_none() {
            return err("ERR DISCARD without MULTI");
        }
        self.watched.clear();
        Step::Reply(Reply::ok())
    }

    /// UNWATCH (also what EXEC and DISCARD do).
    pub fn unwatch(&mut self) -> Step {
        self.watched.clear();
        Step::Reply(Reply::ok())
    }

    /// A command refused before it could be queued: EXEC will abort.
    pub fn refused_while_queueing(&mut self) {
        if let Some(queue) = &mut self.queue {
            queue.aborted.get_or_insert(Aborted::Refused);
        }
    }

    /// Queue `args` (a command the table accepted) for EXEC.
    pub fn queue(&mut self, args: Vec<Bytes>) -> Step {
        let queue = self.queue.as_mut().expect("queue() only while queueing");
        let bytes: usize = args.iter().map(Bytes::len).sum();
        if queue.commands.len() >= QUEUED_COMMANDS_MAX || queue.bytes + bytes > QUEUED_BYTES_MAX {
            queue.aborted.get_or_insert(Aborted::TooLarge);
            return err(format!(
                "ERR transaction too large: MULTI queues at most {QUEUED_COMMANDS_MAX} commands and {QUEUED_BYTES_MAX} bytes; EXEC will discard it"
            ));
        }
        queue.bytes += bytes;
        queue.commands.push(args);
        Step::Reply(Reply::Simple("QUEUED".into()))
    }

    /// EXEC: what to run, and the watches it depends on; either way the queue
    /// and the watches end here.
    pub fn exec(&mut self) -> ExecPlan {
        let Some(queue) = self.queue.take() else {
            return ExecPlan::Refuse(err("ERR EXEC without MULTI"));
        };
        let watched = std::mem::take(&mut self.watched);
        if queue.aborted.is_some() {
            return ExecPlan::Refuse(err(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        ExecPlan::Run {
            commands: queue.commands,
            watched: watched
                .into_iter()
                .map(|w| (w.namespace, w.key, w.fingerprint))
                .collect(),
        }
    }

    /// WATCH `keys` in namespace `ns`: remember each key's set as it is now.
    pub async fn watch(&mut self, backend: &Backend<'_>, ns: u8, keys: &[Bytes]) -> Step {
        if self.queue.is_some() {
            return err("ERR WATCH inside MULTI is not allowed");
        }
        if self.watched.len() + keys.len() > WATCHED_KEYS_MAX {
            return err(format!(
                "ERR too many watched keys: a connection watches at most {WATCHED_KEYS_MAX}"
            ));
        }
        let fingerprints = match fingerprints(backend, ns, keys).await {
            Ok(f) => f,
            Err(reply) => return Step::Reply(reply),
        };
        for (key, fingerprint) in keys.iter().zip(fingerprints) {
            let watched = Watched {
                namespace: ns,
                key: key.clone(),
                fingerprint,
            };
            if !self.watched.contains(&watched) {
                self.watched.push(watched);
            }
        }
        Step::Reply(Reply::ok())
    }
}

/// Each key's fingerprint now (`None`: absent), or the read's error reply:
/// its string's set hash, mixed with every live element of its collections
/// (name and set hash), so a write to a hash field, a list element, a set or
/// sorted-set member changes it too. Reading a collection's elements costs
/// in proportion to its size, at WATCH and again at EXEC.
async fn fingerprints(
    backend: &Backend<'_>,
    ns: u8,
    keys: &[Bytes],
) -> Result<Vec<Option<u64>>, Reply> {
    let strings = backend.read(ns, keys).await;
    let mut out = Vec::with_capacity(keys.len());
    for (key, read) in keys.iter().zip(strings) {
        let mut print = read?.map(|set| set_hash(&set));
        if let Some(at_ms) = backend.collection_deadline(ns, key) {
            // EXPIRE and PERSIST of a watched collection change it too.
            print = Some(print.unwrap_or(0) ^ at_ms.wrapping_mul(0xA24B_AED4_963E_E407));
        }
        for kind in crate::keyspace::Kind::COLLECTIONS {
            for (name, set) in backend.elements(ns, kind, key).await? {
                let element = shoal_engine::digest::key_hash(kind as u8, &name, set_hash(&set));
                let mixed = print.unwrap_or(0).rotate_left(7) ^ element;
                print = Some(mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            }
        }
        out.push(print);
    }
    Ok(out)
}

/// Whether every watched key still holds what WATCH saw (EXEC runs only then).
/// A key that cannot be read counts as changed.
pub async fn watches_hold(backend: &Backend<'_>, watched: &[(u8, Bytes, Option<u64>)]) -> bool {
    for (ns, key, seen) in watched {
        match fingerprints(backend, *ns, std::slice::from_ref(key)).await {
            Ok(now) if now[0] == *seen => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn reply(step: Step) -> Reply {
        match step {
            Step::Reply(reply) => reply,
            _ => panic!("a transaction step is always a reply"),
        }
    }

    #[test]
    fn a_queue_runs_in_order_and_ends_at_exec() {
        let mut tx = Transaction::default();
        assert!(
            matches!(reply(tx.exec_refusal()), Reply::Error(e) if e.contains("EXEC without MULTI"))
        );
        assert_eq!(reply(tx.begin()), Reply::ok());
        assert!(matches!(reply(tx.begin()), Reply::Error(e) if e.contains("nested")));
        assert_eq!(
            reply(tx.queue(words(&["SET", "a", "1"]))),
            Reply::Simple("QUEUED".into())
        );
        assert_eq!(
            reply(tx.queue(words(&["GET", "a"]))),
            Reply::Simple("QUEUED".into())
        );
        let ExecPlan::Run { commands, watched } = tx.exec() else {
            panic!("a clean queue runs");
        };
        assert_eq!(
            commands,
            vec![words(&["SET", "a", "1"]), words(&["GET", "a"])]
        );
        assert!(watched.is_empty());
        assert!(!tx.is_queueing());
    }

    #[test]
    fn a_refusal_while_queueing_aborts_exec_and_discard_ends_the_queue() {
        let mut tx = Transaction::default();
        tx.refused_while_queueing();
        assert!(!tx.is_queueing(), "a refusal outside MULTI changes nothing");
        tx.begin();
        tx.queue(words(&["SET", "a", "1"]));
        tx.refused_while_queueing();
        let ExecPlan::Refuse(step) = tx.exec() else {
            panic!("EXEC after a refused command must not run the queue");
        };
        assert!(matches!(reply(step), Reply::Error(e) if e.starts_with("EXECABORT")));
        assert!(matches!(reply(tx.discard()), Reply::Error(e) if e.contains("without MULTI")));
        tx.begin();
        assert_eq!(reply(tx.discard()), Reply::ok());
        assert!(!tx.is_queueing());
    }

    #[test]
    fn the_queue_is_bounded_in_commands_and_bytes() {
        let mut tx = Transaction::default();
        tx.begin();
        let big = Bytes::from(vec![b'x'; QUEUED_BYTES_MAX / 2]);
        let set = |v: &Bytes| {
            vec![
                Bytes::from_static(b"SET"),
                Bytes::from_static(b"k"),
                v.clone(),
            ]
        };
        assert_eq!(reply(tx.queue(set(&big))), Reply::Simple("QUEUED".into()));
        assert!(matches!(reply(tx.queue(set(&big))), Reply::Error(e) if e.contains("too large")));
        assert!(matches!(tx.exec(), ExecPlan::Refuse(_)));
        tx.begin();
        for _ in 0..QUEUED_COMMANDS_MAX {
            tx.queue(words(&["PING"]));
        }
        assert!(
            matches!(reply(tx.queue(words(&["PING"]))), Reply::Error(e) if e.contains("too large"))
        );
        assert!(matches!(tx.exec(), ExecPlan::Refuse(_)));
    }

    impl Transaction {
        fn exec_refusal(&mut self) -> Step {
            match self.exec() {
                ExecPlan::Refuse(step) => step,
                ExecPlan::Run { .. } => panic!("expected a refusal"),
            }
        }
    }
}
