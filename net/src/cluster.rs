//! The cluster driver: peers, routing, replication, read repair, anti-entropy and
//! failure detection, over the engine's sans-IO pieces (`placement::Ring`,
//! `cluster::quorum`, `cluster::detector`, `digest`) and the authenticated peer
//! transport (`peer`).
//!
//! Write path: the node that receives a write picks the key's coordinator, the
//! first live node of its preference list (itself when it is that node), and
//! proxies the write there. The coordinator makes the write durable locally (a new
//! dot merged into its sibling set), sends the resulting set to the other replicas,
//! which merge and sync it, and answers after `w` durable copies. Read path: the
//! receiving node asks the replicas, answers from the first `r` replies (merged),
//! and writes the merge back to every replica whose copy was behind (read repair).
//! Anti-entropy compares digests with each peer and moves only differing keys.
//!
//! Owns: connections to peers, timeouts, task spawning. Must not decide versions,
//! placement or liveness itself: those are the engine's.

use crate::peer::{self, PeerError, PeerReader, PeerWriter};
use crate::storage::Storage;
use bytes::Bytes;
use shoal_engine::cluster::detector::{Detector, DetectorConfig, DetectorEvent, PeerState};
use shoal_engine::cluster::hints;
use shoal_engine::cluster::lives::{self as peer_lives, Lives};
use shoal_engine::cluster::map::{
    self as cluster_map, split_partition, ClusterMap, MapDiff, MapError, Namespaces, RingChange,
};
use shoal_engine::cluster::quorum::{ReadRound, RoundState, WriteRound};
use shoal_engine::cluster::tombstones::{self, Agreed, MarkerItem};
use shoal_engine::cluster::wire::{
    chunk_by_bytes, ClientOutcome, ClientWrite, Envelope, HandoffCursor, Refusal, RemoteError,
    ReplicaItem, Request, Response, WireCondition, HANDOFF_BATCH_BYTES_MAX,
    HANDOFF_ITEMS_PER_BATCH_MAX, ITEMS_PER_REQUEST_MAX,
};
use shoal_engine::digest::{differing_keys, differing_slots};
use shoal_engine::disk::CheckedFileError;
use shoal_engine::placement::{PartitionId, Placement, Ring};
use shoal_engine::runtime::Runtime;
use shoal_engine::store::OpenError;
use shoal_engine::{Condition, Covers, NodeId, SiblingSet, WriteError, WriteOp, WriteOutcome};
use shoal_engine::{DiskDir, DiskError, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

mod catch_up;
mod hand_over;
mod start_error;

use start_error::check_config;
pub use start_error::{ConfigError, StartError};

/// Whether `me`, adopting `next` over `current`, keeps its copies of map
/// partition `p`, of which it is an incoming owner in `next`: it holds `p` under
/// `current` (an owner, or an old owner of a transition it has not seen
/// settle, so it dropped none of it), and no ring since can have collected a
/// delete marker without it. That holds when `next` follows `current` at once
/// (an abort gives an old owner its partitions back, and writes acknowledged
/// before the aborted change may be on it and on no owner of that change yet:
/// cluster seed 390), and when one ring came between (the one `next` changes
/// from: its previous placement) that counts this node among its members: a
/// collection needs every member's verdict under the collector's ring, and
/// this node, still at `current`, gave none under it. A node that missed a
/// join and its abort both (cluster seed 20026694) dropped the only copy of a
/// write whose other replica was restoring, and pulled from owners that never
/// had it.
fn still_holds(current: &ClusterMap, next: &ClusterMap, me: NodeId, p: PartitionId) -> bool {
    if !current.holds(me, p) {
        return false;
    }
    match next.version().checked_sub(current.version()) {
        Some(1) => true,
        Some(2) => next
            .previous_placement()
            .is_some_and(|between| between.default_ring().members().contains(&me)),
        _ => false,
    }
}

/// Peer ports are client ports plus this (Redis Cluster's bus convention).
pub const PEER_PORT_OFFSET: u16 = 10000;
/// Requests queued on one peer connection before senders wait.
const PEER_SEND_QUEUE_MAX: usize = 1024;
/// A dot's actor is the node id below this bit and, for a node that lost its
/// directory, an epoch above it.
const ACTOR_EPOCH_SHIFT: u32 = 24;
/// Node ids must fit below the actor epoch.
pub const NODE_ID_LIMIT: u32 = 1 << ACTOR_EPOCH_SHIFT;
/// Partitions one node pulls at once during a handoff.
const HANDOFF_PARTITIONS_IN_FLIGHT_MAX: usize = 16;
/// After a failed connect, calls fail fast for this long instead of redialling.
const RECONNECT_BACKOFF_MS: u64 = 100;
/// An inbound peer connection silent for this many `peer_stall_ms` is closed
/// (its peer gave it up and dialled again). Long: the close is for the tasks
/// and buffers it holds, not for the heal, which the dialling side drives; and
/// the simulator, whose TCP delivers a close at once even over a cut link, must
/// not get a heal from it that a real network would not give.
const PEER_IDLE_STALLS: u64 = 30;

/// Where a member listens: clients (RESP) and peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddr {
    pub client: String,
    pub peer: String,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// The initial ring's members when this node is among them and has no saved
    /// map; otherwise seeds to fetch the cluster map from (a joining node).
    pub members: BTreeMap<NodeId, MemberAddr>,
    /// Where this node listens (what it tells the cluster when it joins).
    pub self_addr: MemberAddr,
    pub secret: String,
    pub replicas_n: u8,
    pub read_quorum: u8,
    pub write_quorum: u8,
    /// Namespaces (SELECT 0..15) with their own r and w; the others use
    /// `read_quorum` and `write_quorum`. Every namespace has `replicas_n` replicas.
    pub namespace_quorums: BTreeMap<u8, NamespaceQuorum>,
    pub partition_count: u32,
    /// How long a coordinator waits for replicas, and a node for a peer's answer.
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub detector: DetectorConfig,
    pub anti_entropy_interval_ms: u64,
    /// Keys one anti-entropy exchange with one peer may move (the I/O budget).
    pub anti_entropy_keys_per_round_max: usize,
    /// Bytes of sibling sets one anti-entropy exchange with one peer may move;
    /// an exchange always moves at least one key, so any value size progresses.
    pub anti_entropy_bytes_per_round_max: usize,
    /// Bytes of sibling sets in one repair, anti-entropy, hint or handoff
    /// request (a request always carries at least one key). Well below
    /// `peer_frame_body_max_bytes`, so a largest record still fits in a frame.
    pub repair_batch_bytes_max: usize,
    /// Largest peer frame body sent or accepted.
    pub peer_frame_body_max_bytes: usize,
    /// A peer connection on which a request has waited this long while nothing
    /// at all arrived for as long (pings answer every probe interval) is taken
    /// as stalled, as a TCP connection in retransmission backoff after a cut
    /// is, and replaced by a freshly dialled one.
    pub peer_stall_ms: u64,
    /// Requests from one peer connection handled at once.
    pub peer_requests_in_flight_max: usize,
    /// How often a node that owes handoffs retries them.
    pub handoff_interval_ms: u64,
    /// Sloppy quorum: a write whose owner is down goes to a fallback node as a
    /// hint (and counts toward `w`). Off: such a write needs `w` live owners.
    pub sloppy_quorum: bool,
    /// Hints this node keeps at most as a fallback.
    pub hints_max: u64,
    /// How often a fallback tries to hand its hints to their owners.
    pub hint_delivery_interval_ms: u64,
    /// A starting node waits this long at most for a peer to say which
    /// incarnation of it the cluster knew.
    pub incarnation_check_wait_ms: u64,
    /// Test hook: told of every hint a fallback acknowledged (fallback, owner,
    /// item), so a simulation can check the fallback really holds it.
    pub hint_observer: Option<HintObserver>,
    /// A delete marker is proposed for collection once its newest write is this
    /// old (`tombstones`); until every member agrees it stays.
    pub tombstone_grace_ms: u64,
    /// Synced data found damaged at start: set the segments aside and restore
    /// from the replicas ([`open_store`]) instead of refusing to start.
    pub rebuild_damaged: bool,
    /// Replica writes that arrive later than this after they were sent (by the
    /// sender's wall clock) are refused: marker collection waits this long (plus
    /// the request timeout and the measured clock skew) for copies in flight.
    /// Skew beyond it makes replica writes fail as too old.
    pub replica_write_age_max_ms: u64,
}

/// One namespace's own read and write quorums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceQuorum {
    pub r: u8,
    pub w: u8,
}

/// What a [`HintObserver`] is told: (fallback, owner, item).
pub type HintCallback = dyn Fn(NodeId, NodeId, &ReplicaItem) + Send + Sync;

/// A callback for each acknowledged hint.
#[derive(Clone)]
pub struct HintObserver(pub Arc<HintCallback>);

impl std::fmt::Debug for HintObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HintObserver")
    }
}

impl ClusterConfig {
    /// Replies a read of `namespace` waits for.
    pub fn read_quorum_for(&self, namespace: u8) -> u8 {
        self.namespace_quorums
            .get(&namespace)
            .map_or(self.read_quorum, |q| q.r)
    }

    /// Durable acknowledgements a write to `namespace` waits for.
    pub fn write_quorum_for(&self, namespace: u8) -> u8 {
        self.namespace_quorums
            .get(&namespace)
            .map_or(self.write_quorum, |q| q.w)
    }

    /// The smallest write quorum of any namespace: a handoff pulls from enough
    /// old owners to meet every write acknowledged under it.
    pub fn write_quorum_min(&self) -> u8 {
        self.namespace_quorums
            .values()
            .map(|q| q.w)
            .chain([self.write_quorum])
            .min()
            .expect("the default is always there")
    }

    pub fn new(node_id: NodeId, members: BTreeMap<NodeId, MemberAddr>, secret: String) -> Self {
        let replicas_n = members.len().clamp(1, 3) as u8;
        let majority = replicas_n / 2 + 1;
        let self_addr = members.get(&node_id).cloned().unwrap_or(MemberAddr {
            client: String::new(),
            peer: String::new(),
        });
        ClusterConfig {
            node_id,
            members,
            self_addr,
            secret,
            replicas_n,
            read_quorum: majority,
            write_quorum: majority,
            namespace_quorums: BTreeMap::new(),
            partition_count: shoal_engine::placement::PARTITION_COUNT_DEFAULT,
            request_timeout_ms: 1000,
            connect_timeout_ms: 500,
            detector: DetectorConfig::default(),
            anti_entropy_interval_ms: 1000,
            anti_entropy_keys_per_round_max: 1024,
            anti_entropy_bytes_per_round_max: 64 << 20,
            repair_batch_bytes_max: HANDOFF_BATCH_BYTES_MAX,
            peer_frame_body_max_bytes: peer::PEER_FRAME_BODY_MAX_BYTES,
            peer_stall_ms: 1000,
            peer_requests_in_flight_max: 256,
            handoff_interval_ms: 200,
            sloppy_quorum: true,
            hints_max: hints::HINTS_MAX_DEFAULT,
            hint_delivery_interval_ms: 500,
            incarnation_check_wait_ms: 3000,
            hint_observer: None,
            tombstone_grace_ms: 10_000,
            rebuild_damaged: true,
            replica_write_age_max_ms: 2000,
        }
    }
}

/// Parse `id@host:port,id@host:port,...` (client addresses; each peer port is the
/// client port plus [`PEER_PORT_OFFSET`]).
pub fn parse_members(text: &str) -> Result<BTreeMap<NodeId, MemberAddr>, String> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("member '{part}' is not id@host:port"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("member '{part}': '{id}' is not a node id"))?;
        let member = member_addr(addr).map_err(|e| format!("member '{part}': {e}"))?;
        if members.insert(id, member).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    if members.is_empty() {
        return Err("no members listed".into());
    }
    Ok(members)
}

/// A node's addresses from its client address `host:port` (the peer port is the
/// client port plus [`PEER_PORT_OFFSET`]).
pub fn member_addr(client: &str) -> Result<MemberAddr, String> {
    let (host, port) = client
        .rsplit_once(':')
        .ok_or_else(|| format!("'{client}' is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{port}' is not a port"))?;
    let peer_port = port.checked_add(PEER_PORT_OFFSET).ok_or_else(|| {
        format!("port {port} leaves no room for its peer port (+{PEER_PORT_OFFSET})")
    })?;
    Ok(MemberAddr {
        client: format!("{host}:{port}"),
        peer: format!("{host}:{peer_port}"),
    })
}

/// What the cluster driver needs of the runtime, object-safe.
pub trait ClusterClock: Send + Sync + 'static {
    fn monotonic_ms(&self) -> u64;
    /// Wall-clock ms: the age of replica writes, the grace of delete markers.
    fn wall_ms(&self) -> u64;
    fn random_u64(&self) -> u64;
}

impl<R: Runtime> ClusterClock for R {
    fn monotonic_ms(&self) -> u64 {
        Runtime::monotonic_ms(self)
    }

    fn wall_ms(&self) -> u64 {
        Runtime::wall_ms(self)
    }

    fn random_u64(&self) -> u64 {
        Runtime::random_u64(self)
    }
}

/// Counters for `INFO cluster` and `shoal cluster status`.
#[derive(Default)]
pub struct ClusterStats {
    pub writes_coordinated: AtomicU64,
    /// Writes whose keys were first merged from their old owners, because this
    /// node takes their partition over (see `cluster/catch_up.rs`).
    pub writes_caught_up: AtomicU64,
    pub writes_proxied: AtomicU64,
    pub quorum_failures: AtomicU64,
    pub replica_writes_received: AtomicU64,
    pub reads_coordinated: AtomicU64,
    pub read_repairs: AtomicU64,
    pub anti_entropy_rounds: AtomicU64,
    pub anti_entropy_keys_pushed: AtomicU64,
    pub anti_entropy_keys_pulled: AtomicU64,
    pub anti_entropy_bytes_pushed: AtomicU64,
    pub anti_entropy_bytes_pulled: AtomicU64,
    pub peer_auth_refusals: AtomicU64,
    pub peer_frames_refused: AtomicU64,
    /// Outbound peer connections given up as stalled and dialled again.
    pub peer_connections_stalled: AtomicU64,
    /// Replica writes refused because they were sent under an older ring.
    pub stale_ring_refusals: AtomicU64,
    /// Copies re-sent under a newer ring after such a refusal.
    pub stale_ring_retries: AtomicU64,
    pub map_syncs: AtomicU64,
    pub handoff_keys_pulled: AtomicU64,
    pub handoff_partitions_done: AtomicU64,
    /// Hints this node stored as a fallback, handed to their owners, refused.
    pub hints_stored: AtomicU64,
    pub hints_delivered: AtomicU64,
    pub hints_refused: AtomicU64,
    /// Replica copies this node sent to a fallback because the owner was down.
    pub writes_hinted: AtomicU64,
    /// Reads that asked a fallback for its hint in place of an owner held down.
    pub reads_from_fallbacks: AtomicU64,
    /// Ping-reqs this node served for others, and helpers' answers that a peer
    /// this node could not hear directly was alive.
    pub indirect_probes_served: AtomicU64,
    pub indirect_vouches: AtomicU64,
    /// The incarnation the cluster knew of this node when it started on a
    /// directory that was not the one it ran on (0: none).
    pub earlier_life_seen: AtomicU64,
    /// Replica writes, proxied writes and forgets refused for arriving (or
    /// starting) too long after they were sent.
    pub requests_too_old: AtomicU64,
    /// Delete markers this node (as a partition's primary) proposed, saw every
    /// member agree on, and had forgotten (counting each member that did).
    pub markers_proposed: AtomicU64,
    pub markers_agreed: AtomicU64,
    pub markers_forgotten: AtomicU64,
    /// Keys of partitions this node no longer owns that it forgot.
    pub copies_dropped: AtomicU64,
}

/// Why a call to a peer did not return its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Not connected: the request was never sent.
    Connect(String),
    /// Sent, but the connection failed before the answer.
    Lost(String),
    /// Sent, no answer in time.
    Timeout,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "not connected ({e})"),
            CallError::Lost(e) => write!(f, "connection lost ({e})"),
            CallError::Timeout => write!(f, "no answer in time"),
        }
    }
}

/// Requests waiting for their answer: id -> (sent at, monotonic ms; waiter).
type Pending = Arc<Mutex<BTreeMap<u64, (u64, oneshot::Sender<Response>)>>>;

