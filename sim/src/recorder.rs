//! The history as the run records it: client operations, fault notes, the
//! quiescence verdict and final states, stamped with simulated milliseconds since
//! the run began, in the order they happened. Also the run's side notes that are
//! not history: anomalies (replies of an unexpected shape: a failed run) and
//! detections (damage the store reported instead of returning it).

use crate::lock;
use shoal_checker::{Event, Fault, Function, Key, OkResult, OpHeader};
use std::sync::Mutex;
use tokio::time::Instant;

/// Events a run may record; past it clients stop issuing operations.
pub const EVENTS_MAX: usize = 2_000_000;
/// Notes of each kind kept; later ones are counted only.
const NOTES_MAX: usize = 1000;

pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
    anomalies: Mutex<Notes>,
    detections: Mutex<Vec<(Option<Key>, String)>>,
}

#[derive(Default, Clone)]
pub struct Notes {
    pub kept: Vec<String>,
    pub dropped: usize,
}

impl Notes {
    fn push(&mut self, note: String) {
        if self.kept.len() < NOTES_MAX {
            self.kept.push(note);
        } else {
            self.dropped += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            anomalies: Mutex::new(Notes::default()),
            detections: Mutex::new(Vec::new()),
        }
    }

    /// Simulated milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn is_full(&self) -> bool {
        lock(&self.events).len() >= EVENTS_MAX
    }

    pub fn push(&self, event: Event) {
        lock(&self.events).push(event);
    }

    pub fn header(&self, process: u64, f: Function, key: &Key) -> OpHeader {
        OpHeader {
            process,
            f,
            key: key.clone(),
            time_ms: self.now_ms(),
            node: crate::NODE_ID,
        }
    }

    pub fn invoke(&self, process: u64, f: Function, key: &Key, value: Option<String>) {
        let op = self.header(process, f, key);
        self.push(Event::Invoke {
            op,
            value,
            expires_ms: None,
        });
    }

    /// A write whose value expires `ttl_ms` from now (recorded in run time).
    pub fn invoke_expiring(&self, process: u64, key: &Key, value: String, ttl_ms: u64) {
        let op = self.header(process, Function::Write, key);
        let expires_ms = Some(op.time_ms + ttl_ms);
        self.push(Event::Invoke {
            op,
            value: Some(value),
            expires_ms,
        });
    }

    /// A collection expire whose deadline is `ttl_ms` from now (run time).
    pub fn invoke_expire(&self, process: u64, collection: &Key, ttl_ms: u64) {
        let op = self.header(process, Function::Expire, collection);
        let expires_ms = Some(op.time_ms + ttl_ms);
        self.push(Event::Invoke {
            op,
            value: None,
            expires_ms,
        });
    }

    pub fn invoke_persist(&self, process: u64, key: &Key) {
        let op = self.header(process, Function::Persist, key);
        self.push(Event::Invoke {
            op,
            value: None,
            expires_ms: None,
        });
    }

    pub fn ok(&self, process: u64, key: &Key, result: OkResult) {
        let op = self.header(process, result.function(), key);
        self.push(Event::Ok { op, result });
    }

    pub fn fail(&self, process: u64, f: Function, key: &Key) {
        let op = self.header(process, f, key);
        self.push(Event::Fail { op });
    }

    pub fn info(&self, process: u64, f: Function, key: &Key) {
        let op = self.header(process, f, key);
        self.push(Event::Info { op });
    }

    /// A fault note at the current time.
    pub fn fault(&self, what: impl Into<String>) {
        let fault = Fault {
            time_ms: self.now_ms(),
            what: what.into(),
        };
        self.push(Event::Fault(fault));
    }

    pub fn anomaly(&self, note: String) {
        lock(&self.anomalies).push(note);
    }

    /// Damage the store reported (for `key`, or the whole store) instead of
    /// returning it.
    pub fn detection(&self, key: Option<Key>, note: String) {
        let mut detections = lock(&self.detections);
        if detections.len() < NOTES_MAX {
            detections.push((key, note));
        }
    }

    pub fn anomalies(&self) -> Notes {
        lock(&self.anomalies).clone()
    }

    pub fn detections(&self) -> Vec<(Option<Key>, String)> {
        lock(&self.detections).clone()
    }

    /// The events so far, leaving them in place.
    /// How many events are recorded so far (a mark for [`Recorder::events_before`]).
    pub fn event_count(&self) -> usize {
        lock(&self.events).len()
    }

    /// The events recorded before `mark` (an earlier [`Recorder::event_count`]).
    pub fn events_before(&self, mark: usize) -> Vec<Event> {
        let events = lock(&self.events);
        events[..mark.min(events.len())].to_vec()
    }

    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *lock(&self.events))
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}
