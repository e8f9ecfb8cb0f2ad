//! UDP load: each thread owns one connected socket, sends datagrams at a
//! precise paced rate (or floods unpaced), and reads the replies between
//! releases, so one pinned thread does both.
//!
//! Every datagram starts with a [`Probe`] header (run id, sequence number,
//! due time), so the replies give loss, duplicates, reordering and round-trip
//! times. Sends are batched: one `send` with UDP_SEGMENT (GSO) carries a
//! whole release, with `sendmmsg` as the fallback where GSO is refused.
//! Replies arrive coalesced by UDP_GRO.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use kernel_io::sockopt::{set_int_option, SOL_UDP, UDP_GRO, UDP_SEGMENT};
use protocols::probe::{Probe, PROBE_LEN};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cc::Aimd;
use crate::latency::{self, Series};
use crate::pacer::{now_ns, sleep_until, Pacer};
use crate::progress::Live;

/// A release spans about this long when on time (so 1M packets/s leave in
/// batches of 16).
const BATCH_NS: u64 = 16_000;
/// The last stretch before a release is spun, not slept, to be on time.
const SPIN_NS: u64 = 30_000;
/// The automatic drain: twice the slowest round trip seen, within these.
const MIN_DRAIN: Duration = Duration::from_millis(50);
const MAX_DRAIN: Duration = Duration::from_secs(2);

/// What a UDP run does.
#[derive(Debug, Clone)]
pub struct UdpPlan {
    /// The target.
    pub addr: SocketAddr,
    /// Datagrams per second for the whole run; `None` floods unpaced.
    pub rate: Option<f64>,
    /// Bytes per datagram (at least the probe header).
    pub size: usize,
    /// How long to send.
    pub duration: Duration,
    /// Sockets, one thread each.
    pub threads: usize,
    /// CPUs to pin the threads to, round-robin (empty: no pinning).
    pub cpus: Vec<usize>,
    /// Expect replies.
    pub replies: bool,
    /// Tags this run's probes; replies of other runs are ignored.
    pub run_id: u32,
    /// How long to keep receiving after the last send before a datagram
    /// still unanswered counts as lost; `None`: twice the slowest round
    /// trip seen, between 50 ms and 2 s.
    pub drain: Option<Duration>,
    /// Also keep the round trips per interval of this length (--hdr-log).
    pub interval: Option<Duration>,
    /// Start at this wall-clock time (`--start-at`) rather than at once.
    pub start_at: Option<std::time::SystemTime>,
    /// Congestion control (`--cc`): the rate follows the echoes' feedback,
    /// `rate` is its ceiling. Needs replies.
    pub cc: bool,
    /// Count the echoes received per interval of this length (the lab's
    /// time series).
    pub bins: Option<Duration>,
}

/// What one UDP run measured (summed over threads).
pub struct UdpOutcome {
    /// The counts, summed over the sockets.
    pub counts: UdpCounts,
    /// "gso" or "sendmmsg".
    pub send_path: &'static str,
    /// The local ports of loadgen's sockets (for their drop counters).
    pub local_ports: Vec<u16>,
    /// The wall-clock time of the first send's tick.
    pub started: std::time::SystemTime,
    /// How late the start was after `--start-at`.
    pub start_lateness: Option<Duration>,
}

