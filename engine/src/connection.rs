//! One TCP connection's life, without sockets (sans-IO, in the style of
//! quinn-proto's `Connection`).
//!
//! A [`Connection`] owns the protocol session, the input received but not
//! yet taken by it, the output not yet sent, and every deadline. A driver
//! (the io_uring worker, the epoll worker) tells it what happened (bytes
//! received, end of stream, an error, bytes sent, a deadline reached,
//! shutdown) and asks it what to do next with [`Connection::poll_action`]
//! until it answers `None`, and when to wake it with
//! [`Connection::next_deadline`]. Every per-connection bound lives here
//! once, whatever the I/O interface:
//!
//! - output: once unsent output reaches the limit the session is offered no
//!   more input (what was received stays queued here) and the receive is
//!   stopped until the output drains to half the limit; sessions stop
//!   answering once their share of room is used, so no reply-to-request
//!   ratio can multiply the bound;
//! - send timeout: a peer that accepts no byte of pending output for that
//!   long loses its connection;
//! - idle timeout: a connection that owes nothing and has heard nothing
//!   for that long is closed with a FIN, so silent peers cannot hold every
//!   connection slot;
//! - every ending (protocol close, end of stream, error, timeout) reaches
//!   [`Action::Close`] once no kernel operation refers to the connection.
//!
//! A driver that can keep a receive buffer until a send of it completes
//! (the io_uring worker) may [`lend`](Connection::lend) it to a session
//! whose replies are its input ([`StreamSession::echoes`]): the bytes go
//! back from where the kernel wrote them, with no copy in user space. The
//! lent buffer counts as output in flight, under the same bounds.
//!
//! A session whose long output lies in static memory (HTTP's `/bytes/N`
//! pattern, [`StreamSession::has_static_output`]) hands it out in parts
//! that are sent from where they lie, each once everything before it is
//! sent: no copy in user space, and no output memory held per connection.
//! A part still counts as unsent output, so the send timeout applies.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use protocols::{Next, StreamSession};

use crate::mesh::{self, Finish, Job, MeshLocal, Part};
use crate::moment::Moment;
use crate::stats::WorkerStats;

/// How often a time-keeping session gets a tick.
pub const TICK: Duration = Duration::from_millis(100);
/// Output buffers above this capacity are released once empty, so a
/// connection that once moved a lot of data does not keep the memory idle.
const KEEP_CAPACITY: usize = 16 * 1024;
/// The most input one receive may bring in before the connection decides
/// again (a multishot receive ends after this many
/// bytes). Input the session cannot take yet is held here, so this bounds
/// what a connection holds beyond its output limit. Each ending costs a
/// new receive (a submission and a poll arm in the kernel): at 32 KiB a
/// 16 KiB echo paid one every second message, 12 % of the server's CPU
/// per request against this size.
pub const RECEIVE_WINDOW: usize = 128 * 1024;

/// The bounds every connection of a worker is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unsent output at which the session is offered no more input.
    pub output_limit: usize,
    /// A peer that accepts none of our pending output for this long is cut off.
    pub send_timeout: Duration,
    /// A connection with nothing owed and nothing received for this long
    /// is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// How long, after our FIN, to wait for the peer to close.
    pub linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            output_limit: 1024 * 1024,
            send_timeout: Duration::from_secs(60),
            idle_timeout: None,
            linger: Duration::from_secs(2),
        }
    }
}

/// What a driver is asked to do; see [`Connection::poll_action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send [`Connection::send_buf`]; report with `on_sent` or `on_send_error`
    /// (or `on_send_blocked` when the socket is full).
    Send,
    /// Start receiving (arm the multishot receive, or read while readable).
    StartReceiving,
    /// Stop receiving; report with `on_recv_ended` once it has stopped.
    StopReceiving,
    /// Cancel the send in flight; its completion still reports.
    CancelSend,
    /// Shut down our sending side (FIN): every reply has been sent.
    ShutdownWrite,
    /// Close the socket and forget the connection; nothing refers to it.
    Close,
}

/// Where the receive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    Idle,
    Active,
    Stopping,
}

/// Whether the session is still fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Input is offered to the session.
    Open,
    /// The session is fed nothing more: it closed, the peer finished, or
    /// shutdown's budget is spent. Its output is still sent.
    Done,
}

/// The context a connection's events are handled in: the limits, the
/// worker's counters and the time.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// The bounds.
    pub limits: &'a Limits,
    /// Counters only this worker writes.
    pub stats: &'a WorkerStats,
    /// When the event happened.
    pub now: Instant,
    /// The worker's end of the mesh, when it serves a sharded service:
    /// where its sessions' asks to other workers are staged.
    pub(crate) mesh: Option<&'a MeshLocal>,
}

