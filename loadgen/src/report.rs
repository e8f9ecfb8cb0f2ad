//! Runs what the command line asks for and prints the result: a table for
//! people, or one JSON object (`--json`) for scripts.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{parse_cpus, Cli, ClientTransport, Command, Rate, TcpProtocol};
use crate::kernel::{socket_drops, ServerUdp, UdpSnmp};
use crate::lab::{self, LabPlan};
use crate::latency::Percentiles;
use crate::progress::Live;
use crate::tcp::{self, TcpErrors, TcpOutcome, TcpPlan, Workload};
use crate::udp::{self, UdpOutcome, UdpPlan};

/// Where the datagrams that did not come back died.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct LossSplit {
    /// Refused by loadgen's own send path (ENOBUFS/EAGAIN): never left.
    pub not_sent: u64,
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
    /// Sends refused after ICMP port unreachable.
    pub icmp_unreachable: u64,
    /// Where the lost datagrams died.
    pub loss: LossSplit,
    /// /proc/net/snmp Udp: RcvbufErrors during the run (whole namespace).
    pub rcvbuf_errors_delta: u64,
    /// /proc/net/snmp Udp: SndbufErrors during the run.
    pub sndbuf_errors_delta: u64,
    /// /proc/net/snmp Udp: InErrors during the run.
    pub in_errors_delta: u64,
    /// The server's own counts during the run, with --server-metrics.
    pub server: Option<ServerUdp>,
    /// Round trip from each datagram's due time, microseconds.
    pub rtt_us: Percentiles,
    /// The round-trip histogram itself (nanoseconds), for --hdr-log.
    #[serde(skip)]
    pub rtt: Histogram<u64>,
}

/// The result of a TCP run, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct TcpReport {
    /// "tcp", or "http" for an HTTP load run.
    pub mode: &'static str,
    /// The server's address.
    pub target: String,
    /// "echo", "reverse" or "http".
    pub protocol: &'static str,
    /// Connections.
    pub connections: usize,
    /// Load threads.
    pub threads: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Smallest payload.
    pub size_min: usize,
    /// Largest payload.
    pub size_max: usize,
    /// Open-loop target, requests/s (null: closed loop).
    pub requested_rate: Option<f64>,
    /// Seconds from the first request to the end.
    pub duration_s: f64,
    /// Requests answered and verified.
    pub requests: u64,
    /// Requests answered per second.
    pub requests_per_sec: f64,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received (all verified).
    pub bytes_received: u64,
    /// Megabytes (10^6) per second, both directions.
    pub mb_per_sec: f64,
    /// Errors by kind.
    pub errors: TcpErrors,
    /// Latency percentiles in microseconds.
    pub latency_us: Percentiles,
    /// The latency histogram itself (nanoseconds), for --hdr-log.
    #[serde(skip)]
    pub latency: Histogram<u64>,
}