/// Runs the plan, publishing progress to `live`.
pub fn run(plan: &UdpPlan, live: &Live, quiet: bool) -> anyhow::Result<UdpOutcome> {
    if plan.size < PROBE_LEN {
        bail!("--size {} is smaller than the {PROBE_LEN}-byte header every datagram carries; use --size {PROBE_LEN} or more", plan.size);
    }
    if plan.size > 65_507 {
        bail!(
            "--size {} is larger than a UDP datagram can be (65507)",
            plan.size
        );
    }
    if plan.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let sockets = (0..plan.threads)
        .map(|_| open_socket(plan.addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local_ports = sockets
        .iter()
        .filter_map(|s| s.local_addr().ok()?.as_socket())
        .map(|a| a.port())
        .collect();
    // Every thread starts on the same tick: --start-at's, or one a moment
    // from now.
    let anchor = match plan.start_at {
        Some(at) => crate::start::anchor(at)?,
        None => std::time::Instant::now() + Duration::from_millis(1),
    };
    let started = crate::start::wall_time_of(anchor);
    let start = match anchor.checked_duration_since(std::time::Instant::now()) {
        Some(ahead) => now_ns() + ahead.as_nanos() as u64,
        None => now_ns()
            .saturating_sub(std::time::Instant::now().duration_since(anchor).as_nanos() as u64),
    };
    let results = crate::progress::run_threads(
        sockets,
        &plan.cpus,
        live,
        "datagrams",
        quiet,
        |_, socket| Sender::new(plan, socket, live).run(start),
    )?;
    let mut counts = UdpCounts::new();
    for t in &results {
        counts.merge(t)?;
    }
    let lateness_ns = counts.start_lateness_ns;
    let out = UdpOutcome {
        send_path: if counts.gso { "gso" } else { "sendmmsg" },
        counts,
        local_ports,
        started,
        start_lateness: plan.start_at.map(|_| Duration::from_nanos(lateness_ns)),
    };
    Ok(out)
}

fn open_socket(addr: SocketAddr) -> anyhow::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )
    .context("creating a UDP socket")?;
    socket
        .connect(&addr.into())
        .with_context(|| format!("cannot reach UDP {addr}"))?;
    // Big queues both ways: a run should measure the target, not our socket.
    // Root may exceed net.core.{r,w}mem_max with the FORCE options.
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if set_int_option(&socket, libc::SOL_SOCKET, force, 16 << 20).is_err() {
            let _ = set_int_option(&socket, libc::SOL_SOCKET, plain, 16 << 20);
        }
    }
    // Replies from ringcore come as GSO trains; take them coalesced.
    let _ = set_int_option(&socket, SOL_UDP, UDP_GRO, 1);
    // Report send-path drops (ENOBUFS) instead of hiding them in SndbufErrors.
    let _ = match addr {
        SocketAddr::V4(_) => set_int_option(&socket, libc::IPPROTO_IP, libc::IP_RECVERR, 1),
        SocketAddr::V6(_) => set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1),
    };
    Ok(socket)
}

/// What one socket's thread counted (and, merged, a whole run).
#[derive(Debug)]
pub struct UdpCounts {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams the send path refused (ENOBUFS/EAGAIN): they never left.
    pub not_sent: u64,
    /// Datagrams whose send was refused because an ICMP error had come
    /// back for an earlier one (ECONNREFUSED): they never left either.
    pub refused: u64,
    /// ICMP errors read from the socket's error queue (each about one
    /// datagram that left; the kernel rate-limits them, so not one each).
    pub icmp_errors: u64,
    /// Distinct replies received.
    pub received: u64,
    /// Replies received more than once.
    pub duplicated: u64,
    /// Replies that arrived after a later-sent one.
    pub reordered: u64,
    /// Replies that were not ours (other runs, garbage).
    pub foreign: u64,
    /// From the first send to the last.
    pub send_elapsed: Duration,
    /// Most datagrams released back to back in one send.
    pub largest_burst: u64,
    /// Gaps between releases, nanoseconds.
    pub gaps: Histogram<u64>,
    /// Round-trip times from each datagram's due time, nanoseconds.
    pub rtt: Histogram<u64>,
    /// The round trips per interval, when the plan asked for intervals.
    pub series: Option<Series>,
    /// Every send used GSO (false once a fallback to sendmmsg happened).
    pub gso: bool,
    /// How the lost datagrams were lost: in whole trains or one by one.
    pub shape: LossShape,
    /// The longest drain any socket was given after its last send.
    pub drain: Duration,
    /// Replies that came back during the drain.
    pub drained: u64,
    /// How late the latest thread woke for the start, nanoseconds.
    pub start_lateness_ns: u64,
    /// Interval length for `delivered_bins`, nanoseconds (0: none kept).
    pub bin_ns: u64,
    /// Distinct echoes received per interval since the start.
    pub delivered_bins: Vec<u64>,
    /// With `--cc`: what the controller did.
    pub cc: Option<CcSummary>,
}

/// What the congestion controller did in a `--cc` run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CcSummary {
    /// Loss events it reacted to (each a halving).
    pub loss_events: u64,
    /// Its rate at the end, datagrams/s.
    pub final_pps: f64,
    /// Its smoothed round trip at the end, microseconds.
    pub srtt_us: f64,
}

