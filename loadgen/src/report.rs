//! The reports of each mode and how they are shown: a table for people, or
//! one JSON object (`--json`) for scripts. The modes are run from
//! [`crate::commands`]; the lab and the plots build on these reports
//! without importing the command runner.

use std::net::SocketAddr;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::kernel::{socket_drops, ServerUdp, UdpSnmp};
use crate::latency::Percentiles;
use crate::progress::Live;
use crate::tcp::{Connects, RequestErrors, TcpOutcome, TcpPlan, Workload};
use crate::udp::{self, LossShape, UdpOutcome, UdpPlan};

/// Where the datagrams that did not come back died. The parts add up to
/// `lost`. The kernel's counters count a GSO train that stayed whole as one
/// drop; they are converted to datagrams with `datagrams_per_drop`.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct LossSplit {
    /// Refused by loadgen's own send path (ENOBUFS/EAGAIN): never left.
    pub not_sent: u64,
    /// Refused on send because an ICMP error had come back: never left.
    pub refused: u64,
    /// Reached a port nobody listens on (the kernel's NoPorts counter).
    pub no_listener: u64,
    /// Dropped at the target's receive queue (its sockets' drop counters).
    pub at_target_queue: u64,
    /// Received by the server but not answered (needs --server-metrics).
    pub by_server: Option<u64>,
    /// Replies dropped at loadgen's own receive queue.
    pub at_our_queue: u64,
    /// Everything else: lost on the way, or still in flight at the end.
    pub elsewhere: u64,
}

/// The result of a UDP run, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct UdpReport {
    /// Always "udp".
    pub mode: &'static str,
    /// The target's address.
    pub target: String,
    /// `--tag`: the run's name (an agent's, say).
    pub tag: Option<String>,
    /// When the first datagram was due, Unix seconds.
    pub started_at: f64,
    /// `--start-at`: how late the start was after it, milliseconds.
    pub start_lateness_ms: Option<f64>,
    /// Bytes per datagram.
    pub size: usize,
    /// Sockets (one thread each).
    pub threads: usize,
    /// The paced target rate (null: unpaced flood).
    pub requested_pps: Option<f64>,
    /// Datagrams handed to the kernel per second of sending.
    pub achieved_pps: f64,
    /// achieved / requested, in percent (null for a flood).
    pub accuracy_pct: Option<f64>,
    /// Megabits per second of UDP payload sent.
    pub achieved_mbps: f64,
    /// How the load threads did their I/O: always "readiness" (UDP load
    /// uses no io_uring: GSO or sendmmsg sends, GRO receives, ppoll).
    pub io: &'static str,
    /// How datagrams left: "gso" (one send per release) or "sendmmsg".
    pub send_path: &'static str,
    /// Most datagrams released back to back.
    pub largest_burst: u64,
    /// Gaps between releases, microseconds.
    pub release_gap_us: Percentiles,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Distinct replies (null with --no-reply).
    pub received: Option<u64>,
    /// Datagrams that did not come back (with --no-reply: the drops seen).
    pub lost: u64,
    /// `lost` as a percentage of what was offered.
    pub loss_pct: f64,
    /// Replies received twice or more.
    pub duplicated: u64,
    /// Replies that came after a later-sent one.
    pub reordered: u64,
    /// Datagrams refused on send because an ICMP error came back first.
    pub refused: u64,
    /// ICMP errors read from the error queue (rate-limited by the kernel).
    pub icmp_errors: u64,
    /// Where the lost datagrams died.
    pub loss: LossSplit,
    /// How the datagrams that left and never came back were grouped.
    pub loss_shape: LossShape,
    /// Datagrams per drop the kernel counted (a GSO train that stayed
    /// whole is one drop); 1 for one-way runs, which cannot tell.
    pub datagrams_per_drop: f64,
    /// How long replies were awaited after the last send, milliseconds.
    pub drain_ms: f64,
    /// Replies that came back during that drain.
    pub drained: u64,
    /// With `--cc`: what the congestion controller did.
    pub cc: Option<crate::udp::CcSummary>,
    /// Distinct echoes per interval, when the plan asked for intervals.
    #[serde(skip)]
    pub delivered_bins: Vec<u64>,
    /// /proc/net/snmp Udp: RcvbufErrors during the run (whole namespace).
    pub rcvbuf_errors_delta: u64,
    /// /proc/net/snmp Udp: SndbufErrors during the run.
    pub sndbuf_errors_delta: u64,
    /// /proc/net/snmp Udp: InErrors during the run.
    pub in_errors_delta: u64,
    /// /proc/net/snmp Udp: NoPorts during the run.
    pub no_ports_delta: u64,
    /// The server's own counts during the run, with --server-metrics.
    pub server: Option<ServerUdp>,
    /// Round trip from each datagram's due time, microseconds.
    pub rtt_us: Percentiles,
    /// The round-trip histogram itself (nanoseconds), for --hdr-log.
    #[serde(skip)]
    pub rtt: Histogram<u64>,
    /// The round trips per interval, for --hdr-log.
    #[serde(skip)]
    pub series: Option<crate::latency::Series>,
    /// When the run started (the log's start time).
    #[serde(skip)]
    pub started: std::time::SystemTime,
}

