//! loadgen against tools nobody here wrote, on servers nobody here wrote:
//! closed-loop ops/s of `loadgen --protocol resp` beside `redis-benchmark`
//! on Debian's `redis-server`, and of `loadgen --protocol memcache` beside
//! `memcaslap` on Debian's `memcached`, same connections and pipeline depth
//! (and the same pipelining: loadgen's `--batch` sends a pipeline's next
//! batch once all of it is answered, as redis-benchmark's `-P` does), the
//! tools alternating within every round. Both tools measure the same
//! server, so their ratio says whether loadgen's figure can be trusted
//! (and, were it lower, that loadgen itself was the bottleneck). loadgen
//! runs twice in every round, on each of its I/O paths: io_uring sends
//! every connection's next requests in one submission, epoll sends each
//! connection's as its replies are read, as the other two tools do.
//! Every run is also checked against the server's own count of commands
//! (redis `INFO stats`, memcached `stats`, read every 20 ms while the
//! load is on): each tool's ops/s over the rate the server counted says
//! whether that tool's figure is honest, whatever the two tools' ratio.
//!
//! Each server runs on CPU 0 with one thread (redis-server `io-threads 1`,
//! no persistence; memcached `-t 1`), each client on CPU 1 with one thread.
//! Redis cells: `-t set` and `-t get`, 50 connections, `-P 1` and `-P 16`
//! (and `get` on one connection, where neither tool is short of CPU),
//! 100k random keys (`-r 100000`), 3-byte values (redis-benchmark's
//! default). memcached cell: 50 connections, no pipelining (memcaslap
//! keeps one request in flight per connection), get:set 9:1, 100-byte
//! values, over keys set beforehand (memcaslap gets only keys it has set;
//! loadgen's key space is filled first so both read hits).
//!
//! `cargo bench --bench loadgen_crosscheck` (3 rounds) or `-- --quick` (1
//! round, shorter runs); `-- --rounds N` for more. Needs `apt-get install
//! redis-server redis-tools memcached libmemcached-tools`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use support::{free_port, summary, wait_until_listening};

