//! `loadgen report FILE...`: one report from many runs or machines.
//!
//! JSON results add up (requests and their fates, datagrams, bytes, errors,
//! and rates, as concurrent runs on several machines offer their sum).
//! Percentiles do not add up, so latency comes only from HdrHistogram logs
//! (`--hdr-log`), which merge exactly: in all, and interval by interval,
//! with intervals of different files aligned by their start times.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::hdr_log::Interval;
use crate::latency::{self, Percentiles};

/// TCP or HTTP load results added up.
#[derive(Debug, Default, Serialize)]
pub struct LoadTotals {
    /// Results merged.
    pub runs: u64,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Requests answered (`requests` in each result).
    pub requests: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests never sent (open loop past capacity).
    pub unsent: u64,
    /// Requests that ended in an error.
    pub errors: u64,
    /// Sum of the runs' requests/s.
    pub requests_per_sec: f64,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received.
    pub bytes_received: u64,
    /// The merged run's own rate: all requests over its whole span, from
    /// the earliest start to the latest end. Within a few percent of
    /// `requests_per_sec` only if the runs ran together (`--start-at`).
    pub span_rate: f64,
    /// That span, seconds.
    pub span_s: f64,
    #[serde(skip)]
    span: Span,
}

/// The earliest start and latest end of merged runs, Unix seconds.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: f64,
    last: f64,
}

impl Default for Span {
    fn default() -> Self {
        Span {
            first: f64::INFINITY,
            last: f64::NEG_INFINITY,
        }
    }
}

impl Span {
    fn add(&mut self, json: &Value) {
        if let (Some(start), Some(length)) =
            (json["started_at"].as_f64(), json["duration_s"].as_f64())
        {
            self.first = self.first.min(start);
            self.last = self.last.max(start + length);
        }
    }

    fn seconds(&self) -> f64 {
        (self.last - self.first).max(0.0)
    }
}

/// One merged result: where it came from and when it ran.
#[derive(Debug, Serialize)]
pub struct Source {
    /// The file.
    pub file: String,
    /// Its mode.
    pub mode: String,
    /// Its `--tag`.
    pub tag: Option<String>,
    /// When its load began, Unix seconds (with `--start-at`, that instant).
    pub started_at: Option<f64>,
    /// With `--start-at`: how late its threads woke for it, milliseconds.
    pub start_lateness_ms: Option<f64>,
}

/// UDP results added up.
#[derive(Debug, Default, Serialize)]
pub struct UdpTotals {
    /// Results merged.
    pub runs: u64,
    /// Datagrams offered: sent, plus those the send path refused.
    pub offered: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Datagrams lost (of those offered).
    pub lost: u64,
    /// `lost` as a percentage of `offered`.
    pub loss_pct: f64,
    /// Sum of the runs' achieved datagrams/s.
    pub achieved_pps: f64,
    /// Datagrams sent over the merged runs' whole span.
    pub span_pps: f64,
    #[serde(skip)]
    span: Span,
}

/// Single HTTP fetches added up.
#[derive(Debug, Default, Serialize)]
pub struct FetchTotals {
    /// Fetches merged.
    pub runs: u64,
    /// Body bytes received.
    pub body_bytes: u64,
    /// Fetches whose status was not 2xx.
    pub not_ok: u64,
}

/// One interval of the merged time series.
#[derive(Debug, Serialize)]
pub struct MergedInterval {
    /// Start, in seconds from the earliest interval of any file.
    pub start_s: f64,
    /// Length, in seconds.
    pub length_s: f64,
    /// Files that had samples or an interval here.
    pub sources: usize,
    /// Percentiles of everything recorded in the interval, microseconds.
    pub latency_us: Percentiles,
}

