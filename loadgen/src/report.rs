//! Runs what the command line asks for and prints the result: a table for
//! people, or one JSON object (`--json`) for scripts.

use anyhow::bail;
use serde::Serialize;

use crate::cli::{parse_cpus, Cli, Rate, TcpProtocol};
use crate::latency::Percentiles;
use crate::progress::Live;
use crate::tcp::{self, TcpErrors, TcpPlan};

/// The result of a TCP run, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct TcpReport {
    /// Always "tcp".
    pub mode: &'static str,
    /// The server's address.
    pub target: String,
    /// "echo" or "reverse".
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
}

/// Runs the mode the command line selects and prints its report.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let cpus = match &cli.cpus {
        Some(list) => parse_cpus(list).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    if cli.duration.is_zero() {
        bail!("--duration must be above zero");
    }
    if let Some(addr) = cli.tcp {
        let rate = match cli.rate {
            Some(Rate::PerSecond(r)) => Some(r),
            Some(Rate::Max) => bail!("--rate max is for UDP floods; TCP without --rate already runs as fast as replies come"),
            None => None,
        };
        let plan = TcpPlan {
            addr,
            protocol: cli.protocol,
            connections: cli.connections,
            threads: cli.threads,
            cpus,
            duration: cli.duration,
            requests: cli.requests,
            size: cli.size,
            pipeline: cli.pipeline,
            rate,
            timeout: cli.timeout,
        };
        let live = Live::default();
        let outcome = tcp::run(&plan, &live, cli.quiet)?;
        let seconds = outcome.elapsed.as_secs_f64();
        let report = TcpReport {
            mode: "tcp",
            target: addr.to_string(),
            protocol: match cli.protocol {
                TcpProtocol::Echo => "echo",
                TcpProtocol::Reverse => "reverse",
            },
            connections: plan.connections,
            threads: plan.threads,
            pipeline: plan.pipeline,
            size_min: plan.size.lo,
            size_max: plan.size.hi,
            requested_rate: rate,
            duration_s: seconds,
            requests: outcome.requests,
            requests_per_sec: outcome.requests as f64 / seconds,
            bytes_sent: outcome.bytes_sent,
            bytes_received: outcome.bytes_received,
            mb_per_sec: (outcome.bytes_sent + outcome.bytes_received) as f64 / seconds / 1e6,
            errors: outcome.errors,
            latency_us: Percentiles::of(&outcome.latency),
        };
        if cli.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_tcp(&report);
        }
        if report.requests == 0 {
            bail!("no request was answered ({} errors)", report.errors.total());
        }
        return Ok(());
    }
    bail!("choose a mode: --tcp [ADDR] or --udp [ADDR] (see --help)")
}

fn print_tcp(r: &TcpReport) {
    let mode = match r.requested_rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop".to_string(),
    };
    println!(
        "TCP {} -> {}: {} connections x pipeline {}, {} thread(s), {}-{} B payloads, {mode}",
        r.protocol, r.target, r.connections, r.pipeline, r.threads, r.size_min, r.size_max
    );
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
        "  errors       {} (refused {}, reset {}, closed {}, timeout {}, mismatch {})",
        e.total(),
        e.refused,
        e.reset,
        e.closed,
        e.timeout,
        e.mismatch
    );
    println!("  latency      {}", r.latency_us.row());
}
