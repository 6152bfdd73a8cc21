//! What only a cluster member answers: SHOAL.CLUSTER and SHOAL.RING (CLUSTER,
//! for Redis Cluster clients, is `redis_cluster`'s), and the two ways the data commands'
//! `backend::Backend::Routed` reaches the cluster that need more than one call
//! (a routed write's ticket, a SCAN step over one partition). The data commands
//! themselves are written once, in `data`.

use crate::cluster::Cluster;
use crate::reply::{err, lower, ReplyShape, RoutedTicket, Step};
use crate::resp::Reply;
use bytes::Bytes;
use shoal_engine::cluster::detector::PeerState;
use shoal_engine::cluster::map::RingChange;
use shoal_engine::cluster::wire::RemoteError;
use shoal_engine::placement::PartitionId;
use shoal_engine::WriteOp;
use std::sync::Arc;

/// Start a write through the cluster; its coordinator's answer comes back
/// through the ticket.
pub(crate) fn routed(cluster: &Arc<Cluster>, ops: Vec<WriteOp>, shape: ReplyShape) -> Step {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let op_count = ops.len();
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let _ = tx.send(cluster.write(ops).await);
    });
    Step::Routed(RoutedTicket::new(rx, op_count), shape)
}

/// SCAN over the cluster: the cursor is a slot; each call returns the keys of
/// the partition holding it (from every replica that answers) and the first slot
/// of the next partition, or 0 at the end.
pub(crate) async fn scan_partition(
    cluster: &Arc<Cluster>,
    ns: u8,
    cursor: u64,
) -> Result<(Vec<Bytes>, u64), RemoteError> {
    let map = cluster.map();
    let ring = map.ring();
    if cursor >= u64::from(shoal_engine::slot::SLOT_COUNT) {
        return Ok((Vec::new(), 0));
    }
    let partition: PartitionId = ring.partition_of_slot(cursor as u16);
    let slots = ring.slot_range(partition);
    let first = (cursor as u16).max(*slots.start());
    let keys = cluster.keys(ns, first..=*slots.end()).await?;
    let next = if partition + 1 >= ring.partition_count() {
        0
    } else {
        u64::from(*ring.slot_range(partition + 1).start())
    };
    Ok((keys, next))
}

/// `SHOAL.RING JOIN id host:port | LEAVE id | REPLACE old new host:port |
/// PIN namespace n r w id... | PINJOIN namespace id | PINLEAVE namespace id |
/// UNPIN namespace | ABORT`.
pub(crate) async fn ring_command(cluster: &Arc<Cluster>, args: &[Bytes]) -> Step {
    let usage = "ERR usage: SHOAL.RING JOIN id host:port | LEAVE id | REPLACE old new host:port | PIN namespace n r w id [id ...] | PINJOIN namespace id | PINLEAVE namespace id | UNPIN namespace | ABORT";
    let id = |b: &Bytes| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
    };
    let small = |b: &Bytes| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
    };
    let namespace = small;
    let address = |b: &Bytes| {
        let text = String::from_utf8_lossy(b).into_owned();
        crate::cluster::member_addr(&text).map(|a| a.client)
    };
    let change = match (lower(&args[0]).as_str(), args.len()) {
        ("join", 3) => match (id(&args[1]), address(&args[2])) {
            (Some(node), Ok(address)) => RingChange::Join { node, address },
            (_, Err(e)) => return err(format!("ERR {e}")),
            _ => return err(usage.to_string()),
        },
        ("leave", 2) => match id(&args[1]) {
            Some(node) => RingChange::Leave { node },
            None => return err(usage.to_string()),
        },
        ("replace", 4) => match (id(&args[1]), id(&args[2]), address(&args[3])) {
            (Some(old), Some(new), Ok(address)) => RingChange::Replace { old, new, address },
            (_, _, Err(e)) => return err(format!("ERR {e}")),
            _ => return err(usage.to_string()),
        },
        ("pin", 6..) => {
            let nodes: Option<std::collections::BTreeSet<u32>> = args[5..].iter().map(id).collect();
            match (
                namespace(&args[1]),
                small(&args[2]),
                small(&args[3]),
                small(&args[4]),
                nodes,
            ) {
                (Some(namespace), Some(replicas_n), Some(r), Some(w), Some(nodes)) => {
                    RingChange::Pin {
                        namespace,
                        nodes,
                        replicas_n,
                        r,
                        w,
                    }
                }
                _ => return err(usage.to_string()),
            }
        }
        ("pinjoin", 3) => match (namespace(&args[1]), id(&args[2])) {
            (Some(namespace), Some(node)) => RingChange::PinJoin { namespace, node },
            _ => return err(usage.to_string()),
        },
        ("pinleave", 3) => match (namespace(&args[1]), id(&args[2])) {
            (Some(namespace), Some(node)) => RingChange::PinLeave { namespace, node },
            _ => return err(usage.to_string()),
        },
        ("unpin", 2) => match namespace(&args[1]) {
            // On its way back the namespace takes this node's quorums for it
            // (within the default ring's n), as it will once unpinned.
            Some(namespace) => {
                let n = cluster.map().ring().replicas_n();
                RingChange::Unpin {
                    namespace,
                    r: cluster.config().read_quorum_for(namespace).min(n),
                    w: cluster.config().write_quorum_for(namespace).min(n),
                }
            }
            None => return err(usage.to_string()),
        },
        ("abort", 1) => RingChange::Abort,
        _ => return err(usage.to_string()),
    };
    let unpinning = match change {
        RingChange::Unpin { namespace, .. } => Some(namespace),
        _ => None,
    };
    match cluster.change_ring(change).await {
        Ok((diff, handoffs)) => {
            let mut text = format!(
                "ring version {} -> {}: {} replica(s) move, {} coordinator change(s); {} partition handoff(s) started (see SHOAL.CLUSTER)\n",
                diff.version_from,
                diff.version_to,
                diff.replicas_moved,
                diff.coordinator_changes,
                handoffs,
            );
            if let Some(namespace) = unpinning {
                if cluster.map().placement().pin_for(namespace).is_some() {
                    text.push_str(&format!(
                        "namespace {namespace} is now placed like the default ring; once these handoffs are done, UNPIN {namespace} again drops its pin\n"
                    ));
                } else {
                    text.push_str(&format!("namespace {namespace} is no longer pinned\n"));
                }
            }
            Step::Reply(Reply::Verbatim {
                format: *b"txt",
                text,
            })
        }
        Err(e) => err(format!("ERR {e}")),
    }
}

