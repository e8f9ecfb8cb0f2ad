//! Load threads and the once-a-second progress line on stderr, fed by
//! counters the load threads publish.

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

/// Runs `work(t, item)` on one thread per item, thread `t` pinned to
/// `cpus[t % cpus.len()]` (unpinned when `cpus` is empty), printing progress
/// until all are done; their results in order, or the first error.
pub fn run_threads<I: Send, T: Send>(
    items: Vec<I>,
    cpus: &[usize],
    live: &Live,
    label: &str,
    quiet: bool,
    work: impl Fn(usize, I) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(t, item)| {
                let cpu = (!cpus.is_empty()).then(|| cpus[t % cpus.len()]);
                scope.spawn(move || {
                    if let Some(id) = cpu {
                        core_affinity::set_for_current(core_affinity::CoreId { id });
                    }
                    work(t, item)
                })
            })
            .collect();
        report_until(live, label, quiet, || {
            handles.iter().all(|h| h.is_finished())
        });
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked")))
            })
            .collect()
    })
}
