//! Preparing a batch: each write (a value, a delete, a replica's merge, a
//! forget or a read-modify-write) computed against the key's set as the
//! batch's earlier writes left it, and its record framed for one append.

use super::modify::Modify;
use super::staging::{Overlay, StagedKey};
use super::*;
use crate::counter::{counter_of, resolve, Counter, Resolved};

/// A key's set as a write in a batch finds it, and what the write's outcome
/// reports of it. Values expired at the batch's wall time read as absent.
struct Found {
    /// The key's directory key (empty for [`Found::nothing`]).
    dir_key: Box<[u8]>,
    set: SiblingSet,
    live: bool,
    winner: Option<Bytes>,
    winner_deadline_ms: Option<u64>,
    /// The key's record no longer reads: found as absent, and written over
    /// even when the write would leave it absent (`found_or_replaced`).
    damaged: bool,
}

impl Found {
    /// An absent key (a take that found no live key).
    fn nothing() -> Found {
        Found {
            dir_key: Box::default(),
            set: SiblingSet::default(),
            live: false,
            winner: None,
            winner_deadline_ms: None,
            damaged: false,
        }
    }

    /// The write changed nothing: the set stays as found.
    fn not_applied(self) -> WriteOutcome {
        WriteOutcome {
            applied: false,
            dot: None,
            superseded: VersionVector::new(),
            previous_winner: self.winner,
            previous_live: self.live,
            set: self.set,
        }
    }
}

/// Whether `op`'s condition holds on the key as `found`, for a write whose
/// value would expire at `deadline_ms`.
fn condition_holds(op: &WriteOp, found: &Found, deadline_ms: Option<u64>) -> bool {
    op.condition
        .holds(found.live, found.winner_deadline_ms, deadline_ms)
}

impl Store {
    /// Count a set of `siblings` this store is about to write.
    fn note_siblings(&mut self, siblings: usize, merged: bool) {
        self.stats.siblings_largest = self.stats.siblings_largest.max(siblings as u64);
        if merged && siblings > self.options.siblings_max {
            self.stats.sibling_merges_over_cap += 1;
        }
    }

    /// Computes and writes (unsynced) a batch. Every operation gets its own
    /// result; one refused operation does not refuse the others.
    pub fn prepare(&mut self, ops: &[WriteOp], wall_ms: u64) -> PreparedBatch {
        let mut batch = PreparedBatch {
            results: Vec::with_capacity(ops.len()),
            updates: Vec::new(),
            set_hashes: Vec::new(),
            deadlines: Vec::new(),
            sync_target: None,
            batch_seq: self.next_batch_seq,
            forgotten: 0,
            observer: self.observer.clone(),
        };
        if let Some(reason) = &self.poisoned {
            batch.results = ops
                .iter()
                .map(|_| Err(WriteError::Poisoned(reason.clone())))
                .collect();
            return batch;
        }
        let batch_seq = self.next_batch_seq;
        let mut overlay = Overlay::new();
        let mut frames: Vec<PendingFrame> = Vec::with_capacity(ops.len());
        for op in ops {
            let result = self.prepare_one(op, batch_seq, wall_ms, &mut overlay, &mut frames);
            let forgot_markers = matches!(op.forget, Some(Forget::MarkersHashing(_)));
            if forgot_markers && result.as_ref().is_ok_and(|o| o.applied) {
                batch.forgotten += 1;
            }
            batch.results.push(result);
        }
        if frames.is_empty() {
            return batch;
        }
        match self.append_frames(&frames) {
            Ok((placed, disk)) => {
                self.report_prepared(batch_seq, ops, &batch.results);
                self.next_batch_seq += 1;
                batch.sync_target = Some(disk);
                if self.digests.is_some() {
                    batch.set_hashes = frames.iter().map(|f| f.set_hash).collect();
                }
                batch.deadlines = frames.iter().map(|f| f.deadline_ms).collect();
                batch.updates = frames
                    .into_iter()
                    .zip(placed)
                    .map(|(frame, at)| (frame.dir_key, at.entry(frame.live)))
                    .collect();
                self.staged.stage(batch_seq, overlay, &batch.updates);
            }
            Err(err) => {
                if err == WriteError::DiskFull {
                    self.stats.disk_full_refusals += 1;
                }
                // Nothing of the batch was written, so every outcome computed
                // from it is void too: an op that found nothing to do may have
                // found so only because an earlier op of this batch (now refused)
                // changed the key in the overlay.
                for result in &mut batch.results {
                    if result.is_ok() {
                        *result = Err(err.clone());
                    }
                }
                batch.forgotten = 0;
            }
        }
        batch
    }