/// "; namespace 1: r=1 w=1; ..." for namespaces with their own quorums.
fn namespace_quorums_text(config: &crate::cluster::ClusterConfig) -> String {
    config
        .namespace_quorums
        .iter()
        .map(|(ns, q)| format!("; namespace {ns}: r={} w={}", q.r, q.w))
        .collect()
}

/// The operator's view: members and their states, the ring, partitions per node,
/// and the counters of replication, repair and anti-entropy.
pub fn status_text(cluster: &Cluster) -> String {
    let mut text = status_header(cluster);
    status_members(cluster, &mut text);
    status_handoffs(cluster, &mut text);
    status_lag(cluster, &mut text);
    status_counters(cluster, &mut text);
    text
}

/// This node, its digest, the ring and its pins, clocks, a restore.
fn status_header(cluster: &Cluster) -> String {
    let config = cluster.config();
    let map = cluster.map();
    let ring = map.ring();
    let (digest, keys) = cluster.local_digest();
    let actor = cluster.actor();
    let earlier_life = cluster
        .stats
        .earlier_life_seen
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut text = format!(
        "node {}{}\nlocal digest {digest:016x} over {keys} keys\nring version {}, {} partitions, n={} r={} w={}{}\n",
        cluster.me(),
        match (actor == cluster.me(), earlier_life) {
            (true, 0) => String::new(),
            (_, 0) => format!(
                " (dots minted as actor {actor}, taken when its directory replaced an earlier one, or when no peer could say whether it did)"
            ),
            _ => format!(
                " (its directory replaced one the cluster knew in incarnation {earlier_life}; dots minted as actor {actor})"
            ),
        },
        ring.version(),
        ring.partition_count(),
        config.replicas_n,
        config.read_quorum,
        config.write_quorum,
        namespace_quorums_text(config),
    );
    for (namespace, pin) in map.placement().pinned() {
        text.push_str(&format!(
            "namespace {namespace} pinned to nodes {:?}: n={} r={} w={}{}\n",
            pin.ring.members(),
            pin.ring.replicas_n(),
            pin.r,
            pin.w,
            if map.placement().unpinning(namespace) {
                " (being unpinned: placed like the default ring; UNPIN again once no handoff is in flight)"
            } else {
                ""
            }
        ));
    }
    let offsets = cluster.clock_offsets();
    if !offsets.is_empty() {
        let shown: Vec<String> = offsets
            .iter()
            .map(|(node, (offset, error))| format!("node {node} {offset:+} ms (±{error})"))
            .collect();
        text.push_str(&format!(
            "wall clocks vs this node: {} (delete markers wait twice the largest longer)\n",
            shown.join(", ")
        ));
    }
    if let Some((done, others)) = cluster.restoring() {
        text.push_str(&format!(
            "restoring from replicas: {done} of {others} other members merged in full (no handoff or marker collection until all are)\n"
        ));
    }
    text
}

fn status_members(cluster: &Cluster, text: &mut String) {
    text.push_str("\nmembers:\n");
    for m in cluster.members() {
        text.push_str(&format!(
            "  node {:<4} {:<22} {:<8} incarnation {:<6} silent {:>6} ms  replicas {:>4}  coordinating {:>4}  to pull {:>4}{}\n",
            m.node,
            m.addr.client,
            m.state.as_str(),
            m.incarnation,
            m.silent_ms,
            m.partitions,
            m.coordinating,
            m.incoming,
            match (m.in_ring, m.state == PeerState::Alive && !m.reachable) {
                (true, false) => "",
                (true, true) => "  (no direct link from here; other nodes reach it)",
                (false, false) => "  (not in the ring)",
                (false, true) => "  (not in the ring; no direct link from here)",
            },
        ));
    }
}

