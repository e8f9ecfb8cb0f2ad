//! `--hdr-log` is a time series a reference HdrHistogram reader decodes to
//! the same counts and percentiles loadgen reports, and `loadgen report`
//! merges such logs interval by interval.
//!
//! Two readers check the log: a decoder written here from the format's
//! published encoding (V2 compressed histograms, base64 in an interval log)
//! that shares no code with loadgen or the hdrhistogram crate, and, where
//! it is installed (`pip install hdrhistogram`; CI installs it), the
//! HdrHistogram project's Python implementation.

mod common;

use std::io::Read;
use std::process::Command;

use base64::Engine as _;
use common::{loadgen, loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

/// One interval as the independent decoder reads it.
#[derive(Clone)]
struct Decoded {
    /// The interval's tag (`latency`, `service`, `rtt`), if any.
    tag: Option<String>,
    start_s: f64,
    length_s: f64,
    /// (highest value equivalent to the bucket, count), in value order.
    counts: Vec<(u64, u64)>,
}

impl Decoded {
    fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.1).sum()
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Decodes one V2-compressed histogram: cookie 0x1c849304 (the bits 0xf0
/// carry a word-size flag), the deflated length, then a zlib stream
/// holding cookie 0x1c849303, payload length,
/// normalizing offset, significant digits, lowest and highest trackable
/// values, the conversion ratio, and the counts as ZigZag LEB128 varints
/// (a negative one skips that many empty buckets).
fn decode_histogram(encoded: &str) -> Vec<(u64, u64)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    assert_eq!(
        be_u32(&raw, 0) & !0xf0,
        0x1c84_9304,
        "a V2 compressed histogram"
    );
    let deflated_len = be_u32(&raw, 4) as usize;
    let mut inner = Vec::new();
    flate2::read::ZlibDecoder::new(&raw[8..8 + deflated_len])
        .read_to_end(&mut inner)
        .expect("zlib");
    assert_eq!(be_u32(&inner, 0) & !0xf0, 0x1c84_9303, "a V2 histogram");
    let payload_len = be_u32(&inner, 4) as usize;
    let digits = be_u32(&inner, 12);
    let lowest = be_i64(&inner, 16) as u64;
    // Bucket layout, from the lowest value and the significant digits.
    let unit_magnitude = 63 - lowest.leading_zeros();
    let largest_single_unit = 2 * 10u64.pow(digits);
    let sub_bucket_count_magnitude = 64 - (largest_single_unit - 1).leading_zeros();
    let half_magnitude = sub_bucket_count_magnitude - 1;
    let half = 1u64 << half_magnitude;
    let value_of = |index: u64| -> (u64, u64) {
        let mut bucket = (index >> half_magnitude) as i64 - 1;
        let mut sub = (index & (half - 1)) + half;
        if bucket < 0 {
            sub -= half;
            bucket = 0;
        }
        let shift = bucket as u32 + unit_magnitude;
        (sub << shift, (sub << shift) + (1 << shift) - 1)
    };
    let payload = &inner[40..40 + payload_len];
    let (mut at, mut index, mut counts) = (0, 0u64, Vec::new());
    while at < payload.len() {
        let (mut zigzag, mut shift) = (0u64, 0);
        loop {
            let byte = payload[at];
            at += 1;
            zigzag |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 || shift == 63 {
                if shift == 63 && byte & 0x80 != 0 {
                    zigzag |= u64::from(payload[at]) << 56;
                    at += 1;
                }
                break;
            }
        }
        let value = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        if value < 0 {
            index += (-value) as u64;
        } else {
            if value > 0 {
                counts.push((value_of(index).1, value as u64));
            }
            index += 1;
        }
    }
    counts
}

/// Reads an interval log: each `Tag=...,start,length,max,HIST...` line.
fn decode_log(text: &str) -> Vec<Decoded> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('"') && !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let fields = if fields[0].starts_with("Tag=") {
                &fields[1..]
            } else {
                &fields[..]
            };
            Decoded {
                tag: line
                    .strip_prefix("Tag=")
                    .and_then(|rest| rest.split(',').next())
                    .map(str::to_string),
                start_s: fields[0].parse().unwrap(),
                length_s: fields[1].parse().unwrap(),
                counts: decode_histogram(fields[3]),
            }
        })
        .collect()
}

/// The value at quantile `q`, as HdrHistogram defines it: the highest value
/// equivalent to the bucket where the running count reaches `q` of all.
fn value_at(counts: &[(u64, u64)], q: f64) -> u64 {
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let wanted = ((q * total as f64).ceil() as u64).max(1);
    let mut running = 0;
    for &(value, count) in counts {
        running += count;
        if running >= wanted {
            return value;
        }
    }
    counts.last().map_or(0, |c| c.0)
}

