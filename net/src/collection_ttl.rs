//! A hash's, set's, list's or sorted set's time to live, on one node: EXPIRE
//! and its kin, PERSIST and TTL of a collection, and the deletion of
//! collections whose deadline passed, before any command looks at one (as
//! Redis expires a key on access) and in the background.
//!
//! A collection's deadline is one record (`fields::deadlines_namespace`), so
//! EXPIRE costs the same whatever the collection holds, and writes to its
//! elements keep it (HSET on a hash with a TTL keeps the TTL, as in Redis).
//! It binds while the collection holds elements: deleting or replacing the
//! key deletes it too (`types::key_deletes`), and a record left behind by a
//! collection emptied element by element is dropped before the key is next
//! used. Every delete covers only what was read (`Store::
//! collection_deadline_chores`), so a write made after the expiry survives.
//!
//! On a cluster, EXPIRE of a collection is refused
//! (`data::EXPIRE_COLLECTION_ON_CLUSTER`), so no record exists there.
//!
//! Must not touch: string deadlines (`expire`: they belong to each value),
//! how a write travels (`backend`).

use crate::backend::{write_stored, Backend, Place};
use crate::elements::write_all;
use crate::expire::TtlQuery;
use crate::keyspace::Kind;
use crate::resp::Reply;
use crate::storage::Storage;
use bytes::Bytes;
use shoal_engine::fields::{deadlines_namespace, field_prefix, kind_bits};
use shoal_engine::{Deadline, WriteOp};

/// Deletes per batch when an expired collection goes.
const CHORE_OPS_MAX: usize = 512;
/// Batches one key's chores may take before the command gives up on it:
/// 33M elements.
const CHORE_ROUNDS_PER_KEY_MAX: usize = 1 << 16;
/// Collections active expiry looks at per round, and the deletes it writes.
const COLLECTIONS_PER_ROUND_MAX: usize = 16;
const ACTIVE_OPS_PER_ROUND_MAX: usize = 256;

impl Backend<'_> {
    /// The deadline of collection `key` in database `ns`, wall ms (`None`:
    /// none, or a cluster). No look at the store while no collection of this
    /// node has a deadline (DEL, KEYS and SCAN ask for every key).
    pub fn collection_deadline(&self, ns: u8, key: &[u8]) -> Option<u64> {
        let Place::Local(storage) = &self.place else {
            return None;
        };
        if !storage.holds_collection_deadlines() {
            return None;
        }
        let dns = self.stored(deadlines_namespace(ns));
        storage.read(|s| s.collection_deadline(dns, &field_prefix(key)))
    }

    /// The delete of collection `key`'s deadline record, when it has one.
    pub fn deadline_delete(&self, ns: u8, key: &[u8]) -> Option<WriteOp> {
        self.collection_deadline(ns, key)?;
        let stored = Bytes::from(field_prefix(key));
        Some(WriteOp::delete(deadlines_namespace(ns), stored))
    }

    /// Before a command looks at `keys`: each collection among them whose
    /// deadline passed is deleted, and each deadline record that no longer
    /// binds, so the command finds what Redis would. Free when no collection
    /// of this node has a deadline.
    pub async fn settle_collection_deadlines<'k>(
        &self,
        ns: u8,
        keys: impl Iterator<Item = &'k Bytes>,
    ) -> Result<(), Reply> {
        let Place::Local(storage) = &self.place else {
            return Ok(());
        };
        if !storage.holds_collection_deadlines() {
            return Ok(());
        }
        let dns = self.stored(deadlines_namespace(ns));
        for key in keys {
            let prefix = field_prefix(key);
            for _ in 0..CHORE_ROUNDS_PER_KEY_MAX {
                let now_ms = self.now_ms();
                let chores = storage
                    .read(|s| s.collection_deadline_chores(dns, &prefix, now_ms, CHORE_OPS_MAX));
                match chores {
                    Some(ops) => write_stored(storage, ops).await?,
                    None => break,
                }
            }
        }
        Ok(())
    }
}

/// EXPIRE and its kin (`op`: the new deadline, and NX / XX / GT / LT as its
/// condition) or PERSIST (`Deadline::Never`) of collection `key` of `kind`,
/// on one node: 1 when applied, else 0. A deadline already past deletes the
/// collection, as Redis does.
pub async fn expire(backend: &Backend<'_>, ns: u8, kind: Kind, op: &WriteOp) -> Reply {
    let current_ms = backend.collection_deadline(ns, &op.key);
    let result = match op.deadline {
        Deadline::Never | Deadline::Keep => match backend.deadline_delete(ns, &op.key) {
            None => return Reply::Integer(0),
            Some(delete) => write_all(backend, vec![delete]).await,
        },
        Deadline::At(at_ms) => {
            if !op.condition.holds(true, current_ms, Some(at_ms)) {
                return Reply::Integer(0);
            }
            if at_ms <= backend.now_ms() {
                match crate::types::key_deletes(backend, ns, &op.key).await {
                    Ok(ops) => write_all(backend, ops).await,
                    Err(reply) => return reply,
                }
            } else {
                let record = deadline_record(ns, kind, &op.key, at_ms);
                write_all(backend, vec![record]).await
            }
        }
    };
    match result {
        Ok(()) => Reply::Integer(1),
        Err(reply) => reply,
    }
}

/// The write of collection `key`'s deadline record: it names the kind it
/// binds, and expires at `at_ms`.
pub fn deadline_record(ns: u8, kind: Kind, key: &[u8], at_ms: u64) -> WriteOp {
    let stored = Bytes::from(field_prefix(key));
    let kind_mark = Bytes::copy_from_slice(&[kind_bits(kind.namespace(ns))]);
    let mut record = WriteOp::put(deadlines_namespace(ns), stored, kind_mark);
    record.deadline = Deadline::At(at_ms);
    record
}

/// TTL and its kin of collection `key`.
pub fn ttl(backend: &Backend<'_>, ns: u8, key: &[u8], query: TtlQuery) -> Reply {
    query.reply_deadline(backend.collection_deadline(ns, key), backend.now_ms())
}

/// Active expiry of collections: up to [`COLLECTIONS_PER_ROUND_MAX`] whose
/// deadline passed, up to [`ACTIVE_OPS_PER_ROUND_MAX`] deletes in all (a
/// large collection goes over several rounds). `Err`: storage refused.
pub async fn expire_due(storage: &Storage) -> Result<usize, Reply> {
    if !storage.holds_collection_deadlines() {
        return Ok(0);
    }
    let now_ms = storage.wall_ms();
    let ops = storage.read(|s| {
        let mut ops = Vec::new();
        for (dns, prefix) in s.due_collection_deadlines(now_ms, COLLECTIONS_PER_ROUND_MAX) {
            let room = ACTIVE_OPS_PER_ROUND_MAX.saturating_sub(ops.len());
            if room == 0 {
                break;
            }
            ops.extend(
                s.collection_deadline_chores(dns, &prefix, now_ms, room)
                    .unwrap_or_default(),
            );
        }
        ops
    });
    let deleted = ops.len();
    if deleted > 0 {
        write_stored(storage, ops).await?;
    }
    Ok(deleted)
}
