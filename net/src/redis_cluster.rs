//! The face a Shoal cluster shows Redis Cluster clients: the CLUSTER command
//! (INFO, MYID, SLOTS, SHARDS, NODES, KEYSLOT, COUNTKEYSINSLOT, GETKEYSINSLOT)
//! and which node masters a slot.
//!
//! A slot's master is the first node of its partition's preference list: the
//! coordinator its writes go to. Every owner serves every key, so replicas are
//! advertised only when `cluster_clients` is off (CLUSTER SLOTS then lists all
//! owners, as before). With it on, the member also listens on its client port
//! plus `cluster::CLUSTER_CLIENT_PORT_OFFSET`, and SLOTS, SHARDS and NODES name
//! only masters at those ports: a Redis Cluster client (redis-py, ioredis,
//! node-redis, `redis-cli --cluster`) then sees each node as the master of its
//! slots, and, since DBSIZE, KEYS and SCAN on that port count only the slots
//! the node masters, counts each key once when it fans out over the masters.
//!
//! Must not touch: data commands, storage, the ring (read only).

use crate::cluster::{Cluster, CLUSTER_CLIENT_PORT_OFFSET, PEER_PORT_OFFSET};
use crate::reply::{err, lower, parse_int, Step};
use crate::resp::Reply;
use bytes::Bytes;
use shoal_engine::cluster::detector::PeerState;
use shoal_engine::cluster::map::ClusterMap;
use shoal_engine::slot::{key_slot, SLOT_COUNT};
use shoal_engine::NodeId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Keys GETKEYSINSLOT returns at most, whatever count it is given.
const KEYS_IN_SLOT_MAX: usize = 100_000;

/// Who asks: whether members advertise their Redis Cluster ports, and the
/// connection's namespace (COUNTKEYSINSLOT, GETKEYSINSLOT).
#[derive(Clone, Copy, Debug)]
pub struct ClusterView {
    pub cluster_clients: bool,
    pub namespace: u8,
}

impl ClusterView {
    fn port_offset(self) -> i64 {
        if self.cluster_clients {
            i64::from(CLUSTER_CLIENT_PORT_OFFSET)
        } else {
            0
        }
    }
}

/// The node that masters `slot` (its partition's coordinator) in `map`.
pub fn master_of(map: &ClusterMap, slot: u16) -> Option<NodeId> {
    let ring = map.ring();
    ring.preference_list(ring.partition_of_slot(slot))
        .first()
        .copied()
}

/// (first slot, last slot, owners in preference order) for runs of partitions
/// with the same preference list.
fn slot_runs(cluster: &Cluster) -> Vec<(u16, u16, Vec<NodeId>)> {
    let map = cluster.map();
    let ring = map.ring();
    let mut runs: Vec<(u16, u16, Vec<NodeId>)> = Vec::new();
    for partition in 0..ring.partition_count() {
        let slots = ring.slot_range(partition);
        let owners = ring.preference_list(partition).to_vec();
        match runs.last_mut() {
            Some(run) if run.2 == owners && run.1 + 1 == *slots.start() => run.1 = *slots.end(),
            _ => runs.push((*slots.start(), *slots.end(), owners)),
        }
    }
    runs
}

/// The advertised owners of a run: all of them, or only its master.
fn advertised(view: ClusterView, owners: &[NodeId]) -> &[NodeId] {
    if view.cluster_clients {
        &owners[..owners.len().min(1)]
    } else {
        owners
    }
}

fn split_addr(addr: &str) -> (String, i64) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}

fn node_name(node: NodeId) -> String {
    // Redis node ids are 40 hex characters.
    format!("{node:040x}")
}

fn bulk(s: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(s.into()))
}

pub async fn cluster_command(cluster: &Arc<Cluster>, view: ClusterView, args: &[Bytes]) -> Step {
    match (lower(&args[0]).as_str(), args.len()) {
        ("myid", 1) => Step::Reply(bulk(node_name(cluster.me()))),
        ("info", 1) => Step::Reply(Reply::Verbatim {
            format: *b"txt",
            text: info(cluster),
        }),
        ("slots", 1) => Step::Reply(slots(cluster, view)),
        ("shards", 1) => Step::Reply(shards(cluster, view)),
        ("nodes", 1) => Step::Reply(bulk(nodes(cluster, view))),
        ("keyslot", 2) => Step::Reply(Reply::Integer(key_slot(&args[1]).into())),
        ("countkeysinslot", 2) => keys_in_slot(cluster, view, &args[1], None).await,
        ("getkeysinslot", 3) => match parse_int(&args[2]) {
            Some(count) if count >= 0 => {
                let count = (count as usize).min(KEYS_IN_SLOT_MAX);
                keys_in_slot(cluster, view, &args[1], Some(count)).await
            }
            _ => err("ERR Invalid number of keys"),
        },
        (other, _) => err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'cluster|{other}'. Shoal supports CLUSTER INFO, MYID, NODES, SLOTS, SHARDS, KEYSLOT, COUNTKEYSINSLOT and GETKEYSINSLOT."
        )),
    }
}

fn info(cluster: &Cluster) -> String {
    let members = cluster.members();
    let alive = members
        .iter()
        .filter(|m| m.state == PeerState::Alive)
        .count();
    format!(
        "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_nodes_alive:{alive}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\nshoal_replicas_n:{}\r\nshoal_r:{}\r\nshoal_w:{}\r\n",
        members.len(),
        members.len(),
        cluster.map().version(),
        cluster.map().version(),
        cluster.config().replicas_n,
        cluster.config().read_quorum,
        cluster.config().write_quorum,
    )
}

