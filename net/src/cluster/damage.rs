//! Damage found under a running member (by the scrubber or a read): its
//! copies are marked incomplete, the damaged keys forgotten here, and the node
//! restores from its replicas as after a restart on damaged data, while it
//! keeps serving (cluster sim: a byte flipped under a running node left its
//! record unreadable for good, and the cluster never converged).

use super::*;
use shoal_engine::store::DamagedRecord;

impl Cluster {
    /// Set `damaged` aside: from now on this node mints above every dot the
    /// lost records held and catches each key up from its replicas before
    /// minting on it (`Store::mark_copies_incomplete`, kept in `CUT-TAIL`);
    /// it restores from every other holder again (no handoff source, no
    /// marker votes until then); and the damaged keys are forgotten here, so
    /// they read as absent (as after a rebuild) until anti-entropy brings
    /// the replicas' copies back.
    pub async fn set_damage_aside(self: &Arc<Self>, damaged: &[DamagedRecord]) {
        let what = crate::scrub::describe_damage(damaged);
        let marked = (self.storage).with_store_mut(|s| s.mark_copies_incomplete());
        if let Err(e) = marked {
            self.storage.read(|s| s.damage_not_dealt_with(damaged));
            tracing::error!(
                "node {}: {what}; cannot mark its copies incomplete ({e}), so the damage stays in place and reads of it keep failing",
                self.me()
            );
            return;
        }
        self.restoring.store(true, Ordering::Release);
        *lock(&self.restored_from) = RestoreProgress::default();
        let ops = (damaged.iter())
            .map(|d| WriteOp::drop_copy(d.namespace, d.key.clone()))
            .collect();
        let forgotten = {
            let _shared = self.gate.read().await;
            self.write_counting_applied(ops).await
        };
        if forgotten < damaged.len() as u64 {
            // Some forget failed (or found the key written since): what
            // still reads damaged is found again.
            self.storage.read(|s| s.damage_not_dealt_with(damaged));
        }
        tracing::error!(
            "node {}: synced data went bad under the running node: {what}; forgot {forgotten} of those keys here and is restoring from its replicas (it serves reads and writes, but no handoff and no marker collection until every other member's copies are merged here)",
            self.me()
        );
    }
}
