//! The counters in the Prometheus text format, and a tiny endpoint serving them.
//!
//! The endpoint runs on its own plain thread, off the workers' hot path: it
//! only reads the counters the workers publish.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::stats::{StatsSnapshot, WorkerStats};

/// Figures that go up and down.
const GAUGES: &[&str] = &[
    "sessions_open",
    "tcp_buffers_spare",
    "tcp_buffers_lent",
    "connection_memory",
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
    out
}

/// Serves `GET /metrics` on `addr` from a background thread; returns the bound address.
pub fn serve(
    addr: SocketAddr,
    stats: Vec<Arc<WorkerStats>>,
    io_path: &'static str,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("ringcore-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &stats, io_path) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    // Out of descriptors (or a similar passing failure): back
                    // off instead of spinning; the request waits in the backlog.
                    Err(e) => {
                        tracing::debug!("metrics accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(local)
}

fn answer(mut stream: TcpStream, stats: &[Arc<WorkerStats>], io_path: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", render(stats, io_path)),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "only /metrics is served here\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "only GET is served here\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
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
    }
}