/// A TCP connection's state; see the module docs.
pub struct Connection {
    session: Box<dyn StreamSession>,
    /// Reply bytes not yet handed to the driver.
    pending: Vec<u8>,
    /// Bytes of the send in flight (or the rest of a short send).
    sending: Vec<u8>,
    /// How much of the send in flight (`sending`, or the lent buffer) the
    /// kernel has taken.
    sent: usize,
    /// The length of a driver's receive buffer being sent back as it is
    /// (see [`Connection::lend`]); `sending` is empty meanwhile. A
    /// non-zero u32 (its `Option` takes 4 bytes): receive buffers are
    /// sized in u32, a lent one is never empty, and every byte of a
    /// connection's state is paid per idle connection.
    lent: Option<NonZeroU32>,
    /// A part of a long body the session gave from static memory
    /// ([`StreamSession::take_static_output`]), being sent from where it
    /// lies; `sending` is empty meanwhile.
    static_out: Option<&'static [u8]>,
    /// Input received but not yet taken by the session.
    held: HeldInput,
    recv: Recv,
    reading: Reading,
    send_in_flight: bool,
    /// The last send found the socket full (readiness drivers only).
    send_blocked: bool,
    cancel_requested: bool,
    /// The peer's end of stream arrived (maybe not yet given to the session).
    peer_closed: bool,
    eof_delivered: bool,
    /// Our FIN is sent; input is read and discarded until the peer closes.
    fin_sent: bool,
    /// An error or a timeout ended the connection: close once quiescent.
    failed: bool,
    closed: bool,
    /// At shutdown: how much more input to answer (what the kernel had
    /// queued when shutdown began).
    drain_budget: Option<u32>,
    /// Reading is held back by the output (counted once per pause).
    paused: bool,
    ticks: bool,
    /// When the peer last sent us anything.
    last_active: Moment,
    /// When bytes last moved either way: the idle timeout counts from here.
    last_traffic: Moment,
    /// The next tick while the session is fed (if it keeps time); after
    /// our FIN, when to stop waiting for the peer to close.
    timer: Option<Moment>,
    /// Since when pending output has waited for the peer without progress.
    send_waiting_since: Option<Moment>,
    /// Asks to other workers whose answers are not in the output yet
    /// (sharded services only; absent otherwise).
    asks: Option<Box<Asks>>,
}

impl Connection {
    /// A freshly accepted connection speaking through `session`; a protocol
    /// that speaks first (a greeting) does it now.
    pub fn new(mut session: Box<dyn StreamSession>, env: &Env) -> Self {
        let now = Moment::of(env.now);
        let mut pending = Vec::new();
        session.on_open(&mut pending);
        let ticks = session.wants_ticks();
        let mut conn = Self {
            session,
            pending,
            sending: Vec::new(),
            sent: 0,
            lent: None,
            static_out: None,
            held: HeldInput::default(),
            recv: Recv::Idle,
            reading: Reading::Open,
            send_in_flight: false,
            send_blocked: false,
            cancel_requested: false,
            peer_closed: false,
            eof_delivered: false,
            fin_sent: false,
            failed: false,
            closed: false,
            drain_budget: None,
            paused: false,
            ticks,
            last_active: now,
            last_traffic: now,
            timer: ticks.then(|| now + TICK),
            send_waiting_since: None,
            asks: None,
        };
        conn.adopt_asks(env);
        conn
    }

    // ----- events -----

    /// Bytes arrived from the peer.
    pub fn on_received(&mut self, data: &[u8], env: &Env) {
        self.last_active = Moment::of(env.now);
        self.last_traffic = self.last_active;
        if self.reading == Reading::Done || self.failed || self.fin_sent {
            env.stats.bytes_discarded.add(data.len() as u64);
            return;
        }
        let data = match &mut self.drain_budget {
            Some(budget) => {
                let take = data.len().min(*budget as usize);
                *budget -= take as u32;
                env.stats.bytes_discarded.add((data.len() - take) as u64);
                &data[..take]
            }
            None => data,
        };
        env.stats.bytes_in.add(data.len() as u64);
        env.stats.messages_in.inc();
        if self.held_len() == 0 {
            // The usual case: the session takes the bytes where they lie.
            let (taken, awaiting) = self.offer(data, env);
            self.held.push(&data[taken..]);
            let needed = self.input_needed();
            self.held.set_awaiting(awaiting, needed);
        } else {
            self.held.push(data);
        }
    }