/// The result of a TCP run, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct TcpReport {
    /// "tcp", or "http" for an HTTP load run.
    pub mode: &'static str,
    /// The server's address.
    pub target: String,
    /// "echo", "reverse", "resp", "memcache", "generic" or "http".
    pub protocol: &'static str,
    /// resp, memcache and generic: what the requests were (the mix, the
    /// keys, the sizes; or the framing).
    pub workload: Option<String>,
    /// `--tag`: the run's name (an agent's, say).
    pub tag: Option<String>,
    /// When the load began, Unix seconds.
    pub started_at: f64,
    /// `--start-at`: how late the start was after it, milliseconds.
    pub start_lateness_ms: Option<f64>,
    /// How the load threads did their I/O: "io_uring" or "epoll".
    pub io: &'static str,
    /// Connections.
    pub connections: usize,
    /// Load threads.
    pub threads: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// `--batch`: the pipeline refilled only once all of it is answered.
    pub pipeline_batch: bool,
    /// Smallest payload.
    pub size_min: usize,
    /// Largest payload.
    pub size_max: usize,
    /// Open-loop target, requests/s (null: closed loop); a changing rate's
    /// mean over the run.
    pub requested_rate: Option<f64>,
    /// A changing rate: how it was given (a ramp, steps, a file).
    pub rate_profile: Option<String>,
    /// A changing rate: each whole second of the run, what the profile
    /// asked for against what was sent, and its latency.
    pub per_second: Option<Vec<Second>>,
    /// A changing rate: requests due before the run's end but sent after
    /// it (a late thread's backlog), so in no second of `per_second`.
    pub sent_after_end: Option<u64>,
    /// A request unanswered this long after it was sent timed out.
    pub timeout_s: f64,
    /// Wall time from the first request sent to the last reply received,
    /// over all threads, in seconds.
    pub duration_s: f64,
    /// Requests answered and verified (the same as `completed`).
    pub requests: u64,
    /// Requests answered per second of `duration_s`.
    pub requests_per_sec: f64,
    /// Requests scheduled: `completed + timeouts + errors + unsent`.
    pub scheduled: u64,
    /// Requests answered and verified.
    pub completed: u64,
    /// Requests unanswered `timeout_s` after they were sent.
    pub timeouts: u64,
    /// Open loop: requests that fell due but were never sent before the
    /// run ended (the server could not keep up).
    pub unsent: u64,
    /// Percentage of scheduled requests never sent.
    pub unsent_pct: f64,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received (all verified).
    pub bytes_received: u64,
    /// Megabytes (10^6) per second, both directions.
    pub mb_per_sec: f64,
    /// Requests that ended in an error, by kind.
    pub errors: RequestErrors,
    /// Connections opened, reconnected and failed.
    pub connects: Connects,
    /// Latency percentiles in microseconds: completed requests and
    /// timeouts (each taken when loadgen gave up), except those due (or
    /// sent) in the warm-up.
    pub latency_us: Percentiles,
    /// Service time percentiles in microseconds, of the same samples: from
    /// each request's send instead of its due time. Open loop, the gap to
    /// `latency_us` is time spent waiting for a free connection, which a
    /// tool that counts from the send hides (coordinated omission); closed
    /// loop, the two are equal.
    pub service_us: Percentiles,
    /// How late loadgen's own threads got round to their due events
    /// (requests falling due, ticks), in microseconds: a delay of loadgen's
    /// (busy, or not scheduled), shared by every request then due. A
    /// latency tail no longer than this one says little of the server.
    pub own_lateness_us: Percentiles,
    /// How long the run went before its latency counted (`--warmup`);
    /// every count and rate covers the warm-up as well.
    pub warmup_s: f64,
    /// Samples (completed requests and timeouts) the warm-up left out of
    /// `latency_us`: with it, `latency_us.count` + `warmup_samples` =
    /// `completed` + `timeouts`.
    pub warmup_samples: u64,
    /// Open loop: how long the unsent requests had been due when the run
    /// ended, in microseconds.
    pub backlog_us: Percentiles,
    /// The latency histogram itself (nanoseconds), for --hdr-log.
    #[serde(skip)]
    pub latency: Histogram<u64>,
    /// The latency per interval, for --hdr-log.
    #[serde(skip)]
    pub series: Option<crate::latency::Series>,
    /// The service-time histogram itself (nanoseconds), for --hdr-log.
    #[serde(skip)]
    pub service: Histogram<u64>,
    /// The service time per interval, for --hdr-log.
    #[serde(skip)]
    pub service_series: Option<crate::latency::Series>,
    /// When the run started (the log's start time).
    #[serde(skip)]
    pub started: std::time::SystemTime,
}

