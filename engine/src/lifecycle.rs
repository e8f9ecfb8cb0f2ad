//! The worker-level life-cycle both drivers share: deadlines, eviction
//! over the memory budget, the start of shutdown and its end. A driver
//! (the io_uring worker, the epoll worker) lends its connection table and
//! context through [`Driver::parts`] and moves one connection after an
//! event with [`Driver::progress`]; everything decided between those lives
//! here once, so the two cannot drift apart.

use std::time::{Duration, Instant};

use crate::connection::{Env, Limits};
use crate::conns::Conns;
use crate::stats::WorkerStats;
use crate::timers::Timers;

/// What a driver lends the life-cycle for one step.
pub(crate) struct Parts<'a, D> {
    /// The worker's connections.
    pub(crate) conns: &'a mut Conns<D>,
    /// Their bounds.
    pub(crate) limits: &'a Limits,
    /// The worker's counters.
    pub(crate) stats: &'a WorkerStats,
    /// The time of the batch being handled.
    pub(crate) now: &'a mut Instant,
    /// A reusable list of connections to move.
    pub(crate) due: &'a mut Vec<(u32, u32)>,
    /// Accept back-off and the shutdown deadline.
    pub(crate) timers: &'a mut Timers,
}

impl<'a, D> Parts<'a, D> {
    /// The context of the batch's events (borrowing none of the parts, so
    /// the table can be changed under it).
    fn env(&self) -> Env<'a> {
        Env {
            limits: self.limits,
            stats: self.stats,
            now: *self.now,
        }
    }
}

/// A worker's I/O driver, as the life-cycle sees it.
pub(crate) trait Driver {
    /// What the driver keeps per connection besides the core.
    type Io;
    /// Lends the connection table and its context.
    fn parts(&mut self) -> Parts<'_, Self::Io>;
    /// Carries out what the connection asks for after an event.
    fn progress(&mut self, index: u32, generation: u32);
}

/// Moves every connection in `list`, then gives the list back to reuse.
fn progress_all<W: Driver>(w: &mut W, list: Vec<(u32, u32)>) {
    for &(index, generation) in &list {
        w.progress(index, generation);
    }
    let mut list = list;
    list.clear();
    *w.parts().due = list;
}

/// The connections hold more than the worker's memory budget: those
/// holding the most are ended and moved to their close. (Their own
/// `progress` cannot come back here: eviction leaves the connections under
/// the budget, or with nothing left that eviction could free.)
pub(crate) fn evict_over_budget<W: Driver>(w: &mut W) {
    let p = w.parts();
    let mut evicted = std::mem::take(p.due);
    let env = p.env();
    p.conns.evict_over_budget(&env, &mut evicted);
    progress_all(w, evicted);
}

/// Hands connections whose deadline has come their `on_deadline`, at the
/// time it is now.
pub(crate) fn fire_deadlines<W: Driver>(w: &mut W) {
    let p = w.parts();
    *p.now = Instant::now();
    let mut due = std::mem::take(p.due);
    let env = p.env();
    p.conns.fire_deadlines(&env, &mut due);
    progress_all(w, due);
}

/// Starts shutdown, once: the drain deadline is `budget` from now, and
/// every connection answers what the kernel had queued, then finishes.
/// False when shutdown had already begun.
pub(crate) fn begin_shutdown<W: Driver>(w: &mut W, budget: Duration) -> bool {
    let p = w.parts();
    if p.timers.draining() {
        return false;
    }
    p.timers.drain_deadline = Some(Instant::now() + budget);
    let mut all = std::mem::take(p.due);
    p.conns.begin_shutdown(&mut all);
    progress_all(w, all);
    true
}

/// True once shutdown may end: every connection is closed and
/// `sends_settled` (the driver's own sends are done), or the drain
/// deadline passed (said in the log, with what was still flushing).
pub(crate) fn shutdown_finished<D>(
    conns: &Conns<D>,
    timers: &Timers,
    worker: usize,
    sends_settled: bool,
) -> bool {
    let Some(deadline) = timers.drain_deadline else {
        return false;
    };
    let flushed = conns.is_empty() && sends_settled;
    if !flushed && Instant::now() >= deadline {
        tracing::warn!(
            worker,
            "shutdown deadline passed with {} connection(s) still flushing; closing them",
            conns.len()
        );
        return true;
    }
    flushed
}
