//! How often a refused peer connection is logged. A member with the wrong
//! secret or certificate dials again every few hundred milliseconds; each
//! refusal is counted (`shoal_peer_auth_refusals`), but the log gets the
//! first refusal from a host and then at most one line per
//! [`REFUSAL_LOG_INTERVAL_MS`], saying how many went unlogged in between.
//!
//! Time comes in as an argument; the caller logs what this decides.

use std::collections::BTreeMap;

/// At most one refusal line per source host in this long.
pub(super) const REFUSAL_LOG_INTERVAL_MS: u64 = 10_000;
/// Hosts remembered at once; past it the one logged longest ago is forgotten.
const SOURCES_TRACKED_MAX: usize = 256;

#[derive(Default)]
pub(super) struct RefusalLog {
    sources: BTreeMap<String, Source>,
}

struct Source {
    logged_ms: u64,
    unlogged: u64,
}

impl RefusalLog {
    /// A connection from `addr` (`host:port`) was refused at `now_ms`: `Some(n)`
    /// when this one is to be logged, `n` the refusals from the host not
    /// logged since its last line; `None` to stay quiet.
    pub(super) fn refused(&mut self, addr: &str, now_ms: u64) -> Option<u64> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        if let Some(source) = self.sources.get_mut(host) {
            if now_ms.saturating_sub(source.logged_ms) < REFUSAL_LOG_INTERVAL_MS {
                source.unlogged += 1;
                return None;
            }
            let unlogged = std::mem::take(&mut source.unlogged);
            source.logged_ms = now_ms;
            return Some(unlogged);
        }
        if self.sources.len() >= SOURCES_TRACKED_MAX {
            let oldest = self
                .sources
                .iter()
                .min_by_key(|(_, source)| source.logged_ms)
                .map(|(host, _)| host.clone());
            if let Some(oldest) = oldest {
                self.sources.remove(&oldest);
            }
        }
        let source = Source {
            logged_ms: now_ms,
            unlogged: 0,
        };
        self.sources.insert(host.to_string(), source);
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_logged_first_then_once_per_interval_with_the_count() {
        let mut log = RefusalLog::default();
        assert_eq!(log.refused("10.0.0.9:50001", 1_000), Some(0));
        for port in 50002..50012 {
            assert_eq!(log.refused(&format!("10.0.0.9:{port}"), 2_000), None);
        }
        assert_eq!(
            log.refused("10.0.0.7:40000", 2_000),
            Some(0),
            "another host"
        );
        let next = 1_000 + REFUSAL_LOG_INTERVAL_MS;
        assert_eq!(log.refused("10.0.0.9:50100", next), Some(10));
        assert_eq!(log.refused("10.0.0.9:50101", next + 1), None);
    }

    #[test]
    fn the_hosts_remembered_are_bounded() {
        let mut log = RefusalLog::default();
        for i in 0..SOURCES_TRACKED_MAX as u64 + 10 {
            assert_eq!(log.refused(&format!("host{i}:1"), i), Some(0));
        }
        assert_eq!(log.sources.len(), SOURCES_TRACKED_MAX);
        assert!(
            !log.sources.contains_key("host0"),
            "the oldest is forgotten"
        );
    }
}