/// (host, advertised port) of each member.
fn addresses(cluster: &Cluster, view: ClusterView) -> BTreeMap<NodeId, (String, i64)> {
    cluster
        .members()
        .iter()
        .map(|m| {
            let (host, port) = split_addr(&m.addr.client);
            (m.node, (host, port + view.port_offset()))
        })
        .collect()
}

fn slots(cluster: &Cluster, view: ClusterView) -> Reply {
    let addrs = addresses(cluster, view);
    let runs = slot_runs(cluster).into_iter().map(|(first, last, owners)| {
        let mut entry = vec![Reply::Integer(first.into()), Reply::Integer(last.into())];
        for node in advertised(view, &owners) {
            let (host, port) = addrs.get(node).cloned().unwrap_or_default();
            entry.push(Reply::Array(vec![
                bulk(host),
                Reply::Integer(port),
                bulk(node_name(*node)),
            ]));
        }
        Reply::Array(entry)
    });
    Reply::Array(runs.collect())
}

fn shards(cluster: &Cluster, view: ClusterView) -> Reply {
    let addrs = addresses(cluster, view);
    let members = cluster.members();
    let shard = |(first, last, owners): (u16, u16, Vec<NodeId>)| {
        let nodes = advertised(view, &owners)
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (host, port) = addrs.get(node).cloned().unwrap_or_default();
                let alive = members
                    .iter()
                    .any(|m| m.node == *node && m.state == PeerState::Alive);
                Reply::Map(vec![
                    (bulk("id"), bulk(node_name(*node))),
                    (bulk("port"), Reply::Integer(port)),
                    (bulk("ip"), bulk(host.clone())),
                    (bulk("endpoint"), bulk(host)),
                    (
                        bulk("role"),
                        bulk(if i == 0 { "master" } else { "replica" }),
                    ),
                    (bulk("replication-offset"), Reply::Integer(0)),
                    (bulk("health"), bulk(if alive { "online" } else { "fail" })),
                ])
            });
        let slots = vec![Reply::Integer(first.into()), Reply::Integer(last.into())];
        Reply::Map(vec![
            (bulk("slots"), Reply::Array(slots)),
            (bulk("nodes"), Reply::Array(nodes.collect())),
        ])
    };
    Reply::Array(slot_runs(cluster).into_iter().map(shard).collect())
}

/// CLUSTER NODES: each member a master of the slots it coordinates, so
/// cluster-aware clients send each key straight to its coordinator.
fn nodes(cluster: &Cluster, view: ClusterView) -> String {
    let mut coordinated: BTreeMap<NodeId, Vec<(u16, u16)>> = BTreeMap::new();
    for (first, last, owners) in slot_runs(cluster) {
        let Some(coordinator) = owners.first() else {
            continue;
        };
        let ranges = coordinated.entry(*coordinator).or_default();
        match ranges.last_mut() {
            Some(range) if range.1 + 1 == first => range.1 = last,
            _ => ranges.push((first, last)),
        }
    }
    let mut text = String::new();
    for m in &cluster.members() {
        let (host, port) = split_addr(&m.addr.client);
        let advertised_port = port + view.port_offset();
        let myself = if m.node == cluster.me() {
            "myself,"
        } else {
            ""
        };
        // The link state is this node's own: a peer only others reach is
        // alive (no fail flag) but disconnected from here.
        let state = if m.reachable {
            "connected"
        } else {
            "disconnected"
        };
        let flag = match m.state {
            PeerState::Down => ",fail",
            PeerState::Suspect => ",fail?",
            PeerState::Alive => "",
        };
        text.push_str(&format!(
            "{} {host}:{advertised_port}@{} {myself}master{flag} - 0 0 {} {state}",
            node_name(m.node),
            port + i64::from(PEER_PORT_OFFSET),
            m.incarnation,
        ));
        for (first, last) in coordinated.get(&m.node).into_iter().flatten() {
            if first == last {
                text.push_str(&format!(" {first}"));
            } else {
                text.push_str(&format!(" {first}-{last}"));
            }
        }
        text.push('\n');
    }
    text
}

/// COUNTKEYSINSLOT (`count: None`) or GETKEYSINSLOT: the slot's live keys in
/// the connection's namespace, gathered from its replicas.
async fn keys_in_slot(
    cluster: &Arc<Cluster>,
    view: ClusterView,
    slot: &[u8],
    count: Option<usize>,
) -> Step {
    let slot = match parse_int(slot) {
        Some(s) if (0..i64::from(SLOT_COUNT)).contains(&s) => s as u16,
        _ => return err("ERR Invalid or out of range slot"),
    };
    match cluster.keys(view.namespace, slot..=slot).await {
        Ok(keys) => Step::Reply(match count {
            None => Reply::Integer(keys.len() as i64),
            Some(n) => Reply::Array(keys.into_iter().take(n).map(Reply::Bulk).collect()),
        }),
        Err(e) => Step::Reply(crate::reply::refused(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_addr_takes_the_last_colon() {
        assert_eq!(
            split_addr("127.0.0.1:7379"),
            ("127.0.0.1".to_string(), 7379)
        );
    }

    #[test]
    fn only_masters_are_advertised_to_cluster_clients() {
        let on = ClusterView {
            cluster_clients: true,
            namespace: 0,
        };
        let off = ClusterView {
            cluster_clients: false,
            ..on
        };
        assert_eq!(advertised(on, &[3, 1, 2]), &[3]);
        assert_eq!(advertised(off, &[3, 1, 2]), &[3, 1, 2]);
        assert_eq!(on.port_offset(), 1000);
        assert_eq!(off.port_offset(), 0);
    }
}
