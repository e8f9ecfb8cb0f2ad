//! Latency recording with exact percentiles (HdrHistogram, 3 significant digits).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Lowest and highest latency the histograms track, in nanoseconds.
const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 120_000_000_000;

/// A fresh latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants the crate accepts; failure would be a bug here.
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 3).expect("valid histogram bounds")
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

#[cfg(test)]
mod tests {
    use super::*;

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