/// Runs the mode the command line selects and prints its report.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    if let Some(Command::Client {
        transport,
        addr,
        script,
        reply_timeout,
    }) = &cli.command
    {
        return match transport {
            ClientTransport::Tcp => crate::client::tcp(*addr, script.as_deref(), *reply_timeout),
            ClientTransport::Udp => crate::client::udp(*addr, script.as_deref(), *reply_timeout),
        };
    }
    if let Some(Command::Report { files }) = &cli.command {
        let merged = crate::merge::merge(files)?;
        if cli.json {
            println!("{}", serde_json::to_string(&merged)?);
        } else {
            crate::merge::print(&merged);
        }
        return Ok(());
    }
    if let Some(Command::Lab {
        link,
        size,
        duration,
        paced,
        sweep,
        plot,
    }) = &cli.command
    {
        let plan = LabPlan {
            link: link.clone(),
            size: usize::try_from(*size)?,
            duration: *duration,
            paced_pps: *paced,
            sweep: sweep.map(|s| s.rates()),
            quiet: cli.quiet,
        };
        let report = lab::run(&plan)?;
        let steps: Vec<&UdpReport> = report.runs.iter().map(|r| &r.udp).collect();
        if cli.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if plan.sweep.is_some() {
            print_sweep(&steps);
        } else {
            lab::print(&report);
        }
        if let Some(path) = plot {
            crate::plot::sweep_svg(&steps, path)?;
            if !cli.json {
                println!("plot: {}", path.display());
            }
        }
        return Ok(());
    }
    let cpus = match &cli.cpus {
        Some(list) => parse_cpus(list).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    if cli.duration.is_zero() {
        bail!("--duration must be above zero");
    }
    if cli.bot {
        return run_bot(cli, cpus);
    }
    if let Some(url) = &cli.http {
        return run_http(cli, url, cpus);
    }
    if let Some(addr) = cli.tcp {
        let connections = cli.connections.unwrap_or(50);
        let plan = tcp_plan(cli, addr, Workload::Stream(cli.protocol), connections, cpus)?;
        let live = Live::default();
        let started = std::time::SystemTime::now();
        let outcome = tcp::run(&plan, &live, cli.quiet)?;
        let protocol = match cli.protocol {
            TcpProtocol::Echo => "echo",
            TcpProtocol::Reverse => "reverse",
        };
        let report = TcpReport::new("tcp", protocol, addr.to_string(), &plan, outcome);
        return emit_tcp(cli, report, started);
    }
    if let Some(addr) = cli.udp {
        if cli.size.lo != cli.size.hi {
            bail!("UDP datagrams are all one size (GSO needs equal segments): give --size a single value");
        }
        let plan = UdpPlan {
            addr,
            rate: match cli.rate {
                Some(Rate::PerSecond(r)) => Some(r),
                Some(Rate::Max) => None,
                None => Some(100_000.0),
            },
            size: cli.size.lo,
            duration: cli.duration,
            threads: cli.threads,
            cpus,
            replies: !cli.no_reply,
            run_id: std::process::id() ^ (crate::pacer::now_ns() as u32),
        };
        if let Some(sweep) = cli.sweep {
            let mut steps = Vec::new();
            for rate in sweep.rates() {
                let step = UdpPlan {
                    rate: Some(rate),
                    ..plan.clone()
                };
                steps.push(run_udp(&step, cli.server_metrics, cli.quiet)?);
            }
            let steps: Vec<&UdpReport> = steps.iter().collect();
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"mode": "udp-sweep", "steps": steps})
                );
            } else {
                print_sweep(&steps);
            }
            if let Some(path) = &cli.plot {
                crate::plot::sweep_svg(&steps, path)?;
                if !cli.json {
                    println!("plot: {}", path.display());
                }
            }
            return Ok(());
        }
        let started = std::time::SystemTime::now();
        let report = run_udp(&plan, cli.server_metrics, cli.quiet)?;
        if let Some(path) = &cli.hdr_log {
            let duration = std::time::Duration::from_secs_f64(report.duration_s);
            crate::hdr_log::write(path, "rtt", &report.rtt, started, duration)?;
        }
        if cli.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_udp(&report);
        }
        return Ok(());
    }
    bail!("choose a mode: --tcp [ADDR] or --udp [ADDR] (see --help)")
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
    let offered = o.counts.sent + o.counts.not_sent + o.counts.icmp_unreachable;
    let achieved_pps = o.counts.sent as f64 / seconds;
    let by_server = server.map(|s| s.datagrams_in.saturating_sub(s.datagrams_out));
    let (received, lost) = if plan.replies {
        (
            Some(o.counts.received),
            offered.saturating_sub(o.counts.received),
        )
    } else {
        // One-way: what is seen lost is what the send path and the target's
        // queue dropped (and, with server metrics, what the server never got).
        let unseen = server.map_or(0, |s| {
            o.counts
                .sent
                .saturating_sub(s.datagrams_in)
                .saturating_sub(target_drops)
        });
        (None, o.counts.not_sent + target_drops + unseen)
    };
    let explained = o.counts.not_sent
        + target_drops
        + by_server.unwrap_or(0)
        + if plan.replies { our_drops } else { 0 };
    let loss = LossSplit {
        not_sent: o.counts.not_sent,
        at_target_queue: target_drops,
        by_server,
        at_our_queue: if plan.replies { our_drops } else { 0 },
        elsewhere: lost.saturating_sub(explained),
    };
    Ok(UdpReport {
        mode: "udp",
        target: plan.addr.to_string(),
        size: plan.size,
        threads: plan.threads,
        requested_pps: plan.rate,
        achieved_pps,
        accuracy_pct: plan.rate.map(|r| achieved_pps / r * 100.0),
        achieved_mbps: achieved_pps * plan.size as f64 * 8.0 / 1e6,
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
        icmp_unreachable: o.counts.icmp_unreachable,
        loss,
        rcvbuf_errors_delta: snmp.rcvbuf_errors,
        sndbuf_errors_delta: snmp.sndbuf_errors,
        in_errors_delta: snmp.in_errors,
        server,
        rtt_us: Percentiles::of(&o.counts.rtt),
        rtt: o.counts.rtt,
    })
}

