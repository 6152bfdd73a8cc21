//! What a store tells an observer about the writes it makes, for a checker that
//! must know what happened even when no client learned it: a request that timed
//! out may still be applied (late, after writes that were acknowledged meanwhile)
//! and supersede them, and compaction may collect a delete marker and with it the
//! context a client saw. Only a test harness installs one (the simulator); a store
//! without one pays nothing.

use super::{Forget, WriteError, WriteOp, WriteOutcome};
use crate::version::{Dot, VersionVector};
use bytes::Bytes;

/// A change a prepared batch made that a checker must know of, and the context
/// it superseded. Replica merges (nothing lost, nothing minted) and dropped copies
/// of partitions moved away are not reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub namespace: u8,
    pub key: Bytes,
    pub change: Change,
    pub superseded: VersionVector,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A client write (`value: Some`) or delete (its marker's dot) minted `dot`.
    Minted { value: Option<Bytes>, dot: Dot },
    /// The key's delete markers were forgotten by agreement
    /// (`WriteOp::forget_if`): `superseded` is their context.
    ForgotMarkers,
}

/// Sees a store's writes. Calls are made under the store's lock or from the
/// syncing task: keep them short and never call back into the store.
pub trait StoreObserver: Send + Sync {
    /// Batch `batch_seq` was written (unsynced) with these changes. Until
    /// `synced` reports it, whether it took effect is unknown: a crash may drop,
    /// keep or tear it.
    fn prepared(&self, batch_seq: u64, applied: Vec<Applied>);

    /// Batch `batch_seq`'s sync succeeded: its writes are durable.
    fn synced(&self, batch_seq: u64);

    /// Compaction collected the key's delete markers: it now reads as absent, and
    /// the markers' context is gone with them. When their record no longer reads
    /// (damaged), `context` is every dot this store minted, which bounds it.
    fn collected(&self, namespace: u8, key: &[u8], context: &VersionVector);
}

/// The changes of a batch's operations that an observer is told of (see
/// [`Applied`]), from each operation and its result.
pub(super) fn reported_changes(
    ops: &[WriteOp],
    results: &[Result<WriteOutcome, WriteError>],
) -> Vec<Applied> {
    ops.iter()
        .zip(results)
        .filter(|(op, _)| op.merge.is_none())
        .filter_map(|(op, result)| {
            let outcome = result.as_ref().ok().filter(|o| o.applied)?;
            let change = match op.forget {
                Some(Forget::MarkersHashing(_)) => Change::ForgotMarkers,
                Some(Forget::Copy) => return None,
                None => Change::Minted {
                    value: outcome.minted_value(),
                    dot: outcome.dot?,
                },
            };
            Some(Applied {
                namespace: op.namespace,
                key: op.key.clone(),
                change,
                superseded: outcome.superseded.clone(),
            })
        })
        .collect()
}
