//! Interop with the standard web tools: loadgen against nginx, curl and wrk
//! against the engine's http service. Ignored by a plain `cargo test` (they
//! need `apt-get install nginx wrk curl`); CI installs the tools and runs
//! them with `cargo test -- --ignored`.

mod common;
mod nginx;

use std::process::Command;

use common::{loadgen_json, num, TestServer};
use nginx::{Nginx, FILES};
use protocols::http::body_byte;
use protocols::{Protocol, Transport};

fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("-v").output().is_ok();
    assert!(
        found,
        "{tool} is not installed: apt-get install nginx wrk curl"
    );
}

#[test]
#[ignore = "needs nginx (CI installs it)"]
fn loadgen_fetches_and_loads_nginx() {
    let nginx = Nginx::start(None).expect("nginx is installed");
    for (name, size) in FILES {
        let r = loadgen_json(&["--http", &nginx.url(name)]);
        assert_eq!(
            (num(&r, "status"), num(&r, "body_bytes")),
            (200.0, *size as f64),
            "{name}"
        );
    }
    let r = loadgen_json(&[
        "--http",
        &nginx.url("1k.bin"),
        "--connections",
        "20",
        "--pipeline",
        "2",
        "--requests",
        "5000",
    ]);
    assert_eq!(num(&r, "requests"), 5000.0);
    assert_eq!(
        num(&r, "errors.mismatch") + num(&r, "errors.status") + num(&r, "errors.closed"),
        0.0,
        "{r}"
    );
    // Every response's body, headers included, came back: 5000 x (1 KiB + head).
    assert!(num(&r, "bytes_received") > 5000.0 * 1024.0);
    let r = loadgen_json(&[
        "--http",
        &nginx.url("missing"),
        "--connections",
        "2",
        "--requests",
        "20",
    ]);
    assert_eq!(num(&r, "errors.status"), 20.0, "nginx's 404s are counted");
}

#[test]
#[ignore = "needs curl (CI installs it)"]
fn curl_reads_the_engines_bodies() {
    require("curl");
    let server = TestServer::start(&[(Transport::Tcp, Protocol::HTTP)]);
    for path in ["/bytes/1048576", "/chunked/1048576"] {
        let out = Command::new("curl")
            .args([
                "-s",
                "--fail",
                "--max-time",
                "20",
                &format!("http://{}{path}", server.addr(0)),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), 1 << 20, "{path}");
        assert!(
            out.stdout
                .iter()
                .enumerate()
                .all(|(i, &b)| b == body_byte(i as u64)),
            "{path}"
        );
    }
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}/nope", server.addr(0)),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    // HTTP/1.0, and two URLs on one keep-alive connection.
    let out = Command::new("curl")
        .args(["-s", "-0", &format!("http://{}/bytes/5", server.addr(0))])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"abcde");
    let base = format!("http://{}", server.addr(0));
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "%{num_connects}\n",
            &format!("{base}/bytes/3"),
            &format!("{base}/bytes/4"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "abc1\nabcd0\n",
        "the second URL reused the connection"
    );
}

#[test]
#[ignore = "needs wrk (CI installs it)"]
fn wrk_loads_the_engine_without_errors() {
    require("wrk");
    let server = TestServer::start(&[(Transport::Tcp, Protocol::HTTP)]);
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c20",
            "-d1s",
            &format!("http://{}/bytes/1024", server.addr(0)),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in {text}"));
    assert!(rate > 0.0);
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{text}"
    );
    // Keep-alive: wrk's requests rode a handful of connections (its 20, and
    // at most one it may open first), not one connection each.
    let totals = server.totals();
    assert!(
        totals.connections_accepted <= 21,
        "{} connections",
        totals.connections_accepted
    );
    assert!(totals.messages_in > 100 * totals.connections_accepted);
}
