//! The timers a thread-per-core worker keeps for itself, whatever its I/O
//! interface: the accept retry after EMFILE and the shutdown deadline.
//! Connections' own deadlines live in [`crate::deadlines`].

use std::io;
use std::time::{Duration, Instant};

use crate::stats::WorkerStats;

/// How long to wait before accepting again after EMFILE/ENFILE/ENOMEM.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// One worker's own timers.
#[derive(Debug, Default)]
pub struct Timers {
    /// Accepting is paused until then (after EMFILE and the like).
    pub accept_retry_at: Option<Instant>,
    /// Set when shutdown starts: when connections must be closed by.
    pub drain_deadline: Option<Instant>,
    /// The log has said that the drain deadline passed.
    pub(crate) deadline_reported: std::cell::Cell<bool>,
}

impl Timers {
    /// True once shutdown has started.
    pub fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// How long the next wait may last: until the nearest of these timers
    /// and `other` (the connections' nearest deadline), if any.
    pub fn next_wait(&self, now: Instant, other: Option<Instant>) -> Option<Duration> {
        [self.accept_retry_at, self.drain_deadline, other]
            .into_iter()
            .flatten()
            .min()
            .map(|t| {
                t.saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            })
    }

    /// Counts a failed accept; after EMFILE and the like, pauses accepting
    /// for [`ACCEPT_RETRY`] instead of spinning on the error.
    pub fn accept_failed(&mut self, worker: usize, error: &io::Error, stats: &WorkerStats) {
        stats.accept_errors.inc();
        match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS) => {
                tracing::warn!(
                    worker,
                    "accept failed: {error}; open connections keep being served, accepting again in {ACCEPT_RETRY:?}"
                );
                self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
            }
            _ => tracing::debug!("accept: {error}"),
        }
    }

    /// True while accepting is paused; ends the pause once it is over.
    pub fn accept_paused(&mut self, now: Instant) -> bool {
        if self.accept_retry_at.is_some_and(|at| now >= at) {
            self.accept_retry_at = None;
        }
        self.accept_retry_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_timer_bounds_the_wait() {
        let now = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.next_wait(now, None), None);
        t.drain_deadline = Some(now + Duration::from_secs(5));
        assert_eq!(t.next_wait(now, None), Some(Duration::from_secs(5)));
        let soon = now + Duration::from_millis(20);
        assert_eq!(
            t.next_wait(now, Some(soon)),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            t.next_wait(now, Some(now)),
            Some(Duration::from_millis(1)),
            "never a zero wait that would spin"
        );
    }
}
