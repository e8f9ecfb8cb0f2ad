//! The client core of a load thread, without I/O: it schedules requests,
//! frames them, checks every reply, and gives every scheduled request
//! exactly one fate. A driver (io_uring or epoll) owns the sockets and the
//! memory the kernel writes into; it carries out what the core asks for
//! ([`Effect`]) and tells the core what the kernel did (`on_connect`,
//! `on_data`, `on_sent`, `on_io_error`, `on_closed`). So every protocol
//! is written once, here, and runs on both I/O paths.
//!
//! A connection's requests are answered in order, so its in-flight queue is
//! FIFO. A request that times out stays at the front, flagged, until its late
//! reply arrives (then it is discarded: it was already counted as a timeout)
//! so the connection is reused instead of torn down; only when a flagged
//! request stays unanswered for twice the timeout is the connection given up.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

use super::super::client::{Check, Client, Failure, InFlight, Link};
use super::super::{StreamProtocol, TcpPlan, Workload};
use super::{Share, ThreadOutcome};
use crate::cli::SizeRange;
use crate::dialect::REPLY_MEMORY;
use crate::latency::{self, Series};
use crate::progress::Live;
use crate::request_log::{Outcome, RequestLog};
use crate::rng::Rng;
use crate::schedule::RateProfile;

/// How often a thread publishes its progress.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// A slot whose connect failed tries again after this long.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// What the core asks its driver to do, for one connection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Open a new connection (the slot's generation was bumped) and report
    /// with [`Core::on_connect`].
    Connect(usize),
    /// Send what the slot has queued ([`Core::take_queued`]) and report
    /// with [`Core::on_sent`].
    Send(usize),
    /// The connection failed: stop its I/O, close it once the kernel is
    /// done with it, and report with [`Core::on_closed`].
    Close(usize),
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

/// A load thread's state and bookkeeping, whatever its I/O path.
pub struct Core<'a> {
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
    payload: Vec<u8>,
    /// Per response completed by one read: whether its status was bad.
    bad_status: Vec<bool>,
    /// The last connect or reply: a run that cannot progress for long ends.
    last_progress: Instant,
    /// When `interval` is next folded in and the progress counters set.
    next_publish: Instant,
    /// When timeouts and reconnects are next looked at.
    next_tick: Instant,
    /// `--request-log`: this thread's rows on their way to the file.
    log: Option<RequestLog>,
    /// What the driver has yet to carry out, in order.
    effects: Vec<Effect>,
    /// Memory the clients hold for replies not all arrived, and what each
    /// held at its last read (bounded by [`REPLY_MEMORY`]).
    reply_memory: usize,
    reply_held: Vec<usize>,
}

impl<'a> Core<'a> {
    pub fn new(plan: &'a TcpPlan, share: Share, live: &'a Live, start: Instant) -> Self {
        let mut out = ThreadOutcome::empty(start);
        out.series = plan.interval.map(Series::new);
        out.service_series = plan.interval.map(Series::new);
        let changing = share.rate.as_ref().is_some_and(|r| !r.is_constant());
        out.per_second = changing.then(|| Series::coarse(Duration::from_secs(1)));
        let log = share.log.clone().map(RequestLog::new);
        let profile = share.rate.clone();
        let slots = share.connections;
        Core {
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
            payload: Vec::new(),
            bad_status: Vec::new(),
            last_progress: start,
            next_publish: start,
            next_tick: start,
            log,
            effects: Vec::new(),
            reply_memory: 0,
            reply_held: vec![0; slots],
        }
    }

    /// Slot `i`'s current generation: bumped at every connect, so that
    /// completions of an earlier socket of the slot are told apart.
    pub fn generation(&self, i: usize) -> u32 {
        self.clients[i].generation
    }

    /// True while slot `i` is connected and carrying requests.
    pub fn is_up(&self, i: usize) -> bool {
        self.clients[i].link == Link::Up
    }

    /// True while slot `i` waits for its connect.
    pub fn is_connecting(&self, i: usize) -> bool {
        self.clients[i].link == Link::Connecting
    }

    /// Hands over what the driver must do now (in order).
    pub fn take_effects(&mut self, into: &mut Vec<Effect>) {
        into.clear();
        std::mem::swap(&mut self.effects, into);
    }

