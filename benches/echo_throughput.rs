//! TCP echo requests/s: ringcore vs the chapter's thread-per-connection
//! server, side by side in one run.
//!
//! `cargo bench --bench echo_throughput -- --seconds 5 --rounds 5`
//!
//! Each round runs ringcore (one worker pinned to CPU 0) and the baseline
//! (pinned to CPU 0) in turn, A B A B, with the same closed-loop client,
//! loadgen pinned to CPU 1: `--connections` connections, each sending
//! `--size`-byte messages and waiting for each echo before the next.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use support::{cpu_seconds, json_number, summary, Baseline};

/// Runs loadgen's closed loop (pinned to CPU 1) for `seconds`; the
/// requests answered, and loadgen's p99 in microseconds.
fn closed_loop(
    loadgen: &Path,
    addr: SocketAddr,
    connections: usize,
    size: usize,
    seconds: f64,
) -> (u64, f64) {
    let json = support::loadgen_tcp(loadgen, addr, connections, size, seconds);
    let requests = json_number(&json, "requests").expect("requests");
    (requests as u64, json_number(&json, "p99").expect("p99"))
}

/// Runs `load` (a run of `seconds`); its requests/s, its p99, and the
/// fraction of a CPU `pid` used meanwhile.
fn measure(pid: u32, seconds: f64, load: impl FnOnce() -> (u64, f64)) -> (f64, f64, f64) {
    let cpu = cpu_seconds(pid);
    let start = Instant::now();
    let (requests, p99) = load();
    let busy = (cpu_seconds(pid) - cpu) / start.elapsed().as_secs_f64();
    (requests as f64 / seconds, p99, busy)
}

fn main() {
    support::maybe_run_baseline();
    let seconds: f64 = support::arg("--seconds", 5.0);
    let rounds: usize = support::arg("--rounds", 5);
    let connections: usize = support::arg("--connections", 50);
    let size: usize = support::arg("--size", 64);
    let loadgen = support::loadgen_binary();
    let server = common::Server::start(&["--serve", "tcp:0=echo", "--cpus", "0"]);
    let ringcore = server.addr("tcp", "echo");
    let baseline = Baseline::start(0);

    // Per server and round: requests/s, loadgen's p99, server CPU busy fraction.
    let (mut uring, mut threads) = (Vec::new(), Vec::new());
    let mut enters_per_request = Vec::new();
    for round in 0..rounds {
        let enters = server.counter("io_uring_enter_calls");
        let r = measure(server.pid(), seconds, || {
            closed_loop(&loadgen, ringcore, connections, size, seconds)
        });
        enters_per_request
            .push((server.counter("io_uring_enter_calls") - enters) as f64 / (r.0 * seconds));
        uring.push(r);
        let t = measure(baseline.pid(), seconds, || {
            closed_loop(&loadgen, baseline.addr, connections, size, seconds)
        });
        threads.push(t);
        eprintln!(
            "round {}: ringcore {:.0} req/s, threads {:.0} req/s",
            round + 1,
            r.0,
            t.0
        );
    }
    let column = |rows: &[(f64, f64, f64)], pick: fn(&(f64, f64, f64)) -> f64| {
        summary(&rows.iter().map(pick).collect::<Vec<_>>())
    };
    let (um, ulo, uhi) = column(&uring, |r| r.0);
    let (tm, tlo, thi) = column(&threads, |r| r.0);
    let (up99, tp99) = (column(&uring, |r| r.1).0, column(&threads, |r| r.1).0);
    let (ucpu, tcpu) = (
        column(&uring, |r| r.2).0 * 100.0,
        column(&threads, |r| r.2).0 * 100.0,
    );
    let (em, _, _) = summary(&enters_per_request);
    println!("TCP echo, {connections} connections, {size}-byte messages, {rounds} rounds of {seconds} s, server on CPU 0, loadgen on CPU 1");
    println!("| server | req/s median | min | max | ratio | p99 (us) | server CPU |");
    println!("|---|---|---|---|---|---|---|");
    println!("| ringcore (io_uring, 1 worker) | {um:.0} | {ulo:.0} | {uhi:.0} | 1.00 | {up99:.0} | {ucpu:.0}% |");
    println!("| thread per connection (chapter) | {tm:.0} | {tlo:.0} | {thi:.0} | {:.2} | {tp99:.0} | {tcpu:.0}% |", tm / um);
    println!("ringcore io_uring_enter calls per request: {em:.3}");
}
