//! The audits a cluster seed's phases run (handoff plan and handoff, hints,
//! pins) and the convergence waits.

use super::*;

/// The handoff plan audit: every replica the change moved (a node in a
/// partition's new owners but not its old ones, counted here from the two rings;
/// every owner of a newly pinned namespace's partitions) must have had a handoff
/// started for it, as the `SHOAL.RING` reply reports.
pub(super) fn audit_handoff_plan(
    map_before: &ClusterMap,
    members: &[Arc<Member>],
    via: u32,
    reply: &str,
    recorder: &Recorder,
) {
    let Some(cluster) = lock(&members[via as usize - 1].cluster).clone() else {
        return;
    };
    let changed = cluster.map();
    if changed.version() != map_before.version() + 1 {
        return;
    }
    // Over every ring's partitions; a newly pinned namespace's keys were on the
    // default ring's owners, and every owner of its partitions pulls (the ones
    // that stay as well: they may lack writes the dropped owners acknowledged).
    let moved: usize = changed
        .partitions()
        .into_iter()
        .map(|p| {
            if !map_before.is_partition(p) {
                return changed.owners(p).len();
            }
            let before = placement_owners(map_before.placement(), p);
            changed
                .owners(p)
                .iter()
                .filter(|n| !before.contains(n))
                .count()
        })
        .sum();
    let started: Option<usize> = reply
        .split(" partition handoff")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok());
    if started != Some(moved) {
        recorder.anomaly(format!(
            "handoff plan audit: ring version {} moves {moved} replicas but the change started {started:?} handoffs (reply: {reply})",
            changed.version()
        ));
    }
}

/// A node whose data was set aside since (damaged segments, a lost disk)
/// restores it from its replicas; the checker judges the end. One still
/// starting (its stores open, its start not returned) may be about to: it is
/// judged once its start has decided (cluster seed 20796009107, audited in
/// that window of a restart onto a damaged segment).
fn restoring_or_starting(member: &Member) -> bool {
    lock(&member.cluster)
        .clone()
        .is_none_or(|c| c.restoring().is_some())
}

/// The handoff audit: once the change's handoffs are done (as the node that made
/// it sees them), every node that gained a partition holds every write to it that
/// was acknowledged before the change was asked for. That is the handoff's promise,
/// checked before anti-entropy has had long to paper over a missing one. Nodes
/// down at the time are skipped, and so are keys no old owner holds any more
/// (deleted, their markers collected).
pub(super) async fn audit_handoff(
    members: &[Arc<Member>],
    via: u32,
    map_before: &ClusterMap,
    events: &[Event],
    recorder: &Recorder,
) {
    let Some(cluster) = lock(&members[via as usize - 1].cluster).clone() else {
        return;
    };
    let changed = cluster.map();
    if changed.version() <= map_before.version() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = cluster.map();
        if now.version() != changed.version() {
            return;
        }
        if now.handoffs_pending() == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut checked = 0usize;
    let expired = expired_values(events, recorder.now_ms());
    for event in events {
        let Event::Ok {
            op,
            result: shoal_checker::OkResult::Write { dot, value, .. },
        } = event
        else {
            continue;
        };
        if expired.contains(value.as_str()) {
            continue;
        }
        let (ns, stored) = crate::workload::stored_key(&op.key);
        let key = stored.as_slice();
        // Whether a store's copy of the key covers the write's dot.
        let covers_write = |st: &Storage| {
            st.read(|s| s.get(ns, key))
                .ok()
                .flatten()
                .is_some_and(|set| {
                    set.context.covers(shoal_engine::Dot {
                        node: dot.node,
                        counter: dot.counter,
                    })
                })
        };
        let partition = changed.partition_of_key(ns, key);
        let before = placement_owners(map_before.placement(), partition);
        for incoming in changed
            .owners(partition)
            .iter()
            .filter(|n| !before.contains(n))
        {
            let Some(storage) = lock(&members[*incoming as usize - 1].storage).clone() else {
                continue;
            };
            if restoring_or_starting(&members[*incoming as usize - 1]) {
                continue;
            }
            let held = covers_write(&storage);
            checked += 1;
            // A key no old owner holds any more was deleted and its marker
            // collected cluster-wide: there was nothing to hand off (and if the
            // write was lost instead, the checker's final states show it).
            let collected = || {
                before.iter().all(|owner| {
                    lock(&members[*owner as usize - 1].storage)
                        .clone()
                        .is_some_and(|st| st.read(|s| s.get(ns, key)).ok().flatten().is_none())
                })
            };
            // A delete made before the change removed the write: its
            // marker may have been collected on the sources this node pulled
            // from (a collection the ring change interrupted leaves it on some
            // old owners), and absence here is the same state. So is a later
            // write made after the collection: its context starts afresh and
            // need not cover the deleted write.
            let deleted_here = || {
                deleted_in(events, &op.key, *dot)
                    && lock(&members[*incoming as usize - 1].storage)
                        .clone()
                        .is_some_and(|st| {
                            st.read(|s| s.get(ns, key))
                                .ok()
                                .flatten()
                                .is_none_or(|set| {
                                    !set.siblings.iter().any(|sibling| {
                                        sibling.dot.node == dot.node
                                            && sibling.dot.counter == dot.counter
                                    })
                                })
                        })
            };
            if !held && !collected() && !deleted_here() {
                // Which old owners hold it now, for the diagnosis.
                let holders: Vec<u32> = before
                    .iter()
                    .copied()
                    .filter(|owner| {
                        lock(&members[*owner as usize - 1].storage)
                            .clone()
                            .is_some_and(|st| covers_write(&st))
                    })
                    .collect();
                let here = storage.read(|s| s.get(ns, key)).ok().flatten();
                let what = format!("{} write of {value:?} dot {dot}", op.key);
                let ring = (changed.version(), partition, *incoming);
                report_lost_handoff(recorder, ring, &what, op.time_ms, (before, &holders), here);
                return;
            }
        }
    }
    recorder.fault(format!(
        "handoff audit of ring version {}: {checked} (write, incoming owner) pairs held",
        changed.version()
    ));
}

