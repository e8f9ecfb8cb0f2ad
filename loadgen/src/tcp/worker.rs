//! One load thread: its connections, its io_uring, and the bookkeeping that
//! gives every scheduled request exactly one fate.
//!
//! A connection's requests are answered in order, so its in-flight queue is
//! FIFO. A request that times out stays at the front, flagged, until its late
//! reply arrives (then it is discarded: it was already counted as a timeout)
//! so the connection is reused instead of torn down; only when a flagged
//! request stays unanswered for twice the timeout is the connection given up.
//!
//! The I/O is io_uring (this file) or, where io_uring is unavailable,
//! edge-triggered epoll with plain reads and writes (`readiness`); the
//! bookkeeping is the same for both.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use engine::bufring::BufRing;
use engine::token::{Op, Token};
use engine::uring::Uring;
use hdrhistogram::Histogram;
use io_uring::{cqueue, opcode, types};
use socket2::{Domain, SockAddr, Socket, Type};

use super::client::{Check, Client, Failure, InFlight, Link};
use super::{Connects, Fates, IoPath, RequestErrors, StreamProtocol, TcpPlan, Workload};
use crate::cli::SizeRange;
use crate::latency::{self, Series};
use crate::progress::Live;
use crate::request_log::{Outcome, RequestLog};
use crate::rng::Rng;
use crate::schedule::RateProfile;

mod readiness;

/// How often a thread publishes its progress.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// A slot whose connect failed tries again after this long.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// A thread's part of the plan.
pub struct Share {
    /// Connections this thread drives.
    pub connections: usize,
    /// Requests this thread issues (`--requests`), if bounded.
    pub quota: Option<u64>,
    /// This thread's share of the open-loop rate.
    pub rate: Option<RateProfile>,
    /// Seeds the payloads.
    pub seed: u64,
    /// `--request-log`'s file.
    pub log: Option<std::sync::Arc<std::fs::File>>,
}

/// What one thread measured (the fields as in [`super::TcpOutcome`]).
pub struct ThreadOutcome {
    /// How this thread's scheduled requests ended.
    pub fates: Fates,
    /// Requests that ended in an error.
    pub errors: RequestErrors,
    /// What this thread's connections went through.
    pub connects: Connects,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received and verified.
    pub bytes_received: u64,
    /// When this thread put its first request on the wire.
    pub first_send: Option<Instant>,
    /// When this thread received its last answer.
    pub last_reply: Option<Instant>,
    /// When its last request fell due (open loop) or was sent (closed).
    pub last_scheduled: Option<Instant>,
    /// When the thread stopped.
    pub ended: Instant,
    /// Latency samples (completed and timed out), nanoseconds, of requests
    /// due (or sent) after the warm-up.
    pub latency: Histogram<u64>,
    /// Samples left out because their request fell in the warm-up.
    pub warmup_samples: u64,
    /// How long each unsent request had been due at the end, nanoseconds.
    pub backlog: Histogram<u64>,
    /// How late the thread got round to its next due event (a request
    /// falling due, a tick), nanoseconds, after the warm-up: its own delay,
    /// whether busy or not scheduled, which every request then due shares.
    pub lateness: Histogram<u64>,
    /// Latency per interval, when asked for.
    pub series: Option<Series>,
    /// Service time of the same samples: from the request's send, not its
    /// due time (equal to `latency` in a closed loop).
    pub service: Histogram<u64>,
    /// `service` per interval, when asked for.
    pub service_series: Option<Series>,
    /// A changing rate: requests sent in each second of the run.
    pub sent_per_second: Vec<u64>,
    /// A changing rate: latency per second of the run (by completion).
    pub per_second: Option<Series>,
    /// How late the thread woke for the run's start.
    pub start_lateness: Duration,
}

impl ThreadOutcome {
    /// Nothing measured yet.
    pub fn empty(start: Instant) -> Self {
        Self {
            fates: Fates::default(),
            errors: RequestErrors::default(),
            connects: Connects::default(),
            bytes_sent: 0,
            bytes_received: 0,
            first_send: None,
            last_reply: None,
            last_scheduled: None,
            ended: start,
            latency: latency::histogram(),
            warmup_samples: 0,
            backlog: latency::histogram(),
            lateness: latency::histogram(),
            series: None,
            service: latency::histogram(),
            service_series: None,
            sent_per_second: Vec::new(),
            per_second: None,
            start_lateness: Duration::ZERO,
        }
    }
}