/// Runs a UDP plan between two readings of the kernel's (and the server's)
/// counters, and works out where the lost datagrams died.
pub fn run_udp(
    plan: &UdpPlan,
    server_metrics: Option<SocketAddr>,
    quiet: bool,
) -> anyhow::Result<UdpReport> {
    let server_before = server_metrics.map(ServerUdp::fetch).transpose()?;
    let snmp_before = UdpSnmp::read();
    let target_before = socket_drops(plan.addr.port());
    let live = Live::default();
    let o: UdpOutcome = udp::run(plan, &live, quiet)?;
    let our_drops: u64 = o.local_ports.iter().map(|&p| socket_drops(p)).sum();
    let target_drops = socket_drops(plan.addr.port()).saturating_sub(target_before);
    let snmp = UdpSnmp::read().since(&snmp_before);
    let server = match (server_metrics, server_before) {
        (Some(addr), Some(before)) => Some(ServerUdp::fetch(addr)?.since(&before)),
        _ => None,
    };
    let seconds = o.counts.send_elapsed.as_secs_f64();
    let c = &o.counts;
    let offered = c.sent + c.not_sent + c.refused;
    let achieved_pps = c.sent as f64 / seconds;
    let per_drop = if plan.replies {
        c.shape.datagrams_per_drop()
    } else {
        1.0
    };
    let never_left = c.not_sent + c.refused;
    // What left and never came back, as the kernel's counters explain it,
    // in order along the path; what no counter explains is "elsewhere".
    let left_lost = if plan.replies {
        c.sent.saturating_sub(c.received)
    } else {
        let counted = ((target_drops + snmp.no_ports) as f64 * per_drop).round() as u64;
        // One-way: what the counters saw, and what the server says never
        // reached it.
        let unseen = server.map_or(0, |s| c.sent.saturating_sub(s.datagrams_in));
        counted.max(unseen).min(c.sent)
    };
    let mut rest = left_lost;
    let mut take = |drops: f64| {
        let n = (drops.round() as u64).min(rest);
        rest -= n;
        n
    };
    let no_listener = take(snmp.no_ports as f64 * per_drop);
    let at_target_queue = take(target_drops as f64 * per_drop);
    let by_server = server.map(|s| take(s.datagrams_in.saturating_sub(s.datagrams_out) as f64));
    let at_our_queue = if plan.replies {
        take(our_drops as f64 * per_drop)
    } else {
        0
    };
    let loss = LossSplit {
        not_sent: c.not_sent,
        refused: c.refused,
        no_listener,
        at_target_queue,
        by_server,
        at_our_queue,
        elsewhere: rest,
    };
    let lost = never_left + left_lost;
    let received = plan.replies.then_some(c.received);
    Ok(UdpReport {
        mode: "udp",
        target: plan.addr.to_string(),
        tag: None,
        started_at: crate::start::unix_seconds(o.started),
        start_lateness_ms: o.start_lateness.map(|d| d.as_secs_f64() * 1e3),
        size: plan.size,
        threads: plan.threads,
        requested_pps: plan.rate,
        achieved_pps,
        accuracy_pct: plan.rate.map(|r| achieved_pps / r * 100.0),
        achieved_mbps: achieved_pps * plan.size as f64 * 8.0 / 1e6,
        io: "readiness",
        send_path: o.send_path,
        largest_burst: o.counts.largest_burst,
        release_gap_us: Percentiles::of(&o.counts.gaps),
        duration_s: seconds,
        sent: o.counts.sent,
        received,
        lost,
        loss_pct: if offered == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / offered as f64
        },
        duplicated: o.counts.duplicated,
        reordered: o.counts.reordered,
        refused: o.counts.refused,
        icmp_errors: o.counts.icmp_errors,
        loss,
        loss_shape: o.counts.shape,
        datagrams_per_drop: per_drop,
        drain_ms: o.counts.drain.as_secs_f64() * 1e3,
        drained: o.counts.drained,
        cc: o.counts.cc,
        delivered_bins: o.counts.delivered_bins.clone(),
        rcvbuf_errors_delta: snmp.rcvbuf_errors,
        sndbuf_errors_delta: snmp.sndbuf_errors,
        in_errors_delta: snmp.in_errors,
        no_ports_delta: snmp.no_ports,
        server,
        rtt_us: Percentiles::of(&o.counts.rtt),
        rtt: o.counts.rtt,
        series: o.counts.series,
        started: o.started,
    })
}