fn merged(decoded: &[Decoded]) -> Vec<(u64, u64)> {
    let mut all = std::collections::BTreeMap::new();
    for d in decoded {
        for &(v, c) in &d.counts {
            *all.entry(v).or_insert(0) += c;
        }
    }
    all.into_iter().collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= b.abs() * 0.002 + 1.0
}

#[test]
fn the_log_is_a_time_series_that_reference_readers_decode() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let dir = std::env::temp_dir().join(format!("ringcore-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("run.hlog");
    let r = loadgen_json(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--rate",
        "2000",
        "--duration",
        "3s",
        "--connections",
        "4",
        "--hdr-log",
        log.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&log).unwrap();
    let tagged = |tag: &str| -> Vec<Decoded> {
        decode_log(&text)
            .into_iter()
            .filter(|d| d.tag.as_deref() == Some(tag))
            .collect()
    };
    let decoded = tagged("latency");
    // Service time from each send, beside latency from each due time: the
    // same samples, interval by interval, never longer.
    let service = tagged("service");
    assert_eq!(
        service.iter().map(Decoded::total).collect::<Vec<_>>(),
        decoded.iter().map(Decoded::total).collect::<Vec<_>>()
    );
    assert_eq!(
        merged(&service).iter().map(|c| c.1).sum::<u64>() as f64,
        num(&r, "service_us.count")
    );
    assert!(
        num(&r, "service_us.p99") <= num(&r, "latency_us.p99"),
        "{r}"
    );

    // One interval per second, in order, each holding the requests that
    // completed in it. A request completes no sooner than it falls due, so
    // by the end of second k at most 2000 (k + 1) have (a bound no
    // scheduler can break; on a loaded machine completions only come
    // later, into later intervals).
    assert!(decoded.len() >= 3, "{text}");
    let mut completed = 0;
    for (i, d) in decoded.iter().take(3).enumerate() {
        assert_eq!((d.start_s, d.length_s), (i as f64, 1.0), "{text}");
        completed += d.total();
        assert!(
            completed <= 2_000 * (i as u64 + 1) + 1,
            "{completed} completed by the end of second {i}"
        );
    }
    // Every sample the report counts is in the log, and the percentiles
    // read from the decoded counts are the report's.
    let all = merged(&decoded);
    let total: u64 = all.iter().map(|c| c.1).sum();
    assert_eq!(total as f64, num(&r, "latency_us.count"));
    for (key, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let decoded_us = value_at(&all, q) as f64 / 1000.0;
        let reported = num(&r, &format!("latency_us.{key}"));
        assert!(
            close(decoded_us, reported),
            "{key}: decoded {decoded_us} us, reported {reported} us"
        );
    }

    // The HdrHistogram project's own Python reader, where installed.
    let probe = Command::new("python3").args(["-c", "import hdrh"]).output();
    if probe.is_ok_and(|o| o.status.success()) {
        let script = r#"
import sys, json, tempfile
from hdrh.log import HistogramLogReader
from hdrh.histogram import HdrHistogram
# The latency intervals only (the log also holds service time).
lines = [l for l in open(sys.argv[1]) if not l.startswith("Tag=") or l.startswith("Tag=latency,")]
only = tempfile.NamedTemporaryFile("w", suffix=".hlog", delete=False)
only.writelines(lines)
only.close()
reader = HistogramLogReader(only.name, HdrHistogram(1000, 120000000000, 3))
acc = HdrHistogram(1000, 120000000000, 3)
rows = []
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    rows.append(h.get_total_count())
    acc.add(h)
# A percentile's value one sample's rank either side: hdrh rounds the rank,
# Rust's hdrhistogram takes its ceiling, and in a sparse tail one rank apart
# can be buckets apart.
one = 100.0 / max(acc.get_total_count(), 1)
out = {"intervals": rows, "count": acc.get_total_count(), "max": acc.get_max_value()}
for key, p in (("p50", 50.0), ("p99", 99.0)):
    out[key + "_lo"] = acc.get_value_at_percentile(max(p - one, 0.0))
    out[key + "_hi"] = acc.get_value_at_percentile(min(p + one, 100.0))
print(json.dumps(out))
"#;
        let out = Command::new("python3")
            .args(["-c", script, log.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let per_interval: Vec<u64> = decoded.iter().map(Decoded::total).collect();
        let py_intervals: Vec<u64> = py["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(py_intervals, per_interval, "per-interval counts");
        assert_eq!(num(&py, "count"), num(&r, "latency_us.count"));
        let max = (num(&py, "max") / 1000.0, num(&r, "latency_us.max"));
        assert!(
            close(max.0, max.1),
            "max: hdrh {} us, loadgen {} us",
            max.0,
            max.1
        );
        for key in ["p50", "p99"] {
            let (lo, hi) = (
                num(&py, &format!("{key}_lo")) / 1000.0,
                num(&py, &format!("{key}_hi")) / 1000.0,
            );
            let ours = num(&r, &format!("latency_us.{key}"));
            assert!(
                (lo <= ours || close(lo, ours)) && (ours <= hi || close(ours, hi)),
                "{key}: hdrh puts it between {lo} and {hi} us, loadgen at {ours} us"
            );
        }
    } else {
        eprintln!("python's hdrh is not installed (pip install hdrhistogram): checked against the published encoding only");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_merges_logs_interval_by_interval_and_results_of_every_mode() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::ECHO),
        (Transport::Tcp, Protocol::HTTP),
        (Transport::Udp, Protocol::ECHO),
    ]);
    let dir = std::env::temp_dir().join(format!("ringcore-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let echo = server.addr(0).to_string();
    // Two concurrent runs: their intervals start within a millisecond of
    // each other and merge into the same seconds.
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let (echo, log) = (echo.clone(), path(&format!("{name}.hlog")));
            std::thread::spawn(move || {
                loadgen_json(&[
                    "--tcp",
                    &echo,
                    "--rate",
                    "1000",
                    "--duration",
                    "2s",
                    "--connections",
                    "2",
                    "--hdr-log",
                    &log,
                ])
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    for (name, r) in ["a", "b"].iter().zip(&results) {
        std::fs::write(path(&format!("{name}.json")), r.to_string()).unwrap();
    }
    let http = loadgen_json(&[
        "--http",
        &format!("http://{}/bytes/100", server.addr(1)),
        "--connections",
        "2",
        "--requests",
        "300",
    ]);
    std::fs::write(path("http.json"), http.to_string()).unwrap();
    let udp = loadgen_json(&[
        "--udp",
        &server.addr(2).to_string(),
        "--rate",
        "5k",
        "--duration",
        "0.5",
    ]);
    std::fs::write(path("udp.json"), udp.to_string()).unwrap();

    let files = [
        "a.json",
        "b.json",
        "http.json",
        "udp.json",
        "a.hlog",
        "b.hlog",
    ]
    .map(path);
    let mut args: Vec<&str> = vec!["report"];
    args.extend(files.iter().map(String::as_str));
    let merged_log = path("merged.hlog");
    args.extend(["--hdr-log", &merged_log]);
    let m = loadgen_json(&args);
    let sum = |key: &str| results.iter().map(|r| num(r, key)).sum::<f64>();
    assert_eq!(num(&m, "tcp.requests"), sum("requests"));
    assert!((num(&m, "tcp.requests_per_sec") - sum("requests_per_sec")).abs() < 1e-6);
    assert_eq!(num(&m, "tcp.scheduled"), 4000.0);
    assert_eq!(num(&m, "http.requests"), 300.0, "{m}");
    assert_eq!(num(&m, "udp.offered"), num(&udp, "sent"), "{m}");
    assert_eq!(num(&m, "udp.loss_pct"), num(&udp, "loss_pct"), "{m}");
    // Interval by interval: both files in each second, and the counts add up.
    let rows = m["intervals"]["latency"].as_array().expect("intervals");
    assert!(rows.len() >= 2, "{m}");
    let mut completed = 0.0;
    for (i, row) in rows.iter().take(2).enumerate() {
        assert_eq!(num(row, "start_s"), i as f64, "{m}");
        assert_eq!(num(row, "sources"), 2.0, "{m}");
        // No sooner than due: two runs at 1000/s complete at most 2000 a
        // second, summed over the seconds so far.
        completed += num(row, "latency_us.count");
        assert!(completed <= 2_000.0 * (i as f64 + 1.0) + 2.0, "{m}");
    }
    let in_rows: f64 = rows.iter().map(|r| num(r, "latency_us.count")).sum();
    assert_eq!(in_rows, num(&m, "histograms.latency.count"));
    // The merged log reads back with the same intervals.
    let decoded: Vec<Decoded> = decode_log(&std::fs::read_to_string(&merged_log).unwrap())
        .into_iter()
        .filter(|d| d.tag.as_deref() == Some("latency"))
        .collect();
    let counts: Vec<f64> = decoded.iter().map(|d| d.total() as f64).collect();
    let expected: Vec<f64> = rows.iter().map(|r| num(r, "latency_us.count")).collect();
    assert_eq!(counts, expected);
    // Garbage is refused with the file's name.
    std::fs::write(path("junk.txt"), "not a result").unwrap();
    let out = loadgen(&["report", &path("junk.txt")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.txt"));
    let _ = std::fs::remove_dir_all(&dir);
}