/// How the datagrams that left but never came back were grouped. The
/// kernel counts a GSO train that stays whole (loopback, veth, a receiver
/// with UDP_GRO) as one drop, so its drop counters are converted to
/// datagrams with the size of the trains that vanished whole.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LossShape {
    /// Releases (one send each: a GSO train or one sendmmsg) that left.
    pub trains: u64,
    /// Trains of which not one datagram came back.
    pub whole_trains_lost: u64,
    /// Datagrams in those trains.
    pub datagrams_in_whole_trains: u64,
    /// Datagrams lost from trains of which some came back.
    pub datagrams_lost_singly: u64,
}

impl LossShape {
    fn add(&mut self, other: &LossShape) {
        self.trains += other.trains;
        self.whole_trains_lost += other.whole_trains_lost;
        self.datagrams_in_whole_trains += other.datagrams_in_whole_trains;
        self.datagrams_lost_singly += other.datagrams_lost_singly;
    }

    /// Datagrams per loss the kernel counts: whole trains count their
    /// size, datagrams lost singly count one (1.0 when nothing was lost).
    pub fn datagrams_per_drop(&self) -> f64 {
        let drops = self.whole_trains_lost + self.datagrams_lost_singly;
        if drops == 0 {
            return 1.0;
        }
        (self.datagrams_in_whole_trains + self.datagrams_lost_singly) as f64 / drops as f64
    }
}

/// A run of identical releases: how many datagrams each carried, how many
/// of them left, and how many such releases came in a row. A paced run
/// repeats one shape almost always, so the log of which trains left stays
/// a few entries long however long the run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Releases {
    count: u16,
    left: u16,
    times: u32,
}

impl Default for UdpCounts {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpCounts {
    /// All zero.
    pub fn new() -> Self {
        Self {
            sent: 0,
            not_sent: 0,
            refused: 0,
            icmp_errors: 0,
            received: 0,
            duplicated: 0,
            reordered: 0,
            foreign: 0,
            send_elapsed: Duration::ZERO,
            largest_burst: 0,
            gaps: latency::histogram(),
            rtt: latency::histogram(),
            series: None,
            gso: true,
            shape: LossShape::default(),
            drain: Duration::ZERO,
            drained: 0,
            start_lateness_ns: 0,
            bin_ns: 0,
            delivered_bins: Vec::new(),
            cc: None,
        }
    }

    /// Adds another thread's counts to these.
    pub fn merge(&mut self, t: &UdpCounts) -> anyhow::Result<()> {
        self.sent += t.sent;
        self.not_sent += t.not_sent;
        self.refused += t.refused;
        self.icmp_errors += t.icmp_errors;
        self.received += t.received;
        self.duplicated += t.duplicated;
        self.reordered += t.reordered;
        self.foreign += t.foreign;
        self.send_elapsed = self.send_elapsed.max(t.send_elapsed);
        self.largest_burst = self.largest_burst.max(t.largest_burst);
        self.gaps.add(&t.gaps).context("merging gap histograms")?;
        self.rtt
            .add(&t.rtt)
            .context("merging round-trip histograms")?;
        match (&mut self.series, &t.series) {
            (Some(into), Some(from)) => into.merge(from).context("merging interval histograms")?,
            (None, Some(from)) => self.series = Some(from.clone()),
            _ => {}
        }
        self.gso &= t.gso;
        self.shape.add(&t.shape);
        self.drain = self.drain.max(t.drain);
        self.drained += t.drained;
        self.start_lateness_ns = self.start_lateness_ns.max(t.start_lateness_ns);
        self.bin_ns = self.bin_ns.max(t.bin_ns);
        if self.delivered_bins.len() < t.delivered_bins.len() {
            self.delivered_bins.resize(t.delivered_bins.len(), 0);
        }
        for (into, n) in self.delivered_bins.iter_mut().zip(&t.delivered_bins) {
            *into += n;
        }
        self.cc = match (self.cc, t.cc) {
            (Some(a), Some(b)) => Some(CcSummary {
                loss_events: a.loss_events + b.loss_events,
                final_pps: a.final_pps + b.final_pps,
                srtt_us: a.srtt_us.max(b.srtt_us),
            }),
            (a, b) => a.or(b),
        };
        Ok(())
    }
}

struct Sender<'a> {
    plan: &'a UdpPlan,
    socket: Socket,
    live: &'a Live,
    gso: bool,
    max_burst: usize,
    /// Sequence numbers used so far, sent or not: the schedule's position.
    attempted: u64,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    control: [u64; 8],
    /// The error queue's control messages.
    err_control: [u64; 16],
    /// Every release in order (replies expected only): which trains left.
    releases: Vec<Releases>,
    /// With `--cc`: the rate controller.
    cc: Option<Aimd>,
    /// One bit per sequence number: replies seen.
    seen: Vec<u64>,
    highest: Option<u64>,
    o: UdpCounts,
}

