//! Latency histograms as standard HdrHistogram interval logs (`--hdr-log`),
//! readable by HdrHistogram's own tools and by `loadgen report`, which merges
//! logs from several runs or machines into exact combined percentiles.
//! Values are nanoseconds; the log's max-value divisor makes its readers
//! show microseconds.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use crate::latency::Series;

/// Writes the run's intervals, each tagged `tag`: one histogram per
/// interval of `series` (empty intervals included, so a plot over time shows
/// the gaps).
pub fn write_series(
    path: &Path,
    tag: &str,
    series: &Series,
    started: SystemTime,
) -> anyhow::Result<()> {
    let every = series.every();
    let intervals: Vec<(Duration, Duration, &Histogram<u64>)> =
        series.intervals().map(|(at, h)| (at, every, h)).collect();
    write_intervals(path, tag, &intervals, started)
}

/// Writes several tagged histograms of one run (say latency and service
/// time): each one's intervals when it has them, else one interval
/// covering the whole run.
pub fn write_runs(
    path: &Path,
    runs: &[(&str, &Histogram<u64>, &Option<Series>)],
    started: SystemTime,
    duration: Duration,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &(tag, whole, series) in runs {
        match series {
            Some(series) => {
                let every = series.every();
                rows.extend(series.intervals().map(|(at, h)| (tag, at, every, h)));
            }
            None => rows.push((tag, Duration::ZERO, duration, whole)),
        }
    }
    // Interval by interval, as log readers expect them in time order.
    rows.sort_by_key(|&(_, at, _, _)| at);
    write_tagged(path, &rows, started)
}

/// Writes one interval covering the whole run, tagged `tag`.
pub fn write(
    path: &Path,
    tag: &str,
    histogram: &Histogram<u64>,
    started: SystemTime,
    duration: Duration,
) -> anyhow::Result<()> {
    write_intervals(path, tag, &[(Duration::ZERO, duration, histogram)], started)
}

/// Writes `(offset from started, length, histogram)` intervals, all tagged
/// `tag`.
pub fn write_intervals(
    path: &Path,
    tag: &str,
    intervals: &[(Duration, Duration, &Histogram<u64>)],
    started: SystemTime,
) -> anyhow::Result<()> {
    let rows: Vec<_> = intervals
        .iter()
        .map(|&(offset, length, h)| (tag, offset, length, h))
        .collect();
    write_tagged(path, &rows, started)
}

/// Writes `(tag, offset from started, length, histogram)` intervals.
pub fn write_tagged(
    path: &Path,
    intervals: &[(&str, Duration, Duration, &Histogram<u64>)],
    started: SystemTime,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("ringcore loadgen latency, nanoseconds")
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| anyhow::anyhow!("starting the log: {e}"))?;
    for &(tag, offset, length, histogram) in intervals {
        log.write_histogram(histogram, offset, length, Tag::new(tag))
            .map_err(|e| anyhow::anyhow!("writing a histogram: {e}"))?;
    }
    drop(log);
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// One interval of a log: its tag, when it began (seconds since the Unix
/// epoch when the log has a BaseTime or StartTime, else since the log's
/// own zero), how long it lasted, and its histogram.
#[derive(Debug)]
pub struct Interval {
    /// The tag (`latency`, `rtt`), if any.
    pub tag: Option<String>,
    /// Start, in seconds.
    pub start_s: f64,
    /// Length, in seconds.
    pub length_s: f64,
    /// The histogram.
    pub histogram: Histogram<u64>,
}

/// Reads every interval histogram of a log.
pub fn read(path: &Path) -> anyhow::Result<Vec<Interval>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut found = Vec::new();
    // Interval timestamps count from BaseTime when there is one; a log
    // without one holds absolute timestamps (or ones from its own zero).
    let mut base = None;
    let mut start_time = None;
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry
            .map_err(|e| anyhow::anyhow!("{} is not an HdrHistogram log: {e:?}", path.display()))?;
        match entry {
            LogEntry::BaseTime(t) => base = Some(t.as_secs_f64()),
            LogEntry::StartTime(t) => start_time = Some(t.as_secs_f64()),
            LogEntry::Interval(interval) => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .decode(interval.encoded_histogram())
                    .with_context(|| {
                        format!("{}: a histogram is not valid base64", path.display())
                    })?;
                let histogram: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut encoded.as_slice())
                    .map_err(|e| {
                        anyhow::anyhow!("{}: a histogram does not decode: {e:?}", path.display())
                    })?;
                let offset = interval.start_timestamp().as_secs_f64();
                found.push(Interval {
                    tag: interval.tag().map(|t| t.as_str().to_string()),
                    start_s: base.or(start_time).map_or(offset, |b| b + offset),
                    length_s: interval.duration().as_secs_f64(),
                    histogram,
                });
            }
        }
    }
    if found.is_empty() {
        bail!("{} holds no histogram", path.display());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_log_reads_back_the_same_histogram() {
        let mut h = crate::latency::histogram();
        for v in [1_500u64, 20_000, 3_000_000] {
            h.record(v).unwrap();
        }
        let path = std::env::temp_dir().join(format!("ringcore-hdr-{}.hlog", std::process::id()));
        write(
            &path,
            "latency",
            &h,
            SystemTime::now(),
            Duration::from_secs(2),
        )
        .unwrap();
        let back = read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].tag.as_deref(), Some("latency"));
        assert_eq!(back[0].histogram, h);
        assert_eq!(back[0].length_s, 2.0);
    }
}
