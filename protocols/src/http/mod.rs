//! A minimal HTTP/1.1 service for benchmarks and tests: `GET /` (a small
//! page), `GET /bytes/N` (exactly N bytes), `GET /chunked/N` (the same in
//! chunked encoding), `GET /metrics` (the server's counters). Keep-alive and
//! pipelining; HTTP/1.0 and `Connection: close` honoured; bad requests get
//! their status and the connection closes when it must.
//!
//! Long bodies are produced as the connection drains (see
//! [`StreamSession::on_drained`]), never built whole in memory. Body bytes
//! follow a pattern (`a`..`z` repeating from offset 0) that a client can
//! verify.

pub mod metrics_endpoint;
pub mod response;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::{Fed, Next, StreamSession};

/// Where `/metrics` gets its text; filled in once the server knows its counters.
pub type MetricsSource = Arc<OnceLock<Box<dyn Fn() -> String + Send + Sync>>>;

/// The service's limits.
#[derive(Clone)]
pub struct HttpConfig {
    /// Longest request head (request line and headers); longer gets 431.
    pub max_header: usize,
    /// Largest `/bytes/N` and `/chunked/N`.
    pub max_body: u64,
    /// A request head not complete this long after its first byte gets 408.
    pub header_timeout: Duration,
    /// A keep-alive connection silent this long is closed.
    pub keepalive_idle: Duration,
    /// The text `/metrics` serves.
    pub metrics: MetricsSource,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header: 8 * 1024,
            max_body: 1 << 30,
            header_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(60),
            metrics: Arc::new(OnceLock::new()),
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("max_header", &self.max_header)
            .field("max_body", &self.max_body)
            .field("header_timeout", &self.header_timeout)
            .field("keepalive_idle", &self.keepalive_idle)
            .finish_non_exhaustive()
    }
}

/// The page `GET /` serves.
pub const PAGE: &str = "<!doctype html>\n<html><head><title>ringcore</title></head>\n<body><h1>ringcore</h1><p>A thread-per-core io_uring server. Try /bytes/1024, /chunked/1024 or /metrics.</p></body></html>\n";

/// Body bytes produced per drain, at most; also the longest part of a
/// body handed out from static memory.
const STEP: usize = 256 * 1024;
/// Largest chunk of a chunked body.
const CHUNK: usize = 64 * 1024;
/// A plain body with at least this much left is sent from static memory
/// ([`StreamSession::take_static_output`]); shorter ones are copied after
/// the head, so a small response still leaves in one send.
const STATIC_BODY_MIN: u64 = 64 * 1024;

/// The body byte at `offset`.
pub fn body_byte(offset: u64) -> u8 {
    b'a' + (offset % 26) as u8
}

/// The body pattern, long enough that a part of up to [`STEP`] bytes
/// starting at any offset is one slice of it.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| (0..(STEP as u64 + 26)).map(body_byte).collect())
}

/// A response body still to be written.
#[derive(Debug)]
struct Body {
    remaining: u64,
    offset: u64,
    chunked: bool,
}

/// One HTTP connection.
pub struct HttpSession {
    config: Arc<HttpConfig>,
    /// The transport holds the beginning of a request head whose end has
    /// not arrived ("need more input"): the header timeout runs.
    head_pending: bool,
    body: Option<Body>,
    close_after: bool,
    closed: bool,
    head_started: Option<Instant>,
}

/// The outcome of parsing one request head.
enum Head {
    /// A whole head: the request, and how many bytes of the input it used.
    Complete(Request, usize),
    /// Not all of it has arrived yet.
    Partial,
    /// It can never be answered: the status and why.
    Failed(u16, String),
}

/// What a parsed request asks for, owned (the parser borrows the input).
struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    has_body: bool,
}

impl HttpSession {
    /// A fresh connection.
    pub fn new(config: Arc<HttpConfig>) -> Self {
        Self {
            config,
            head_pending: false,
            body: None,
            close_after: false,
            closed: false,
            head_started: None,
        }
    }

