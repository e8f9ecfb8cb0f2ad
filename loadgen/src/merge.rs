//! `loadgen report FILE...`: one report from many runs or machines.
//!
//! JSON results add up (requests, datagrams, bytes, errors, and rates, as
//! concurrent runs on several machines offer their sum). Percentiles do not
//! add up, so latency comes only from HdrHistogram logs (`--hdr-log`), which
//! merge exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::latency::{self, Percentiles};

/// TCP results added up.
#[derive(Debug, Default, Serialize)]
pub struct TcpTotals {
    /// Results merged.
    pub runs: u64,
    /// Requests answered.
    pub requests: u64,
    /// Sum of the runs' requests/s.
    pub requests_per_sec: f64,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received.
    pub bytes_received: u64,
    /// Errors of every kind.
    pub errors: u64,
}

/// UDP results added up.
#[derive(Debug, Default, Serialize)]
pub struct UdpTotals {
    /// Results merged.
    pub runs: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Datagrams lost.
    pub lost: u64,
    /// Sum of the runs' achieved datagrams/s.
    pub achieved_pps: f64,
}

/// The merged report.
#[derive(Debug, Default, Serialize)]
pub struct Merged {
    /// Always "report".
    pub mode: &'static str,
    /// Files read.
    pub files: usize,
    /// TCP totals, if any TCP result was given.
    pub tcp: Option<TcpTotals>,
    /// UDP totals, if any UDP result was given.
    pub udp: Option<UdpTotals>,
    /// Exact percentiles (microseconds) per histogram tag, from the logs.
    pub histograms: BTreeMap<String, Percentiles>,
}

/// Reads and merges `files`.
pub fn merge(files: &[PathBuf]) -> anyhow::Result<Merged> {
    let mut merged = Merged {
        mode: "report",
        files: files.len(),
        ..Merged::default()
    };
    let mut histograms: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for path in files {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            let json: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a loadgen JSON result", path.display()))?;
            add_json(&mut merged, &json).with_context(|| format!("in {}", path.display()))?;
        } else {
            let logged = crate::hdr_log::read(path).with_context(|| {
                format!(
                    "{} is neither a loadgen --json result nor an --hdr-log file",
                    path.display()
                )
            })?;
            for (tag, h) in logged {
                let into = histograms
                    .entry(tag.unwrap_or_else(|| "latency".into()))
                    .or_insert_with(latency::histogram);
                into.add(&h)
                    .with_context(|| format!("merging {}", path.display()))?;
            }
        }
    }
    merged.histograms = histograms
        .iter()
        .map(|(tag, h)| (tag.clone(), Percentiles::of(h)))
        .collect();
    Ok(merged)
}

fn add_json(merged: &mut Merged, json: &Value) -> anyhow::Result<()> {
    let n = |key: &str| json[key].as_f64().unwrap_or(0.0);
    match json["mode"].as_str() {
        Some("tcp") => {
            let t = merged.tcp.get_or_insert_with(TcpTotals::default);
            t.runs += 1;
            t.requests += n("requests") as u64;
            t.requests_per_sec += n("requests_per_sec");
            t.bytes_sent += n("bytes_sent") as u64;
            t.bytes_received += n("bytes_received") as u64;
            t.errors += json["errors"]
                .as_object()
                .map_or(0.0, |e| e.values().filter_map(Value::as_f64).sum())
                as u64;
        }
        Some("udp") => {
            let u = merged.udp.get_or_insert_with(UdpTotals::default);
            u.runs += 1;
            u.sent += n("sent") as u64;
            u.received += n("received") as u64;
            u.lost += n("lost") as u64;
            u.achieved_pps += n("achieved_pps");
        }
        other => bail!("a result of mode {other:?}; only tcp and udp results merge"),
    }
    Ok(())
}

/// Prints the merged report.
pub fn print(m: &Merged) {
    println!("merged {} file(s)", m.files);
    if let Some(t) = &m.tcp {
        println!(
            "  tcp       {} run(s): {} requests, {:.0} req/s together, {} B sent, {} B received, {} errors",
            t.runs, t.requests, t.requests_per_sec, t.bytes_sent, t.bytes_received, t.errors
        );
    }
    if let Some(u) = &m.udp {
        let pct = if u.sent == 0 {
            0.0
        } else {
            u.lost as f64 * 100.0 / u.sent as f64
        };
        println!(
            "  udp       {} run(s): sent {}, received {}, lost {} ({pct:.3} %), {:.0} datagrams/s together",
            u.runs, u.sent, u.received, u.lost, u.achieved_pps
        );
    }
    for (tag, p) in &m.histograms {
        println!("  {tag:<9} {}", p.row());
    }
    if m.histograms.is_empty() {
        println!("  (no --hdr-log files given: percentiles cannot be averaged, so none are shown)");
    }
}