    /// `len` bytes arrived from the peer in a buffer the driver can keep
    /// until a send of it completes. If the session's replies are its input
    /// and nothing is queued ahead of them, the connection takes them,
    /// unread, as its next send and answers true: the driver then sends
    /// from its buffer ([`Outgoing::Lent`]) and keeps it until
    /// [`is_lending`](Self::is_lending) turns false or the connection is
    /// closed. Otherwise it answers false, and the driver hands the bytes
    /// to [`on_received`](Self::on_received) as usual.
    pub fn lend(&mut self, len: usize, env: &Env) -> bool {
        let quiet = self.pending.is_empty()
            && self.sent == self.sending.len()
            && self.lent.is_none()
            && self.static_out.is_none()
            && !self.send_in_flight
            && self.held_len() == 0
            && !self.session.has_more_output();
        let open = self.reading == Reading::Open
            && !self.failed
            && !self.fin_sent
            && self.drain_budget.is_none();
        let fits = len > 0 && len <= env.limits.output_limit && u32::try_from(len).is_ok();
        if !(quiet && open && fits && self.session.echoes()) {
            return false;
        }
        self.last_active = Moment::of(env.now);
        self.last_traffic = self.last_active;
        env.stats.bytes_in.add(len as u64);
        env.stats.messages_in.inc();
        self.sending.clear();
        self.sent = 0;
        // `fits` checked it is neither 0 nor past a u32.
        self.lent = u32::try_from(len).ok().and_then(NonZeroU32::new);
        true
    }

    /// True while a lent buffer is still (partly) to be sent: the driver
    /// must keep it unchanged until then.
    pub fn is_lending(&self) -> bool {
        self.lent.is_some()
    }

    /// The peer closed its sending side.
    pub fn on_eof(&mut self) {
        self.peer_closed = true;
    }

    /// The receive failed: the connection is over.
    pub fn on_recv_error(&mut self, env: &Env) {
        self.fail(env);
    }

    /// The receive ended (cancelled, out of buffers, or the stream ended);
    /// it may be started again.
    pub fn on_recv_ended(&mut self) {
        self.recv = Recv::Idle;
    }

    /// The kernel took `n` bytes of [`send_buf`](Self::send_buf).
    pub fn on_sent(&mut self, n: usize, env: &Env) {
        self.send_in_flight = false;
        self.sent = (self.sent + n).min(self.in_flight_len());
        if self.lent.map(|len| len.get() as usize) == Some(self.sent) {
            // The lent buffer is all sent: it is the driver's again.
            self.lent = None;
            self.sent = 0;
        }
        if self.static_out.is_some_and(|part| part.len() == self.sent) {
            self.static_out = None;
            self.sent = 0;
        }
        env.stats.bytes_out.add(n as u64);
        env.stats.messages_out.inc();
        if n > 0 {
            self.last_traffic = Moment::of(env.now);
            self.send_waiting_since = Some(self.last_traffic);
        }
    }

    /// The socket was full: nothing was sent; wait for [`on_writable`](Self::on_writable).
    pub fn on_send_blocked(&mut self) {
        self.send_in_flight = false;
        self.send_blocked = true;
    }

    /// The socket has room again (readiness drivers).
    pub fn on_writable(&mut self) {
        self.send_blocked = false;
    }

    /// The send failed (or was cancelled): the connection is over.
    pub fn on_send_error(&mut self, env: &Env) {
        self.send_in_flight = false;
        self.fail(env);
    }

    /// A deadline may have passed: give ticks, end a stalled send or an
    /// overlong linger.
    pub fn on_deadline(&mut self, env: &Env) {
        let now = Moment::of(env.now);
        if self.failed {
            return;
        }
        if let Some(since) = self.send_waiting_since {
            if self.unsent() > 0 && now >= since + env.limits.send_timeout {
                env.stats.send_timeouts.inc();
                self.fail_quietly();
                return;
            }
        }
        if self.idle_since().is_some_and(|since| {
            env.limits
                .idle_timeout
                .is_some_and(|idle| now >= since + idle)
        }) {
            // Nothing owed, nothing heard: answer nothing more, send our
            // FIN, and close once the peer closes (or the linger ends).
            env.stats.idle_timeouts.inc();
            self.reading = Reading::Done;
            return;
        }
        if self.reading == Reading::Open && !self.fin_sent {
            if let Some(at) = self.session.timer() {
                if env.now >= at {
                    let next = self.session.on_timer(env.now, &mut self.pending);
                    self.adopt_asks(env);
                    if next == Next::Close {
                        self.reading = Reading::Done;
                    }
                }
            }
        }
        let due = self.timer.is_some_and(|at| now >= at);
        if due && self.fin_sent {
            // The peer never closed: close without waiting any longer.
            self.fail_quietly();
        } else if due && self.ticking() {
            self.timer = Some(now + TICK);
            self.tick(env);
        }
    }