    fn prepare_one(
        &mut self,
        op: &WriteOp,
        batch_seq: u64,
        wall_ms: u64,
        overlay: &mut Overlay,
        frames: &mut Vec<PendingFrame>,
    ) -> Result<WriteOutcome, WriteError> {
        if op.key.len() > self.options.key_size_max_bytes {
            return Err(WriteError::KeyTooLarge {
                len_bytes: op.key.len(),
                max_bytes: self.options.key_size_max_bytes,
            });
        }
        let taken;
        let op = match op.take {
            None => op,
            Some(end) => match self.take_candidate(op.namespace, &op.key, end, overlay, wall_ms) {
                Some(key) => {
                    taken = WriteOp::delete(op.namespace, key);
                    &taken
                }
                None => return Ok(Found::nothing().not_applied()),
            },
        };
        let found = self.found_or_replaced(op, overlay, wall_ms)?;
        if let Some(forget) = op.forget {
            return self.prepare_forget(op, forget, found, batch_seq, overlay, frames);
        }
        if let Some(incoming) = &op.merge {
            return self.prepare_merge(op, incoming, found, batch_seq, overlay, frames);
        }
        self.prepare_write(op, found, (batch_seq, wall_ms), overlay, frames)
    }

    /// The first (or last) published key starting with `prefix` that is live
    /// after the batch's earlier writes and the staged batches. The first
    /// key live in the directory the walk passes is noted as the
    /// collection's live end, so the next walk starts there.
    fn take_candidate(
        &mut self,
        namespace: u8,
        prefix: &[u8],
        end: TakeEnd,
        overlay: &Overlay,
        now_ms: u64,
    ) -> Option<Bytes> {
        let mut first_live: Option<Box<[u8]>> = None;
        let mut live = |dk: &[u8], entry: &KeyEntry| {
            if entry.live && first_live.is_none() {
                first_live = Some(dk.into());
            }
            let pending = overlay.get(dk).map(|k| &k.set).or(self.staged.set(dk));
            let live = pending.map_or(entry.live, |set| set.winner_at(now_ms).is_some());
            live.then(|| Bytes::copy_from_slice(&dk[3..]))
        };
        let found = match end {
            TakeEnd::First => {
                (self.keydir.with_prefix(namespace, prefix)).find_map(|(k, e)| live(k, e))
            }
            TakeEnd::Last => {
                (self.keydir.with_prefix_rev(namespace, prefix)).find_map(|(k, e)| live(k, e))
            }
        };
        if let Some(first_live) = first_live {
            self.keydir.note_live_end(&first_live, end == TakeEnd::Last);
        }
        found
    }

    /// [`Self::found`], except that a replica's merge, or the forgetting of a
    /// copy, over a record that no longer reads finds the key absent: what it
    /// held is lost here and the replicas restore it (`scrub`). The store's
    /// copies are marked incomplete first, so no later mint claims a dot the
    /// lost record held.
    fn found_or_replaced(
        &mut self,
        op: &WriteOp,
        overlay: &Overlay,
        now_ms: u64,
    ) -> Result<Found, WriteError> {
        let replaces = op.merge.is_some() || op.forget == Some(Forget::Copy);
        match self.found(op, overlay, now_ms) {
            Err(WriteError::Corrupt(ReadError::Corrupt { .. }))
                if replaces && !cfg!(feature = "bug-merge-keeps-damage") =>
            {
                self.mark_copies_incomplete().map_err(WriteError::Disk)?;
                self.stats.damaged_records_replaced += 1;
                if let Some(entry) = self.keydir.get_key(op.namespace, &op.key) {
                    self.compaction.rewrite_soon(entry.segment);
                }
                Ok(Found {
                    dir_key: dir_key(op.namespace, &op.key),
                    damaged: true,
                    ..Found::nothing()
                })
            }
            found => found,
        }
    }

