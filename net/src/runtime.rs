//! [`Runtime`] over tokio. Built with `--cfg madsim`, `tokio` is madsim's, so the
//! same code is simulated: time is virtual and the RNG is the simulation's seeded one.

use shoal_engine::runtime::{BoxFuture, Runtime};

#[derive(Clone)]
pub struct TokioRuntime {
    start: tokio::time::Instant,
    #[cfg(not(madsim))]
    rng: std::sync::Arc<std::sync::Mutex<shoal_engine::rng::SplitMix64>>,
}

impl Default for TokioRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl TokioRuntime {
    pub fn new() -> Self {
        #[cfg(not(madsim))]
        let seed = {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ ((std::process::id() as u64) << 32)
        };
        TokioRuntime {
            start: tokio::time::Instant::now(),
            #[cfg(not(madsim))]
            rng: std::sync::Arc::new(std::sync::Mutex::new(shoal_engine::rng::SplitMix64::new(
                seed,
            ))),
        }
    }
}

impl Runtime for TokioRuntime {
    fn wall_ms(&self) -> u64 {
        // madsim intercepts the system clock in simulation builds.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn monotonic_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn sleep_ms(&self, duration_ms: u64) -> BoxFuture {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(
            duration_ms,
        )))
    }

    fn spawn(&self, task: BoxFuture) {
        tokio::spawn(task);
    }

    fn random_u64(&self) -> u64 {
        #[cfg(madsim)]
        {
            tokio::madsim::rand::random::<u64>()
        }
        #[cfg(not(madsim))]
        {
            self.rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_u64()
        }
    }
}
