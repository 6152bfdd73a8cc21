//! G7's heal bound and the large-value knobs of the cluster seeds.
//!
//! After a long isolation, madsim's TCP keeps an open connection in a doubling
//! retransmission backoff (capped at 10 s) as Linux does (capped at 120 s): the
//! cut healed, but nothing moves on that connection until its next retry. A node
//! that keeps using it stays cut off long after the heal. The probe here writes
//! through the healed node from a fresh client connection until a write is
//! acknowledged; more than [`HEAL_SERVE_BOUND_MS`] after the heal is a failure.
//!
//! Large values: some seeds write values of up to [`LARGE_VALUE_MAX_BYTES`] with
//! a peer frame limit of [`LARGE_FRAME_BODY_MAX_BYTES`] on a ring of
//! [`LARGE_VALUE_PARTITIONS`], so one partition's differing keys add up to many
//! frames' worth: only a repair stream bounded in bytes as well as keys gets a
//! node that missed them whole again.

use crate::client::RespConn;
use shoal_net::resp::Reply;
use std::net::SocketAddr;
use std::time::Duration;

/// Writes through every node succeed again within this of a heal (G7).
pub const HEAL_SERVE_BOUND_MS: u64 = 2_000;
/// Between two probe writes.
const PROBE_INTERVAL_MS: u64 = 100;
/// A probe write (connect and reply) waits this long at most.
const PROBE_WRITE_TIMEOUT_MS: u64 = 1_500;
/// The probe gives up after this (the failure then says "never").
const PROBE_GIVE_UP_MS: u64 = 30_000;

/// Largest value a large-value seed writes: an eighth of the record limit, so
/// that the siblings faults leave (five and more were seen) still merge into
/// one record. (At up to a quarter, cluster seed 20983035264 left five
/// concurrent values of about 12 KiB on one replica and two on the others:
/// their merge was over the record limit, refused on every repair, and the
/// replicas never converged. That is the product's documented limit, not a
/// loss: every replica keeps its siblings and reads merge them.)
pub const LARGE_VALUE_MAX_BYTES: usize = 8 << 10;
/// Ring partitions of a large-value seed: few, so that one partition's
/// differing keys add up to more than a frame (an exchange repairs a partition
/// at a time; with the default 256 partitions each held about one key, and a
/// repair bounded by key count alone never overflowed a frame).
pub const LARGE_VALUE_PARTITIONS: u32 = 8;
/// Keys a large-value seed writes at least.
pub const LARGE_VALUE_KEYS_MIN: u32 = 256;
/// Peer frame limit of a large-value seed.
pub const LARGE_FRAME_BODY_MAX_BYTES: usize = 96 << 10;
/// Record limit of a large-value seed: a largest record fits in a frame with a
/// repair batch's worth beside it.
pub const LARGE_RECORD_SIZE_MAX_BYTES: u32 = 64 << 10;
/// Bytes per repair request in a large-value seed.
pub const LARGE_REPAIR_BATCH_BYTES_MAX: usize = 16 << 10;
/// Bytes per anti-entropy round in a large-value seed.
pub const LARGE_ANTI_ENTROPY_ROUND_BYTES_MAX: usize = 256 << 10;

/// Writes `heal-probe-{node}` through `addr` until one is acknowledged; how many
/// ms after the start that was (`None`: not within `PROBE_GIVE_UP_MS`).
pub async fn first_acknowledged_write_ms(addr: SocketAddr, node: u32) -> Option<u64> {
    let start = tokio::time::Instant::now();
    let key = format!("heal-probe-{node}");
    let mut attempt = 0u64;
    while start.elapsed() < Duration::from_millis(PROBE_GIVE_UP_MS) {
        attempt += 1;
        let value = attempt.to_string();
        if let Ok(mut conn) = RespConn::connect(addr, PROBE_WRITE_TIMEOUT_MS).await {
            let args: [&[u8]; 3] = [b"SET", key.as_bytes(), value.as_bytes()];
            if let Ok(Reply::Simple(ok)) = conn.call(&args, PROBE_WRITE_TIMEOUT_MS).await {
                if ok == "OK" {
                    return Some(start.elapsed().as_millis() as u64);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(PROBE_INTERVAL_MS)).await;
    }
    None
}