/// A server process, killed when dropped.
struct Running {
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `args` under `taskset -c 0` with its port where `{port}` stands.
fn start_on_cpu0(args: &[&str]) -> Running {
    let port = free_port();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .args(&args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} ({e})", args[0]));
    wait_until_listening(port);
    Running { child, port }
}

/// CPU seconds (user + system) of every child waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Runs `program args` on CPU 1; its stdout.
fn client(program: &str, args: &[String]) -> String {
    let out = Command::new("taskset")
        .args(["-c", "1", program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} ({e})"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// loadgen's requests per second from its JSON, checking it made no error;
/// `io` is its I/O path (`uring` or `epoll`).
fn loadgen(loadgen: &Path, io: &str, args: &[String]) -> f64 {
    let mut all: Vec<String> = args.to_vec();
    all.extend(["--json", "--quiet", "--threads", "1", "--io", io].map(String::from));
    let json: serde_json::Value =
        serde_json::from_str(&client(loadgen.to_str().expect("path"), &all))
            .expect("loadgen's JSON");
    let errors = json["errors"].as_object().expect("errors");
    assert!(
        errors.values().all(|v| v.as_u64() == Some(0)),
        "loadgen {args:?} met errors: {errors:?}"
    );
    json["requests_per_sec"].as_f64().expect("requests_per_sec")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// One cell: a name, and the two tools' runs (loadgen's, given its I/O
/// path, first).
struct Cell {
    name: String,
    loadgen: Box<dyn Fn(&str) -> f64>,
    other: Box<dyn Fn() -> f64>,
    other_name: &'static str,
    /// The server, whose own count of commands each run is checked
    /// against.
    server: Server,
}

/// A server under test, and how to read its count of commands run.
#[derive(Clone, Copy)]
enum Server {
    /// redis-server on this port (`INFO stats`: total_commands_processed).
    Redis(u16),
    /// memcached on this port (`stats`: cmd_get + cmd_set).
    Memcached(u16),
}

impl Server {
    /// The server's count of commands run so far, asked on `stream`.
    fn count(self, stream: &mut TcpStream) -> u64 {
        let (command, end, names): (&[u8], _, &[&str]) = match self {
            // The field after the count ends the read, so its line is whole.
            Server::Redis(_) => (
                b"INFO stats\r\n",
                "instantaneous_ops_per_sec:",
                &["total_commands_processed"],
            ),
            Server::Memcached(_) => (b"stats\r\n", "END\r\n", &["cmd_get", "cmd_set"]),
        };
        stream.write_all(command).expect("send a stats command");
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&reply).contains(end) {
            let n = stream.read(&mut chunk).expect("read a stats reply");
            assert!(n > 0, "the server closed before its stats ended");
            reply.extend_from_slice(&chunk[..n]);
        }
        // `name:value` (Redis) or `STAT name value` (memcached) lines.
        String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|line| {
                let (name, value) = line.trim_start_matches("STAT ").split_once([':', ' '])?;
                names
                    .contains(&name)
                    .then(|| value.trim().parse::<u64>().ok())?
            })
            .sum()
    }

    /// Runs `run` while counting the server's commands every 20 ms; its
    /// result, and the rate the server counted while the run's load was
    /// on (from the first sample after its count began to move to the
    /// last before it stopped, so that starting and exiting the tool
    /// count for nothing).
    fn counted_while<T>(self, run: impl FnOnce() -> T) -> (T, f64) {
        let port = match self {
            Server::Redis(port) | Server::Memcached(port) => port,
        };
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("stats on port {port}: {e}"));
        // A server that stops answering fails the bench, not hangs it.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("a read timeout");
        let done = std::sync::atomic::AtomicBool::new(false);
        let (result, samples) = std::thread::scope(|scope| {
            let poller = scope.spawn(|| {
                let mut samples = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    samples.push((Instant::now(), self.count(&mut stream)));
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                samples.push((Instant::now(), self.count(&mut stream)));
                samples
            });
            let result = run();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (result, poller.join().expect("the stats poller"))
        });
        // Redis counts each poll (an INFO) as a command: a count that
        // moved by more than that is load.
        let moved = |w: &[(Instant, u64)]| w[1].1 > w[0].1 + 1;
        let first = samples.windows(2).position(moved).map(|i| i + 1);
        let last = samples.windows(2).rposition(moved);
        let rate = match (first, last) {
            (Some(a), Some(b)) if b > a => {
                let (t0, c0) = samples[a];
                let (t1, c1) = samples[b];
                (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
            }
            _ => f64::NAN,
        };
        (result, rate)
    }
}

fn redis_cells(lg: &Path, port: u16, quick: bool) -> Vec<Cell> {
    let mut cells = Vec::new();
    // (connections, pipeline, test): the 50-connection cells of the
    // issue, and one connection without pipelining, where neither tool is
    // short of CPU and each request waits a whole round trip.
    let shapes = [
        (50, 1, "set"),
        (50, 1, "get"),
        (50, 16, "set"),
        (50, 16, "get"),
        (1, 1, "get"),
    ];
    for (connections, pipeline, test) in shapes {
        {
            let n = match (connections, pipeline) {
                (1, _) => 50_000,
                (_, 1) => 200_000,
                _ => 2_000_000,
            } / if quick { 10 } else { 1 };
            let c = connections.to_string();
            let (lg, port_s, p, n_s) = (
                lg.to_path_buf(),
                port.to_string(),
                pipeline.to_string(),
                n.to_string(),
            );
            let lg_args = strings(&[
                "--tcp",
                &format!("127.0.0.1:{port}"),
                "--protocol",
                "resp",
                "--mix",
                test,
                "--keys",
                "100000",
                "--size",
                "3",
                "--connections",
                &c,
                "--pipeline",
                &p,
                // redis-benchmark's -P: the next batch once all of this
                // one is answered.
                "--batch",
                "--requests",
                &n_s,
            ]);
            let rb_args = strings(&[
                "-p", &port_s, "-c", &c, "-P", &p, "-n", &n_s, "-r", "100000", "-d", "3", "-t",
                test, "-q",
            ]);
            let label = test.to_uppercase();
            cells.push(Cell {
                name: format!("redis {test} -c {connections} -P {pipeline}"),
                loadgen: Box::new(move |io| loadgen(&lg, io, &lg_args)),
                other: Box::new(move || {
                    let out = client("redis-benchmark", &rb_args);
                    // The last "SET: 123.45 requests per second" of the
                    // carriage-return progress lines.
                    let line = out
                        .rsplit(['\r', '\n'])
                        .find(|l| {
                            l.trim_start().starts_with(&format!("{label}: "))
                                && l.contains("requests per second")
                        })
                        .unwrap_or_else(|| panic!("no result in {out:?}"));
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .expect("requests per second")
                }),
                other_name: "redis-benchmark",
                server: Server::Redis(port),
            });
        }
    }
    cells
}

fn memcached_cell(lg: &Path, port: u16, quick: bool) -> Cell {
    let seconds = if quick { "2s" } else { "5s" };
    let addr = format!("127.0.0.1:{port}");
    let lg_args = strings(&[
        "--tcp",
        &addr,
        "--protocol",
        "memcache",
        "--mix",
        "get:9,set:1",
        "--keys",
        "10000",
        "--size",
        "100",
        "--connections",
        "50",
        "--pipeline",
        "1",
        "--duration",
        seconds,
    ]);
    let ms_args = strings(&[
        "-s", &addr, "-T", "1", "-c", "50", "-X", "100", "-t", seconds,
    ]);
    let lg = lg.to_path_buf();
    Cell {
        name: "memcached get:9,set:1 -c 50".into(),
        loadgen: Box::new(move |io| loadgen(&lg, io, &lg_args)),
        other: Box::new(move || {
            let out = client("memcaslap", &ms_args);
            let tps = out
                .split_whitespace()
                .skip_while(|w| *w != "TPS:")
                .nth(1)
                .and_then(|v| v.parse().ok());
            tps.unwrap_or_else(|| panic!("no TPS in {out:?}"))
        }),
        other_name: "memcaslap",
        server: Server::Memcached(port),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds: usize = support::arg("--rounds", if quick { 1 } else { 3 });
    let lg = support::loadgen_binary();
    let redis = start_on_cpu0(&[
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        "{port}",
        "--save",
        "",
        "--appendonly",
        "no",
        "--io-threads",
        "1",
        "--logfile",
        "",
        "--loglevel",
        "warning",
    ]);
    let memcached = start_on_cpu0(&[
        "memcached",
        "-t",
        "1",
        "-l",
        "127.0.0.1",
        "-p",
        "{port}",
        "-U",
        "0",
        "-m",
        "1024",
        "-u",
        "root",
    ]);
    // Every key of loadgen's memcached key space set first (20 sets a key
    // on average: the chance one is missed is e^-20).
    loadgen(
        &lg,
        "auto",
        &strings(&[
            "--tcp",
            &format!("127.0.0.1:{}", memcached.port),
            "--protocol",
            "memcache",
            "--mix",
            "set",
            "--keys",
            "10000",
            "--size",
            "100",
            "--requests",
            "200000",
            "--pipeline",
            "16",
        ]),
    );
    let mut cells = redis_cells(&lg, redis.port, quick);
    cells.push(memcached_cell(&lg, memcached.port, quick));
    println!("loadgen (io_uring and epoll) against redis-benchmark and memcaslap, ops/s, {rounds} round(s), tools alternating");
    // Per cell, loadgen's ops/s over the other tool's: on io_uring (every
    // connection's sends in one submission) and on epoll (each
    // connection's send as its reply is read, as redis-benchmark and
    // memcaslap do).
    let mut ratios = vec![[Vec::new(), Vec::new()]; cells.len()];
    // Per cell and tool (loadgen on io_uring, on epoll, the other tool):
    // the tool's ops/s over the rate the server itself counted across the
    // tool's run. Near 1 for every tool, their figures are each honest,
    // and where two differ, the two clients drove the server at
    // different rates.
    let mut honesty = vec![[Vec::new(), Vec::new(), Vec::new()]; cells.len()];
    // A tool's run: ops/s, how busy it kept its CPU (CPU time over wall
    // time; a tool near 100 % is measuring itself, not the server), and
    // the server's own count of commands per second of the run.
    let timed = |run: &dyn Fn() -> f64, server: Server| {
        let (cpu, wall) = (children_cpu(), Instant::now());
        let (ops, counted) = server.counted_while(run);
        (
            ops,
            (children_cpu() - cpu) / wall.elapsed().as_secs_f64(),
            counted,
        )
    };
    const PATHS: [&str; 2] = ["uring", "epoll"];
    for round in 0..rounds {
        for (i, cell) in cells.iter().enumerate() {
            // The three runs in turn, each first in one round of three.
            let mut results = [(0.0, 0.0, 0.0); 3];
            for k in 0..3 {
                let which = (k + round + i) % 3;
                results[which] = match PATHS.get(which) {
                    Some(io) => timed(&|| (cell.loadgen)(io), cell.server),
                    None => timed(&*cell.other, cell.server),
                };
            }
            for (tool, (ops, _, counted)) in results.iter().enumerate() {
                honesty[i][tool].push(ops / counted);
            }
            let (theirs, their_busy, their_count) = results[2];
            for (p, io) in PATHS.iter().enumerate() {
                let (ours, our_busy, our_count) = results[p];
                ratios[i][p].push(ours / theirs);
                println!(
                    "  round {round}  {:<28} loadgen {io:<5} {:>9.0} (CPU {:>3.0} %, {:.3} of the server's count)  {:<15} {:>9.0} (CPU {:>3.0} %, {:.3})  ratio {:.3}",
                    cell.name,
                    ours,
                    our_busy * 100.0,
                    ours / our_count,
                    cell.other_name,
                    theirs,
                    their_busy * 100.0,
                    theirs / their_count,
                    ours / theirs
                );
            }
        }
    }
    println!("summary: loadgen / the other tool (median, range over rounds)");
    for (cell, r) in cells.iter().zip(&ratios) {
        let (um, ulo, uhi) = summary(&r[0]);
        let (em, elo, ehi) = summary(&r[1]);
        println!(
            "  {:<28} io_uring {um:.3} ({ulo:.3}-{uhi:.3})  epoll {em:.3} ({elo:.3}-{ehi:.3})  vs {}",
            cell.name, cell.other_name
        );
    }
    println!(
        "each tool's ops/s over the rate the server counted in its run (median, range over rounds)"
    );
    for (cell, h) in cells.iter().zip(&honesty) {
        let [u, e, o] = [&h[0], &h[1], &h[2]].map(|v| summary(v));
        println!(
            "  {:<28} loadgen io_uring {:.3} ({:.3}-{:.3})  epoll {:.3} ({:.3}-{:.3})  {} {:.3} ({:.3}-{:.3})",
            cell.name, u.0, u.1, u.2, e.0, e.1, e.2, cell.other_name, o.0, o.1, o.2
        );
    }
}
