//! TCP echo clients against the same ringcore: loadgen's closed loop vs a
//! rust_echo_bench-style client (a blocking thread per connection), same
//! connections and message size, alternating A B over several rounds.
//! ringcore on CPU 0, clients on CPU 1.
//!
//! `cargo bench --bench tcp_clients -- --seconds 5 --rounds 3`

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{json_number, pin_to, summary};

/// rust_echo_bench's model: one blocking thread per connection, write then read.
fn thread_per_connection(addr: SocketAddr, connections: usize, size: usize, seconds: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin_to(1);
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                let (message, mut back) = (vec![7u8; size], vec![0u8; size]);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.write_all(&message).expect("write");
                    s.read_exact(&mut back).expect("read");
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let total: u64 = threads.into_iter().map(|t| t.join().expect("client")).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    support::maybe_run_baseline();
    let seconds: f64 = support::arg("--seconds", 5.0);
    let rounds: usize = support::arg("--rounds", 3);
    let connections: usize = support::arg("--connections", 50);
    let size: usize = support::arg("--size", 64);
    let loadgen = support::loadgen_binary();
    let server = common::Server::start(&["--serve", "tcp:0=echo", "--cpus", "0"]);
    let addr = server.addr("tcp", "echo");

    let (mut ours, mut p99s, mut threads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let json = support::loadgen_tcp(&loadgen, addr, connections, size, seconds);
        ours.push(json_number(&json, "requests_per_sec").expect("requests_per_sec"));
        p99s.push(json_number(&json, "p99").expect("p99"));
        threads.push(thread_per_connection(addr, connections, size, seconds));
        eprintln!(
            "round {round}: loadgen {:.0} req/s, thread per connection {:.0} req/s",
            ours[round - 1],
            threads[round - 1]
        );
    }
    let (m, lo, hi) = summary(&ours);
    let (tm, tlo, thi) = summary(&threads);
    println!("TCP echo clients vs ringcore (1 worker, CPU 0), {connections} connections, {size}-byte messages, closed loop, clients on CPU 1, {rounds} rounds of {seconds} s");
    println!("| client | req/s median | min | max | ratio | latency |");
    println!("|---|---|---|---|---|---|");
    println!("| loadgen (io_uring, 1 thread) | {m:.0} | {lo:.0} | {hi:.0} | 1.00 | p99 {:.0} us, full percentiles |", summary(&p99s).0);
    println!("| thread per connection (rust_echo_bench style) | {tm:.0} | {tlo:.0} | {thi:.0} | {:.2} | none |", tm / m);
}
