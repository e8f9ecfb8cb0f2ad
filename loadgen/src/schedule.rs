//! Open-loop rate profiles: a constant rate, a linear ramp, steps, or a
//! file of (second, rate) points, and when each request falls due under
//! one. The rate between two points changes linearly (a step is two points
//! at the same second) and holds at the last point's rate after it.
//! Request `k` (from 0) falls due at the instant `t` where the requests
//! due so far, the integral of the rate from 0 to `t`, reach `k`.

use std::time::Duration;

/// A rate over the run's time, in requests per second.
#[derive(Debug, Clone, PartialEq)]
pub struct RateProfile {
    /// (second, rate) points, seconds non-decreasing, the first at 0.
    points: Vec<(f64, f64)>,
    /// Requests due by each point (the integral up to it).
    due_by: Vec<f64>,
    /// How the profile was given, for reports.
    text: String,
    /// Whether the rate ever changes.
    constant: bool,
}

impl RateProfile {
    fn from_points(points: Vec<(f64, f64)>, text: String) -> Result<Self, String> {
        if points.is_empty() || points[0].0 != 0.0 {
            return Err("a rate profile starts at second 0".into());
        }
        for w in points.windows(2) {
            if w[1].0 < w[0].0 {
                return Err(format!("the profile's seconds go back at {}", w[1].0));
            }
        }
        if points
            .iter()
            .any(|&(t, r)| !t.is_finite() || !r.is_finite() || r < 0.0)
        {
            return Err("a profile's rates and seconds are finite and not negative".into());
        }
        if points.iter().all(|&(_, r)| r == 0.0) {
            return Err("the profile never sends: every rate is 0".into());
        }
        let mut due_by = vec![0.0];
        for w in points.windows(2) {
            let ((t0, r0), (t1, r1)) = (w[0], w[1]);
            due_by.push(due_by[due_by.len() - 1] + (r0 + r1) / 2.0 * (t1 - t0));
        }
        let constant = points.iter().all(|&(_, r)| r == points[0].1);
        Ok(Self {
            points,
            due_by,
            text,
            constant,
        })
    }

    /// `rate` requests per second throughout.
    pub fn constant(rate: f64) -> Self {
        Self {
            points: vec![(0.0, rate)],
            due_by: vec![0.0],
            text: format!("{rate}"),
            constant: true,
        }
    }

    /// From `from` to `to` per second, linearly over `over`.
    pub fn ramp(from: f64, to: f64, over: Duration, text: String) -> Result<Self, String> {
        Self::from_points(vec![(0.0, from), (over.as_secs_f64(), to)], text)
    }

    /// Each rate of `rates` in turn, for an equal share of `over`.
    pub fn steps(rates: &[f64], over: Duration, text: String) -> Result<Self, String> {
        let each = over.as_secs_f64() / rates.len() as f64;
        let mut points = Vec::new();
        for (i, &r) in rates.iter().enumerate() {
            points.push((each * i as f64, r));
            points.push((each * (i + 1) as f64, r));
        }
        Self::from_points(points, text)
    }

