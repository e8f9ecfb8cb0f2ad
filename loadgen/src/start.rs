//! `--start-at`: load agents on several machines (with NTP-synced clocks)
//! begin at one wall-clock instant, so their results merge as one run.
//!
//! The instant is the run's anchor: everything costly (rings, buffers,
//! sockets) is set up before it, every load thread sleeps until it, and an
//! open-loop schedule counts from it even if a thread wakes a little late
//! (those requests are then late, and their latency says so).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;

use crate::pacer::{now_ns, sleep_until};

/// A start this far in the past is a mistake, not a late agent.
const TOO_LATE: Duration = Duration::from_secs(10);

/// The monotonic instant at which the wall clock will read `at` (or read
/// it, a moment ago). The wait that follows runs on the monotonic clock, so
/// a wall-clock step during it does not stretch or cut it.
pub fn anchor(at: SystemTime) -> anyhow::Result<Instant> {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => Ok(now + ahead),
        Err(past) if past.duration() <= TOO_LATE => Ok(now.checked_sub(past.duration()).unwrap_or(now)),
        Err(past) => bail!(
            "--start-at is {:.1} s in the past: give a time ahead of every agent's start (e.g. +30s, or a time a minute from now)",
            past.duration().as_secs_f64()
        ),
    }
}

/// Sleeps until `at`; how late it woke.
pub fn sleep_until_instant(at: Instant) -> Duration {
    if let Some(ahead) = at.checked_duration_since(Instant::now()) {
        sleep_until(now_ns() + ahead.as_nanos() as u64, 0);
    }
    Instant::now().saturating_duration_since(at)
}

/// The wall-clock time of monotonic instant `at`.
pub fn wall_time_of(at: Instant) -> SystemTime {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => SystemTime::now() + ahead,
        None => SystemTime::now() - now.duration_since(at),
    }
}

/// `t` in Unix seconds.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_on_the_wall_clock_and_refuses_the_distant_past() {
        let at = SystemTime::now() + Duration::from_millis(30);
        let late = sleep_until_instant(anchor(at).unwrap());
        assert!(SystemTime::now() >= at - Duration::from_millis(1));
        assert!(late < Duration::from_millis(50), "{late:?}");
        let past = SystemTime::now() - Duration::from_secs(60);
        assert!(anchor(past)
            .unwrap_err()
            .to_string()
            .contains("in the past"));
        let then = SystemTime::now() - Duration::from_secs(2);
        assert!(anchor(then).unwrap() < Instant::now());
        let drift = unix_seconds(wall_time_of(anchor(at).unwrap())) - unix_seconds(at);
        assert!(drift.abs() < 0.001, "{drift}");
    }
}