/// The merged report.
#[derive(Debug, Default, Serialize)]
pub struct Merged {
    /// Always "report".
    pub mode: &'static str,
    /// Files read.
    pub files: usize,
    /// TCP totals, if any TCP result was given.
    pub tcp: Option<LoadTotals>,
    /// HTTP load totals, if any HTTP load result was given.
    pub http: Option<LoadTotals>,
    /// Single-fetch totals, if any fetch result was given.
    pub fetches: Option<FetchTotals>,
    /// UDP totals, if any UDP result was given.
    pub udp: Option<UdpTotals>,
    /// Every JSON result merged, with its tag and start.
    pub sources: Vec<Source>,
    /// Latest start minus earliest start among them, milliseconds.
    pub start_spread_ms: Option<f64>,
    /// The latest any of them woke after its `--start-at`, milliseconds.
    pub max_start_lateness_ms: Option<f64>,
    /// Where the results' manifests differ (kernel, CPU, sysctls, command
    /// line…): one line per field, with each value and the files that had
    /// it. Empty when they all agree.
    pub manifest_differences: Vec<String>,
    /// Exact percentiles (microseconds) per histogram tag, from the logs.
    pub histograms: BTreeMap<String, Percentiles>,
    /// Per tag, the intervals of all logs merged by start time.
    pub intervals: BTreeMap<String, Vec<MergedInterval>>,
    /// The merged histograms, per tag and interval, for `--hdr-log`.
    #[serde(skip)]
    series: BTreeMap<String, Timeline>,
    /// The earliest interval start (Unix seconds), for `--hdr-log`.
    #[serde(skip)]
    origin_s: f64,
}

/// One tag's merged intervals.
#[derive(Debug, Default)]
struct Timeline {
    length_s: f64,
    bins: BTreeMap<u64, (Histogram<u64>, usize)>,
}

/// Reads and merges `files`.
pub fn merge(files: &[PathBuf]) -> anyhow::Result<Merged> {
    let mut merged = Merged {
        mode: "report",
        files: files.len(),
        ..Merged::default()
    };
    let mut logged: Vec<(usize, Interval)> = Vec::new();
    let mut results: Vec<(String, Value)> = Vec::new();
    for (file, path) in files.iter().enumerate() {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            let json: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a loadgen JSON result", path.display()))?;
            add_json(&mut merged, &json).with_context(|| format!("in {}", path.display()))?;
            merged.sources.push(Source {
                file: path.display().to_string(),
                mode: json["mode"].as_str().unwrap_or_default().to_string(),
                tag: json["tag"].as_str().map(str::to_string),
                started_at: json["started_at"].as_f64(),
                start_lateness_ms: json["start_lateness_ms"].as_f64(),
            });
            results.push((path.display().to_string(), json));
        } else {
            let intervals = crate::hdr_log::read(path).with_context(|| {
                format!(
                    "{} is neither a loadgen --json result nor an --hdr-log file",
                    path.display()
                )
            })?;
            logged.extend(intervals.into_iter().map(|i| (file, i)));
        }
    }
    if let Some(u) = &mut merged.udp {
        u.loss_pct = if u.offered == 0 {
            0.0
        } else {
            u.lost as f64 * 100.0 / u.offered as f64
        };
        u.span_pps = per_second(u.sent, u.span.seconds());
    }
    for t in [&mut merged.tcp, &mut merged.http].into_iter().flatten() {
        t.span_s = t.span.seconds();
        t.span_rate = per_second(t.requests, t.span_s);
    }
    let starts: Vec<f64> = merged.sources.iter().filter_map(|s| s.started_at).collect();
    if !starts.is_empty() {
        let (min, max) = starts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &t| {
                (a.min(t), b.max(t))
            });
        merged.start_spread_ms = Some((max - min) * 1e3);
    }
    merged.max_start_lateness_ms = merged
        .sources
        .iter()
        .filter_map(|s| s.start_lateness_ms)
        .reduce(f64::max);
    let named: Vec<(String, &Value)> = results.iter().map(|(n, j)| (n.clone(), j)).collect();
    merged.manifest_differences = crate::manifest::differences(&named);
    merge_logs(&mut merged, logged)?;
    Ok(merged)
}

