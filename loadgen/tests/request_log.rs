//! `--request-log`: one row per scheduled request, and the rows reproduce
//! the run's figures.

mod common;

use common::{assert_fails_with, loadgen, loadgen_json, num, temp_path, TestServer};
use protocols::{Protocol, Transport};

struct Row {
    due: u64,
    sent: Option<u64>,
    done: u64,
    bytes: u64,
    outcome: String,
}

fn read_rows(path: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("due_ns,sent_ns,done_ns,bytes,outcome"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "{l:?}");
            Row {
                due: f[0].parse().unwrap(),
                sent: (!f[1].is_empty()).then(|| f[1].parse().unwrap()),
                done: f[2].parse().unwrap(),
                bytes: f[3].parse().unwrap(),
                outcome: f[4].to_string(),
            }
        })
        .collect()
}

/// The value at rank ceil(q * n) of `sorted` (what HdrHistogram's
/// value_at_quantile reports, to its precision), in microseconds.
fn quantile_us(sorted: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1] as f64 / 1000.0
}

#[test]
fn the_rows_account_for_every_request_and_reproduce_the_percentiles() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let path = temp_path("open.csv");
    let r = loadgen_json(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--rate",
        "4000",
        "--duration",
        "1s",
        "--warmup",
        "250ms",
        "--connections",
        "4",
        "--threads",
        "2",
        "--size",
        "10..100",
        "--request-log",
        path.to_str().unwrap(),
    ]);
    let rows = read_rows(&path);
    assert_eq!(
        rows.len() as f64,
        num(&r, "scheduled"),
        "one row per request"
    );
    let count = |o: &str| rows.iter().filter(|row| row.outcome == o).count() as f64;
    assert_eq!(count("ok"), num(&r, "completed"));
    assert_eq!(count("timeout"), num(&r, "timeouts"));
    assert_eq!(count("unsent"), num(&r, "unsent"));
    for row in &rows {
        if row.outcome == "unsent" {
            // Due before the end, never sent (a thread held up at the end
            // on a loaded machine): no send time, no bytes.
            assert_eq!((row.sent, row.bytes), (None, 0), "{}", row.outcome);
            assert!(row.due <= row.done);
            continue;
        }
        let sent = row.sent.expect("every request but the unsent was sent");
        assert!(row.due <= sent && sent <= row.done, "times in order");
        assert!((10..=100).contains(&row.bytes), "{}", row.bytes);
    }
    assert_eq!(
        rows.iter().map(|row| row.bytes).sum::<u64>() as f64,
        num(&r, "bytes_sent")
    );
    // The figures: samples due after the warm-up, from the due time
    // (latency) and from the send (service time).
    let warmup_ns = (num(&r, "warmup_s") * 1e9) as u64;
    let counted: Vec<&Row> = rows
        .iter()
        .filter(|row| (row.outcome == "ok" || row.outcome == "timeout") && row.due >= warmup_ns)
        .collect();
    assert_eq!(counted.len() as f64, num(&r, "latency_us.count"));
    let mut latency: Vec<u64> = counted.iter().map(|row| row.done - row.due).collect();
    let mut service: Vec<u64> = counted
        .iter()
        .map(|row| row.done - row.sent.unwrap())
        .collect();
    latency.sort_unstable();
    service.sort_unstable();
    for (figures, sorted) in [("latency_us", &latency), ("service_us", &service)] {
        for (key, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            let (ours, reported) = (quantile_us(sorted, q), num(&r, &format!("{figures}.{key}")));
            assert!(
                (ours - reported).abs() <= ours * 0.001 + 1.0,
                "{figures}.{key}: {ours} us from the rows, {reported} us reported"
            );
        }
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn failed_requests_are_rows_too() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::REVERSE_LINES)]);
    let path = temp_path("mismatch.csv");
    // Expects the line back unreversed: every reply is a mismatch.
    let out = loadgen(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--protocol",
        "generic",
        "--request",
        "abc\\n",
        "--expect",
        "abc\\n",
        "--requests",
        "30",
        "--connections",
        "2",
        "--json",
        "--request-log",
        path.to_str().unwrap(),
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = read_rows(&path);
    assert_eq!(num(&r, "errors.mismatch"), 30.0, "{r}");
    assert_eq!(rows.len(), 30);
    assert!(rows
        .iter()
        .all(|row| row.outcome == "mismatch" && row.bytes == 4));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_unwritable_log_is_refused_before_the_run() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    assert_fails_with(
        &[
            "--tcp",
            &server.addr(0).to_string(),
            "--request-log",
            "/nonexistent/dir/log.csv",
        ],
        "creating --request-log /nonexistent/dir/log.csv",
    );
}

#[test]
fn the_generic_mode_over_udp_logs_its_requests_and_histograms() {
    let server = TestServer::start(&[(Transport::Udp, Protocol::ECHO)]);
    let (path, hlog) = (temp_path("udp.csv"), temp_path("udp.hlog"));
    let r = loadgen_json(&[
        "--udp",
        &server.addr(0).to_string(),
        "--protocol",
        "generic",
        "--request",
        "{payload}",
        "--reply",
        "echo",
        "--size",
        "20..40",
        "--rate",
        "3000",
        "--duration",
        "500ms",
        "--request-log",
        path.to_str().unwrap(),
        "--hdr-log",
        hlog.to_str().unwrap(),
    ]);
    let rows = read_rows(&path);
    assert_eq!(
        rows.len() as f64,
        num(&r, "sent") + num(&r, "send_errors"),
        "{r}"
    );
    let ok = rows.iter().filter(|row| row.outcome == "ok").count() as f64;
    assert_eq!(ok, num(&r, "answered"), "{r}");
    assert_eq!(
        rows.iter().map(|row| row.bytes).sum::<u64>() as f64,
        num(&r, "bytes_sent"),
        "{r}"
    );
    let mut latency: Vec<u64> = rows
        .iter()
        .filter(|row| row.outcome == "ok")
        .map(|row| row.done - row.due)
        .collect();
    latency.sort_unstable();
    let (ours, reported) = (quantile_us(&latency, 0.99), num(&r, "latency_us.p99"));
    assert!(
        (ours - reported).abs() <= ours * 0.001 + 1.0,
        "{ours} vs {reported}"
    );
    // The histogram log holds both figures, one sample per answer each.
    let intervals = loadgen::hdr_log::read(&hlog).unwrap();
    for tag in ["latency", "service"] {
        let count: u64 = intervals
            .iter()
            .filter(|i| i.tag.as_deref() == Some(tag))
            .map(|i| i.histogram.len())
            .sum();
        assert_eq!(count as f64, num(&r, "answered"), "{tag}");
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&hlog);
}
