//! Messages between workers: how a session reaches state that another
//! worker owns, without a lock.
//!
//! A sharded service ([`crate::Server::tcp_sharded`]) gives every worker
//! one `S` of its own (its shard). A session reads and writes its own
//! worker's shard directly, and any other worker's by message:
//! [`Mesh::ask`] sends a job (a closure over `&mut S`) to the worker that
//! owns the state, which runs it between its own events and sends back the
//! bytes it returned. Those bytes go into the asking connection's output
//! at the place where the ask was made, so replies stay in request order
//! whichever worker answers first; [`Mesh::gather`] does the same for a
//! request whose parts live on several workers.
//!
//! How messages travel: everything a worker has for one other worker
//! after a batch of events goes as one parcel, so a pipeline of asks
//! costs one crossing, not one per ask.
//! - **io_uring:** one `IORING_OP_MSG_RING` from the sender's ring to the
//!   receiver's. The kernel posts it on the receiver's completion queue,
//!   carrying the parcel's address, so there is no shared queue and no
//!   lock: the parcel's ownership passes through the kernel.
//! - **epoll:** a bounded queue for each ordered pair of workers, and an
//!   eventfd per receiver, written once per parcel.
//!
//! Bounds: a worker has at most [`CREDITS`] asks in flight to any one
//! other worker (so no inbox holds more than that many asks, and as many
//! answers, from one peer); further asks wait, in order, on the sender's
//! side. A connection with [`MAX_WAITING`] asks unanswered is offered no
//! more input until answers come, and each unanswered ask counts against
//! its worker's memory budget. Answers are not cut when they arrive, so
//! large ones can take a connection past its output limit by up to
//! [`MAX_WAITING`] answers; the worker's memory budget bounds the whole. At shutdown a worker keeps answering other
//! workers' asks until every worker has had all of its own answered, so
//! every message in flight is answered; nothing waits past the shutdown
//! deadline.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::stats::WorkerStats;

/// The most asks one worker has in flight to any one other worker.
pub const CREDITS: usize = 256;
/// The most asks one connection may have unanswered before it is offered
/// no more input.
pub const MAX_WAITING: usize = 256;
/// What one unanswered ask counts against its worker's memory budget: the
/// message, its job and the connection's record of it.
pub(crate) const ASK_MEMORY: usize = 128;

/// Top byte of the `user_data` of a message posted on a receiver's ring;
/// the low 56 bits are the envelope's address.
pub(crate) const DELIVERED_TAG: u8 = 0x40;
/// Top byte of the `user_data` of the sender's own `MSG_RING` operation
/// (the same address: reclaimed if the kernel could not post it).
pub(crate) const POSTED_TAG: u8 = 0x41;

/// What travels from one worker to another at once: every message the
/// sender had for the receiver after a batch of events.
pub(crate) type Parcel = Vec<Envelope>;

/// `user_data` carrying `parcel`'s address under `tag`; `None` if the
/// address does not fit in 56 bits (never for a Linux user-space address).
pub(crate) fn tag_address(tag: u8, parcel: *mut Parcel) -> Option<u64> {
    let address = parcel as u64;
    (address >> 56 == 0).then_some(u64::from(tag) << 56 | address)
}

/// The tag and parcel address of a message's `user_data`, if it is one.
pub(crate) fn untag_address(user_data: u64) -> Option<(u8, *mut Parcel)> {
    let tag = (user_data >> 56) as u8;
    matches!(tag, DELIVERED_TAG | POSTED_TAG)
        .then_some((tag, (user_data & ((1 << 56) - 1)) as *mut Parcel))
}

/// A job sent to the worker that owns a shard: runs there, on its state,
/// and returns the bytes that go back.
pub(crate) type Job = Box<dyn FnOnce(&mut dyn Any) -> Vec<u8> + Send>;
/// Turns a gather's answers (in the order of its parts) into the bytes
/// that take its place in the output; runs on the asking worker.
pub(crate) type Finish = Box<dyn FnOnce(Vec<Vec<u8>>, &mut Vec<u8>)>;

/// One message between workers: an ask, or the answer to one.
pub(crate) struct Envelope {
    /// The worker that asked.
    pub(crate) asker: u32,
    /// The worker that owns the shard.
    pub(crate) owner: u32,
    /// The sharded service whose state the job runs on.
    pub(crate) service: u32,
    /// The asking connection: slot index and generation.
    pub(crate) conn: (u32, u32),
    /// Which of the connection's asks, and which part of it.
    pub(crate) ask: u32,
    pub(crate) part: u32,
    pub(crate) body: Body,
}