    /// Answers the complete requests at the front of `input`, in order,
    /// until `room` bytes of output are written, a long body must be
    /// written first, or the connection must close. Heads are parsed where
    /// they lie in `input`; a head cut by the end of `input` is left to the
    /// transport to hold ("need more input"), and it is bounded by
    /// `max_header`.
    fn answer_requests(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let start = out.len();
        let mut consumed = 0;
        self.head_pending = false;
        loop {
            if self.closed {
                // After a final response, whatever follows is not read.
                return Fed {
                    consumed: input.len(),
                    next: Next::Close,
                };
            }
            let rest = &input[consumed..];
            if self.body.is_some() || rest.is_empty() || out.len() - start >= room {
                return Fed::all(consumed);
            }
            match self.parse_head(rest) {
                Head::Complete(request, used) => {
                    consumed += used;
                    self.head_started = None;
                    self.answer(request, out);
                }
                Head::Partial => {
                    if rest.len() > self.config.max_header {
                        self.fail(431, "request head too large", out);
                        continue;
                    }
                    self.head_pending = true;
                    return Fed::all(consumed);
                }
                Head::Failed(status, message) => {
                    self.fail(status, &message, out);
                }
            }
        }
    }

    /// Parses one head from the front of `bytes`.
    fn parse_head(&self, bytes: &[u8]) -> Head {
        // Parsed again as each piece arrives, so a head is judged the same
        // however it is split (the parser finds errors in a prefix the
        // moment it sees them); a head is at most `max_header` bytes, which
        // bounds the work a head trickling in byte by byte can cost.
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(bytes) {
            Ok(httparse::Status::Partial) => Head::Partial,
            Ok(httparse::Status::Complete(used)) if used > self.config.max_header => {
                Head::Failed(431, "request head too large".into())
            }
            Ok(httparse::Status::Complete(used)) => Head::Complete(request_of(&parsed), used),
            Err(httparse::Error::TooManyHeaders) => Head::Failed(431, "too many headers".into()),
            Err(e) => Head::Failed(400, format!("malformed request: {e}")),
        }
    }

    fn answer(&mut self, r: Request, out: &mut Vec<u8>) {
        if r.method != "GET" && r.method != "HEAD" {
            self.fail(
                405,
                &format!("{} is not supported; use GET or HEAD", r.method),
                out,
            );
            return;
        }
        if r.has_body {
            self.fail(400, "GET requests carry no body here", out);
            return;
        }
        let head_only = r.method == "HEAD";
        self.close_after = !r.keep_alive;
        let path = r.path.split('?').next().unwrap_or("/");
        let (kind, length) = if path == "/" {
            self.respond(
                200,
                "text/html; charset=utf-8",
                PAGE.as_bytes(),
                head_only,
                out,
            );
            return;
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            (false, n)
        } else if let Some(n) = path.strip_prefix("/chunked/") {
            (true, n)
        } else if path == "/metrics" {
            match self.config.metrics.get() {
                Some(render) => {
                    let text = render();
                    self.respond(
                        200,
                        "text/plain; version=0.0.4",
                        text.as_bytes(),
                        head_only,
                        out,
                    );
                }
                None => self.respond(
                    503,
                    "text/plain",
                    b"metrics are not available\n",
                    head_only,
                    out,
                ),
            }
            return;
        } else {
            self.respond(
                404,
                "text/plain",
                format!("no such path: {path}\n").as_bytes(),
                head_only,
                out,
            );
            return;
        };
        let size = match length.parse::<u64>() {
            Ok(n) if n <= self.config.max_body => n,
            Ok(_) => {
                let message = format!("at most {} bytes\n", self.config.max_body);
                self.respond(400, "text/plain", message.as_bytes(), head_only, out);
                return;
            }
            Err(_) => {
                self.respond(
                    400,
                    "text/plain",
                    format!("'{length}' is not a byte count\n").as_bytes(),
                    head_only,
                    out,
                );
                return;
            }
        };
        let framing = if kind {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {size}")
        };
        self.head(200, "application/octet-stream", &framing, out);
        if !head_only {
            self.body = Some(Body {
                remaining: size,
                offset: 0,
                chunked: kind,
            });
        }
    }

    /// A complete response with a small body.
    fn respond(
        &mut self,
        status: u16,
        content_type: &str,
        body: &[u8],
        head_only: bool,
        out: &mut Vec<u8>,
    ) {
        self.head(
            status,
            content_type,
            &format!("Content-Length: {}", body.len()),
            out,
        );
        if !head_only {
            out.extend_from_slice(body);
        }
        if self.close_after {
            self.closed = true;
        }
    }