fn status_handoffs(cluster: &Cluster, text: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let map = cluster.map();
    let stats = &cluster.stats;
    let handoff_now = match cluster.handoff_now() {
        Some(h) => format!(
            "; pulling partition {} from node {} ({} keys so far)",
            h.partition, h.source, h.keys_pulled
        ),
        None => String::new(),
    };
    text.push_str(&format!(
        "\nhandoffs in flight: {} over {} partition(s){handoff_now}\nhandoff keys pulled {}, partitions done {}, keys of partitions no longer owned dropped {}, replica writes refused as sent under an older ring {} (copies re-sent under the newer ring {}), peer reads refused until this node learns the asker's newer ring {}, map syncs {}\nindirect probes served for others {}, peers vouched for by others {}\n",
        map.handoffs_pending(),
        map.partitions_in_transition(),
        stats.handoff_keys_pulled.load(Relaxed),
        stats.handoff_partitions_done.load(Relaxed),
        stats.copies_dropped.load(Relaxed),
        stats.stale_ring_refusals.load(Relaxed),
        stats.stale_ring_retries.load(Relaxed),
        stats.reads_refused_behind_ring.load(Relaxed),
        stats.map_syncs.load(Relaxed),
        stats.indirect_probes_served.load(Relaxed),
        stats.indirect_vouches.load(Relaxed),
    ));
}

fn status_lag(cluster: &Cluster, text: &mut String) {
    let lag: Vec<String> = cluster
        .replication_lag()
        .into_iter()
        .map(|(peer, keys, exchanged_ago, in_sync_ago)| {
            let ago = |ms: Option<u64>| ms.map_or("never".to_string(), |ms| format!("{ms} ms ago"));
            if keys == 0 {
                format!("  node {peer}: in sync (checked {})", ago(exchanged_ago))
            } else {
                format!(
                    "  node {peer}: {keys} key(s) differed {} (last in sync: {})",
                    ago(exchanged_ago),
                    ago(in_sync_ago)
                )
            }
        })
        .collect();
    text.push_str(&format!(
        "\nreplication lag (anti-entropy's last comparison with each peer):\n{}\n",
        if lag.is_empty() {
            "  none measured yet".to_string()
        } else {
            lag.join("\n")
        }
    ));
}

fn status_counters(cluster: &Cluster, text: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let config = cluster.config();
    let stats = &cluster.stats;
    text.push_str(&format!(
        "\nwrites coordinated {} (caught up first on a partition being taken over {}), proxied {}, quorum failures {}, replica writes received {}\nreads {}, read repairs {}\nanti-entropy rounds {}, keys pushed {} ({} bytes), keys pulled {} ({} bytes)\npeer handshakes refused {}, peer frames refused {}\nhints pending {} (sloppy quorum {}): stored {}, delivered {}, refused {}; copies sent to a fallback {}; reads that asked a fallback {}\n",
        stats.writes_coordinated.load(Relaxed),
        stats.writes_caught_up.load(Relaxed),
        stats.writes_proxied.load(Relaxed),
        stats.quorum_failures.load(Relaxed),
        stats.replica_writes_received.load(Relaxed),
        stats.reads_coordinated.load(Relaxed),
        stats.read_repairs.load(Relaxed),
        stats.anti_entropy_rounds.load(Relaxed),
        stats.anti_entropy_keys_pushed.load(Relaxed),
        stats.anti_entropy_bytes_pushed.load(Relaxed),
        stats.anti_entropy_keys_pulled.load(Relaxed),
        stats.anti_entropy_bytes_pulled.load(Relaxed),
        stats.peer_auth_refusals.load(Relaxed),
        stats.peer_frames_refused.load(Relaxed),
        cluster.hints_pending(),
        if config.sloppy_quorum { "on" } else { "off" },
        stats.hints_stored.load(Relaxed),
        stats.hints_delivered.load(Relaxed),
        stats.hints_refused.load(Relaxed),
        stats.writes_hinted.load(Relaxed),
        stats.reads_from_fallbacks.load(Relaxed),
    ));
    text.push_str(&format!(
        "delete markers (as primary): proposed {}, agreed by every member {}, waiting out the settle delay {}, forgotten {} (summed over members); forgotten here {}; writes refused as sent too long ago {}\n",
        stats.markers_proposed.load(Relaxed),
        stats.markers_agreed.load(Relaxed),
        cluster.markers_waiting(),
        stats.markers_forgotten.load(Relaxed),
        cluster.tombstones_forgotten_here(),
        stats.requests_too_old.load(Relaxed),
    ));
    text.push_str(&format!(
        "keys expired here {} (deleted as their coordinator)\n",
        stats.keys_expired.load(Relaxed)
    ));
}