/// What reached the far end per second: replies received, or (one-way)
/// what was sent and not seen lost.
pub fn delivered_pps(r: &UdpReport) -> f64 {
    let delivered = r.received.unwrap_or_else(|| r.sent.saturating_sub(r.lost));
    delivered as f64 / r.duration_s
}

/// Prints a UDP rate sweep: one row per offered rate.
pub fn print_sweep(steps: &[&UdpReport]) {
    if let Some(first) = steps.first() {
        println!(
            "UDP sweep -> {}: {} B datagrams, {:.2} s per step",
            first.target, first.size, first.duration_s
        );
    }
    println!(
        "  {:>12} {:>12} {:>12} {:>9} {:>10} {:>10}",
        "offered/s", "sent/s", "delivered/s", "loss %", "rtt p99", "rcvbuf err"
    );
    for r in steps {
        println!(
            "  {:>12.0} {:>12.0} {:>12.0} {:>9.3} {:>10.1} {:>10}",
            r.requested_pps.unwrap_or(0.0),
            r.achieved_pps,
            delivered_pps(r),
            r.loss_pct,
            r.rtt_us.p99,
            r.rcvbuf_errors_delta
        );
    }
}

/// Prints a UDP run's report for a person.
pub fn print_udp(r: &UdpReport) {
    let pacing = match (r.requested_pps, r.accuracy_pct) {
        _ if r.cc.is_some() => format!(
            "congestion-controlled{}: achieved {:.0}/s",
            r.requested_pps
                .map_or(String::new(), |c| format!(" (ceiling {c:.0}/s)")),
            r.achieved_pps
        ),
        (Some(want), Some(acc)) => format!(
            "paced at {want:.0}/s: achieved {:.0}/s ({acc:.2} %)",
            r.achieved_pps
        ),
        _ => format!("unpaced flood: {:.0}/s", r.achieved_pps),
    };
    println!(
        "UDP -> {}: {} B datagrams, {} socket(s), {:.2} s",
        r.target, r.size, r.threads, r.duration_s
    );
    println!("  rate         {pacing}, {:.1} Mbit/s", r.achieved_mbps);
    println!(
        "  send path    {}, {} I/O without io_uring (largest burst {} datagrams; gap between releases p50 {:.1} us, p99 {:.1} us, max {:.1} us)",
        r.send_path, r.io, r.largest_burst, r.release_gap_us.p50, r.release_gap_us.p99, r.release_gap_us.max
    );
    match r.received {
        Some(received) => println!(
            "  datagrams    sent {}  received {}  lost {} ({:.3} %)  duplicated {}  reordered {}",
            r.sent, received, r.lost, r.loss_pct, r.duplicated, r.reordered
        ),
        None => println!(
            "  datagrams    sent {} (no replies expected)  lost {} ({:.3} %)",
            r.sent, r.lost, r.loss_pct
        ),
    }
    let l = &r.loss;
    let by_server = l
        .by_server
        .map_or("? (give --server-metrics)".to_string(), |n| n.to_string());
    println!(
        "  lost where   not sent {}  | refused after ICMP {}  | no listener {}  | target's receive queue {}  | by the server {by_server}  | our receive queue {}  | elsewhere {}",
        l.not_sent, l.refused, l.no_listener, l.at_target_queue, l.at_our_queue, l.elsewhere
    );
    if r.received.is_some() {
        let s = &r.loss_shape;
        println!(
            "  loss shape   {} of {} trains lost whole ({} datagrams), {} datagrams lost singly: {:.1} datagrams per kernel drop; drain {:.0} ms ({} replies)",
            s.whole_trains_lost,
            s.trains,
            s.datagrams_in_whole_trains,
            s.datagrams_lost_singly,
            r.datagrams_per_drop,
            r.drain_ms,
            r.drained
        );
    }
    println!(
        "  kernel       Udp RcvbufErrors +{}  SndbufErrors +{}  InErrors +{}  NoPorts +{}  ICMP errors {}",
        r.rcvbuf_errors_delta, r.sndbuf_errors_delta, r.in_errors_delta, r.no_ports_delta, r.icmp_errors
    );
    if let Some(cc) = &r.cc {
        println!(
            "  congestion   AIMD: {} loss events (each a halving), {:.0} datagrams/s at the end, smoothed round trip {:.0} us",
            cc.loss_events, cc.final_pps, cc.srtt_us
        );
    }
    match r.received {
        Some(0) => println!("  round trip   no reply came back"),
        Some(_) => println!("  round trip   {}", r.rtt_us.row()),
        None => {}
    }
}