/// Adds every logged interval to its tag's total and to the interval of
/// the merged timeline its start falls in.
fn merge_logs(merged: &mut Merged, logged: Vec<(usize, Interval)>) -> anyhow::Result<()> {
    let tag_of = |i: &Interval| i.tag.clone().unwrap_or_else(|| "latency".into());
    merged.origin_s = logged
        .iter()
        .map(|(_, i)| i.start_s)
        .fold(f64::INFINITY, f64::min);
    let mut totals: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    for (_, interval) in &logged {
        let tag = tag_of(interval);
        totals
            .entry(tag.clone())
            .or_insert_with(latency::histogram)
            .add(&interval.histogram)
            .context("merging histograms")?;
        // The timeline's step is the shortest interval of the tag.
        let timeline = merged.series.entry(tag).or_default();
        if timeline.length_s == 0.0 || interval.length_s < timeline.length_s {
            timeline.length_s = interval.length_s.max(1e-3);
        }
    }
    let mut seen: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
    for (file, interval) in &logged {
        let tag = tag_of(interval);
        let timeline = merged
            .series
            .get_mut(&tag)
            .context("a tag without a timeline")?;
        let slot = ((interval.start_s - merged.origin_s) / timeline.length_s).round() as u64;
        let (histogram, _) = timeline
            .bins
            .entry(slot)
            .or_insert_with(|| (latency::histogram(), 0));
        histogram
            .add(&interval.histogram)
            .context("merging interval histograms")?;
        let files = seen.entry((tag, slot)).or_default();
        if !files.contains(file) {
            files.push(*file);
        }
    }
    for ((tag, slot), files) in seen {
        if let Some((_, sources)) = merged
            .series
            .get_mut(&tag)
            .and_then(|t| t.bins.get_mut(&slot))
        {
            *sources = files.len();
        }
    }
    merged.histograms = totals
        .iter()
        .map(|(tag, h)| (tag.clone(), Percentiles::of(h)))
        .collect();
    merged.intervals = merged
        .series
        .iter()
        .map(|(tag, t)| {
            let rows = t
                .bins
                .iter()
                .map(|(&slot, (h, sources))| MergedInterval {
                    start_s: slot as f64 * t.length_s,
                    length_s: t.length_s,
                    sources: *sources,
                    latency_us: Percentiles::of(h),
                })
                .collect();
            (tag.clone(), rows)
        })
        .collect();
    Ok(())
}

/// Writes the merged intervals as one HdrHistogram interval log.
pub fn write_log(merged: &Merged, path: &Path) -> anyhow::Result<()> {
    if merged.series.is_empty() {
        bail!("no --hdr-log file was given, so there is no merged log to write");
    }
    let started = UNIX_EPOCH + Duration::from_secs_f64(merged.origin_s.max(0.0));
    let mut rows: Vec<(&str, Duration, Duration, &Histogram<u64>)> = Vec::new();
    for (tag, t) in &merged.series {
        let length = Duration::from_secs_f64(t.length_s);
        for (&slot, (h, _)) in &t.bins {
            rows.push((tag, length * slot as u32, length, h));
        }
    }
    rows.sort_by_key(|r| r.1);
    crate::hdr_log::write_tagged(path, &rows, started)
}