/// What reached the far end per second: replies received, or (one-way)
/// what was sent and not seen lost.
pub fn delivered_pps(r: &UdpReport) -> f64 {
    let delivered = r.received.unwrap_or_else(|| r.sent.saturating_sub(r.lost));
    delivered as f64 / r.duration_s
}

fn print_sweep(steps: &[&UdpReport]) {
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

fn print_udp(r: &UdpReport) {
    let pacing = match (r.requested_pps, r.accuracy_pct) {
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
        "  send path    {} (largest burst {} datagrams; gap between releases p50 {:.1} us, p99 {:.1} us, max {:.1} us)",
        r.send_path, r.largest_burst, r.release_gap_us.p50, r.release_gap_us.p99, r.release_gap_us.max
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
        "  lost where   not sent {}  | target's receive queue {}  | by the server {by_server}  | our receive queue {}  | elsewhere {}",
        l.not_sent, l.at_target_queue, l.at_our_queue, l.elsewhere
    );
    println!(
        "  kernel       Udp RcvbufErrors +{}  SndbufErrors +{}  InErrors +{}  ICMP unreachable {}",
        r.rcvbuf_errors_delta, r.sndbuf_errors_delta, r.in_errors_delta, r.icmp_unreachable
    );
    if r.received.is_some() {
        println!("  round trip   {}", r.rtt_us.row());
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
    pub errors: TcpErrors,
    /// Per-turn latency in microseconds.
    pub turn_latency_us: Percentiles,
}

fn run_bot(cli: &Cli, cpus: Vec<usize>) -> anyhow::Result<()> {
    let (addr, udp) = match (cli.tcp, cli.udp) {
        (Some(a), _) => (a, false),
        (None, Some(a)) => (a, true),
        (None, None) => bail!("--bot needs the bot's address: --tcp ADDR or --udp ADDR (ringcore serves it on port 5555)"),
    };
    let script = match &cli.bot_script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            protocols::bot::Script::parse(&text)
                .with_context(|| format!("bot script {}", path.display()))?
        }
        None => protocols::bot::Script::default_script(),
    };
    let concurrent = cli.connections.unwrap_or(50);
    if concurrent == 0 {
        bail!("--connections must be at least 1");
    }
    let plan = crate::bot::BotPlan {
        addr,
        udp,
        concurrent,
        duration: cli.duration,
        conversations: cli.requests,
        script: std::sync::Arc::new(script),
        timeout: cli.timeout,
        cpus,
    };
    let o = crate::bot::run(&plan, &Live::default(), cli.quiet)?;
    let seconds = o.elapsed.as_secs_f64();
    let r = BotReport {
        mode: "bot",
        transport: if udp { "udp" } else { "tcp" },
        target: addr.to_string(),
        concurrent: plan.concurrent,
        duration_s: seconds,
        conversations: o.conversations,
        conversations_per_sec: o.conversations as f64 / seconds,
        turns: o.turns,
        outcomes: o.outcomes,
        errors: o.errors,
        turn_latency_us: Percentiles::of(&o.turn_latency),
    };
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "bot over {} -> {}: {} conversations at once, {:.2} s",
            r.transport, r.target, r.concurrent, r.duration_s
        );
        println!(
            "  conversations {} ({:.0}/s), {} turns; resolved {}, ticket {}, quit {}",
            r.conversations,
            r.conversations_per_sec,
            r.turns,
            r.outcomes.resolved,
            r.outcomes.ticket,
            r.outcomes.quit
        );
        let e = &r.errors;
        println!(
            "  errors       {} (refused {}, reset {}, closed {}, timeout {}, mismatch {})",
            e.total(),
            e.refused,
            e.reset,
            e.closed,
            e.timeout,
            e.mismatch
        );
        println!("  per turn     {}", r.turn_latency_us.row());
    }
    if r.conversations == 0 {
        bail!("no conversation completed ({} errors)", r.errors.total());
    }
    Ok(())
}