    /// The key's set as this write finds it: after the batch's earlier writes
    /// (`overlay`), then batches staged but not yet published, then the keydir.
    fn found(&self, op: &WriteOp, overlay: &Overlay, now_ms: u64) -> Result<Found, WriteError> {
        let dk = dir_key(op.namespace, &op.key);
        let set = match overlay.get(&dk).map(|k| &k.set).or(self.staged.set(&dk)) {
            Some(set) => set.clone(),
            None => match self.keydir.get(&dk) {
                Some(entry) => self.read_record(*entry).map_err(WriteError::Corrupt)?.set,
                None => SiblingSet::default(),
            },
        };
        let winner = set.winner_at(now_ms);
        Ok(Found {
            dir_key: dk,
            live: winner.is_some(),
            winner: set.string_value_at(now_ms),
            winner_deadline_ms: winner.and_then(|s| s.deadline_ms),
            set,
            damaged: false,
        })
    }

    /// A forget: applied only while its condition holds.
    fn prepare_forget(
        &mut self,
        op: &WriteOp,
        forget: Forget,
        found: Found,
        batch_seq: u64,
        overlay: &mut Overlay,
        frames: &mut Vec<PendingFrame>,
    ) -> Result<WriteOutcome, WriteError> {
        let current = &found.set;
        let applies = (found.damaged || !current.siblings.is_empty())
            && match forget {
                Forget::MarkersHashing(expected) => {
                    current.is_deleted() && crate::digest::set_hash(current) == expected
                }
                Forget::Copy => true,
            };
        if !applies {
            return Ok(found.not_applied());
        }
        // The set's context goes with it: never reissue a dot it covered.
        self.counter_floor = self.counter_floor.max(self.counter_issued_max + 1);
        let dk = found.dir_key;
        let (empty, limit) = (SiblingSet::default(), (batch_seq, FrameLimit::Record));
        self.stage_frame(op, dk, limit, empty, overlay, frames)?;
        Ok(WriteOutcome {
            applied: true,
            dot: None,
            superseded: found.set.context,
            previous_winner: found.winner,
            previous_live: found.live,
            set: SiblingSet::default(),
        })
    }

    /// A replica's merge: applied only when it changes the set.
    fn prepare_merge(
        &mut self,
        op: &WriteOp,
        incoming: &SiblingSet,
        found: Found,
        batch_seq: u64,
        overlay: &mut Overlay,
        frames: &mut Vec<PendingFrame>,
    ) -> Result<WriteOutcome, WriteError> {
        self.clock.observe(incoming.max_hlc());
        let mut next = found.set.clone();
        next.merge(incoming);
        if cfg!(feature = "bug-remove-wins") {
            remove_wins(op.namespace, &mut next);
        }
        if next == found.set && !found.damaged {
            return Ok(found.not_applied());
        }
        let limit = (batch_seq, FrameLimit::Record);
        let staged = self.stage_frame(op, found.dir_key, limit, next.clone(), overlay, frames);
        if let Err(WriteError::RecordTooLarge { .. }) = staged {
            self.stats.merges_over_record_limit += 1;
        }
        staged?;
        self.note_siblings(next.siblings.len(), true);
        Ok(WriteOutcome {
            applied: true,
            dot: None,
            superseded: VersionVector::new(),
            previous_winner: found.winner,
            previous_live: found.live,
            set: next,
        })
    }