impl<'a> Sender<'a> {
    fn new(plan: &'a UdpPlan, socket: Socket, live: &'a Live) -> Self {
        let max_burst = (65_000 / plan.size).clamp(1, 64);
        let gso = max_burst > 1
            && set_int_option(&socket, SOL_UDP, UDP_SEGMENT, plan.size as libc::c_int).is_ok();
        let mut out = vec![0u8; plan.size * max_burst];
        for (i, b) in out.iter_mut().enumerate() {
            *b = (i % 251) as u8; // padding after each header
        }
        Self {
            plan,
            socket,
            live,
            gso,
            max_burst,
            attempted: 0,
            out,
            inbuf: vec![0u8; 65_536],
            control: [0; 8],
            err_control: [0; 16],
            releases: Vec::new(),
            seen: Vec::new(),
            highest: None,
            o: UdpCounts {
                series: plan.interval.map(Series::new),
                bin_ns: plan.bins.map_or(0, |b| b.as_nanos() as u64),
                ..UdpCounts::new()
            },
            cc: None,
        }
    }

    fn run(mut self, start: u64) -> anyhow::Result<UdpCounts> {
        let end = start + self.plan.duration.as_nanos() as u64;
        let ceiling = self.plan.rate.map(|r| r / self.plan.threads as f64);
        if self.plan.cc {
            // From a low rate, as TCP's initial window: slow start finds
            // the path's share within a few round trips.
            let ceiling = ceiling.unwrap_or(f64::MAX);
            self.cc = Some(Aimd::new(100.0_f64.min(ceiling), ceiling, start));
        }
        let initial = self.cc.as_ref().map(Aimd::rate).or(ceiling);
        let mut pacer = initial.map(|r| Pacer::new(start, r, BATCH_NS, self.max_burst as u64));
        sleep_until(start, SPIN_NS);
        self.o.start_lateness_ns = now_ns().saturating_sub(start);
        let mut last_release: Option<u64> = None;
        let mut next_progress = start + 1_000_000_000;
        loop {
            let now = now_ns();
            if now >= end {
                break;
            }
            if now >= next_progress && !self.o.rtt.is_empty() {
                // The progress line shows the round-trip p99 so far.
                self.live
                    .p99_ns
                    .fetch_max(self.o.rtt.value_at_quantile(0.99), Relaxed);
                next_progress = now + 1_000_000_000;
            }
            if let (Some(cc), Some(p)) = (&mut self.cc, &mut pacer) {
                if let Some(rate) =
                    cc.step(now, &self.seen, self.highest, self.o.sent, self.o.received)
                {
                    p.retime(now, self.attempted, rate);
                }
            }
            let burst = match &pacer {
                Some(p) => {
                    let due = p.due_count(now, self.attempted);
                    if due >= p.quantum {
                        due.min(self.max_burst as u64)
                    } else {
                        0
                    }
                }
                None => self.max_burst as u64,
            };
            if burst > 0 {
                if let Some(prev) = last_release {
                    self.o.gaps.saturating_record(now - prev);
                }
                last_release = Some(now);
                self.o.largest_burst = self.o.largest_burst.max(burst);
                self.release(burst as usize, start, pacer.as_ref(), now)?;
            }
            if self.plan.replies {
                self.receive(start);
            }
            if let Some(p) = &pacer {
                if burst == 0 {
                    let next = p.next_release_ns(self.attempted).min(end);
                    if self.plan.replies {
                        self.wait_readable(next);
                    } else {
                        sleep_until(next, SPIN_NS);
                    }
                }
            }
        }
        self.o.send_elapsed = Duration::from_nanos(now_ns().min(end).saturating_sub(start).max(1));
        self.o.cc = self.cc.as_ref().map(|cc| CcSummary {
            loss_events: cc.loss_events,
            final_pps: cc.rate(),
            srtt_us: cc.srtt_ns() / 1e3,
        });
        if self.plan.replies {
            self.drain(start);
            self.o.shape = loss_shape(&self.releases, &self.seen);
        }
        self.read_error_queue();
        self.o.gso = self.gso;
        Ok(self.o)
    }