/// What an envelope carries.
pub(crate) enum Body {
    /// A job for the owner to run.
    Ask(Job),
    /// What the job returned, on its way back.
    Answer(Vec<u8>),
}

/// An ask a session made during its last callback, not yet taken over by
/// its connection: where in the output its answer goes, and its parts.
pub(crate) struct StagedAsk {
    /// `out.len()` when it was made: the answer goes here.
    pub(crate) at: usize,
    pub(crate) service: u32,
    /// Each part: answered already (this worker's own shard), or to ask.
    pub(crate) parts: Vec<Part>,
    /// Combines the parts' answers; `None`: the single answer as it is.
    pub(crate) finish: Option<Finish>,
}

/// One part of an ask.
pub(crate) enum Part {
    /// Run on this worker's own shard when asked: its answer.
    Answered(Vec<u8>),
    /// To run on another worker's shard: its owner and the job.
    Remote(u32, Job),
}

/// A shard, type-erased so that a worker can run any service's jobs.
pub(crate) trait StateCell {
    /// Runs `job` on the state.
    fn run(&self, job: Job) -> Vec<u8>;
}

impl<S: 'static> StateCell for RefCell<S> {
    fn run(&self, job: Job) -> Vec<u8> {
        // Jobs run between events, never inside a session's borrow.
        let mut state = self.borrow_mut();
        job(&mut *state)
    }
}

/// How messages travel between the workers of one engine.
pub(crate) enum Transport {
    /// `IORING_OP_MSG_RING` between the workers' rings.
    Rings(Vec<OnceLock<OwnedFd>>),
    /// Bounded queues, an eventfd per receiver.
    Queues(Vec<Inbox>),
}

/// One epoll worker's inbox.
pub(crate) struct Inbox {
    /// A sender for each worker (indexed by sender).
    senders: Vec<SyncSender<Parcel>>,
    /// The receiving ends, taken once by the owner when it starts.
    receivers: Mutex<Vec<Receiver<Parcel>>>,
    /// Readable when something was queued.
    pub(crate) bell: OwnedFd,
}

/// What the workers of one engine share to message each other: read-only
/// after start, apart from the shutdown count.
pub(crate) struct MeshShared {
    workers: usize,
    pub(crate) transport: Transport,
    /// Workers that may still send an ask (not yet retired).
    senders: AtomicUsize,
    /// Set when a worker failed: nobody waits for anybody any more.
    broken: AtomicBool,
    /// Rings registered so far; start waits until all are.
    registered: Mutex<usize>,
    all_registered: Condvar,
    /// The seed every worker hashes keys with, so all agree on owners.
    hasher: std::collections::hash_map::RandomState,
}

impl MeshShared {
    /// The mesh of `workers` workers; `rings`: they message through their
    /// io_uring rings (else through queues and eventfds).
    pub(crate) fn new(workers: usize, rings: bool) -> std::io::Result<Arc<Self>> {
        let transport = if rings {
            Transport::Rings((0..workers).map(|_| OnceLock::new()).collect())
        } else {
            let mut inboxes = Vec::with_capacity(workers);
            for _ in 0..workers {
                let (senders, receivers) = (0..workers)
                    .map(|_| mpsc::sync_channel(2 * CREDITS))
                    .unzip();
                inboxes.push(Inbox {
                    senders,
                    receivers: Mutex::new(receivers),
                    bell: eventfd()?,
                });
            }
            Transport::Queues(inboxes)
        };
        Ok(Arc::new(Self {
            workers,
            transport,
            senders: AtomicUsize::new(workers),
            broken: AtomicBool::new(false),
            registered: Mutex::new(0),
            all_registered: Condvar::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }))
    }

    /// Worker `id`'s ring can now receive messages (`ring` is a descriptor
    /// of it that the mesh keeps, so the ring outlives every send to it).
    pub(crate) fn register_ring(&self, id: usize, ring: OwnedFd) {
        if let Transport::Rings(rings) = &self.transport {
            let _ = rings[id].set(ring);
        }
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        *registered += 1;
        self.all_registered.notify_all();
    }