/// The result of a bot run, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct BotReport {
    /// Always "bot".
    pub mode: &'static str,
    /// "tcp" or "udp".
    pub transport: &'static str,
    /// The bot's address.
    pub target: String,
    /// `--tag`: the run's name.
    pub tag: Option<String>,
    /// Conversations at once.
    pub concurrent: usize,
    /// Seconds of the run.
    pub duration_s: f64,
    /// Conversations completed, every reply verified.
    pub conversations: u64,
    /// Conversations completed per second.
    pub conversations_per_sec: f64,
    /// Messages answered.
    pub turns: u64,
    /// How the conversations ended.
    pub outcomes: crate::bot::Outcomes,
    /// Errors by kind (a reply from the wrong node is a mismatch).
    pub errors: crate::bot::ConversationErrors,
    /// Per-turn latency in microseconds.
    pub turn_latency_us: Percentiles,
}

impl TcpReport {
    /// The report of a finished TCP (or HTTP) run.
    pub fn new(
        mode: &'static str,
        protocol: &'static str,
        target: String,
        plan: &TcpPlan,
        outcome: TcpOutcome,
    ) -> Self {
        let seconds = outcome.elapsed.as_secs_f64();
        let fates = outcome.fates;
        let (size_min, size_max) = match plan.workload {
            Workload::Stream(_) | Workload::Dialect(_) => (plan.size.lo, plan.size.hi),
            Workload::Http { .. } => (0, 0),
        };
        Self {
            mode,
            target,
            protocol,
            workload: match &plan.workload {
                Workload::Dialect(d) => Some(d.describe()),
                _ => None,
            },
            io: plan.io.name(),
            tag: None,
            started_at: crate::start::unix_seconds(outcome.started),
            start_lateness_ms: outcome.start_lateness.map(|d| d.as_secs_f64() * 1e3),
            connections: plan.connections,
            threads: plan.threads,
            pipeline: plan.pipeline,
            pipeline_batch: plan.batch,
            size_min,
            size_max,
            requested_rate: plan
                .rate
                .as_ref()
                .map(|r| r.mean_over((plan.warmup + plan.duration).as_secs_f64())),
            rate_profile: plan
                .rate
                .as_ref()
                .filter(|r| !r.is_constant())
                .map(|r| r.describe().to_string()),
            per_second: per_second(plan, &outcome),
            sent_after_end: plan.rate.as_ref().filter(|r| !r.is_constant()).map(|_| {
                let whole = (plan.warmup + plan.duration).as_secs() as usize;
                outcome.sent_per_second.iter().skip(whole).sum()
            }),
            timeout_s: plan.timeout.as_secs_f64(),
            duration_s: seconds,
            requests: fates.completed,
            requests_per_sec: fates.completed as f64 / seconds,
            scheduled: fates.scheduled,
            completed: fates.completed,
            timeouts: fates.timeouts,
            unsent: fates.unsent,
            unsent_pct: if fates.scheduled == 0 {
                0.0
            } else {
                fates.unsent as f64 * 100.0 / fates.scheduled as f64
            },
            bytes_sent: outcome.bytes_sent,
            bytes_received: outcome.bytes_received,
            mb_per_sec: (outcome.bytes_sent + outcome.bytes_received) as f64 / seconds / 1e6,
            errors: outcome.errors,
            connects: outcome.connects,
            latency_us: Percentiles::of(&outcome.latency),
            service_us: Percentiles::of(&outcome.service),
            own_lateness_us: Percentiles::of(&outcome.lateness),
            warmup_s: plan.warmup.as_secs_f64(),
            warmup_samples: outcome.warmup_samples,
            backlog_us: Percentiles::of(&outcome.backlog),
            latency: outcome.latency,
            service: outcome.service,
            service_series: outcome.service_series,
            series: outcome.series,
            started: outcome.started,
        }
    }
}

