//! loadgen where io_uring is unavailable: its TCP load runs on epoll (by
//! choice, or by itself when a seccomp filter denies io_uring) and verifies
//! every reply just the same; its UDP load never needed io_uring; and each
//! report says which path ran.

mod common;

use std::process::Command;

use common::{deny_io_uring, loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

#[test]
fn tcp_and_http_load_verify_every_reply_through_epoll() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::ECHO),
        (Transport::Tcp, Protocol::REVERSE_LINES),
        (Transport::Tcp, Protocol::HTTP),
    ]);
    let cases: [(&str, Vec<String>); 3] = [
        (
            "echo",
            vec![
                "--tcp".into(),
                server.addr(0).to_string(),
                "--size".into(),
                "1..4K".into(),
            ],
        ),
        (
            "reverse",
            vec![
                "--tcp".into(),
                server.addr(1).to_string(),
                "--protocol".into(),
                "reverse".into(),
                "--size".into(),
                "1..300".into(),
            ],
        ),
        (
            "http",
            vec![
                "--http".into(),
                format!("http://{}/chunked/3000", server.addr(2)),
            ],
        ),
    ];
    for (name, target) in cases {
        let mut args: Vec<&str> = target.iter().map(String::as_str).collect();
        args.extend([
            "--io",
            "epoll",
            "--requests",
            "5000",
            "--connections",
            "8",
            "--pipeline",
            "3",
            "--threads",
            "2",
        ]);
        let r = loadgen_json(&args);
        assert_eq!(r["io"], "epoll", "{name}: {r}");
        assert_eq!(num(&r, "completed"), 5000.0, "{name}: {r}");
        assert_eq!(num(&r, "scheduled"), 5000.0, "{name}: {r}");
        let errors: f64 = ["reset", "closed", "mismatch", "status", "aborted"]
            .iter()
            .map(|k| num(&r, &format!("errors.{k}")))
            .sum();
        assert_eq!(errors, 0.0, "{name}: {r}");
        if name != "http" {
            assert_eq!(
                num(&r, "bytes_sent"),
                num(&r, "bytes_received"),
                "{name}: {r}"
            );
        }
    }
}

/// Runs the loadgen binary with io_uring denied by a seccomp filter.
fn loadgen_without_io_uring(args: &[&str]) -> (bool, serde_json::Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.args(args).args(["--quiet", "--json"]);
    deny_io_uring(&mut command, libc::EPERM);
    let out = command.output().expect("run loadgen");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_io_uring_loadgen_falls_back_and_says_so() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::ECHO),
        (Transport::Udp, Protocol::ECHO),
    ]);
    let tcp = server.addr(0).to_string();
    let (ok, r, stderr) = loadgen_without_io_uring(&["--tcp", &tcp, "--requests", "3000"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("io_uring is unavailable, using epoll instead")
            && stderr.contains("seccomp"),
        "{stderr}"
    );
    assert_eq!(r["io"], "epoll", "{r}");
    assert_eq!(num(&r, "completed"), 3000.0, "{r}");

    let udp = server.addr(1).to_string();
    let (ok, r, stderr) =
        loadgen_without_io_uring(&["--udp", &udp, "--rate", "100k", "--duration", "0.5"]);
    assert!(ok, "{stderr}");
    assert_eq!(r["io"], "readiness", "{r}");
    assert!(num(&r, "sent") > 40_000.0, "{r}");
    assert_eq!(num(&r, "received"), num(&r, "sent"), "{r}");

    let (ok, _, stderr) =
        loadgen_without_io_uring(&["--tcp", &tcp, "--io", "uring", "--requests", "10"]);
    assert!(!ok, "--io uring refuses to run without it");
    assert!(
        stderr.contains("io_uring is unavailable") && stderr.contains("seccomp"),
        "{stderr}"
    );
}
