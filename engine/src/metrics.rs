//! The counters in the Prometheus text format, and a tiny endpoint serving them.
//!
//! The endpoint runs on plain threads of its own, off the workers' hot
//! path (so it still answers when the workers are overloaded, which is
//! when it is wanted): it only reads the counters the workers publish.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use protocols::http::metrics_endpoint::{metrics_request, MetricsRequest, MAX_HEAD};

use crate::stats::{StatsSnapshot, WorkerStats};

/// Figures that go up and down.
const GAUGES: &[&str] = &[
    "sessions_open",
    "tcp_buffers_spare",
    "tcp_buffers_lent",
    "connection_memory",
    "connections_paused",
    "asks_waiting",
];

/// Renders which I/O path serves (`ringcore_io_info{path="..."} 1`, e.g.
/// `io_uring` or `epoll-fallback`), then every counter per worker
/// (`worker="N"`) and in total (no label).
pub fn render(stats: &[Arc<WorkerStats>], io_path: &str) -> String {
    let snapshots: Vec<StatsSnapshot> = stats.iter().map(|s| s.snapshot()).collect();
    let total = StatsSnapshot::total(&snapshots);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ringcore_io_info The I/O path serving: io_uring, epoll, or epoll-fallback when io_uring was unavailable."
    );
    let _ = writeln!(out, "# TYPE ringcore_io_info gauge");
    let _ = writeln!(out, "ringcore_io_info{{path=\"{io_path}\"}} 1");
    for (i, (name, help, value)) in total.fields().into_iter().enumerate() {
        let kind = if GAUGES.contains(&name) {
            "gauge"
        } else {
            "counter"
        };
        let _ = writeln!(out, "# HELP ringcore_{name} {help}");
        let _ = writeln!(out, "# TYPE ringcore_{name} {kind}");
        for (w, snap) in snapshots.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringcore_{name}{{worker=\"{w}\"}} {}",
                snap.fields()[i].2
            );
        }
        let _ = writeln!(out, "ringcore_{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP ringcore_connections_open TCP connections open now."
    );
    let _ = writeln!(out, "# TYPE ringcore_connections_open gauge");
    for (w, snap) in snapshots.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringcore_connections_open{{worker=\"{w}\"}} {}",
            snap.connections_open()
        );
    }
    let _ = writeln!(
        out,
        "ringcore_connections_open {}",
        total.connections_open()
    );
    render_service_counters(stats, &mut out);
    out
}

/// The counters sessions keep ([`crate::SessionContext::counter`]): one
/// line per worker that has the counter, and the sum, labelled with the
/// service's name and the counter's.
fn render_service_counters(stats: &[Arc<WorkerStats>], out: &mut String) {
    let per_worker: Vec<_> = stats.iter().map(|s| s.services.snapshot()).collect();
    // (service, name) in the order first seen, with the sum over workers.
    let mut totals: Vec<(Arc<str>, &'static str, u64)> = Vec::new();
    for (service, name, value) in per_worker.iter().flatten() {
        match totals
            .iter_mut()
            .find(|(s, n, _)| s == service && n == name)
        {
            Some(total) => total.2 += value,
            None => totals.push((service.clone(), name, *value)),
        }
    }
    if totals.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP ringcore_service_counter Counters the services' sessions keep, by service and name."
    );
    let _ = writeln!(out, "# TYPE ringcore_service_counter counter");
    for (service, name, total) in &totals {
        let labels = format!("service=\"{}\",name=\"{name}\"", escape_label(service));
        for (w, counters) in per_worker.iter().enumerate() {
            if let Some((_, _, v)) = counters.iter().find(|(s, n, _)| s == service && n == name) {
                let _ = writeln!(
                    out,
                    "ringcore_service_counter{{{labels},worker=\"{w}\"}} {v}"
                );
            }
        }
        let _ = writeln!(out, "ringcore_service_counter{{{labels}}} {total}");
    }
}

/// A label value as the exposition format writes it: backslash, quote and
/// newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How long one request may take, from its accept to its last byte
/// written: a client that trickles its head or never reads the answer is
/// cut off then, so it cannot hold the endpoint.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Requests answered at once; further connections wait, unaccepted, in the
/// listen backlog until one is done, so a flood of slow clients delays a
/// scrape by at most a few deadlines instead of starving it.
pub const CONCURRENT_REQUESTS: usize = 8;