/// Whether a delete removed the write of `dot` to `key`: one acknowledged to
/// its client, or one that took effect whatever its client learned (an
/// expiry's, which no client asked for, among them).
fn deleted_in(events: &[Event], key: &Key, dot: shoal_checker::Dot) -> bool {
    events.iter().any(|e| match e {
        Event::Ok {
            op,
            result: shoal_checker::OkResult::Delete { context },
        } => op.key == *key && context.covers(dot),
        Event::Effect(effect) => {
            effect.f == shoal_checker::Function::Delete
                && effect.key == *key
                && effect.superseded.covers(dot)
        }
        _ => false,
    })
}

/// Values of expiring writes whose deadline has passed by `now_ms`, or will
/// within the clock skews the plans give (under 2 s): the key's coordinator
/// may have deleted them and their markers gone, so no handoff owes them.
fn expired_values(events: &[Event], now_ms: u64) -> BTreeSet<&str> {
    const SKEW_BOUND_MS: u64 = 2_000;
    events
        .iter()
        .filter_map(|e| match e {
            Event::Invoke {
                value: Some(value),
                expires_ms: Some(at),
                ..
            } if *at <= now_ms + SKEW_BOUND_MS => Some(value.as_str()),
            _ => None,
        })
        .collect()
}

/// The handoff audit's anomaly: `ring` is (version, partition, incoming node).
fn report_lost_handoff(
    recorder: &Recorder,
    (version, partition, incoming): (u64, u32, u32),
    what: &str,
    acknowledged_ms: u64,
    (before, holders): (&[u32], &[u32]),
    here: Option<shoal_engine::SiblingSet>,
) {
    let here = here.map_or_else(
        || "nothing".into(),
        |set| format!("context {:?}", set.context),
    );
    recorder.anomaly(format!(
        "handoff audit: ring version {version} says node {incoming} took partition {partition}, and its handoffs are done, but it lacks {what}, acknowledged at {acknowledged_ms} ms before the change (old owners {before:?}; holding it now: {holders:?}; node {incoming} has {here})"
    ));
}

