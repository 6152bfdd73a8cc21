//! Three real `shoal` processes on loopback as one cluster (n=3, r=2, w=2): writes
//! through one node are read through another; one node is killed with kill -9
//! while a client keeps writing, restarted, and after anti-entropy converges,
//! `shoal inspect` on each stopped node's data directory shows every acknowledged
//! write on all three replicas.

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod collections;
mod counters;
mod expiry;
mod listing;
mod markers;
mod pins;
mod redis_cluster;
mod ring_changes;
mod scrub;
mod survival;