    /// Waits until every worker can receive (or one failed to start), so
    /// that no message is sent to a ring not yet made.
    pub(crate) fn wait_until_registered(&self) {
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        while *registered < self.workers && !self.broken.load(Ordering::Acquire) {
            registered = self
                .all_registered
                .wait(registered)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A worker failed or will never start: nobody waits for it.
    pub(crate) fn abandon(&self) {
        self.broken.store(true, Ordering::Release);
        let _registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        self.all_registered.notify_all();
    }

    /// The descriptor of worker `id`'s ring, once registered.
    pub(crate) fn ring(&self, id: usize) -> Option<RawFd> {
        match &self.transport {
            Transport::Rings(rings) => rings.get(id)?.get().map(AsRawFd::as_raw_fd),
            Transport::Queues(_) => None,
        }
    }

    /// Worker `id`'s inbox (epoll).
    pub(crate) fn inbox(&self, id: usize) -> Option<&Inbox> {
        match &self.transport {
            Transport::Queues(inboxes) => inboxes.get(id),
            Transport::Rings(_) => None,
        }
    }
}

impl Inbox {
    /// The receiving ends, for the owner (empty after the first call).
    pub(crate) fn take_receivers(&self) -> Vec<Receiver<Parcel>> {
        std::mem::take(&mut *self.receivers.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Queues `parcel` from worker `from`. The queue holds twice the
    /// credits' worth of parcels, and every parcel carries at least one of
    /// the at most twice the credits messages in flight between two
    /// workers (asks one way, answers the other), so it cannot be full.
    pub(crate) fn queue(&self, from: usize, parcel: Parcel) -> Result<(), Parcel> {
        self.senders[from].try_send(parcel).map_err(|e| match e {
            mpsc::TrySendError::Full(p) | mpsc::TrySendError::Disconnected(p) => p,
        })
    }

    /// Wakes the owner.
    pub(crate) fn ring_bell(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd the mesh owns.
        unsafe { libc::write(self.bell.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One worker's end of the mesh: its shards, the asks its sessions just
/// made, and what travels to and from the other workers.
pub(crate) struct MeshLocal {
    pub(crate) worker: u32,
    pub(crate) shared: Arc<MeshShared>,
    stats: Arc<WorkerStats>,
    /// Each sharded service's shard on this worker, by service index.
    states: RefCell<Vec<Option<Rc<dyn StateCell>>>>,
    /// Asks the session being called made; its connection takes them.
    staged: RefCell<Vec<StagedAsk>>,
    /// Asks of the connection being fed that were already unanswered
    /// before the call.
    waiting_before: Cell<usize>,
    traffic: RefCell<Traffic>,
    /// This worker has retired from asking (shutdown).
    retired: Cell<bool>,
}

/// What travels, on one worker's side.
struct Traffic {
    /// Per worker: this worker's asks sent to it and not yet answered.
    in_flight: Vec<usize>,
    /// Per worker: asks waiting for a credit, in the order they were made.
    queued: Vec<VecDeque<Envelope>>,
    /// Per worker: the parcel being filled for it (asks with a credit,
    /// and answers), sent after the batch.
    outbox: Vec<Parcel>,
}

impl MeshLocal {
    /// Worker `worker`'s end of `shared`, counting into `stats`.
    pub(crate) fn new(worker: usize, shared: Arc<MeshShared>, stats: Arc<WorkerStats>) -> Rc<Self> {
        let n = shared.workers;
        Rc::new(Self {
            worker: worker as u32,
            shared,
            stats,
            states: RefCell::new(Vec::new()),
            staged: RefCell::new(Vec::new()),
            waiting_before: Cell::new(0),
            traffic: RefCell::new(Traffic {
                in_flight: vec![0; n],
                queued: (0..n).map(|_| VecDeque::new()).collect(),
                outbox: (0..n).map(|_| Vec::new()).collect(),
            }),
            retired: Cell::new(false),
        })
    }

    /// Sets the shard of service `service` on this worker.
    pub(crate) fn set_state(&self, service: u32, state: Rc<dyn StateCell>) {
        let mut states = self.states.borrow_mut();
        let i = service as usize;
        if states.len() <= i {
            states.resize_with(i + 1, || None);
        }
        states[i] = Some(state);
    }

    /// The asks the session just called made (often none); the count
    /// [`Mesh::waiting`] starts from goes back to 0 until the next feed.
    pub(crate) fn end_call(&self) -> Vec<StagedAsk> {
        self.waiting_before.set(0);
        std::mem::take(&mut *self.staged.borrow_mut())
    }

    /// A connection with `waiting` asks unanswered is about to be fed.
    pub(crate) fn feeding(&self, waiting: usize) {
        self.waiting_before.set(waiting);
    }

    /// Sends `envelope` (an ask) now if its owner has a credit left, else
    /// once one comes back.
    pub(crate) fn send_ask(&self, envelope: Envelope) {
        let mut t = self.traffic.borrow_mut();
        let owner = envelope.owner as usize;
        if t.in_flight[owner] < CREDITS && t.queued[owner].is_empty() {
            t.in_flight[owner] += 1;
            t.outbox[owner].push(envelope);
        } else {
            t.queued[owner].push_back(envelope);
        }
        self.stats.asks_waiting.inc();
    }

    /// Takes everything ready to travel: one parcel per worker that has
    /// messages waiting, with that worker's index.
    pub(crate) fn take_parcels(&self, into: &mut Vec<(usize, Parcel)>) {
        let mut t = self.traffic.borrow_mut();
        for (to, parcel) in t.outbox.iter_mut().enumerate() {
            if !parcel.is_empty() {
                self.stats.worker_messages_sent.add(parcel.len() as u64);
                into.push((to, std::mem::take(parcel)));
            }
        }
    }

    /// A message arrived. An ask is run here on its shard and its answer
    /// queued to go back; an answer gives its credit back and is returned
    /// for the driver to hand to its connection.
    pub(crate) fn receive(&self, mut envelope: Envelope) -> Option<Envelope> {
        self.stats.worker_messages_received.inc();
        match std::mem::replace(&mut envelope.body, Body::Answer(Vec::new())) {
            Body::Ask(job) => {
                let state = self
                    .states
                    .borrow()
                    .get(envelope.service as usize)
                    .and_then(Clone::clone);
                // Every worker serves every service, so the shard is there.
                let answer = state.map(|s| s.run(job)).unwrap_or_default();
                envelope.body = Body::Answer(answer);
                let asker = envelope.asker as usize;
                self.traffic.borrow_mut().outbox[asker].push(envelope);
                None
            }
            Body::Answer(answer) => {
                envelope.body = Body::Answer(answer);
                self.credit_back(envelope.owner as usize);
                Some(envelope)
            }
        }
    }

    /// An ask to `owner` is over (answered, or failed to travel).
    pub(crate) fn credit_back(&self, owner: usize) {
        let mut t = self.traffic.borrow_mut();
        t.in_flight[owner] = t.in_flight[owner].saturating_sub(1);
        self.stats.asks_waiting.add(u64::MAX); // minus one
        if let Some(next) = t.queued[owner].pop_front() {
            t.in_flight[owner] += 1;
            t.outbox[owner].push(next);
        }
    }

    /// True while this worker's own asks are unanswered or anything waits
    /// to travel.
    fn busy(&self) -> bool {
        let t = self.traffic.borrow();
        t.outbox.iter().any(|p| !p.is_empty())
            || t.in_flight.iter().any(|&n| n > 0)
            || t.queued.iter().any(|q| !q.is_empty())
    }

    /// At shutdown, once this worker's connections are gone (`idle`) or
    /// its deadline passed (`out_of_time`): true when it may stop. It
    /// first retires (it will ask nothing more) once its own asks are all
    /// answered; then it keeps answering the others' asks until every
    /// worker has retired, so no ask goes unanswered.
    pub(crate) fn may_stop(&self, idle: bool, out_of_time: bool) -> bool {
        if self.shared.broken.load(Ordering::Acquire) {
            // A worker failed: nobody waits for the others any more.
            return (idle && !self.busy()) || out_of_time;
        }
        if !self.retired.get() && ((idle && !self.busy()) || out_of_time) {
            self.retired.set(true);
            self.shared.senders.fetch_sub(1, Ordering::AcqRel);
        }
        self.retired.get()
            && self.shared.senders.load(Ordering::Acquire) == 0
            && self.traffic.borrow().outbox.iter().all(Vec::is_empty)
    }

    /// True once this worker retired: until [`may_stop`](Self::may_stop)
    /// lets it go, it keeps looking for messages and for the last sender's
    /// retirement, which no message announces. (Reading "others may still
    /// ask" here instead raced: the last sender could retire between this
    /// worker's `may_stop` and its wait, which then ran to the drain
    /// deadline.)
    pub(crate) fn lingering(&self) -> bool {
        self.retired.get()
    }
}

/// A session's handle on its service's shards: its own worker's, directly,
/// and every other worker's by message. Cheap to clone; it stays on the
/// worker that made it (it is not `Send`).
///
/// Jobs sent to other workers run there between their events, one at a
/// time, in the order each worker received them: two asks from one
/// connection to the same worker run in the order they were made.
pub struct Mesh<S> {
    local: Rc<MeshLocal>,
    state: Rc<RefCell<S>>,
    service: u32,
}

impl<S> Clone for Mesh<S> {
    fn clone(&self) -> Self {
        Self {
            local: self.local.clone(),
            state: self.state.clone(),
            service: self.service,
        }
    }
}

impl<S: 'static> Mesh<S> {
    /// The handle of service `service` on the worker whose end is `local`.
    pub(crate) fn new(local: Rc<MeshLocal>, state: Rc<RefCell<S>>, service: u32) -> Self {
        local.set_state(service, state.clone());
        Self {
            local,
            state,
            service,
        }
    }

    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.local.worker as usize
    }

    /// How many workers (and shards) there are.
    pub fn workers(&self) -> usize {
        self.local.shared.workers
    }

    /// The worker that owns `key`: the same on every worker, spread
    /// evenly, and not predictable by a client (the hash is seeded when
    /// the engine starts).
    pub fn owner_of(&self, key: &[u8]) -> usize {
        let mut hasher = self.local.shared.hasher.build_hasher();
        hasher.write(key);
        (hasher.finish() % self.workers() as u64) as usize
    }

    /// The connection's asks to other workers not yet answered, those
    /// made in this call included. The connection is offered no more
    /// input once [`MAX_WAITING`] are, but only between calls: a session
    /// that answers many requests in one `on_input` stops at it itself.
    pub fn waiting(&self) -> usize {
        self.local.waiting_before.get() + self.local.staged.borrow().len()
    }

    /// Runs `f` on this worker's own shard, now.
    pub fn local<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.state.borrow_mut())
    }

    /// Runs `job` on worker `owner`'s shard and puts the bytes it returns
    /// into the output at the end of `out` as it is now: bytes the session
    /// writes to `out` after this call are sent after them. `out` must be
    /// the buffer the engine handed to the callback making the ask.
    ///
    /// On this worker's own shard the job runs at once. On another's it
    /// travels there; meanwhile the connection counts it as an unanswered
    /// ask ([`MAX_WAITING`] at most before the session is offered no more
    /// input). Do not ask from inside [`local`](Self::local).
    pub fn ask<J>(&self, out: &mut Vec<u8>, owner: usize, job: J)
    where
        J: FnOnce(&mut S) -> Vec<u8> + Send + 'static,
    {
        if self.is_local(owner) {
            let answer = job(&mut self.state.borrow_mut());
            out.extend_from_slice(&answer);
            return;
        }
        self.stage(out.len(), vec![(owner, job)], None);
    }

    /// Runs each of `parts` (an owner and a job) on its owner's shard, and
    /// once all have answered, calls `finish` with their answers in the
    /// order of `parts`; what `finish` writes goes into the output at the
    /// end of `out` as it is now, as for [`ask`](Self::ask). `finish`
    /// runs on this worker and must not ask.
    pub fn gather<J, F>(&self, out: &mut Vec<u8>, parts: Vec<(usize, J)>, finish: F)
    where
        J: FnOnce(&mut S) -> Vec<u8> + Send + 'static,
        F: FnOnce(Vec<Vec<u8>>, &mut Vec<u8>) + 'static,
    {
        if parts.iter().all(|(owner, _)| self.is_local(*owner)) {
            let answers = parts
                .into_iter()
                .map(|(_, job)| job(&mut self.state.borrow_mut()))
                .collect();
            finish(answers, out);
            return;
        }
        self.stage(out.len(), parts, Some(Box::new(finish)));
    }

    /// True when `owner` is this worker (or no worker: kept here).
    fn is_local(&self, owner: usize) -> bool {
        owner == self.worker() || owner >= self.workers()
    }

    /// Records an ask for the connection to take over. Parts on this
    /// worker's shard run now, so that they see and make changes in the
    /// order the session asked for them.
    fn stage<J>(&self, at: usize, parts: Vec<(usize, J)>, finish: Option<Finish>)
    where
        J: FnOnce(&mut S) -> Vec<u8> + Send + 'static,
    {
        let parts = parts
            .into_iter()
            .map(|(owner, job)| {
                if self.is_local(owner) {
                    return Part::Answered(job(&mut self.state.borrow_mut()));
                }
                let job: Job = Box::new(move |state: &mut dyn Any| {
                    // A service's shards are all of its one type `S`.
                    state.downcast_mut::<S>().map(job).unwrap_or_default()
                });
                Part::Remote(owner as u32, job)
            })
            .collect();
        self.local.staged.borrow_mut().push(StagedAsk {
            at,
            service: self.service,
            parts,
            finish,
        });
    }
}

#[cfg(test)]
mod tests;
