//! `loadgen --http URL`: the chapter's third exercise. A plain TCP socket,
//! `GET` written by hand, the response read whatever its framing, and the
//! throughput worked out, with the timings that explain it. With
//! `--connections`, a load run: keep-alive connections repeat the GET
//! (pipelined with `--pipeline`, open loop with `--rate`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use protocols::http::response::{Framing, Response, ResponseReader};
use serde::Serialize;

/// Redirects followed at most (with `--follow`).
const MAX_REDIRECTS: usize = 5;
/// A body smaller than this, or one that arrives faster than
/// [`MIN_TRANSFER`], has no measurable throughput: it came in one or two
/// reads, and dividing by a few microseconds would give a figure of noise.
pub const MIN_MEASURED_BODY: u64 = 64 * 1024;
/// See [`MIN_MEASURED_BODY`].
pub const MIN_TRANSFER: Duration = Duration::from_millis(1);

/// An `http://` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Path and query, from the first `/`.
    pub path: String,
}

impl Url {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(text: &str) -> anyhow::Result<Url> {
        if text.starts_with("https://") {
            bail!("TLS is not supported: loadgen speaks plain HTTP/1.1 (use an http:// URL, or put a TLS proxy in front)");
        }
        let rest = text
            .strip_prefix("http://")
            .with_context(|| format!("'{text}' is not a URL like http://127.0.0.1:8080/"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .with_context(|| format!("'{text}': unclosed [ in the host"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().with_context(|| format!("'{p}' is not a port"))?,
            None => 80,
        };
        if host.is_empty() {
            bail!("'{text}' names no host");
        }
        Ok(Url { host, port, path })
    }

    /// The `Host` header's value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The GET request for this URL.
    pub fn request(&self, keep_alive: bool) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringcore-loadgen/{}\r\nConnection: {}\r\n\r\n",
            self.path,
            self.host_header(),
            env!("CARGO_PKG_VERSION"),
            if keep_alive { "keep-alive" } else { "close" }
        )
        .into_bytes()
    }

    /// Resolves the host (the DNS part of a fetch).
    pub fn resolve(&self) -> anyhow::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve host '{}'", self.host))?
            .next()
            .with_context(|| format!("host '{}' has no address", self.host))
    }

    /// A redirect's target: an absolute http URL, or a path on this host.
    fn follow(&self, location: &str) -> anyhow::Result<Url> {
        if location.starts_with('/') {
            return Ok(Url {
                path: location.to_string(),
                ..self.clone()
            });
        }
        Url::parse(location)
    }
}

/// What a single fetch measured, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct FetchReport {
    /// Always "http-fetch".
    pub mode: &'static str,
    /// `--tag`: the run's name.
    pub tag: Option<String>,
    /// The URL finally fetched.
    pub url: String,
    /// The address connected to.
    pub address: String,
    /// The response's status.
    pub status: u16,
    /// Bytes of the status line and headers.
    pub header_bytes: usize,
    /// Bytes of the body.
    pub body_bytes: u64,
    /// "content-length", "chunked", "close" or "none".
    pub framing: &'static str,
    /// Resolving the host.
    pub dns_ms: f64,
    /// The TCP handshake.
    pub connect_ms: f64,
    /// From sending the request to the first response byte.
    pub ttfb_ms: f64,
    /// From the first byte to the last.
    pub transfer_ms: f64,
    /// Everything.
    pub total_ms: f64,
    /// Body megabytes (10^6) per second of transfer; null when the body
    /// is under 64 KiB or took under 1 ms (too small to measure).
    pub mb_per_sec: Option<f64>,
    /// Body megabits per second of transfer (null as `mb_per_sec`).
    pub mbit_per_sec: Option<f64>,
    /// A redirect that was not followed (without --follow).
    pub redirect: Option<String>,
    /// Redirects followed (with --follow).
    pub followed: Vec<String>,
}

/// Fetches `url` once, following redirects if asked: `timeout` bounds
/// each wait for bytes, `max_time` (if any) the whole fetch, redirects
/// included.
pub fn fetch(
    url: &Url,
    follow: bool,
    timeout: Duration,
    max_time: Option<Duration>,
) -> anyhow::Result<FetchReport> {
    let mut url = url.clone();
    let mut followed = Vec::new();
    let give_up = max_time.map(|t| (Instant::now() + t, t));
    loop {
        let mut report = fetch_once(&url, timeout, give_up)?;
        match report.redirect.take() {
            Some(location) if follow => {
                if followed.len() >= MAX_REDIRECTS {
                    bail!("more than {MAX_REDIRECTS} redirects; the last pointed to {location}");
                }
                followed.push(location.clone());
                url = url.follow(&location)?;
            }
            redirect => {
                report.redirect = redirect;
                report.followed = followed;
                return Ok(report);
            }
        }
    }
}

