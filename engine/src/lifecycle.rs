//! The worker-level life-cycle both drivers share: deadlines, eviction
//! over the memory budget, the start of shutdown and its end. A driver
//! (the io_uring worker, the epoll worker) lends its connection table and
//! context through [`Driver::parts`] and moves one connection after an
//! event with [`Driver::progress`]; everything decided between those lives
//! here once, so the two cannot drift apart.

use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::connection::{Env, Limits};
use crate::conns::Conns;
use crate::per_core::WorkerSettings;
use crate::stats::WorkerStats;
use crate::timers::Timers;

/// What every worker keeps of its connections, whatever its I/O: the
/// table, their bounds, the counters, the batch's time, the deadlines'
/// scratch list and the worker's own timers. Both drivers own one and lend
/// it to the life-cycle below.
pub(crate) struct WorkerCore<D> {
    /// The worker's connections (and what the driver keeps per connection).
    pub(crate) conns: Conns<D>,
    /// Their bounds.
    pub(crate) limits: Limits,
    /// The worker's counters.
    pub(crate) stats: Arc<WorkerStats>,
    /// The time of the batch being handled.
    pub(crate) now: Instant,
    /// Reused: connections to move after deadlines or at shutdown.
    pub(crate) due: Vec<(u32, u32)>,
    /// Accept back-off and the shutdown deadline.
    pub(crate) timers: Timers,
}

impl<D> WorkerCore<D> {
    /// A worker's core before its first connection.
    pub(crate) fn new(settings: &WorkerSettings, stats: Arc<WorkerStats>) -> Self {
        Self {
            conns: Conns::new(settings.memory_budget),
            limits: settings.limits(),
            stats,
            now: Instant::now(),
            due: Vec::new(),
            timers: Timers::default(),
        }
    }

    /// The due list, taken, and the context of the batch's events (which
    /// borrows no part the table needs).
    fn take_due(&mut self) -> (Vec<(u32, u32)>, &mut Conns<D>, Env<'_>) {
        let due = std::mem::take(&mut self.due);
        let env = Env {
            limits: &self.limits,
            stats: &self.stats,
            now: self.now,
        };
        (due, &mut self.conns, env)
    }
}

/// A worker's I/O driver, as the life-cycle sees it.
pub(crate) trait Driver {
    /// What the driver keeps per connection besides the core.
    type Io;
    /// Lends the worker's core.
    fn core(&mut self) -> &mut WorkerCore<Self::Io>;
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
    w.core().due = list;
}

/// The connections hold more than the worker's memory budget: those
/// holding the most are ended and moved to their close. (Their own
/// `progress` cannot come back here: eviction leaves the connections under
/// the budget, or with nothing left that eviction could free.)
pub(crate) fn evict_over_budget<W: Driver>(w: &mut W) {
    let (mut evicted, conns, env) = w.core().take_due();
    conns.evict_over_budget(&env, &mut evicted);
    progress_all(w, evicted);
}

/// Hands connections whose deadline has come their `on_deadline`, at the
/// time it is now.
pub(crate) fn fire_deadlines<W: Driver>(w: &mut W) {
    let core = w.core();
    core.now = Instant::now();
    let (mut due, conns, env) = core.take_due();
    conns.fire_deadlines(&env, &mut due);
    progress_all(w, due);
}

/// Starts shutdown, once: the drain deadline is `budget` from now, and
/// every connection answers what the kernel had queued, then finishes.
/// False when shutdown had already begun.
pub(crate) fn begin_shutdown<W: Driver>(w: &mut W, budget: Duration) -> bool {
    let core = w.core();
    if core.timers.draining() {
        return false;
    }
    core.timers.drain_deadline = Some(Instant::now() + budget);
    let (mut all, conns, _) = core.take_due();
    conns.begin_shutdown(&mut all);
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