    /// Shutdown began: answer what the kernel had already queued for us
    /// (`queued` bytes), then finish.
    pub fn on_shutdown(&mut self, queued: usize) {
        if self.reading == Reading::Open && self.drain_budget.is_none() {
            self.drain_budget = Some(u32::try_from(queued).unwrap_or(u32::MAX));
        }
    }

    // ----- answers -----

    /// What the driver should do next; call until it answers `None`.
    pub fn poll_action(&mut self, env: &Env) -> Option<Action> {
        if self.closed {
            return None;
        }
        if self.failed {
            if self.send_in_flight && !self.cancel_requested {
                self.cancel_requested = true;
                return Some(Action::CancelSend);
            }
            if self.recv == Recv::Active {
                self.recv = Recv::Stopping;
                return Some(Action::StopReceiving);
            }
            return self.close_if_quiescent(env);
        }
        self.advance(env);
        if !self.send_in_flight && !self.send_blocked && self.next_send() {
            self.send_in_flight = true;
            self.send_waiting_since
                .get_or_insert_with(|| Moment::of(env.now));
            return Some(Action::Send);
        }
        if self.unsent() == 0 {
            self.send_waiting_since = None;
        }
        if self.all_answered() && !self.fin_sent {
            self.fin_sent = true;
            if self.peer_closed {
                return self.close_if_quiescent(env);
            }
            self.timer = Some(Moment::of(env.now) + env.limits.linger);
            return Some(Action::ShutdownWrite);
        }
        if self.fin_sent && self.peer_closed {
            return self.close_if_quiescent(env);
        }
        // Hysteresis: reading stops above the limit and resumes at half of it.
        let limit = env.limits.output_limit;
        let wanted = match self.recv {
            Recv::Active => self.wants_input(limit),
            _ => self.wants_input(limit / 2),
        };
        let held_back = !wanted
            && self.reading == Reading::Open
            && !self.peer_closed
            && !self.fin_sent
            && self.drain_budget.is_none();
        if held_back && !self.paused {
            env.stats.backpressure_pauses.inc();
        }
        self.set_paused(held_back, env);
        match self.recv {
            Recv::Active if !wanted => {
                self.recv = Recv::Stopping;
                Some(Action::StopReceiving)
            }
            Recv::Idle if wanted => {
                self.recv = Recv::Active;
                Some(Action::StartReceiving)
            }
            _ => None,
        }
    }