/// The target's address and the connect timeout, at addresses that stay put
/// while the kernel reads them.
struct ConnectArgs {
    addr: SockAddr,
    timeout: types::Timespec,
}

/// How a load thread does its I/O.
enum Io {
    /// The ring and its receive buffers (buffer ring 0), and the connect
    /// arguments (boxed: connect submissions point into them). Dropped
    /// only after every operation has been reaped (see the worker's Drop).
    Uring {
        uring: Box<Uring>,
        connect_args: Box<ConnectArgs>,
    },
    /// Edge-triggered epoll with plain syscalls.
    Readiness(readiness::Poller),
}

pub struct Worker<'a> {
    io: Io,
    plan: &'a TcpPlan,
    live: &'a Live,
    share: Share,
    clients: Vec<Client>,
    rng: Rng,
    start: Instant,
    /// New requests may still be issued.
    running: bool,
    /// Requests put on the wire.
    issued: u64,
    /// Requests in flight and not yet counted as timeouts, over all clients.
    outstanding: usize,
    out: ThreadOutcome,
    /// Latency samples since they were last folded into the run's
    /// histogram (every [`PUBLISH_EVERY`], for the progress line's p99).
    interval: Histogram<u64>,
    /// Open loop: requests that fell due and found no connection free.
    waiting: Waiting,
    /// Open loop: a free pipeline slot per entry, as (client, generation).
    free: VecDeque<(usize, u32)>,
    rearm: Vec<usize>,
    payload: Vec<u8>,
    /// Per response completed by one read: whether its status was bad.
    bad_status: Vec<bool>,
    /// The readiness path's read buffer.
    read_buf: Vec<u8>,
    /// The last connect or reply: a run that cannot progress for long ends.
    last_progress: Instant,
    /// When `interval` is next folded in and the progress counters set.
    next_publish: Instant,
    /// `--request-log`: this thread's rows on their way to the file.
    log: Option<RequestLog>,
}

/// Open loop: the schedule, and the requests that fell due and wait for a
/// free pipeline slot. Those are consecutive in the schedule, so the
/// oldest's number and a count stand for them all: a run far past the
/// server's capacity holds no more memory for them than a run within it.
struct Waiting {
    /// This thread's share of the rate (closed loop: none).
    profile: Option<RateProfile>,
    /// The schedule's time zero.
    start: Instant,
    /// Requests fallen due so far (the next one's number).
    fallen: u64,
    /// The oldest waiting request's number (`fallen` when none waits).
    oldest: u64,
    /// When it fell due.
    oldest_due: Instant,
}

impl Waiting {
    /// When request `k` falls due (None: never, the profile ended at 0).
    fn due(&self, k: u64) -> Option<Instant> {
        let at = self.profile.as_ref()?.due(k)?;
        Some(self.start + Duration::from_secs_f64(at))
    }

    /// When the next request falls due.
    fn next_due(&self) -> Option<Instant> {
        self.due(self.fallen)
    }

    /// The next request of the schedule fell due (at `next_due`).
    fn push(&mut self, due: Instant) {
        if self.is_empty() {
            self.oldest = self.fallen;
            self.oldest_due = due;
        }
        self.fallen += 1;
    }

    /// When the oldest waiting request fell due.
    fn front(&self) -> Option<Instant> {
        (!self.is_empty()).then_some(self.oldest_due)
    }