    /// A coordinator's write (a value, a delete, or a read-modify-write):
    /// a fresh dot replacing what it covers, if its condition holds.
    fn prepare_write(
        &mut self,
        op: &WriteOp,
        found: Found,
        (batch_seq, wall_ms): (u64, u64),
        overlay: &mut Overlay,
        frames: &mut Vec<PendingFrame>,
    ) -> Result<WriteOutcome, WriteError> {
        let deadline_ms = match op.deadline {
            // Planted (checker self-test): EXPIRE writes the value again
            // without its deadline.
            _ if cfg!(feature = "bug-expire-drops-deadline")
                && matches!(op.modify, Some(Modify::Touch)) =>
            {
                None
            }
            Deadline::Never => None,
            Deadline::Keep => found.winner_deadline_ms,
            Deadline::At(at_ms) => Some(at_ms),
        };
        let (value, counter) = written_value(op, &found, (self.options.node_id, wall_ms), overlay)?;
        if let Some(len_bytes) = value.as_ref().map(Bytes::len) {
            let max_bytes = self.value_size_max_bytes();
            if len_bytes > max_bytes {
                return Err(WriteError::ValueTooLarge {
                    len_bytes,
                    max_bytes,
                });
            }
        }
        let untouched = matches!(op.modify, Some(Modify::Touch)) && !found.live;
        // A delete applies while any value is held, expired ones included
        // (expiry deletes those). A value whose deadline has passed is still
        // written, and reads as absent from the start: as in Redis, the key is
        // gone, and the write still supersedes what it covers.
        let nothing_to_delete = value.is_none() && found.set.is_deleted();
        if !condition_holds(op, &found, deadline_ms) || untouched || nothing_to_delete {
            return Ok(found.not_applied());
        }
        let covered = match &op.covers {
            Covers::Current => found.set.context.clone(),
            Covers::Context(ctx) => ctx.clone(),
        };
        let mut next = found.set;
        let hlc = self.clock.now(wall_ms);
        let dot = next.write_expiring(
            &covered,
            (self.options.node_id, self.counter_floor),
            hlc,
            value,
            deadline_ms,
        );
        self.counter_issued_max = self.counter_issued_max.max(dot.counter);
        match counter {
            Some(Counted::Added(counter)) => next.attach_counter(dot, counter, true),
            Some(Counted::Kept(counter)) => next.attach_counter(dot, counter, false),
            None => {}
        }
        self.stage_client_write(op, found.dir_key, batch_seq, &next, overlay, frames)?;
        Ok(WriteOutcome {
            applied: true,
            dot: Some(dot),
            superseded: covered,
            previous_winner: found.winner,
            previous_live: found.live,
            set: next,
        })
    }

    /// Stage a coordinator's write of `next`, unless it leaves more siblings
    /// than `siblings_max` or more than its share of a record
    /// ([`FrameLimit::ClientWrite`]): those are refused and counted.
    fn stage_client_write(
        &mut self,
        op: &WriteOp,
        dk: Box<[u8]>,
        batch_seq: u64,
        next: &SiblingSet,
        overlay: &mut Overlay,
        frames: &mut Vec<PendingFrame>,
    ) -> Result<(), WriteError> {
        if next.siblings.len() > self.options.siblings_max {
            self.stats.sibling_writes_refused += 1;
            return Err(WriteError::TooManySiblings {
                count: next.siblings.len(),
                max: self.options.siblings_max,
            });
        }
        let limit = FrameLimit::ClientWrite;
        let staged = self.stage_frame(op, dk, (batch_seq, limit), next.clone(), overlay, frames);
        if let Err(WriteError::SiblingsTooLarge { .. }) = staged {
            self.stats.sibling_writes_refused += 1;
        }
        staged?;
        self.note_siblings(next.siblings.len(), false);
        Ok(())
    }

    /// Tell the observer (if any) what batch `batch_seq` changed.
    fn report_prepared(
        &self,
        batch_seq: u64,
        ops: &[WriteOp],
        results: &[Result<WriteOutcome, WriteError>],
    ) {
        if let Some(observer) = &self.observer {
            observer.prepared(batch_seq, observer::reported_changes(ops, results));
        }
    }

    /// Encode the key's next record and queue it for the batch's append.
    fn stage_frame(
        &self,
        op: &WriteOp,
        dk: Box<[u8]>,
        (batch_seq, limit): (u64, FrameLimit),
        next: SiblingSet,
        overlay: &mut Overlay,
        frames: &mut Vec<PendingFrame>,
    ) -> Result<(), WriteError> {
        let body = RecordBodyRef {
            batch_seq,
            namespace: op.namespace,
            key: &op.key,
            set: &next,
        };
        // Room for the frame up front: growing it by doubling cost more
        // than encoding it.
        let estimate_bytes = FRAME_HEADER_BYTES + 32 + op.key.len() + next.size_bytes();
        let mut frame = Vec::with_capacity(estimate_bytes);
        encode_frame(&body, &mut frame);
        let max = self.frame_size_max_bytes();
        if frame.len() > max as usize {
            return Err(WriteError::RecordTooLarge {
                len_bytes: frame.len(),
                max_bytes: max,
            });
        }
        let client_max = max / self.options.write_sets_per_record.max(1);
        if limit == FrameLimit::ClientWrite && frame.len() > client_max as usize {
            return Err(WriteError::SiblingsTooLarge {
                len_bytes: frame.len(),
                max_bytes: client_max,
            });
        }
        let live = !next.is_deleted();
        let set_hash = if next.siblings.is_empty() {
            None
        } else if self.digests.is_some() {
            Some(crate::digest::set_hash(&next))
        } else {
            Some(0)
        };
        debug_assert_eq!(dk, dir_key(op.namespace, &op.key));
        let deadline_ms = next.deadline_ms();
        overlay.insert(
            dk.clone(),
            StagedKey {
                set: next,
                entry: None,
            },
        );
        frames.push(PendingFrame {
            dir_key: dk,
            bytes: frame,
            live,
            set_hash,
            deadline_ms,
        });
        Ok(())
    }
}