struct Conn {
    send: mpsc::Sender<Envelope>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    /// When the last frame arrived (monotonic ms; the dial's end at first).
    heard_ms: Arc<AtomicU64>,
    /// The reader and writer tasks, ended when the connection is given up
    /// (a stalled socket would otherwise hold them until TCP gives up).
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Conn {
    /// A request has waited `stall_ms` and nothing at all arrived for as long:
    /// the link is cut, or healed while this connection sits in TCP's
    /// retransmission backoff. Answers to other requests and pongs (every probe
    /// interval) arrive on a healthy connection well within it.
    fn stalled(&self, now_ms: u64, stall_ms: u64) -> bool {
        let oldest_sent_ms = lock(&self.pending)
            .values()
            .map(|(sent_ms, _)| *sent_ms)
            .min();
        let heard_ms = self.heard_ms.load(Ordering::Acquire);
        oldest_sent_ms
            .is_some_and(|sent_ms| now_ms >= sent_ms + stall_ms && now_ms >= heard_ms + stall_ms)
    }

    fn give_up(&self) {
        close(&self.pending, &self.closed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One peer: a lazily (re)dialled, multiplexed connection.
struct PeerClient {
    node: NodeId,
    addr: String,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    last_connect_failure_ms: AtomicU64,
    next_id: AtomicU64,
}

/// Present while this node's data is being restored from its replicas (its
/// segments were set aside as damaged, or its disk was lost). Holds the dot actor
/// the node took for its new life (`[u32 LE][crc32c]`). Until every other member
/// has been compared with it once in full, the node serves no handoff scan and
/// agrees to no marker collection: it may lack writes it acknowledged.
pub const RESTORING_FILE: &str = "RESTORING";

/// What [`open_store`] did to a damaged store before opening it.
#[derive(Clone, Debug)]
pub struct Rebuilt {
    /// The damage `Store::open` reported.
    pub damage: String,
    /// The segment files set aside (`damaged-i<incarnation>-seg-*`).
    pub set_aside: Vec<String>,
    /// The dot actor the store mints as from now on.
    pub actor: NodeId,
}

/// The actor recorded in [`RESTORING_FILE`], if the directory is restoring.
fn restoring_actor(dir: &dyn DiskDir) -> Result<Option<NodeId>, DiskError> {
    match shoal_engine::disk::read_checked_file(dir, RESTORING_FILE, 4) {
        Ok(payload) => Ok(payload.map(|p| u32::from_le_bytes(p[..].try_into().expect("4 bytes")))),
        Err(CheckedFileError::Disk(e)) => Err(e),
        Err(CheckedFileError::Damaged(why)) => Err(DiskError::Io(why)),
    }
}

/// A fresh dot actor for `actor`'s node: its id in the low 24 bits, a random
/// epoch (1..=255, not the current one) above.
fn fresh_actor(actor: NodeId, random: u64) -> NodeId {
    let node = actor & (NODE_ID_LIMIT - 1);
    let current = actor >> ACTOR_EPOCH_SHIFT;
    let mut epoch = 1 + (random % 255) as u32;
    if epoch == current {
        epoch = epoch % 255 + 1;
    }
    node | (epoch << ACTOR_EPOCH_SHIFT)
}

/// Open a cluster node's store. If synced data is damaged and `rebuild` is set,
/// set the segments aside (kept for `shoal inspect`), mark the directory
/// [`RESTORING_FILE`] with a fresh dot actor, and open it empty: anti-entropy
/// and read repair restore its replicas from the other nodes, which hold every
/// acknowledged write (w of them took it). The fresh actor matters as on a lost
/// disk: contexts are version vectors, and a new dot of the old actor would
/// cover old-life dots this node no longer holds, so replicas would drop those
/// siblings. A start that finds the directory restoring (a crash mid-rebuild)
/// finishes taking the recorded actor.
pub fn open_store(
    dir: Arc<dyn DiskDir>,
    options: shoal_engine::StoreOptions,
    rebuild: bool,
    random: u64,
) -> Result<(Store, shoal_engine::store::RecoveryReport, Option<Rebuilt>), OpenError> {
    let (opened, rebuilt) = match Store::open(dir.clone(), options.clone()) {
        Ok(opened) => (opened, None),
        Err(OpenError::Corrupt {
            segment,
            offset,
            reason,
        }) if rebuild => {
            let damage = format!("segment {segment} at offset {offset}: {reason}");
            // Marked first (actor 0: not chosen yet), so a crash from here on
            // still restarts as restoring.
            shoal_engine::disk::write_checked_file(
                dir.as_ref(),
                RESTORING_FILE,
                &0u32.to_le_bytes(),
            )?;
            let set_aside = shoal_engine::store::set_aside_segments(dir.as_ref())?;
            let opened = Store::open(dir.clone(), options)?;
            (opened, Some((damage, set_aside)))
        }
        Err(e) => return Err(e),
    };
    let (mut store, report) = opened;
    let mut actor = store.actor();
    if let Some(recorded) = restoring_actor(dir.as_ref())? {
        actor = recorded;
        if actor == 0 {
            actor = fresh_actor(store.actor(), random);
            shoal_engine::disk::write_checked_file(
                dir.as_ref(),
                RESTORING_FILE,
                &actor.to_le_bytes(),
            )?;
        }
        if store.actor() != actor {
            store.adopt_actor(actor)?;
        }
    }
    let rebuilt = rebuilt.map(|(damage, set_aside)| Rebuilt {
        damage,
        set_aside,
        actor,
    });
    Ok((store, report, rebuilt))
}

/// This data directory's id: read from `DIRECTORY-ID`, or made from `fresh` and
/// saved (atomically, durably) the first time. A damaged file is an error: a
/// made-up id would pass the directory off as a replacement.
/// The file holding a data directory's random id (`directory_id`).
const DIRECTORY_ID_FILE: &str = "DIRECTORY-ID";

fn directory_id(dir: &dyn DiskDir, fresh: u64) -> Result<u64, DiskError> {
    match shoal_engine::disk::read_checked_file(dir, DIRECTORY_ID_FILE, 8) {
        Ok(Some(payload)) => Ok(u64::from_le_bytes(payload[..].try_into().expect("8 bytes"))),
        Ok(None) => {
            shoal_engine::disk::write_checked_file(dir, DIRECTORY_ID_FILE, &fresh.to_le_bytes())?;
            Ok(fresh)
        }
        Err(CheckedFileError::Disk(e)) => Err(e),
        Err(CheckedFileError::Damaged(why)) => Err(DiskError::Io(why)),
    }
}

/// Drops written at once while adopting a ring (`Cluster::drop_residue`).
const RESIDUE_DROP_BATCH_OPS: usize = 1024;

/// Up to `budget` of the keys `store` holds in the given map partitions of
/// `map`, each partition in the namespaces it is given with, in order.
fn partition_keys(
    store: &Store,
    map: &ClusterMap,
    partitions: impl IntoIterator<Item = (PartitionId, Namespaces)>,
    budget: usize,
) -> Vec<(u8, Bytes)> {
    let mut keys = Vec::new();
    let Some(digests) = store.digests() else {
        return keys;
    };
    for (partition, namespaces) in partitions {
        for (slot, namespace, _) in digests.slot_digests(map.slot_range(partition)) {
            if !namespaces.contains(namespace) {
                continue;
            }
            for (key, _) in digests.slot_keys(namespace, slot) {
                keys.push((namespace, Bytes::from(key)));
                if keys.len() >= budget {
                    return keys;
                }
            }
        }
    }
    keys
}

/// The owners of the hints `hint_store` holds.
fn held_hint_owners(hint_store: &Storage) -> BTreeSet<NodeId> {
    hint_store.read(|s| {
        s.live_keys_in_slots(
            hints::HINT_NAMESPACE,
            0..=shoal_engine::slot::SLOT_COUNT - 1,
        )
        .iter()
        .filter_map(|hk| hints::parse_hint_key(hk).map(|(owner, _, _)| owner))
        .collect()
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn close(pending: &Pending, closed: &AtomicBool) {
    closed.store(true, Ordering::Release);
    // Dropping the senders wakes every waiter with "connection lost".
    lock(pending).clear();
}

fn spawn_connection(
    reader: PeerReader,
    writer: PeerWriter,
    clock: Arc<dyn ClusterClock>,
) -> Arc<Conn> {
    let (send, mut queue) = mpsc::channel::<Envelope>(PEER_SEND_QUEUE_MAX);
    let pending: Pending = Arc::default();
    let closed = Arc::new(AtomicBool::new(false));
    let heard_ms = Arc::new(AtomicU64::new(clock.monotonic_ms()));
    let writing = {
        let (pending, closed) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            writer.pump(&mut queue).await;
            close(&pending, &closed);
        })
    };
    let reading = {
        let (pending, closed, heard_ms) = (pending.clone(), closed.clone(), heard_ms.clone());
        tokio::spawn(read_responses(reader, pending, closed, heard_ms, clock))
    };
    Arc::new(Conn {
        send,
        pending,
        closed,
        heard_ms,
        tasks: vec![writing, reading],
    })
}

async fn read_responses(
    mut reader: PeerReader,
    pending: Pending,
    closed: Arc<AtomicBool>,
    heard_ms: Arc<AtomicU64>,
    clock: Arc<dyn ClusterClock>,
) {
    loop {
        let received = reader.recv().await;
        heard_ms.store(clock.monotonic_ms(), Ordering::Release);
        match received {
            Ok(Envelope::Response { id, body }) => {
                if let Some((_, waiter)) = lock(&pending).remove(&id) {
                    let _ = waiter.send(body);
                }
            }
            Ok(Envelope::Request { .. }) => {
                tracing::warn!("peer sent a request on an outbound connection; closing it");
                break;
            }
            Err(_) => break,
        }
    }
    close(&pending, &closed);
}

pub struct Cluster {
    config: ClusterConfig,
    /// The map requests are routed by, with its fingerprint (computed once per
    /// map: pings carry it); replaced whole, never edited in place.
    map: Mutex<(Arc<ClusterMap>, u64)>,
    /// Held shared while a replica write is checked against the ring and applied,
    /// exclusively while a new map is adopted: a handoff source's scan, which
    /// follows its adoption, sees every write it accepted under the old ring.
    gate: tokio::sync::RwLock<()>,
    dir: Arc<dyn DiskDir>,
    storage: Storage,
    clock: Arc<dyn ClusterClock>,
    detector: Mutex<Detector>,
    /// This life's incarnation; raised once at start when the data directory
    /// replaced one the cluster knew this node on.
    incarnation: AtomicU64,
    /// Set once the start-up incarnation check is done; until then no dot is
    /// minted (peers' Coordinate requests wait on `ready_changed`).
    ready: AtomicBool,
    /// Restoring from the replicas ([`RESTORING_FILE`]), and the peers whose
    /// copies were merged here in full under the map of the given fingerprint.
    restoring: AtomicBool,
    restored_from: Mutex<(u64, BTreeSet<NodeId>)>,
    /// Per peer, from the last ping it answered: (its wall clock minus ours, the
    /// estimate's error bound), ms.
    clock_offsets: Mutex<BTreeMap<NodeId, (i64, u64)>>,
    ready_changed: tokio::sync::Notify,
    /// This data directory's random id (`DIRECTORY-ID`), sent with every ping.
    dir_id: u64,
    /// Peers' directories and incarnations, for the start-up check.
    lives: Mutex<Lives>,
    peers: Mutex<BTreeMap<NodeId, Arc<PeerClient>>>,
    /// The handoff this node is pulling now, for operators.
    handoff_now: Mutex<Option<HandoffProgress>>,
    /// Hints kept as a fallback (`None`: this node keeps none).
    hints: Option<Storage>,
    /// Serializes read-merge-put of hints.
    hint_lock: tokio::sync::Mutex<()>,
    /// Every owner this node has held a hint for since it started (its hint
    /// store's at the start, and each one since): a marker verdict checks the
    /// hints for each, departed owners too (`marker_verdicts`).
    hint_owners: Mutex<BTreeSet<NodeId>>,
    /// Held while a replica write waits to learn its sender's newer ring, so
    /// that a burst of them under a new ring makes one map sync, not one each.
    ring_catch_up: tokio::sync::Mutex<()>,
    /// Per peer: what the last complete anti-entropy comparison found.
    lag: Mutex<BTreeMap<NodeId, PeerLag>>,
    /// Delete markers every member agreed on, waiting to be forgotten.
    agreed_markers: Mutex<Agreed>,
    /// Where the next round of marker proposals starts (a partition id).
    marker_cursor: AtomicU64,
    pub stats: ClusterStats,
}

/// Replication lag with one peer, from anti-entropy (times in this node's
/// monotonic ms).
#[derive(Clone, Debug, Default)]
struct PeerLag {
    last_exchange_ms: Option<u64>,
    /// Keys that differed then (capped at the exchange's key budget).
    keys_differing: usize,
    last_in_sync_ms: Option<u64>,
}

/// One partition being pulled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffProgress {
    pub ring_version: u64,
    pub partition: PartitionId,
    pub source: NodeId,
    pub keys_pulled: u64,
}

/// Where a replica copy goes: a node, and the owner it keeps a hint for when it
/// is a fallback.
type Target = (NodeId, Option<NodeId>);
/// A peer's answer to a read: the key indexes it was asked for, and its answer.
type ReadAnswer = (NodeId, Vec<usize>, Result<Response, CallError>);

/// A write's result as routing returns it.
pub type RoutedWrite = Result<WriteOutcome, RemoteError>;
/// A read's result: the merged set of the replies (`None`: no replica has the key).
pub type RoutedRead = Result<Option<SiblingSet>, RemoteError>;

/// A store's refusal as the peer protocol and the client see it.
pub fn remote_error(e: &WriteError) -> RemoteError {
    let refusal = match e {
        WriteError::SyncFailed(_) | WriteError::Disk(_) => Refusal::OutcomeUnknown,
        WriteError::Poisoned(_) => Refusal::ReadOnly,
        WriteError::DiskFull => Refusal::DiskFull,
        WriteError::TooManySiblings { .. } => Refusal::TooManySiblings,
        _ => Refusal::Invalid,
    };
    RemoteError::new(refusal, e.to_string())
}

fn outcome_from_wire(o: ClientOutcome) -> WriteOutcome {
    WriteOutcome {
        applied: o.applied,
        dot: o.dot,
        superseded: o.superseded,
        previous_winner: o.previous_winner,
        previous_live: o.previous_live,
        set: SiblingSet::default(),
    }
}

fn outcome_to_wire(o: &WriteOutcome) -> ClientOutcome {
    ClientOutcome {
        applied: o.applied,
        dot: o.dot,
        superseded: o.superseded.clone(),
        previous_winner: o.previous_winner.clone(),
        previous_live: o.previous_live,
    }
}

pub fn write_to_wire(op: &WriteOp) -> ClientWrite {
    ClientWrite {
        namespace: op.namespace,
        key: op.key.clone(),
        value: op.value.clone(),
        context: match &op.covers {
            Covers::Current => None,
            Covers::Context(vv) => Some(vv.clone()),
        },
        condition: match op.condition {
            Condition::Always => WireCondition::Always,
            Condition::IfAbsent => WireCondition::IfAbsent,
            Condition::IfPresent => WireCondition::IfPresent,
        },
    }
}

fn write_from_wire(w: ClientWrite) -> WriteOp {
    let mut op = match w.value {
        Some(v) => WriteOp::put(w.namespace, w.key, v),
        None => WriteOp::delete(w.namespace, w.key),
    };
    op.covers = w.context.map_or(Covers::Current, Covers::Context);
    op.condition = match w.condition {
        WireCondition::Always => Condition::Always,
        WireCondition::IfAbsent => Condition::IfAbsent,
        WireCondition::IfPresent => Condition::IfPresent,
    };
    op
}

/// The keys that have a readable copy, as replica writes of it.
fn replica_items(
    namespace: u8,
    keys: &[Bytes],
    sets: Vec<Result<Option<SiblingSet>, RemoteError>>,
) -> Vec<ReplicaItem> {
    sets.into_iter()
        .zip(keys)
        .filter_map(|(set, key)| {
            Some(ReplicaItem {
                namespace,
                key: key.clone(),
                set: set.ok()??,
            })
        })
        .collect()
}

/// Bytes of sibling sets (and keys) the items carry.
fn items_bytes(items: &[ReplicaItem]) -> usize {
    items.iter().map(|i| i.key.len() + i.set.size_bytes()).sum()
}

fn unknown_outcome(what: &str, e: &CallError) -> RemoteError {
    RemoteError::new(
        Refusal::OutcomeUnknown,
        format!("{what}: {e}; the write's outcome is unknown"),
    )
}

/// Status of one member for operators.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub node: NodeId,
    pub addr: MemberAddr,
    pub state: PeerState,
    /// Heard directly from here (requests go to it); false with state alive
    /// means only other peers reach it.
    pub reachable: bool,
    pub incarnation: u64,
    pub silent_ms: u64,
    /// In the current ring (a leaver still serving handoffs, or a joiner not yet
    /// admitted, is not).
    pub in_ring: bool,
    pub partitions: usize,
    pub coordinating: usize,
    /// Partitions it must still pull.
    pub incoming: usize,
}

impl Cluster {
    /// Load this node's cluster map (or build the first ring from the member list,
    /// or fetch the map from the seeds when joining), enable digests on the store,
    /// and start the peer listener, the failure detector, anti-entropy and handoff.
    pub async fn start(
        config: ClusterConfig,
        storage: Storage,
        hints: Option<Storage>,
        clock: Arc<dyn ClusterClock>,
        incarnation: u64,
    ) -> Result<Arc<Cluster>, StartError> {
        check_config(&config).map_err(StartError::Config)?;
        let me = config.node_id;
        let dir = storage.read(|s| s.dir());
        let saved = cluster_map::load(dir.as_ref()).map_err(StartError::MapFile)?;
        let keys = storage.with_store_mut(|s| s.enable_digests());
        tracing::info!("anti-entropy digests built over {keys} keys");
        let listener = TcpListener::bind(&config.self_addr.peer)
            .await
            .map_err(|cause| StartError::Listen {
                address: config.self_addr.peer.clone(),
                cause,
            })?;
        let bootstrap = match &saved {
            Some(map) => Arc::new(map.clone()),
            None if config.members.contains_key(&me) => {
                let ring = Ring::new(
                    config.partition_count,
                    config.replicas_n,
                    config.members.keys().copied(),
                )
                .map_err(|e| StartError::FirstRing(MapError::Placement(e)))?;
                let addresses = config
                    .members
                    .iter()
                    .map(|(id, a)| (*id, a.client.clone()))
                    .collect();
                let map = ClusterMap::bootstrap(ring, addresses).map_err(StartError::FirstRing)?;
                cluster_map::save(dir.as_ref(), &map).map_err(StartError::MapFile)?;
                Arc::new(map)
            }
            // Joining: no ring of our own until a seed answers.
            None => Arc::new(
                ClusterMap::bootstrap(
                    Ring::placeholder(config.partition_count, me)
                        .map_err(|e| StartError::FirstRing(MapError::Placement(e)))?,
                    [(me, config.self_addr.client.clone())].into(),
                )
                .map_err(StartError::FirstRing)?,
            ),
        };
        let joining = saved.is_none() && !config.members.contains_key(&me);
        let now = clock.monotonic_ms();
        let detector = Detector::new(me, bootstrap.nodes(), config.detector, now);
        let dir_id = directory_id(dir.as_ref(), clock.random_u64() | 1).map_err(|cause| {
            StartError::Disk {
                file: DIRECTORY_ID_FILE,
                cause,
            }
        })?;
        // What this node heard of its peers' lives before it restarted: a peer
        // back on an empty disk while this node was down must still learn it.
        let lives = peer_lives::load(dir.as_ref()).unwrap_or_else(|e| {
            tracing::warn!("{e}; starting without what it knew of peers' directories");
            Lives::default()
        });
        // A start that cut a tail of the log (`CUT-TAIL`) may lack writes it
        // acknowledged, like one whose damage was set aside: it is no handoff
        // source and votes no on markers until restored (cluster seed
        // 20031095: a cut tail took a write, the node served a handoff scan
        // without it, and the incoming owner's pull of n - w + 1 missed it).
        let restoring = restoring_actor(dir.as_ref())
            .map_err(|cause| StartError::Disk {
                file: RESTORING_FILE,
                cause,
            })?
            .is_some()
            || storage.read(|s| s.may_lack_acknowledged_writes());
        if restoring {
            tracing::warn!(
                "node {me} is restoring its data from its replicas: it serves reads and writes, but no handoff and no marker collection until every other member's copies are merged here"
            );
        }
        let cluster = Arc::new(Cluster {
            config,
            map: Mutex::new({
                let fingerprint = bootstrap.fingerprint();
                (bootstrap, fingerprint)
            }),
            gate: tokio::sync::RwLock::new(()),
            dir,
            storage,
            clock,
            detector: Mutex::new(detector),
            incarnation: AtomicU64::new(incarnation),
            ready: AtomicBool::new(false),
            ready_changed: tokio::sync::Notify::new(),
            dir_id,
            lives: Mutex::new(lives),
            peers: Mutex::new(BTreeMap::new()),
            handoff_now: Mutex::new(None),
            hint_owners: Mutex::new(hints.as_ref().map(held_hint_owners).unwrap_or_default()),
            hints,
            hint_lock: tokio::sync::Mutex::new(()),
            ring_catch_up: tokio::sync::Mutex::new(()),
            lag: Mutex::new(BTreeMap::new()),
            agreed_markers: Mutex::new(Agreed::default()),
            marker_cursor: AtomicU64::new(0),
            stats: ClusterStats::default(),
            restoring: AtomicBool::new(restoring),
            restored_from: Mutex::new((0, BTreeSet::new())),
            clock_offsets: Mutex::new(BTreeMap::new()),
        });
        // Peers are served during the check (they may be checking too, on a cold
        // start of the whole cluster), but a Coordinate, which mints dots, waits
        // for it to end.
        tokio::spawn(cluster.clone().serve_peers(listener));
        cluster.check_incarnation().await?;
        cluster.ready.store(true, Ordering::Release);
        cluster.ready_changed.notify_waiters();
        if joining {
            cluster.fetch_map_from_seeds().await;
        }
        tokio::spawn(cluster.clone().run_detector());
        tokio::spawn(cluster.clone().run_anti_entropy());
        tokio::spawn(cluster.clone().run_handoff());
        if cluster.hints.is_some() {
            tokio::spawn(cluster.clone().run_hint_delivery());
        }
        Ok(cluster)
    }

    /// Before minting any dot: if a peer knew this node on another data directory
    /// (this one replaced it: a lost, wiped or swapped disk) and this directory has
    /// no actor of its own yet, take a fresh actor and an incarnation past the old
    /// one. The old life's dots live on in the peers' data; a new dot of the old
    /// actor would reuse or cover them. Waits up to `incarnation_check_wait_ms`
    /// for some peer to answer (none may be up yet when a cluster starts).
    async fn check_incarnation(self: &Arc<Self>) -> Result<(), StartError> {
        let peers: Vec<NodeId> = self
            .map()
            .nodes()
            .into_iter()
            .filter(|n| *n != self.me())
            .collect();
        if peers.is_empty() {
            return Ok(());
        }
        let deadline_ms = self.now_ms() + self.config.incarnation_check_wait_ms;
        let known = loop {
            let mut answers = Vec::new();
            for peer in &peers {
                let cluster = self.clone();
                let peer = *peer;
                answers.push(tokio::spawn(async move {
                    cluster.known_incarnation(peer).await
                }));
            }
            let mut known: Option<u64> = None;
            for answer in answers {
                if let Ok(Some(k)) = answer.await {
                    known = Some(known.unwrap_or(0).max(k));
                }
            }
            if known.is_some() || self.now_ms() >= deadline_ms {
                break known;
            }
            tokio::time::sleep(Duration::from_millis(
                self.config.detector.probe_interval_ms,
            ))
            .await;
        };
        let own = self.incarnation();
        match known {
            // Known on another directory, and this one has not taken its own
            // actor yet (it may have been stopped before, mid-check).
            Some(k) if k >= 1 && self.actor() == self.me() => {
                // A fresh actor id for its dots: node id in the low 24 bits, a
                // random epoch (1..=255) above. See `Store::adopt_actor`.
                let epoch = 1 + (self.clock.random_u64() % 255) as u32;
                let actor = self.me() | (epoch << ACTOR_EPOCH_SHIFT);
                let dir = self.dir.clone();
                let raised = self
                    .storage
                    .with_store_mut(|s| {
                        // Restoring as after a rebuild: this directory lacks what
                        // the old one acknowledged.
                        shoal_engine::disk::write_checked_file(
                            dir.as_ref(),
                            RESTORING_FILE,
                            &actor.to_le_bytes(),
                        )?;
                        s.adopt_actor(actor)?;
                        s.raise_incarnation(k + 1)
                    })
                    .map_err(|cause| StartError::Disk {
                        file: "ACTOR and INCARNATION",
                        cause,
                    })?;
                self.restoring.store(true, Ordering::Release);
                self.incarnation.store(raised, Ordering::Relaxed);
                self.stats.earlier_life_seen.store(k, Ordering::Relaxed);
                tracing::warn!(
                    "node {}'s data directory is not the one the cluster knew it on (up to incarnation {k}): a lost, wiped or replaced disk; starting as incarnation {raised} (was {own}), minting its dots as actor {actor}, and anti-entropy restores its replicas",
                    self.me()
                );
            }
            Some(_) => {}
            None => tracing::info!(
                "no peer answered within {} ms; starting as incarnation {own}",
                self.config.incarnation_check_wait_ms
            ),
        }
        Ok(())
    }

    /// What `peer` knew of this node's incarnation before we pinged it (None:
    /// no answer).
    async fn known_incarnation(self: &Arc<Self>, peer: NodeId) -> Option<u64> {
        let timeout = self.config.detector.probe_interval_ms * 2;
        match self.call(peer, self.ping_request(), timeout).await {
            Ok(Response::Pong {
                incarnation,
                dir_id,
                your_incarnation,
                ..
            }) => {
                self.record_life(peer, dir_id, incarnation);
                self.heard(peer, incarnation);
                Some(your_incarnation)
            }
            _ => None,
        }
    }

    /// Remember that `peer` runs on directory `dir_id` in `incarnation`, and save
    /// what is new ([`peer_lives`]: once per peer restart). Saved under the lock,
    /// so a later record never lands before an earlier one.
    fn record_life(&self, peer: NodeId, dir_id: u64, incarnation: u64) {
        let mut lives = lock(&self.lives);
        if lives.record(peer, dir_id, incarnation) {
            if let Err(e) = peer_lives::save(self.dir.as_ref(), &lives) {
                tracing::warn!("cannot save what this node knows of peers' directories: {e}");
            }
        }
    }

    /// The id this node's dots carry (its node id unless its directory replaced
    /// one it ran on).
    pub fn actor(&self) -> NodeId {
        self.storage.read(|s| s.actor())
    }

    async fn wait_ready(&self) {
        loop {
            let changed = self.ready_changed.notified();
            if self.ready.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Relaxed)
    }

    /// A joining node's first map: ask each seed in turn until one answers.
    async fn fetch_map_from_seeds(self: &Arc<Self>) {
        let seeds: Vec<NodeId> = self
            .config
            .members
            .keys()
            .copied()
            .filter(|n| *n != self.me())
            .collect();
        let mut attempt = 0u64;
        loop {
            let mut last_failure = String::from("no seed listed");
            for seed in &seeds {
                let mine = (*self.map()).clone();
                let request = Request::MapSync { map: mine };
                let answer = self
                    .call(*seed, request, self.config.request_timeout_ms)
                    .await;
                if let Err(e) = &answer {
                    last_failure = format!("seed {seed}: {e}");
                }
                if let Ok(Response::Map(theirs)) = answer {
                    if theirs.check().is_ok() && self.adopt(&theirs).await {
                        tracing::info!(
                            "joined the cluster's gossip through seed {seed}: ring version {}, {} members; waiting for an operator's `shoal cluster join`",
                            theirs.version(),
                            theirs.ring().members().len()
                        );
                        return;
                    }
                }
            }
            attempt += 1;
            if attempt % 10 == 1 {
                tracing::warn!(
                    "no seed has answered with the cluster map yet ({last_failure}); the Redis port opens once one does (check --members and --cluster-secret); retrying"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The current map (a snapshot: later changes replace it, not edit it).
    pub fn map(&self) -> Arc<ClusterMap> {
        lock(&self.map).0.clone()
    }

    /// The current map's version and fingerprint.
    fn map_summary(&self) -> (u64, u64) {
        let held = lock(&self.map);
        (held.0.version(), held.1)
    }

    pub fn me(&self) -> NodeId {
        self.config.node_id
    }

    fn now_ms(&self) -> u64 {
        self.clock.monotonic_ms()
    }

    fn is_live(&self, node: NodeId) -> bool {
        lock(&self.detector).is_live(node)
    }

    /// `namespace`'s (r, w) under `placement`: its pin's, else the configured.
    fn quorums_in(&self, placement: &Placement, namespace: u8) -> (u8, u8) {
        match placement.pin_for(namespace) {
            Some(pin) => (pin.r, pin.w),
            None => (
                self.config.read_quorum_for(namespace),
                self.config.write_quorum_for(namespace),
            ),
        }
    }

    /// `namespace`'s write quorum under the current placement.
    fn write_quorum(&self, map: &ClusterMap, namespace: u8) -> u8 {
        self.quorums_in(map.placement(), namespace).1
    }

    /// `namespace`'s read quorum under the current placement.
    fn read_quorum(&self, map: &ClusterMap, namespace: u8) -> u8 {
        self.quorums_in(map.placement(), namespace).0
    }

    /// Coordinator candidates for a key: live owners in preference order, then the
    /// rest of the owners (the detector may be behind).
    fn candidates(&self, map: &ClusterMap, namespace: u8, key: &[u8]) -> Vec<NodeId> {
        let owners = map.owners(map.partition_of_key(namespace, key));
        let detector = lock(&self.detector);
        let (mut live, down): (Vec<NodeId>, Vec<NodeId>) =
            owners.iter().partition(|n| detector.is_live(**n));
        live.extend(down);
        live
    }

    /// Adopt what `incoming` adds to our map (a newer ring, more done reports).
    /// Waits for replica writes in flight under the old ring, saves the result,
    /// and points the detector and peers at the new member set. Returns whether
    /// the map changed.
    async fn adopt(&self, incoming: &ClusterMap) -> bool {
        if !(*self.map()).clone().merge(incoming) {
            return false;
        }
        let _exclusive = self.gate.write().await;
        let mut next = (*self.map()).clone();
        if !next.merge(incoming) {
            return false;
        }
        if next.version() > self.map().version() {
            if !self.drop_residue(&next).await {
                return false;
            }
            if self.out_of_the_ring(&next) {
                if self.leaving_in(&next) {
                    let (held, taken) = self.hand_over_hints(&next).await;
                    if held > 0 {
                        tracing::info!(
                            "leaving the ring: {taken} of {held} hint(s) handed to their keys' owners or to a member"
                        );
                    }
                }
                self.drop_all_hints().await;
            }
        }
        if let Err(e) = cluster_map::save(self.dir.as_ref(), &next) {
            // Still adopted: refusing a newer ring would be worse than having to
            // learn it again from a peer after a restart.
            tracing::error!("cannot save the cluster map: {e}");
        }
        let previous_version = self.map().version();
        if next.version() != previous_version {
            tracing::info!(
                "ring version {previous_version} -> {}: {} members, {} partition handoff(s) pending",
                next.version(),
                next.ring().members().len(),
                next.handoffs_pending()
            );
        } else if next.handoffs_pending() == 0 {
            tracing::info!("ring version {}: every handoff is done", next.version());
        }
        let nodes = next.nodes();
        lock(&self.detector).set_peers(nodes.iter().copied(), self.now_ms());
        let fingerprint = next.fingerprint();
        *lock(&self.map) = (Arc::new(next), fingerprint);
        true
    }

    /// Whether `next` shows this node out of the ring, now or in the placement its
    /// handoffs run from (it is joining back). Delete markers are agreed by the
    /// ring's members only, so any hint it holds may be for a write whose marker
    /// was collected without it: delivered, it would bring the value back (G4;
    /// cluster seed 7002573: a node down while it left, then joined back,
    /// delivered a hint from before the delete).
    fn out_of_the_ring(&self, next: &ClusterMap) -> bool {
        let me = self.me();
        !next.ring().members().contains(&me)
            || next
                .previous_placement()
                .is_some_and(|p| !p.default_ring().members().contains(&me))
    }

    /// Forget every hint this node holds (see `out_of_the_ring`). Each was a
    /// copy for an owner that was down; the write's coordinator, an owner, holds
    /// it, and anti-entropy brings it to the rest.
    async fn drop_all_hints(&self) {
        let Some(hint_store) = self.hints.clone() else {
            return;
        };
        let held: Vec<(Bytes, shoal_engine::VersionVector)> = hint_store.read(|s| {
            s.live_keys_in_slots(
                hints::HINT_NAMESPACE,
                0..=shoal_engine::slot::SLOT_COUNT - 1,
            )
            .into_iter()
            .filter_map(|hk| {
                let stored = s.get(hints::HINT_NAMESPACE, &hk).ok()??;
                Some((hk, stored.context))
            })
            .collect()
        });
        if held.is_empty() {
            return;
        }
        let mut dropped = 0usize;
        for chunk in held.chunks(RESIDUE_DROP_BATCH_OPS) {
            let deletes = chunk
                .iter()
                .map(|(hk, context)| {
                    let mut op = WriteOp::delete(hints::HINT_NAMESPACE, hk.clone());
                    op.covers = Covers::Context(context.clone());
                    op
                })
                .collect();
            if hint_store.write(deletes).await.is_ok() {
                dropped += chunk.len();
            }
        }
        tracing::warn!(
            "node {} is out of the ring (or joining back): dropped {dropped} of its {} hint(s), whose delete markers may have been collected without it",
            self.me(),
            held.len()
        );
    }

    /// Before adopting `next` (a newer ring; the caller holds the gate
    /// exclusively): drop every local copy of the map partitions this node is an
    /// incoming owner of in `next`. It owned none of them under the ring before,
    /// so whatever it holds of them is left over from an earlier time it owned
    /// them (it was down or cut off while it lost them, or had not finished
    /// dropping them): delete markers for those keys may have been collected
    /// without it since, and its old copies would bring the deleted values back.
    /// The handoff then pulls each partition whole from its old owners. False
    /// when a drop could not be written (the ring is not adopted then; gossip
    /// offers it again).
    async fn drop_residue(&self, next: &ClusterMap) -> bool {
        if cfg!(feature = "bug-rejoin-keeps-residue") {
            return true;
        }
        let me = self.me();
        // Pending for this node: the partitions it is an incoming owner of (a
        // newer ring cannot hold its reports yet).
        // An owner that stays (a pin makes them pull too) keeps what it holds, and
        // so does a node that holds the partition under its current ring when no
        // marker can have gone without it since (`still_holds`).
        let current = self.map();
        let incoming: Vec<PartitionId> = next
            .incoming(me)
            .into_iter()
            .filter(|p| !next.was_owner(*p, me) && !still_holds(&current, next, me, *p))
            .collect();
        if incoming.is_empty() {
            return true;
        }
        let keys = self.storage.read(|s| {
            partition_keys(
                s,
                next,
                incoming.iter().map(|p| (*p, next.namespaces(*p))),
                usize::MAX,
            )
        });
        let mut dropped = 0;
        for chunk in keys.chunks(RESIDUE_DROP_BATCH_OPS) {
            let ops = chunk
                .iter()
                .map(|(namespace, key)| WriteOp::drop_copy(*namespace, key.clone()))
                .collect();
            match self.storage.write(ops).await {
                Ok(results) if results.iter().all(Result::is_ok) => {
                    dropped += results.iter().flatten().filter(|o| o.applied).count() as u64;
                }
                _ => {
                    tracing::error!(
                        "cannot drop old copies before adopting ring version {}; not adopting it yet",
                        next.version()
                    );
                    return false;
                }
            }
        }
        if dropped > 0 {
            tracing::info!(
                "ring version {}: dropped {dropped} copies held from before this node last lost their partitions",
                next.version()
            );
            self.stats
                .copies_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        true
    }

    /// Push our map to `node` and take what it answers. Whether it answered.
    async fn sync_map_with(&self, node: NodeId) -> bool {
        self.stats.map_syncs.fetch_add(1, Ordering::Relaxed);
        let request = Request::MapSync {
            map: (*self.map()).clone(),
        };
        if let Ok(Response::Map(theirs)) = self
            .call(node, request, self.config.request_timeout_ms)
            .await
        {
            if theirs.check().is_ok() {
                self.adopt(&theirs).await;
                return true;
            }
        }
        false
    }

    /// Before a join or replace: the new node must answer at `address` as
    /// `node` and prove the cluster secret (the handshake), and answer a ping.
    /// A node that cannot would be given partitions it never takes, and its
    /// handoffs would hold every later change off.
    async fn check_newcomer(&self, node: NodeId, address: &str) -> Result<(), String> {
        let peer_addr = member_addr(address)?.peer;
        let clock = self.clock.clone();
        let mut random = move || clock.random_u64();
        let secret = self.config.secret.as_bytes();
        let ping = async {
            let (mut reader, mut writer) =
                peer::dial(&peer_addr, self.me(), node, secret, &mut random)
                    .await
                    .map_err(|e| e.to_string())?;
            let envelope = Envelope::Request {
                id: 1,
                from: self.me(),
                body: self.ping_request(),
            };
            writer.send(&envelope).await.map_err(|e| e.to_string())?;
            match reader.recv().await.map_err(|e| e.to_string())? {
                Envelope::Response {
                    body: Response::Pong { .. },
                    ..
                } => Ok(()),
                other => Err(format!("answered {other:?} to a ping")),
            }
        };
        let limit =
            Duration::from_millis(self.config.request_timeout_ms + self.config.connect_timeout_ms);
        match tokio::time::timeout(limit, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "node {node} at {address} cannot take part: {e}; nothing changed (retry once it answers with the cluster secret)"
            )),
            Err(_) => Err(format!(
                "node {node} at {address} did not answer within {} ms; nothing changed (retry once it answers)",
                limit.as_millis()
            )),
        }
    }

    /// Before an operator's ring change: compare maps with every other node of
    /// ours (adopting any newer one), and refuse unless a majority of the ring's
    /// members answered. A node cut off from the rest may not know the last
    /// change; a change computed from its older ring takes a version the
    /// cluster already used, and should it win the tie (maps of one version
    /// are ordered by placement fingerprint) it replaces a ring whose handoffs
    /// are done and whose old owners dropped their copies, taking the writes
    /// acknowledged under it along (the cluster sim found a node healed from
    /// an isolation do so). The last change was pushed to every node, so a
    /// majority of them knows it unless most were cut off too.
    async fn learn_map_from_majority(self: &Arc<Self>) -> Result<(), String> {
        let map = self.map();
        let me = self.me();
        let members = map.ring().members().clone();
        let asks: Vec<_> = map
            .nodes()
            .into_iter()
            .filter(|n| *n != me)
            .map(|node| {
                let cluster = self.clone();
                tokio::spawn(async move { (node, cluster.sync_map_with(node).await) })
            })
            .collect();
        let mut answered = usize::from(members.contains(&me));
        for ask in asks {
            if let Ok((node, true)) = ask.await {
                answered += usize::from(members.contains(&node));
            }
        }
        if answered * 2 <= members.len() {
            return Err(format!(
                "only {answered} of the ring's {} members could compare maps with this node; retry once it reaches a majority",
                members.len()
            ));
        }
        Ok(())
    }

    /// An operator's ring change, made here and pushed to every node of the new
    /// map (gossip carries it to any that miss the push). Returns the replicas
    /// that move and how many (partition, incoming owner) handoffs it started.
    pub async fn change_ring(
        self: &Arc<Self>,
        change: RingChange,
    ) -> Result<(MapDiff, usize), String> {
        match &change {
            RingChange::Join { node, address }
            | RingChange::Replace {
                new: node, address, ..
            } if !cfg!(feature = "bug-join-unchecked") => {
                self.check_newcomer(*node, address).await?
            }
            _ => {}
        }
        self.learn_map_from_majority().await?;
        let current = self.map();
        let (next, diff) = current.change(&change).map_err(|e| e.to_string())?;
        let handoffs = next.handoffs_pending();
        if !self.adopt(&next).await {
            return Err("the ring changed meanwhile; look again and retry".into());
        }
        let pushes: Vec<_> = next
            .nodes()
            .into_iter()
            .filter(|n| *n != self.me())
            .map(|node| {
                let cluster = self.clone();
                tokio::spawn(async move { cluster.sync_map_with(node).await })
            })
            .collect();
        for push in pushes {
            let _ = push.await;
        }
        if self.map().version() != next.version() || self.map().placement() != next.placement() {
            return Err("another ring change at the same version won; look again and retry".into());
        }
        Ok((diff, handoffs))
    }

    /// Nodes of the map with their state, for operators.
    pub fn members(&self) -> Vec<MemberStatus> {
        let now = self.now_ms();
        let map = self.map();
        let ring = map.ring();
        let partitions = map.partitions();
        let detector = lock(&self.detector);
        map.addresses()
            .iter()
            .map(|(node, client)| {
                let (state, reachable, incarnation, silent_ms) = if *node == self.me() {
                    (PeerState::Alive, true, self.incarnation(), 0)
                } else {
                    match detector.view(*node) {
                        Some(view) => (
                            view.state,
                            view.reachable,
                            view.incarnation,
                            now.saturating_sub(view.last_direct_ms),
                        ),
                        None => (PeerState::Down, false, 0, 0),
                    }
                };
                MemberStatus {
                    node: *node,
                    addr: member_addr(client).unwrap_or(MemberAddr {
                        client: client.clone(),
                        peer: String::new(),
                    }),
                    state,
                    reachable,
                    incarnation,
                    silent_ms,
                    in_ring: ring.is_member(*node),
                    partitions: partitions
                        .iter()
                        .filter(|p| map.owners(**p).contains(node))
                        .count(),
                    coordinating: partitions
                        .iter()
                        .filter(|p| {
                            map.owners(**p).iter().find(|n| detector.is_live(**n)) == Some(node)
                        })
                        .count(),
                    incoming: map.incoming(*node).len(),
                }
            })
            .collect()
    }

    /// The largest measured clock skew to any other of `members`, error bound
    /// included (None: one has not answered a ping yet).
    fn clock_skew_max_ms(&self, members: &[NodeId]) -> Option<u64> {
        let me = self.me();
        let offsets = lock(&self.clock_offsets);
        members
            .iter()
            .filter(|m| **m != me)
            .map(|m| {
                offsets
                    .get(m)
                    .map(|(offset, error)| offset.unsigned_abs() + error)
            })
            .try_fold(0, |max, skew| skew.map(|s| max.max(s)))
    }

    /// Per peer: (its wall clock minus this node's, the estimate's error), ms.
    pub fn clock_offsets(&self) -> BTreeMap<NodeId, (i64, u64)> {
        lock(&self.clock_offsets).clone()
    }

    /// While restoring from the replicas: (other members merged here in full so
    /// far, other members).
    pub fn restoring(&self) -> Option<(usize, usize)> {
        if !self.restoring.load(Ordering::Acquire) {
            return None;
        }
        let me = self.me();
        let others: Vec<NodeId> = self
            .map()
            .ring()
            .members()
            .iter()
            .copied()
            .filter(|n| *n != me)
            .collect();
        let (_, done) = &*lock(&self.restored_from);
        Some((
            others.iter().filter(|n| done.contains(n)).count(),
            others.len(),
        ))
    }

    /// The handoff being pulled here now, if any.
    pub fn handoff_now(&self) -> Option<HandoffProgress> {
        lock(&self.handoff_now).clone()
    }

    /// The client for `node`, made on first use from the map's address (or the
    /// seed list's, before a joining node has the map).
    fn peer(&self, node: NodeId) -> Option<Arc<PeerClient>> {
        let mut peers = lock(&self.peers);
        if let Some(peer) = peers.get(&node) {
            return Some(peer.clone());
        }
        let addr = match self.map().address(node) {
            Some(client) => member_addr(client).ok()?.peer,
            None => self.config.members.get(&node)?.peer.clone(),
        };
        let client = Arc::new(PeerClient {
            node,
            addr,
            conn: tokio::sync::Mutex::new(None),
            last_connect_failure_ms: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        });
        peers.insert(node, client.clone());
        Some(client)
    }

    // ---- calls to peers ----

    async fn connection(&self, peer: &PeerClient) -> Result<Arc<Conn>, CallError> {
        let mut guard = peer.conn.lock().await;
        let now = self.now_ms();
        if let Some(conn) = guard.as_ref() {
            let stalled = conn.stalled(now, self.config.peer_stall_ms)
                && !cfg!(feature = "bug-keep-stalled-connections");
            if !conn.closed.load(Ordering::Acquire) && !stalled {
                return Ok(conn.clone());
            }
            if stalled {
                // Its requests fail as lost (outcome unknown); a fresh dial
                // goes through at once if the link is back.
                self.stats
                    .peer_connections_stalled
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!("node {}: connection stalled; dialling again", peer.node);
                conn.give_up();
            }
        }
        *guard = None;
        let failed_at = peer.last_connect_failure_ms.load(Ordering::Relaxed);
        if failed_at != 0 && now < failed_at + RECONNECT_BACKOFF_MS {
            return Err(CallError::Connect("recently unreachable".into()));
        }
        let clock = self.clock.clone();
        let mut random = move || clock.random_u64();
        let dial = peer::dial(
            &peer.addr,
            self.me(),
            peer.node,
            self.config.secret.as_bytes(),
            &mut random,
        );
        let result =
            tokio::time::timeout(Duration::from_millis(self.config.connect_timeout_ms), dial).await;
        match result {
            Ok(Ok((mut reader, mut writer))) => {
                peer.last_connect_failure_ms.store(0, Ordering::Relaxed);
                reader.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
                writer.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
                let conn = spawn_connection(reader, writer, self.clock.clone());
                *guard = Some(conn.clone());
                Ok(conn)
            }
            Ok(Err(e)) => {
                peer.last_connect_failure_ms
                    .store(now.max(1), Ordering::Relaxed);
                Err(CallError::Connect(e.to_string()))
            }
            Err(_) => {
                peer.last_connect_failure_ms
                    .store(now.max(1), Ordering::Relaxed);
                Err(CallError::Connect("connect timed out".into()))
            }
        }
    }

    /// One request to one peer, bounded by `timeout_ms`.
    pub async fn call(
        &self,
        node: NodeId,
        body: Request,
        timeout_ms: u64,
    ) -> Result<Response, CallError> {
        let peer = self
            .peer(node)
            .ok_or_else(|| CallError::Connect(format!("node {node} has no known address")))?;
        let deadline = Duration::from_millis(timeout_ms);
        let work = async {
            let conn = self.connection(&peer).await?;
            let id = peer.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            lock(&conn.pending).insert(id, (self.now_ms(), tx));
            let envelope = Envelope::Request {
                id,
                from: self.me(),
                body,
            };
            if conn.send.send(envelope).await.is_err() {
                return Err(CallError::Lost("connection closed".into()));
            }
            let answer = rx
                .await
                .map_err(|_| CallError::Lost("connection closed".into()));
            if answer.is_err() {
                lock(&conn.pending).remove(&id);
            }
            answer
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout),
        }
    }

    // ---- serving peers ----

    async fn serve_peers(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("peer accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let cluster = self.clone();
            tokio::spawn(async move { cluster.peer_connection(stream, addr.to_string()).await });
        }
    }

    async fn peer_connection(self: Arc<Self>, stream: tokio::net::TcpStream, addr: String) {
        let clock = self.clock.clone();
        let mut random = move || clock.random_u64();
        // Any node that proves the secret may talk: a joining node is not in the
        // map until an operator admits it, but it must be able to fetch the map.
        let me = self.me();
        let handshake = peer::accept(
            stream,
            me,
            self.config.secret.as_bytes(),
            |node| node != me,
            &mut random,
        );
        let timeout = Duration::from_millis(self.config.connect_timeout_ms.max(1000));
        let (node, mut reader, mut writer) = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(e)) => {
                self.stats
                    .peer_auth_refusals
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("refused peer connection from {addr}: {e}");
                return;
            }
            Err(_) => {
                self.stats
                    .peer_auth_refusals
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("refused peer connection from {addr}: handshake timed out");
                return;
            }
        };
        reader.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
        writer.set_body_max_bytes(self.config.peer_frame_body_max_bytes);
        let (send, mut queue) = mpsc::channel::<Envelope>(PEER_SEND_QUEUE_MAX);
        let writing = tokio::spawn(async move { writer.pump(&mut queue).await });
        self.serve_requests(node, &addr, reader, send).await;
        // The peer dials again when it finds this connection stalled; a writer
        // stuck on a dead socket must not outlive it.
        writing.abort();
    }

    /// Answer the requests of one inbound peer connection until it closes, fails,
    /// or stays silent for `PEER_IDLE_STALLS` stall periods (the peer pings every
    /// probe interval, so a silent connection is one it has given up on).
    async fn serve_requests(
        self: &Arc<Self>,
        node: NodeId,
        addr: &str,
        mut reader: PeerReader,
        send: mpsc::Sender<Envelope>,
    ) {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.config.peer_requests_in_flight_max,
        ));
        let idle_max = Duration::from_millis(self.config.peer_stall_ms * PEER_IDLE_STALLS);
        loop {
            let Ok(received) = tokio::time::timeout(idle_max, reader.recv()).await else {
                tracing::info!("closing the silent peer connection from node {node} ({addr})");
                return;
            };
            let envelope = match received {
                Ok(envelope) => envelope,
                Err(PeerError::Io(_)) => return,
                Err(e) => {
                    self.stats
                        .peer_frames_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("closing peer connection from node {node} ({addr}): {e}");
                    return;
                }
            };
            let Envelope::Request { id, from, body } = envelope else {
                tracing::warn!("node {node} sent a response on an inbound connection; closing it");
                return;
            };
            if from != node {
                tracing::warn!("node {node} sent a request as node {from}; closing its connection");
                return;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let cluster = self.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let body = cluster.handle(node, body).await;
                let _ = send.send(Envelope::Response { id, body }).await;
                drop(permit);
            });
        }
    }

