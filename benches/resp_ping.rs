//! The PING example (`examples/ping.rs`, one worker; as it comes, and with
//! a 20 µs batch wait, its third argument) beside Debian's
//! `redis-server`, all driven by `redis-benchmark`, in one run; with
//! `-- --kv`, the sharded key-value example (`examples/kv.rs`) beside it on
//! `set,get,incr` (`-- --kv2`: both on two cores, the client beside them:
//! kv with two workers, pinned and floating, and with one; redis-server
//! with one thread, as redis.conf advises below four cores); with
//! `-- --hop`, the kv example on two workers with
//! every key on the connection's own worker against every key on the other
//! (`--route local|remote`): what a cross-worker message costs a request.
//!
//! Each server runs on CPU 0 (the example pins its one worker there;
//! redis-server is started under `taskset -c 0`), redis-benchmark on CPU 1,
//! and the servers alternate within every round. redis-server is set up as
//! its users would for a one-core PING test: no persistence (`save ""`,
//! `appendonly no`), `io-threads 1` (one core is all it gets). Per cell
//! (test x pipeline depth) and server: requests per second and p50/p99 as
//! redis-benchmark reports them, and the server's CPU time per request,
//! user and system apart (from /proc/PID/stat around each run).
//!
//! `cargo bench --bench resp_ping` (3 rounds) or `-- --quick` (1 round,
//! a tenth of the requests); `-- --rounds N` for more. Needs
//! `apt-get install redis-server redis-tools`.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use support::{cpu_split, free_port, summary, wait_until_listening};

/// A server process, killed when dropped.
struct Running {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example(name: &str) -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "--example", name])
        .status()
        .expect("cargo build --example");
    assert!(status.success());
    let exe = std::env::current_exe().expect("bench path");
    let release = exe.parent().and_then(|d| d.parent()).expect("target dir");
    release.join("examples").join(name)
}

/// Starts an example on `workers` workers (pinned from CPU 0 up), with
/// `extra` arguments.
fn start_example(path: &PathBuf, name: &'static str, workers: &str, extra: &[&str]) -> Running {
    let port = free_port();
    let child = Command::new(path)
        .args([format!("127.0.0.1:{port}"), workers.into()])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the example");
    wait_until_listening(port);
    Running { name, child, port }
}

/// redis-server on `cpus` (a taskset list) with `io_threads` I/O threads,
/// persistence off: as its users run it for a throughput test on that
/// many cores.
fn start_redis(cpus: &str, io_threads: &str) -> Running {
    let port = free_port();
    let child = Command::new("taskset")
        .args(["-c", cpus, "redis-server", "--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--io-threads",
            io_threads,
        ])
        .args([
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--loglevel",
            "warning",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server (apt-get install redis-server)");
    wait_until_listening(port);
    Running {
        name: "redis-server",
        child,
        port,
    }
}

/// One measurement: requests/s, p50 and p99 in ms, server CPU µs per
/// request (user, system).
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    user_us: f64,
    sys_us: f64,
    /// redis-benchmark's own CPU per request, and how often it slept and
    /// woke per request (voluntary context switches): a client near a
    /// whole core sets the rate, whatever the server could do.
    client_us: f64,
    client_wakeups: f64,
}

/// CPU seconds and voluntary context switches of this process's reaped
/// children so far.
fn children_usage() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid start.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid selector.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(usage.ru_utime) + secs(usage.ru_stime),
        usage.ru_nvcsw as f64,
    )
}