/// A TCP (or HTTP) load plan from the command line.
fn tcp_plan(
    cli: &Cli,
    addr: std::net::SocketAddr,
    workload: Workload,
    connections: usize,
    cpus: Vec<usize>,
) -> anyhow::Result<TcpPlan> {
    let rate = match cli.rate {
        Some(Rate::PerSecond(r)) => Some(r),
        Some(Rate::Max) => bail!("--rate max is for UDP floods; TCP and HTTP load without --rate already go as fast as replies come"),
        None => None,
    };
    Ok(TcpPlan {
        addr,
        workload,
        connections,
        threads: cli.threads,
        cpus,
        duration: cli.duration,
        requests: cli.requests,
        size: cli.size,
        pipeline: cli.pipeline,
        rate,
        timeout: cli.timeout,
    })
}

fn run_http(cli: &Cli, url: &str, cpus: Vec<usize>) -> anyhow::Result<()> {
    let url = crate::http::Url::parse(url)?;
    let Some(connections) = cli.connections else {
        let report = crate::http::fetch(&url, cli.follow, cli.timeout)?;
        if cli.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            crate::http::print(&report);
        }
        return Ok(());
    };
    let workload = Workload::Http {
        request: url.request(true),
    };
    let plan = tcp_plan(cli, url.resolve()?, workload, connections, cpus)?;
    let started = std::time::SystemTime::now();
    let outcome = tcp::run(&plan, &Live::default(), cli.quiet)?;
    let target = format!("http://{}{}", url.host_header(), url.path);
    emit_tcp(
        cli,
        TcpReport::new("http", "http", target, &plan, outcome),
        started,
    )
}

impl TcpReport {
    /// The report of a finished TCP (or HTTP) run.
    fn new(
        mode: &'static str,
        protocol: &'static str,
        target: String,
        plan: &TcpPlan,
        outcome: TcpOutcome,
    ) -> Self {
        let seconds = outcome.elapsed.as_secs_f64();
        let (size_min, size_max) = match plan.workload {
            Workload::Stream(_) => (plan.size.lo, plan.size.hi),
            Workload::Http { .. } => (0, 0),
        };
        Self {
            mode,
            target,
            protocol,
            connections: plan.connections,
            threads: plan.threads,
            pipeline: plan.pipeline,
            size_min,
            size_max,
            requested_rate: plan.rate,
            duration_s: seconds,
            requests: outcome.requests,
            requests_per_sec: outcome.requests as f64 / seconds,
            bytes_sent: outcome.bytes_sent,
            bytes_received: outcome.bytes_received,
            mb_per_sec: (outcome.bytes_sent + outcome.bytes_received) as f64 / seconds / 1e6,
            errors: outcome.errors,
            latency_us: Percentiles::of(&outcome.latency),
            latency: outcome.latency,
        }
    }
}

/// Writes the histogram log if asked, prints the report, and fails a run
/// that answered nothing.
fn emit_tcp(cli: &Cli, report: TcpReport, started: std::time::SystemTime) -> anyhow::Result<()> {
    if let Some(path) = &cli.hdr_log {
        let elapsed = std::time::Duration::from_secs_f64(report.duration_s);
        crate::hdr_log::write(path, "latency", &report.latency, started, elapsed)?;
    }
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_tcp(&report);
    }
    if report.requests == 0 {
        bail!("no request was answered ({} errors)", report.errors.total());
    }
    Ok(())
}

fn print_tcp(r: &TcpReport) {
    let mode = match r.requested_rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop".to_string(),
    };
    if r.protocol == "http" {
        println!(
            "HTTP GET {}: {} keep-alive connections x pipeline {}, {} thread(s), {mode}",
            r.target, r.connections, r.pipeline, r.threads
        );
    } else {
        println!(
            "TCP {} -> {}: {} connections x pipeline {}, {} thread(s), {}-{} B payloads, {mode}",
            r.protocol, r.target, r.connections, r.pipeline, r.threads, r.size_min, r.size_max
        );
    }
    println!(
        "  requests     {} in {:.2} s = {:.0} req/s",
        r.requests, r.duration_s, r.requests_per_sec
    );
    println!(
        "  throughput   {:.2} MB/s (sent {} B, received and verified {} B)",
        r.mb_per_sec, r.bytes_sent, r.bytes_received
    );
    let e = &r.errors;
    println!(
        "  errors       {} (refused {}, reset {}, closed {}, timeout {}, mismatch {}, status {})",
        e.total(),
        e.refused,
        e.reset,
        e.closed,
        e.timeout,
        e.mismatch,
        e.status
    );
    println!("  latency      {}", r.latency_us.row());
}