    /// What to send for [`Action::Send`]; unchanged until the send
    /// reports back.
    pub fn outgoing(&self) -> Outgoing<'_> {
        match self.lent {
            Some(len) => Outgoing::Lent(self.sent..len.get() as usize),
            None => Outgoing::Owned(self.send_buf()),
        }
    }

    /// The bytes to send for [`Action::Send`], for a driver that never
    /// lends; unchanged until the send reports back.
    pub fn send_buf(&self) -> &[u8] {
        debug_assert!(self.lent.is_none(), "a lending driver uses outgoing()");
        match self.static_out {
            Some(part) => &part[self.sent..],
            None => &self.sending[self.sent..],
        }
    }

    /// When [`on_deadline`](Self::on_deadline) should next be called.
    pub fn next_deadline(&self, limits: &Limits) -> Option<Moment> {
        if self.failed || self.closed {
            return None;
        }
        let stall = self
            .send_waiting_since
            .filter(|_| self.unsent() > 0)
            .map(|since| since + limits.send_timeout);
        let timer = self.timer.filter(|_| self.fin_sent || self.ticking());
        let idle = self
            .idle_since()
            .zip(limits.idle_timeout)
            .map(|(since, idle)| since + idle);
        let session = self
            .session
            .timer()
            .filter(|_| self.reading == Reading::Open && !self.fin_sent)
            .map(Moment::of);
        [stall, timer, idle, session].into_iter().flatten().min()
    }

    /// Reply bytes produced but not yet taken by the kernel.
    pub fn unsent(&self) -> usize {
        self.pending.len() + self.in_flight_len() - self.sent
    }

    /// Memory held for output: what is queued, plus the whole buffer of a
    /// send under way (the kernel may have taken part of it, but it stays
    /// allocated until the send reports). The output bound counts this, so
    /// it bounds memory, not just bytes owed. A part sent from static
    /// memory holds none.
    pub fn output_held(&self) -> usize {
        let len = self.in_flight_len();
        let in_flight = if self.sent < len && self.static_out.is_none() {
            len
        } else {
            0
        };
        self.pending.len() + in_flight + self.asks_waiting() * mesh::ASK_MEMORY
    }

    /// Input received but not yet taken by the session.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Heap memory this connection holds for its input and output (the
    /// buffers' capacity, not just their bytes), as the worker's memory
    /// budget counts it. Once it has failed it holds at most the buffer of
    /// a send in flight, released when that send reports. Static parts and
    /// lent receive buffers are not its own heap memory.
    pub fn memory(&self) -> usize {
        self.pending.capacity()
            + self.sending.capacity()
            + self.held.capacity()
            + self.asks_waiting() * mesh::ASK_MEMORY
    }

    /// Since when output owed to the peer has waited without the kernel
    /// taking a byte of it; `None` while nothing is owed.
    pub fn stalled_since(&self) -> Option<Moment> {
        self.send_waiting_since.filter(|_| self.unsent() > 0)
    }

    /// True once an error, a timeout or an eviction has ended the
    /// connection: it is on its way to [`Action::Close`].
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// The worker is over its memory budget and this connection holds the
    /// most: end it now, dropping what it queued (`connections_evicted`).
    pub fn evict(&mut self, env: &Env) {
        if !self.failed {
            env.stats.connections_evicted.inc();
            self.fail_quietly();
        }
    }

    /// An answer to part `part` of ask `ask` came back from another
    /// worker: once the ask has all its parts, its bytes take their place
    /// in the output. An answer for an ask the connection no longer has
    /// (it failed meanwhile) is dropped.
    pub(crate) fn on_answer(&mut self, ask: u32, part: u32, answer: Vec<u8>) {
        let Some(asks) = self.asks.as_mut() else {
            return;
        };
        // Any answer ends the hold: output never waits longer than the
        // first answer after an ask, however many asks follow.
        asks.hold = false;
        if let Some((at, bytes)) = asks.answered(ask, part, answer) {
            self.pending.splice(at..at, bytes);
        }
        if self.asks.as_ref().is_some_and(|a| a.is_empty()) {
            self.asks = None;
        }
    }

    /// The parts of asks not yet handed over to travel: (ask, part,
    /// service, owner, job) each.
    pub(crate) fn take_unsent_asks(&mut self) -> Vec<(u32, u32, u32, u32, Job)> {
        self.asks
            .as_mut()
            .map(|a| std::mem::take(&mut a.unsent))
            .unwrap_or_default()
    }

    /// Asks made and not yet answered.
    pub fn asks_waiting(&self) -> usize {
        self.asks.as_ref().map_or(0, |a| a.waiting.len())
    }

    // ----- inside -----

    /// Takes over the asks the session just made (see [`mesh::Mesh::ask`]):
    /// each marks the place in the output its answer will fill.
    fn adopt_asks(&mut self, env: &Env) {
        let Some(mesh) = env.mesh else {
            return;
        };
        for staged in mesh.end_call() {
            self.asks.get_or_insert_with(Default::default).add(staged);
        }
    }

    /// The length of the current send's whole buffer.
    fn in_flight_len(&self) -> usize {
        self.lent
            .map(|len| len.get() as usize)
            .or(self.static_out.map(<[u8]>::len))
            .unwrap_or(self.sending.len())
    }

    /// Offers `input` to the session while output stays under the limit;
    /// returns how much it took, and whether it asked for more input
    /// before it takes the rest.
    fn offer(&mut self, input: &[u8], env: &Env) -> (usize, bool) {
        let limit = env.limits.output_limit;
        let mut taken = 0;
        let mut awaiting = false;
        while taken < input.len() && self.reading == Reading::Open {
            let held = self.output_held();
            let answers_due = self.asks_waiting() >= mesh::MAX_WAITING;
            if held >= limit || self.session.has_more_output() || answers_due {
                break;
            }
            if let Some(mesh) = env.mesh {
                mesh.feeding(self.asks_waiting());
            }
            let fed = self
                .session
                .on_input(&input[taken..], &mut self.pending, limit - held);
            self.adopt_asks(env);
            taken += fed.consumed.min(input.len() - taken);
            if fed.next == Next::Close {
                self.reading = Reading::Done;
                return (input.len(), false);
            }
            if fed.consumed == 0 {
                // Need more input: the rest waits until more arrives.
                awaiting = !self.session.has_more_output();
                break;
            }
        }
        (taken, awaiting)
    }

    /// Moves everything that can move without I/O: long bodies refilled,
    /// held input offered, the end of stream and of shutdown's budget.
    fn advance(&mut self, env: &Env) {
        let limit = env.limits.output_limit;
        if self.session.has_more_output() && self.produce_more(limit, env) == Next::Close {
            self.reading = Reading::Done;
        }
        if self.held_len() > 0 && !self.awaiting_more() {
            let mut held = std::mem::take(&mut self.held);
            let (taken, awaiting) = self.offer(held.as_slice(), env);
            held.consume(taken);
            held.set_awaiting(awaiting, self.input_needed());
            self.held = held;
        }
        if self.awaiting_more() && self.held_len() > self.session.max_frame() {
            // The frame outgrew its bound: a last word, then close.
            env.stats.frames_too_large.inc();
            self.session.on_frame_too_large(&mut self.pending);
            self.adopt_asks(env);
            self.reading = Reading::Done;
        }
        // Input that only waits for the rest of a frame is spent once no
        // more can come (end of stream, shutdown's budget used up).
        let input_spent =
            (self.held_len() == 0 || self.awaiting_more()) && !self.session.has_more_output();
        if self.reading == Reading::Open && input_spent {
            if self.peer_closed && !self.eof_delivered {
                self.eof_delivered = true;
                // The session gets a last look at a frame that will never
                // complete; it is counted as discarded all the same.
                let unread = std::mem::take(&mut self.held);
                self.session.on_eof(unread.as_slice(), &mut self.pending);
                self.held = unread;
                self.discard_held(env);
                self.adopt_asks(env);
                self.reading = Reading::Done;
            } else if self.drain_budget == Some(0) {
                self.reading = Reading::Done;
            }
        }
        if self.reading == Reading::Done {
            self.discard_held(env);
        }
    }

    /// What the session says its frame needs, never more than one byte
    /// past its frame bound: a session that passes on a length the peer
    /// wrote (4 GiB, say) cannot make the connection reserve it; the frame
    /// bound ends such a frame first.
    fn input_needed(&self) -> usize {
        self.session
            .input_needed()
            .min(self.session.max_frame().saturating_add(1))
    }

    /// True while everything held is a frame's beginning the session has
    /// seen and waits to complete.
    fn awaiting_more(&self) -> bool {
        self.held.awaiting()
    }

    /// Drops held input that will never be offered (counted as discarded).
    fn discard_held(&mut self, env: &Env) {
        if self.held_len() > 0 {
            env.stats.bytes_discarded.add(self.held_len() as u64);
            self.held = HeldInput::default();
        }
    }

    /// Lets the session produce more of a long output: a static part once
    /// everything before it is sent (it is sent from where it lies, so it
    /// must not overtake queued bytes), or a copy into `pending` once the
    /// output held falls to half the limit.
    fn produce_more(&mut self, limit: usize, env: &Env) -> Next {
        if self.session.has_static_output() {
            if self.unsent() > 0 || self.send_in_flight {
                return Next::Continue;
            }
            if let Some((part, next)) = self.session.take_static_output(limit) {
                self.clear_sending();
                self.static_out = Some(part).filter(|part| !part.is_empty());
                return next;
            }
        }
        if self.output_held() <= limit / 2 {
            let next = self.session.on_drained(&mut self.pending);
            self.adopt_asks(env);
            return next;
        }
        Next::Continue
    }

    fn wants_input(&self, output_at_most: usize) -> bool {
        if self.failed || self.peer_closed {
            return false;
        }
        if self.fin_sent {
            return true; // discard until the peer closes
        }
        self.reading == Reading::Open
            && (self.held_len() == 0 || self.awaiting_more())
            && self.drain_budget != Some(0)
            && self.output_held() <= output_at_most
            && self.asks_waiting() < mesh::MAX_WAITING
    }

    /// True once every reply the connection will ever make has been sent.
    fn all_answered(&self) -> bool {
        self.reading == Reading::Done
            && self.unsent() == 0
            && !self.send_in_flight
            && !self.session.has_more_output()
            && self.asks_waiting() == 0
    }

    /// Moves queued output into `sending` when the last send is done;
    /// true when there is something to send.
    fn next_send(&mut self) -> bool {
        if self.lent.is_some() || self.static_out.is_some() {
            return true; // the rest of the lent buffer or static part
        }
        if self.sent == self.sending.len() {
            self.clear_sending();
            if !self.asks.as_ref().is_some_and(|a| a.hold) {
                match self.asks.as_mut().and_then(|a| a.sendable()) {
                    // Output stops at the first ask still unanswered.
                    Some(upto) => self.sending.extend(self.pending.drain(..upto)),
                    None => std::mem::swap(&mut self.pending, &mut self.sending),
                }
            }
        }
        if self.sending.is_empty() {
            self.release_idle_memory();
            return false;
        }
        true
    }

    /// Forgets the sent contents of `sending`. A large buffer is given back
    /// rather than reused: a connection holds about as much memory as it
    /// has output, never twice it.
    fn clear_sending(&mut self) {
        if self.sending.capacity() > KEEP_CAPACITY {
            self.sending = Vec::new();
        }
        self.sending.clear();
        self.sent = 0;
    }

    /// Since when the connection has been idle, while the idle timeout may
    /// end it: still read, nothing owed or held, no long output under way.
    fn idle_since(&self) -> Option<Moment> {
        let idle = self.reading == Reading::Open
            && !self.fin_sent
            && !self.failed
            && self.drain_budget.is_none()
            && self.unsent() == 0
            && !self.send_in_flight
            && (self.held_len() == 0 || self.awaiting_more())
            && !self.session.has_more_output()
            && self.asks_waiting() == 0;
        idle.then_some(self.last_traffic)
    }

    /// True while the session gets ticks: it keeps time and is still fed.
    fn ticking(&self) -> bool {
        self.ticks && self.reading == Reading::Open && !self.fin_sent
    }

    fn tick(&mut self, env: &Env) {
        if self.reading == Reading::Done {
            return;
        }
        let silent_for = Moment::of(env.now).since(self.last_active);
        let next = self.session.on_tick(env.now, silent_for, &mut self.pending);
        self.adopt_asks(env);
        if next == Next::Close {
            self.reading = Reading::Done;
            env.stats.idle_timeouts.inc();
        }
    }

    /// Records whether reading is held back by the output, keeping the
    /// worker's `connections_paused` gauge.
    fn set_paused(&mut self, paused: bool, env: &Env) {
        match (self.paused, paused) {
            (false, true) => env.stats.connections_paused.inc(),
            (true, false) => env.stats.connections_paused.add(u64::MAX), // minus one
            _ => {}
        }
        self.paused = paused;
    }

    fn close_if_quiescent(&mut self, env: &Env) -> Option<Action> {
        if self.recv == Recv::Idle && !self.send_in_flight {
            self.set_paused(false, env);
            self.closed = true;
            Some(Action::Close)
        } else {
            None
        }
    }

    fn fail(&mut self, env: &Env) {
        if !self.failed {
            env.stats.connection_errors.inc();
        }
        self.fail_quietly();
    }

    fn fail_quietly(&mut self) {
        self.failed = true;
        self.pending = Vec::new();
        self.held = HeldInput::default();
        // Answers still on their way find nothing and are dropped.
        self.asks = None;
    }

    fn release_idle_memory(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
        if self.sending.is_empty() && self.sending.capacity() > KEEP_CAPACITY {
            self.sending = Vec::new();
        }
    }
}