    async fn handle(self: &Arc<Self>, from: NodeId, request: Request) -> Response {
        let too_many = |n: usize| {
            (n > ITEMS_PER_REQUEST_MAX).then(|| {
                Response::Error(RemoteError::new(
                    Refusal::Invalid,
                    format!("{n} items in one peer request (limit {ITEMS_PER_REQUEST_MAX})"),
                ))
            })
        };
        match request {
            Request::Ping {
                incarnation,
                dir_id,
                map_version,
                map_fingerprint,
            } => {
                let your_incarnation = {
                    let earlier = lock(&self.lives).other_lives_max(from, dir_id);
                    self.record_life(from, dir_id, incarnation);
                    earlier
                };
                self.heard(from, incarnation);
                self.compare_maps(from, map_version, map_fingerprint);
                let (map_version, map_fingerprint) = self.map_summary();
                Response::Pong {
                    incarnation: self.incarnation(),
                    dir_id: self.dir_id,
                    map_version,
                    map_fingerprint,
                    your_incarnation,
                    wall_ms: self.clock.wall_ms(),
                }
            }
            Request::PingReq { target } => {
                self.stats
                    .indirect_probes_served
                    .fetch_add(1, Ordering::Relaxed);
                let answered = if target == self.me() {
                    Some(self.incarnation())
                } else {
                    self.ping(target).await
                };
                Response::Vouch { answered }
            }
            Request::Replicate {
                ring_version,
                sent_wall_ms,
                items,
                hint_for,
            } => {
                if let Some(e) = too_many(items.len()) {
                    return e;
                }
                if let Some(e) = self.too_old(sent_wall_ms, self.config.replica_write_age_max_ms) {
                    return e;
                }
                if let Some(owner) = hint_for {
                    return Response::Replicated(self.store_hints(owner, items).await);
                }
                let mut shared = self.gate.read().await;
                if ring_version > self.map().version() {
                    // Learn the sender's ring before applying: adopting it may
                    // drop this node's old copies of the partition (`drop_residue`),
                    // which must not take a copy it has acknowledged with it.
                    drop(shared);
                    {
                        let _one_at_a_time = self.ring_catch_up.lock().await;
                        if ring_version > self.map().version() {
                            self.sync_map_with(from).await;
                        }
                    }
                    shared = self.gate.read().await;
                    let mine = self.map().version();
                    if ring_version > mine {
                        return Response::Error(RemoteError::new(
                            Refusal::TryAgain,
                            format!("sent under ring version {ring_version}; this node could not learn it yet and has {mine}"),
                        ));
                    }
                }
                let _shared = shared;
                let mine = self.map().version();
                if ring_version < mine {
                    self.stats
                        .stale_ring_refusals
                        .fetch_add(1, Ordering::Relaxed);
                    return Response::Error(RemoteError::new(
                        Refusal::StaleRing,
                        format!("sent under ring version {ring_version}; this node has {mine}"),
                    ));
                }
                self.stats
                    .replica_writes_received
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
                Response::Replicated(self.merge_locally(items).await)
            }
            Request::MapSync { map } => {
                if let Err(e) = map.check() {
                    return Response::Error(RemoteError::new(Refusal::Invalid, e.to_string()));
                }
                self.adopt(&map).await;
                Response::Map((*self.map()).clone())
            }
            Request::HandoffScan {
                ring_version,
                first_slot,
                last_slot,
                namespaces,
                after,
            } => {
                let mine = self.map().version();
                if mine < ring_version {
                    return Response::Error(RemoteError::new(
                        Refusal::MapBehind,
                        format!(
                            "this node has ring version {mine}; the scan is for {ring_version}"
                        ),
                    ));
                }
                if first_slot > last_slot || last_slot >= shoal_engine::slot::SLOT_COUNT {
                    return Response::Error(RemoteError::new(Refusal::Invalid, "bad slot range"));
                }
                // Planted bug: a node restoring from its replicas serves handoff
                // scans from what it has so far.
                if self.restoring.load(Ordering::Acquire)
                    && !cfg!(feature = "bug-restoring-serves-handoff")
                {
                    return Response::Error(RemoteError::new(
                        Refusal::Restoring,
                        "this node is restoring its data from its replicas; pull from another old owner",
                    ));
                }
                let (items, next) =
                    self.handoff_batch(first_slot..=last_slot, &namespaces, after.as_ref());
                Response::HandoffItems { items, next }
            }
            Request::Read { namespace, keys } => {
                if let Some(e) = too_many(keys.len()) {
                    return e;
                }
                Response::Sets(self.read_locally(namespace, &keys))
            }
            Request::ReadPrefix {
                namespace,
                keys,
                bytes_max,
            } => {
                if let Some(e) = too_many(keys.len()) {
                    return e;
                }
                Response::Sets(self.read_prefix(namespace, &keys, bytes_max))
            }
            Request::ReadHints {
                owner,
                namespace,
                keys,
            } => {
                if let Some(e) = too_many(keys.len()) {
                    return e;
                }
                Response::Sets(self.read_hints(owner, namespace, &keys))
            }
            Request::Coordinate {
                sent_wall_ms,
                writes,
            } => {
                if let Some(e) = too_many(writes.len()) {
                    return e;
                }
                // No dot is minted before the start-up incarnation check is done.
                self.wait_ready().await;
                // Started later than this, it would answer after the asker's
                // timeout (it waits up to a request timeout for the replicas).
                if let Some(e) = self.too_old(sent_wall_ms, self.config.request_timeout_ms) {
                    return e;
                }
                let ops = writes.into_iter().map(write_from_wire).collect();
                let results = self.coordinate(ops).await;
                Response::Coordinated(
                    results
                        .into_iter()
                        .map(|r| r.map(|o| outcome_to_wire(&o)))
                        .collect(),
                )
            }
            Request::PartitionDigests { partitions } => {
                if let Some(e) = too_many(partitions.len()) {
                    return e;
                }
                Response::PartitionDigests(self.partition_digests(&partitions))
            }
            Request::SlotDigests {
                first_slot,
                last_slot,
            } => Response::SlotDigests(self.storage.read(|s| {
                s.digests()
                    .map(|d| d.slot_digests(first_slot..=last_slot))
                    .unwrap_or_default()
            })),
            Request::SlotKeys { namespace, slot } => Response::SlotKeys(self.storage.read(|s| {
                s.digests()
                    .map(|d| d.slot_keys(namespace, slot))
                    .unwrap_or_default()
            })),
            Request::Keys {
                namespace,
                first_slot,
                last_slot,
            } => Response::Keys(
                self.storage
                    .read(|s| s.live_keys_in_slots(namespace, first_slot..=last_slot)),
            ),
            Request::MarkerVerdicts {
                ring_version,
                items,
            } => {
                if let Some(e) = too_many(items.len()) {
                    return e;
                }
                if let Some(e) = self.unsettled(ring_version) {
                    return e;
                }
                Response::Verdicts(self.marker_verdicts(&self.map(), &items))
            }
            Request::ForgetMarkers {
                ring_version,
                sent_wall_ms,
                items,
            } => {
                if let Some(e) = too_many(items.len()) {
                    return e;
                }
                if let Some(e) = self.too_old(sent_wall_ms, self.config.replica_write_age_max_ms) {
                    return e;
                }
                let _shared = self.gate.read().await;
                if let Some(e) = self.unsettled(ring_version) {
                    return e;
                }
                Response::Forgot(self.forget_markers(items).await)
            }
        }
    }

