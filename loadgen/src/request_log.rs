//! `--request-log FILE`: one CSV row per scheduled request (TCP, HTTP, and
//! the generic mode over UDP), streamed as
//! the run goes: when it fell due, when it was sent, when it ended, its
//! size and how it ended. Each load thread fills a buffer of its own and
//! appends it to the file whole (`O_APPEND`: appends of several threads
//! never interleave within a row), so memory stays bounded whatever the
//! run's length and no lock is taken per request.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::text::push_decimal;

/// The file's first line: the columns. Times are nanoseconds from the
/// run's start; `sent_ns` is empty for a request never sent.
pub const HEADER: &str = "due_ns,sent_ns,done_ns,bytes,outcome\n";

/// A thread appends its rows once this many bytes have gathered.
const CHUNK: usize = 64 * 1024;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered correctly.
    Ok,
    /// Answered with an error status (HTTP non-2xx, a Redis or memcached
    /// error reply).
    Refused,
    /// Unanswered `--timeout` after its send; `done_ns` is when loadgen
    /// gave up.
    Timeout,
    /// A wrong reply on its connection.
    Mismatch,
    /// Its connection was reset.
    Reset,
    /// The server closed its connection first.
    Closed,
    /// Its connection was given up (a request ahead of it stuck).
    Aborted,
    /// Fell due but the run ended before a connection was free for it.
    Unsent,
    /// UDP: the send path refused the datagram (a full socket buffer).
    SendError,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Mismatch => "mismatch",
            Outcome::Reset => "reset",
            Outcome::Closed => "closed",
            Outcome::Aborted => "aborted",
            Outcome::Unsent => "unsent",
            Outcome::SendError => "send_error",
        }
    }
}

/// Creates (or truncates) the log at `path` and writes its header: the
/// file every thread then appends to.
pub fn create(path: &Path) -> anyhow::Result<Arc<File>> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .with_context(|| format!("creating --request-log {}", path.display()))?;
    file.write_all(HEADER.as_bytes())
        .with_context(|| format!("writing --request-log {}", path.display()))?;
    drop(file);
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening --request-log {}", path.display()))?;
    Ok(Arc::new(file))
}

/// One load thread's rows on their way to the file.
#[derive(Debug)]
pub struct RequestLog {
    file: Arc<File>,
    buf: Vec<u8>,
    /// The first failed append: logging stops, the run reports it.
    failed: Option<io::Error>,
}

impl RequestLog {
    /// A thread's writer into `file`.
    pub fn new(file: Arc<File>) -> Self {
        Self {
            file,
            buf: Vec::with_capacity(CHUNK + 256),
            failed: None,
        }
    }

    /// One request's row, its times taken from the run's `start`.
    pub fn row(
        &mut self,
        start: Instant,
        due: Instant,
        sent: Option<Instant>,
        done: Instant,
        bytes: usize,
        outcome: Outcome,
    ) {
        if self.failed.is_some() {
            return;
        }
        let ns = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
        let buf = &mut self.buf;
        push_decimal(buf, ns(due));
        buf.push(b',');
        if let Some(sent) = sent {
            push_decimal(buf, ns(sent));
        }
        buf.push(b',');
        push_decimal(buf, ns(done));
        buf.push(b',');
        push_decimal(buf, bytes as u64);
        buf.push(b',');
        buf.extend_from_slice(outcome.name().as_bytes());
        buf.push(b'\n');
        if self.buf.len() >= CHUNK {
            self.append();
        }
    }

    /// Appends what has gathered.
    fn append(&mut self) {
        if let Err(e) = (&*self.file).write_all(&self.buf) {
            self.failed = Some(e);
        }
        self.buf.clear();
    }

    /// Appends the rest: the first error any append met.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() && self.failed.is_none() {
            self.append();
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