/// The hint audit, run in the coordinator as each fallback acknowledges a hint:
/// the fallback must hold it (or the owner must, if it was delivered already).
/// Fallbacks that are down by then are skipped.
pub(super) fn hint_audit(
    members: Arc<std::sync::OnceLock<Vec<std::sync::Weak<Member>>>>,
    recorder: Arc<Recorder>,
) -> shoal_net::cluster::HintObserver {
    use shoal_engine::cluster::hints;
    let covers = |held: &Option<shoal_engine::SiblingSet>, wanted: &shoal_engine::SiblingSet| {
        held.as_ref().is_some_and(|held| {
            let mut merged = held.clone();
            merged.merge(wanted);
            &merged == held
        })
    };
    shoal_net::cluster::HintObserver(Arc::new(move |fallback, owner, item| {
        let Some(members) = members.get() else {
            return;
        };
        let members: Vec<Arc<Member>> = members
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let find = |id: u32| members.iter().find(|m| m.id == id);
        let Some(hint_store) = find(fallback).and_then(|m| lock(&m.hints).clone()) else {
            return;
        };
        let key = hints::hint_key(owner, item.namespace, &item.key);
        let hinted = hint_store.read(|s| {
            s.get(hints::HINT_NAMESPACE, &key)
                .ok()
                .flatten()
                .and_then(|h| h.winner().and_then(|w| w.value.clone()))
                .and_then(|v| hints::decode_hint(&v))
        });
        if covers(&hinted, &item.set) {
            return;
        }
        let delivered = find(owner)
            .and_then(|m| lock(&m.storage).clone())
            .and_then(|s| s.read(|s| s.get(item.namespace, &item.key)).ok().flatten());
        if covers(&delivered, &item.set) {
            return;
        }
        recorder.anomaly(format!(
            "hint audit at {} ms: node {fallback} acknowledged a hint for node {owner} of ns={} key {:?} (set {:?}), but neither holds it (the hint there: {:?}; the owner's copy: {:?})",
            recorder.now_ms(),
            item.namespace,
            String::from_utf8_lossy(&item.key),
            item.set.context,
            hinted.map(|h| h.context),
            delivered.map(|d| d.context)
        ));
    }))
}

/// The common map once every node is up, every node has the same map with no
/// handoff pending, and every key's owners in that map hold equal sets (keys no
/// owner holds are ignored: only a node outside the ring, or a write whose
/// outcome was unknown, can leave those).
/// Link latency outside a lossy-network fault: 1 ms up to this.
pub(super) const NORMAL_LATENCY_MAX_MS: u64 = 10;

/// Every link drops `loss_percent` of packets and delays each by 1 ms up to
/// `latency_max_ms`.
pub(super) fn set_network(net: &madsim::net::NetSim, loss_percent: u64, latency_max_ms: u64) {
    net.update_config(|config| {
        config.packet_loss_rate = loss_percent as f64 / 100.0;
        config.send_latency = Duration::from_millis(1)..Duration::from_millis(latency_max_ms);
    });
}

/// The pin audit, once converged and drained: a pinned namespace's keys are
/// held by its own nodes only (every other member has dropped its copies),
/// its hash fields too.
pub(super) fn audit_pins(
    members: &[Arc<Member>],
    map: &ClusterMap,
    recorder: &Recorder,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (namespace, pin) in map.placement().pinned() {
        let mut held_by_pinned = 0usize;
        for member in members.iter().filter(|m| map.ring().is_member(m.id)) {
            let Some(storage) = lock(&member.storage).clone() else {
                continue;
            };
            let held = storage.read(|s| {
                s.dump()
                    .into_iter()
                    .filter(|(ns, _, set)| {
                        // A pinned database's hash fields are pinned with it.
                        shoal_engine::fields::database_of(*ns) == namespace
                            && set.as_ref().is_ok_and(|s| !s.siblings.is_empty())
                    })
                    .count()
            });
            if pin.ring.is_member(member.id) {
                held_by_pinned += held;
            } else if held > 0 {
                failures.push(format!(
                    "pin audit: node {} holds {held} keys of namespace {namespace}, which is pinned to nodes {:?}",
                    member.id,
                    pin.ring.members()
                ));
            }
        }
        recorder.fault(format!(
            "pin audit: namespace {namespace} on nodes {:?} only ({held_by_pinned} copies there)",
            pin.ring.members()
        ));
    }
    failures
}