    /// The oldest is sent (or given up).
    fn pop(&mut self) {
        if !self.is_empty() {
            self.oldest += 1;
            if let Some(due) = self.due(self.oldest).filter(|_| !self.is_empty()) {
                self.oldest_due = due;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.oldest >= self.fallen
    }
}

impl<'a> Worker<'a> {
    pub fn new(
        plan: &'a TcpPlan,
        share: Share,
        live: &'a Live,
        start: Instant,
    ) -> anyhow::Result<Self> {
        let io = match plan.io {
            IoPath::Uring => {
                let entries = (share.connections * 3 + 64).next_power_of_two().min(4096) as u32;
                let mut uring = Uring::new(entries)?;
                let bufs =
                    BufRing::new(1024, 16 * 1024, 0).context("allocating receive buffers")?;
                uring
                    .add_buffers(bufs)
                    .context("registering the receive buffer ring")?;
                Io::Uring {
                    uring: Box::new(uring),
                    connect_args: Box::new(ConnectArgs {
                        addr: SockAddr::from(plan.addr),
                        timeout: types::Timespec::from(plan.timeout),
                    }),
                }
            }
            IoPath::Epoll => {
                Io::Readiness(readiness::Poller::new().context("creating the epoll instance")?)
            }
        };
        let mut out = ThreadOutcome::empty(start);
        out.series = plan.interval.map(Series::new);
        out.service_series = plan.interval.map(Series::new);
        let changing = share.rate.as_ref().is_some_and(|r| !r.is_constant());
        out.per_second = changing.then(|| Series::coarse(Duration::from_secs(1)));
        let log = share.log.clone().map(RequestLog::new);
        let profile = share.rate.clone();
        Ok(Worker {
            io,
            plan,
            live,
            clients: (0..share.connections)
                .map(|_| Client::new(&plan.workload, start))
                .collect(),
            rng: Rng::new(share.seed + 1),
            share,
            start,
            running: true,
            issued: 0,
            outstanding: 0,
            out,
            interval: latency::histogram(),
            waiting: Waiting {
                profile,
                start,
                fallen: 0,
                oldest: 0,
                oldest_due: start,
            },
            free: VecDeque::new(),
            rearm: Vec::new(),
            payload: Vec::new(),
            bad_status: Vec::new(),
            read_buf: Vec::new(),
            last_progress: start,
            next_publish: start,
            log,
        })
    }

    /// Starts a connect on slot `i` (through the ring, bounded by a linked
    /// timeout; or a non-blocking connect), so no load thread ever blocks
    /// on a connect.
    fn connect(&mut self, i: usize, now: Instant) {
        let socket = match Socket::new(
            Domain::for_address(self.plan.addr),
            Type::STREAM.cloexec(),
            None,
        ) {
            Ok(socket) => socket,
            Err(_) => {
                // Out of descriptors, say: count it and try again later.
                self.out.connects.failed += 1;
                self.clients[i].link = Link::Down {
                    retry_at: now + RETRY_AFTER,
                };
                return;
            }
        };
        let _ = socket.set_nodelay(true);
        let c = &mut self.clients[i];
        c.generation = c.generation.wrapping_add(1);
        c.link = Link::Connecting;
        c.reset(&self.plan.workload, now);
        let token = Token::new(Op::Connect, i as u32, c.generation);
        match &mut self.io {
            Io::Uring {
                uring,
                connect_args,
            } => {
                let connect = opcode::Connect::new(
                    types::Fd(socket.as_raw_fd()),
                    connect_args.addr.as_ptr().cast(),
                    connect_args.addr.len(),
                )
                .build()
                .user_data(token.encode());
                let timeout = opcode::LinkTimeout::new(&connect_args.timeout)
                    .build()
                    .user_data(Token::new(Op::Cancel, 0, 0).encode());
                c.socket = Some(socket);
                // SAFETY: the address and timespec live in `connect_args`,
                // boxed and owned by the worker, whose Drop reaps every
                // operation before they are freed; the socket is closed only
                // once its connect completed.
                unsafe { uring.push_linked(connect, timeout) };
            }
            Io::Readiness(poller) => {
                let started = poller.connect(&socket, self.plan.addr, token);
                c.socket = Some(socket);
                match started {
                    // Connected at once (loopback can): no event will say so.
                    Ok(true) => self.on_connect(i, 0, now),
                    Ok(false) => {}
                    Err(e) => self.on_connect(i, -e.raw_os_error().unwrap_or(libc::EIO), now),
                }
            }
        }
    }

    fn on_connect(&mut self, i: usize, res: i32, now: Instant) {
        if res < 0 {
            match -res {
                libc::ECONNREFUSED => self.out.connects.refused += 1,
                libc::ECANCELED | libc::ETIME | libc::ETIMEDOUT => self.out.connects.timed_out += 1,
                _ => self.out.connects.failed += 1,
            }
            let c = &mut self.clients[i];
            c.socket = None;
            c.link = Link::Down {
                retry_at: now + RETRY_AFTER,
            };
            return;
        }
        self.last_progress = now;
        let c = &mut self.clients[i];
        c.link = Link::Up;
        c.opened += 1;
        self.out.connects.opened += 1;
        if c.opened > 1 {
            self.out.connects.reconnects += 1;
        }
        let generation = c.generation;
        self.arm_recv(i);
        match self.share.rate {
            Some(_) => {
                for _ in 0..self.plan.pipeline {
                    self.free.push_back((i, generation));
                }
            }
            None => self.refill(i, now),
        }
    }

    /// io_uring: arms the multishot receive of client `i` (the readiness
    /// path reads on its edges instead).
    fn arm_recv(&mut self, i: usize) {
        let Io::Uring { uring, .. } = &mut self.io else {
            return;
        };
        let c = &mut self.clients[i];
        c.recv_armed = true;
        let group = uring.buffers(0).group();
        let entry = opcode::RecvMulti::new(types::Fd(c.fd()), group)
            .build()
            .user_data(Token::new(Op::Recv, i as u32, c.generation).encode());
        // SAFETY: the kernel writes only into the provided buffers, which the
        // Uring owns; the socket is closed only after this receive ended, and
        // the worker's Drop reaps it before the clients go.
        unsafe { uring.push(entry) };
    }

    fn may_issue(&self) -> bool {
        self.running && self.share.quota.is_none_or(|q| self.issued < q)
    }

    /// Queues one request on client `i`, counting latency from `since`, and
    /// sends it.
    fn issue(&mut self, i: usize, since: Instant, now: Instant) {
        self.queue_request(i, since, now);
        self.flush(i);
    }

    /// Queues one request on client `i`, counting latency from `since`, to
    /// go out with the next flush: requests made together leave in one
    /// send, as a pipelining client's do (a send per request would cost
    /// both ends a syscall and a segment each).
    /// Nothing happens on a connection that is not up (a write on the
    /// readiness path can fail it while its answers are being booked).
    fn queue_request(&mut self, i: usize, since: Instant, now: Instant) {
        if self.clients[i].link != Link::Up {
            return;
        }
        self.payload.clear();
        match &self.plan.workload {
            Workload::Stream(StreamProtocol::Echo) => {
                let SizeRange { lo, hi } = self.plan.size;
                self.payload.resize(self.rng.range(lo, hi), 0);
                self.rng.fill(&mut self.payload);
            }
            Workload::Stream(StreamProtocol::Reverse) => {
                const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let SizeRange { lo, hi } = self.plan.size;
                for _ in 1..self.rng.range(lo, hi) {
                    self.payload
                        .push(ALPHABET[self.rng.range(0, ALPHABET.len() - 1)]);
                }
                self.payload.push(b'\n');
            }
            Workload::Http { requests } => {
                let turn = (self.issued % requests.len() as u64) as usize;
                self.payload.extend_from_slice(&requests[turn]);
            }
            // Written below, with what its reply must be.
            Workload::Dialect(_) => {}
        }
        let c = &mut self.clients[i];
        let reply_end = match &mut c.check {
            Check::Exact {
                model,
                expected,
                offset,
                received,
            } => {
                model.on_bytes(&self.payload, expected);
                *received + (expected.len() - *offset) as u64
            }
            Check::Http { .. } => 0,
            Check::Dialect(reader) => {
                // Unique over the run's threads.
                let seq = self.issued * self.plan.threads as u64 + self.share.seed;
                reader.request(seq, &mut self.rng, &mut self.payload);
                0
            }
        };
        c.inflight.push_back(InFlight {
            reply_end,
            since,
            sent: now,
            bytes: self.payload.len() as u32,
        });
        c.queued.extend_from_slice(&self.payload);
        self.issued += 1;
        self.outstanding += 1;
        if self.out.per_second.is_some() {
            let second = now.saturating_duration_since(self.start).as_secs() as usize;
            let sent = &mut self.out.sent_per_second;
            if sent.len() <= second {
                sent.resize(second + 1, 0);
            }
            sent[second] += 1;
        }
        if self.share.rate.is_none() {
            self.out.fates.scheduled += 1;
            self.out.last_scheduled = Some(now);
        }
        self.out.first_send.get_or_insert(now);
        if self.share.quota.is_some_and(|q| self.issued >= q) {
            self.running = false;
        }
    }

    /// Sends what client `i` has queued: a send through the ring, or
    /// writes until the socket is full (then at its next writable edge).
    fn flush(&mut self, i: usize) {
        if self.clients[i].link != Link::Up {
            return;
        }
        let Io::Uring { uring, .. } = &mut self.io else {
            self.write_ready(i);
            return;
        };
        let c = &mut self.clients[i];
        if c.send_busy {
            return;
        }
        let (fd, token) = (c.fd(), Token::new(Op::Send, i as u32, c.generation));
        let rest = c.unsent();
        if rest.is_empty() {
            return;
        }
        let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token.encode());
        c.send_busy = true;
        // SAFETY: `sending` is not touched while `send_busy`, a client is
        // not reconnected (its buffers reset) until its send has completed,
        // and the worker's Drop reaps every send before the clients go.
        unsafe { uring.push(entry) };
    }

    /// Before a `--start-at` instant: opens every connection (waiting for
    /// them until `until` at most), so the load begins on established
    /// connections, at the same moment in every agent, and not with a burst
    /// of connects. Nothing is sent.
    pub fn prepare(&mut self, until: Instant) -> anyhow::Result<()> {
        self.running = false;
        let now = Instant::now();
        for i in 0..self.clients.len() {
            self.connect(i, now);
        }
        let mut cqes = Vec::new();
        while self.clients.iter().any(|c| c.link == Link::Connecting) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.wait_and_handle(left.min(Duration::from_millis(10)), &mut cqes)?;
        }
        self.running = true;
        Ok(())
    }

