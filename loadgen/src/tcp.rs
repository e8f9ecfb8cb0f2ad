//! TCP load: every thread drives its share of the connections through its
//! own io_uring (connects included, so a reconnect never stalls the other
//! connections), verifies every reply byte for byte against the protocol's
//! own state machine, and records each request's latency.
//!
//! Closed loop (default): each connection keeps `pipeline` requests in
//! flight. Open loop (`--rate`): requests fall due on a fixed schedule and
//! latency counts from the due time, so a stalled server cannot hide behind
//! requests that were never sent (coordinated omission, as wrk2 corrects it).
//!
//! Every scheduled request ends as exactly one of: a latency sample
//! (`completed`), a timeout (also a sample, taken when loadgen gave up), an
//! error by kind, or `unsent` when the run ended before a connection was
//! free to carry it. [`Fates::balanced`] checks the sum.

mod client;
mod worker;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::SizeRange;
use crate::latency::{self, Series};
use crate::progress::Live;

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
    /// How long to schedule requests (ignored when `requests` is set).
    pub duration: Duration,
    /// Run this long before `duration`: its requests are made and checked
    /// like any other, but left out of the latency figures.
    pub warmup: Duration,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Payload sizes.
    pub size: SizeRange,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Closed loop: the next `pipeline` requests go only once all those
    /// in flight are answered (redis-benchmark's -P), not one per reply.
    pub batch: bool,
    /// Open loop: the rate over the run, requests per second (constant,
    /// or a ramp, steps, a file's profile). None: closed loop.
    pub rate: Option<crate::schedule::RateProfile>,
    /// A request unanswered this long after it was sent is a timeout (and
    /// a connect that takes this long has failed).
    pub timeout: Duration,
    /// Also keep the latency per interval of this length (for `--hdr-log`).
    pub interval: Option<Duration>,
    /// How the load threads do their I/O.
    pub io: IoPath,
    /// Start at this wall-clock time (`--start-at`) rather than at once.
    pub start_at: Option<SystemTime>,
    /// Write one row per request here (`--request-log`).
    pub request_log: Option<std::path::PathBuf>,
}

/// How load threads do their I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoPath {
    /// io_uring: ring connects, multishot receives into provided buffers.
    Uring,
    /// Edge-triggered epoll with plain reads and writes.
    Epoll,
}

impl IoPath {
    /// The path for `choice`: `auto` takes io_uring where the kernel allows
    /// it with what the load threads need, else epoll, saying why on
    /// stderr; `uring` refuses to run without it.
    pub fn choose(choice: crate::cli::IoChoice) -> anyhow::Result<IoPath> {
        use crate::cli::IoChoice;
        match choice {
            IoChoice::Epoll => Ok(IoPath::Epoll),
            IoChoice::Uring => {
                kernel_io::uring::probe()
                    .map_err(|cause| anyhow::anyhow!("io_uring is unavailable: {cause}"))?;
                Ok(IoPath::Uring)
            }
            IoChoice::Auto => match kernel_io::uring::probe() {
                Ok(_) => Ok(IoPath::Uring),
                Err(cause) => {
                    eprintln!("loadgen: io_uring is unavailable, using epoll instead: {cause}");
                    Ok(IoPath::Epoll)
                }
            },
        }
    }

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            IoPath::Uring => "io_uring",
            IoPath::Epoll => "epoll",
        }
    }
}

/// ringcore's stream protocols, whose replies loadgen predicts byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamProtocol {
    /// Every byte back.
    Echo,
    /// Each line reversed (`reverse-lines`).
    Reverse,
}

/// What a TCP run's connections say, and how their replies are checked.
#[derive(Debug, Clone)]
pub enum Workload {
    /// One of ringcore's stream protocols: random payloads, every reply
    /// checked byte for byte against the protocol's own state machine.
    Stream(StreamProtocol),
    /// HTTP requests used in turn (one, or a targets file's), keep-alive
    /// and pipelined: every response read whole, whatever its framing, and
    /// its status checked.
    Http {
        /// Each request's bytes.
        requests: Vec<Vec<u8>>,
    },
    /// A request/response protocol of the user's server (Redis, memcached,
    /// or any other through the generic mode): requests drawn by the
    /// dialect, every reply framed and checked by it.
    Dialect(std::sync::Arc<dyn crate::dialect::Dialect>),
}

