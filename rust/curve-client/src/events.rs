//! What the client tells an operator through `tracing`, and how often.
//!
//! Levels follow upstream's libcurve (glog): WARN for a retry, a leader change, an MDS
//! failover or a failed lease refresh; ERROR when a call gives up; INFO for changes of a
//! file's state an operator may want to see (a snapshot bumped its sn, a clone was
//! flattened); DEBUG for the ordinary (a connection opened, an MDS refusal such as a
//! missing file). Events carry their facts as fields (`volume`, `copyset`, `chunk`,
//! `endpoint`, `cause`, …), not only in the text.
//!
//! A retry loop must not flood the log: warnings that can repeat go through [`Every`],
//! which lets one event per interval through per call site and counts the ones it held
//! back (`suppressed` on the next one that passes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one event through per `interval` (per call site: one static each), lock-free.
pub struct Every {
    interval_ms: u64,
    /// Milliseconds since [`epoch`] when the last event passed, plus one (0: never).
    last: AtomicU64,
    held_back: AtomicU64,
}

/// The process's start for [`Every`]: a monotonic clock's zero.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Every {
    pub const fn new(interval: Duration) -> Self {
        Every {
            interval_ms: interval.as_millis() as u64,
            last: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when an event may be logged now, `n` being how many were held back since
    /// the last one that was; `None` when this one must be dropped.
    pub fn pass(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One of the threads that saw the interval over wins; the others count as held.
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

/// How often a repeatable warning may be logged from one call site.
pub const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// `tracing::warn!` at most once per [`WARN_INTERVAL`] from this call site, with the
/// number held back since as the `suppressed` field. The level check comes first, so a
/// filtered warning costs no more than any filtered event.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        if tracing::enabled!(tracing::Level::WARN) {
            static EVERY: $crate::events::Every =
                $crate::events::Every::new($crate::events::WARN_INTERVAL);
            if let Some(suppressed) = EVERY.pass() {
                tracing::warn!(suppressed, $($arg)+);
            }
        }
    }};
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_a_count_of_the_rest() {
        let e = Every::new(Duration::from_secs(3600));
        assert_eq!(e.pass(), Some(0));
        for _ in 0..5 {
            assert_eq!(e.pass(), None);
        }
        let open = Every::new(Duration::ZERO);
        assert_eq!(open.pass(), Some(0));
        assert_eq!(open.pass(), Some(0));
    }
}