    fn head(&self, status: u16, content_type: &str, framing: &str, out: &mut Vec<u8>) {
        let connection = if self.close_after {
            "close"
        } else {
            "keep-alive"
        };
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {status} {}\r\nServer: ringcore\r\nContent-Type: {content_type}\r\n{framing}\r\nConnection: {connection}\r\n\r\n",
                reason(status)
            )
            .as_bytes(),
        );
    }

    /// An error response after which the connection closes.
    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) -> Next {
        self.close_after = true;
        self.head_pending = false;
        self.respond(
            status,
            "text/plain",
            format!("{message}\n").as_bytes(),
            false,
            out,
        );
        Next::Close
    }

    /// Writes up to one step of the current body.
    fn write_body(&mut self, out: &mut Vec<u8>) {
        let Some(body) = self.body.as_mut() else {
            return;
        };
        let mut budget = STEP;
        while body.remaining > 0 && budget > 0 {
            let n = (body.remaining.min(CHUNK as u64) as usize).min(budget);
            let start = (body.offset % 26) as usize;
            let bytes = &pattern()[start..start + n];
            if body.chunked {
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(bytes);
            }
            body.remaining -= n as u64;
            body.offset += n as u64;
            budget -= n;
        }
        if body.remaining == 0 {
            if body.chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            self.body = None;
        }
    }
}

fn request_of(parsed: &httparse::Request<'_, '_>) -> Request {
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let connection = header("connection").unwrap_or_default();
    let keep_alive = match parsed.version {
        Some(0) => connection.contains("keep-alive"),
        _ => !connection.contains("close"),
    };
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|v| v.trim() != "0");
    Request {
        method: parsed.method.unwrap_or_default().to_string(),
        path: parsed.path.unwrap_or("/").to_string(),
        keep_alive,
        has_body,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

impl StreamSession for HttpSession {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let fed = self.answer_requests(input, out, room);
        if self.closed {
            return Fed {
                consumed: input.len(),
                next: Next::Close,
            };
        }
        fed
    }

    fn max_frame(&self) -> usize {
        // A head past the bound gets its 431 from the session first; this
        // only backs it up.
        self.config.max_header.saturating_add(1)
    }

    fn on_frame_too_large(&mut self, out: &mut Vec<u8>) {
        self.fail(431, "request head too large", out);
    }

    fn wants_ticks(&self) -> bool {
        true
    }

    fn on_tick(&mut self, now: Instant, silent_for: Duration, out: &mut Vec<u8>) -> Next {
        if self.body.is_some() {
            return Next::Continue;
        }
        if !self.head_pending {
            self.head_started = None;
            // Keep-alive connections that stay silent are let go, quietly.
            return if silent_for >= self.config.keepalive_idle {
                Next::Close
            } else {
                Next::Continue
            };
        }
        // Part of a request head has arrived: it must complete in time,
        // however slowly the bytes trickle in.
        let started = *self.head_started.get_or_insert(now);
        if now.duration_since(started) >= self.config.header_timeout {
            return self.fail(408, "request head not completed in time", out);
        }
        Next::Continue
    }

    fn has_more_output(&self) -> bool {
        self.body.is_some()
    }

    fn on_drained(&mut self, out: &mut Vec<u8>) -> Next {
        self.write_body(out);
        self.after_body_part()
    }

    fn has_static_output(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(|b| !b.chunked && b.remaining >= STATIC_BODY_MIN)
    }

    fn take_static_output(&mut self, max: usize) -> Option<(&'static [u8], Next)> {
        if !self.has_static_output() {
            return None;
        }
        let body = self.body.as_mut()?;
        let n = body.remaining.min(max.min(STEP) as u64) as usize;
        if n == 0 {
            return None;
        }
        let start = (body.offset % 26) as usize;
        body.remaining -= n as u64;
        body.offset += n as u64;
        if body.remaining == 0 {
            self.body = None;
        }
        Some((&pattern()[start..start + n], self.after_body_part()))
    }
}

impl HttpSession {
    /// What follows a part of the body: the connection closes after the
    /// last part of a final response.
    fn after_body_part(&mut self) -> Next {
        if self.body.is_none() && self.close_after {
            self.closed = true;
        }
        if self.closed {
            Next::Close
        } else {
            Next::Continue
        }
    }
}

#[cfg(test)]
mod tests;
