//! Active expiry on a cluster, once per anti-entropy round: a key's
//! coordinator (its first live owner) deletes it once every value it holds has
//! expired, through the write path like a client's delete, covering only the
//! context it read (a value written since, or held only elsewhere, survives).
//! A replica's own expired copy waits for that delete; reads hide it before.
//! Only on a settled ring: during a handoff the delete could race the pull.

use super::*;

/// Keys one round deletes at most.
const EXPIRED_KEYS_PER_ROUND_MAX: usize = 256;

impl Cluster {
    pub(super) async fn expire_due_keys(self: &Arc<Self>) {
        let map = self.map();
        if map.partitions_in_transition() > 0 {
            return;
        }
        let (me, now_ms) = (self.me(), self.clock.wall_ms());
        // The detector's view taken once, outside the store's lock.
        let live: BTreeSet<NodeId> = {
            let detector = lock(&self.detector);
            map.nodes()
                .into_iter()
                .filter(|n| detector.is_live(*n))
                .collect()
        };
        // As `candidates`: the first live owner, else the first owner.
        let coordinated = |ns: u8, key: &[u8]| {
            let owners = map.owners(map.partition_of_key(ns, key));
            let first_live = owners.iter().find(|o| **o == me || live.contains(*o));
            first_live.or(owners.first()) == Some(&me)
        };
        let ops = self
            .storage
            .read(|s| s.expiry_deletes(now_ms, EXPIRED_KEYS_PER_ROUND_MAX, coordinated));
        if ops.is_empty() {
            return;
        }
        let expired = self.write(ops).await.iter().filter(|r| r.is_ok()).count();
        self.stats
            .keys_expired
            .fetch_add(expired as u64, Ordering::Relaxed);
    }
}
