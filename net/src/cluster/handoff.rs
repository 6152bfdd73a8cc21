//! Partition handoff: an incoming owner pulls each partition it gained from
//! its old owners and reports it done.

use super::*;
use shoal_engine::cluster::handoff_pull::{OwnCopy, PartitionPull, PullShort, Step};

impl Cluster {
    /// Pull every partition this node is an incoming owner of from enough of its
    /// old owners, then report it done; the report spreads by gossip, and once
    /// every incoming owner has reported, the old ring is dropped everywhere.
    pub(super) async fn run_handoff(self: Arc<Self>) {
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

    /// Pull `partition` whole from enough of its old owners, as
    /// `handoff_pull::PartitionPull` decides (live ones first; this node's own
    /// copy counted when it is an old owner and whole).
    pub(super) async fn pull_partition(
        self: &Arc<Self>,
        map: &ClusterMap,
        partition: PartitionId,
    ) -> Result<(), PullShort> {
        let own = OwnCopy::of(
            map.was_owner(partition, self.me()),
            self.restoring.load(Ordering::Acquire),
        );
        let old_write_quorum = self.old_write_quorum(map, partition);
        let mut pull = PartitionPull::new(map, partition, self.me(), old_write_quorum, own, |n| {
            self.is_live(n)
        });
        loop {
            match pull.step() {
                Step::Scan(source) => {
                    let outcome = self.pull_from(map, partition, source).await;
                    pull.scanned(source, outcome);
                }
                Step::CheckOwnCopy => pull.own_checked(self.own_copy_reads(map, partition)),
                Step::End => break,
            }
        }
        pull.end()
    }

    /// Whether every record of `partition` this node holds reads back (each
    /// one's checksum holds), batch by batch as a handoff source would send it.
    fn own_copy_reads(&self, map: &ClusterMap, partition: PartitionId) -> bool {
        let slots = map.slot_range(partition);
        let namespaces = map.namespaces(partition);
        let mut after: Option<HandoffCursor> = None;
        loop {
            match self.handoff_batch(slots.clone(), &namespaces, after.as_ref()) {
                Ok((_, Some(next))) => after = Some(next),
                Ok((_, None)) => return true,
                Err(e) => {
                    let version = map.version();
                    let warned = self
                        .unreadable_warned_version
                        .swap(version, Ordering::Relaxed);
                    if warned != version {
                        tracing::warn!(
                            "ring version {version}: this node's copy of partition {partition} \
                             cannot be read whole ({e}); it does not count itself as a \
                             handoff source (restart it to set the damage aside and restore \
                             from its replicas)"
                        );
                    }
                    return false;
                }
            }
        }
    }

    /// Every key of `partition` that `source` holds, merged here durably.
    pub(super) async fn pull_from(
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
}