/// One request and its response; `give_up`: when to stop reading, and the
/// --max-time it came from (for the message).
fn fetch_once(
    url: &Url,
    timeout: Duration,
    give_up: Option<(Instant, Duration)>,
) -> anyhow::Result<FetchReport> {
    let start = Instant::now();
    let addr = url.resolve()?;
    let resolved = Instant::now();
    let connect_wait = give_up.map_or(timeout, |(at, _)| {
        at.saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), timeout)
    });
    let mut stream = TcpStream::connect_timeout(&addr, connect_wait)
        .map_err(|e| crate::tcp::connect_error(addr, &e))?;
    let connected = Instant::now();
    stream.set_read_timeout(Some(timeout))?;
    // The clock starts before the write: read after it, a thread
    // descheduled in between would take milliseconds off the server's
    // time to first byte (146 ms for a server that waits 150, beside a
    // CPU hog). A GET's write takes microseconds.
    let request = url.request(false);
    let sent = Instant::now();
    stream
        .write_all(&request)
        .with_context(|| format!("sending the request to {addr}"))?;
    let mut reader = ResponseReader::new();
    let mut done: Vec<Response> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut first_byte = None;
    let mut received = 0u64;
    while done.is_empty() {
        // Each wait ends at the --max-time deadline at the latest (a
        // system call only once the deadline is nearer than --timeout).
        let mut until_deadline = false;
        if let Some((at, max_time)) = give_up {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(stopped_at_max_time(addr, max_time, received, first_byte));
            }
            if left < timeout {
                stream.set_read_timeout(Some(left))?;
                until_deadline = true;
            }
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let (true, Some((_, max_time))) = (until_deadline, give_up) {
                    bail!(stopped_at_max_time(addr, max_time, received, first_byte));
                }
                bail!("{addr} sent nothing for {timeout:?} (the response is incomplete)")
            }
            Err(e) => return Err(e).with_context(|| format!("reading the response from {addr}")),
        };
        first_byte.get_or_insert_with(Instant::now);
        received += n as u64;
        if n == 0 {
            reader
                .finish(&mut done)
                .with_context(|| format!("from {addr}"))?;
            if done.is_empty() {
                bail!("{addr} closed the connection without answering");
            }
            break;
        }
        reader
            .feed(&buf[..n], &mut done)
            .with_context(|| format!("from {addr}"))?;
    }
    let end = Instant::now();
    let response = done.remove(0);
    let first_byte = first_byte.unwrap_or(end);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let transfer_time = end.duration_since(first_byte);
    let transfer = transfer_time.as_secs_f64().max(1e-9);
    let measurable = response.body_bytes >= MIN_MEASURED_BODY && transfer_time >= MIN_TRANSFER;
    let redirect = if (300..400).contains(&response.status) {
        response.location.clone()
    } else {
        None
    };
    Ok(FetchReport {
        mode: "http-fetch",
        tag: None,
        url: format!("http://{}{}", url.host_header(), url.path),
        address: addr.to_string(),
        status: response.status,
        header_bytes: response.head_bytes,
        body_bytes: response.body_bytes,
        framing: match response.framing {
            Framing::Length(_) => "content-length",
            Framing::Chunked => "chunked",
            Framing::Close => "close",
            Framing::Empty => "none",
        },
        dns_ms: ms(resolved - start),
        connect_ms: ms(connected - resolved),
        ttfb_ms: ms(first_byte.saturating_duration_since(sent)),
        transfer_ms: transfer * 1000.0,
        total_ms: ms(end - start),
        mb_per_sec: measurable.then(|| response.body_bytes as f64 / transfer / 1e6),
        mbit_per_sec: measurable.then(|| response.body_bytes as f64 * 8.0 / transfer / 1e6),
        redirect,
        followed: Vec::new(),
    })
}

/// What a fetch stopped by --max-time says: what arrived, and how fast.
fn stopped_at_max_time(
    addr: SocketAddr,
    max_time: Duration,
    received: u64,
    first_byte: Option<Instant>,
) -> String {
    let rate = first_byte
        .map(|at| at.elapsed())
        .filter(|&t| t >= MIN_TRANSFER && received >= MIN_MEASURED_BODY)
        .map(|t| {
            format!(
                ", {:.2} MB/s since the first byte",
                received as f64 / t.as_secs_f64() / 1e6
            )
        })
        .unwrap_or_default();
    format!(
        "stopped after --max-time {max_time:?}: {received} B received from {addr}{rate}; the response was not complete"
    )
}

/// Prints a fetch for people.
pub fn print(r: &FetchReport) {
    println!(
        "GET {} ({}): {}, {} B of headers, {} B of body ({})",
        r.url, r.address, r.status, r.header_bytes, r.body_bytes, r.framing
    );
    for hop in &r.followed {
        println!("  followed a redirect to {hop}");
    }
    if let Some(to) = &r.redirect {
        println!("  redirect to {to} (not followed; add --follow)");
    }
    println!(
        "  dns {:.3} ms + connect {:.3} ms + first byte {:.3} ms + transfer {:.3} ms = {:.3} ms",
        r.dns_ms, r.connect_ms, r.ttfb_ms, r.transfer_ms, r.total_ms
    );
    match (r.mb_per_sec, r.mbit_per_sec) {
        (Some(mb), Some(mbit)) => println!(
            "  throughput   {mb:.2} MB/s = {mbit:.1} Mbit/s over the transfer"
        ),
        _ => println!(
            "  throughput   n/a: {} B in {:.3} ms is too little to measure (it needs 64 KiB and 1 ms); time to first byte and total are the figures",
            r.body_bytes, r.transfer_ms
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://example.com/a?b=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("example.com", 80, "/a?b=1")
        );
        assert_eq!(u.host_header(), "example.com");
        let u = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.host_header()),
            ("::1", 8080, "/", "[::1]:8080".to_string())
        );
        assert!(Url::parse("https://x/")
            .unwrap_err()
            .to_string()
            .contains("TLS is not supported"));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert_eq!(u.follow("/next").unwrap().path, "/next");
        let request = String::from_utf8(u.request(true)).unwrap();
        assert!(
            request.starts_with("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n")
                && request.ends_with("Connection: keep-alive\r\n\r\n")
        );
    }
}
