//! What the store did, whatever its clients learned: the simulator watches the
//! node's store (`StoreObserver`) and records in the history every client write
//! and delete that took effect, with the dot it minted and the context it
//! superseded, and every delete-marker collection (by compaction, or a cluster's
//! agreed forget) with the context it forgot.
//! Without these the checker cannot be exact: a request whose client timed out
//! (`info`) may be applied seconds later, after writes acknowledged meanwhile, and
//! supersede them; a collected marker takes the context a client saw with it.
//!
//! A write took effect when it became durable, not when it was prepared: a batch
//! counts once its sync succeeded. A batch whose sync never reported (the node was
//! killed, or the sync failed) may still have been kept whole by the crash; it
//! is settled at the next open, before the store mints a dot: a write took effect
//! exactly when the recovered context of its key covers its dot (recovery keeps a
//! prefix of the log, and any later record of the key that covers the dot was
//! built on this one, so covered means its record was kept); a forget, when the
//! recovered context no longer covers what it forgot. A forget is recorded when
//! its batch is durable, a moment before reads see it.

use crate::lock;
use crate::recorder::Recorder;
use shoal_checker::{Collection, Context, Dot, Effect, Event, Function, Key};
use shoal_engine::{Applied, Change, SiblingSet, Store, StoreObserver, VersionVector};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The node's effects, across its restarts (the store is new after each).
pub struct EffectLog {
    recorder: Arc<Recorder>,
    node: u32,
    /// Batches written and not yet known durable, by batch sequence.
    pending: Mutex<BTreeMap<u64, Vec<Applied>>>,
}

impl EffectLog {
    pub fn new(recorder: Arc<Recorder>, node: u32) -> Arc<EffectLog> {
        Arc::new(EffectLog {
            recorder,
            node,
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    /// Settle the batches left unsynced by the last life against what recovery
    /// kept, then watch `store`. Call right after `Store::open`, before any write.
    pub fn attach(self: &Arc<EffectLog>, store: &mut Store) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for applied in pending.into_values().flatten() {
            let recovered = store.get(applied.namespace, &applied.key).ok().flatten();
            if kept(&applied, recovered.as_ref()) {
                self.record(&applied);
            }
        }
        store.set_observer(self.clone());
    }

    fn record(&self, applied: &Applied) {
        let key = key(applied.namespace, &applied.key);
        let time_ms = self.recorder.now_ms();
        let superseded = context(&applied.superseded);
        let (value, dot) = match &applied.change {
            Change::Minted { value, dot } => (value, dot),
            Change::ForgotMarkers => {
                return self.recorder.push(Event::Collected(Collection {
                    key,
                    node: self.node,
                    time_ms,
                    context: superseded,
                }))
            }
        };
        self.recorder.push(Event::Effect(Effect {
            f: match value {
                Some(_) => Function::Write,
                None => Function::Delete,
            },
            key,
            node: self.node,
            time_ms,
            value: value
                .as_ref()
                .map(|value| String::from_utf8_lossy(value).into_owned()),
            dot: Dot::new(dot.node, dot.counter),
            superseded,
        }));
    }
}

/// Whether recovery kept the record of `applied`, judged by the key's recovered
/// set (None: absent).
fn kept(applied: &Applied, recovered: Option<&SiblingSet>) -> bool {
    match &applied.change {
        Change::Minted { dot, .. } => recovered.is_some_and(|set| set.context.covers(*dot)),
        Change::ForgotMarkers => {
            !recovered.is_some_and(|set| set.context.descends(&applied.superseded))
        }
    }
}

impl StoreObserver for EffectLog {
    fn prepared(&self, batch_seq: u64, applied: Vec<Applied>) {
        if !applied.is_empty() {
            lock(&self.pending).insert(batch_seq, applied);
        }
    }

    fn synced(&self, batch_seq: u64) {
        let applied = lock(&self.pending).remove(&batch_seq);
        for applied in applied.iter().flatten() {
            self.record(applied);
        }
    }

    fn collected(&self, namespace: u8, name: &[u8], markers: &VersionVector) {
        self.recorder.push(Event::Collected(Collection {
            key: key(namespace, name),
            node: self.node,
            time_ms: self.recorder.now_ms(),
            context: context(markers),
        }));
    }
}

fn key(namespace: u8, name: &[u8]) -> Key {
    crate::workload::key_of_stored(namespace, name)
}

fn context(vector: &VersionVector) -> Context {
    vector.entries().collect()
}