/// What [`Action::Send`] sends.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing<'a> {
    /// These bytes, which the connection holds (or static memory).
    Owned(&'a [u8]),
    /// This range of the buffer the driver lent (see [`Connection::lend`]).
    Lent(std::ops::Range<usize>),
}

/// A connection's asks to other workers, in the order they were made,
/// which is the order of their places in the output.
#[derive(Default)]
struct Asks {
    waiting: VecDeque<Hole>,
    /// Asks were just made: output ready before them waits for the next
    /// answer, so that a pipeline whose requests go to several workers
    /// leaves in one send, not as a prefix now and the rest a hop later
    /// (each send a wake-up and a read for the client).
    hold: bool,
    next_id: u32,
    /// Parts not yet handed over to travel: (ask, part, service, owner, job).
    unsent: Vec<(u32, u32, u32, u32, Job)>,
}

/// The place in the output an ask's answer will fill.
struct Hole {
    id: u32,
    /// Index into `pending` where the answer goes.
    at: usize,
    answers: Vec<Option<Vec<u8>>>,
    /// Parts still unanswered.
    left: usize,
    finish: Option<Finish>,
}

impl Asks {
    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.unsent.is_empty()
    }

    fn add(&mut self, staged: mesh::StagedAsk) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.hold = true;
        let mut answers = Vec::with_capacity(staged.parts.len());
        let mut left = 0;
        for (part, p) in staged.parts.into_iter().enumerate() {
            match p {
                Part::Answered(bytes) => answers.push(Some(bytes)),
                Part::Remote(owner, job) => {
                    answers.push(None);
                    left += 1;
                    self.unsent
                        .push((id, part as u32, staged.service, owner, job));
                }
            }
        }
        self.waiting.push_back(Hole {
            id,
            at: staged.at,
            answers,
            left,
            finish: staged.finish,
        });
    }

    /// How much of `pending` may be sent now: up to the first unanswered
    /// ask's place (the places after it move back by that much); `None`
    /// when no ask waits.
    fn sendable(&mut self) -> Option<usize> {
        let upto = self.waiting.front()?.at;
        for hole in &mut self.waiting {
            hole.at -= upto;
        }
        Some(upto)
    }

    /// Records an answer; when it completes its ask: where its bytes go
    /// in `pending`, and the bytes (the places after it move on by as many).
    fn answered(&mut self, ask: u32, part: u32, answer: Vec<u8>) -> Option<(usize, Vec<u8>)> {
        let i = self.waiting.iter().position(|h| h.id == ask)?;
        let hole = &mut self.waiting[i];
        let slot = hole.answers.get_mut(part as usize)?;
        if slot.is_some() {
            return None; // answered twice: never, but not twice in the output
        }
        *slot = Some(answer);
        hole.left -= 1;
        if hole.left > 0 {
            return None;
        }
        let hole = self.waiting.remove(i)?;
        let answers: Vec<Vec<u8>> = hole.answers.into_iter().flatten().collect();
        let bytes = match hole.finish {
            Some(finish) => {
                let mut out = Vec::new();
                finish(answers, &mut out);
                out
            }
            None => answers.into_iter().next().unwrap_or_default(),
        };
        for later in self.waiting.iter_mut().skip(i) {
            later.at += bytes.len();
        }
        Some((hole.at, bytes))
    }
}

