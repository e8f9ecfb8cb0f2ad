//! The once-a-second progress line on stderr, fed by counters the load
//! threads publish.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Counters the load threads add to and the progress line reads.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests (TCP) or datagrams (UDP) completed.
    pub done: AtomicU64,
    /// Errors (TCP) or datagrams not sent (UDP).
    pub errors: AtomicU64,
    /// Replies received (UDP).
    pub received: AtomicU64,
    /// The largest p99 any thread saw since the last progress line, in
    /// nanoseconds (the line resets it).
    pub p99_ns: AtomicU64,
}

/// Prints a progress line every second until `finished` returns true.
pub fn report_until(live: &Live, label: &str, quiet: bool, mut finished: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut last_done = 0;
    let mut next = start + Duration::from_secs(1);
    while !finished() {
        std::thread::park_timeout(Duration::from_millis(20));
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_secs(1);
        if quiet {
            continue;
        }
        let done = live.done.load(Relaxed);
        let replies = match live.received.load(Relaxed) {
            0 => String::new(),
            n => format!("  replies {n}"),
        };
        eprintln!(
            "[{:>4.0}s] {label} {:>10}/s  errors {}{replies}  p99 {:.1} us",
            start.elapsed().as_secs_f64(),
            done - last_done,
            live.errors.load(Relaxed),
            live.p99_ns.swap(0, Relaxed) as f64 / 1000.0
        );
        last_done = done;
    }
}
