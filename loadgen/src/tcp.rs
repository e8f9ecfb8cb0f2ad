//! TCP load: every thread drives its share of the connections through its
//! own io_uring, verifies every reply byte for byte against the protocol's
//! own state machine, and records each request's latency.
//!
//! Closed loop (default): each connection keeps `pipeline` requests in
//! flight. Open loop (`--rate`): requests fall due on a fixed schedule and
//! latency counts from the due time, so a stalled server cannot hide behind
//! requests that were never sent (coordinated omission, as wrk2 corrects it).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use engine::bufring::BufRing;
use engine::token::{Op, Token};
use engine::uring::Uring;
use hdrhistogram::Histogram;
use io_uring::{cqueue, opcode, types};
use protocols::echo::EchoStream;
use protocols::http::response::{Response, ResponseReader};
use protocols::reverse::ReverseLines;
use protocols::StreamSession;
use serde::Serialize;

use crate::cli::{SizeRange, TcpProtocol};
use crate::latency;
use crate::progress::Live;
use crate::rng::Rng;

/// What a TCP run does.
#[derive(Debug, Clone)]
pub struct TcpPlan {
    /// The server.
    pub addr: SocketAddr,
    /// What the connections say, and how replies are checked.
    pub workload: Workload,
    /// Connections in all.
    pub connections: usize,
    /// Load threads, one io_uring each.
    pub threads: usize,
    /// CPUs to pin the threads to, round-robin (empty: no pinning).
    pub cpus: Vec<usize>,
    /// How long to run (ignored when `requests` is set).
    pub duration: Duration,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Payload sizes.
    pub size: SizeRange,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Open-loop rate for the whole run, requests per second.
    pub rate: Option<f64>,
    /// A request unanswered this long is a timeout.
    pub timeout: Duration,
}

/// What a TCP run's connections say, and how their replies are checked.
#[derive(Debug, Clone)]
pub enum Workload {
    /// A stream protocol: random payloads, every reply checked byte for byte
    /// against the protocol's own state machine.
    Stream(TcpProtocol),
    /// The same HTTP request again and again (keep-alive, pipelined): every
    /// response read whole, whatever its framing, and its status checked.
    Http {
        /// The request's bytes.
        request: Vec<u8>,
    },
}

/// Errors by kind. Every one is counted; none is ignored.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct TcpErrors {
    /// Connection refused (no server listening).
    pub refused: u64,
    /// Connection reset or broken pipe.
    pub reset: u64,
    /// The server closed the connection with requests outstanding.
    pub closed: u64,
    /// A request unanswered within `--timeout`.
    pub timeout: u64,
    /// A reply that differed from the expected bytes (or, over HTTP, a
    /// response that could not be read).
    pub mismatch: u64,
    /// An HTTP response whose status was not 2xx.
    pub status: u64,
}

impl TcpErrors {
    fn add(&mut self, other: &TcpErrors) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.closed += other.closed;
        self.timeout += other.timeout;
        self.mismatch += other.mismatch;
        self.status += other.status;
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.closed + self.timeout + self.mismatch + self.status
    }
}

/// What a TCP run measured.
pub struct TcpOutcome {
    /// Requests answered correctly.
    pub requests: u64,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received and verified.
    pub bytes_received: u64,
    /// From the first request to the end of the run.
    pub elapsed: Duration,
    /// Errors by kind.
    pub errors: TcpErrors,
    /// Request latency in nanoseconds.
    pub latency: Histogram<u64>,
}

