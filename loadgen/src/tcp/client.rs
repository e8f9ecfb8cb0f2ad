//! One connection slot of a load thread: its state, the requests in flight
//! on it, and how its replies are checked. No I/O happens here.

use std::collections::VecDeque;
use std::time::Instant;

use protocols::echo::EchoStream;
use protocols::http::response::{Response, ResponseReader};
use protocols::reverse::ReverseLines;
use protocols::StreamSession;

use super::{StreamProtocol, Workload};
use crate::dialect::ReplyReader;

/// A request on the wire: where its reply ends in the connection's reply
/// stream, the instant its latency counts from, when it was sent, and its
/// size.
pub struct InFlight {
    pub reply_end: u64,
    pub since: Instant,
    pub sent: Instant,
    /// The request's size (for `--request-log`).
    pub bytes: u32,
}

/// How a connection's replies are checked.
pub enum Check {
    /// Against the bytes the protocol's own state machine says must come.
    Exact {
        model: Box<dyn StreamSession>,
        expected: Vec<u8>,
        offset: usize,
        /// Reply bytes received so far (where `InFlight::reply_end` points).
        received: u64,
    },
    /// Whole HTTP responses, counted as they complete.
    Http {
        reader: ResponseReader,
        done: Vec<Response>,
    },
    /// Replies of a dialect, each checked against what its request expects.
    Dialect(ReplyReader),
}

impl Check {
    /// Memory held for replies that have not all arrived (a dialect's;
    /// the others hold a bounded head or only what their own requests
    /// said must come).
    pub fn reply_memory(&self) -> usize {
        match self {
            Check::Dialect(reader) => reader.buffered(),
            Check::Exact { .. } | Check::Http { .. } => 0,
        }
    }

    pub fn new(workload: &Workload) -> Self {
        match workload {
            Workload::Stream(protocol) => Check::Exact {
                model: match protocol {
                    StreamProtocol::Echo => Box::new(EchoStream),
                    StreamProtocol::Reverse => Box::new(ReverseLines::new(usize::MAX)),
                },
                expected: Vec::new(),
                offset: 0,
                received: 0,
            },
            Workload::Http { .. } => Check::Http {
                reader: ResponseReader::new(),
                done: Vec::new(),
            },
            Workload::Dialect(dialect) => Check::Dialect(ReplyReader::new(dialect.clone())),
        }
    }
}

/// Where a connection slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// No socket; a connect starts at `retry_at`.
    Down { retry_at: Instant },
    /// The driver is connecting.
    Connecting,
    /// Connected and carrying requests.
    Up,
    /// Failed: waiting for the driver to close the socket (once the kernel
    /// has finished with it).
    Broken,
}

/// Why a connection failed; its in-flight requests end with this kind.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    Reset,
    Closed,
    Mismatch,
    Aborted,
}

/// One connection slot and everything needed to verify its replies. The
/// socket and the bytes being sent are the driver's.
pub struct Client {
    pub link: Link,
    /// Bumped at every connect: completions and events of an earlier
    /// socket of this slot carry an older one and are ignored.
    pub generation: u32,
    pub check: Check,
    pub inflight: VecDeque<InFlight>,
    /// The first `timed_out` requests of `inflight` were already counted as
    /// timeouts and await only their late reply.
    pub timed_out: usize,
    /// Request bytes not yet handed to the driver.
    pub queued: Vec<u8>,
    /// Connections this slot has had.
    pub opened: u64,
}

impl Client {
    /// A slot with no connection yet, to connect at `now`.
    pub fn new(workload: &Workload, now: Instant) -> Self {
        Self {
            link: Link::Down { retry_at: now },
            generation: 0,
            check: Check::new(workload),
            inflight: VecDeque::new(),
            timed_out: 0,
            queued: Vec::new(),
            opened: 0,
        }
    }

    /// Forgets everything of the slot's previous connection.
    pub fn reset(&mut self, workload: &Workload) {
        self.check = Check::new(workload);
        self.inflight.clear();
        self.timed_out = 0;
        self.queued.clear();
    }

    /// Requests in flight not yet counted as timeouts.
    pub fn outstanding(&self) -> usize {
        self.inflight.len() - self.timed_out
    }

    /// Checks `data` as the next bytes of the reply stream: how many
    /// requests at the front of `inflight` it completed (over HTTP, with
    /// whether each response's status was bad pushed to `bad_status`), or
    /// the failure a wrong byte means. A dialect's refused requests (a
    /// Redis or memcached error reply) count as bad statuses.
    pub fn take_reply(
        &mut self,
        data: &[u8],
        bad_status: &mut Vec<bool>,
    ) -> Result<usize, Failure> {
        bad_status.clear();
        let completed = match &mut self.check {
            Check::Exact {
                expected,
                offset,
                received,
                ..
            } => {
                let want = &expected[*offset..];
                if data.len() > want.len() || data != &want[..data.len()] {
                    return Err(Failure::Mismatch);
                }
                *offset += data.len();
                *received += data.len() as u64;
                if *offset > 64 * 1024 {
                    expected.drain(..*offset);
                    *offset = 0;
                }
                let received = *received;
                self.inflight
                    .iter()
                    .take_while(|f| f.reply_end <= received)
                    .count()
            }
            Check::Http { reader, done } => {
                done.clear();
                if reader.feed(data, done).is_err() {
                    return Err(Failure::Mismatch);
                }
                bad_status.extend(done.iter().map(|r| !(200..300).contains(&r.status)));
                done.len()
            }
            Check::Dialect(reader) => {
                reader
                    .feed(data, bad_status)
                    .map_err(|_| Failure::Mismatch)?;
                bad_status.len()
            }
        };
        Ok(completed.min(self.inflight.len()))
    }
}
