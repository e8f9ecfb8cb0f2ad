//! HTTP side by side, in one run, alternating over rounds; servers on CPU 0,
//! clients on CPU 1 (needs `apt-get install nginx wrk curl`):
//! - loadgen's load mode vs wrk against the same nginx (1 KiB file, 50
//!   keep-alive connections, one client thread), and against ringcore's
//!   http service, which is not the bottleneck, to show the clients' own
//!   capacity;
//! - ringcore's http service vs nginx under the same wrk command (1 KiB, 50
//!   connections);
//! - ringcore's http service vs nginx (a file, sendfile on) under the same
//!   wrk command for 1 MiB bodies (10 connections);
//! - a single fetch of a 100 MiB file: loadgen vs `curl -o /dev/null`.
//!
//! `cargo bench --bench http_compare -- --seconds 5 --rounds 3`

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../loadgen/tests/nginx/mod.rs"]
mod nginx;
mod support;

use std::path::Path;
use std::process::Command;

use support::{json_number, summary};

fn wrk(url: &str, connections: usize, seconds: f64) -> f64 {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "wrk",
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            url,
        ])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk printed no rate: {text}"))
}

fn loadgen_load(loadgen: &Path, url: &str, connections: usize, seconds: f64) -> f64 {
    let out = Command::new(loadgen)
        .args([
            "--http",
            url,
            "--connections",
            &connections.to_string(),
            "--duration",
            &seconds.to_string(),
        ])
        .args(["--cpus", "1", "--json", "--quiet"])
        .output()
        .expect("run loadgen");
    let json = String::from_utf8_lossy(&out.stdout);
    assert_eq!(json_number(&json, "mismatch"), Some(0.0), "{json}");
    json_number(&json, "requests_per_sec")
        .unwrap_or_else(|| panic!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr)))
}

fn loadgen_fetch(loadgen: &Path, url: &str) -> f64 {
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(loadgen)
        .args(["--http", url, "--json"])
        .output()
        .expect("run loadgen");
    let json = String::from_utf8_lossy(&out.stdout);
    // Throughput over the whole fetch, as curl counts it.
    json_number(&json, "body_bytes").expect("body_bytes")
        / (json_number(&json, "total_ms").expect("total_ms") / 1000.0)
        / 1e6
}

fn curl_fetch(url: &str) -> f64 {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download}",
            url,
        ])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .expect("curl's speed")
        / 1e6
}

fn row(name: &str, values: &[f64], base: f64, unit: &str) {
    let (m, lo, hi) = summary(values);
    println!(
        "| {name} | {m:.0} {unit} | {lo:.0} | {hi:.0} | {:.2} |",
        m / base
    );
}

fn main() {
    support::maybe_run_baseline();
    let seconds: f64 = support::arg("--seconds", 5.0);
    let rounds: usize = support::arg("--rounds", 3);
    for tool in ["wrk", "curl", "taskset"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} is not installed: apt-get install nginx wrk curl");
            return;
        }
    }
    let loadgen = support::loadgen_binary();
    let Some(nginx) = nginx::Nginx::start(Some(0)) else {
        eprintln!("nginx is not installed: apt-get install nginx");
        return;
    };
    let ringcore = common::Server::start(&["--serve", "tcp:0=http", "--cpus", "0"]);
    let small_nginx = nginx.url("1k.bin");
    let small_ringcore = format!("http://{}/bytes/1024", ringcore.addr("tcp", "http"));
    let big = nginx.url("100m.bin");
    let mib_nginx = nginx.url("1m.bin");
    let mib_ringcore = format!("http://{}/bytes/1048576", ringcore.addr("tcp", "http"));

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut ours_rc, mut theirs_rc) = (Vec::new(), Vec::new());
    let (mut engine, mut nginx_rates) = (Vec::new(), Vec::new());
    let (mut fetch_ours, mut fetch_curl) = (Vec::new(), Vec::new());
    let (mut mib_engine, mut mib_nginx_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        mib_engine.push(wrk(&mib_ringcore, 10, seconds));
        mib_nginx_rates.push(wrk(&mib_nginx, 10, seconds));
        ours.push(loadgen_load(&loadgen, &small_nginx, 50, seconds));
        theirs.push(wrk(&small_nginx, 50, seconds));
        engine.push(wrk(&small_ringcore, 50, seconds));
        ours_rc.push(loadgen_load(&loadgen, &small_ringcore, 50, seconds));
        theirs_rc.push(engine[round - 1]);
        nginx_rates.push(wrk(&small_nginx, 50, seconds));
        fetch_ours.push(loadgen_fetch(&loadgen, &big));
        fetch_curl.push(curl_fetch(&big));
        eprintln!(
            "round {round}: loadgen {:.0} vs wrk {:.0} req/s on nginx; ringcore {:.0} vs nginx {:.0} req/s under wrk; 1 MiB: ringcore {:.0} vs nginx {:.0} req/s; 100 MiB: loadgen {:.0} vs curl {:.0} MB/s",
            ours[round - 1], theirs[round - 1], engine[round - 1], nginx_rates[round - 1], mib_engine[round - 1], mib_nginx_rates[round - 1], fetch_ours[round - 1], fetch_curl[round - 1]
        );
    }
    println!("HTTP, {rounds} rounds of {seconds} s, servers on CPU 0 (one worker each), clients on CPU 1");
    println!("| | median | min | max | ratio |");
    println!("|---|---|---|---|---|");
    let base = summary(&theirs).0;
    row(
        "clients on nginx, 1 KiB, 50 conns: loadgen --http",
        &ours,
        base,
        "req/s",
    );
    row(
        "clients on nginx, 1 KiB, 50 conns: wrk -t1 -c50",
        &theirs,
        base,
        "req/s",
    );
    let base = summary(&theirs_rc).0;
    row(
        "clients on ringcore http, 1 KiB, 50 conns: loadgen --http",
        &ours_rc,
        base,
        "req/s",
    );
    row(
        "clients on ringcore http, 1 KiB, 50 conns: wrk -t1 -c50",
        &theirs_rc,
        base,
        "req/s",
    );
    let base = summary(&nginx_rates).0;
    row(
        "servers under wrk -t1 -c50, 1 KiB: ringcore http",
        &engine,
        base,
        "req/s",
    );
    row(
        "servers under wrk -t1 -c50, 1 KiB: nginx",
        &nginx_rates,
        base,
        "req/s",
    );
    let base = summary(&mib_nginx_rates).0;
    row(
        "servers under wrk -t1 -c10, 1 MiB bodies: ringcore http",
        &mib_engine,
        base,
        "req/s",
    );
    row(
        "servers under wrk -t1 -c10, 1 MiB bodies: nginx (sendfile)",
        &mib_nginx_rates,
        base,
        "req/s",
    );
    let base = summary(&fetch_curl).0;
    row(
        "one 100 MiB fetch from nginx: loadgen --http",
        &fetch_ours,
        base,
        "MB/s",
    );
    row(
        "one 100 MiB fetch from nginx: curl -o /dev/null",
        &fetch_curl,
        base,
        "MB/s",
    );
}