fn add_json(merged: &mut Merged, json: &Value) -> anyhow::Result<()> {
    let n = |key: &str| json[key].as_f64().unwrap_or(0.0);
    let sum = |key: &str| {
        json[key]
            .as_object()
            .map_or(0.0, |e| e.values().filter_map(Value::as_f64).sum())
    };
    let load = |t: &mut LoadTotals| {
        t.runs += 1;
        t.span.add(json);
        t.scheduled += n("scheduled") as u64;
        t.requests += n("requests") as u64;
        t.timeouts += n("timeouts") as u64;
        t.unsent += n("unsent") as u64;
        t.errors += sum("errors") as u64;
        t.requests_per_sec += n("requests_per_sec");
        t.bytes_sent += n("bytes_sent") as u64;
        t.bytes_received += n("bytes_received") as u64;
    };
    match json["mode"].as_str() {
        Some("tcp") => load(merged.tcp.get_or_insert_with(LoadTotals::default)),
        Some("http") => load(merged.http.get_or_insert_with(LoadTotals::default)),
        Some("http-fetch") => {
            let f = merged.fetches.get_or_insert_with(FetchTotals::default);
            f.runs += 1;
            f.body_bytes += n("body_bytes") as u64;
            f.not_ok += u64::from(!(200.0..300.0).contains(&n("status")));
        }
        Some("udp") => {
            let u = merged.udp.get_or_insert_with(UdpTotals::default);
            u.runs += 1;
            u.span.add(json);
            let never_left = json["loss"]["not_sent"].as_f64().unwrap_or(0.0)
                + json["loss"]["refused"].as_f64().unwrap_or(0.0);
            u.offered += (n("sent") + never_left) as u64;
            u.sent += n("sent") as u64;
            u.received += n("received") as u64;
            u.lost += n("lost") as u64;
            u.achieved_pps += n("achieved_pps");
        }
        other => bail!("a result of mode {other:?}; tcp, http, http-fetch and udp results merge"),
    }
    Ok(())
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Prints the merged report.
pub fn print(m: &Merged) {
    println!("merged {} file(s)", m.files);
    for difference in &m.manifest_differences {
        println!("  ! made differently: {difference}");
    }
    if let Some(spread) = m.start_spread_ms {
        let tags: Vec<&str> = m.sources.iter().filter_map(|s| s.tag.as_deref()).collect();
        let woke = m.max_start_lateness_ms.map_or(String::new(), |late| {
            format!("; the latest thread woke {late:.3} ms after its start")
        });
        println!(
            "  started within {spread:.3} ms of each other{}{woke}",
            if tags.is_empty() {
                String::new()
            } else {
                format!(" ({})", tags.join(", "))
            }
        );
    }
    for (name, t) in [("tcp", &m.tcp), ("http", &m.http)] {
        if let Some(t) = t {
            println!(
                "  {name:<9} {} run(s): {} requests, {:.0} req/s together ({:.0} req/s over their {:.2} s span); scheduled {}, timeouts {}, errors {}, unsent {}; {} B sent, {} B received",
                t.runs, t.requests, t.requests_per_sec, t.span_rate, t.span_s, t.scheduled, t.timeouts, t.errors, t.unsent, t.bytes_sent, t.bytes_received
            );
        }
    }
    if let Some(f) = &m.fetches {
        println!(
            "  fetches   {}: {} B of bodies, {} not 2xx",
            f.runs, f.body_bytes, f.not_ok
        );
    }
    if let Some(u) = &m.udp {
        println!(
            "  udp       {} run(s): offered {}, sent {}, received {}, lost {} ({:.3} % of offered), {:.0} datagrams/s together",
            u.runs, u.offered, u.sent, u.received, u.lost, u.loss_pct, u.achieved_pps
        );
    }
    for (tag, p) in &m.histograms {
        println!("  {tag:<9} {}", p.row());
    }
    for (tag, rows) in &m.intervals {
        if rows.len() < 2 {
            continue;
        }
        println!("  {tag} over time (start s, files, p50 / p99 / max us, samples):");
        for r in rows {
            let p = &r.latency_us;
            println!(
                "    {:>8.3}  {}  {:.1} / {:.1} / {:.1}  {}",
                r.start_s, r.sources, p.p50, p.p99, p.max, p.count
            );
        }
    }
    if m.histograms.is_empty() {
        println!("  (no --hdr-log files given: percentiles cannot be averaged, so none are shown)");
    }
}