    /// A refusal for a replica write, proxied write or forget sent more than
    /// `age_max_ms` ago.
    fn too_old(&self, sent_wall_ms: u64, age_max_ms: u64) -> Option<Response> {
        let age_ms = self.clock.wall_ms().saturating_sub(sent_wall_ms);
        (age_ms > age_max_ms).then(|| {
            self.stats.requests_too_old.fetch_add(1, Ordering::Relaxed);
            Response::Error(RemoteError::new(
                Refusal::TooOld,
                format!("sent {age_ms} ms ago (limit {age_max_ms} ms)"),
            ))
        })
    }

    /// A refusal unless this node routes by `ring_version` and no handoff runs.
    fn unsettled(&self, ring_version: u64) -> Option<Response> {
        let map = self.map();
        (map.version() != ring_version || map.partitions_in_transition() > 0).then(|| {
            Response::Error(RemoteError::new(
                Refusal::StaleRing,
                format!(
                    "marker collection under ring {ring_version}; this node has ring {} with {} partitions in handoff",
                    map.version(),
                    map.partitions_in_transition()
                ),
            ))
        })
    }

    /// This node's verdict on each proposed marker (`tombstones::verdict`).
    fn marker_verdicts(&self, map: &ClusterMap, items: &[MarkerItem]) -> Vec<bool> {
        if self.restoring.load(Ordering::Acquire) {
            // It may lack a value a marker's key still has on no other node.
            return vec![false; items.len()];
        }
        let me = self.me();
        // A hint for an owner that left the ring is delivered to the key's first
        // live owner (`run_hint_delivery`), so it holds a marker back too,
        // though the settled map no longer lists its owner (cluster seed
        // 20030513: a fallback's hint for a node that left brought a value back
        // after its marker was collected).
        let mut hint_owners: BTreeSet<NodeId> = map.addresses().keys().copied().collect();
        hint_owners.extend(lock(&self.hint_owners).iter().copied());
        self.storage.read(|store| {
            let verdict = |hint_store: Option<&shoal_engine::Store>| {
                items
                    .iter()
                    .map(|item| {
                        let owners = map.owners(map.partition_of_key(item.namespace, &item.key));
                        tombstones::verdict(
                            store,
                            hint_store,
                            &hint_owners,
                            owners.contains(&me),
                            item,
                        )
                    })
                    .collect()
            };
            match &self.hints {
                Some(hints) => hints.read(|h| verdict(Some(h))),
                None => verdict(None),
            }
        })
    }

