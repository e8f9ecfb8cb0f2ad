//! TCP echo requests/s: ringcore vs the chapter's thread-per-connection
//! server, side by side in one run.
//!
//! `cargo bench --bench echo_throughput -- --seconds 5 --rounds 5`
//!
//! Each round runs ringcore (one worker pinned to CPU 0) and the baseline
//! (pinned to CPU 0) in turn, A B A B, with the same closed-loop client
//! pinned to CPU 1: `--connections` threads, each with one connection sending
//! `--size`-byte messages and waiting for each echo before the next.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{cpu_seconds, pin_to, summary, Baseline};

/// Runs the closed loop for `seconds`; the number of round trips completed.
fn closed_loop(addr: SocketAddr, connections: usize, size: usize, seconds: f64) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin_to(1);
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let message = vec![(i % 251) as u8; size];
                let mut back = vec![0u8; size];
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.write_all(&message).expect("write");
                    s.read_exact(&mut back).expect("read");
                    assert!(back == message, "echo mismatch");
                    done += 1;
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().map(|t| t.join().expect("client")).sum()
}

/// Runs `load`; its requests/s and the fraction of a CPU `pid` used meanwhile.
fn measure(pid: u32, load: impl FnOnce() -> u64) -> (f64, f64) {
    let cpu = cpu_seconds(pid);
    let start = Instant::now();
    let requests = load();
    let elapsed = start.elapsed().as_secs_f64();
    (
        requests as f64 / elapsed,
        (cpu_seconds(pid) - cpu) / elapsed,
    )
}

fn main() {
    support::maybe_run_baseline();
    let seconds: f64 = support::arg("--seconds", 5.0);
    let rounds: usize = support::arg("--rounds", 5);
    let connections: usize = support::arg("--connections", 50);
    let size: usize = support::arg("--size", 64);
    // Servers first: they would inherit this thread's CPU mask.
    let server = common::Server::start(&["--serve", "tcp:0=echo", "--cpus", "0"]);
    let ringcore = server.addr("tcp", "echo");
    let baseline = Baseline::start(0);
    pin_to(1);

    // Per server: requests/s, server CPU busy fraction, per round.
    let mut uring = (Vec::new(), Vec::new());
    let mut threads = (Vec::new(), Vec::new());
    let mut enters_per_request = Vec::new();
    for round in 0..rounds {
        let enters = server.counter("io_uring_enter_calls");
        let (rate, busy) = measure(server.pid(), || {
            closed_loop(ringcore, connections, size, seconds)
        });
        uring.0.push(rate);
        uring.1.push(busy);
        let requests = rate * seconds;
        enters_per_request
            .push((server.counter("io_uring_enter_calls") - enters) as f64 / requests);

        let (rate, busy) = measure(baseline.pid(), || {
            closed_loop(baseline.addr, connections, size, seconds)
        });
        threads.0.push(rate);
        threads.1.push(busy);
        eprintln!(
            "round {}: ringcore {:.0} req/s, threads {:.0} req/s",
            round + 1,
            uring.0[round],
            threads.0[round]
        );
    }
    let (um, ulo, uhi) = summary(&uring.0);
    let (tm, tlo, thi) = summary(&threads.0);
    let (em, _, _) = summary(&enters_per_request);
    let (ucpu, tcpu) = (summary(&uring.1).0 * 100.0, summary(&threads.1).0 * 100.0);
    println!("TCP echo, {connections} connections, {size}-byte messages, {rounds} rounds of {seconds} s, server on CPU 0, client on CPU 1");
    println!("| server | req/s median | min | max | ratio | server CPU |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| ringcore (io_uring, 1 worker) | {um:.0} | {ulo:.0} | {uhi:.0} | 1.00 | {ucpu:.0}% |"
    );
    println!(
        "| thread per connection (chapter) | {tm:.0} | {tlo:.0} | {thi:.0} | {:.2} | {tcpu:.0}% |",
        tm / um
    );
    println!("ringcore io_uring_enter calls per request: {em:.3}");
}