/// Input received but not yet taken by the session. Absent while empty,
/// which is nearly always, so an idle connection pays one pointer for it.
#[derive(Default)]
struct HeldInput(Option<Box<Held>>);

struct Held {
    bytes: Vec<u8>,
    /// How much of `bytes` the session has taken.
    from: usize,
    /// The session has seen every byte held and asked for more ("need
    /// more input"): they are offered again only once more arrive, and at
    /// least `needed` bytes are held.
    awaiting: bool,
    /// How many bytes the awaited frame needs in all, as the session said
    /// ([`StreamSession::input_needed`]); 0 when it did not say.
    needed: usize,
}

impl HeldInput {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |h| h.bytes.len() - h.from)
    }

    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |h| h.bytes.capacity())
    }

    fn as_slice(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |h| &h.bytes[h.from..])
    }

    /// Keeps `data` after what is held. Input held back by full output
    /// gets no slack capacity; a frame being gathered grows geometrically
    /// (or at once to the size the session said it needs), so a peer
    /// trickling a large frame a byte at a time costs no copy per byte.
    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let held = self.0.get_or_insert_with(|| {
            Box::new(Held {
                bytes: Vec::new(),
                from: 0,
                awaiting: false,
                needed: 0,
            })
        });
        if held.awaiting {
            let wanted = held.needed.saturating_sub(held.bytes.len() - held.from);
            held.bytes.reserve(data.len().max(wanted));
        } else {
            held.bytes.reserve_exact(data.len());
        }
        held.bytes.extend_from_slice(data);
        if held.bytes.len() - held.from >= held.needed {
            held.awaiting = false; // enough new bytes: worth offering again
        }
    }

    /// True while the session waits for more than what is held.
    fn awaiting(&self) -> bool {
        self.0.as_ref().is_some_and(|h| h.awaiting)
    }

    /// Records whether the session, offered everything held, asked for
    /// more, and how many bytes in all it said it needs (0: any more).
    fn set_awaiting(&mut self, awaiting: bool, needed: usize) {
        if let Some(held) = self.0.as_mut() {
            held.awaiting = awaiting;
            held.needed = if awaiting { needed } else { 0 };
        }
    }

    /// The session took `n` bytes from the front.
    fn consume(&mut self, n: usize) {
        let Some(held) = self.0.as_mut() else {
            return;
        };
        held.from = (held.from + n).min(held.bytes.len());
        if held.from == held.bytes.len() {
            self.0 = None;
        } else if held.from > held.bytes.len() / 2 {
            held.bytes.drain(..held.from);
            held.from = 0;
        }
    }
}

#[cfg(test)]
mod tests;