    /// True once there is something for the driver to do.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// Moves slot `i`'s queued request bytes into `into` (emptied first),
    /// for the driver to send: its own buffer from then on, so memory the
    /// kernel reads is the driver's and outlives the send.
    pub fn take_queued(&mut self, i: usize, into: &mut Vec<u8>) {
        into.clear();
        std::mem::swap(&mut self.clients[i].queued, into);
    }

    /// Before a `--start-at` instant: asks for every connection, with no
    /// request issued until [`set_running`](Self::set_running).
    pub fn connect_all(&mut self) {
        self.running = false;
        for i in 0..self.clients.len() {
            self.connect(i);
        }
    }

    /// Whether new requests may be issued.
    pub fn set_running(&mut self, running: bool) {
        self.running = running;
    }

    /// True while some slot waits for its connect.
    pub fn any_connecting(&self) -> bool {
        self.clients.iter().any(|c| c.link == Link::Connecting)
    }

    /// Moves the run's start (its schedule and time axis) to `start`.
    pub fn set_start(&mut self, start: Instant) {
        self.start = start;
        self.waiting.start = start;
        self.out.ended = start;
        self.next_tick = start;
    }

    /// The run begins: closed loop, connections already open get their
    /// first requests.
    pub fn begin(&mut self, now: Instant) {
        if self.share.rate.is_none() {
            for i in 0..self.clients.len() {
                if self.clients[i].link == Link::Up {
                    self.refill(i, now);
                }
            }
        }
    }

