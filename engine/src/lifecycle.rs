//! The worker-level life-cycle both drivers share: deadlines, eviction
//! over the memory budget, the start of shutdown and its end. A driver
//! (the io_uring worker, the epoll worker) lends its connection table and
//! context through [`Driver::parts`] and moves one connection after an
//! event with [`Driver::progress`]; everything decided between those lives
//! here once, so the two cannot drift apart.

use std::time::{Duration, Instant};

use std::rc::Rc;
use std::sync::Arc;

use crate::connection::{Connection, Env, Limits};
use crate::conns::Conns;
use crate::mesh::{Body, Envelope, MeshLocal, MeshShared, Parcel};
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
    /// The worker's end of the mesh, when a service is sharded.
    pub(crate) mesh: Option<Rc<MeshLocal>>,
    /// Reused: parcels to other workers being posted.
    outgoing: Vec<(usize, Parcel)>,
}

impl<D> WorkerCore<D> {
    /// A worker's core before its first connection.
    pub(crate) fn new(
        settings: &WorkerSettings,
        stats: Arc<WorkerStats>,
        mesh: Option<Rc<MeshLocal>>,
    ) -> Self {
        Self {
            mesh,
            conns: Conns::new(settings.memory_budget, settings.max_connections),
            limits: settings.limits(),
            stats,
            now: Instant::now(),
            due: Vec::new(),
            timers: Timers::default(),
            outgoing: Vec::new(),
        }
    }

    /// The context of the batch's events.
    pub(crate) fn env(&self) -> Env<'_> {
        Env {
            limits: &self.limits,
            stats: &self.stats,
            now: self.now,
            mesh: self.mesh.as_deref(),
        }
    }

    /// The connection table and the context of the batch's events, borrowed
    /// apart so that a connection can be moved under the context.
    pub(crate) fn split(&mut self) -> (&mut Conns<D>, Env<'_>) {
        let Self {
            conns,
            limits,
            stats,
            now,
            mesh,
            ..
        } = self;
        let env = Env {
            limits,
            stats,
            now: *now,
            mesh: mesh.as_deref(),
        };
        (conns, env)
    }

    /// The due list, taken, with [`split`](Self::split)'s borrows.
    fn take_due(&mut self) -> (Vec<(u32, u32)>, &mut Conns<D>, Env<'_>) {
        let due = std::mem::take(&mut self.due);
        let (conns, env) = self.split();
        (due, conns, env)
    }

    /// True once shutdown may end: every connection is closed and
    /// `sends_settled` (the driver's own sends are done), or the drain
    /// deadline passed (said in the log, with what was still flushing). With
    /// a mesh, also once no other worker may still ask this one anything
    /// (see [`MeshLocal::may_stop`]).
    pub(crate) fn shutdown_finished(&self, worker: usize, sends_settled: bool) -> bool {
        let (conns, timers, mesh) = (&self.conns, &self.timers, self.mesh.as_deref());
        let Some(deadline) = timers.drain_deadline else {
            return false;
        };
        let flushed = conns.is_empty() && sends_settled;
        let now = Instant::now();
        let late = !flushed && now >= deadline;
        if late && !timers.deadline_reported.replace(true) {
            tracing::warn!(
                worker,
                "shutdown deadline passed with {} connection(s) still flushing; closing them",
                conns.len()
            );
        }
        let Some(mesh) = mesh else {
            return flushed || late;
        };
        if mesh.may_stop(flushed, now >= deadline) {
            return true;
        }
        if now >= deadline + MESH_GRACE {
            tracing::warn!(
                worker,
                "other workers still asking {MESH_GRACE:?} after the shutdown deadline; stopping regardless"
            );
            return true;
        }
        false
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
    /// Sends `parcel` on its way to worker `to` (through the driver's
    /// mailbox for it in `mesh`); a parcel that cannot travel goes to
    /// [`parcel_failed`].
    fn post_parcel(&mut self, mesh: &MeshShared, to: usize, parcel: Parcel);
}

/// Posts each parcel ready to go, after a batch: one per receiver,
/// however many messages it holds.
pub(crate) fn post_parcels<W: Driver>(w: &mut W) {
    let core = w.core();
    let Some(mesh) = core.mesh.clone() else {
        return;
    };
    let mut outgoing = std::mem::take(&mut core.outgoing);
    mesh.take_parcels(&mut outgoing);
    for (to, parcel) in outgoing.drain(..) {
        w.post_parcel(&mesh.shared, to, parcel);
    }
    w.core().outgoing = outgoing;
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

/// Hands the parts of asks `conn` just made over to the mesh to travel,
/// each addressed back to the connection (`key`).
pub(crate) fn dispatch_asks(conn: &mut Connection, key: (u32, u32), mesh: Option<&MeshLocal>) {
    let Some(mesh) = mesh else {
        return;
    };
    for (ask, part, service, owner, job) in conn.take_unsent_asks() {
        mesh.send_ask(Envelope {
            asker: mesh.worker,
            owner,
            service,
            conn: key,
            ask,
            part,
            body: Body::Ask(job),
        });
    }
}

/// A parcel from another worker arrived: each ask runs on this worker's
/// shard (its answer goes back with the next batch); each answer fills its
/// place in the asking connection's output, which then moves on.
pub(crate) fn receive_parcel<W: Driver>(w: &mut W, parcel: Parcel) {
    let Some(mesh) = w.core().mesh.clone() else {
        return;
    };
    for envelope in parcel {
        let Some(answer) = mesh.receive(envelope) else {
            continue;
        };
        let (index, generation) = answer.conn;
        let Body::Answer(bytes) = answer.body else {
            continue;
        };
        let Some(t) = w.core().conns.get_mut(index, generation) else {
            continue; // the connection is gone: nobody waits for this
        };
        t.conn.on_answer(answer.ask, answer.part, bytes);
        w.progress(index, generation);
    }
}

/// A parcel could not travel: each ask gives its credit back and its
/// connection, whose reply can never be completed, ends; an answer's
/// asker is on another worker, which ends that connection at its
/// shutdown deadline at the latest.
pub(crate) fn parcel_failed<W: Driver>(w: &mut W, parcel: Parcel) {
    for envelope in parcel {
        let Body::Ask(_) = envelope.body else {
            continue;
        };
        let core = w.core();
        if let Some(mesh) = &core.mesh {
            mesh.credit_back(envelope.owner as usize);
        }
        let (conns, env) = core.split();
        let (index, generation) = envelope.conn;
        if let Some(t) = conns.get_mut(index, generation) {
            t.conn.on_recv_error(&env);
        }
        w.progress(index, generation);
    }
}

/// How long the worker may wait for events: until its nearest timer or
/// connection deadline, and briefly while it lingers at shutdown for the
/// other workers to stop asking (nothing wakes it when they do).
pub(crate) fn next_wait<D>(core: &WorkerCore<D>) -> Option<Duration> {
    let wait = core
        .timers
        .next_wait(Instant::now(), core.conns.next_deadline());
    match &core.mesh {
        Some(mesh) if mesh.lingering() => Some(wait.map_or(LINGER_POLL, |w| w.min(LINGER_POLL))),
        _ => wait,
    }
}

/// How often a worker that lingers at shutdown looks whether the others
/// have stopped asking.
const LINGER_POLL: Duration = Duration::from_millis(1);

/// How long past the drain deadline a worker still waits for the other
/// workers to stop asking it things, before it stops regardless.
const MESH_GRACE: Duration = Duration::from_secs(1);
