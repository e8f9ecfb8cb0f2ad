//! loadgen's TCP mode against the real engine on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::{assert_fails_with, loadgen, loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

#[test]
fn echo_and_reverse_runs_verify_every_reply() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::ECHO),
        (Transport::Tcp, Protocol::REVERSE_LINES),
    ]);
    let echo = server.addr(0).to_string();
    let r = loadgen_json(&[
        "--tcp",
        &echo,
        "--requests",
        "20000",
        "--connections",
        "20",
        "--size",
        "1..4K",
        "--pipeline",
        "3",
    ]);
    assert_eq!(num(&r, "requests"), 20000.0);
    assert_eq!(
        num(&r, "errors.mismatch") + num(&r, "errors.reset") + num(&r, "errors.closed"),
        0.0
    );
    assert_eq!(
        num(&r, "bytes_sent"),
        num(&r, "bytes_received"),
        "every echoed byte came back and matched"
    );
    assert_eq!(num(&r, "latency_us.count"), 20000.0);
    // Latencies are real round trips: above zero (a recorder that stored
    // nothing, or a clock read twice at once, gives 0) and none longer
    // than the run itself (a start time from the wrong clock gives years).
    assert!(num(&r, "latency_us.p50") > 0.0, "{r}");
    assert!(
        num(&r, "latency_us.max") <= num(&r, "duration_s") * 1e6,
        "{r}"
    );
    // The server saw exactly what loadgen sent.
    assert_eq!(server.totals().bytes_in as f64, num(&r, "bytes_sent"));

    let reverse = server.addr(1).to_string();
    let r = loadgen_json(&[
        "--tcp",
        &reverse,
        "--protocol",
        "reverse",
        "--requests",
        "5000",
        "--connections",
        "8",
        "--size",
        "1..300",
        "--pipeline",
        "4",
        "--threads",
        "2",
    ]);
    assert_eq!(num(&r, "requests"), 5000.0);
    assert_eq!(num(&r, "errors.mismatch"), 0.0);
}

#[test]
fn open_loop_holds_a_modest_rate() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let addr = server.addr(0).to_string();
    let r = loadgen_json(&[
        "--tcp",
        &addr,
        "--rate",
        "2000",
        "--duration",
        "1",
        "--connections",
        "4",
    ]);
    let achieved = num(&r, "requests_per_sec");
    assert!(
        (1800.0..=2200.0).contains(&achieved),
        "asked 2000 req/s, got {achieved}"
    );
    assert_eq!(num(&r, "requested_rate"), 2000.0);
}

#[test]
fn a_corrupting_server_is_reported_as_mismatches() {
    // Echoes everything with the first byte of each read flipped.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    buf[0] ^= 0xff;
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let out = loadgen(&[
        "--tcp",
        &addr,
        "--requests",
        "50",
        "--connections",
        "2",
        "--json",
    ]);
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("a JSON report even when every reply is wrong");
    assert!(num(&r, "errors.mismatch") >= 1.0, "{r}");
    assert_eq!(
        num(&r, "requests"),
        0.0,
        "no corrupted reply counts as answered"
    );
    assert!(
        !out.status.success(),
        "a run where nothing was answered fails"
    );
}

#[test]
fn clear_errors_for_bad_input() {
    // Nobody listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--tcp", &format!("127.0.0.1:{port}"), "--duration", "1"],
            "no server at",
        ),
        (&["--tcp", "--duration", "0"], "above zero"),
        (&["--tcp", "--rate", "fast"], "not a rate"),
        (&["--tcp", "--size", "0"], "at least 1"),
        (&["--tcp", "--duration", "soon"], "not a duration"),
        (
            &["--tcp", "--requests", "10", "--warmup", "1s"],
            "--warmup needs a timed run",
        ),
        (
            &["--udp", "--warmup", "1s"],
            "--warmup is for TCP and HTTP load runs",
        ),
        (&[], "choose a mode"),
    ];
    for (args, expected) in cases {
        assert_fails_with(args, expected);
    }
}

#[test]
fn report_merges_results_and_histogram_logs_from_several_runs() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let addr = server.addr(0).to_string();
    let dir = std::env::temp_dir().join(format!("ringcore-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (i, requests) in ["3000", "5000"].iter().enumerate() {
        let log = dir.join(format!("run{i}.hlog"));
        let json = dir.join(format!("run{i}.json"));
        let out = loadgen(&[
            "--tcp",
            &addr,
            "--requests",
            requests,
            "--connections",
            "4",
            "--json",
            "--hdr-log",
            &log.to_string_lossy(),
        ]);
        assert!(out.status.success());
        std::fs::write(&json, &out.stdout).unwrap();
        files.push(json.to_string_lossy().into_owned());
        files.push(log.to_string_lossy().into_owned());
    }
    let mut args = vec!["report"];
    args.extend(files.iter().map(String::as_str));
    let r = loadgen_json(&args);
    assert_eq!(num(&r, "files"), 4.0);
    assert_eq!(num(&r, "tcp.requests"), 8000.0);
    assert_eq!(num(&r, "tcp.runs"), 2.0);
    assert_eq!(
        num(&r, "histograms.latency.count"),
        8000.0,
        "the logs merge into one histogram: {r}"
    );
    // A file that is neither kind is named.
    let junk = dir.join("junk.txt");
    std::fs::write(&junk, "hello").unwrap();
    let out = loadgen(&["report", &junk.to_string_lossy()]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("neither a loadgen --json result nor an --hdr-log file"));
    let _ = std::fs::remove_dir_all(&dir);
}
