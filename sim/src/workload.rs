//! The workload clients: each runs on its own madsim node and issues one operation
//! at a time — `SHOAL.PUT` (sometimes with a stale or empty `CONTEXT`, which makes
//! siblings), `SHOAL.DEL`, `SHOAL.SIBLINGS` — and records invoke and completion.
//! A reply is `ok`; an error reply is `fail`, except a refusal whose outcome is
//! unknown (`Refusal::outcome`: `IOERR`, `NOQUORUM`), which is `info`, like a
//! timeout or a lost connection. After an `info` the client reconnects under a
//! new process id, so a process never has two operations that may still take
//! effect. Every written value is unique: `p{process}-{n}` padded
//! with letters to the chosen size.

use crate::client::{error_code, CallError, RespConn};
use crate::lock;
use crate::node::node_addr;
use crate::plan::WorkloadKnobs;
use crate::recorder::Recorder;
use crate::replies::{parse_del, parse_put, parse_siblings, removed_context};
use crate::typed::{typed_key, TypedOp, TYPED_KEYS};
use shoal_checker::{Function, Key, OkResult};
use shoal_engine::cluster::refusal::{Outcome, Refusal};
use shoal_engine::rng::SplitMix64;
use shoal_net::resp::Reply;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The run's wall clock (madsim's; clients' clocks are never skewed), in ms
/// since the Unix epoch: what `PXAT` deadlines are set against.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Distinct contexts a process remembers for later `CONTEXT` writes.
const REMEMBERED_CONTEXTS_MAX: usize = 256;

/// What every client shares.
pub struct Shared {
    pub knobs: WorkloadKnobs,
    pub recorder: Arc<Recorder>,
    pub stop: AtomicBool,
    next_process: AtomicU64,
    /// Every register key some operation was invoked on.
    pub keys_touched: Mutex<BTreeSet<Key>>,
    /// Every counter and queue some operation was invoked on.
    pub typed_touched: Mutex<BTreeSet<Key>>,
    /// The nodes clients connect to (one, or every cluster member); a client picks
    /// one at random each time it (re)connects.
    pub targets: Vec<std::net::SocketAddr>,
}

impl Shared {
    pub fn new(knobs: WorkloadKnobs, recorder: Arc<Recorder>) -> Arc<Shared> {
        Self::with_targets(knobs, recorder, vec![node_addr()])
    }

    /// Clients spread over `targets` (a cluster's members).
    pub fn with_targets(
        knobs: WorkloadKnobs,
        recorder: Arc<Recorder>,
        targets: Vec<std::net::SocketAddr>,
    ) -> Arc<Shared> {
        assert!(!targets.is_empty(), "clients need a node to talk to");
        Arc::new(Shared {
            knobs,
            recorder,
            stop: AtomicBool::new(false),
            next_process: AtomicU64::new(0),
            keys_touched: Mutex::new(BTreeSet::new()),
            typed_touched: Mutex::new(BTreeSet::new()),
            targets,
        })
    }

    pub(crate) fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }
}

/// What a workload key is: a string, or an element of a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    Field,
    Member,
}

impl Element {
    /// The option naming it in `SHOAL.*` commands.
    fn option(self) -> &'static [u8] {
        match self {
            Element::Field => b"FIELD",
            Element::Member => b"MEMBER",
        }
    }

    fn namespace(self, db: u8) -> u8 {
        match self {
            Element::Field => shoal_engine::fields::fields_namespace(db),
            Element::Member => shoal_engine::fields::members_namespace(db),
        }
    }
}

/// A key's name and, for a hash field (`h{n}:f{i}`) or a set member
/// (`s{n}:m{i}`, see `WorkloadKnobs::key_name`), its kind and element.
pub fn key_parts(key: &Key) -> (&str, Option<(Element, &str)>) {
    match key.name.split_once(':') {
        Some((hash, field)) if hash.starts_with('h') => (hash, Some((Element::Field, field))),
        Some((set, member)) if set.starts_with('s') => (set, Some((Element::Member, member))),
        _ => (&key.name, None),
    }
}

