//! `loadgen --udp --cc`: a congestion-controlled UDP sender, driven by the
//! echoes' feedback: sequence gaps as loss, round trips as delay. TCP's
//! window arithmetic (Reno's AIMD) on a paced sender, in the spirit of TFRC
//! (RFC 5348), which is built to share a bottleneck with TCP:
//!
//! - the round trip is smoothed from the echoes (as TCP's SRTT);
//! - the sender keeps a window, in datagrams, and sends it once per
//!   smoothed round trip: rate = window / SRTT. So, like TCP's self-clocked
//!   window, its rate falls as a queue builds and the round trip grows (a
//!   sender that raised a *rate* by a fixed step would not, and would push
//!   a TCP flow out of a filling queue);
//! - once per round trip it looks at the sequence numbers that should have
//!   come back: a gap (beyond a reordering margin of three) is a loss event,
//!   and so is silence (datagrams out and no echo for four round trips, plus
//!   two sending intervals for slow rates);
//! - after a loss event the window halves (at most once per round trip, as
//!   TCP halves once per window of losses); without one it grows by one
//!   datagram per round trip (congestion avoidance), or doubles in the slow
//!   start before the first loss;
//! - as in TFRC, the rate never exceeds twice what the echoes say arrived
//!   in the last round trip, and a halving starts from what arrived: the
//!   sender cannot run far ahead of the path (slow start's overshoot into a
//!   full queue is what knocks a TCP flow beside it into a timeout).
//!
//! It is Reno's arithmetic, not TFRC's equation: simpler to follow in a
//! course, and as friendly to a Reno flow. Linux's CUBIC grows faster than
//! one segment per round trip once its window is large, so against CUBIC on
//! a long path this sender gets less than an equal share.

/// Gaps this close to the newest echo may be reordering, not loss.
const REORDER_MARGIN: u64 = 3;
/// The smallest window, datagrams.
const MIN_WINDOW: f64 = 2.0;
/// The slowest the sender goes, datagrams/s.
const FLOOR_PPS: f64 = 10.0;
/// The round trip assumed before the first echo.
const INITIAL_RTT_NS: f64 = 100e6;

/// The controller's state.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// Datagrams per round trip.
    window: f64,
    ceiling: f64,
    srtt_ns: Option<f64>,
    slow_start: bool,
    next_step_ns: u64,
    /// Sequence numbers below this were already judged.
    judged: u64,
    /// When the last echo came (or the start).
    last_echo_ns: u64,
    /// The previous step's time and echo count (for the receive rate).
    last_step: (u64, u64),
    /// Loss events reacted to.
    pub loss_events: u64,
}

impl Aimd {
    /// Starts at `initial` datagrams/s (over the assumed first round trip),
    /// never above `ceiling`.
    pub fn new(initial: f64, ceiling: f64, now_ns: u64) -> Self {
        Self {
            window: (initial * INITIAL_RTT_NS / 1e9).max(MIN_WINDOW),
            ceiling,
            srtt_ns: None,
            slow_start: true,
            next_step_ns: now_ns,
            judged: 0,
            last_echo_ns: now_ns,
            last_step: (now_ns, 0),
            loss_events: 0,
        }
    }

    /// The current rate, datagrams/s: the window over the round trip.
    pub fn rate(&self) -> f64 {
        (self.window * 1e9 / self.srtt_ns()).clamp(FLOOR_PPS, self.ceiling.max(FLOOR_PPS))
    }

    /// The window, datagrams per round trip.
    pub fn window(&self) -> f64 {
        self.window
    }

    /// The smoothed round trip, nanoseconds.
    pub fn srtt_ns(&self) -> f64 {
        self.srtt_ns.unwrap_or(INITIAL_RTT_NS)
    }

    /// An echo came back after `rtt_ns`, at `now_ns`.
    pub fn on_echo(&mut self, rtt_ns: u64, now_ns: u64) {
        let rtt = rtt_ns as f64;
        self.srtt_ns = Some(match self.srtt_ns {
            Some(s) => s * 0.875 + rtt * 0.125,
            None => rtt,
        });
        self.last_echo_ns = now_ns;
    }

