//! The timers a thread-per-core worker keeps, whatever its I/O interface:
//! the accept retry after EMFILE, the shutdown deadline, lingering closes and
//! the sweep that gives time-keeping sessions their ticks. Both the io_uring
//! and the epoll worker wait on the nearest of them.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::stats::WorkerStats;

/// How long to wait before accepting again after EMFILE/ENFILE/ENOMEM.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How long a connection whose replies are complete waits for the peer to
/// close before closing anyway.
pub const LINGER: Duration = Duration::from_secs(2);
/// How often time-keeping sessions get a tick.
pub const IDLE_SWEEP: Duration = Duration::from_millis(100);

/// One worker's timers.
#[derive(Debug, Default)]
pub struct Timers {
    /// Accepting is paused until then (after EMFILE and the like).
    pub accept_retry_at: Option<Instant>,
    /// Set when shutdown starts: when connections must be closed by.
    pub drain_deadline: Option<Instant>,
    /// Lingering connections (index, generation) by deadline; all get the
    /// same linger time, so arrival order is deadline order.
    lingering: VecDeque<(Instant, u32, u32)>,
    /// Open connections whose protocol keeps time.
    idle_watched: usize,
    /// When to tick them next (only while some are watched).
    next_idle_sweep: Option<Instant>,
}

impl Timers {
    /// True once shutdown has started.
    pub fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// How long the next wait may last: until the nearest timer, if any.
    pub fn next_wait(&self) -> Option<Duration> {
        let now = Instant::now();
        let linger = self.lingering.front().map(|(at, _, _)| *at);
        [
            self.accept_retry_at,
            self.drain_deadline,
            linger,
            self.next_idle_sweep,
        ]
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

    /// A connection sent its FIN: close it after [`LINGER`] (or at the
    /// shutdown deadline, if sooner) unless the peer closes first.
    pub fn linger(&mut self, now: Instant, index: u32, generation: u32) {
        let mut until = now + LINGER;
        if let Some(deadline) = self.drain_deadline {
            until = until.min(deadline);
        }
        self.lingering.push_back((until, index, generation));
    }

    /// The next lingering connection whose time is up, if any.
    pub fn expired_linger(&mut self, now: Instant) -> Option<(u32, u32)> {
        let &(at, index, generation) = self.lingering.front()?;
        if at > now {
            return None;
        }
        self.lingering.pop_front();
        Some((index, generation))
    }

    /// A connection whose protocol keeps time opened.
    pub fn watch_ticks(&mut self, now: Instant) {
        self.idle_watched += 1;
        self.next_idle_sweep.get_or_insert(now + IDLE_SWEEP);
    }

    /// A connection whose protocol keeps time closed.
    pub fn unwatch_ticks(&mut self) {
        self.idle_watched -= 1;
    }

    /// True when time-keeping sessions are due a tick; schedules the next.
    pub fn sweep_due(&mut self, now: Instant) -> bool {
        let due = matches!(self.next_idle_sweep, Some(at) if now >= at);
        if !due {
            return false;
        }
        self.next_idle_sweep = (self.idle_watched > 0).then(|| now + IDLE_SWEEP);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lingering_ends_at_the_shutdown_deadline_if_sooner() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.linger(now, 1, 0);
        assert_eq!(t.expired_linger(now), None);
        assert_eq!(t.expired_linger(now + LINGER), Some((1, 0)));
        t.drain_deadline = Some(now + Duration::from_millis(10));
        t.linger(now, 2, 3);
        assert_eq!(
            t.expired_linger(now + Duration::from_millis(10)),
            Some((2, 3))
        );
        assert!(t.next_wait().is_some(), "the shutdown deadline is a timer");
    }

    #[test]
    fn sweeps_run_only_while_sessions_keep_time() {
        let now = Instant::now();
        let mut t = Timers::default();
        assert!(!t.sweep_due(now + IDLE_SWEEP));
        t.watch_ticks(now);
        assert!(!t.sweep_due(now));
        assert!(t.sweep_due(now + IDLE_SWEEP));
        t.unwatch_ticks();
        assert!(
            t.sweep_due(now + IDLE_SWEEP * 2),
            "the one already scheduled"
        );
        assert!(!t.sweep_due(now + IDLE_SWEEP * 10));
        assert_eq!(t.next_wait(), None);
    }
}
