//! The runtime seam: what the node's driver needs from the world, so the same code
//! runs on tokio in production and inside madsim's simulation. Implementations live
//! in `shoal-net` (which, built with `--cfg madsim`, is the simulated one).

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait Runtime: Clone + Send + Sync + 'static {
    /// Wall-clock milliseconds since the Unix epoch (feeds the hybrid logical clock;
    /// may jump, may be skewed between nodes).
    fn wall_ms(&self) -> u64;
    /// Milliseconds since an arbitrary start, never decreasing (timers, timeouts).
    fn monotonic_ms(&self) -> u64;
    /// A future that completes after `duration_ms`.
    fn sleep_ms(&self, duration_ms: u64) -> BoxFuture;
    /// Run a task concurrently.
    fn spawn(&self, task: BoxFuture);
    /// A random number from the runtime's seeded generator.
    fn random_u64(&self) -> u64;
}
