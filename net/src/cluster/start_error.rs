//! Why a cluster node could not start ([`Cluster::start`](super::Cluster::start)),
//! as a type: a configuration that can make no cluster, a saved map that cannot
//! be read, a peer address taken, or a disk that failed under a start-time
//! write. A supervisor tells a disk failure (restart the process) from a
//! configuration error (stop and say why) by the variant, never by the text.

use super::{ClusterConfig, NODE_ID_LIMIT};
use shoal_engine::cluster::map::{MapError, MapFileError};
use shoal_engine::{DiskError, NodeId};
use std::fmt;

/// A configuration that can make no cluster.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Node ids must leave the bits above [`NODE_ID_LIMIT`] to the dot
    /// actor's epoch.
    NodeIdTooLarge { node: NodeId },
    /// This node is not in the member list and was given no address.
    NoAddress { node: NodeId },
    /// The cluster's `r` or `w` is outside `1..=n`.
    Quorum { r: u8, w: u8, n: u8 },
    /// A namespace's own `r` or `w` is outside `1..=n`, or the namespace is
    /// not one of 0..=15.
    NamespaceQuorum { namespace: u8, r: u8, w: u8, n: u8 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NodeIdTooLarge { node } => write!(
                f,
                "node id {node} is too large: node ids must be below {NODE_ID_LIMIT} (the bits above are the epoch of a node's dot actor)"
            ),
            ConfigError::NoAddress { node } => write!(
                f,
                "node id {node} is not in the member list and has no address of its own"
            ),
            ConfigError::Quorum { r, w, n } => {
                write!(f, "r={r} and w={w} must each be in 1..={n} (n)")
            }
            ConfigError::NamespaceQuorum { namespace, r, w, n } => write!(
                f,
                "namespace {namespace}: r={r} and w={w} must each be in 1..={n} (n), for a namespace in 0..=15"
            ),
        }
    }
}

/// Why [`Cluster::start`](super::Cluster::start) failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    /// The saved cluster map could not be read or the first one saved.
    MapFile(MapFileError),
    /// The first ring could not be built from the member list.
    FirstRing(MapError),
    /// The peer address could not be listened on.
    Listen {
        address: String,
        cause: std::io::Error,
    },
    /// The data directory failed under a start-time read or write of `file`
    /// (its id, `RESTORING`, a new dot actor and incarnation).
    Disk {
        file: &'static str,
        cause: DiskError,
    },
}

impl StartError {
    /// Whether the disk failed (the process should exit and be restarted), as
    /// opposed to a configuration or address that no restart mends.
    pub fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            StartError::Disk { .. } | StartError::MapFile(MapFileError::Disk(_))
        )
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::MapFile(e) => write!(f, "{e}"),
            StartError::FirstRing(e) => write!(f, "cannot build the first ring: {e}"),
            StartError::Listen { address, cause } => {
                write!(f, "cannot listen for peers on {address}: {cause}")
            }
            StartError::Disk { file, cause } => write!(f, "{file}: {cause}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Check what `config` promises before anything is opened or bound.
pub(super) fn check_config(config: &ClusterConfig) -> Result<(), ConfigError> {
    let me = config.node_id;
    if let Some(node) = config
        .members
        .keys()
        .chain([&me])
        .find(|id| **id >= NODE_ID_LIMIT)
    {
        return Err(ConfigError::NodeIdTooLarge { node: *node });
    }
    if config.self_addr.peer.is_empty() {
        return Err(ConfigError::NoAddress { node: me });
    }
    let n = config.replicas_n;
    let quorum = 1..=n;
    let (r, w) = (config.read_quorum, config.write_quorum);
    if !quorum.contains(&r) || !quorum.contains(&w) {
        return Err(ConfigError::Quorum { r, w, n });
    }
    for (namespace, q) in &config.namespace_quorums {
        if *namespace >= 16 || !quorum.contains(&q.r) || !quorum.contains(&q.w) {
            return Err(ConfigError::NamespaceQuorum {
                namespace: *namespace,
                r: q.r,
                w: q.w,
                n,
            });
        }
    }
    Ok(())
}