/// One second of a run whose rate changes.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds from the start.
    pub second: u64,
    /// Requests the profile has fall due in this second.
    pub profile: f64,
    /// Requests put on the wire in it.
    pub sent: u64,
    /// `sent` off `profile`, percent.
    pub off_pct: f64,
    /// Requests answered (or timed out) in it.
    pub answered: u64,
    /// Their latency's median and 99th percentile, microseconds.
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
}

/// The whole seconds of a run with a changing rate.
fn per_second(plan: &TcpPlan, outcome: &TcpOutcome) -> Option<Vec<Second>> {
    let profile = plan.rate.as_ref().filter(|r| !r.is_constant())?;
    let series = outcome.per_second.as_ref();
    let whole = (plan.warmup + plan.duration).as_secs();
    let latency: Vec<Option<&Histogram<u64>>> = match series {
        Some(s) => s.intervals().map(|(_, h)| Some(h)).collect(),
        None => Vec::new(),
    };
    Some(
        (0..whole)
            .map(|second| {
                let t = second as f64;
                let expected = profile.due_within(t + 1.0) - profile.due_within(t);
                let sent = outcome
                    .sent_per_second
                    .get(second as usize)
                    .copied()
                    .unwrap_or(0);
                let h = latency.get(second as usize).copied().flatten();
                let p = h.map(Percentiles::of).unwrap_or_default();
                Second {
                    second,
                    profile: expected,
                    sent,
                    off_pct: if expected > 0.0 {
                        (sent as f64 - expected) / expected * 100.0
                    } else {
                        0.0
                    },
                    answered: p.count,
                    p50_us: p.p50,
                    p99_us: p.p99,
                }
            })
            .collect(),
    )
}

