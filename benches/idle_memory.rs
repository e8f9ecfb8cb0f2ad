//! Server memory per idle TCP connection: ringcore vs the chapter's
//! thread-per-connection server, side by side.
//!
//! `cargo bench --bench idle_memory -- --connections 10000`
//!
//! Opens `--connections` connections to each server in turn, waits until the
//! server holds them all, then reads the growth of its resident memory
//! (VmRSS). Kernel socket memory is not in RSS: see /proc/net/sockstat.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{rss_kib, Baseline};

fn open(addr: SocketAddr, n: usize, exchange: bool) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            if exchange {
                s.write_all(b"ping").expect("write");
                let mut back = [0u8; 4];
                s.read_exact(&mut back).expect("read");
            }
            s
        })
        .collect()
}

/// Waits until the RSS stops changing (the server has taken every
/// connection), at most 20 s; returns it.
fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = rss_kib(pid);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = rss_kib(pid);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn main() {
    support::maybe_run_baseline();
    let n: usize = support::arg("--connections", 10_000);
    println!("Server RSS growth per idle TCP connection, {n} connections, server on CPU 0");
    println!("| server | fresh connections (B/conn) | after one 4-byte echo each (B/conn) |");
    println!("|---|---|---|");

    let server = common::Server::start(&["--serve", "tcp:0=echo", "--cpus", "0"]);
    let addr = server.addr("tcp", "echo");
    let mut row = Vec::new();
    for exchange in [false, true] {
        let before = server.rss_kib();
        let conns = open(addr, n, exchange);
        server.wait_counter("connections_open", |open| open == n as u64);
        let grown = server.rss_kib().saturating_sub(before);
        row.push(grown as f64 * 1024.0 / n as f64);
        drop(conns);
        server.wait_counter("connections_open", |open| open == 0);
    }
    println!(
        "| ringcore (io_uring, 1 worker) | {:.0} | {:.0} |",
        row[0], row[1]
    );
    drop(server);

    let mut row = Vec::new();
    for exchange in [false, true] {
        let baseline = Baseline::start(0);
        let before = rss_kib(baseline.pid());
        let conns = open(baseline.addr, n, exchange);
        let grown = settled_rss(baseline.pid()).saturating_sub(before);
        row.push(grown as f64 * 1024.0 / n as f64);
        drop(conns);
    }
    println!(
        "| thread per connection (chapter) | {:.0} | {:.0} |",
        row[0], row[1]
    );
}