/// How the scheduled requests ended. Each ends as exactly one of
/// `completed`, `timeouts`, an error (counted in [`RequestErrors`]) or
/// `unsent`.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Fates {
    /// Requests the run asked for: closed loop, those put on the wire;
    /// open loop, those that fell due.
    pub scheduled: u64,
    /// Answered correctly: each is a latency sample.
    pub completed: u64,
    /// Unanswered `--timeout` after they were sent: each is also a latency
    /// sample, taken when loadgen gave up. A late reply is awaited (and
    /// then discarded) so the connection can be reused.
    pub timeouts: u64,
    /// Fell due but the run ended before a connection was free to carry
    /// them (open loop past capacity).
    pub unsent: u64,
}

impl Fates {
    fn add(&mut self, other: &Fates) {
        self.scheduled += other.scheduled;
        self.completed += other.completed;
        self.timeouts += other.timeouts;
        self.unsent += other.unsent;
    }

    /// True when every scheduled request is accounted for exactly once.
    pub fn balanced(&self, errors: &RequestErrors) -> bool {
        self.scheduled == self.completed + self.timeouts + errors.total() + self.unsent
    }
}

/// Requests that ended in an error, by kind. A connection that fails ends
/// every request in flight on it with its failure's kind.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RequestErrors {
    /// The connection was reset (or a send failed).
    pub reset: u64,
    /// The server closed the connection with the request outstanding.
    pub closed: u64,
    /// A reply differed from the expected bytes (or, over HTTP, a response
    /// could not be read).
    pub mismatch: u64,
    /// The server refused the request: an HTTP response whose status was
    /// not 2xx, a Redis error reply (`-ERR`, `-OOM`), memcached's `ERROR`,
    /// `CLIENT_ERROR`, `SERVER_ERROR` or `NOT_STORED`.
    pub status: u64,
    /// In flight on a connection loadgen gave up on: a request ahead of it
    /// stayed unanswered for twice `--timeout`.
    pub aborted: u64,
}

impl RequestErrors {
    fn add(&mut self, other: &RequestErrors) {
        self.reset += other.reset;
        self.closed += other.closed;
        self.mismatch += other.mismatch;
        self.status += other.status;
        self.aborted += other.aborted;
    }

    /// All requests that ended in an error.
    pub fn total(&self) -> u64 {
        self.reset + self.closed + self.mismatch + self.status + self.aborted
    }
}

/// What the connections themselves went through.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Connects {
    /// Connections established, first ones and reconnects.
    pub opened: u64,
    /// Connections established after an earlier one of the same slot failed.
    pub reconnects: u64,
    /// Connects refused (nobody listening).
    pub refused: u64,
    /// Connects that took longer than `--timeout`.
    pub timed_out: u64,
    /// Connects that failed otherwise.
    pub failed: u64,
}

impl Connects {
    fn add(&mut self, other: &Connects) {
        self.opened += other.opened;
        self.reconnects += other.reconnects;
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.failed += other.failed;
    }
}