    /// A file of `second,rate` rows (`#` comments and blank lines skipped;
    /// rates take k/M suffixes).
    pub fn from_file_text(text: &str, name: &str) -> Result<Self, String> {
        let mut points = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("line {}: {line:?} is not SECONDS,RATE", n + 1);
            let (t, r) = line.split_once(',').ok_or_else(bad)?;
            let t: f64 = t.trim().parse().map_err(|_| bad())?;
            let r = protocols::units::parse_rate(r.trim())
                .or_else(|e| if r.trim() == "0" { Ok(0.0) } else { Err(e) })
                .map_err(|e| format!("line {}: {e}", n + 1))?;
            points.push((t, r));
        }
        Self::from_points(points, format!("file {name}"))
    }

    /// The profile for one of `threads` threads sharing it equally.
    pub fn share(&self, threads: usize) -> Self {
        let f = 1.0 / threads as f64;
        Self {
            points: self.points.iter().map(|&(t, r)| (t, r * f)).collect(),
            due_by: self.due_by.iter().map(|d| d * f).collect(),
            text: self.text.clone(),
            constant: self.constant,
        }
    }

    /// The last point's second: where a ramp, steps or a file end.
    pub fn length(&self) -> f64 {
        self.points[self.points.len() - 1].0
    }

    /// True when the rate never changes.
    pub fn is_constant(&self) -> bool {
        self.constant
    }

    /// How it was given (`10000`, `10k..100k`, `file rates.csv`).
    pub fn describe(&self) -> &str {
        &self.text
    }

    /// The rate at second `t`.
    pub fn rate_at(&self, t: f64) -> f64 {
        let i = self.points.partition_point(|&(pt, _)| pt <= t);
        match self.points.get(i) {
            None => self.points[self.points.len() - 1].1,
            Some(&(t1, r1)) => {
                let (t0, r0) = self.points[i - 1];
                r0 + (r1 - r0) * (t - t0) / (t1 - t0)
            }
        }
    }

    /// Requests due in the first `t` seconds (the rate's integral).
    pub fn due_within(&self, t: f64) -> f64 {
        let i = self.points.partition_point(|&(pt, _)| pt <= t) - 1;
        let (t0, r0) = self.points[i];
        let dt = t - t0;
        self.due_by[i] + r0 * dt + (self.rate_at(t) - r0) * dt / 2.0
    }

    /// The mean rate over the first `t` seconds.
    pub fn mean_over(&self, t: f64) -> f64 {
        if t <= 0.0 {
            self.points[0].1
        } else {
            self.due_within(t) / t
        }
    }

    /// When request `k` (from 0) falls due, seconds from the start; None
    /// if it never does (the rate ends at 0 before it).
    pub fn due(&self, k: u64) -> Option<f64> {
        let k = k as f64;
        // The last point whose requests-due-by is at most k.
        let i = self.due_by.partition_point(|&d| d <= k).max(1) - 1;
        let (t0, r0) = self.points[i];
        let left = k - self.due_by[i];
        let slope = match self.points.get(i + 1) {
            Some(&(t1, r1)) if t1 > t0 => (r1 - r0) / (t1 - t0),
            Some(_) => 0.0,
            None => {
                return (r0 > 0.0).then(|| t0 + left / r0);
            }
        };
        // r0 τ + slope τ² / 2 = left, in the form that stays exact when
        // the slope is 0 or tiny.
        let root = (r0 * r0 + 2.0 * slope * left).max(0.0).sqrt();
        let tau = if r0 + root > 0.0 {
            2.0 * left / (r0 + root)
        } else {
            0.0
        };
        Some(t0 + tau)
    }
}

/// Parses `--rate`'s open-loop forms: `RATE`, `FROM..TO` (a ramp over the
/// run) or `R1,R2,...` (steps of equal length); the run's length comes
/// later, so ramps and steps are kept as their rates.
#[derive(Debug, Clone, PartialEq)]
pub enum RateSpec {
    /// One rate.
    Constant(f64),
    /// A linear ramp over the run.
    Ramp(f64, f64),
    /// Rates in turn, each for an equal share of the run.
    Steps(Vec<f64>),
}

