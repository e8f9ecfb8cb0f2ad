//! What `--request-log` costs loadgen: a 1M-request closed-loop echo run
//! with and without the log, side by side, alternating: loadgen's peak
//! resident memory (the target: under 16 MiB with the log, whatever the
//! run's length, as rows stream to the file) and its requests/s.
//! ringcore on CPU 0, loadgen on CPU 1.
//!
//! `cargo bench --bench request_log` (2 rounds, 1M requests) or
//! `-- --requests N --rounds N`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use support::summary;

/// Runs loadgen as a child and reaps it with wait4, which reports that one
/// child's peak resident memory: peak RSS MiB and requests/s.
fn run(loadgen: &Path, addr: &str, requests: u64, log: Option<&Path>) -> (f64, f64) {
    let requests_arg = requests.to_string();
    let mut args = vec![
        "--tcp",
        addr,
        "--requests",
        &requests_arg,
        "--connections",
        "50",
        "--pipeline",
        "4",
        "--size",
        "64",
        "--cpus",
        "1",
        "--json",
        "--quiet",
    ];
    let log_arg = log.map(|l| l.display().to_string());
    if let Some(log) = &log_arg {
        args.extend(["--request-log", log]);
    }
    // Reaped by wait4 below, which std's wait cannot replace: it does not
    // return the child's resource usage.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(loadgen)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("loadgen's output");
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: wait4 writes only into the two values it is given; the child
    // is ours and reaped once, here.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "loadgen failed"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("loadgen's JSON");
    assert_eq!(json["completed"].as_u64(), Some(requests), "{json}");
    (
        usage.ru_maxrss as f64 / 1024.0,
        json["requests_per_sec"].as_f64().expect("rate"),
    )
}

fn main() {
    let requests: u64 = support::arg("--requests", 1_000_000);
    let rounds: usize = support::arg("--rounds", 2);
    let loadgen = support::loadgen_binary();
    let server = common::Server::start(&["--serve", "tcp:0=echo", "--cpus", "0"]);
    let addr = server.addr("tcp", "echo").to_string();
    let log = std::env::temp_dir().join(format!("ringcore-request-log-{}.csv", std::process::id()));
    let (mut with_rate, mut without_rate) = (Vec::new(), Vec::new());
    let (mut peaks, mut plain_peaks) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (peak, rate) = run(&loadgen, &addr, requests, Some(&log));
        let rows = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let (plain_peak, plain) = run(&loadgen, &addr, requests, None);
        println!(
            "round {round}: with the log peak RSS {peak:.1} MiB, {rate:.0} req/s ({:.0} MiB of rows); without {plain_peak:.1} MiB, {plain:.0} req/s",
            rows as f64 / 1048576.0
        );
        peaks.push(peak);
        plain_peaks.push(plain_peak);
        with_rate.push(rate);
        without_rate.push(plain);
    }
    let ratios: Vec<f64> = with_rate
        .iter()
        .zip(&without_rate)
        .map(|(a, b)| a / b)
        .collect();
    let (median, lo, hi) = summary(&ratios);
    let max_peak = peaks.iter().cloned().fold(0.0, f64::max);
    let max_plain = plain_peaks.iter().cloned().fold(0.0, f64::max);
    println!(
        "{requests} requests: peak RSS with --request-log at most {max_peak:.1} MiB (target 16; {max_plain:.1} without); req/s with the log / without: {median:.3} ({lo:.3}-{hi:.3})"
    );
    let _ = std::fs::remove_file(&log);
}