/// What a TCP run measured.
pub struct TcpOutcome {
    /// How every scheduled request ended.
    pub fates: Fates,
    /// Requests that ended in an error, by kind.
    pub errors: RequestErrors,
    /// What the connections went through.
    pub connects: Connects,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received and verified.
    pub bytes_received: u64,
    /// Wall time from the first request sent (by any thread) to the last
    /// reply received (by any thread), or to the end of the schedule when
    /// that came later.
    pub elapsed: Duration,
    /// Latency in nanoseconds: one sample per completed request and per
    /// timeout, from its due time (open loop) or its send (closed loop),
    /// except those due (or sent) in the warm-up.
    pub latency: Histogram<u64>,
    /// Samples the warm-up left out of `latency`.
    pub warmup_samples: u64,
    /// Open loop: for each unsent request, how long it had been due when
    /// the run ended (nanoseconds).
    pub backlog: Histogram<u64>,
    /// How late the load threads got round to their due events (see
    /// `ThreadOutcome::lateness`), nanoseconds.
    pub lateness: Histogram<u64>,
    /// `latency` per interval, when the plan asked for intervals.
    pub series: Option<Series>,
    /// Service time of the same samples, nanoseconds: from each request's
    /// send rather than its due time. Open loop, `latency` minus `service`
    /// is how long requests waited for a free connection (what a tool
    /// without the correction would hide); closed loop, they are equal.
    pub service: Histogram<u64>,
    /// `service` per interval, when the plan asked for intervals.
    pub service_series: Option<Series>,
    /// A changing rate: requests sent in each second of the run.
    pub sent_per_second: Vec<u64>,
    /// A changing rate: latency per second of the run (by completion).
    pub per_second: Option<Series>,
    /// The wall-clock time the run (and its first interval) started.
    pub started: SystemTime,
    /// How late the start was after `--start-at`.
    pub start_lateness: Option<Duration>,
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

    // The threads set up first, then all start on one instant: --start-at's,
    // or the moment the last of them is ready. An open-loop run (and one
    // with --start-at) opens its connections before that instant, so its
    // schedule measures the server, not loadgen's connects.
    let anchor = plan.start_at.map(crate::start::anchor).transpose()?;
    let log = plan
        .request_log
        .as_deref()
        .map(crate::request_log::create)
        .transpose()?;
    let ready = std::sync::Barrier::new(plan.threads);
    let common = std::sync::OnceLock::new();
    let outcomes = crate::progress::run_threads(
        vec![(); plan.threads],
        &plan.cpus,
        live,
        "requests",
        quiet,
        |t, ()| {
            let share = worker::Share {
                connections: share(plan.connections, plan.threads, t),
                quota: plan.requests.map(|n| share_u64(n, plan.threads, t)),
                rate: plan.rate.as_ref().map(|r| r.share(plan.threads)),
                seed: t as u64,
                log: log.clone(),
            };
            let prepared = (|| {
                let mut worker =
                    worker::Worker::new(plan, share, live, anchor.unwrap_or_else(Instant::now))?;
                if anchor.is_some() || plan.rate.is_some() {
                    worker.prepare(anchor.unwrap_or_else(|| Instant::now() + plan.timeout))?;
                }
                anyhow::Ok(worker)
            })();
            // Every thread reaches the barrier, failed or not, so none waits
            // forever for one that gave up.
            ready.wait();
            let mut worker = prepared?;
            let start = *common.get_or_init(|| anchor.unwrap_or_else(Instant::now));
            worker.set_start(start);
            let late = crate::start::sleep_until_instant(start);
            let mut outcome = worker.run()?;
            outcome.start_lateness = late;
            Ok(outcome)
        },
    )?;
    let start = common.get().copied().unwrap_or_else(Instant::now);
    let mut total = merge(outcomes, start, plan.interval)?;
    total.started = crate::start::wall_time_of(start);
    if plan.start_at.is_none() {
        total.start_lateness = None;
    }
    Ok(total)
}

