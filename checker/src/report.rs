//! The verdict on one history: violations in the order they were detected, operation
//! counts, and the first violation's key timeline, printable for a person.

use crate::history::{Event, Function, History, Meta};
use crate::model::Key;
use crate::operations::Stamp;
use crate::timeline::Timeline;
use std::collections::BTreeMap;
use std::fmt;

/// How many violations after the first the printed report lists one per line.
pub const OTHER_VIOLATIONS_SHOWN_MAX: usize = 20;

/// Which guarantee a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    G1Durability,
    G2NoSilentLoss,
    G3Convergence,
    G4NoResurrection,
    G5NoGarbage,
    G6Sessions,
    Liveness,
    /// A value read after its deadline.
    Expiry,
    /// A counter's total below the sum of the additions acknowledged before it
    /// was read, or above the sum of all that may have happened by then.
    Counter,
    /// A queue lost an acknowledged push, handed one element out twice, or
    /// handed out something nobody pushed.
    Queue,
    /// The history itself does not hold together (a completion without an invoke...).
    /// `History::parse` rejects these; only histories built in code reach the checks.
    Malformed,
}

impl ViolationKind {
    pub fn guarantee(self) -> &'static str {
        match self {
            ViolationKind::G1Durability => "G1 durability",
            ViolationKind::G2NoSilentLoss => "G2 no silent loss",
            ViolationKind::G3Convergence => "G3 convergence",
            ViolationKind::G4NoResurrection => "G4 no resurrection",
            ViolationKind::G5NoGarbage => "G5 no garbage",
            ViolationKind::G6Sessions => "G6 sessions",
            ViolationKind::Liveness => "liveness",
            ViolationKind::Expiry => "expiry",
            ViolationKind::Counter => "counter",
            ViolationKind::Queue => "queue",
            ViolationKind::Malformed => "malformed history",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.guarantee())
    }
}

/// One broken guarantee, found at one event of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// None for violations of the whole run (liveness).
    pub key: Option<Key>,
    /// The run time of detection; None when found after the heal (final states,
    /// quiescence), which is after every run time.
    pub time_ms: Option<u64>,
    /// Index into `History::events` of the event where it was found (the number of
    /// events when it was found at the very end).
    pub event_index: usize,
    pub description: String,
}

impl Violation {
    /// A violation found at an event of the run.
    pub fn during_run(
        kind: ViolationKind,
        key: Option<Key>,
        at: Stamp,
        description: String,
    ) -> Violation {
        Violation {
            kind,
            key,
            time_ms: Some(at.time_ms),
            event_index: at.event_index,
            description,
        }
    }

    /// A violation found in the final states or the liveness phase.
    pub fn after_heal(
        kind: ViolationKind,
        key: Option<Key>,
        event_index: usize,
        description: String,
    ) -> Violation {
        Violation {
            kind,
            key,
            time_ms: None,
            event_index,
            description,
        }
    }

    /// Detection order: run time first, then the phase after the heal; history order
    /// within the same millisecond.
    pub fn detection_order(&self) -> (bool, u64, usize) {
        (
            self.time_ms.is_none(),
            self.time_ms.unwrap_or(0),
            self.event_index,
        )
    }

    fn when_text(&self) -> String {
        match self.time_ms {
            Some(time_ms) => format!("at {time_ms} ms"),
            None => "after the heal".to_string(),
        }
    }

    fn subject_text(&self) -> String {
        match &self.key {
            Some(key) => format!(" on {key}"),
            None => String::new(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}, {}: {}",
            self.kind,
            self.subject_text(),
            self.when_text(),
            self.description
        )
    }
}

/// How the operations of one function ended. Invokes never completed count as info.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

