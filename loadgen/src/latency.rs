//! Latency recording with exact percentiles (HdrHistogram, 3 significant
//! digits), for the whole run and, for `--hdr-log`, per interval.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Lowest and highest latency the histograms track, in nanoseconds.
const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 120_000_000_000;

/// A fresh latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    histogram_of(3)
}

/// A latency histogram in nanoseconds to `digits` significant digits.
fn histogram_of(digits: u8) -> Histogram<u64> {
    // The bounds are constants the crate accepts; failure would be a bug here.
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, digits).expect("valid histogram bounds")
}

/// The percentiles every report shows, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Reads the percentiles of `h` (nanoseconds) in microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }

    /// One table row: `p50 … max` in microseconds.
    pub fn row(&self) -> String {
        format!(
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1} (us, {} samples)",
            self.p50, self.p90, self.p99, self.p999, self.p9999, self.max, self.count
        )
    }
}

/// A run's samples cut into intervals of equal length from the run's start
/// (the time series an HdrHistogram interval log holds).
#[derive(Debug, Clone)]
pub struct Series {
    every: Duration,
    bins: Vec<Histogram<u64>>,
    /// Significant digits of each interval's histogram.
    digits: u8,
}

impl Series {
    /// An empty series of intervals of `every` (at least 1 ms).
    pub fn new(every: Duration) -> Self {
        Self {
            every: every.max(Duration::from_millis(1)),
            bins: Vec::new(),
            digits: 3,
        }
    }

    /// As `new`, but each interval kept to two significant digits (1 %):
    /// about 22 KB an interval instead of 152, for figures only read as
    /// percentiles of a plot (a run's per-second p50 and p99).
    pub fn coarse(every: Duration) -> Self {
        Self {
            digits: 2,
            ..Self::new(every)
        }
    }

    /// Records `ns` in the interval holding the instant `after` the start.
    pub fn record_after(&mut self, after: Duration, ns: u64) {
        let i = (after.as_nanos() / self.every.as_nanos()) as usize;
        if self.bins.len() <= i {
            let digits = self.digits;
            self.bins.resize_with(i + 1, || histogram_of(digits));
        }
        self.bins[i].saturating_record(ns);
    }

    /// Adds `other`'s samples (same start and interval), interval by interval.
    pub fn merge(&mut self, other: &Series) -> Result<(), hdrhistogram::AdditionError> {
        if self.bins.len() < other.bins.len() {
            let digits = self.digits;
            self.bins
                .resize_with(other.bins.len(), || histogram_of(digits));
        }
        for (into, from) in self.bins.iter_mut().zip(&other.bins) {
            into.add(from)?;
        }
        Ok(())
    }

    /// Length of each interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The intervals in order, each with its offset from the start.
    pub fn intervals(&self) -> impl Iterator<Item = (Duration, &Histogram<u64>)> {
        let every = self.every;
        self.bins
            .iter()
            .enumerate()
            .map(move |(i, h)| (every * i as u32, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_cut_samples_by_their_instant() {
        let mut a = Series::new(Duration::from_secs(1));
        a.record_after(Duration::ZERO, 5_000);
        a.record_after(Duration::from_millis(2_500), 7_000);
        let mut b = Series::new(Duration::from_secs(1));
        b.record_after(Duration::from_millis(999), 9_000);
        a.merge(&b).unwrap();
        let counts: Vec<(u64, u64)> = a
            .intervals()
            .map(|(at, h)| (at.as_secs(), h.len()))
            .collect();
        assert_eq!(counts, vec![(0, 2), (1, 0), (2, 1)]);
    }

    #[test]
    fn coarse_intervals_keep_two_digits_in_a_sixth_of_the_memory() {
        let (fine, coarse) = (histogram(), histogram_of(2));
        // One u64 counter per distinct value a histogram can tell apart.
        let bytes = |h: &Histogram<u64>| h.distinct_values() * 8;
        assert!(
            bytes(&coarse) * 6 <= bytes(&fine),
            "{} vs {}",
            bytes(&coarse),
            bytes(&fine)
        );
        assert!(bytes(&coarse) <= 32 * 1024, "{}", bytes(&coarse));
        let mut s = Series::coarse(Duration::from_secs(1));
        s.record_after(Duration::ZERO, 1_234_567);
        let (_, h) = s.intervals().next().unwrap();
        // Within 1 %: two significant digits.
        assert!((h.max() as f64 - 1_234_567.0).abs() / 1_234_567.0 < 0.01);
    }

    #[test]
    fn percentiles_are_exact_to_three_digits() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p99 - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() <= 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
    }
}