/// Runs the plan, publishing progress to `live` (and to stderr unless `quiet`).
pub fn run(plan: &TcpPlan, live: &Live, quiet: bool) -> anyhow::Result<TcpOutcome> {
    if plan.threads == 0 || plan.connections < plan.threads {
        bail!(
            "need at least one connection per thread (--connections {} --threads {})",
            plan.connections,
            plan.threads
        );
    }
    if plan.pipeline == 0 {
        bail!("--pipeline must be at least 1");
    }
    // Fail early and clearly when nobody listens.
    let probe = TcpStream::connect_timeout(&plan.addr, plan.timeout)
        .map_err(|e| connect_error(plan.addr, &e))?;
    drop(probe);

    let start = Instant::now();
    let outcomes = crate::progress::run_threads(
        vec![(); plan.threads],
        &plan.cpus,
        live,
        "requests",
        quiet,
        |t, ()| {
            let connections = share(plan.connections, plan.threads, t);
            let quota = plan.requests.map(|n| share_u64(n, plan.threads, t));
            let rate = plan.rate.map(|r| r / plan.threads as f64);
            Worker::new(plan, connections, quota, rate, t as u64, live)?.run(start)
        },
    )?;
    let mut total = TcpOutcome {
        requests: 0,
        bytes_sent: 0,
        bytes_received: 0,
        elapsed: start.elapsed(),
        errors: TcpErrors::default(),
        latency: latency::histogram(),
    };
    for o in outcomes {
        total.requests += o.requests;
        total.bytes_sent += o.bytes_sent;
        total.bytes_received += o.bytes_received;
        total.errors.add(&o.errors);
        total.elapsed = total.elapsed.min(o.elapsed.max(Duration::from_micros(1)));
        total
            .latency
            .add(&o.latency)
            .context("merging latency histograms")?;
    }
    Ok(total)
}

/// The error a user sees when connecting fails.
pub fn connect_error(addr: SocketAddr, e: &io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "no server at {addr} (connection refused): start one with `cargo run --release` (ringcore) or check the address"
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            anyhow::anyhow!("connecting to {addr} timed out: is the address reachable?")
        }
        _ => anyhow::anyhow!("cannot connect to {addr}: {e}"),
    }
}

fn share(total: usize, parts: usize, i: usize) -> usize {
    total / parts + usize::from(i < total % parts)
}

fn share_u64(total: u64, parts: usize, i: usize) -> u64 {
    total / parts as u64 + u64::from((i as u64) < total % parts as u64)
}

struct ThreadOutcome {
    requests: u64,
    bytes_sent: u64,
    bytes_received: u64,
    elapsed: Duration,
    errors: TcpErrors,
    latency: Histogram<u64>,
}

/// A request on the wire: where its reply ends in the connection's reply
/// stream, and the instant its latency counts from.
struct InFlight {
    reply_end: u64,
    since: Instant,
}

/// How a connection's replies are checked.
enum Check {
    /// Against the bytes the protocol's own state machine says must come.
    Exact {
        model: Box<dyn StreamSession>,
        expected: Vec<u8>,
        offset: usize,
        /// Reply bytes received so far (where `InFlight::reply_end` points).
        received: u64,
    },
    /// Whole HTTP responses, counted as they complete.
    Http {
        reader: ResponseReader,
        done: Vec<Response>,
    },
}

impl Check {
    fn new(workload: &Workload) -> Self {
        match workload {
            Workload::Stream(protocol) => Check::Exact {
                model: match protocol {
                    TcpProtocol::Echo => Box::new(EchoStream),
                    TcpProtocol::Reverse => Box::new(ReverseLines::new(usize::MAX)),
                },
                expected: Vec::new(),
                offset: 0,
                received: 0,
            },
            Workload::Http { .. } => Check::Http {
                reader: ResponseReader::new(),
                done: Vec::new(),
            },
        }
    }
}

/// One connection and everything needed to verify its replies.
struct Client {
    stream: Option<TcpStream>,
    generation: u32,
    check: Check,
    inflight: VecDeque<InFlight>,
    queued: Vec<u8>,
    sending: Vec<u8>,
    sent: usize,
    send_busy: bool,
    recv_armed: bool,
    /// Failed: waiting for the kernel to finish with it before reconnecting.
    broken: bool,
}

impl Client {
    fn new(workload: &Workload) -> Self {
        Self {
            stream: None,
            generation: 0,
            check: Check::new(workload),
            inflight: VecDeque::new(),
            queued: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            send_busy: false,
            recv_armed: false,
            broken: false,
        }
    }

    fn fd(&self) -> i32 {
        self.stream.as_ref().map_or(-1, |s| s.as_raw_fd())
    }

    fn reset_state(&mut self, workload: &Workload) {
        self.check = Check::new(workload);
        self.inflight.clear();
        self.queued.clear();
        self.sending.clear();
        self.sent = 0;
        self.broken = false;
    }
}