    /// Forget each marker still held as agreed; returns how many went.
    async fn forget_markers(&self, items: Vec<MarkerItem>) -> u64 {
        let ops = items
            .into_iter()
            .map(|i| WriteOp::forget_if(i.namespace, i.key, i.set_hash))
            .collect();
        self.write_counting_applied(ops).await
    }

    /// Write `ops` locally; how many were applied (a stopped store: none).
    async fn write_counting_applied(&self, ops: Vec<WriteOp>) -> u64 {
        match self.storage.write(ops).await {
            Ok(results) => results
                .iter()
                .filter(|r| r.as_ref().is_ok_and(|o| o.applied))
                .count() as u64,
            Err(_) => 0,
        }
    }

    /// A peer's map differs from ours (by version or fingerprint): sync with it in
    /// the background.
    fn compare_maps(self: &Arc<Self>, peer: NodeId, version: u64, fingerprint: u64) {
        if (version, fingerprint) == self.map_summary() {
            return;
        }
        let cluster = self.clone();
        tokio::spawn(async move { cluster.sync_map_with(peer).await });
    }

    /// One batch of a handoff scan: every key of `namespaces` in `slots` after
    /// `after`, in (slot, namespace, key) order, bounded in keys and bytes.
    fn handoff_batch(
        &self,
        slots: std::ops::RangeInclusive<u16>,
        namespaces: &Namespaces,
        after: Option<&HandoffCursor>,
    ) -> (Vec<ReplicaItem>, Option<HandoffCursor>) {
        self.storage.read(|s| {
            let Some(digests) = s.digests() else {
                return (Vec::new(), None);
            };
            let mut slot_namespaces: Vec<(u16, u8)> = digests
                .slot_digests(slots)
                .into_iter()
                .filter(|(_, namespace, _)| namespaces.contains(*namespace))
                .map(|(slot, namespace, _)| (slot, namespace))
                .collect();
            slot_namespaces.sort_unstable();
            let mut items = Vec::new();
            let mut bytes = 0usize;
            let mut last_slot = 0u16;
            for (slot, namespace) in slot_namespaces {
                if after.is_some_and(|c| (slot, namespace) < (c.slot, c.namespace)) {
                    continue;
                }
                let mut keys: Vec<Vec<u8>> = digests
                    .slot_keys(namespace, slot)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                keys.sort_unstable();
                for key in keys {
                    if after.is_some_and(|c| {
                        (slot, namespace) == (c.slot, c.namespace) && key.as_slice() <= &c.key[..]
                    }) {
                        continue;
                    }
                    let Ok(Some(set)) = s.get(namespace, &key) else {
                        continue;
                    };
                    if !items.is_empty()
                        && (items.len() >= HANDOFF_ITEMS_PER_BATCH_MAX
                            || bytes >= self.config.repair_batch_bytes_max)
                    {
                        let last: &ReplicaItem = items.last().expect("not empty");
                        let next = HandoffCursor {
                            slot: last_slot,
                            namespace: last.namespace,
                            key: last.key.clone(),
                        };
                        return (items, Some(next));
                    }
                    bytes += key.len() + set.size_bytes();
                    last_slot = slot;
                    items.push(ReplicaItem {
                        namespace,
                        key: Bytes::from(key),
                        set,
                    });
                }
            }
            (items, None)
        })
    }

    /// A ping: this life's incarnation and directory, and the map it routes by.
    fn ping_request(&self) -> Request {
        let (map_version, map_fingerprint) = self.map_summary();
        Request::Ping {
            incarnation: self.incarnation(),
            dir_id: self.dir_id,
            map_version,
            map_fingerprint,
        }
    }

    /// Ping `node` directly; its incarnation when it answered in time.
    async fn ping(self: &Arc<Self>, node: NodeId) -> Option<u64> {
        let timeout = self.config.detector.probe_interval_ms * 2;
        let ping = self.ping_request();
        let sent_wall_ms = self.clock.wall_ms();
        let Ok(Response::Pong {
            incarnation,
            dir_id,
            map_version,
            map_fingerprint,
            wall_ms,
            ..
        }) = self.call(node, ping, timeout).await
        else {
            return None;
        };
        // The answer was stamped between our send and our receipt: its clock
        // minus our midpoint, give or take half the round trip.
        let received_wall_ms = self.clock.wall_ms();
        let round_trip_ms = received_wall_ms.saturating_sub(sent_wall_ms);
        let midpoint_ms = sent_wall_ms + round_trip_ms / 2;
        let offset_ms = wall_ms as i64 - midpoint_ms as i64;
        lock(&self.clock_offsets).insert(node, (offset_ms, round_trip_ms.div_ceil(2)));
        self.record_life(node, dir_id, incarnation);
        self.heard(node, incarnation);
        self.compare_maps(node, map_version, map_fingerprint);
        Some(incarnation)
    }

    fn heard(&self, node: NodeId, incarnation: u64) {
        let now = self.now_ms();
        if let Some(DetectorEvent::Changed { node, from, to }) =
            lock(&self.detector).heard(node, incarnation, now)
        {
            tracing::info!("node {node}: {} -> {}", from.as_str(), to.as_str());
        }
    }

    /// This node's digest of each map partition (0 for one its map lacks).
    fn partition_digests(&self, partitions: &[PartitionId]) -> Vec<u64> {
        let map = self.map();
        self.storage.read(|s| {
            partitions
                .iter()
                .map(|p| {
                    if !map.is_partition(*p) {
                        return 0;
                    }
                    let namespaces = map.namespaces(*p);
                    s.digests().map_or(0, |d| {
                        d.range_digest_where(map.slot_range(*p), |ns| namespaces.contains(ns))
                    })
                })
                .collect()
        })
    }

    /// Merge replica copies into the local store, durably. Submitted in
    /// batches of at most the committer's `batch_bytes_max` (all queued before
    /// any is awaited, so they commit in order), so that a stream of large
    /// copies never makes one batch too big for a segment.
    async fn merge_locally(&self, items: Vec<ReplicaItem>) -> Vec<Result<(), RemoteError>> {
        let stopped = || {
            Err(RemoteError::new(
                Refusal::OutcomeUnknown,
                "storage has stopped",
            ))
        };
        let mut tickets = Vec::new();
        for chunk in chunk_by_bytes(items, self.storage.config().batch_bytes_max) {
            let n = chunk.len();
            let ops: Vec<WriteOp> = chunk
                .into_iter()
                .map(|i| WriteOp::merge(i.namespace, i.key, i.set))
                .collect();
            tickets.push((n, self.storage.submit(ops).await));
        }
        let mut results = Vec::new();
        for (n, ticket) in tickets {
            match ticket {
                Ok(ticket) => results.extend(
                    ticket
                        .wait()
                        .await
                        .into_iter()
                        .map(|r| r.map(|_| ()).map_err(|e| remote_error(&e))),
                ),
                Err(_) => results.extend((0..n).map(|_| stopped())),
            }
        }
        results
    }

    /// As a fallback: the hint held for `owner` of each key (`None`: none).
    fn read_hints(
        &self,
        owner: NodeId,
        namespace: u8,
        keys: &[Bytes],
    ) -> Vec<Result<Option<SiblingSet>, RemoteError>> {
        let Some(hint_store) = &self.hints else {
            return keys.iter().map(|_| Ok(None)).collect();
        };
        hint_store.read(|s| {
            keys.iter()
                .map(|key| {
                    let hint_key = hints::hint_key(owner, namespace, key);
                    let stored = s
                        .get(hints::HINT_NAMESPACE, &hint_key)
                        .map_err(|e| RemoteError::new(Refusal::Invalid, e.to_string()))?;
                    Ok(stored
                        .and_then(|h| h.winner().and_then(|w| w.value.clone()))
                        .and_then(|v| hints::decode_hint(&v)))
                })
                .collect()
        })
    }

    /// `ReadPrefix`: the local copies of the first keys whose sets add up to at
    /// most `bytes_max`, and always the first.
    fn read_prefix(
        &self,
        namespace: u8,
        keys: &[Bytes],
        bytes_max: u64,
    ) -> Vec<Result<Option<SiblingSet>, RemoteError>> {
        self.storage.read(|s| {
            let mut bytes = 0u64;
            let mut sets = Vec::new();
            for key in keys {
                let set = s
                    .get(namespace, key)
                    .map_err(|e| RemoteError::new(Refusal::Invalid, e.to_string()));
                let set_bytes = set.as_ref().map_or(0, |set| {
                    set.as_ref().map_or(0, SiblingSet::size_bytes) + key.len()
                });
                if !sets.is_empty() && bytes + set_bytes as u64 > bytes_max {
                    break;
                }
                bytes += set_bytes as u64;
                sets.push(set);
            }
            sets
        })
    }

    fn read_locally(
        &self,
        namespace: u8,
        keys: &[Bytes],
    ) -> Vec<Result<Option<SiblingSet>, RemoteError>> {
        self.storage.read(|s| {
            keys.iter()
                .map(|k| {
                    s.get(namespace, k)
                        .map_err(|e| RemoteError::new(Refusal::Invalid, e.to_string()))
                })
                .collect()
        })
    }

    // ---- coordinating writes ----

    /// Where a key's copies go: each owner, except that with sloppy quorum an owner
    /// the detector holds down is replaced by a live fallback (the next nodes of
    /// the ring outside the owners), which keeps the copy as a hint for it.
    fn write_targets(&self, map: &ClusterMap, namespace: u8, key: &[u8]) -> Vec<Target> {
        let targets = self.targets(map, map.partition_of_key(namespace, key));
        let hinted = targets.iter().filter(|(_, hint_for)| hint_for.is_some());
        self.stats
            .writes_hinted
            .fetch_add(hinted.count() as u64, Ordering::Relaxed);
        targets
    }

    /// A partition's owners, each one the detector holds down replaced (with
    /// sloppy quorum) by the next live fallback: `(node, the owner it stands in
    /// for)`. Writes and reads choose alike, so a read asks the fallback that
    /// took a write while the same owner was down.
    fn targets(&self, map: &ClusterMap, partition: PartitionId) -> Vec<Target> {
        let owners = map.owners(partition);
        if !self.config.sloppy_quorum {
            return owners.iter().map(|o| (*o, None)).collect();
        }
        let Some(ring) = map.ring_of(partition) else {
            return owners.iter().map(|o| (*o, None)).collect();
        };
        let detector = lock(&self.detector);
        let live = |n: NodeId| detector.is_live(n);
        // A pinned namespace's fallbacks are its own other nodes.
        let mut fallbacks = ring.fallbacks(split_partition(partition).1, live);
        owners
            .iter()
            .map(|owner| {
                if live(*owner) {
                    return (*owner, None);
                }
                match fallbacks.next() {
                    Some(fallback) => (fallback, Some(*owner)),
                    None => (*owner, None),
                }
            })
            .collect()
    }

