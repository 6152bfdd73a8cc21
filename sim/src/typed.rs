//! Counters and queues in the workload (see `plan::typed_ops`): a few keys,
//! `c{i}` counters and `q{i}` queues, driven through Redis's own commands
//! (`INCRBY`, `INCRBYFLOAT`, `GET`, `RPUSH`, `LPOP`) and recorded as the checker's `add`,
//! `count`, `push` and `pop`, so `checks::counters` and `checks::queues`
//! judge them under every fault of the run. Phase 3 reads every counter once
//! more and pops every queue until it is empty (the drain), so a lost push
//! shows.

#[cfg(madsim)]
use crate::{client::RespConn, recorder::Recorder};
use shoal_checker::{Function, Key, OkResult};
use shoal_net::resp::Reply;
#[cfg(madsim)]
use std::collections::BTreeSet;

/// Counters and queues each, per namespace: few, so clients contend.
pub const TYPED_KEYS: u64 = 4;
/// Pops one drain makes at most: a queue longer than this after the run means
/// pops do not take (an anomaly).
#[cfg(madsim)]
const DRAIN_POPS_MAX: usize = 100_000;
/// Attempts the drain makes on one key before giving up (an anomaly).
#[cfg(madsim)]
const DRAIN_ATTEMPTS_MAX: usize = 20;
#[cfg(madsim)]
const DRAIN_TIMEOUT_MS: u64 = 2_000;

/// One operation on a counter or a queue.
#[derive(Clone, Debug)]
pub enum TypedOp {
    Add { delta: i64 },
    Count,
    Push { value: String },
    Pop,
}

impl TypedOp {
    pub fn function(&self) -> Function {
        match self {
            TypedOp::Add { .. } => Function::Add,
            TypedOp::Count => Function::Count,
            TypedOp::Push { .. } => Function::Push,
            TypedOp::Pop => Function::Pop,
        }
    }

    /// What the invoke records: the delta added, the value pushed.
    pub fn invoke_value(&self) -> Option<String> {
        match self {
            TypedOp::Add { delta } => Some(delta.to_string()),
            TypedOp::Push { value } => Some(value.clone()),
            TypedOp::Count | TypedOp::Pop => None,
        }
    }

    /// The command, on the key named `name`. A counter of odd number is a
    /// hash's field `n` (`HINCRBY`, `HGET`), so both counting paths face
    /// every fault. An addition of a multiple of 4 goes as `INCRBYFLOAT`
    /// (`HINCRBYFLOAT`), so a cluster's float sums per node (`Modify::
    /// CountByFloat`) face them too; its whole delta keeps the total whole.
    pub fn command(&self, name: &str) -> Vec<Vec<u8>> {
        let in_hash = counter_in_hash(name);
        let name = name.as_bytes().to_vec();
        match self {
            TypedOp::Add { delta } => {
                let command: &[u8] = match (in_hash, delta % 4 == 0) {
                    (true, true) => b"HINCRBYFLOAT",
                    (true, false) => b"HINCRBY",
                    (false, true) => b"INCRBYFLOAT",
                    (false, false) => b"INCRBY",
                };
                let mut args = vec![command.to_vec(), name];
                if in_hash {
                    args.push(b"n".to_vec());
                }
                args.push(delta.to_string().into_bytes());
                args
            }
            TypedOp::Count if in_hash => vec![b"HGET".to_vec(), name, b"n".to_vec()],
            TypedOp::Count => vec![b"GET".to_vec(), name],
            TypedOp::Push { value } => vec![b"RPUSH".to_vec(), name, value.as_bytes().to_vec()],
            TypedOp::Pop => vec![b"LPOP".to_vec(), name],
        }
    }

    /// The `ok` result a (non-error) reply stands for; None: a reply no such
    /// command gives.
    pub fn parse(&self, reply: &Reply) -> Option<OkResult> {
        match (self, reply) {
            (TypedOp::Add { .. }, Reply::Integer(total)) => Some(OkResult::Add { total: *total }),
            // INCRBYFLOAT's answer: the new total, in decimal (whole here).
            (TypedOp::Add { .. }, Reply::Bulk(total)) => Some(OkResult::Add {
                total: std::str::from_utf8(total).ok()?.parse().ok()?,
            }),
            (TypedOp::Count, Reply::Null) => Some(OkResult::Count { total: None }),
            (TypedOp::Count, Reply::Bulk(bytes)) => Some(OkResult::Count {
                total: Some(std::str::from_utf8(bytes).ok()?.parse().ok()?),
            }),
            (TypedOp::Push { .. }, Reply::Integer(length)) if *length > 0 => Some(OkResult::Push),
            (TypedOp::Pop, Reply::Null) => Some(OkResult::Pop { value: None }),
            (TypedOp::Pop, Reply::Bulk(bytes)) => Some(OkResult::Pop {
                value: Some(String::from_utf8_lossy(bytes).into_owned()),
            }),
            _ => None,
        }
    }
}

/// Whether `name` is a counter's or a queue's (`c{i}`, `q{i}`): the register
/// reads of phase 3 pass them by.
pub fn is_typed_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('c' | 'q'))
        && !chars.as_str().is_empty()
        && chars.all(|c| c.is_ascii_digit())
}

/// Whether counter `name` (`c{i}`) counts in a hash's field: odd `i`.
fn counter_in_hash(name: &str) -> bool {
    name.strip_prefix('c')
        .and_then(|digits| digits.parse::<u64>().ok())
        .is_some_and(|i| i % 2 == 1)
}