    /// Slot `i` gets a new connection.
    fn connect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.generation = c.generation.wrapping_add(1);
        c.link = Link::Connecting;
        c.reset(&self.plan.workload);
        self.effects.push(Effect::Connect(i));
    }

    /// Slot `i`'s connect ended: `res` 0, or a negated errno (the driver's
    /// socket could not be made, the peer refused, the connect timed out).
    pub fn on_connect(&mut self, i: usize, res: i32, now: Instant) {
        if self.clients[i].link != Link::Connecting {
            return;
        }
        if res < 0 {
            match -res {
                libc::ECONNREFUSED => self.out.connects.refused += 1,
                libc::ECANCELED | libc::ETIME | libc::ETIMEDOUT => self.out.connects.timed_out += 1,
                _ => self.out.connects.failed += 1,
            }
            self.clients[i].link = Link::Down {
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
        match self.share.rate {
            Some(_) => {
                for _ in 0..self.plan.pipeline {
                    self.free.push_back((i, generation));
                }
            }
            None => self.refill(i, now),
        }
    }

    /// `data` arrived on slot `i`: checked as the next bytes of its reply
    /// stream, and what it completed booked.
    pub fn on_data(&mut self, i: usize, data: &[u8], now: Instant) {
        if self.clients[i].link != Link::Up || data.is_empty() {
            return;
        }
        let mut taken = self.clients[i].take_reply(data, &mut self.bad_status);
        let held = self.clients[i].check.reply_memory();
        self.reply_memory = self.reply_memory - self.reply_held[i] + held;
        self.reply_held[i] = held;
        if self.reply_memory > REPLY_MEMORY {
            // The whole thread's bound, not this reply's: the connection
            // whose reply grew it past goes (and gives its memory back).
            taken = Err(Failure::Mismatch);
        }
        self.on_answers(i, taken, data.len(), now);
    }

    /// `n` request bytes went out.
    pub fn on_sent(&mut self, n: usize) {
        self.out.bytes_sent += n as u64;
    }

    /// Slot `i`'s connection ended under it (EOF: `Closed`; an error:
    /// `Reset`).
    pub fn on_io_error(&mut self, i: usize, failure: Failure, now: Instant) {
        self.fail(i, failure, now);
    }

    /// The driver closed slot `i`'s broken connection: it reconnects.
    pub fn on_closed(&mut self, i: usize, now: Instant) {
        if self.clients[i].link == Link::Broken {
            self.clients[i].link = Link::Down { retry_at: now };
        }
    }

    fn may_issue(&self) -> bool {
        self.running && self.share.quota.is_none_or(|q| self.issued < q)
    }

    /// Queues one request on client `i`, counting latency from `since`, and
    /// asks for it to be sent.
    fn issue(&mut self, i: usize, since: Instant, now: Instant) {
        self.queue_request(i, since, now);
        self.flush(i);
    }

    /// Queues one request on client `i`, counting latency from `since`, to
    /// go out with the next flush: requests made together leave in one
    /// send, as a pipelining client's do (a send per request would cost
    /// both ends a syscall and a segment each).
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

    /// Asks the driver to send what client `i` has queued.
    fn flush(&mut self, i: usize) {
        let c = &self.clients[i];
        if c.link == Link::Up && !c.queued.is_empty() {
            self.effects.push(Effect::Send(i));
        }
    }

    /// One turn of the thread's loop at `now`: ends the run when its time
    /// or quota is up, lets requests fall due and sends them, looks at
    /// timeouts and reconnects; returns when the driver should next wake
    /// the core (None: the run is over, nothing is in flight).
    pub fn step(&mut self, now: Instant) -> Option<Instant> {
        let deadline = self.start + self.plan.warmup + self.plan.duration;
        let open_loop = self.share.rate.is_some();
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
                return None;
            }
        }
        if now >= self.next_tick {
            self.tick(now);
            // Timeouts are noticed within a quarter of the timeout.
            let every =
                (self.plan.timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
            self.next_tick = now + every;
        }
        let mut wake = self.next_tick;
        if self.running {
            wake = wake.min(deadline.max(now));
            if let Some(due) = self.waiting.next_due().filter(|_| self.waiting.is_empty()) {
                wake = wake.min(due);
            }
        }
        Some(wake)
    }

    /// The driver woke at `woke` for a wake-up due at `wake`: its lateness,
    /// after the warm-up, is the thread's own delay.
    pub fn woke(&mut self, wake: Instant, woke: Instant) {
        if woke > wake && wake >= self.start + self.plan.warmup {
            self.out
                .lateness
                .saturating_record(woke.duration_since(wake).as_nanos() as u64);
        }
    }

    /// The run is over: what this thread measured.
    pub fn finish(mut self) -> anyhow::Result<ThreadOutcome> {
        self.out.ended = Instant::now();
        if let Some(log) = &mut self.log {
            log.finish().context("writing --request-log")?;
        }
        let mut out = self.out;
        out.latency
            .add(&self.interval)
            .context("merging the last interval")?;
        Ok(out)
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
                Link::Down { retry_at } if retry_at <= now && self.running => self.connect(i),
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
        if self.plan.batch && !self.clients[i].inflight.is_empty() {
            return; // the batch is not all answered yet (--batch)
        }
        while self.clients[i].link == Link::Up
            && self.clients[i].inflight.len() < self.plan.pipeline
            && self.may_issue()
        {
            self.queue_request(i, now, now);
        }
        self.flush(i);
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
        match self.share.rate {
            Some(_) => {
                for _ in 0..completed {
                    self.free.push_back((i, generation));
                }
            }
            // Closed loop: each reply frees its slot, or with --batch the
            // whole pipeline goes again once all of it is answered.
            None if self.plan.batch => self.refill(i, now),
            None => {
                for _ in 0..completed {
                    if self.may_issue() {
                        self.queue_request(i, now, now);
                    }
                }
                self.flush(i);
            }
        }
    }

    /// Stops using a connection after a failure: every request in flight on
    /// it (not already a timeout) ends with the failure's kind, and the
    /// driver is asked to close it (then it reconnects).
    fn fail(&mut self, i: usize, failure: Failure, now: Instant) {
        let c = &mut self.clients[i];
        if c.link != Link::Up {
            return;
        }
        c.link = Link::Broken;
        self.reply_memory -= std::mem::take(&mut self.reply_held[i]);
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
        // Its reply buffers too: they count against the thread's bound.
        c.reset(&self.plan.workload);
        let errors = &mut self.out.errors;
        match failure {
            Failure::Reset => errors.reset += lost,
            Failure::Closed => errors.closed += lost,
            Failure::Mismatch => errors.mismatch += lost,
            Failure::Aborted => errors.aborted += lost,
        }
        self.effects.push(Effect::Close(i));
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