struct Worker<'a> {
    /// The ring and its receive buffers (buffer ring 0); dropped only after
    /// every operation on the clients' buffers has been reaped (see Drop).
    uring: Uring,
    plan: &'a TcpPlan,
    live: &'a Live,
    clients: Vec<Client>,
    rng: Rng,
    quota: Option<u64>,
    rate: Option<f64>,
    /// Requests put on the wire.
    issued: u64,
    /// Open loop: requests that have fallen due (sent or waiting).
    scheduled: u64,
    /// Requests answered or lost to an error.
    finished: u64,
    errors: TcpErrors,
    bytes_sent: u64,
    bytes_received: u64,
    latency: Histogram<u64>,
    interval: Histogram<u64>,
    /// Open loop: requests that fell due but found no connection free.
    waiting: VecDeque<Instant>,
    /// Open loop: a free pipeline slot per entry, as (client, generation).
    free: VecDeque<(usize, u32)>,
    rearm: Vec<usize>,
    payload: Vec<u8>,
}

impl<'a> Worker<'a> {
    fn new(
        plan: &'a TcpPlan,
        connections: usize,
        quota: Option<u64>,
        rate: Option<f64>,
        seed: u64,
        live: &'a Live,
    ) -> anyhow::Result<Self> {
        let entries = (connections * 2 + 64).next_power_of_two().min(4096) as u32;
        let mut uring = Uring::new(entries)?;
        let bufs = BufRing::new(1024, 16 * 1024, 0).context("allocating receive buffers")?;
        uring
            .add_buffers(bufs)
            .context("registering the receive buffer ring")?;
        let mut worker = Worker {
            uring,
            plan,
            live,
            clients: (0..connections)
                .map(|_| Client::new(&plan.workload))
                .collect(),
            rng: Rng::new(seed + 1),
            quota,
            rate,
            issued: 0,
            scheduled: 0,
            finished: 0,
            errors: TcpErrors::default(),
            bytes_sent: 0,
            bytes_received: 0,
            latency: latency::histogram(),
            interval: latency::histogram(),
            waiting: VecDeque::new(),
            free: VecDeque::new(),
            rearm: Vec::new(),
            payload: Vec::new(),
        };
        for i in 0..connections {
            worker.connect(i);
        }
        Ok(worker)
    }