/// The key counter or queue number `index` is in namespace `ns`.
pub fn typed_key(ns: u8, counter: bool, index: u64) -> Key {
    Key::new(ns, format!("{}{index}", if counter { 'c' } else { 'q' }))
}

#[cfg(madsim)]
/// Phase 3: one more count of every counter, and pops of every queue until it
/// is empty, each recorded like a client's. `next_process` hands out process
/// ids (a new one after each unknown outcome).
pub async fn drain(
    keys: BTreeSet<Key>,
    recorder: std::sync::Arc<Recorder>,
    next_process: impl Fn() -> u64,
    target: std::net::SocketAddr,
) {
    let mut drainer = Drainer {
        target,
        conn: None,
        selected: None,
        process: next_process(),
        recorder,
    };
    for key in keys {
        let op = if key.name.starts_with('c') {
            TypedOp::Count
        } else {
            TypedOp::Pop
        };
        let (mut attempts, mut pops) = (0, 0);
        loop {
            match drainer.once(&key, &op).await {
                Some(OkResult::Pop { value: Some(_) }) if pops < DRAIN_POPS_MAX => pops += 1,
                Some(_) => break,
                None if attempts < DRAIN_ATTEMPTS_MAX => {
                    attempts += 1;
                    drainer.process = next_process();
                }
                None => break,
            }
        }
        if attempts == DRAIN_ATTEMPTS_MAX || pops == DRAIN_POPS_MAX {
            drainer.recorder.anomaly(format!(
                "drain of {key} stopped after {attempts} failed attempts and {pops} pops"
            ));
        }
    }
}

#[cfg(madsim)]
struct Drainer {
    target: std::net::SocketAddr,
    conn: Option<RespConn>,
    selected: Option<u8>,
    process: u64,
    recorder: std::sync::Arc<Recorder>,
}

#[cfg(madsim)]
impl Drainer {
    /// One recorded operation; None when it did not end `ok`.
    async fn once(&mut self, key: &Key, op: &TypedOp) -> Option<OkResult> {
        if !self.ready(key.ns).await {
            return None;
        }
        let (process, f) = (self.process, op.function());
        self.recorder.invoke(process, f, key, op.invoke_value());
        let command = op.command(&key.name);
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        let conn = self.conn.as_mut().expect("ready() connected");
        let reply = conn.call(&args, DRAIN_TIMEOUT_MS).await;
        match reply.as_ref().ok().and_then(|reply| op.parse(reply)) {
            Some(result) => {
                self.recorder.ok(process, key, result.clone());
                Some(result)
            }
            None => {
                self.recorder.info(process, f, key);
                self.recorder
                    .fault(format!("drain: {f} of {key} answered {reply:?}"));
                self.conn = None;
                None
            }
        }
    }

    async fn ready(&mut self, ns: u8) -> bool {
        if self.conn.is_none() {
            self.conn = RespConn::connect(self.target, DRAIN_TIMEOUT_MS).await.ok();
            self.selected = None;
        }
        let Some(conn) = self.conn.as_mut() else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            return false;
        };
        if self.selected != Some(ns) {
            let db = ns.to_string();
            match conn
                .call(&[b"SELECT", db.as_bytes()], DRAIN_TIMEOUT_MS)
                .await
            {
                Ok(Reply::Simple(_)) => self.selected = Some(ns),
                _ => {
                    self.conn = None;
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_names_are_a_letter_and_digits() {
        assert!(is_typed_name("c0") && is_typed_name("q12"));
        assert!(!is_typed_name("c") && !is_typed_name("k1") && !is_typed_name("c1:x"));
        assert!(!is_typed_name("h1:f2") && !is_typed_name("qa"));
    }

    #[test]
    fn replies_map_to_results() {
        let add = TypedOp::Add { delta: 3 };
        assert_eq!(
            add.parse(&Reply::Integer(7)),
            Some(OkResult::Add { total: 7 })
        );
        assert_eq!(
            TypedOp::Count.parse(&Reply::Bulk("12".into())),
            Some(OkResult::Count { total: Some(12) })
        );
        assert_eq!(TypedOp::Count.parse(&Reply::Bulk("x".into())), None);
        assert_eq!(
            TypedOp::Pop.parse(&Reply::Null),
            Some(OkResult::Pop { value: None })
        );
        assert_eq!(add.parse(&Reply::Null), None);
    }

    #[test]
    fn odd_counters_count_in_a_hash_field() {
        let add = TypedOp::Add { delta: 3 };
        assert_eq!(add.command("c1")[0], b"HINCRBY");
        assert_eq!(TypedOp::Count.command("c3"), [&b"HGET"[..], b"c3", b"n"]);
        assert_eq!(add.command("c2")[0], b"INCRBY");
        let float_add = TypedOp::Add { delta: 8 };
        assert_eq!(
            float_add.command("c1"),
            [&b"HINCRBYFLOAT"[..], b"c1", b"n", b"8"]
        );
        assert_eq!(float_add.command("c2"), [&b"INCRBYFLOAT"[..], b"c2", b"8"]);
        assert_eq!(
            float_add.parse(&Reply::Bulk("16".into())),
            Some(OkResult::Add { total: 16 })
        );
        assert_eq!(float_add.parse(&Reply::Bulk("16.5".into())), None);
        assert_eq!(TypedOp::Pop.command("q1")[0], b"LPOP");
    }
}