    /// Sends `count` datagrams in one release.
    fn release(
        &mut self,
        count: usize,
        start: u64,
        pacer: Option<&Pacer>,
        now: u64,
    ) -> anyhow::Result<()> {
        let size = self.plan.size;
        for j in 0..count {
            let seq = self.attempted + j as u64;
            // Round trips count from when a datagram was due, not when it left.
            let due = pacer.map_or(now, |p| p.due_ns(seq));
            let probe = Probe {
                run: self.plan.run_id,
                seq,
                sent_ns: due.saturating_sub(start),
            };
            probe.write(&mut self.out[j * size..(j + 1) * size]);
        }
        let result = if self.gso {
            send_gso(&self.socket, &self.out[..count * size], size)
        } else {
            send_many(&self.socket, &self.out, size, count)
        };
        let mut left = 0;
        match result {
            Ok(n) => {
                left = n;
                self.o.sent += n as u64;
                self.o.not_sent += (count - n) as u64;
                self.live.done.fetch_add(n as u64, Relaxed);
            }
            // The send path was full (a qdisc or device queue): these never
            // left. The schedule moves on, so the offered rate stays honest.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) => {
                self.o.not_sent += count as u64;
            }
            // An ICMP error came back for an earlier datagram; the kernel
            // reports it on this send, which it refused.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                self.o.refused += count as u64;
                self.read_error_queue();
            }
            Err(e)
                if self.gso
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
                    ) =>
            {
                // GSO refused on this path: one datagram per message from now on.
                self.gso = false;
                let _ = set_int_option(&self.socket, SOL_UDP, UDP_SEGMENT, 0);
                return self.release(count, start, pacer, now);
            }
            Err(e) => return Err(e).with_context(|| format!("sending to UDP {}", self.plan.addr)),
        }
        if self.plan.replies {
            let (count, left) = (count as u16, left as u16);
            match self.releases.last_mut() {
                Some(r) if (r.count, r.left) == (count, left) && r.times < u32::MAX => {
                    r.times += 1;
                }
                _ => self.releases.push(Releases {
                    count,
                    left,
                    times: 1,
                }),
            }
        }
        self.attempted += count as u64;
        self.live
            .errors
            .store(self.o.not_sent + self.o.refused, Relaxed);
        Ok(())
    }

    /// Reads every reply already queued, without waiting.
    fn receive(&mut self, start: u64) {
        loop {
            match recv_coalesced(&self.socket, &mut self.inbuf, &mut self.control) {
                Ok((len, segment)) => {
                    let now = now_ns().saturating_sub(start);
                    let segment = segment.unwrap_or(len).max(1);
                    for i in (0..len).step_by(segment) {
                        let end = (i + segment).min(len);
                        let reply = &self.inbuf[i..end];
                        let rtt = account_reply(
                            reply,
                            now,
                            self.plan.run_id,
                            self.attempted,
                            &mut self.seen,
                            &mut self.highest,
                            &mut self.o,
                        );
                        if let (Some(rtt), Some(cc)) = (rtt, &mut self.cc) {
                            cc.on_echo(rtt, now + start);
                        }
                    }
                    self.live.received.store(self.o.received, Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return,
                // A pending socket error (an ICMP error came back): its
                // details wait in the error queue.
                Err(_) => self.read_error_queue(),
            }
        }
    }

    /// Empties the socket's error queue (IP_RECVERR), counting the ICMP
    /// errors in it once each. Left unread, the queue would hold receive
    /// buffer space that replies need.
    fn read_error_queue(&mut self) {
        while let Some(origin) = recv_error(&self.socket, &mut self.err_control) {
            if origin == libc::SO_EE_ORIGIN_ICMP || origin == libc::SO_EE_ORIGIN_ICMP6 {
                self.o.icmp_errors += 1;
            }
        }
    }

    /// Waits until a reply is readable or `deadline_ns` is near, then spins
    /// receiving until the deadline, so the next release is on time.
    fn wait_readable(&mut self, deadline_ns: u64) {
        let now = now_ns();
        if deadline_ns > now + SPIN_NS {
            let wait = deadline_ns - now - SPIN_NS;
            let ts = libc::timespec {
                tv_sec: (wait / 1_000_000_000) as libc::time_t,
                tv_nsec: (wait % 1_000_000_000) as libc::c_long,
            };
            let mut pfd = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd and a valid timeout; no signal mask.
            unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            return; // the loop receives and re-evaluates the schedule
        }
        while now_ns() < deadline_ns {
            std::hint::spin_loop();
        }
    }

    /// After the last send, collects the replies still on their way, for
    /// the plan's drain or twice the slowest round trip seen (within
    /// bounds), so replies in flight are not called lost.
    fn drain(&mut self, start: u64) {
        let drain = self.plan.drain.unwrap_or_else(|| {
            let slowest = Duration::from_nanos(self.o.rtt.max());
            (slowest * 2).clamp(MIN_DRAIN, MAX_DRAIN)
        });
        self.o.drain = drain;
        let before = self.o.received;
        let give_up = now_ns() + drain.as_nanos() as u64;
        while now_ns() < give_up && self.o.received < self.o.sent {
            self.receive(start);
            self.wait_readable(give_up.min(now_ns() + 5_000_000));
        }
        self.receive(start);
        self.o.drained = self.o.received - before;
    }
}

/// Which datagrams that left never came back, in whole trains or singly:
/// `releases` in order of sending (sequence numbers from 0), `seen` one bit
/// per sequence number that came back.
fn loss_shape(releases: &[Releases], seen: &[u64]) -> LossShape {
    let mut shape = LossShape::default();
    let mut seq = 0u64;
    let each = releases
        .iter()
        .flat_map(|r| std::iter::repeat_n(*r, r.times as usize));
    for r in each {
        if r.left > 0 {
            shape.trains += 1;
            let back = (seq..seq + u64::from(r.left))
                .filter(|&q| {
                    let (word, bit) = ((q / 64) as usize, q % 64);
                    seen.get(word).is_some_and(|w| w & (1 << bit) != 0)
                })
                .count() as u64;
            match (back, u64::from(r.left) - back) {
                (0, lost) => {
                    shape.whole_trains_lost += 1;
                    shape.datagrams_in_whole_trains += lost;
                }
                (_, lost) => shape.datagrams_lost_singly += lost,
            }
        }
        seq += u64::from(r.count);
    }
    shape
}

/// Books one reply: ours or not, first time or duplicate, in order or not,
/// and its round trip (returned for a first-time reply of ours).
fn account_reply(
    reply: &[u8],
    now_ns: u64,
    run: u32,
    attempted: u64,
    seen: &mut Vec<u64>,
    highest: &mut Option<u64>,
    o: &mut UdpCounts,
) -> Option<u64> {
    let Some(probe) = Probe::parse_reply(reply).filter(|p| p.run == run && p.seq < attempted)
    else {
        o.foreign += 1;
        return None;
    };
    let (word, bit) = ((probe.seq / 64) as usize, probe.seq % 64);
    if seen.len() <= word {
        seen.resize(word + 1, 0);
    }
    if seen[word] & (1 << bit) != 0 {
        o.duplicated += 1;
        return None;
    }
    seen[word] |= 1 << bit;
    o.received += 1;
    match highest {
        Some(h) if probe.seq < *h => o.reordered += 1,
        _ => *highest = Some(probe.seq),
    }
    let rtt = now_ns.saturating_sub(probe.sent_ns);
    o.rtt.saturating_record(rtt);
    if let Some(series) = &mut o.series {
        series.record_after(Duration::from_nanos(now_ns), rtt);
    }
    if let Some(bin) = now_ns.checked_div(o.bin_ns) {
        let bin = bin as usize;
        if o.delivered_bins.len() <= bin {
            o.delivered_bins.resize(bin + 1, 0);
        }
        o.delivered_bins[bin] += 1;
    }
    Some(rtt)
}

/// One `send` of a whole release: the socket's UDP_SEGMENT cuts it into
/// `size`-byte datagrams. Returns the datagrams sent.
fn send_gso(socket: &Socket, data: &[u8], size: usize) -> io::Result<usize> {
    // SAFETY: `data` is a live buffer of the length passed.
    let n = unsafe { libc::send(socket.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize / size)
    }
}

/// One `sendmmsg` of `count` datagrams of `size` bytes from `data`.
fn send_many(socket: &Socket, data: &[u8], size: usize, count: usize) -> io::Result<usize> {
    let mut iovs: Vec<libc::iovec> = (0..count)
        .map(|i| libc::iovec {
            iov_base: data[i * size..].as_ptr().cast_mut().cast(),
            iov_len: size,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: every msghdr points at an iovec in `iovs`, each into `data`;
    // all outlive the call.
    let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), count as u32, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads one entry of the socket's error queue without waiting; the
/// origin of its extended error (`SO_EE_ORIGIN_*`), or `None` when empty.
fn recv_error(socket: &Socket, control: &mut [u64; 16]) -> Option<u8> {
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    // SAFETY: the msghdr points at `payload` and `control`, both live.
    let n = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return None;
    }
    let mut origin = Some(libc::SO_EE_ORIGIN_NONE);
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with
    // well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let recverr = (c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR)
                || (c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
            if recverr {
                let ee: libc::sock_extended_err =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                origin = Some(ee.ee_origin);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    origin
}

/// Receives one buffer without waiting; its length and the GRO segment size
/// when several datagrams were coalesced.
fn recv_coalesced(
    socket: &Socket,
    buf: &mut [u8],
    control: &mut [u64; 8],
) -> io::Result<(usize, Option<usize>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    // SAFETY: the msghdr points at `buf` and `control`, both live and writable.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote `msg_controllen` bytes of control data.
    let control_bytes = unsafe {
        std::slice::from_raw_parts(
            control.as_ptr().cast::<u8>(),
            msg.msg_controllen.min(std::mem::size_of_val(control)),
        )
    };
    Ok((n as usize, kernel_io::sockopt::gro_segment(control_bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_told_apart_by_whole_trains_and_single_datagrams() {
        let run = |count, left, times| Releases { count, left, times };
        // Three trains of 4 that left whole, one of 4 of which 2 left (the
        // rest was refused), and one that did not leave at all.
        let releases = [run(4, 4, 3), run(4, 2, 1), run(4, 0, 1)];
        // Back: all of train 0; none of train 1; 3 of 4 of train 2; one of
        // the 2 that left of train 3.
        let back = [0u64, 1, 2, 3, 8, 9, 10, 12];
        let mut seen = vec![0u64; 1];
        for q in back {
            seen[0] |= 1 << q;
        }
        assert_eq!(
            loss_shape(&releases, &seen),
            LossShape {
                trains: 4,
                whole_trains_lost: 1,
                datagrams_in_whole_trains: 4,
                datagrams_lost_singly: 2,
            }
        );
    }

    #[test]
    fn replies_are_counted_once_in_or_out_of_order() {
        let mut o = UdpCounts::new();
        let (mut seen, mut highest) = (Vec::new(), None);
        let mut reply = |seq: u64, run: u32, o: &mut UdpCounts| {
            let mut buf = vec![0u8; 40];
            Probe {
                run,
                seq,
                sent_ns: 1_000,
            }
            .write(&mut buf);
            account_reply(&buf, 5_000, 7, 100, &mut seen, &mut highest, o);
        };
        for seq in [0, 1, 3, 2, 3, 99] {
            reply(seq, 7, &mut o);
        }
        reply(5, 8, &mut o); // another run
        reply(100, 7, &mut o); // never sent
        assert_eq!(
            (o.received, o.duplicated, o.reordered, o.foreign),
            (5, 1, 1, 2)
        );
        assert_eq!(o.rtt.len(), 5);
    }
}