impl RateSpec {
    /// Parses `RATE`, `FROM..TO` or `R1,R2,...`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rate = |t: &str| protocols::units::parse_rate(t.trim());
        if let Some((from, to)) = text.split_once("..") {
            return Ok(RateSpec::Ramp(rate(from)?, rate(to)?));
        }
        if text.contains(',') {
            let rates = text.split(',').map(rate).collect::<Result<Vec<_>, _>>()?;
            return Ok(RateSpec::Steps(rates));
        }
        rate(text).map(RateSpec::Constant)
    }

    /// The profile over a run of `length`.
    pub fn profile(&self, length: Duration) -> Result<RateProfile, String> {
        match self {
            RateSpec::Constant(r) => Ok(RateProfile::constant(*r)),
            RateSpec::Ramp(from, to) => {
                RateProfile::ramp(*from, *to, length, format!("ramp {from}..{to} per second"))
            }
            RateSpec::Steps(rates) => {
                let text: Vec<String> = rates.iter().map(|r| r.to_string()).collect();
                RateProfile::steps(
                    rates,
                    length,
                    format!("steps {} per second", text.join(",")),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn a_constant_rate_spaces_requests_evenly() {
        let p = RateProfile::constant(1000.0);
        assert!(close(p.due(0).unwrap(), 0.0));
        assert!(close(p.due(1).unwrap(), 0.001));
        assert!(close(p.due(5000).unwrap(), 5.0));
        assert!(close(p.due_within(2.5), 2500.0));
    }

    #[test]
    fn a_ramp_sends_its_integral_and_due_inverts_it() {
        // 10k/s to 100k/s over 30 s: 30 * 55k = 1.65M requests.
        let p =
            RateProfile::ramp(10_000.0, 100_000.0, Duration::from_secs(30), "r".into()).unwrap();
        assert!(close(p.due_within(30.0), 1_650_000.0));
        assert!(close(p.rate_at(15.0), 55_000.0));
        // Each second holds what its integral says: the first 10k + 1.5k.
        assert!(close(p.due_within(1.0), 11_500.0));
        for k in [0u64, 1, 999, 11_500, 400_000, 1_649_999] {
            let t = p.due(k).unwrap();
            assert!(close(p.due_within(t), k as f64), "k {k} at {t}");
        }
        // Past the end the last rate holds.
        assert!(close(p.due(1_650_000 + 100_000).unwrap(), 31.0));
    }

    #[test]
    fn steps_and_files_hold_each_rate_for_its_stretch() {
        let p = RateProfile::steps(&[100.0, 300.0], Duration::from_secs(4), "s".into()).unwrap();
        assert!(close(p.due_within(2.0), 200.0));
        assert!(close(p.due_within(4.0), 800.0));
        assert!(close(p.due(200).unwrap(), 2.0));
        assert!(close(p.due(500).unwrap(), 3.0));
        let f = RateProfile::from_file_text("# ramp then hold\n0,1k\n2,3k\n\n5,3k\n", "f").unwrap();
        assert!(close(f.due_within(2.0), 4000.0));
        assert!(close(f.due_within(5.0), 13_000.0));
        assert!(close(f.rate_at(1.0), 2000.0));
        // A rate that falls to 0 for good: the requests past it never fall due.
        let stop = RateProfile::from_file_text("0,10\n1,10\n1,0\n", "g").unwrap();
        assert!(stop.due(9).is_some());
        assert!(stop.due(10).is_none());
    }

    #[test]
    fn bad_profiles_say_why() {
        assert!(RateProfile::from_file_text("1,5\n", "f")
            .unwrap_err()
            .contains("second 0"));
        assert!(RateProfile::from_file_text("0,5\n3,5\n2,5\n", "f")
            .unwrap_err()
            .contains("go back"));
        assert!(RateProfile::from_file_text("0,x\n", "f")
            .unwrap_err()
            .contains("line 1"));
        assert!(RateProfile::from_file_text("0;5\n", "f")
            .unwrap_err()
            .contains("SECONDS,RATE"));
        assert!(RateProfile::from_file_text("0,0\n", "f")
            .unwrap_err()
            .contains("never sends"));
        assert_eq!(
            RateSpec::parse("10k..100k"),
            Ok(RateSpec::Ramp(10_000.0, 100_000.0))
        );
        assert_eq!(
            RateSpec::parse("1k,2k"),
            Ok(RateSpec::Steps(vec![1000.0, 2000.0]))
        );
        assert_eq!(RateSpec::parse("5k"), Ok(RateSpec::Constant(5000.0)));
        assert!(RateSpec::parse("a..b").is_err());
    }

    #[test]
    fn threads_share_a_profile_equally() {
        let p = RateProfile::ramp(1000.0, 3000.0, Duration::from_secs(2), "r".into()).unwrap();
        let half = p.share(2);
        assert!(close(half.due_within(2.0) * 2.0, p.due_within(2.0)));
        assert!(close(half.due(1000).unwrap(), p.due(2000).unwrap()));
    }
}
