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
//!
//! This file holds the driver's state (`Cluster`), its configuration and the
//! helpers every part uses; each part of the protocol is a child module with
//! its own `impl Cluster`: `start` (boot and incarnation check), `peers`
//! (connections, calls, probes, the detector loop), `serve` (admission and
//! answers to peer requests), `write` (coordination and replica rounds),
//! `read` (quorum reads, read repair, keyspace scans), `hinted` (hints kept
//! and delivered), `ring` (map gossip, adoption, ring changes), `handoff`,
//! `anti_entropy` (exchanges, restore, dropping unowned copies), `markers`
//! (delete-marker rounds), `status`, and `catch_up`, `hand_over`. They share
//! this file's imports (`use super::*`); moving a decision into the engine's
//! sans-IO machines is the next step (issue: one sans-IO cluster core).

use crate::peer::{self, PeerError, PeerReader, PeerWriter};
use crate::storage::Storage;
use bytes::Bytes;
use shoal_engine::cluster::admission::{self, RingCheck};
use shoal_engine::cluster::detector::{Detector, DetectorConfig, DetectorEvent, PeerState};
use shoal_engine::cluster::exchange::{self, Exchange};
use shoal_engine::cluster::hints;
use shoal_engine::cluster::listing::{self, Settled};
use shoal_engine::cluster::lives::{self as peer_lives, Lives};
use shoal_engine::cluster::map::{
    self as cluster_map, split_partition, ClusterMap, MapDiff, MapError, Namespaces, RingChange,
};
use shoal_engine::cluster::quorum::ReadRound;
use shoal_engine::cluster::reading::{KeyPlan, Reading};
use shoal_engine::cluster::restore::{RestoreProgress, RestoreStep};
use shoal_engine::cluster::tombstones::{self, Agreed, MarkerItem};
use shoal_engine::cluster::wire::{
    chunk_by_bytes, items_bytes, ClientOutcome, ClientWrite, Envelope, HandoffCursor, Refusal,
    RemoteError, ReplicaItem, Request, Response, WireModify, HANDOFF_BATCH_BYTES_MAX,
    HANDOFF_ITEMS_PER_BATCH_MAX, ITEMS_PER_REQUEST_MAX,
};
use shoal_engine::digest::{differing_keys, differing_slots};
use shoal_engine::disk::CheckedFileError;
use shoal_engine::placement::{PartitionId, Placement, Ring};
use shoal_engine::runtime::Runtime;
use shoal_engine::store::OpenError;
use shoal_engine::{
    Covers, Dot, Hlc, Modify, NodeId, Sibling, SiblingSet, WriteError, WriteOp, WriteOutcome,
};
use shoal_engine::{DiskDir, DiskError, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

mod anti_entropy;
mod catch_up;
mod client_wire;
mod damage;
mod expiry;
mod hand_over;
mod handoff;
mod hinted;
mod markers;
mod peers;
mod read;
mod refusals;
mod ring;
mod serve;
mod start;
mod start_error;
mod status;
mod write;

use client_wire::{
    outcome_from_wire, outcome_to_wire, replica_items, unknown_outcome, write_from_wire,
};
pub use client_wire::{remote_error, write_to_wire};
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
/// A member started with `cluster_clients` also serves Redis Cluster clients on
/// its client port plus this, and CLUSTER SLOTS / SHARDS / NODES advertise
/// those ports (see `commands::Session::redis_cluster`).
pub const CLUSTER_CLIENT_PORT_OFFSET: u16 = 1000;
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
    /// TLS on peer links (`tls_cluster`); never set in the simulator.
    pub peer_tls: Option<Arc<peer::PeerTls>>,
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
            .get(&shoal_engine::fields::database_of(namespace))
            .map_or(self.read_quorum, |q| q.r)
    }

    /// Durable acknowledgements a write to `namespace` waits for.
    pub fn write_quorum_for(&self, namespace: u8) -> u8 {
        self.namespace_quorums
            .get(&shoal_engine::fields::database_of(namespace))
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
            peer_tls: None,
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
    /// Reads of local copies refused because the asker's ring was newer and
    /// this node could not learn it (`admission::copy_read`).
    pub reads_refused_behind_ring: AtomicU64,
    /// Keys this node deleted as their coordinator once they had expired.
    pub keys_expired: AtomicU64,
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
    /// Nobody answered the start-up check of a new directory, so the node
    /// took a fresh actor and restored, as after a lost disk.
    pub life_unanswered: AtomicBool,
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

/// The file holding a data directory's random id (`directory_id`).
const DIRECTORY_ID_FILE: &str = "DIRECTORY-ID";

/// This data directory's id, and whether it is new: read from
/// `DIRECTORY-ID`, or made from `fresh` (then saved by [`save_directory_id`]
/// once the start-up check is done, so a directory whose check a crash cut
/// short is still new at the next start). A damaged file is an error: a
/// made-up id would pass the directory off as a replacement.
fn directory_id(dir: &dyn DiskDir, fresh: u64) -> Result<(u64, bool), DiskError> {
    match shoal_engine::disk::read_checked_file(dir, DIRECTORY_ID_FILE, 8) {
        Ok(Some(payload)) => Ok((
            u64::from_le_bytes(payload[..].try_into().expect("8 bytes")),
            false,
        )),
        Ok(None) => Ok((fresh, true)),
        Err(CheckedFileError::Disk(e)) => Err(e),
        Err(CheckedFileError::Damaged(why)) => Err(DiskError::Io(why)),
    }
}

/// Keep a new directory's id (atomically, durably).
fn save_directory_id(dir: &dyn DiskDir, id: u64) -> Result<(), DiskError> {
    shoal_engine::disk::write_checked_file(dir, DIRECTORY_ID_FILE, &id.to_le_bytes())
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
    restored_from: Mutex<RestoreProgress>,
    /// Per peer, from the last ping it answered: (its wall clock minus ours, the
    /// estimate's error bound), ms.
    clock_offsets: Mutex<BTreeMap<NodeId, (i64, u64)>>,
    ready_changed: tokio::sync::Notify,
    /// This data directory's random id (`DIRECTORY-ID`), sent with every ping.
    dir_id: u64,
    /// Peers' directories and incarnations, for the start-up check.
    lives: Mutex<Lives>,
    peers: Mutex<BTreeMap<NodeId, Arc<peers::PeerClient>>>,
    /// Which refused inbound peer connections get a log line.
    refusals: Mutex<refusals::RefusalLog>,
    /// The handoff this node is pulling now, for operators.
    handoff_now: Mutex<Option<HandoffProgress>>,
    /// The last ring version under which this node warned that its own copy
    /// of a partition does not read back (one warning per ring change).
    unreadable_warned_version: AtomicU64,
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
use shoal_engine::cluster::coordination::Target;
/// A peer's answer to a read: the key indexes it was asked for, and its answer.
type ReadReply = (NodeId, Vec<usize>, Result<Response, CallError>);

/// A write's result as routing returns it.
pub type RoutedWrite = Result<WriteOutcome, RemoteError>;
/// A read's result: the merged set of the replies (`None`: no replica has the key).
pub type RoutedRead = Result<Option<SiblingSet>, RemoteError>;

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
}