    /// Once per round trip (when `now_ns` reaches the next step): judges the
    /// datagrams that should be back (`seen` holds one bit per sequence
    /// number, `highest` is the newest echoed; `sent` left, `echoed` came
    /// back), adjusts the window, and returns the new rate if it changed.
    pub fn step(
        &mut self,
        now_ns: u64,
        seen: &[u64],
        highest: Option<u64>,
        sent: u64,
        echoed: u64,
    ) -> Option<f64> {
        if now_ns < self.next_step_ns {
            return None;
        }
        let srtt = self.srtt_ns();
        self.next_step_ns = now_ns + srtt.max(1e6) as u64;
        // What arrived since the last step, in datagrams per round trip
        // (None: too soon to say).
        let (then, echoed_then) = self.last_step;
        let elapsed = now_ns.saturating_sub(then) as f64;
        let arrived = (elapsed >= 1e6 && echoed > echoed_then)
            .then(|| (echoed - echoed_then) as f64 * srtt / elapsed);
        self.last_step = (now_ns, echoed);
        let until = highest.map_or(0, |h| h.saturating_sub(REORDER_MARGIN));
        let mut lost = false;
        for seq in self.judged..until {
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if seen.get(word).is_none_or(|w| w & (1 << bit) == 0) {
                lost = true;
                break;
            }
        }
        self.judged = self.judged.max(until);
        let before = self.rate();
        let patience = 4.0 * srtt + 2e9 / before;
        let silent = sent > echoed && now_ns.saturating_sub(self.last_echo_ns) as f64 > patience;
        if lost || silent {
            self.loss_events += 1;
            self.slow_start = false;
            let from = arrived.map_or(self.window, |a| self.window.min(a));
            self.window = (from * 0.5).max(MIN_WINDOW);
            if silent {
                self.last_echo_ns = now_ns; // one halving per silent stretch
            }
        } else {
            let grown = if self.slow_start {
                self.window * 2.0
            } else {
                self.window + 1.0
            };
            let cap = arrived.map_or(f64::MAX, |a| 2.0 * a);
            self.window = grown
                .min(cap)
                .min(self.ceiling * srtt / 1e9)
                .max(MIN_WINDOW);
        }
        let after = self.rate();
        (after != before).then_some(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn bitmap(echoed: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut seen = vec![0u64; 64];
        for seq in echoed {
            seen[(seq / 64) as usize] |= 1 << (seq % 64);
        }
        seen
    }

    #[test]
    fn the_window_doubles_until_a_loss_then_halves_and_grows_by_one() {
        // 100/s over the assumed 100 ms: a window of 10.
        let mut cc = Aimd::new(100.0, 1e6, 0);
        assert_eq!(cc.window(), 10.0);
        cc.on_echo(10 * MS, 0);
        assert_eq!(cc.rate(), 1000.0, "10 datagrams per 10 ms round trip");
        let all = bitmap(0..4000);
        assert_eq!(cc.step(0, &all, Some(9), 10, 10), Some(2000.0));
        assert_eq!(
            cc.step(5 * MS, &all, Some(19), 20, 20),
            None,
            "once per round trip"
        );
        // 20 arrived in the 10 ms round trip: the window may double to 40.
        assert_eq!(cc.step(10 * MS, &all, Some(29), 30, 30), Some(4000.0));
        // Datagram 100 never came back, later ones did: halve (from 40).
        let gap = bitmap((0..4000).filter(|&s| s != 100));
        assert_eq!(cc.step(20 * MS, &gap, Some(200), 201, 70), Some(2000.0));
        assert_eq!((cc.loss_events, cc.window()), (1, 20.0));
        // Congestion avoidance: one more datagram per round trip.
        assert_eq!(cc.step(30 * MS, &gap, Some(230), 231, 90), Some(2100.0));
        assert_eq!(cc.window(), 21.0);
    }

    #[test]
    fn a_growing_queue_slows_the_sender_as_it_slows_tcp() {
        let mut cc = Aimd::new(100.0, 1e6, 0);
        cc.on_echo(10 * MS, 0);
        let rate = cc.rate();
        // The same window over a round trip that a queue doubled.
        for _ in 0..40 {
            cc.on_echo(20 * MS, 0);
        }
        assert!(cc.rate() < rate * 0.55, "{} then {}", rate, cc.rate());
    }

    #[test]
    fn reordering_within_the_margin_is_not_loss_and_silence_is() {
        let mut cc = Aimd::new(100.0, 1e6, 0);
        cc.on_echo(10 * MS, 0);
        // 97 missing, but only 3 newer echoes: maybe reordered.
        let seen = bitmap((0..=100).filter(|&s| s != 97));
        assert_eq!(cc.step(0, &seen, Some(100), 101, 100), Some(2000.0));
        assert_eq!(cc.loss_events, 0);
        // Datagrams out and no echo for four round trips: a loss event.
        assert_eq!(cc.step(100 * MS, &seen, Some(100), 5000, 100), Some(1000.0));
        assert_eq!(cc.loss_events, 1);
    }

    #[test]
    fn the_window_stays_within_twice_what_arrived() {
        let mut cc = Aimd::new(100.0, 1e6, 0);
        cc.on_echo(10 * MS, 0);
        let all = bitmap(0..4000);
        assert_eq!(cc.step(0, &all, Some(9), 10, 10), Some(2000.0));
        // Only 5 arrived in the round trip: a window of 10 at most.
        cc.on_echo(10 * MS, 9 * MS);
        assert_eq!(cc.step(10 * MS, &all, Some(14), 40, 15), Some(1000.0));
        assert_eq!(cc.window(), 10.0);
    }
}
