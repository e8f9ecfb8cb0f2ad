//! Pacing: a token bucket that releases small batches at absolute deadlines.
//!
//! Sleeping once per packet cannot hold a million packets per second (each
//! wake-up costs more than the gap), so packets leave in batches of
//! `quantum`, each batch at its own absolute deadline: `clock_nanosleep`
//! with TIMER_ABSTIME for most of a long gap, a short spin for the rest. A
//! sender that falls behind catches up in larger batches (bounded by the
//! caller), and the report shows the largest.

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `deadline_ns` (CLOCK_MONOTONIC): the kernel timer for all but
/// the last `spin_ns`, then a spin, so the wake-up is on time.
pub fn sleep_until(deadline_ns: u64, spin_ns: u64) {
    let now = now_ns();
    if deadline_ns > now + spin_ns {
        let wake = deadline_ns - spin_ns;
        let ts = libc::timespec {
            tv_sec: (wake / 1_000_000_000) as libc::time_t,
            tv_nsec: (wake % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `ts` is valid; no remaining-time output is requested.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
    }
    while now_ns() < deadline_ns {
        std::hint::spin_loop();
    }
}

/// The schedule of a paced run: packet `k` is due at `base + (k - base_k)
/// / rate`; a congestion controller moves the base when it changes the rate.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    base_ns: u64,
    base_k: u64,
    ns_per_packet: f64,
    batch_ns: u64,
    max_quantum: u64,
    /// Packets per release when on time.
    pub quantum: u64,
}

impl Pacer {
    /// A schedule for `rate` packets/s from `start_ns`, releasing batches that
    /// span about `batch_ns` (at least one packet, at most `max_quantum`).
    pub fn new(start_ns: u64, rate: f64, batch_ns: u64, max_quantum: u64) -> Self {
        let quantum = ((rate * batch_ns as f64 / 1e9).ceil() as u64).clamp(1, max_quantum.max(1));
        Self {
            base_ns: start_ns,
            base_k: 0,
            ns_per_packet: 1e9 / rate,
            batch_ns,
            max_quantum,
            quantum,
        }
    }

    /// From packet `k` on, `rate` packets/s, the first of them due at
    /// `now_ns`.
    pub fn retime(&mut self, now_ns: u64, k: u64, rate: f64) {
        *self = Pacer {
            base_k: k,
            ..Pacer::new(now_ns, rate, self.batch_ns, self.max_quantum)
        };
    }

    /// The rate, packets/s.
    pub fn rate(&self) -> f64 {
        1e9 / self.ns_per_packet
    }

    /// When packet `k` is due.
    pub fn due_ns(&self, k: u64) -> u64 {
        self.base_ns + (k.saturating_sub(self.base_k) as f64 * self.ns_per_packet) as u64
    }

    /// When the release that starts with packet `sent` may go: once the last
    /// packet of its quantum is due.
    pub fn next_release_ns(&self, sent: u64) -> u64 {
        self.due_ns(sent + self.quantum - 1)
    }

    /// How many packets are due at `now_ns` beyond the `sent` already sent.
    pub fn due_count(&self, now_ns: u64, sent: u64) -> u64 {
        if now_ns < self.base_ns {
            return 0;
        }
        let due = self.base_k + ((now_ns - self.base_ns) as f64 / self.ns_per_packet) as u64 + 1;
        due.saturating_sub(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_quantum() {
        // 1M packets/s in 16 us batches: 16 packets per release.
        let p = Pacer::new(1_000, 1e6, 16_000, 64);
        assert_eq!(p.quantum, 16);
        assert_eq!(p.due_ns(0), 1_000);
        assert_eq!(p.due_ns(1_000_000), 1_000 + 1_000_000_000);
        assert_eq!(p.next_release_ns(0), 1_000 + 15_000);
        assert_eq!(p.due_count(999, 0), 0);
        assert_eq!(p.due_count(1_000, 0), 1);
        assert_eq!(p.due_count(1_000 + 15_500, 0), 16);
        assert_eq!(p.due_count(1_000 + 15_500, 16), 0);
        // Slow rates send one packet at a time; the cap holds for floods of due packets.
        assert_eq!(Pacer::new(0, 20e3, 16_000, 64).quantum, 1);
        assert_eq!(Pacer::new(0, 1e9, 16_000, 64).quantum, 64);
    }

    #[test]
    fn sleep_until_wakes_on_time() {
        let target = now_ns() + 2_000_000;
        sleep_until(target, 50_000);
        let late = now_ns() - target;
        assert!(now_ns() >= target);
        // Generous: a loaded CI machine may be late, but not by a whole 50 ms.
        assert!(late < 50_000_000, "woke {late} ns late");
    }
}