/// The arguments naming `key` in a `SHOAL.*` command after the key's place:
/// the name, then `FIELD f` or `MEMBER m` for an element.
pub fn key_args(key: &Key) -> (Vec<u8>, Vec<Vec<u8>>) {
    match key_parts(key) {
        (name, None) => (name.as_bytes().to_vec(), Vec::new()),
        (collection, Some((kind, element))) => (
            collection.as_bytes().to_vec(),
            vec![kind.option().to_vec(), element.as_bytes().to_vec()],
        ),
    }
}

/// The key a stored key stands for: the inverse of [`stored_key`] (the
/// collection's name, `h...` or `s...`, tells its kind).
pub fn key_of_stored(namespace: u8, stored: &[u8]) -> Key {
    use shoal_engine::fields::{database_of, is_collection_namespace, split_field_key};
    match split_field_key(stored).filter(|_| is_collection_namespace(namespace)) {
        Some((collection, element)) => Key::new(
            database_of(namespace),
            format!(
                "{}:{}",
                String::from_utf8_lossy(collection),
                String::from_utf8_lossy(element)
            ),
        ),
        None => Key::new(namespace, String::from_utf8_lossy(stored)),
    }
}

/// Where `key` is stored: its namespace and stored key (an element's is in
/// its collection namespace, `shoal_engine::fields`).
pub fn stored_key(key: &Key) -> (u8, Vec<u8>) {
    match key_parts(key) {
        (name, None) => (key.ns, name.as_bytes().to_vec()),
        (collection, Some((kind, element))) => (
            kind.namespace(key.ns),
            shoal_engine::fields::field_key(collection.as_bytes(), element.as_bytes()),
        ),
    }
}

enum Op {
    Write {
        value: String,
        context: Option<String>,
        /// The value expires this long after the write is sent.
        ttl_ms: Option<u64>,
    },
    Delete {
        context: Option<String>,
    },
    Read,
    /// On a counter or a queue.
    Typed(TypedOp),
    /// A deadline `ttl_ms` ahead for the collection the key names.
    ExpireCollection {
        ttl_ms: u64,
    },
    /// A deadline `ttl_ms` ahead for a string key: its winning value written
    /// again under a new dot that carries it.
    ExpireString {
        ttl_ms: u64,
    },
    /// A string key's deadline removed: its winning value written again
    /// under a new dot without one.
    PersistString,
    /// `GETEX k PXAT`: as `ExpireString`, answered with the value it read
    /// (nil: nothing to expire, nothing written).
    GetExString {
        ttl_ms: u64,
    },
}

struct Client {
    shared: Arc<Shared>,
    rng: SplitMix64,
    process: u64,
    writes: u64,
    conn: Option<RespConn>,
    conn_namespace: u8,
    /// The context of the process's last read of each key.
    last_context: BTreeMap<Key, String>,
}

/// One client's life: operations until the shared stop flag is set.
pub async fn run_client(shared: Arc<Shared>, client_index: u32, seed: u64) {
    let process = shared.new_process();
    let mut client = Client {
        rng: SplitMix64::new(seed ^ (u64::from(client_index) + 1).wrapping_mul(0x9E37_79B9)),
        shared,
        process,
        writes: 0,
        conn: None,
        conn_namespace: 0,
        last_context: BTreeMap::new(),
    };
    if client.shared.knobs.preload && client_index == 0 {
        let (keys, namespaces) = (client.shared.knobs.keys, client.shared.knobs.namespaces);
        for ns in 0..namespaces {
            for index in 0..keys {
                if client.shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let key = Key::new(ns, client.shared.knobs.key_name(index));
                let op = Op::Write {
                    value: client.make_value(),
                    context: None,
                    ttl_ms: None,
                };
                client.step(key, op).await;
            }
        }
    }
    while !client.shared.stop.load(Ordering::Relaxed) && !client.shared.recorder.is_full() {
        let think_ms = client.rng.below(client.shared.knobs.think_time_max_ms + 1);
        tokio::time::sleep(Duration::from_millis(think_ms)).await;
        if client.shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let (key, op) = client.choose_op();
        client.step(key, op).await;
    }
}

impl Client {
    fn choose_key(&mut self, uniform: bool) -> Key {
        let k = &self.shared.knobs;
        let index = if !uniform && k.hot_percent > 0 && self.rng.chance_percent(k.hot_percent) {
            self.rng.below(u64::from(k.hot_keys.max(1)))
        } else {
            self.rng.below(u64::from(k.keys))
        } as u32;
        let ns = self.rng.below(u64::from(k.namespaces)) as u8;
        Key::new(ns, k.key_name(index))
    }