    /// As a fallback: keep each item durably as a hint for `owner`.
    async fn store_hints(
        &self,
        owner: NodeId,
        items: Vec<ReplicaItem>,
    ) -> Vec<Result<(), RemoteError>> {
        let n = items.len();
        let refuse = |why: String| {
            self.stats
                .hints_refused
                .fetch_add(n as u64, Ordering::Relaxed);
            (0..n)
                .map(|_| Err(RemoteError::new(Refusal::NoHints, why.clone())))
                .collect()
        };
        let Some(hint_store) = &self.hints else {
            return refuse("this node keeps no hints".into());
        };
        if cfg!(feature = "bug-drop-hint") {
            // Planted bug: acknowledge the hints without keeping them.
            return (0..n).map(|_| Ok(())).collect();
        }
        let _serial = self.hint_lock.lock().await;
        lock(&self.hint_owners).insert(owner);
        let held = hint_store.read(|s| s.live_key_count(hints::HINT_NAMESPACE));
        if held + n as u64 > self.config.hints_max {
            return refuse(format!(
                "{held} hints held, limit {}",
                self.config.hints_max
            ));
        }
        let ops: Vec<WriteOp> = hint_store.read(|s| {
            items
                .iter()
                .map(|item| {
                    let key = hints::hint_key(owner, item.namespace, &item.key);
                    let mut set = item.set.clone();
                    if let Some(held) = s
                        .get(hints::HINT_NAMESPACE, &key)
                        .ok()
                        .flatten()
                        .and_then(|h| h.winner().and_then(|w| w.value.clone()))
                        .and_then(|v| hints::decode_hint(&v))
                    {
                        set.merge(&held);
                    }
                    WriteOp::put(hints::HINT_NAMESPACE, key, hints::encode_hint(&set))
                })
                .collect()
        });
        match hint_store.write(ops).await {
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    r.map(|_| {
                        self.stats.hints_stored.fetch_add(1, Ordering::Relaxed);
                    })
                    .map_err(|e| remote_error(&e))
                })
                .collect(),
            Err(_) => refuse("the hint store has stopped".into()),
        }
    }

    /// What the exchange with `peer` that just compared everything found.
    fn record_lag(&self, peer: NodeId, keys_differing: usize) {
        let now = self.now_ms();
        let mut lag = lock(&self.lag);
        let entry = lag.entry(peer).or_default();
        entry.last_exchange_ms = Some(now);
        entry.keys_differing = keys_differing;
        if keys_differing == 0 {
            entry.last_in_sync_ms = Some(now);
        }
    }

    /// Replication lag with each peer, as anti-entropy last measured it:
    /// (peer, keys that differed, ms since that exchange, ms since the two were
    /// last found in sync). `None`s mean no exchange has completed yet.
    pub fn replication_lag(&self) -> Vec<(NodeId, usize, Option<u64>, Option<u64>)> {
        let now = self.now_ms();
        lock(&self.lag)
            .iter()
            .map(|(peer, lag)| {
                (
                    *peer,
                    lag.keys_differing,
                    lag.last_exchange_ms.map(|t| now.saturating_sub(t)),
                    lag.last_in_sync_ms.map(|t| now.saturating_sub(t)),
                )
            })
            .collect()
    }

    /// Agreed delete markers waiting out the settle delay, for operators.
    pub fn markers_waiting(&self) -> usize {
        lock(&self.agreed_markers).len()
    }

    /// Delete markers this node's store forgot (on any primary's request).
    pub fn tombstones_forgotten_here(&self) -> u64 {
        self.storage.read(|s| s.stats().tombstones_forgotten)
    }

    /// Hints held here, for operators.
    pub fn hints_pending(&self) -> u64 {
        self.hints
            .as_ref()
            .map_or(0, |h| h.read(|s| s.live_key_count(hints::HINT_NAMESPACE)))
    }

    /// Delete each hint its owner acknowledged, with the context of the copy that
    /// was delivered (a hint merged in meanwhile stays).
    async fn delete_delivered_hints(
        &self,
        hint_store: &Storage,
        held: &[(Bytes, SiblingSet, ReplicaItem)],
        acks: &[Result<(), RemoteError>],
    ) {
        let deletes: Vec<WriteOp> = held
            .iter()
            .zip(acks)
            .filter(|(_, ack)| ack.is_ok())
            .map(|((hk, stored, _), _)| {
                let mut op = WriteOp::delete(hints::HINT_NAMESPACE, hk.clone());
                op.covers = Covers::Context(stored.context.clone());
                op
            })
            .collect();
        let delivered = deletes.len() as u64;
        if delivered > 0 && hint_store.write(deletes).await.is_ok() {
            self.stats
                .hints_delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
    }

    /// Hand hints to their owners once they are live again: up to
    /// `HINTS_PER_DELIVERY_MAX` per owner per round, each deleted (with the
    /// context of the copy delivered) once the owner made it durable.
    async fn run_hint_delivery(self: Arc<Self>) {
        let Some(hint_store) = self.hints.clone() else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(self.config.hint_delivery_interval_ms)).await;
            let keys = hint_store.read(|s| {
                s.live_keys_in_slots(
                    hints::HINT_NAMESPACE,
                    0..=shoal_engine::slot::SLOT_COUNT - 1,
                )
            });
            // A hint goes to its owner; if the owner is no longer one of the
            // key's owners under the current map (it left, a join or a pin moved
            // the partition, even while that handoff still runs), to the key's
            // first live owner instead: a copy delivered to a node giving the
            // partition up would be dropped there, and the new owners may have
            // pulled from it before it arrived.
            let map = self.map();
            let mut per_owner: BTreeMap<NodeId, Vec<Bytes>> = BTreeMap::new();
            for hint in keys {
                let Some((owner, namespace, key)) = hints::parse_hint_key(&hint) else {
                    continue;
                };
                let partition = map.partition_of_key(namespace, &key);
                let target = if map.owners(partition).contains(&owner) {
                    owner
                } else {
                    match self.candidates(&map, namespace, &key).first() {
                        Some(node) => *node,
                        None => continue,
                    }
                };
                let batch = per_owner.entry(target).or_default();
                if batch.len() < hints::HINTS_PER_DELIVERY_MAX {
                    batch.push(hint);
                }
            }
            for (owner, hint_keys) in per_owner {
                if !self.is_live(owner) {
                    continue;
                }
                let held: Vec<(Bytes, SiblingSet, ReplicaItem)> = hint_store.read(|s| {
                    hint_keys
                        .iter()
                        .filter_map(|hk| {
                            let stored = s.get(hints::HINT_NAMESPACE, hk).ok()??;
                            let set = hints::decode_hint(stored.winner()?.value.as_ref()?)?;
                            let (_, namespace, key) = hints::parse_hint_key(hk)?;
                            Some((
                                hk.clone(),
                                stored,
                                ReplicaItem {
                                    namespace,
                                    key,
                                    set,
                                },
                            ))
                        })
                        .collect()
                });
                if held.is_empty() {
                    continue;
                }
                // One request's worth of bytes per owner per round.
                let mut held = held;
                let mut held_bytes = 0usize;
                let within = held
                    .iter()
                    .take_while(|(_, _, item)| {
                        let first = held_bytes == 0;
                        held_bytes += item.key.len() + item.set.size_bytes();
                        first || held_bytes <= self.config.repair_batch_bytes_max
                    })
                    .count();
                held.truncate(within);
                let items: Vec<ReplicaItem> = held.iter().map(|(_, _, i)| i.clone()).collect();
                if owner == self.me() {
                    // Re-routed to this node (its owner left the ring).
                    let acks = self.merge_locally(items).await;
                    self.delete_delivered_hints(&hint_store, &held, &acks).await;
                    continue;
                }
                let request = Request::Replicate {
                    sent_wall_ms: self.clock.wall_ms(),
                    ring_version: self.map().version(),
                    items,
                    hint_for: None,
                };
                let acks = match self
                    .call(owner, request, self.config.request_timeout_ms)
                    .await
                {
                    Ok(Response::Replicated(acks)) if acks.len() == held.len() => acks,
                    Ok(Response::Error(e)) if e.refusal == Refusal::StaleRing => {
                        self.sync_map_with(owner).await;
                        continue;
                    }
                    _ => continue,
                };
                self.delete_delivered_hints(&hint_store, &held, &acks).await;
            }
        }
    }

    /// Coordinate writes here: durable locally first, then to the other replicas;
    /// each answered after `w` durable copies.
    /// The local writes of `ops`, except those refused (which answer with the
    /// refusal), in order.
    async fn write_unrefused(
        &self,
        ops: Vec<WriteOp>,
        refusals: Vec<Option<RemoteError>>,
    ) -> Vec<Result<WriteOutcome, RemoteError>> {
        let n = ops.len();
        let to_write: Vec<WriteOp> = ops
            .into_iter()
            .zip(&refusals)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(op, _)| op)
            .collect();
        let mut written = match self.storage.write(to_write).await {
            Ok(results) => results.into_iter(),
            Err(_) => {
                return (0..n)
                    .map(|_| {
                        Err(RemoteError::new(
                            Refusal::OutcomeUnknown,
                            "storage has stopped",
                        ))
                    })
                    .collect()
            }
        };
        refusals
            .into_iter()
            .map(|refusal| match refusal {
                Some(e) => Err(e),
                None => match written.next() {
                    Some(result) => result.map_err(|e| remote_error(&e)),
                    None => Err(RemoteError::new(
                        Refusal::OutcomeUnknown,
                        "storage answered too few writes",
                    )),
                },
            })
            .collect()
    }

    pub async fn coordinate(self: &Arc<Self>, ops: Vec<WriteOp>) -> Vec<RoutedWrite> {
        let keys: Vec<(u8, Bytes)> = ops.iter().map(|o| (o.namespace, o.key.clone())).collect();
        let n = ops.len();
        self.stats
            .writes_coordinated
            .fetch_add(n as u64, Ordering::Relaxed);
        // The local copy is made under the ring the replicas are then chosen by,
        // once keys of partitions this node takes over are caught up.
        let (shared, map, refusals) = self.gate_for_minting(&keys).await;
        let local = self.write_unrefused(ops, refusals).await;
        drop(shared);
        let ring_version = map.version();
        let me = self.me();
        let mut results: Vec<RoutedWrite> = Vec::with_capacity(n);
        let mut rounds: Vec<Option<WriteRound>> = Vec::with_capacity(n);
        // Each applied write's copy for the replicas.
        let mut copies: Vec<Option<ReplicaItem>> = Vec::with_capacity(n);
        // (peer, the owner it keeps a hint for) -> the items it gets.
        let mut per_peer: BTreeMap<Target, Vec<(usize, ReplicaItem)>> = BTreeMap::new();
        for (i, result) in local.into_iter().enumerate() {
            match result {
                Ok(outcome) if outcome.applied => {
                    let (namespace, key) = keys[i].clone();
                    let targets = self.write_targets(&map, namespace, &key);
                    let mut round = WriteRound::new(
                        self.write_quorum(&map, namespace),
                        targets.iter().map(|(node, _)| *node),
                    );
                    round.ack(me);
                    for (peer, hint_for) in targets.iter().filter(|(p, _)| *p != me) {
                        per_peer.entry((*peer, *hint_for)).or_default().push((
                            i,
                            ReplicaItem {
                                namespace,
                                key: key.clone(),
                                set: outcome.set.clone(),
                            },
                        ));
                    }
                    copies.push(Some(ReplicaItem {
                        namespace,
                        key: key.clone(),
                        set: outcome.set.clone(),
                    }));
                    rounds.push(Some(round));
                    results.push(Ok(outcome));
                }
                Ok(outcome) => {
                    copies.push(None);
                    rounds.push(None);
                    results.push(Ok(outcome));
                }
                Err(e) => {
                    copies.push(None);
                    rounds.push(None);
                    results.push(Err(e));
                }
            }
        }
        let stale_peers = self
            .replicate_rounds(ring_version, per_peer, &mut rounds)
            .await;
        if let Some(peer) = stale_peers.first() {
            // A replica had a newer ring: learn it and send the copies that are
            // still short to the owners under that ring.
            self.sync_map_with(*peer).await;
            let newer = self.map();
            if newer.version() > ring_version {
                let mut per_peer: BTreeMap<Target, Vec<(usize, ReplicaItem)>> = BTreeMap::new();
                for (i, round) in rounds.iter_mut().enumerate() {
                    let (Some(old), Some(copy)) = (round.as_ref(), copies[i].as_ref()) else {
                        continue;
                    };
                    if old.state() == RoundState::Met {
                        continue;
                    }
                    let targets = self.write_targets(&newer, copy.namespace, &copy.key);
                    let mut retry = WriteRound::new(
                        self.write_quorum(&newer, copy.namespace),
                        targets.iter().map(|(node, _)| *node),
                    );
                    for node in old.acked() {
                        retry.ack(*node);
                    }
                    for (peer, hint_for) in &targets {
                        if !retry.acked().contains(peer) {
                            per_peer
                                .entry((*peer, *hint_for))
                                .or_default()
                                .push((i, copy.clone()));
                        }
                    }
                    *round = Some(retry);
                }
                self.stats.stale_ring_retries.fetch_add(
                    per_peer.values().map(Vec::len).sum::<usize>() as u64,
                    Ordering::Relaxed,
                );
                self.replicate_rounds(newer.version(), per_peer, &mut rounds)
                    .await;
            }
        }
        self.keep_own_copies(ring_version, &copies, &mut results)
            .await;
        for (result, round) in results.iter_mut().zip(&rounds) {
            let Some(round) = round else { continue };
            if round.state() != RoundState::Met {
                self.stats.quorum_failures.fetch_add(1, Ordering::Relaxed);
                let failures: Vec<String> = round
                    .failures()
                    .iter()
                    .map(|(node, why)| format!("node {node}: {why}"))
                    .collect();
                *result = Err(RemoteError::new(
                    Refusal::NoQuorum,
                    format!(
                        "write is durable on {} of the {} replicas required within {} ms ({}); it may still be applied: outcome unknown",
                        round.acked().len(),
                        round.needed(),
                        self.config.request_timeout_ms,
                        if failures.is_empty() { "no answer".to_string() } else { failures.join("; ") }
                    ),
                ));
            }
        }
        results
    }

    /// A ring adopted while this coordinator's writes were out may have made it an
    /// incoming owner of their partitions, and adopting it dropped its old copies
    /// there (`drop_residue`), the ones just written among them: write those
    /// again so that this node's acknowledgement still stands. One that cannot
    /// be written again is answered as an error.
    async fn keep_own_copies(
        &self,
        ring_version: u64,
        copies: &[Option<ReplicaItem>],
        results: &mut [RoutedWrite],
    ) {
        let map = self.map();
        if map.version() == ring_version {
            return;
        }
        let pending: BTreeSet<PartitionId> = map.incoming(self.me()).into_iter().collect();
        let again: Vec<(usize, ReplicaItem)> = copies
            .iter()
            .enumerate()
            .filter_map(|(i, copy)| Some((i, copy.as_ref()?)))
            .filter(|(_, copy)| pending.contains(&map.partition_of_key(copy.namespace, &copy.key)))
            .map(|(i, copy)| (i, copy.clone()))
            .collect();
        if again.is_empty() {
            return;
        }
        let _shared = self.gate.read().await;
        let (indexes, items): (Vec<usize>, Vec<ReplicaItem>) = again.into_iter().unzip();
        for (i, merged) in indexes.into_iter().zip(self.merge_locally(items).await) {
            if let Err(e) = merged {
                results[i] = Err(RemoteError::new(
                    Refusal::OutcomeUnknown,
                    format!("the coordinator's own copy could not be kept across a ring change ({}); outcome unknown", e.line()),
                ));
            }
        }
    }

    /// Send each peer its copies (as hints where it is a fallback) under
    /// `ring_version`, and record the answers in `rounds` until every round is
    /// decided, every peer answered or the request timeout passed. Returns the
    /// peers that refused because their ring was newer.
    async fn replicate_rounds(
        self: &Arc<Self>,
        ring_version: u64,
        per_peer: BTreeMap<Target, Vec<(usize, ReplicaItem)>>,
        rounds: &mut [Option<WriteRound>],
    ) -> Vec<NodeId> {
        let (done_tx, mut done_rx) = mpsc::channel(per_peer.len().max(1));
        let peer_count = per_peer.len();
        for ((peer, hint_for), items) in per_peer {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let (indexes, items): (Vec<usize>, Vec<ReplicaItem>) = items.into_iter().unzip();
                let timeout = cluster.config.request_timeout_ms;
                let observed = match (&cluster.config.hint_observer, hint_for) {
                    (Some(_), Some(_)) => items.clone(),
                    _ => Vec::new(),
                };
                let request = Request::Replicate {
                    sent_wall_ms: cluster.clock.wall_ms(),
                    ring_version,
                    items,
                    hint_for,
                };
                let answer = cluster.call(peer, request, timeout).await;
                if let Ok(Response::Error(e)) = &answer {
                    if e.refusal == Refusal::StaleRing {
                        let cluster = cluster.clone();
                        tokio::spawn(async move { cluster.sync_map_with(peer).await });
                    }
                }
                if let (Some(observer), Some(owner), Ok(Response::Replicated(acks))) =
                    (&cluster.config.hint_observer, hint_for, &answer)
                {
                    for (item, ack) in observed.iter().zip(acks) {
                        if ack.is_ok() {
                            (observer.0)(peer, owner, item);
                        }
                    }
                }
                let _ = done_tx.send((peer, indexes, answer)).await;
            });
        }
        drop(done_tx);
        let undecided = |rounds: &[Option<WriteRound>]| {
            rounds
                .iter()
                .flatten()
                .any(|r| r.state() == RoundState::Pending)
        };
        let deadline = Duration::from_millis(self.config.request_timeout_ms + 50);
        let mut stale_peers: Vec<NodeId> = Vec::new();
        let _ = tokio::time::timeout(deadline, async {
            let mut answered = 0;
            while undecided(rounds) && answered < peer_count {
                let Some((peer, indexes, answer)) = done_rx.recv().await else {
                    break;
                };
                answered += 1;
                match answer {
                    Ok(Response::Replicated(acks)) if acks.len() == indexes.len() => {
                        for (i, ack) in indexes.iter().zip(acks) {
                            let round = rounds[*i].as_mut().expect("replicated ops have rounds");
                            match ack {
                                Ok(()) => round.ack(peer),
                                Err(e) => round.fail(peer, e.line()),
                            };
                        }
                    }
                    other => {
                        if let Ok(Response::Error(e)) = &other {
                            if e.refusal == Refusal::StaleRing && !stale_peers.contains(&peer) {
                                stale_peers.push(peer);
                            }
                        }
                        let reason = match other {
                            Err(e) => e.to_string(),
                            Ok(r) => format!("unexpected answer {r:?}"),
                        };
                        for i in &indexes {
                            rounds[*i]
                                .as_mut()
                                .expect("replicated ops have rounds")
                                .fail(peer, reason.clone());
                        }
                    }
                }
            }
        })
        .await;
        stale_peers
    }

    /// Route writes to their coordinators (in parallel per coordinator) and return
    /// the results in order.
    pub async fn write(self: &Arc<Self>, ops: Vec<WriteOp>) -> Vec<RoutedWrite> {
        let n = ops.len();
        let map = self.map();
        let mut groups: BTreeMap<Vec<NodeId>, Vec<(usize, WriteOp)>> = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            groups
                .entry(self.candidates(&map, op.namespace, &op.key))
                .or_default()
                .push((i, op));
        }
        let (done_tx, mut done_rx) = mpsc::channel(groups.len().max(1));
        for (candidates, group) in groups {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let (indexes, ops): (Vec<usize>, Vec<WriteOp>) = group.into_iter().unzip();
                let results = cluster.write_group(&candidates, ops).await;
                let _ = done_tx.send((indexes, results)).await;
            });
        }
        drop(done_tx);
        let mut results: Vec<Option<RoutedWrite>> = (0..n).map(|_| None).collect();
        while let Some((indexes, group_results)) = done_rx.recv().await {
            for (i, r) in indexes.into_iter().zip(group_results) {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(RemoteError::new(
                        Refusal::OutcomeUnknown,
                        "write task ended without an answer; outcome unknown",
                    ))
                })
            })
            .collect()
    }

    async fn write_group(
        self: &Arc<Self>,
        candidates: &[NodeId],
        ops: Vec<WriteOp>,
    ) -> Vec<RoutedWrite> {
        let n = ops.len();
        let mut last_error = String::from("no replica of this key is a member");
        for candidate in candidates {
            if *candidate == self.me() {
                return self.coordinate(ops).await;
            }
            let writes: Vec<ClientWrite> = ops.iter().map(write_to_wire).collect();
            // The coordinator waits up to a request timeout for its replicas.
            let timeout = self.config.request_timeout_ms * 2 + 100;
            self.stats
                .writes_proxied
                .fetch_add(n as u64, Ordering::Relaxed);
            match self
                .call(
                    *candidate,
                    Request::Coordinate {
                        sent_wall_ms: self.clock.wall_ms(),
                        writes,
                    },
                    timeout,
                )
                .await
            {
                Ok(Response::Coordinated(results)) if results.len() == n => {
                    return results
                        .into_iter()
                        .map(|r| r.map(outcome_from_wire))
                        .collect()
                }
                Ok(Response::Error(e)) => return (0..n).map(|_| Err(e.clone())).collect(),
                Ok(other) => {
                    let e = RemoteError::new(
                        Refusal::OutcomeUnknown,
                        format!(
                            "node {candidate} answered a write with {other:?}; outcome unknown"
                        ),
                    );
                    return (0..n).map(|_| Err(e.clone())).collect();
                }
                // Never sent: the next candidate may coordinate instead.
                Err(CallError::Connect(e)) => last_error = format!("node {candidate}: {e}"),
                Err(e) => {
                    let e = unknown_outcome(&format!("coordinator node {candidate}"), &e);
                    return (0..n).map(|_| Err(e.clone())).collect();
                }
            }
        }
        let e = RemoteError::new(
            Refusal::ClusterDown,
            format!("no replica of this key's partition is reachable ({last_error}); the write was not made"),
        );
        (0..n).map(|_| Err(e.clone())).collect()
    }

    // ---- quorum reads with read repair ----

    /// Read keys from their replicas: each answered once `r` replied, with the merge
    /// of the replies; replicas that were behind get the merge written back.
    pub async fn read(self: &Arc<Self>, namespace: u8, keys: Vec<Bytes>) -> Vec<RoutedRead> {
        let me = self.me();
        self.stats
            .reads_coordinated
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let key_count = keys.len();
        let map = self.map();
        let r = self.read_quorum(&map, namespace);
        // The old owners are read with the old placement's quorum (before a pin:
        // the configured one).
        let previous_r = map
            .previous_placement()
            .map_or(r, |p| self.quorums_in(p, namespace).0);
        // Per key: the fallbacks standing in for owners held down (sloppy quorum,
        // outside a handoff), each with the owner whose hints it answers with.
        let mut stand_ins: Vec<BTreeMap<NodeId, NodeId>> = Vec::with_capacity(keys.len());
        let mut rounds: Vec<ReadRound> = keys
            .iter()
            .map(|key| {
                let partition = map.partition_of_key(namespace, key);
                let owners = map.owners(partition).iter().copied();
                match map.previous_owners(partition) {
                    Some(previous) => {
                        stand_ins.push(BTreeMap::new());
                        ReadRound::joint(r, owners, previous_r, previous.iter().copied())
                    }
                    None => {
                        let targets = self.targets(&map, partition);
                        stand_ins.push(
                            targets
                                .iter()
                                .filter_map(|(node, owner)| owner.map(|o| (*node, o)))
                                .collect(),
                        );
                        ReadRound::new(r, targets.into_iter().map(|(node, _)| node))
                    }
                }
            })
            .collect();
        let hinted_reads = stand_ins.iter().filter(|s| !s.is_empty()).count();
        self.stats
            .reads_from_fallbacks
            .fetch_add(hinted_reads as u64, Ordering::Relaxed);
        let mut per_peer: BTreeMap<Target, Vec<usize>> = BTreeMap::new();
        let local_keys: Vec<usize> = (0..keys.len())
            .filter(|i| rounds[*i].targets().contains(&me) && !stand_ins[*i].contains_key(&me))
            .collect();
        let local_sets = self.read_locally(
            namespace,
            &local_keys
                .iter()
                .map(|i| keys[*i].clone())
                .collect::<Vec<_>>(),
        );
        let mut local = local_keys.into_iter().zip(local_sets).peekable();
        for (i, round) in rounds.iter_mut().enumerate() {
            if local.peek().is_some_and(|(j, _)| *j == i) {
                match local.next().expect("peeked").1 {
                    Ok(set) => round.reply(me, set),
                    Err(_) => round.fail(me),
                };
            }
            if let Some(owner) = stand_ins[i].get(&me) {
                // This node stands in for a down owner: its hint is the reply.
                match self.read_hints(*owner, namespace, &keys[i..=i]).remove(0) {
                    Ok(set) => round.reply(me, set),
                    Err(_) => round.fail(me),
                };
            }
            for peer in round.targets().iter().filter(|p| **p != me) {
                let stand_in_for = stand_ins[i].get(peer).copied();
                per_peer.entry((*peer, stand_in_for)).or_default().push(i);
            }
        }
        let (done_tx, done_rx) = mpsc::channel(per_peer.len().max(1));
        let peer_count = per_peer.len();
        for ((peer, stand_in_for), indexes) in per_peer {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            let peer_keys: Vec<Bytes> = indexes.iter().map(|i| keys[*i].clone()).collect();
            tokio::spawn(async move {
                let timeout = cluster.config.request_timeout_ms;
                let request = match stand_in_for {
                    Some(owner) => Request::ReadHints {
                        owner,
                        namespace,
                        keys: peer_keys,
                    },
                    None => Request::Read {
                        namespace,
                        keys: peer_keys,
                    },
                };
                let answer = cluster.call(peer, request, timeout).await;
                let _ = done_tx.send((peer, indexes, answer)).await;
            });
        }
        drop(done_tx);
        let (decided_tx, decided_rx) = oneshot::channel();
        let cluster = self.clone();
        tokio::spawn(async move {
            cluster
                .gather_read(namespace, keys, rounds, (peer_count, done_rx), decided_tx)
                .await
        });
        let Ok(rounds) = decided_rx.await else {
            return (0..key_count)
                .map(|_| {
                    Err(RemoteError::new(
                        Refusal::Invalid,
                        "the read's task ended without an answer",
                    ))
                })
                .collect();
        };
        rounds
            .iter()
            .map(|round| match round.state() {
                RoundState::Met => Ok(round.merged()),
                _ => Err(RemoteError::new(
                    Refusal::NoQuorum,
                    format!(
                        "read reached {} of the {} replicas required within {} ms",
                        round.replied(),
                        r,
                        self.config.request_timeout_ms
                    ),
                )),
            })
            .collect()
    }

    /// A read's replies as they come, until every key's round is decided or the
    /// deadline passes. Blocking read repair: the merge goes back to every
    /// replier that was behind before the client sees it, so whatever this read
    /// returns is on the `r` repliers it counts and any later read quorum meets
    /// one of them (monotonic reads). A replier whose write-back failed stops
    /// counting (`ReadRound::unrepaired`): the round waits for another replier
    /// or fails. Counting it let a read answer a write held by one node while a
    /// replica with failing fsyncs kept its older copy, and the next read, from
    /// that replica and another one behind, went back in time (cluster seed
    /// 20030511). Costs a round trip only when a replica differs. The answer
    /// goes to `decided`; late repliers are repaired after.
    async fn gather_read(
        self: Arc<Self>,
        namespace: u8,
        keys: Vec<Bytes>,
        mut rounds: Vec<ReadRound>,
        (peer_count, mut done_rx): (usize, mpsc::Receiver<ReadAnswer>),
        decided: oneshot::Sender<Vec<ReadRound>>,
    ) {
        let mut decided = Some(decided);
        // What repair wrote back, confirmed: (key index, node, set).
        let mut repaired: Vec<(usize, NodeId, SiblingSet)> = Vec::new();
        let all_decided =
            |rounds: &[ReadRound]| rounds.iter().all(|r| r.state() != RoundState::Pending);
        let deadline = Duration::from_millis(self.config.request_timeout_ms + 50);
        let _ = tokio::time::timeout(deadline, async {
            let mut answered = 0;
            loop {
                if decided.is_some() && all_decided(&rounds) {
                    repaired = self.repair(namespace, &keys, &rounds, &repaired).await;
                    self.uncount_unrepaired(namespace, &keys, &mut rounds, &repaired);
                    if all_decided(&rounds) {
                        if let Some(tx) = decided.take() {
                            let _ = tx.send(rounds.clone());
                        }
                    }
                }
                if answered == peer_count {
                    break;
                }
                let Some((peer, indexes, answer)) = done_rx.recv().await else {
                    break;
                };
                answered += 1;
                match answer {
                    Ok(Response::Sets(sets)) if sets.len() == indexes.len() => {
                        for (i, set) in indexes.iter().zip(sets) {
                            match set {
                                Ok(set) => rounds[*i].reply(peer, set),
                                Err(_) => rounds[*i].fail(peer),
                            };
                        }
                    }
                    _ => {
                        for i in &indexes {
                            rounds[*i].fail(peer);
                        }
                    }
                }
            }
        })
        .await;
        if let Some(tx) = decided.take() {
            // Cut off by the deadline: a write-back not confirmed does not count.
            self.uncount_unrepaired(namespace, &keys, &mut rounds, &repaired);
            let _ = tx.send(rounds.clone());
        }
        // Late repliers (and any whose merge changed since) are repaired too.
        self.repair(namespace, &keys, &rounds, &repaired).await;
    }

    /// Per key index: the repliers read repair writes the merge back to (behind
    /// it, holding the partition: a fallback that answered with its hint keeps
    /// no copy, its hint reaches the owner by hinted handoff), with the merge,
    /// leaving out what `done` says was written already.
    fn behind(
        &self,
        namespace: u8,
        keys: &[Bytes],
        rounds: &[ReadRound],
        done: &[(usize, NodeId, SiblingSet)],
    ) -> Vec<(usize, NodeId, SiblingSet)> {
        let map = self.map();
        let mut behind = Vec::new();
        for (i, (key, round)) in keys.iter().zip(rounds).enumerate() {
            let Some(merged) = round.merged() else {
                continue;
            };
            let partition = map.partition_of_key(namespace, key);
            for node in round.stale_repliers() {
                let written = done
                    .iter()
                    .any(|(j, n, set)| *j == i && *n == node && *set == merged);
                if map.holds(node, partition) && !written {
                    behind.push((i, node, merged.clone()));
                }
            }
        }
        behind
    }

    /// Every replier still behind after read repair stops counting.
    fn uncount_unrepaired(
        &self,
        namespace: u8,
        keys: &[Bytes],
        rounds: &mut [ReadRound],
        done: &[(usize, NodeId, SiblingSet)],
    ) {
        for (i, node, _) in self.behind(namespace, keys, rounds, done) {
            rounds[i].unrepaired(node);
        }
    }

    /// Read repair: write each key's merge back to the replicas that were behind
    /// (all nodes at once), skipping what `done` says was written already.
    /// Returns what is now confirmed written, with `done`: (key index, node, set).
    async fn repair(
        self: &Arc<Self>,
        namespace: u8,
        keys: &[Bytes],
        rounds: &[ReadRound],
        done: &[(usize, NodeId, SiblingSet)],
    ) -> Vec<(usize, NodeId, SiblingSet)> {
        let mut written = done.to_vec();
        let mut per_node: BTreeMap<NodeId, Vec<(usize, SiblingSet)>> = BTreeMap::new();
        for (i, node, merged) in self.behind(namespace, keys, rounds, done) {
            per_node.entry(node).or_default().push((i, merged));
        }
        let mut writes = Vec::new();
        for (node, entries) in per_node {
            self.stats
                .read_repairs
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let items = entries
                .iter()
                .map(|(i, set)| ReplicaItem {
                    namespace,
                    key: keys[*i].clone(),
                    set: set.clone(),
                })
                .collect();
            let cluster = self.clone();
            writes.push(tokio::spawn(async move {
                (node, entries, cluster.write_back(node, items).await)
            }));
        }
        for write in writes {
            let Ok((node, entries, confirmed)) = write.await else {
                continue;
            };
            for ((i, set), ok) in entries.into_iter().zip(confirmed) {
                if ok {
                    written.push((i, node, set));
                }
            }
        }
        written
    }

    /// One node's read repair: whether each item is now durable there.
    async fn write_back(self: &Arc<Self>, node: NodeId, items: Vec<ReplicaItem>) -> Vec<bool> {
        let n = items.len();
        if node == self.me() {
            let merged = self.merge_locally(items).await;
            return merged.iter().map(Result::is_ok).collect();
        }
        let request = Request::Replicate {
            sent_wall_ms: self.clock.wall_ms(),
            ring_version: self.map().version(),
            items,
            hint_for: None,
        };
        match self
            .call(node, request, self.config.request_timeout_ms)
            .await
        {
            Ok(Response::Replicated(acks)) if acks.len() == n => {
                acks.iter().map(Result::is_ok).collect()
            }
            _ => vec![false; n],
        }
    }

    // ---- keyspace commands ----

    /// Live keys of a namespace within `slots`, gathered from every member. A key
    /// every answering owner lists (at least `r` of them) counts; a key only some
    /// list (a replica behind on a write or a delete) is settled by a quorum read.
    /// Errors (`PARTIAL`) when some partition in the range had no replica answer,
    /// or a disputed key could not be read.
    pub async fn keys(
        self: &Arc<Self>,
        namespace: u8,
        slots: std::ops::RangeInclusive<u16>,
    ) -> Result<Vec<Bytes>, RemoteError> {
        let (first_slot, last_slot) = (*slots.start(), *slots.end());
        let mut listed: BTreeMap<NodeId, BTreeSet<Bytes>> = BTreeMap::new();
        listed.insert(
            self.me(),
            self.storage
                .read(|s| s.live_keys_in_slots(namespace, slots.clone()))
                .into_iter()
                .collect(),
        );
        let map = self.map();
        let peers: Vec<NodeId> = map
            .nodes()
            .into_iter()
            .filter(|n| *n != self.me())
            .collect();
        let (done_tx, mut done_rx) = mpsc::channel(peers.len().max(1));
        for peer in peers {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let request = Request::Keys {
                    namespace,
                    first_slot,
                    last_slot,
                };
                let answer = cluster
                    .call(peer, request, cluster.config.request_timeout_ms)
                    .await;
                let _ = done_tx.send((peer, answer)).await;
            });
        }
        drop(done_tx);
        while let Some((peer, answer)) = done_rx.recv().await {
            if let Ok(Response::Keys(found)) = answer {
                listed.insert(peer, found.into_iter().collect());
            }
        }
        let answered: BTreeSet<NodeId> = listed.keys().copied().collect();
        // Map partitions of one namespace are numbered contiguously.
        let first_partition = map.partition_of_slot(namespace, first_slot);
        let last_partition = map.partition_of_slot(namespace, last_slot);
        // A partition counts once a node that holds all of it answered: during a
        // handoff, an old owner (the incoming ones may still be pulling).
        let unreachable: Vec<PartitionId> = (first_partition..=last_partition)
            .filter(|p| {
                !map.previous_owners(*p)
                    .unwrap_or_else(|| map.owners(*p))
                    .iter()
                    .any(|n| answered.contains(n))
            })
            .collect();
        if !unreachable.is_empty() {
            return Err(RemoteError::new(
                Refusal::Partial,
                format!(
                    "{} partition(s) had no reachable replica (first: {}); the result would be incomplete",
                    unreachable.len(),
                    unreachable[0]
                ),
            ));
        }
        let r = usize::from(self.read_quorum(&map, namespace));
        let union: BTreeSet<&Bytes> = listed.values().flatten().collect();
        let mut keys: Vec<Bytes> = Vec::with_capacity(union.len());
        let mut disputed: Vec<Bytes> = Vec::new();
        for key in union {
            let owners = map.owners(map.partition_of_key(namespace, key));
            let answering: Vec<&BTreeSet<Bytes>> =
                owners.iter().filter_map(|o| listed.get(o)).collect();
            if answering.len() >= r && answering.iter().all(|l| l.contains(key)) {
                keys.push(key.clone());
            } else {
                disputed.push(key.clone());
            }
        }
        for chunk in disputed.chunks(ITEMS_PER_REQUEST_MAX) {
            let reads = self.read(namespace, chunk.to_vec()).await;
            for (key, read) in chunk.iter().zip(reads) {
                match read {
                    Ok(Some(set)) if !set.is_deleted() => keys.push(key.clone()),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(RemoteError::new(
                            Refusal::Partial,
                            format!("key {key:?} is listed by some replicas only and could not be read ({}); the result would be incomplete", e.line()),
                        ))
                    }
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    // ---- background work ----

    async fn run_detector(self: Arc<Self>) {
        let interval_ms = (self.config.detector.probe_interval_ms / 2).max(10);
        loop {
            let events = lock(&self.detector).tick(self.now_ms());
            for event in events {
                match event {
                    DetectorEvent::Probe(node) => {
                        let cluster = self.clone();
                        tokio::spawn(async move { cluster.ping(node).await });
                    }
                    DetectorEvent::ProbeIndirect { target, via } => {
                        for helper in via {
                            let cluster = self.clone();
                            tokio::spawn(async move {
                                // The helper's own ping may take its full timeout.
                                let timeout = cluster.config.detector.probe_interval_ms * 3;
                                let ask = Request::PingReq { target };
                                if let Ok(Response::Vouch {
                                    answered: Some(incarnation),
                                }) = cluster.call(helper, ask, timeout).await
                                {
                                    cluster
                                        .stats
                                        .indirect_vouches
                                        .fetch_add(1, Ordering::Relaxed);
                                    let now = cluster.now_ms();
                                    let changed = lock(&cluster.detector).heard_indirectly(
                                        target,
                                        incarnation,
                                        now,
                                    );
                                    if let Some(DetectorEvent::Changed { node, from, to }) = changed
                                    {
                                        tracing::info!(
                                            "node {node}: {} -> {} (node {helper} reaches it)",
                                            from.as_str(),
                                            to.as_str()
                                        );
                                    }
                                }
                            });
                        }
                    }
                    DetectorEvent::Changed { node, from, to } => {
                        tracing::info!("node {node}: {} -> {}", from.as_str(), to.as_str());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
    }

    async fn run_anti_entropy(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(self.config.anti_entropy_interval_ms)).await;
            // A restoring node also compares with owners that left the ring
            // and still hold copies (`restored_from`).
            let map = self.map();
            let peers = if self.restoring.load(Ordering::Acquire) {
                map.holders()
            } else {
                map.ring().members().clone()
            };
            for peer in peers.into_iter().filter(|p| *p != self.me()) {
                if !self.is_live(peer) {
                    continue;
                }
                if let Err(e) = self.anti_entropy_with(peer).await {
                    tracing::debug!("anti-entropy with node {peer} stopped: {e}");
                }
            }
            self.stats
                .anti_entropy_rounds
                .fetch_add(1, Ordering::Relaxed);
            self.collect_markers().await;
            self.drop_unowned_copies().await;
        }
    }

    /// Forget copies of partitions this node no longer owns, once the ring is
    /// settled: every node that gained them has pulled them whole, so nothing
    /// needs them here (and a stale copy would hold back marker collection).
    /// At most `anti_entropy_keys_per_round_max` keys per round, under the
    /// gate, so a ring change that hands a partition back waits for it.
    async fn drop_unowned_copies(self: &Arc<Self>) {
        let settled = |map: &ClusterMap| {
            map.partitions_in_transition() == 0 || cfg!(feature = "bug-drop-before-handoff")
        };
        let map = self.map();
        if !settled(&map) {
            return;
        }
        let me = self.me();
        let budget = self.config.anti_entropy_keys_per_round_max;
        let unowned = map
            .partitions()
            .into_iter()
            .filter(|p| !map.owners(*p).contains(&me))
            .map(|p| {
                // Planted bug: a default-ring partition's copies are dropped in
                // every namespace, pinned ones included.
                let namespaces = if cfg!(feature = "bug-pin-drop-ignores-namespace") {
                    Namespaces::AllBut(BTreeSet::new())
                } else {
                    map.namespaces(p)
                };
                (p, namespaces)
            });
        let keys = self
            .storage
            .read(|s| partition_keys(s, &map, unowned, budget));
        if keys.is_empty() {
            return;
        }
        let _shared = self.gate.read().await;
        let now = self.map();
        if now.version() != map.version() || !settled(&now) {
            return;
        }
        let ops = keys
            .into_iter()
            .map(|(namespace, key)| WriteOp::drop_copy(namespace, key))
            .collect();
        let dropped = self.write_counting_applied(ops).await;
        self.stats
            .copies_dropped
            .fetch_add(dropped, Ordering::Relaxed);
    }

    /// One round of delete-marker collection (`tombstones` has the protocol):
    /// forget the agreed markers that have settled, then propose new ones from
    /// the partitions this node is the primary of. Runs only while the ring is
    /// settled and every member answers.
    async fn collect_markers(self: &Arc<Self>) {
        let map = self.map();
        let me = self.me();
        lock(&self.agreed_markers).keep_ring(map.version());
        if map.partitions_in_transition() > 0 || !self.ready.load(Ordering::Acquire) {
            return;
        }
        let members: Vec<NodeId> = map.ring().members().iter().copied().collect();
        let bugged = cfg!(feature = "bug-forget-without-agreement");
        if !bugged && members.iter().any(|m| *m != me && !self.is_live(*m)) {
            return;
        }
        let timeout = self.config.request_timeout_ms;
        // Every member's clock must have been measured: the wait covers skew.
        let skew_max_ms = match self.clock_skew_max_ms(&members) {
            Some(skew_max_ms) => skew_max_ms,
            None if bugged => 0,
            None => return,
        };
        let settle_ms = if bugged {
            0
        } else {
            tombstones::settle_with_skew_ms(
                timeout,
                self.config.replica_write_age_max_ms,
                skew_max_ms,
            )
        };
        let due = lock(&self.agreed_markers).take_due(
            self.now_ms(),
            settle_ms,
            tombstones::PROPOSALS_PER_ROUND_MAX,
        );
        if !due.is_empty() {
            self.forget_everywhere(&map, &members, due).await;
        }
        let proposals = self.marker_proposals(&map);
        if proposals.is_empty() {
            return;
        }
        self.stats
            .markers_proposed
            .fetch_add(proposals.len() as u64, Ordering::Relaxed);
        let mut agreed = self.marker_verdicts(&map, &proposals);
        if bugged {
            // Planted bug: a marker goes once this node holds it, whatever the
            // other replicas hold.
            agreed.iter_mut().for_each(|a| *a = true);
        }
        for peer in members.iter().copied().filter(|m| *m != me && !bugged) {
            let request = Request::MarkerVerdicts {
                ring_version: map.version(),
                items: proposals.clone(),
            };
            match self.call(peer, request, timeout).await {
                Ok(Response::Verdicts(v)) if v.len() == agreed.len() => {
                    agreed.iter_mut().zip(v).for_each(|(a, b)| *a &= b);
                }
                _ => return,
            }
        }
        let now = self.now_ms();
        let mut held = lock(&self.agreed_markers);
        if held.ring_version_is(map.version()) {
            for (item, ok) in proposals.into_iter().zip(agreed) {
                if ok {
                    self.stats.markers_agreed.fetch_add(1, Ordering::Relaxed);
                    held.insert(item, now);
                }
            }
        }
    }

    /// Markers to propose: from partitions this node is the first owner of,
    /// round-robin from where the last round stopped, older than the grace, not
    /// already agreed.
    fn marker_proposals(&self, map: &ClusterMap) -> Vec<MarkerItem> {
        let me = self.me();
        let partitions: Vec<PartitionId> = map
            .partitions()
            .into_iter()
            .filter(|p| map.owners(*p).first() == Some(&me))
            .collect();
        if partitions.is_empty() {
            return Vec::new();
        }
        let room = lock(&self.agreed_markers).room();
        let budget = tombstones::PROPOSALS_PER_ROUND_MAX.min(room);
        let grace_ms = if cfg!(feature = "bug-forget-without-agreement") {
            0
        } else {
            self.config.tombstone_grace_ms
        };
        let before = shoal_engine::Hlc::at_wall_ms(self.clock.wall_ms().saturating_sub(grace_ms));
        let start = self.marker_cursor.load(Ordering::Relaxed) as usize;
        let mut proposals = Vec::new();
        let mut reads_left = tombstones::MARKER_READS_PER_ROUND_MAX;
        for i in 0..partitions.len() {
            if proposals.len() >= budget || reads_left == 0 {
                break;
            }
            let partition = partitions[(start + i) % partitions.len()];
            self.marker_cursor.store(
                ((start + i + 1) % partitions.len()) as u64,
                Ordering::Relaxed,
            );
            let namespaces = map.namespaces(partition);
            let found = self.storage.read(|s| {
                let agreed = lock(&self.agreed_markers);
                s.delete_markers_in_slots(
                    map.slot_range(partition),
                    before,
                    budget - proposals.len(),
                    &mut reads_left,
                    |namespace, key| {
                        !namespaces.contains(namespace) || agreed.contains(namespace, key)
                    },
                )
            });
            proposals.extend(
                found
                    .into_iter()
                    .map(|(namespace, key, set_hash)| MarkerItem {
                        namespace,
                        key,
                        set_hash,
                    }),
            );
        }
        proposals
    }

    /// Ask every member (this node last) to forget settled agreed markers.
    async fn forget_everywhere(
        self: &Arc<Self>,
        map: &ClusterMap,
        members: &[NodeId],
        items: Vec<MarkerItem>,
    ) {
        let me = self.me();
        for peer in members.iter().copied().filter(|m| *m != me) {
            let request = Request::ForgetMarkers {
                ring_version: map.version(),
                sent_wall_ms: self.clock.wall_ms(),
                items: items.clone(),
            };
            if let Ok(Response::Forgot(n)) = self
                .call(peer, request, self.config.request_timeout_ms)
                .await
            {
                self.stats.markers_forgotten.fetch_add(n, Ordering::Relaxed);
            }
        }
        let _shared = self.gate.read().await;
        if self.unsettled(map.version()).is_none() {
            let n = self.forget_markers(items).await;
            self.stats.markers_forgotten.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Pull every partition this node is an incoming owner of from enough of its
    /// old owners, then report it done; the report spreads by gossip, and once
    /// every incoming owner has reported, the old ring is dropped everywhere.
    async fn run_handoff(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(self.config.handoff_interval_ms)).await;
            let map = self.map();
            let incoming = map.incoming(self.me());
            if incoming.is_empty() {
                continue;
            }
            // Partitions are pulled several at a time (most of a pull is waiting
            // on the network), and their done reports go out in one map change.
            let permits = Arc::new(tokio::sync::Semaphore::new(
                HANDOFF_PARTITIONS_IN_FLIGHT_MAX,
            ));
            let mut pulls = Vec::with_capacity(incoming.len());
            for partition in incoming {
                let cluster = self.clone();
                let map = map.clone();
                let permits = permits.clone();
                pulls.push(tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await.ok()?;
                    if cluster.map().version() != map.version() {
                        return None;
                    }
                    match cluster.pull_partition(&map, partition).await {
                        Ok(()) => Some(partition),
                        Err(e) => {
                            tracing::debug!("handoff of partition {partition} not finished: {e}");
                            None
                        }
                    }
                }));
            }
            let mut pulled = Vec::new();
            for pull in pulls {
                if let Ok(Some(partition)) = pull.await {
                    pulled.push(partition);
                }
            }
            *lock(&self.handoff_now) = None;
            let mut done = (*self.map()).clone();
            if pulled.is_empty() || done.version() != map.version() {
                continue;
            }
            for partition in &pulled {
                done.mark_done(*partition, self.me());
            }
            if self.adopt(&done).await {
                self.stats
                    .handoff_partitions_done
                    .fetch_add(pulled.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Pull `partition` whole from `sources_needed` of its old owners (live ones
    /// first).
    async fn pull_partition(
        self: &Arc<Self>,
        map: &ClusterMap,
        partition: PartitionId,
    ) -> Result<(), String> {
        let old_write_quorum = self.old_write_quorum(map, partition);
        // An old owner that stays (a pin's) counts itself as one source.
        let stays = map.was_owner(partition, self.me());
        let needed = map
            .sources_needed(partition, old_write_quorum)
            .saturating_sub(usize::from(stays));
        let mut sources = map.handoff_sources(partition, self.me());
        sources.sort_by_key(|n| !self.is_live(*n));
        let mut pulled = 0;
        let mut errors = Vec::new();
        for source in sources {
            if pulled == needed {
                break;
            }
            match self.pull_from(map, partition, source).await {
                Ok(()) => pulled += 1,
                Err(e) => errors.push(format!("node {source}: {e}")),
            }
        }
        if pulled >= needed {
            Ok(())
        } else {
            Err(format!(
                "pulled from {pulled} of the {needed} old owners needed ({})",
                errors.join("; ")
            ))
        }
    }

    /// Every key of `partition` that `source` holds, merged here durably.
    async fn pull_from(
        self: &Arc<Self>,
        map: &ClusterMap,
        partition: PartitionId,
        source: NodeId,
    ) -> Result<(), String> {
        let slots = map.slot_range(partition);
        let namespaces = map.namespaces(partition);
        let mut progress = HandoffProgress {
            ring_version: map.version(),
            partition,
            source,
            keys_pulled: 0,
        };
        *lock(&self.handoff_now) = Some(progress.clone());
        let mut after: Option<HandoffCursor> = None;
        let mut map_pushes = 0;
        loop {
            let request = Request::HandoffScan {
                ring_version: map.version(),
                first_slot: *slots.start(),
                last_slot: *slots.end(),
                namespaces: namespaces.clone(),
                after: after.clone(),
            };
            match self
                .call(source, request, self.config.request_timeout_ms)
                .await
            {
                Ok(Response::HandoffItems { items, next }) => {
                    let n = items.len() as u64;
                    if n > 0 {
                        let results = self.merge_locally(items).await;
                        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                            return Err(format!("merging here failed: {}", e.line()));
                        }
                        self.stats
                            .handoff_keys_pulled
                            .fetch_add(n, Ordering::Relaxed);
                        progress.keys_pulled += n;
                        *lock(&self.handoff_now) = Some(progress.clone());
                    }
                    match next {
                        Some(cursor) => after = Some(cursor),
                        None => return Ok(()),
                    }
                }
                // The source must know the new ring before it scans: tell it.
                Ok(Response::Error(e)) if e.refusal == Refusal::MapBehind && map_pushes < 3 => {
                    map_pushes += 1;
                    self.sync_map_with(source).await;
                }
                Ok(Response::Error(e)) => return Err(e.line()),
                Ok(other) => return Err(format!("unexpected answer {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The partitions an exchange with `peer` compares: those both own. While
    /// restoring, also those both hold in either placement of a transition:
    /// this node is an old owner, and so a handoff source once it stops
    /// restoring, of partitions whose other copies may be only on a peer that
    /// no longer owns them (an outgoing owner, which keeps them until the ring
    /// settles). Comparing owned partitions alone let a node finish restoring,
    /// and serve a scan, without a write whose only other copy was on such a
    /// peer (the cluster sim found it: an old owner down while the ring
    /// changed).
    fn shared_partitions(&self, map: &ClusterMap, peer: NodeId) -> Vec<PartitionId> {
        let me = self.me();
        let restoring = self.restoring.load(Ordering::Acquire);
        map.partitions()
            .into_iter()
            .filter(|p| {
                let list = map.owners(*p);
                (list.contains(&me) && list.contains(&peer))
                    || (restoring && map.holds(me, *p) && map.holds(peer, *p))
            })
            .collect()
    }

    /// One exchange with one peer over every partition both hold: compare
    /// partition digests, then, one differing partition at a time, slot digests,
    /// key hashes of the slots that differ, and push our copies of the
    /// differing keys and pull theirs (each side merges, so the order does not
    /// matter), until the round's budgets (`anti_entropy_keys_per_round_max`
    /// keys, `anti_entropy_bytes_per_round_max` bytes) are spent. A partition is
    /// compared only when the round can still move its keys: comparing every
    /// differing partition first cost a round trip per differing partition and
    /// slot however little the budget then moved, so a node restoring a lost
    /// disk of large values spent about 6 s per exchange to move 256 KB of 1.9
    /// MB and did not converge within 30 s (cluster seed 20028909).
    async fn anti_entropy_with(self: &Arc<Self>, peer: NodeId) -> Result<(), CallError> {
        let map = self.map();
        let shared = self.shared_partitions(&map, peer);
        let Some(differing) = self.differing_partitions(peer, &shared).await? else {
            return Ok(());
        };
        let mut keys_left = self.config.anti_entropy_keys_per_round_max;
        let mut bytes_left = self.config.anti_entropy_bytes_per_round_max;
        let mut found = 0;
        // Complete: every differing key of every shared partition was found, and
        // every one pulled and merged here.
        let mut complete = true;
        for partition in differing {
            if keys_left == 0 || bytes_left == 0 {
                complete = false;
                break;
            }
            let Some(keys) = self
                .differing_keys_of(peer, &map, partition, keys_left)
                .await?
            else {
                return Ok(());
            };
            // The key budget reached: more may differ than were found.
            complete &= keys.len() < keys_left;
            keys_left -= keys.len();
            found += keys.len();
            complete &= self
                .exchange_keys(peer, &map, keys, &mut bytes_left)
                .await?;
        }
        self.record_lag(peer, found);
        if complete {
            self.restored_from(peer, &map);
        }
        Ok(())
    }

    /// The partitions among `shared` whose digests differ between this node and
    /// `peer` (`None`: an unexpected answer).
    async fn differing_partitions(
        &self,
        peer: NodeId,
        shared: &[PartitionId],
    ) -> Result<Option<Vec<PartitionId>>, CallError> {
        let mut differing = Vec::new();
        for chunk in shared.chunks(ITEMS_PER_REQUEST_MAX) {
            let request = Request::PartitionDigests {
                partitions: chunk.to_vec(),
            };
            let theirs = match self
                .call(peer, request, self.config.request_timeout_ms)
                .await?
            {
                Response::PartitionDigests(d) if d.len() == chunk.len() => d,
                _ => return Ok(None),
            };
            let mine = self.partition_digests(chunk);
            differing.extend(
                chunk
                    .iter()
                    .zip(mine.iter().zip(&theirs))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(p, _)| *p),
            );
        }
        Ok(Some(differing))
    }

    /// The keys of `partition` whose copies differ between this node and `peer`,
    /// at most `budget` of them: slot digests, then key hashes of the slots that
    /// differ (`None`: an unexpected answer).
    async fn differing_keys_of(
        &self,
        peer: NodeId,
        map: &ClusterMap,
        partition: PartitionId,
        budget: usize,
    ) -> Result<Option<Vec<(u8, Bytes)>>, CallError> {
        let timeout = self.config.request_timeout_ms;
        let slots = map.slot_range(partition);
        let namespaces = map.namespaces(partition);
        let request = Request::SlotDigests {
            first_slot: *slots.start(),
            last_slot: *slots.end(),
        };
        let Response::SlotDigests(mut theirs) = self.call(peer, request, timeout).await? else {
            return Ok(None);
        };
        theirs.retain(|(_, namespace, _)| namespaces.contains(*namespace));
        let mine = self.storage.read(|s| {
            s.digests()
                .map(|d| {
                    let mut mine = d.slot_digests(slots.clone());
                    mine.retain(|(_, namespace, _)| namespaces.contains(*namespace));
                    mine
                })
                .unwrap_or_default()
        });
        let mut keys = Vec::new();
        for (slot, namespace) in differing_slots(&mine, &theirs) {
            let request = Request::SlotKeys { namespace, slot };
            let Response::SlotKeys(their_keys) = self.call(peer, request, timeout).await? else {
                return Ok(None);
            };
            let my_keys = self.storage.read(|s| {
                s.digests()
                    .map(|d| d.slot_keys(namespace, slot))
                    .unwrap_or_default()
            });
            for key in differing_keys(&my_keys, &their_keys) {
                keys.push((namespace, Bytes::from(key)));
                if keys.len() >= budget {
                    return Ok(Some(keys));
                }
            }
        }
        Ok(Some(keys))
    }

    /// Push our copies of `keys` to `peer` and pull and merge theirs, while
    /// `budget_bytes` lasts. True when every key's copy was pulled and merged.
    async fn exchange_keys(
        &self,
        peer: NodeId,
        map: &ClusterMap,
        keys: Vec<(u8, Bytes)>,
        budget_bytes: &mut usize,
    ) -> Result<bool, CallError> {
        let mut by_namespace: BTreeMap<u8, Vec<Bytes>> = BTreeMap::new();
        for (namespace, key) in keys {
            by_namespace.entry(namespace).or_default().push(key);
        }
        let mut pulled_everything = true;
        for (namespace, keys) in by_namespace {
            self.push_copies(peer, map, namespace, &keys, budget_bytes)
                .await?;
            pulled_everything &= self
                .pull_copies(peer, namespace, keys, budget_bytes)
                .await?;
        }
        Ok(pulled_everything)
    }

    /// Anti-entropy's push: our copies of `keys` to `peer`, in requests of at
    /// most `repair_batch_bytes_max`, while `budget_bytes` lasts (the first
    /// copy always goes, so a round moves any value size).
    async fn push_copies(
        &self,
        peer: NodeId,
        map: &ClusterMap,
        namespace: u8,
        keys: &[Bytes],
        budget_bytes: &mut usize,
    ) -> Result<(), CallError> {
        let mut items = replica_items(namespace, keys, self.read_locally(namespace, keys));
        let mut taken_bytes = 0usize;
        let within = items
            .iter()
            .take_while(|i| {
                let first = taken_bytes == 0;
                taken_bytes += i.key.len() + i.set.size_bytes();
                first || taken_bytes <= *budget_bytes
            })
            .count();
        let mut chunk_bytes_max = self.config.repair_batch_bytes_max;
        if cfg!(feature = "bug-repair-ignores-bytes") {
            // Planted bug: bounded by key count only, as before.
            chunk_bytes_max = usize::MAX;
        } else {
            items.truncate(within);
        }
        for chunk in chunk_by_bytes(items, chunk_bytes_max) {
            let (n, bytes) = (chunk.len(), items_bytes(&chunk));
            let request = Request::Replicate {
                sent_wall_ms: self.clock.wall_ms(),
                ring_version: map.version(),
                items: chunk,
                hint_for: None,
            };
            self.call(peer, request, self.config.request_timeout_ms)
                .await?;
            *budget_bytes = budget_bytes.saturating_sub(bytes);
            self.stats
                .anti_entropy_keys_pushed
                .fetch_add(n as u64, Ordering::Relaxed);
            self.stats
                .anti_entropy_bytes_pushed
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Anti-entropy's pull: `peer`'s copies of `keys`, a byte-bounded prefix
    /// per request (`ReadPrefix`), merged here, while `budget_bytes` lasts.
    /// True when every key's copy was read and merged.
    async fn pull_copies(
        &self,
        peer: NodeId,
        namespace: u8,
        mut keys: Vec<Bytes>,
        budget_bytes: &mut usize,
    ) -> Result<bool, CallError> {
        let mut complete = true;
        while !keys.is_empty() {
            if *budget_bytes == 0 {
                return Ok(false);
            }
            let mut bytes_max = self.config.repair_batch_bytes_max.min(*budget_bytes) as u64;
            if cfg!(feature = "bug-repair-ignores-bytes") {
                bytes_max = u64::MAX;
            }
            let request = Request::ReadPrefix {
                namespace,
                keys: keys.clone(),
                bytes_max,
            };
            let sets = match self
                .call(peer, request, self.config.request_timeout_ms)
                .await?
            {
                Response::Sets(sets) if (1..=keys.len()).contains(&sets.len()) => sets,
                _ => return Ok(false),
            };
            let answered: Vec<Bytes> = keys.drain(..sets.len()).collect();
            complete &= sets.iter().all(Result::is_ok);
            let items = replica_items(namespace, &answered, sets);
            let bytes = items_bytes(&items);
            *budget_bytes = budget_bytes.saturating_sub(bytes);
            self.stats
                .anti_entropy_keys_pulled
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            self.stats
                .anti_entropy_bytes_pulled
                .fetch_add(bytes as u64, Ordering::Relaxed);
            let merged = self.merge_locally(items).await;
            complete &= merged.iter().all(Result::is_ok);
        }
        Ok(complete)
    }

    /// While restoring ([`RESTORING_FILE`]): `peer`'s copies of every partition
    /// the two share are merged here. Once that holds for every other holder
    /// ([`ClusterMap::holders`]: the ring's members, and old owners whose
    /// handoffs still run), this node holds every write any of them
    /// acknowledged before, and stops restoring.
    ///
    /// An old owner that left the ring counts too. It may hold the only other
    /// copy of a write lost here, which reaches the new owners only through
    /// their pulls, of which this node, refusing scans, is no source: finishing
    /// without it let a node serve scans as complete while it lacked that write
    /// (a down node leaving, the cluster sim found). Waiting instead for the
    /// ring to settle deadlocked whenever the pulls needed this node as a
    /// source (cluster seed 20001454: the leaver down, two of three old owners
    /// restoring, each waiting on the other's scans).
    fn restored_from(&self, peer: NodeId, map: &ClusterMap) {
        if !self.restoring.load(Ordering::Acquire) {
            return;
        }
        // Exchanges count together only under one and the same map, done
        // reports included: a peer whose pull finished after this node's
        // exchange with it holds copies the exchange never saw, and its done
        // report is what changes the map (cluster seed 20000280: restored
        // from a new owner before its pull, then from the old one once the
        // ring had settled and no longer compared the partition; the next
        // change pulled from this node and missed a write).
        let fingerprint = map.fingerprint();
        if fingerprint != self.map_summary().1 {
            return; // the map moved on while the exchange ran
        }
        let mut guard = lock(&self.restored_from);
        let (under, done) = &mut *guard;
        if *under != fingerprint {
            *under = fingerprint;
            done.clear();
        }
        done.insert(peer);
        let me = self.me();
        let missing = map
            .holders()
            .iter()
            .filter(|n| **n != me && !done.contains(n))
            .count();
        if missing > 0 {
            return;
        }
        let removed = match self.dir.remove(RESTORING_FILE) {
            Ok(()) | Err(DiskError::NotFound(_)) => self.dir.sync_dir(),
            Err(e) => Err(e),
        }
        .and_then(|()| self.storage.with_store_mut(|s| s.cut_tail_made_good()));
        match removed {
            Ok(()) => {
                self.restoring.store(false, Ordering::Release);
                tracing::warn!(
                    "node {me}: restored from every other holder ({} of them); serving handoffs and marker collection again",
                    done.len()
                );
            }
            Err(e) => tracing::error!("cannot clear {RESTORING_FILE}: {e}"),
        }
    }

    /// This node's digest over every key it holds, and how many keys that is.
    /// Replicas holding the same partitions have equal digests once converged.
    pub fn local_digest(&self) -> (u64, usize) {
        self.storage.read(|s| {
            s.digests().map_or((0, 0), |d| {
                (
                    d.range_digest(0..=shoal_engine::slot::SLOT_COUNT - 1),
                    d.key_count(),
                )
            })
        })
    }
}