/// A counted write's counter (`crate::counter`).
enum Counted {
    /// This node added to it: its entry is stamped with the write's dot.
    Added(Counter),
    /// Carried unchanged to a new deadline (EXPIRE, PERSIST).
    Kept(Counter),
}

/// What a write writes: its value, or its read-modify-write applied to the
/// winner it found; a counted write (`Modify::CountBy`, by node `node` at
/// `now_ms`) also its counter.
fn written_value(
    op: &WriteOp,
    found: &Found,
    (node, now_ms): (NodeId, u64),
    overlay: &Overlay,
) -> Result<(Option<Bytes>, Option<Counted>), WriteError> {
    match op.modify {
        Some(Modify::CountBy(by)) => {
            let mut counter = counter_of(&found.set, now_ms, false).map_err(WriteError::Modify)?;
            counter.add(node, by).map_err(WriteError::Modify)?;
            return Ok((Some(counter.value()), Some(Counted::Added(counter))));
        }
        Some(Modify::CountByFloat(by)) => {
            let mut counter = counter_of(&found.set, now_ms, true).map_err(WriteError::Modify)?;
            counter.add_float(node, by).map_err(WriteError::Modify)?;
            return Ok((Some(counter.value()), Some(Counted::Added(counter))));
        }
        Some(Modify::Touch) => {
            // A counted key keeps counting across EXPIRE and PERSIST: the
            // new deadline goes on its merged counter, so increments made
            // concurrently elsewhere still merge with it.
            if let Resolved::Counted(counter) = resolve(found.set.live_at(now_ms)) {
                return Ok((Some(counter.value()), Some(Counted::Kept(counter))));
            }
        }
        _ => {}
    }
    let value = match &op.modify {
        Some(Modify::Touch) => found.winner.clone(),
        Some(modify) => modify
            .apply(found.winner.as_deref())
            .map_err(WriteError::Modify)?,
        None => op.value.clone(),
    };
    // Planted (checker self-test): a read-modify-write of a key an earlier
    // write of the same batch staged is applied twice, as if a coalescing
    // batch re-ran it.
    #[cfg(feature = "bug-modify-twice")]
    if let Some(modify) = op
        .modify
        .as_ref()
        .filter(|_| overlay.contains_key(&dir_key(op.namespace, &op.key)))
    {
        let twice = modify.apply(value.as_deref()).map_err(WriteError::Modify)?;
        return Ok((twice, None));
    }
    let _ = overlay;
    Ok((value, None))
}

/// Planted (checker self-test): a set member's replica merge lets a delete
/// marker beat a concurrent add (remove-wins, not add-wins).
fn remove_wins(namespace: u8, set: &mut SiblingSet) {
    let member =
        namespace == crate::fields::members_namespace(crate::fields::database_of(namespace));
    if member && set.siblings.iter().any(|s| s.value.is_none()) {
        set.siblings.retain(|s| s.value.is_none());
    }
}

/// How large a staged record may be. A coordinator's write may leave a set
/// of at most half a record (`StoreOptions::write_sets_per_record`), so that
/// the union of two replicas' copies, each written that way, still fits one
/// record: a repair merge over the record limit is refused every round, and
/// a node restoring from its replicas could never finish (cluster seed
/// 20795012524: blind writes through two lives filled each side's copy of a
/// key to the record limit, and their union was refused on every exchange).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameLimit {
    /// Merges, forgets and delete markers: the record limit.
    Record,
    /// A coordinator's write: its share of the record limit.
    ClientWrite,
}
