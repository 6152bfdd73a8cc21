//! The cluster's decisions, sans-IO: the peer protocol's messages ([`wire`]), the
//! failure detector ([`detector`]) and what it remembers of peers' lives
//! ([`lives`], kept in a file across restarts), the quorum rounds a coordinator runs for
//! each write and read ([`quorum`]), a coordinated batch of writes from its
//! own copies to its clients' answers ([`coordination`]), a batch of quorum
//! reads with their blocking read repair ([`reading`]), a keyspace listing
//! gathered from every member ([`listing`]), one anti-entropy exchange's budgets and
//! completeness ([`exchange`]), one incoming owner's pull of a partition in a ring
//! change ([`handoff_pull`]), why a request is refused ([`refusal`]), whether a peer's request is served
//! ([`admission`]), when a restoring node is whole again ([`restore`]), the agreement that lets delete markers
//! go ([`tombstones`]) and one primary's round of it ([`marker_round`]). Placement is [`crate::placement`]; anti-entropy
//! digests are [`crate::digest`].
//!
//! Must not touch: sockets, tasks, clocks. Time comes in as `now_ms` arguments;
//! outputs are values the driver (`shoal-net`'s `cluster` module) acts on.

pub mod admission;
pub mod coordination;
pub mod detector;
pub mod exchange;
pub mod handoff_pull;
pub mod hints;
pub mod listing;
pub mod lives;
pub mod map;
pub mod marker_round;
pub mod quorum;
pub mod reading;
pub mod refusal;
pub mod restore;
pub mod tombstones;
pub mod wire;