/// Serves `GET /metrics` on `addr` from a background thread, each request
/// on a short-lived thread of its own (at most [`CONCURRENT_REQUESTS`],
/// each within [`REQUEST_DEADLINE`]); returns the bound address.
pub fn serve(
    addr: SocketAddr,
    stats: Vec<Arc<WorkerStats>>,
    io_path: &'static str,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let stats: Arc<[Arc<WorkerStats>]> = stats.into();
    let slots = Arc::new(Slots::new(CONCURRENT_REQUESTS));
    std::thread::Builder::new()
        .name("ringcore-metrics".into())
        .spawn(move || loop {
            let slot = Slots::take(&slots);
            match listener.accept() {
                Ok((stream, _)) => {
                    let stats = stats.clone();
                    let answered = std::thread::Builder::new()
                        .name("ringcore-metrics-request".into())
                        .spawn(move || {
                            let _slot = slot;
                            if let Err(e) = answer(stream, &stats, io_path) {
                                tracing::debug!("metrics request: {e}");
                            }
                        });
                    if let Err(e) = answered {
                        tracing::debug!("metrics request thread: {e}");
                    }
                }
                // Out of descriptors (or a similar passing failure): back
                // off instead of spinning; the request waits in the backlog.
                Err(e) => {
                    drop(slot);
                    tracing::debug!("metrics accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(local)
}

/// A counting semaphore: how many requests may be answered at once.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One request's place; given back when dropped.
struct Slot(Arc<Slots>);

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free place and takes it.
    fn take(slots: &Arc<Slots>) -> Slot {
        // A poisoned lock only means a request thread panicked while
        // counting; the count itself is still right.
        let mut free = slots.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = slots.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(slots.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Reads a request head and answers it, all before the request's deadline.
fn answer(mut stream: TcpStream, stats: &[Arc<WorkerStats>], io_path: &str) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let verdict = loop {
        match metrics_request(&head) {
            MetricsRequest::Incomplete => {}
            verdict => break verdict,
        }
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(()); // the client left before finishing its head
        }
        // Never more than MAX_HEAD: at it, the verdict is TooLarge.
        head.extend_from_slice(&chunk[..n.min(MAX_HEAD - head.len())]);
    };
    let body = match verdict {
        MetricsRequest::Metrics => render(stats, io_path),
        MetricsRequest::NotFound => "only /metrics is served here\n".to_string(),
        MetricsRequest::NotAllowed => "only GET is served here\n".to_string(),
        _ => "not a request for /metrics\n".to_string(),
    };
    let status = verdict.status().unwrap_or("400 Bad Request");
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head.starts_with(b"HEAD ") {
        response.push_str(&body);
    }
    let mut rest = response.as_bytes();
    while !rest.is_empty() {
        stream.set_write_timeout(Some(left(deadline)?))?;
        let n = stream.write(rest)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        rest = &rest[n..];
    }
    // Closing with unread input would reset the connection, which can
    // destroy the answer before the client reads it: send our FIN, and
    // discard what else comes until the client closes or the deadline.
    stream.shutdown(std::net::Shutdown::Write)?;
    while let Ok(wait) = left(deadline) {
        stream.set_read_timeout(Some(wait))?;
        if stream.read(&mut chunk)? == 0 {
            break;
        }
    }
    Ok(())
}

/// The time left before `deadline`, or a timeout error once it has passed.
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the request took longer than its deadline",
        ));
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_per_worker_and_total() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        a.datagrams_in.add(3);
        b.datagrams_in.add(4);
        let text = render(&[a, b], "io_uring");
        assert!(
            text.contains("ringcore_datagrams_in{worker=\"0\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("ringcore_datagrams_in{worker=\"1\"} 4\n"));
        assert!(text.contains("ringcore_datagrams_in 7\n"));
        assert!(text.contains("# TYPE ringcore_io_uring_enter_calls counter"));
        assert!(
            text.contains("ringcore_io_info{path=\"io_uring\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("service_counter"), "none registered");
    }

    #[test]
    fn service_counters_are_labelled_per_worker_and_summed() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        let kv: Arc<str> = Arc::from("kv");
        a.services.register(&kv, "hits").add(3);
        b.services.register(&kv, "hits").add(4);
        b.services.register(&Arc::from("odd\"name"), "misses").inc();
        // Registering again finds the same counter.
        a.services.register(&kv, "hits").inc();
        let text = render(&[a, b], "epoll");
        for line in [
            "# TYPE ringcore_service_counter counter\n",
            "ringcore_service_counter{service=\"kv\",name=\"hits\",worker=\"0\"} 4\n",
            "ringcore_service_counter{service=\"kv\",name=\"hits\",worker=\"1\"} 4\n",
            "ringcore_service_counter{service=\"kv\",name=\"hits\"} 8\n",
            "ringcore_service_counter{service=\"odd\\\"name\",name=\"misses\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