    /// Moves the run's start (its schedule and time axis) to `start`.
    pub fn set_start(&mut self, start: Instant) {
        self.start = start;
        self.waiting.start = start;
        self.out.ended = start;
    }

    pub fn run(mut self) -> anyhow::Result<ThreadOutcome> {
        let start = self.start;
        if self.share.rate.is_none() {
            // Connections opened by `prepare` get their first requests now.
            for i in 0..self.clients.len() {
                if self.clients[i].link == Link::Up {
                    self.refill(i, Instant::now());
                }
            }
        }
        let deadline = start + self.plan.warmup + self.plan.duration;
        let open_loop = self.share.rate.is_some();
        // Timeouts are noticed within a quarter of the timeout.
        let tick_every =
            (self.plan.timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let mut next_tick = start;
        let mut cqes = Vec::new();
        loop {
            let now = Instant::now();

            // A --requests run ends once nothing connected or answered for
            // this long (the server is gone); otherwise it would never end.
            let stalled = self.plan.timeout * 2 + Duration::from_secs(1);
            if self.running
                && self.plan.requests.is_some()
                && self.outstanding == 0
                && now.saturating_duration_since(self.last_progress) > stalled
            {
                self.running = false;
            }
            let timed = self.plan.requests.is_none();
            if open_loop {
                // Everything due up to now (and before the end) falls due.
                while let Some(due) = self.waiting.next_due().filter(|&due| {
                    self.running
                        && due <= now
                        && !(timed && due >= deadline)
                        && self
                            .share
                            .quota
                            .is_none_or(|q| self.out.fates.scheduled < q)
                }) {
                    self.waiting.push(due);
                    self.out.fates.scheduled += 1;
                    self.out.last_scheduled = Some(due);
                }
                if self.running && self.waiting.next_due().is_none() && self.waiting.is_empty() {
                    // The profile fell to 0 for good.
                    self.running = false;
                }
                if self
                    .share
                    .quota
                    .is_some_and(|q| self.out.fates.scheduled >= q)
                    && self.waiting.is_empty()
                {
                    self.running = false;
                }
                self.send_waiting(now);
            }
            if self.running && timed && now >= deadline {
                self.running = false;
            }
            if !self.running {
                self.end_backlog(now);
                if self.outstanding == 0 {
                    break;
                }
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick_every;
            }
            let mut wake = next_tick;
            if self.running {
                wake = wake.min(deadline.max(now));
                if let Some(due) = self.waiting.next_due().filter(|_| self.waiting.is_empty()) {
                    wake = wake.min(due);
                }
            }
            let wait = wake.saturating_duration_since(Instant::now());
            self.wait_and_handle(wait, &mut cqes)?;
            let woke = Instant::now();
            if woke > wake && wake >= start + self.plan.warmup {
                self.out
                    .lateness
                    .saturating_record(woke.duration_since(wake).as_nanos() as u64);
            }
        }
        self.out.ended = Instant::now();
        if let Some(log) = &mut self.log {
            log.finish().context("writing --request-log")?;
        }
        let mut out = std::mem::replace(&mut self.out, ThreadOutcome::empty(start));
        out.latency
            .add(&self.interval)
            .context("merging the last interval")?;
        Ok(out)
    }

    /// Waits up to `wait` for completions (or readiness) and handles them.
    fn wait_and_handle(
        &mut self,
        wait: Duration,
        cqes: &mut Vec<cqueue::Entry>,
    ) -> anyhow::Result<()> {
        let Io::Uring { uring, .. } = &mut self.io else {
            return self.poll_ready(wait);
        };
        uring
            .enter(Some(wait.max(Duration::from_micros(1))))
            .context("io_uring_enter")?;
        cqes.clear();
        uring.reap(cqes);
        let now = Instant::now();
        for cqe in cqes.iter() {
            self.complete(cqe, now);
        }
        if let Io::Uring { uring, .. } = &mut self.io {
            uring.publish_buffers();
        }
        for i in std::mem::take(&mut self.rearm) {
            let c = &self.clients[i];
            if c.link == Link::Up && !c.recv_armed {
                self.arm_recv(i);
            }
        }
        Ok(())
    }

    /// Open loop: puts waiting requests on free pipeline slots, oldest first.
    fn send_waiting(&mut self, now: Instant) {
        while let Some(due) = self.waiting.front() {
            let Some((i, generation)) = self.free.pop_front() else {
                return;
            };
            let c = &self.clients[i];
            if c.link != Link::Up || c.generation != generation {
                continue; // a slot of a connection that has since failed
            }
            self.waiting.pop();
            self.issue(i, due, now);
        }
    }

    /// The run is over: requests that fell due but were never sent end as
    /// `unsent`, each with how long it had been due.
    fn end_backlog(&mut self, now: Instant) {
        while let Some(due) = self.waiting.front() {
            self.waiting.pop();
            self.out.fates.unsent += 1;
            if let Some(log) = &mut self.log {
                log.row(self.start, due, None, now, 0, Outcome::Unsent);
            }
            self.out
                .backlog
                .saturating_record(now.saturating_duration_since(due).as_nanos() as u64);
        }
    }

    /// Every tick: connects due, timeouts, progress.
    fn tick(&mut self, now: Instant) {
        let timeout = self.plan.timeout;
        for i in 0..self.clients.len() {
            match self.clients[i].link {
                Link::Down { retry_at } if retry_at <= now && self.running => self.connect(i, now),
                // The ring bounds its connects with a linked timeout; a
                // non-blocking connect is bounded here.
                Link::Connecting
                    if matches!(self.io, Io::Readiness(_))
                        && now.saturating_duration_since(self.clients[i].connect_started)
                            >= timeout =>
                {
                    self.on_connect(i, -libc::ETIMEDOUT, now)
                }
                Link::Up => {
                    while let Some(f) = self.clients[i].inflight.get(self.clients[i].timed_out) {
                        if now.saturating_duration_since(f.sent) < timeout {
                            break;
                        }
                        let (since, sent) = (f.since, f.sent);
                        if let Some(log) = &mut self.log {
                            let bytes = f.bytes as usize;
                            log.row(self.start, since, Some(sent), now, bytes, Outcome::Timeout);
                        }
                        self.clients[i].timed_out += 1;
                        self.outstanding -= 1;
                        self.out.fates.timeouts += 1;
                        if since < self.start + self.plan.warmup {
                            self.out.warmup_samples += 1;
                        } else {
                            record_sample(
                                &mut self.interval,
                                &mut self.out,
                                self.start,
                                now,
                                since,
                                sent,
                            );
                        }
                    }
                    let stuck = self.clients[i]
                        .inflight
                        .front()
                        .is_some_and(|f| now.saturating_duration_since(f.sent) >= timeout * 2);
                    if self.clients[i].timed_out > 0 && stuck {
                        self.fail(i, Failure::Aborted, now);
                    }
                }
                _ => {}
            }
        }
        // Folding a histogram in walks all its buckets: at the progress
        // line's pace, not at a short timeout's tick.
        if now < self.next_publish {
            return;
        }
        self.next_publish = now + PUBLISH_EVERY;
        self.live
            .errors
            .store(self.out.errors.total() + self.out.fates.timeouts, Relaxed);
        if !self.interval.is_empty() {
            self.live
                .p99_ns
                .fetch_max(self.interval.value_at_quantile(0.99), Relaxed);
            self.out
                .latency
                .add(&self.interval)
                .unwrap_or_else(|_| unreachable!("histograms of the same bounds add"));
            self.interval.reset();
        }
    }

    fn refill(&mut self, i: usize, now: Instant) {
        while self.clients[i].link == Link::Up
            && self.clients[i].inflight.len() < self.plan.pipeline
            && self.may_issue()
        {
            self.queue_request(i, now, now);
        }
        self.flush(i);
    }

    /// io_uring: one completion.
    fn complete(&mut self, cqe: &cqueue::Entry, now: Instant) {
        let Some(token) = Token::decode(cqe.user_data()) else {
            return;
        };
        let i = token.index as usize;
        let (res, flags) = (cqe.result(), cqe.flags());
        let buffer = cqueue::buffer_select(flags);
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let current = c.generation & 0xff_ffff == token.generation;
        match token.op {
            Op::Connect if current => self.on_connect(i, res, now),
            Op::Recv => {
                if !cqueue::more(flags) && current {
                    c.recv_armed = false;
                }
                let up = current && c.link == Link::Up;
                if let (Some(bid), Io::Uring { uring, .. }) = (buffer, &mut self.io) {
                    let bufs = uring.buffers(0);
                    let buf = bufs.take(bid, res.max(0) as usize);
                    let taken = (up && res > 0)
                        .then(|| c.take_reply(bufs.bytes(&buf), &mut self.bad_status));
                    bufs.recycle(buf);
                    if let Some(taken) = taken {
                        self.on_answers(i, taken, res as usize, now);
                    }
                }
                if let (true, Io::Uring { uring, .. }) = (res == -libc::ENOBUFS, &mut self.io) {
                    uring.buffers(0).ran_out();
                }
                if up && self.clients[i].link == Link::Up {
                    match res {
                        0 => self.fail(i, Failure::Closed, now),
                        r if r == -libc::ENOBUFS => self.rearm.push(i),
                        r if r < 0 => self.fail(i, Failure::Reset, now),
                        _ if !cqueue::more(flags) => self.rearm.push(i),
                        _ => {}
                    }
                }
            }
            Op::Send if current => {
                c.send_busy = false;
                if res < 0 {
                    self.fail(i, Failure::Reset, now);
                } else {
                    c.sent += res as usize;
                    self.out.bytes_sent += res as u64;
                    self.flush(i);
                }
            }
            _ => {}
        }
        if current {
            self.close_if_quiet(i, now);
        }
    }

    /// Books what one read of `bytes` reply bytes on client `i` completed
    /// (`taken`, from [`Client::take_reply`]): samples, bad statuses, freed
    /// slots and, closed loop, the next requests; or the failure.
    fn on_answers(&mut self, i: usize, taken: Result<usize, Failure>, bytes: usize, now: Instant) {
        let completed = match taken {
            Ok(n) => n,
            Err(failure) => {
                self.fail(i, failure, now);
                return;
            }
        };
        self.out.bytes_received += bytes as u64;
        let measure_from = self.start + self.plan.warmup;
        let c = &mut self.clients[i];
        let mut answered = 0u64;
        for (k, f) in c.inflight.drain(..completed).enumerate() {
            if c.timed_out > 0 {
                // Already counted as a timeout: its late reply frees the slot.
                c.timed_out -= 1;
                continue;
            }
            self.outstanding -= 1;
            let refused = self.bad_status.get(k).copied().unwrap_or(false);
            let outcome = if refused {
                Outcome::Refused
            } else {
                Outcome::Ok
            };
            log_request(&mut self.log, self.start, &f, now, outcome);
            if refused {
                self.out.errors.status += 1;
                continue;
            }
            answered += 1;
            if f.since < measure_from {
                self.out.warmup_samples += 1;
                continue;
            }
            record_sample(
                &mut self.interval,
                &mut self.out,
                self.start,
                now,
                f.since,
                f.sent,
            );
        }
        if completed > 0 {
            self.out.last_reply = Some(now);
            self.last_progress = now;
        }
        self.out.fates.completed += answered;
        self.live.done.fetch_add(answered, Relaxed);
        let generation = c.generation;
        for _ in 0..completed {
            match self.share.rate {
                Some(_) => self.free.push_back((i, generation)),
                None if self.may_issue() => self.queue_request(i, now, now),
                None => {}
            }
        }
        if self.share.rate.is_none() {
            self.flush(i);
        }
    }

    /// Stops using a connection after a failure: every request in flight on
    /// it (not already a timeout) ends with the failure's kind. It is closed
    /// once the kernel has finished every operation on it, then reconnected.
    fn fail(&mut self, i: usize, failure: Failure, now: Instant) {
        let c = &mut self.clients[i];
        if c.link != Link::Up {
            return;
        }
        c.link = Link::Broken;
        let lost = c.outstanding() as u64;
        if let Some(log) = &mut self.log {
            let outcome = match failure {
                Failure::Reset => Outcome::Reset,
                Failure::Closed => Outcome::Closed,
                Failure::Mismatch => Outcome::Mismatch,
                Failure::Aborted => Outcome::Aborted,
            };
            for f in c.inflight.iter().skip(c.timed_out) {
                log.row(
                    self.start,
                    f.since,
                    Some(f.sent),
                    now,
                    f.bytes as usize,
                    outcome,
                );
            }
        }
        self.outstanding -= c.outstanding();
        c.inflight.clear();
        c.timed_out = 0;
        let errors = &mut self.out.errors;
        match failure {
            Failure::Reset => errors.reset += lost,
            Failure::Closed => errors.closed += lost,
            Failure::Mismatch => errors.mismatch += lost,
            Failure::Aborted => errors.aborted += lost,
        }
        // Wakes the outstanding receive and send with an error or EOF.
        // SAFETY: plain syscall on a descriptor this client owns.
        unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
        self.close_if_quiet(i, now);
    }

    /// Closes a broken connection once nothing of the kernel's points at it
    /// (at once on the readiness path, which lends the kernel no memory);
    /// the slot reconnects at once.
    fn close_if_quiet(&mut self, i: usize, now: Instant) {
        let c = &mut self.clients[i];
        let quiet = matches!(self.io, Io::Readiness(_)) || (!c.recv_armed && !c.send_busy);
        if c.link == Link::Broken && quiet {
            c.socket = None; // closing also drops it from the epoll set
            c.link = Link::Down { retry_at: now };
        }
    }
}

/// `--request-log`'s row for request `f`, which ended at `done` so.
fn log_request(
    log: &mut Option<RequestLog>,
    start: Instant,
    f: &InFlight,
    done: Instant,
    outcome: Outcome,
) {
    if let Some(log) = log {
        log.row(
            start,
            f.since,
            Some(f.sent),
            done,
            f.bytes as usize,
            outcome,
        );
    }
}

/// One sample of a request answered (or given up) at `at`: its latency
/// from `since` (its due time) into the progress interval and the run's
/// series, and its service time from `sent` into `out`'s.
fn record_sample(
    interval: &mut Histogram<u64>,
    out: &mut ThreadOutcome,
    start: Instant,
    at: Instant,
    since: Instant,
    sent: Instant,
) {
    let ns = at.saturating_duration_since(since).as_nanos() as u64;
    let service_ns = at.saturating_duration_since(sent).as_nanos() as u64;
    interval.saturating_record(ns);
    out.service.saturating_record(service_ns);
    let after = at.saturating_duration_since(start);
    if let Some(series) = &mut out.series {
        series.record_after(after, ns);
    }
    if let Some(series) = &mut out.service_series {
        series.record_after(after, service_ns);
    }
    if let Some(series) = &mut out.per_second {
        series.record_after(after, ns);
    }
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        let Io::Uring {
            uring,
            connect_args,
        } = &mut self.io
        else {
            return; // readiness: the kernel holds none of our memory
        };
        // The clients' send buffers, their sockets and the connect arguments
        // must outlive every operation that points at them: cancel all and
        // wait for the last completions.
        let cancel = Token::new(Op::Cancel, 0, 0).encode();
        if !uring.quiesce(cancel, Duration::from_secs(2), |_| {}) {
            // The kernel still holds some: leak them rather than free memory
            // it may read.
            std::mem::forget(std::mem::take(&mut self.clients));
            std::mem::forget(std::mem::replace(
                connect_args,
                Box::new(ConnectArgs {
                    addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
                    timeout: types::Timespec::new(),
                }),
            ));
        }
    }
}