fn run(server: &Running, test: &str, pipeline: u32, requests: u64, cpus: &str) -> Sample {
    let pid = server.child.id();
    let (user0, sys0) = cpu_split(pid);
    let (client0, switches0) = children_usage();
    let out = Command::new("taskset")
        .args(["-c", cpus, "redis-benchmark", "-h", "127.0.0.1", "-p"])
        .arg(server.port.to_string())
        .args(["-t", test, "-c", "50", "-n"])
        .arg(requests.to_string())
        .arg("-P")
        .arg(pipeline.to_string())
        .arg("--csv")
        .output()
        .expect("run redis-benchmark (apt-get install redis-tools)");
    let (user1, sys1) = cpu_split(pid);
    let (client1, switches1) = children_usage();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {}",
        server.name,
        String::from_utf8_lossy(&out.stderr)
    );
    // "test","rps","avg","min","p50","p95","p99","max"
    let row: Vec<f64> = csv
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no result row: {csv}"))
        .split(',')
        .skip(1)
        .map(|v| v.trim_matches('"').parse().expect("a number"))
        .collect();
    let per_request = 1e6 / requests as f64;
    Sample {
        rps: row[0],
        p50: row[3],
        p99: row[5],
        user_us: (user1 - user0) * per_request,
        sys_us: (sys1 - sys0) * per_request,
        client_us: (client1 - client0) * per_request,
        client_wakeups: (switches1 - switches0) / requests as f64,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // cargo bench -- --list: nothing to enumerate
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = support::arg("--rounds", if quick { 1 } else { 3 });
    let scale = if quick { 10 } else { 1 };
    let (servers, tests, client_cpus) = if args.iter().any(|a| a == "--kv") {
        let kv = example("kv");
        let servers = vec![
            start_example(&kv, "kv example", "1", &[]),
            start_example(
                &kv,
                "kv example, batch wait 20 µs",
                "1",
                &["--batch-wait", "20"],
            ),
            start_redis("0", "1"),
        ];
        (servers, &["set", "get", "incr"][..], "1")
    } else if args.iter().any(|a| a == "--kv2") {
        // Two cores, shared with the client. redis-server as its users
        // run it there: one thread (redis.conf advises I/O threads only
        // from four cores up, one core left spare; with two, they spin
        // on the cores the client needs and halve its rate). The kv
        // example as it comes (two pinned workers), with its workers
        // floating (`--no-pin`, for shared cores), and with one worker.
        let kv = example("kv");
        let servers = vec![
            // No batch wait here: a worker that waits for a batch also
            // holds back the other worker's messages (0.78-0.89 of
            // redis-server at -P 1 when tried, docs/performance.md).
            start_example(&kv, "kv example, 2 workers", "2", &[]),
            start_example(&kv, "kv example, 2 workers, --no-pin", "2", &["--no-pin"]),
            start_example(&kv, "kv example, 1 worker, --no-pin", "1", &["--no-pin"]),
            start_redis("0,1", "1"),
        ];
        (servers, &["set", "get", "incr"][..], "0,1")
    } else if args.iter().any(|a| a == "--hop") {
        // Both servers on both CPUs, the client wherever it fits: the two
        // differ only in where the keys live.
        let kv = example("kv");
        let servers = vec![
            start_example(&kv, "kv, every key remote", "2", &["--route", "remote"]),
            start_example(&kv, "kv, every key local", "2", &["--route", "local"]),
        ];
        (servers, &["set", "get"][..], "0,1")
    } else {
        let ping = example("ping");
        let servers = vec![
            start_example(&ping, "ping example", "1", &[]),
            // Each wait holds out 20 µs for a batch: the server sleeps,
            // and the client pays to wake it, less often.
            start_example(&ping, "ping example, batch wait 20 µs", "1", &["20"]),
            start_redis("0", "1"),
        ];
        (servers, &["ping_inline", "ping_mbulk"][..], "1")
    };
    // The last server is the one the others are measured against.
    let reference = servers.len() - 1;
    println!("| test | -P | server | requests/s | p50 ms | p99 ms | server CPU µs/req (user + sys) | client CPU µs/req | client wake-ups/req | ops/s vs {} |", servers[reference].name);
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (pipeline, requests) in [(1u32, 200_000u64), (16, 2_000_000)] {
        for &test in tests {
            let n = servers.len();
            let mut samples: Vec<Vec<Sample>> = (0..n).map(|_| Vec::new()).collect();
            for round in 0..rounds {
                // A B (C), then B (C) A: no server always goes first.
                for i in 0..n {
                    let s = (i + round) % n;
                    samples[s].push(run(
                        &servers[s],
                        test,
                        pipeline,
                        requests / scale,
                        client_cpus,
                    ));
                }
            }
            let redis_rps: Vec<f64> = samples[reference].iter().map(|s| s.rps).collect();
            for (server, samples) in servers.iter().zip(&samples) {
                let of =
                    |f: fn(&Sample) -> f64| summary(&samples.iter().map(f).collect::<Vec<_>>());
                let (rps, lo, hi) = of(|s| s.rps);
                let ratios: Vec<f64> = samples
                    .iter()
                    .zip(&redis_rps)
                    .map(|(s, r)| s.rps / r)
                    .collect();
                let (ratio, rlo, rhi) = summary(&ratios);
                println!(
                    "| {test} | {pipeline} | {} | {rps:.0} ({lo:.0}-{hi:.0}) | {:.3} | {:.3} | {:.2} + {:.2} | {:.2} | {:.3} | {ratio:.2} ({rlo:.2}-{rhi:.2}) |",
                    server.name,
                    of(|s| s.p50).0,
                    of(|s| s.p99).0,
                    of(|s| s.user_us).0,
                    of(|s| s.sys_us).0,
                    of(|s| s.client_us).0,
                    of(|s| s.client_wakeups).0,
                );
            }
        }
    }
}