    fn make_value(&mut self) -> String {
        self.writes += 1;
        let mut value = format!("p{}-{}", self.process, self.writes);
        let size = 1 + self
            .rng
            .below(self.shared.knobs.value_size_max_bytes as u64) as usize;
        if value.len() < size {
            value.push('.');
        }
        // Letters, 13 per random draw (26^13 < 2^64).
        while value.len() < size {
            let mut bits = self.rng.next_u64();
            for _ in 0..13.min(size - value.len()) {
                value.push((b'a' + (bits % 26) as u8) as char);
                bits /= 26;
            }
        }
        value
    }

    /// The next operation and its key. Deletes spread over all keys (cold data
    /// gets deleted too); reads and writes follow the hot-key bias.
    fn choose_op(&mut self) -> (Key, Op) {
        let k = self.shared.knobs.clone();
        // Drawn only when the seed has typed operations (as below).
        if k.typed_percent > 0 && self.rng.chance_percent(k.typed_percent) {
            return self.choose_typed();
        }
        if k.collection_expire_percent > 0 && self.rng.chance_percent(k.collection_expire_percent) {
            if let Some(op) = self.choose_collection_expire() {
                return op;
            }
        }
        if k.string_expire_percent > 0 && self.rng.chance_percent(k.string_expire_percent) {
            let key = self.choose_key(false);
            if key.collection().is_none() {
                if self.rng.chance_percent(25) {
                    return (key, Op::PersistString);
                }
                let ttl_ms = 1 + self.rng.below(k.ttl_max_ms);
                if self.rng.chance_percent(33) {
                    return (key, Op::GetExString { ttl_ms });
                }
                return (key, Op::ExpireString { ttl_ms });
            }
        }
        let roll = self.rng.below(100);
        if roll < k.read_percent {
            return (self.choose_key(false), Op::Read);
        }
        if roll < k.read_percent + k.delete_percent {
            let key = self.choose_key(true);
            let remembered = self.last_context.get(&key).cloned();
            let context = remembered.filter(|_| self.rng.chance_percent(20));
            return (key, Op::Delete { context });
        }
        let key = self.choose_key(false);
        let remembered = self.last_context.get(&key).cloned();
        let context = if self.rng.chance_percent(k.context_write_percent) {
            if self.rng.chance_percent(k.empty_context_percent) {
                Some(String::new())
            } else {
                Some(remembered.unwrap_or_default())
            }
        } else {
            None
        };
        // Drawn only when the seed has expiring writes: other seeds' streams
        // stay as they were.
        let ttl_ms = (k.expiring_write_percent > 0
            && self.rng.chance_percent(k.expiring_write_percent))
        .then(|| 1 + self.rng.below(k.ttl_max_ms));
        let op = Op::Write {
            value: self.make_value(),
            context,
            ttl_ms,
        };
        (key, op)
    }

    /// A deadline for the collection of a key drawn as writes draw theirs
    /// (`None` when a few draws found only string keys).
    fn choose_collection_expire(&mut self) -> Option<(Key, Op)> {
        for _ in 0..4 {
            let key = self.choose_key(false);
            if let Some(collection) = key.collection() {
                let ttl_ms = 1 + self.rng.below(self.shared.knobs.collection_ttl_max_ms);
                return Some((collection, Op::ExpireCollection { ttl_ms }));
            }
        }
        None
    }

    /// An operation on one of the few counters and queues.
    fn choose_typed(&mut self) -> (Key, Op) {
        let ns = self.rng.below(u64::from(self.shared.knobs.namespaces)) as u8;
        let counter = self.rng.chance_percent(50) && self.shared.knobs.typed_counters;
        let key = typed_key(ns, counter, self.rng.below(TYPED_KEYS));
        let op = match (counter, self.rng.chance_percent(60)) {
            (true, true) => TypedOp::Add {
                delta: 1 + self.rng.below(1000) as i64,
            },
            (true, false) => TypedOp::Count,
            (false, true) => TypedOp::Push {
                value: self.make_value(),
            },
            (false, false) => TypedOp::Pop,
        };
        (key, Op::Typed(op))
    }

