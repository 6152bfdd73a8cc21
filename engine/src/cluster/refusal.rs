//! Why a node refused a request, as a type: the peer protocol carries a
//! [`Refusal`] (not a code string built at each site), the coordinator decides
//! on it (retry under a newer ring, push its map first, try another source),
//! and the Redis front end turns it into the error word a client sees
//! ([`Refusal::code`]). Whether the refused write may still have happened is a
//! property of the variant ([`Refusal::outcome`]), so "not made" versus
//! "outcome unknown", what the history checker judges, is decided in one place.

use serde::{Deserialize, Serialize};

/// What a refused write means for the client: it did not happen, or it may
/// still have happened (the client must read to know).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    NotMade,
    Unknown,
}

/// Why a request was refused. Each variant names the cause; the free text of a
/// [`RemoteError`] only adds the numbers (versions, counts, limits).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Sent under an older ring than the receiver's: the sender should take
    /// the receiver's map.
    StaleRing,
    /// The receiver's map is older than the request's ring: the sender should
    /// push its map first.
    MapBehind,
    /// A replica write, proxied write or forget arrived later than
    /// `replica_write_age_max_ms` after it was sent: its sender gave up on it.
    TooOld,
    /// The receiver is restoring its data from its replicas and cannot be a
    /// handoff source yet.
    Restoring,
    /// A transient state (a newer ring not learned yet, a catch-up that could
    /// not reach enough old owners): nothing was done, retry.
    TryAgain,
    /// Fewer replicas than the quorum confirmed in time. A write may still be
    /// applied on those that did.
    NoQuorum,
    /// Storage or a peer failed mid-request, or an answer was lost: the write
    /// may or may not have been applied.
    OutcomeUnknown,
    /// The receiver keeps no hints (a node without a hint store, or one out of
    /// the ring).
    NoHints,
    /// No replica of the key's partition is reachable: nothing was done.
    ClusterDown,
    /// A scan or listing would be incomplete: some partition had no reachable
    /// replica.
    Partial,
    /// The store is poisoned after a failed sync and takes no writes.
    ReadOnly,
    /// The disk is full: nothing was written.
    DiskFull,
    /// The write would leave more concurrent siblings than `siblings_max`.
    TooManySiblings,
    /// A malformed or over-limit request, or a read the store could not serve.
    Invalid,
}

impl Refusal {
    /// The Redis error word a client sees (the first word of the error line).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::StaleRing => "STALERING",
            Refusal::MapBehind => "MAPBEHIND",
            Refusal::TooOld => "TOOOLD",
            Refusal::Restoring => "RESTORING",
            Refusal::TryAgain => "TRYAGAIN",
            Refusal::NoQuorum => "NOQUORUM",
            Refusal::OutcomeUnknown => "IOERR",
            Refusal::NoHints => "NOHINTS",
            Refusal::ClusterDown => "CLUSTERDOWN",
            Refusal::Partial => "PARTIAL",
            Refusal::ReadOnly => "READONLY",
            Refusal::DiskFull => "DISKFULL",
            Refusal::TooManySiblings => "SIBLINGS",
            Refusal::Invalid => "ERR",
        }
    }

    /// The refusal a client read from an error line's first word (`None`: an
    /// error no node sends as a refusal, such as a syntax error).
    pub fn from_code(code: &str) -> Option<Refusal> {
        ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether a write refused this way may still have happened.
    pub fn outcome(self) -> Outcome {
        match self {
            Refusal::NoQuorum | Refusal::OutcomeUnknown => Outcome::Unknown,
            _ => Outcome::NotMade,
        }
    }
}

/// A refusal and its detail, as it travels between nodes and up to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub refusal: Refusal,
    /// Human detail: versions, counts, limits, the peer that failed.
    pub message: String,
}

impl RemoteError {
    pub fn new(refusal: Refusal, message: impl Into<String>) -> RemoteError {
        RemoteError {
            refusal,
            message: message.into(),
        }
    }

    /// The Redis error line: `CODE message`.
    pub fn line(&self) -> String {
        format!("{} {}", self.refusal.code(), self.message)
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

impl std::error::Error for RemoteError {}

/// Every refusal, for [`Refusal::from_code`].
const ALL: [Refusal; 14] = [
    Refusal::StaleRing,
    Refusal::MapBehind,
    Refusal::TooOld,
    Refusal::Restoring,
    Refusal::TryAgain,
    Refusal::NoQuorum,
    Refusal::OutcomeUnknown,
    Refusal::NoHints,
    Refusal::ClusterDown,
    Refusal::Partial,
    Refusal::ReadOnly,
    Refusal::DiskFull,
    Refusal::TooManySiblings,
    Refusal::Invalid,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_own_upper_case_code() {
        let codes: std::collections::BTreeSet<&str> = ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), ALL.len());
        for code in codes {
            assert!(code.chars().all(|c| c.is_ascii_uppercase()), "{code}");
            let refusal = Refusal::from_code(code).expect("a code reads back");
            assert_eq!(refusal.code(), code);
        }
        assert_eq!(Refusal::from_code("WRONGTYPE"), None);
    }

    #[test]
    fn only_lost_answers_leave_a_write_unknown() {
        let unknown: Vec<Refusal> = ALL
            .into_iter()
            .filter(|r| r.outcome() == Outcome::Unknown)
            .collect();
        assert_eq!(unknown, [Refusal::NoQuorum, Refusal::OutcomeUnknown]);
    }

    #[test]
    fn a_refusal_survives_the_wire() {
        for refusal in ALL {
            let sent = RemoteError::new(refusal, "ring 3, this node has 4");
            let bytes = postcard::to_allocvec(&sent).expect("encode");
            let got: RemoteError = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(got, sent);
            assert_eq!(
                got.line(),
                format!("{} ring 3, this node has 4", refusal.code())
            );
        }
    }
}
