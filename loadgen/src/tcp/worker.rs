//! One load thread: a sans-IO client core ([`core`]) that schedules,
//! frames, checks and accounts every request, driven by one of two thin
//! drivers that only do I/O: io_uring ([`uring`]) or, where io_uring is
//! unavailable, edge-triggered epoll with plain reads and writes
//! ([`readiness`]). Every protocol loadgen speaks lives in the core, once.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{Connects, Fates, IoPath, RequestErrors, TcpPlan};
use crate::latency::{self, Series};
use crate::progress::Live;
use crate::schedule::RateProfile;

mod core;
mod op;
mod readiness;
mod uring;

use self::core::{Core, Effect};

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

/// What a driver does for the core: carry out its effects and hand it
/// what the kernel did.
trait Driver {
    /// Carries out one thing the core asked for.
    fn carry_out(&mut self, core: &mut Core<'_>, effect: Effect, now: Instant);
    /// The driver's buffer for the core's effects (kept, not reallocated).
    fn effects(&mut self) -> &mut Vec<Effect>;
    /// Waits up to `wait` for the kernel, hands the core every event, and
    /// carries out what they made it ask for.
    fn wait(&mut self, core: &mut Core<'_>, wait: Duration) -> anyhow::Result<()>;
}

/// Carries out everything the core asked for, until it asks nothing more
/// (carrying out an effect can make it ask: a connect that completes at
/// once lets it send).
fn apply(core: &mut Core<'_>, driver: &mut impl Driver) {
    let mut effects = std::mem::take(driver.effects());
    while core.has_effects() {
        core.take_effects(&mut effects);
        let now = Instant::now();
        for effect in effects.drain(..) {
            driver.carry_out(core, effect, now);
        }
    }
    *driver.effects() = effects;
}

/// The driver a thread got.
enum Io {
    Uring(Box<uring::UringDriver>),
    Readiness(readiness::ReadinessDriver),
}

/// A load thread: its core and its driver.
pub struct Worker<'a> {
    core: Core<'a>,
    io: Io,
}

impl<'a> Worker<'a> {
    pub fn new(
        plan: &'a TcpPlan,
        share: Share,
        live: &'a Live,
        start: Instant,
    ) -> anyhow::Result<Self> {
        let slots = share.connections;
        let io = match plan.io {
            IoPath::Uring => Io::Uring(Box::new(uring::UringDriver::new(plan, slots)?)),
            IoPath::Epoll => Io::Readiness(readiness::ReadinessDriver::new(plan, slots)?),
        };
        Ok(Worker {
            core: Core::new(plan, share, live, start),
            io,
        })
    }

    /// Before a `--start-at` instant: opens every connection (waiting for
    /// them until `until` at most), so the load begins on established
    /// connections, at the same moment in every agent, and not with a burst
    /// of connects. Nothing is sent.
    pub fn prepare(&mut self, until: Instant) -> anyhow::Result<()> {
        match &mut self.io {
            Io::Uring(driver) => prepare(&mut self.core, &mut **driver, until),
            Io::Readiness(driver) => prepare(&mut self.core, driver, until),
        }
    }

    /// Moves the run's start (its schedule and time axis) to `start`.
    pub fn set_start(&mut self, start: Instant) {
        self.core.set_start(start);
    }

    /// Runs the thread's share of the load to its end.
    pub fn run(self) -> anyhow::Result<ThreadOutcome> {
        let Worker { mut core, mut io } = self;
        match &mut io {
            Io::Uring(driver) => run(&mut core, &mut **driver)?,
            Io::Readiness(driver) => run(&mut core, driver)?,
        }
        core.finish()
    }
}

fn prepare(core: &mut Core<'_>, driver: &mut impl Driver, until: Instant) -> anyhow::Result<()> {
    core.connect_all();
    apply(core, driver);
    while core.any_connecting() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        driver.wait(core, left.min(Duration::from_millis(10)))?;
    }
    core.set_running(true);
    Ok(())
}

fn run(core: &mut Core<'_>, driver: &mut impl Driver) -> anyhow::Result<()> {
    core.begin(Instant::now());
    while let Some(wake) = core.step(Instant::now()) {
        apply(core, driver);
        driver.wait(core, wake.saturating_duration_since(Instant::now()))?;
        core.woke(wake, Instant::now());
    }
    Ok(())
}