    /// Connected to the node with `namespace` selected, or None (retry later).
    async fn ready(&mut self, namespace: u8) -> bool {
        let timeout_ms = self.shared.knobs.op_timeout_ms;
        if self.conn.is_none() {
            let targets = &self.shared.targets;
            let target = targets[self.rng.below(targets.len() as u64) as usize];
            match RespConn::connect(target, timeout_ms).await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.conn_namespace = 0;
                }
                Err(_) => {
                    let backoff_ms = 20 + self.rng.below(200);
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    return false;
                }
            }
        }
        if self.conn_namespace != namespace {
            let conn = self.conn.as_mut().expect("connected above");
            let db = namespace.to_string();
            match conn.call(&[b"SELECT", db.as_bytes()], timeout_ms).await {
                Ok(Reply::Simple(ok)) if ok == "OK" => self.conn_namespace = namespace,
                _ => {
                    self.conn = None;
                    return false;
                }
            }
        }
        true
    }

    async fn step(&mut self, key: Key, op: Op) {
        if !self.ready(key.ns).await {
            return;
        }
        let touched = match op {
            Op::Typed(_) => Some(&self.shared.typed_touched),
            // A collection's key holds no register of its own.
            Op::ExpireCollection { .. } => None,
            _ => Some(&self.shared.keys_touched),
        };
        if let Some(touched) = touched {
            lock(touched).insert(key.clone());
        }
        let (f, args) = self.invoke(&key, &op);
        let arg_refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let timeout_ms = self.shared.knobs.op_timeout_ms;
        let conn = self.conn.as_mut().expect("ready() connected");
        let reply = conn.call(&arg_refs, timeout_ms).await;
        self.complete(&key, f, &op, reply);
    }

    /// Record `op`'s invoke and build its command.
    fn invoke(&self, key: &Key, op: &Op) -> (Function, Vec<Vec<u8>>) {
        let recorder = &self.shared.recorder;
        let process = self.process;
        let (name, field) = key_args(key);
        match op {
            Op::Write {
                value,
                context,
                ttl_ms,
            } => {
                let mut args = vec![b"SHOAL.PUT".to_vec(), name, value.as_bytes().to_vec()];
                args.extend(field);
                if let Some(context) = context {
                    args.push(b"CONTEXT".to_vec());
                    args.push(context.as_bytes().to_vec());
                }
                match ttl_ms {
                    Some(ttl_ms) => {
                        recorder.invoke_expiring(process, key, value.clone(), *ttl_ms);
                        args.push(b"PXAT".to_vec());
                        args.push((wall_ms() + ttl_ms).to_string().into_bytes());
                    }
                    None => recorder.invoke(process, Function::Write, key, Some(value.clone())),
                }
                (Function::Write, args)
            }
            Op::Delete { context } => {
                recorder.invoke(process, Function::Delete, key, None);
                let mut args = vec![b"SHOAL.DEL".to_vec(), name];
                args.extend(field);
                if let Some(context) = context {
                    args.push(b"CONTEXT".to_vec());
                    args.push(context.as_bytes().to_vec());
                }
                (Function::Delete, args)
            }
            Op::Read => {
                recorder.invoke(process, Function::Read, key, None);
                let mut args = vec![b"SHOAL.SIBLINGS".to_vec(), name];
                args.extend(field);
                (Function::Read, args)
            }
            Op::Typed(typed) => {
                recorder.invoke(process, typed.function(), key, typed.invoke_value());
                (typed.function(), typed.command(&key.name))
            }
            Op::ExpireCollection { ttl_ms } | Op::ExpireString { ttl_ms } => {
                recorder.invoke_expire(process, key, *ttl_ms);
                let at_ms = (wall_ms() + ttl_ms).to_string().into_bytes();
                let args = vec![b"PEXPIREAT".to_vec(), name, at_ms];
                (Function::Expire, args)
            }
            Op::PersistString => {
                recorder.invoke_persist(process, key);
                (Function::Persist, vec![b"PERSIST".to_vec(), name])
            }
            Op::GetExString { ttl_ms } => {
                recorder.invoke_expire(process, key, *ttl_ms);
                let at_ms = (wall_ms() + ttl_ms).to_string().into_bytes();
                let args = vec![b"GETEX".to_vec(), name, b"PXAT".to_vec(), at_ms];
                (Function::Expire, args)
            }
        }
    }

    fn complete(&mut self, key: &Key, f: Function, op: &Op, reply: Result<Reply, CallError>) {
        let recorder = self.shared.recorder.clone();
        let process = self.process;
        let reply = match reply {
            Ok(reply) => reply,
            Err(_) => return self.unknown(key, f),
        };
        if let Reply::Error(message) = &reply {
            if message.contains("corrupt") {
                recorder.detection(
                    Some(key.clone()),
                    format!("{} ms: {f} of {key}: {message}", recorder.now_ms()),
                );
            }
            // The node's own word on whether the write may have happened.
            return match Refusal::from_code(error_code(message)).map(Refusal::outcome) {
                Some(Outcome::Unknown) => self.unknown(key, f),
                _ => recorder.fail(process, f, key),
            };
        }
        let result = match op {
            Op::Write { value, .. } => parse_put(&reply).map(|(dot, context)| OkResult::Write {
                value: value.clone(),
                dot,
                context,
            }),
            Op::Delete { context } => {
                parse_del(&reply).map(|(marker, superseded)| OkResult::Delete {
                    context: removed_context(marker, superseded, context.is_none()),
                })
            }
            Op::Read => parse_siblings(&reply).map(|parsed| {
                if self.last_context.len() < REMEMBERED_CONTEXTS_MAX
                    || self.last_context.contains_key(key)
                {
                    self.last_context
                        .insert(key.clone(), parsed.context_text.clone());
                }
                OkResult::Read {
                    siblings: parsed.live,
                    context: parsed.context,
                }
            }),
            Op::Typed(typed) => typed.parse(&reply),
            Op::ExpireCollection { .. } | Op::ExpireString { .. } | Op::GetExString { .. } => {
                deadline_result(op, &reply)
            }
            Op::PersistString => match reply {
                Reply::Integer(1) => Some(OkResult::Persist { applied: true }),
                Reply::Integer(0) => Some(OkResult::Persist { applied: false }),
                _ => None,
            },
        };
        match result {
            Some(result) => recorder.ok(process, key, result),
            None => {
                recorder.anomaly(format!(
                    "{} ms: unexpected reply to {f} of {key}: {reply:?}",
                    recorder.now_ms()
                ));
                self.unknown(key, f);
            }
        }
    }

    /// Outcome unknown: record `info`, drop the connection, continue as a new
    /// process.
    fn unknown(&mut self, key: &Key, f: Function) {
        self.shared.recorder.info(self.process, f, key);
        self.conn = None;
        self.process = self.shared.new_process();
        self.writes = 0;
        self.last_context.clear();
    }
}

