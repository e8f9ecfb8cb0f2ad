//! A point in time in 8 bytes, for what every connection keeps: an idle
//! connection pays for each of its timestamps, and `Instant` takes 16.

use std::num::NonZeroU64;
use std::ops::Add;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An `Instant` as nanoseconds since an epoch a day before the process's
/// first `Moment` (or as far back as the clock goes, on a machine up for
/// less), plus one so that `Option<Moment>` is 8 bytes too; 584 years of
/// range. Instants before the epoch read as it: none that the engine
/// keeps is, since every one is taken after the engine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Moment(NonZeroU64);

/// The instant every moment counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        [86_400, 3_600, 60, 1]
            .into_iter()
            .find_map(|back| now.checked_sub(Duration::from_secs(back)))
            .unwrap_or(now)
    })
}

impl Moment {
    /// The moment of `at`.
    pub(crate) fn of(at: Instant) -> Self {
        let nanos = at.saturating_duration_since(epoch()).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1);
        Self(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The instant this moment stands for (to within a nanosecond).
    pub(crate) fn instant(self) -> Instant {
        epoch() + Duration::from_nanos(self.0.get() - 1)
    }

    /// How long after `earlier` this is; zero if it is not after.
    pub(crate) fn since(self, earlier: Moment) -> Duration {
        Duration::from_nanos(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl Add<Duration> for Moment {
    type Output = Moment;

    /// `self` plus `d`, saturating at the end of the range.
    fn add(self, d: Duration) -> Moment {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Moment(self.0.saturating_add(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_keep_the_order_and_the_distance_of_instants() {
        let a = Instant::now();
        let b = a + Duration::from_millis(1500);
        let (ma, mb) = (Moment::of(a), Moment::of(b));
        assert!(ma < mb);
        assert_eq!(mb.since(ma), Duration::from_millis(1500));
        assert_eq!(ma.since(mb), Duration::ZERO);
        assert_eq!(ma + Duration::from_millis(1500), mb);
        assert_eq!(mb.instant(), b);
        assert_eq!(std::mem::size_of::<Option<Moment>>(), 8);
    }

    #[test]
    fn instants_before_the_epoch_and_endless_durations_saturate() {
        let now = Moment::of(Instant::now());
        if let Some(before) = epoch().checked_sub(Duration::from_secs(1)) {
            assert_eq!(Moment::of(before), Moment::of(epoch()));
        }
        let never = now + Duration::MAX;
        assert!(never > now + Duration::from_secs(1 << 30), "34 years on");
        assert_eq!(never + Duration::from_secs(1), never);
    }
}
