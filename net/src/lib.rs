//! `shoal-net` owns Shoal's contact with the world: the file `Disk`, the tokio
//! runtime adapter, the storage driver (group commit), the RESP codec and server,
//! the authenticated peer transport and the cluster driver that moves the
//! engine's cluster decisions over it, and the `shoal` binary. It must not decide
//! anything the engine decides (versions, recovery, placement, quorums, liveness):
//! it moves bytes and time to and from `shoal-engine`.
//!
//! Built with `--cfg madsim`, `tokio` here is madsim's, and the same server runs
//! inside the simulator (`shoal-sim`) on the in-memory disk.

pub mod admin;
pub mod backend;
pub mod backup;
#[cfg(not(madsim))]
pub mod backup_tool;
pub mod bits;
pub mod blocking;
pub mod clients;
pub mod cluster;
pub mod collection_ttl;
pub mod command_stats;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod data;
pub mod databases;
pub mod elements;
pub mod expire;
pub mod filedisk;
pub mod glob;
pub mod hash;
pub mod histogram;
#[cfg(not(madsim))]
pub mod http;
pub mod info;
pub mod inspect;
pub mod keyspace;
pub mod list;
pub mod maxmemory;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod redis_cluster;
pub mod reply;
pub mod resp;
pub mod routing;
pub mod runtime;
pub mod salvage;
pub mod scrub;
pub mod server;
pub mod set;
pub mod shared;
pub mod slowlog;
pub mod sort;
pub mod storage;
#[cfg(not(madsim))]
pub mod tls;
pub mod transaction;
pub mod types;
pub mod zcombine;
pub mod zrange;
pub mod zset;