    fn connect(&mut self, i: usize) {
        match TcpStream::connect_timeout(&self.plan.addr, self.plan.timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let c = &mut self.clients[i];
                c.stream = Some(stream);
                c.generation = c.generation.wrapping_add(1);
                c.reset_state(&self.plan.workload);
                self.arm_recv(i);
                if self.rate.is_some() {
                    let generation = self.clients[i].generation;
                    for _ in 0..self.plan.pipeline {
                        self.free.push_back((i, generation));
                    }
                }
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    self.errors.refused += 1;
                } else {
                    self.errors.reset += 1;
                }
                self.clients[i].stream = None;
            }
        }
    }

    fn arm_recv(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.recv_armed = true;
        let group = self.uring.buffers(0).group();
        let entry = opcode::RecvMulti::new(types::Fd(c.fd()), group)
            .build()
            .user_data(Token::new(Op::Recv, i as u32, c.generation).encode());
        // SAFETY: the kernel writes only into the provided buffers, which the
        // Uring owns; the worker's Drop reaps this receive before the socket
        // is closed.
        unsafe { self.uring.push(entry) };
    }

    fn may_issue(&self) -> bool {
        self.quota.is_none_or(|q| self.issued < q)
    }

    /// Queues one request on client `i`, counting latency from `since`.
    fn issue(&mut self, i: usize, since: Instant) {
        self.payload.clear();
        match &self.plan.workload {
            Workload::Stream(TcpProtocol::Echo) => {
                let SizeRange { lo, hi } = self.plan.size;
                self.payload.resize(self.rng.range(lo, hi), 0);
                self.rng.fill(&mut self.payload);
            }
            Workload::Stream(TcpProtocol::Reverse) => {
                const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let SizeRange { lo, hi } = self.plan.size;
                for _ in 1..self.rng.range(lo, hi) {
                    self.payload
                        .push(ALPHABET[self.rng.range(0, ALPHABET.len() - 1)]);
                }
                self.payload.push(b'\n');
            }
            Workload::Http { request } => self.payload.extend_from_slice(request),
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
        };
        c.inflight.push_back(InFlight { reply_end, since });
        c.queued.extend_from_slice(&self.payload);
        self.issued += 1;
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.send_busy || c.broken || c.stream.is_none() {
            return;
        }
        if c.sent == c.sending.len() {
            c.sending.clear();
            c.sent = 0;
            std::mem::swap(&mut c.queued, &mut c.sending);
        }
        if c.sending.is_empty() {
            return;
        }
        c.send_busy = true;
        let rest = &c.sending[c.sent..];
        let entry = opcode::Send::new(types::Fd(c.fd()), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Token::new(Op::Send, i as u32, c.generation).encode());
        // SAFETY: `sending` is not touched while `send_busy`, a client is
        // not reconnected (its buffers reset) until its send has completed,
        // and the worker's Drop reaps every send before the clients go.
        unsafe { self.uring.push(entry) };
    }

    fn run(mut self, start: Instant) -> anyhow::Result<ThreadOutcome> {
        let deadline = start + self.plan.duration;
        let mut next_due = start;
        let interval = self.rate.map(|r| Duration::from_secs_f64(1.0 / r));
        if self.rate.is_none() {
            for i in 0..self.clients.len() {
                for _ in 0..self.plan.pipeline {
                    if self.clients[i].stream.is_some() && self.may_issue() {
                        self.issue(i, Instant::now());
                    }
                }
            }
        }
        let mut next_tick = start + Duration::from_millis(100);
        let mut cqes = Vec::new();
        loop {
            let now = Instant::now();
            if self.plan.requests.is_none() && now >= deadline {
                break;
            }
            if let Some(q) = self.quota {
                if self.finished >= q {
                    break;
                }
            }
            if let Some(step) = interval {
                while next_due <= now && self.quota.is_none_or(|q| self.scheduled < q) {
                    self.waiting.push_back(next_due);
                    self.scheduled += 1;
                    next_due += step;
                }
                while let Some(&due) = self.waiting.front() {
                    let Some((i, generation)) = self.free.pop_front() else {
                        break;
                    };
                    let c = &self.clients[i];
                    if c.broken || c.stream.is_none() || c.generation != generation {
                        continue; // a slot of a connection that has since failed
                    }
                    self.waiting.pop_front();
                    self.issue(i, due);
                }
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + Duration::from_millis(100);
            }
            let mut wake = next_tick.min(deadline);
            if interval.is_some() && self.waiting.is_empty() {
                wake = wake.min(next_due);
            }
            let wait = wake.saturating_duration_since(Instant::now());
            self.uring
                .enter(Some(wait.max(Duration::from_micros(1))))
                .context("io_uring_enter")?;
            cqes.clear();
            self.uring.reap(&mut cqes);
            let now = Instant::now();
            for cqe in &cqes {
                self.complete(cqe, now);
            }
            self.uring.publish_buffers();
            for i in std::mem::take(&mut self.rearm) {
                if self.clients[i].stream.is_some()
                    && !self.clients[i].broken
                    && !self.clients[i].recv_armed
                {
                    self.arm_recv(i);
                }
            }
        }
        Ok(ThreadOutcome {
            requests: self.latency.len(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            elapsed: start.elapsed(),
            errors: self.errors,
            latency: std::mem::replace(&mut self.latency, latency::histogram()),
        })
    }

    /// Every 100 ms: timeouts, reconnects, progress.
    fn tick(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            let c = &self.clients[i];
            if c.stream.is_none() {
                self.connect(i);
                if self.rate.is_none() && self.clients[i].stream.is_some() {
                    self.refill(i, now);
                }
            } else if !c.broken
                && c.inflight
                    .front()
                    .is_some_and(|f| now.duration_since(f.since) > self.plan.timeout)
            {
                self.errors.timeout += 1;
                self.fail(i);
            }
        }
        self.live.errors.store(self.errors.total(), Relaxed);
        if !self.interval.is_empty() {
            self.live
                .p99_ns
                .fetch_max(self.interval.value_at_quantile(0.99), Relaxed);
            self.interval.reset();
        }
    }

    fn refill(&mut self, i: usize, now: Instant) {
        while self.clients[i].inflight.len() < self.plan.pipeline && self.may_issue() {
            self.issue(i, now);
        }
    }

    fn complete(&mut self, cqe: &cqueue::Entry, now: Instant) {
        let Some(token) = Token::decode(cqe.user_data()) else {
            return;
        };
        let i = token.index as usize;
        let (res, flags) = (cqe.result(), cqe.flags());
        let buffer = cqueue::buffer_select(flags);
        let current = self.clients[i].generation & 0xff_ffff == token.generation;
        match token.op {
            Op::Recv => {
                if !cqueue::more(flags) && current {
                    self.clients[i].recv_armed = false;
                }
                if let Some(bid) = buffer {
                    if current && res > 0 && !self.clients[i].broken {
                        self.on_reply(i, bid, res as usize, now);
                    }
                    self.uring.buffers(0).recycle(bid);
                }
                if current && !self.clients[i].broken {
                    match res {
                        0 => {
                            self.errors.closed += 1;
                            self.fail(i);
                        }
                        r if r == -libc::ENOBUFS => self.rearm.push(i),
                        r if r < 0 => {
                            self.errors.reset += 1;
                            self.fail(i);
                        }
                        _ if !cqueue::more(flags) => self.rearm.push(i),
                        _ => {}
                    }
                }
            }
            Op::Send => {
                if !current {
                    return;
                }
                let c = &mut self.clients[i];
                c.send_busy = false;
                if res < 0 {
                    if !c.broken {
                        self.errors.reset += 1;
                        self.fail(i);
                    }
                } else {
                    c.sent += res as usize;
                    self.bytes_sent += res as u64;
                    self.flush(i);
                }
            }
            _ => {}
        }
        if current {
            self.reconnect_if_quiet(i);
        }
    }

    fn on_reply(&mut self, i: usize, bid: u16, len: usize, now: Instant) {
        let data = self.uring.buffers(0).filled(bid, len);
        let c = &mut self.clients[i];
        let completed = match &mut c.check {
            Check::Exact {
                expected,
                offset,
                received,
                ..
            } => {
                let want = &expected[*offset..];
                if data.len() > want.len() || data != &want[..data.len()] {
                    self.errors.mismatch += 1;
                    self.fail(i);
                    return;
                }
                *offset += data.len();
                *received += data.len() as u64;
                if *offset > 64 * 1024 {
                    expected.drain(..*offset);
                    *offset = 0;
                }
                let received = *received;
                c.inflight
                    .iter()
                    .take_while(|f| f.reply_end <= received)
                    .count()
            }
            Check::Http { reader, done } => {
                done.clear();
                if reader.feed(data, done).is_err() {
                    self.errors.mismatch += 1;
                    self.fail(i);
                    return;
                }
                let bad = done
                    .iter()
                    .filter(|r| !(200..300).contains(&r.status))
                    .count() as u64;
                self.errors.status += bad;
                done.len()
            }
        };
        self.bytes_received += data.len() as u64;
        let c = &mut self.clients[i];
        for f in c.inflight.drain(..completed.min(c.inflight.len())) {
            let ns = now.duration_since(f.since).as_nanos() as u64;
            self.latency.saturating_record(ns);
            self.interval.saturating_record(ns);
        }
        let completed = completed as u64;
        self.finished += completed;
        self.live.done.fetch_add(completed, Relaxed);
        let generation = c.generation;
        for _ in 0..completed {
            match self.rate {
                Some(_) => self.free.push_back((i, generation)),
                None if self.may_issue() => self.issue(i, now),
                None => {}
            }
        }
    }

    /// Stops using a connection after an error; it reconnects once the
    /// kernel has finished every operation on it.
    fn fail(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.broken {
            return;
        }
        c.broken = true;
        // Its requests will never be answered: they end here.
        self.finished += c.inflight.len() as u64;
        c.inflight.clear();
        // Wakes the outstanding receive and send with an error or EOF.
        // SAFETY: plain syscall on a descriptor this client owns.
        unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
    }

    fn reconnect_if_quiet(&mut self, i: usize) {
        let c = &self.clients[i];
        if c.broken && !c.recv_armed && !c.send_busy {
            self.clients[i].stream = None; // closes it; the next tick reconnects
        }
    }
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        // The clients' send buffers and sockets must outlive every operation
        // that points at them: cancel all and wait for the last completions.
        let cancel = Token::new(Op::Cancel, 0, 0).encode();
        if !self.uring.quiesce(cancel, Duration::from_secs(2), |_| {}) {
            // The kernel still holds some: leak the clients rather than free
            // memory it may read.
            std::mem::forget(std::mem::take(&mut self.clients));
        }
    }
}