/// Counts per function, from the events alone.
pub fn count_outcomes(history: &History) -> BTreeMap<Function, OutcomeCounts> {
    let mut counts: BTreeMap<Function, OutcomeCounts> = Function::ALL
        .iter()
        .map(|&f| (f, OutcomeCounts::default()))
        .collect();
    let mut invokes_by_function: BTreeMap<Function, usize> = BTreeMap::new();
    for event in &history.events {
        let Some(op) = event.op() else { continue };
        let entry = counts.entry(op.f).or_default();
        match event {
            Event::Invoke { .. } => *invokes_by_function.entry(op.f).or_default() += 1,
            Event::Ok { .. } => entry.ok += 1,
            Event::Fail { .. } => entry.fail += 1,
            _ => entry.info += 1,
        }
    }
    for (f, invokes) in invokes_by_function {
        let entry = counts.entry(f).or_default();
        let completed = entry.ok + entry.fail + entry.info;
        entry.info += invokes.saturating_sub(completed);
    }
    counts
}

/// The verdict on one history.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub meta: Meta,
    pub op_counts: BTreeMap<Function, OutcomeCounts>,
    /// In detection order, first one first.
    pub violations: Vec<Violation>,
    /// The events around the first violation's key (or the run's faults and
    /// liveness when it has no key), bounded.
    pub first_timeline: Option<Timeline>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn first_violation(&self) -> Option<&Violation> {
        self.violations.first()
    }

    /// How many violations of each kind.
    pub fn kind_counts(&self) -> BTreeMap<ViolationKind, usize> {
        let mut counts = BTreeMap::new();
        for violation in &self.violations {
            *counts.entry(violation.kind).or_insert(0) += 1;
        }
        counts
    }

    fn write_verdict(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return writeln!(f, "PASS: no violations");
        }
        let kinds: Vec<String> = self
            .kind_counts()
            .iter()
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect();
        writeln!(
            f,
            "FAIL: {} violation(s) ({})",
            self.violations.len(),
            kinds.join(", ")
        )
    }

    fn write_run(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = &self.meta;
        let mut parts = Vec::new();
        if let Some(seed) = meta.seed {
            parts.push(format!("seed {seed}"));
        }
        let settings: Vec<String> = [("n", meta.n), ("r", meta.r), ("w", meta.w)]
            .iter()
            .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
            .collect();
        if !settings.is_empty() {
            parts.push(settings.join(" "));
        }
        parts.push(if meta.sessions {
            "sessions promised".to_string()
        } else {
            "sessions not promised".to_string()
        });
        if !meta.nodes.is_empty() {
            parts.push(format!("nodes {:?}", meta.nodes));
        }
        writeln!(f, "run: {}", parts.join(", "))
    }

    fn write_counts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "operations: {:>8} {:>8} {:>8}", "ok", "fail", "info")?;
        for (function, counts) in &self.op_counts {
            writeln!(
                f,
                "  {:<9} {:>8} {:>8} {:>8}",
                function.name(),
                counts.ok,
                counts.fail,
                counts.info
            )?;
        }
        Ok(())
    }

    fn write_first_violation(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.first_violation() else {
            return Ok(());
        };
        writeln!(
            f,
            "first violation: {}{}, {}",
            first.kind,
            first.subject_text(),
            first.when_text()
        )?;
        writeln!(f, "  {}", first.description)?;
        if let Some(timeline) = &self.first_timeline {
            write!(f, "{timeline}")?;
        }
        Ok(())
    }

    fn write_other_violations(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let others = self.violations.iter().skip(1);
        let others_count = self.violations.len().saturating_sub(1);
        if others_count == 0 {
            return Ok(());
        }
        writeln!(f, "other violations ({others_count}):")?;
        for violation in others.take(OTHER_VIOLATIONS_SHOWN_MAX) {
            writeln!(f, "  {violation}")?;
        }
        if others_count > OTHER_VIOLATIONS_SHOWN_MAX {
            writeln!(
                f,
                "  ... and {} more",
                others_count - OTHER_VIOLATIONS_SHOWN_MAX
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_verdict(f)?;
        self.write_run(f)?;
        self.write_counts(f)?;
        if self.passed() {
            return Ok(());
        }
        self.write_first_violation(f)?;
        self.write_other_violations(f)?;
        if let Some(seed) = self.meta.seed {
            writeln!(f, "replay: ci/sim --seed {seed}")?;
        }
        Ok(())
    }
}