/// Adds the threads' outcomes up; the elapsed time is the whole run's wall
/// time, from the earliest first send to the latest last reply.
fn merge(
    outcomes: Vec<worker::ThreadOutcome>,
    start: Instant,
    interval: Option<Duration>,
) -> anyhow::Result<TcpOutcome> {
    let mut total = TcpOutcome {
        fates: Fates::default(),
        errors: RequestErrors::default(),
        connects: Connects::default(),
        bytes_sent: 0,
        bytes_received: 0,
        elapsed: Duration::ZERO,
        latency: latency::histogram(),
        warmup_samples: 0,
        backlog: latency::histogram(),
        lateness: latency::histogram(),
        series: interval.map(Series::new),
        service: latency::histogram(),
        service_series: interval.map(Series::new),
        sent_per_second: Vec::new(),
        per_second: None,
        started: SystemTime::now(),
        start_lateness: None,
    };
    // The run lasts until its last reply, or until its schedule ended if
    // the server answered nothing after that (a stalled server answers
    // slowly, not quickly over a shorter run).
    let first_send = outcomes.iter().filter_map(|o| o.first_send).min();
    let last_reply = outcomes
        .iter()
        .flat_map(|o| [o.last_reply, o.last_scheduled])
        .flatten()
        .max();
    let ended = outcomes.iter().map(|o| o.ended).max().unwrap_or(start);
    for o in &outcomes {
        total.fates.add(&o.fates);
        total.errors.add(&o.errors);
        total.connects.add(&o.connects);
        total.bytes_sent += o.bytes_sent;
        total.bytes_received += o.bytes_received;
        total.warmup_samples += o.warmup_samples;
        total.start_lateness = total.start_lateness.max(Some(o.start_lateness));
        total
            .latency
            .add(&o.latency)
            .context("merging latency histograms")?;
        total
            .backlog
            .add(&o.backlog)
            .context("merging backlog histograms")?;
        total
            .lateness
            .add(&o.lateness)
            .context("merging lateness histograms")?;
        if let (Some(into), Some(from)) = (&mut total.series, &o.series) {
            into.merge(from).context("merging interval histograms")?;
        }
        total
            .service
            .add(&o.service)
            .context("merging service-time histograms")?;
        if let (Some(into), Some(from)) = (&mut total.service_series, &o.service_series) {
            into.merge(from).context("merging interval histograms")?;
        }
        if let Some(from) = &o.per_second {
            total
                .per_second
                .get_or_insert_with(|| Series::coarse(Duration::from_secs(1)))
                .merge(from)
                .context("merging per-second histograms")?;
        }
        if total.sent_per_second.len() < o.sent_per_second.len() {
            total.sent_per_second.resize(o.sent_per_second.len(), 0);
        }
        for (into, from) in total.sent_per_second.iter_mut().zip(&o.sent_per_second) {
            *into += from;
        }
    }
    total.elapsed = match (first_send, last_reply) {
        (Some(first), Some(last)) if last > first => last - first,
        (Some(first), _) => ended.saturating_duration_since(first),
        _ => ended.saturating_duration_since(start),
    }
    .max(Duration::from_micros(1));
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

/// Thread `i`'s part of `total` split over `parts`: the parts sum to `total`.
pub fn share_u64(total: u64, parts: usize, i: usize) -> u64 {
    total / parts as u64 + u64::from((i as u64) < total % parts as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(
        first_ms: u64,
        last_ms: u64,
        completed: u64,
        start: Instant,
    ) -> worker::ThreadOutcome {
        let mut o = worker::ThreadOutcome::empty(start);
        o.first_send = Some(start + Duration::from_millis(first_ms));
        o.last_reply = Some(start + Duration::from_millis(last_ms));
        o.fates.scheduled = completed;
        o.fates.completed = completed;
        o
    }

    #[test]
    fn the_rate_spans_the_whole_run_not_the_fastest_thread() {
        let start = Instant::now();
        // One thread finished its share in 1 s, the other in 2 s.
        let total = merge(
            vec![
                thread(0, 1_000, 1_000, start),
                thread(10, 2_000, 1_000, start),
            ],
            start,
            None,
        )
        .unwrap();
        assert_eq!(total.fates.completed, 2_000);
        assert_eq!(total.elapsed, Duration::from_millis(2_000));
    }

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 7, 1_000_003] {
            for parts in 1..6 {
                let sum: u64 = (0..parts).map(|i| share_u64(total, parts, i)).sum();
                assert_eq!(sum, total);
            }
        }
    }

    #[test]
    fn fates_balance_only_when_every_request_is_counted() {
        let fates = Fates {
            scheduled: 10,
            completed: 5,
            timeouts: 2,
            unsent: 1,
        };
        let mut errors = RequestErrors {
            reset: 1,
            aborted: 1,
            ..RequestErrors::default()
        };
        assert!(fates.balanced(&errors));
        errors.status = 1;
        assert!(!fates.balanced(&errors));
    }
}