/// Poll [`converged`] every 100 ms until it holds or `deadline` passes.
pub(super) async fn wait_converged(
    members: &[Arc<Member>],
    deadline: tokio::time::Instant,
) -> Option<Arc<ClusterMap>> {
    loop {
        if let Some(map) = converged(members) {
            return Some(map);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) fn converged(members: &[Arc<Member>]) -> Option<Arc<ClusterMap>> {
    let clusters: Vec<Arc<Cluster>> = members
        .iter()
        .map(|m| lock(&m.cluster).clone())
        .collect::<Option<Vec<_>>>()?;
    // A node restoring from its replicas refuses handoff and marker collection:
    // the cluster has not settled until it has merged every other member's
    // copies (an exchange moves a bounded number of bytes per round, so a large
    // loss takes several rounds).
    if clusters
        .iter()
        .any(|c| c.hints_pending() > 0 || c.restoring().is_some())
    {
        return None;
    }
    let maps: Vec<Arc<ClusterMap>> = clusters.iter().map(|c| c.map()).collect();
    let first = maps[0].clone();
    if maps
        .iter()
        .any(|m| m.fingerprint() != first.fingerprint() || m.handoffs_pending() > 0)
    {
        return None;
    }
    // The partition digests first: cheap, and while they differ the replicas
    // do not agree; the key-by-key comparison runs once they all match.
    (partition_digests_agree(members, &clusters, &first) && replicas_agree(members, &first))
        .then_some(first)
}

/// Every partition's owners hold the same anti-entropy digest of it, as each
/// member's cluster reports them (`clusters` in `members`' order).
fn partition_digests_agree(
    members: &[Arc<Member>],
    clusters: &[Arc<Cluster>],
    map: &ClusterMap,
) -> bool {
    let partitions = map.partitions();
    let digests: BTreeMap<u32, Vec<u64>> = members
        .iter()
        .zip(clusters)
        .filter(|(m, _)| map.ring().is_member(m.id))
        .map(|(m, c)| (m.id, c.partition_digests(&partitions)))
        .collect();
    partitions.iter().enumerate().all(|(i, p)| {
        let owners = map.owners(*p);
        let first = digests.get(&owners[0]).map(|d| d[i]);
        owners.iter().all(|o| digests.get(o).map(|d| d[i]) == first)
    })
}

/// Every key held by some owner is held equally by all of its owners.
/// What each member shows when the cluster did not converge: its map, handoffs
/// and hints pending, whether it is restoring, and its keys, so that a liveness
/// failure says where it is stuck.
pub(super) fn why_not_converged(members: &[Arc<Member>]) -> String {
    let views: Vec<String> = members
        .iter()
        .map(|m| match lock(&m.cluster).clone() {
            None => format!("node {} down", m.id),
            Some(c) => {
                let map = c.map();
                format!(
                    "node {}: ring version {} fingerprint {:x}, handoffs pending {}, hints pending {}, restoring {:?}, keys {}",
                    m.id,
                    map.version(),
                    map.fingerprint(),
                    map.handoffs_pending(),
                    c.hints_pending(),
                    c.restoring(),
                    c.local_digest().1
                )
            }
        })
        .collect();
    format!(
        "not converged: {}; keys whose copies differ (first {DIFFERING_SHOWN_MAX}): {}",
        views.join("; "),
        differing_copies(members).join(" | ")
    )
}

/// Keys `why_not_converged` lists at most.
pub(super) const DIFFERING_SHOWN_MAX: usize = 8;

/// Per key held differently by the members (or by fewer than all): each
/// holder's sibling count and bytes, or that its copy cannot be read.
pub(super) fn differing_copies(members: &[Arc<Member>]) -> Vec<String> {
    // (namespace, key) -> (replica, what it holds).
    type Copies = BTreeMap<(u8, Vec<u8>), Vec<(u32, String)>>;
    let mut copies: Copies = BTreeMap::new();
    for m in members {
        let Some(storage) = lock(&m.storage).clone() else {
            continue;
        };
        storage.read(|s| {
            for (ns, key, set) in s.dump() {
                let held = set.map_or("unreadable".to_string(), |set| {
                    format!("{} sibling(s), {} B", set.siblings.len(), set.size_bytes())
                });
                copies
                    .entry((ns, key.to_vec()))
                    .or_default()
                    .push((m.id, held));
            }
        });
    }
    copies
        .iter()
        .filter(|(_, held)| held.iter().any(|(_, h)| *h != held[0].1) || held.len() < 2)
        .take(DIFFERING_SHOWN_MAX)
        .map(|((ns, key), held)| format!("ns {ns} {:?}: {held:?}", String::from_utf8_lossy(key)))
        .collect()
}

pub(super) fn replicas_agree(members: &[Arc<Member>], map: &ClusterMap) -> bool {
    let mut all: BTreeMap<(u8, Vec<u8>), BTreeMap<u32, u64>> = BTreeMap::new();
    for member in members.iter().filter(|m| map.ring().is_member(m.id)) {
        let Some(storage) = lock(&member.storage).clone() else {
            return false;
        };
        storage.read(|s| {
            for (ns, key, set) in s.dump() {
                let hash = set
                    .map(|set| shoal_engine::digest::set_hash(&set))
                    .unwrap_or(0);
                all.entry((ns, key.to_vec()))
                    .or_default()
                    .insert(member.id, hash);
            }
        });
    }
    all.iter().all(|((ns, key), holders)| {
        let owners = map.owners(map.partition_of_key(*ns, key));
        let first = holders.get(&owners[0]);
        let ok = owners.iter().all(|o| holders.get(o) == first);
        ok
    })
}