/// Whether an expire was applied, by its reply: PEXPIREAT's 1 or 0, GETEX's
/// value or nil.
fn deadline_result(op: &Op, reply: &Reply) -> Option<OkResult> {
    let applied = match (op, reply) {
        (Op::GetExString { .. }, Reply::Bulk(_)) => true,
        (Op::GetExString { .. }, Reply::Null) => false,
        (Op::GetExString { .. }, _) => return None,
        (_, Reply::Integer(1)) => true,
        (_, Reply::Integer(0)) => false,
        _ => return None,
    };
    Some(OkResult::Expire { applied })
}

/// `clients` workload clients, each on its own simulated node (10.0.1.x),
/// running; their node ids and tasks.
pub fn spawn_clients(
    handle: &madsim::runtime::Handle,
    shared: &Arc<Shared>,
    clients: u32,
    seed: u64,
) -> (Vec<madsim::task::NodeId>, Vec<madsim::task::JoinHandle<()>>) {
    let mut client_nodes = Vec::new();
    let mut client_tasks = Vec::new();
    for index in 0..clients {
        let client = handle
            .create_node()
            .name(format!("client-{index}"))
            .ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                10,
                0,
                1,
                index as u8 + 1,
            )))
            .build();
        client_nodes.push(client.id());
        client_tasks.push(client.spawn(run_client(shared.clone(), index, seed)));
    }
    (client_nodes, client_tasks)
}