/// Prints a TCP run's report for a person.
pub fn print_tcp(r: &TcpReport) {
    let mode = match (r.requested_rate, &r.rate_profile) {
        (Some(rate), None) => format!("open loop at {rate:.0} req/s"),
        (Some(rate), Some(_)) => format!("open loop, {rate:.0} req/s on average"),
        (None, _) => "closed loop".to_string(),
    };
    if r.protocol == "http" {
        println!(
            "HTTP {}: {} keep-alive connections x pipeline {}, {} thread(s) on {}, {mode}",
            r.target, r.connections, r.pipeline, r.threads, r.io
        );
    } else {
        println!(
            "TCP {} -> {}: {} connections x pipeline {}{}, {} thread(s) on {}, {}-{} B payloads, {mode}",
            r.protocol,
            r.target,
            r.connections,
            r.pipeline,
            if r.pipeline_batch { " (in batches)" } else { "" },
            r.threads,
            r.io,
            r.size_min,
            r.size_max
        );
    }
    if let Some(workload) = &r.workload {
        println!("  workload     {workload}");
    }
    if let (Some(profile), Some(seconds)) = (&r.rate_profile, &r.per_second) {
        println!("  profile      {profile}; each second, sent against the profile:");
        for s in seconds {
            println!(
                "    {:>4} s  profile {:>9.0}  sent {:>9} ({:+6.2} %)  p50 {:>9.1}  p99 {:>9.1} us",
                s.second, s.profile, s.sent, s.off_pct, s.p50_us, s.p99_us
            );
        }
        if let Some(late) = r.sent_after_end.filter(|&n| n > 0) {
            println!(
                "    and {late} due before the end but sent after it (a late thread's backlog)"
            );
        }
    }
    println!(
        "  requests     {} in {:.2} s = {:.0} req/s (wall time, first send to last reply)",
        r.requests, r.duration_s, r.requests_per_sec
    );
    println!(
        "  scheduled    {} = completed {} + timeouts {} + errors {} + unsent {}",
        r.scheduled,
        r.completed,
        r.timeouts,
        r.errors.total(),
        r.unsent
    );
    if let Some(line) = shortfall(r) {
        println!("  !            {line}");
    }
    println!(
        "  throughput   {:.2} MB/s (sent {} B, received and verified {} B)",
        r.mb_per_sec, r.bytes_sent, r.bytes_received
    );
    let e = &r.errors;
    println!(
        "  errors       {} requests (reset {}, closed {}, mismatch {}, status {}, aborted {})",
        e.total(),
        e.reset,
        e.closed,
        e.mismatch,
        e.status,
        e.aborted
    );
    let c = &r.connects;
    println!(
        "  connections  opened {} (reconnects {}); connects refused {}, timed out {}, failed {}",
        c.opened, c.reconnects, c.refused, c.timed_out, c.failed
    );
    println!("  latency      {}", r.latency_us.row());
    println!(
        "  service      {} ({})",
        r.service_us.row(),
        if r.requested_rate.is_some() {
            "from each send, not the due time: read latency for what users waited, this for what the server took"
        } else {
            "closed loop: each request is sent when due, so this is the latency"
        }
    );
    if r.own_lateness_us.count > 0 {
        println!(
            "  own delay    {} (how late loadgen itself got to due events)",
            r.own_lateness_us.row()
        );
    }
    if r.warmup_s > 0.0 {
        println!(
            "  warm-up      the first {:.2} s: {} samples left out of the latency (counted in every total)",
            r.warmup_s, r.warmup_samples
        );
    }
    if r.unsent > 0 {
        println!("  backlog      {}", r.backlog_us.row());
    }
}

/// The line that says an open-loop run did not reach its target rate.
pub fn shortfall(r: &TcpReport) -> Option<String> {
    let asked = r.requested_rate?;
    if r.unsent == 0 && r.requests_per_sec >= asked * 0.99 {
        return None;
    }
    Some(format!(
        "asked {asked:.0}/s, the server answered {:.0}/s: {:.0} % of scheduled requests were never sent",
        r.requests_per_sec, r.unsent_pct
    ))
}
