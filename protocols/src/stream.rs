//! The interface every stream (TCP) protocol implements.

use std::time::{Duration, Instant};

/// What the transport should do after a session consumed some input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep reading.
    Continue,
    /// Stop reading, send everything already queued, then close.
    Close,
}

/// One conversation on a byte stream.
///
/// The transport calls [`on_bytes`](Self::on_bytes) with each chunk in the order
/// it arrived (chunk boundaries carry no meaning unless the protocol gives them
/// one, as the chapter's `reverse` does) and sends whatever the session appended
/// to `out`.
pub trait StreamSession: Send {
    /// Consumes `input`, appending any reply bytes to `out`.
    fn on_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) -> Next;

    /// The peer finished sending (half-close); the last chance to reply.
    fn on_eof(&mut self, _out: &mut Vec<u8>) {}

    /// The connection was just accepted: a protocol that speaks first (a
    /// greeting) writes it here.
    fn on_open(&mut self, _out: &mut Vec<u8>) {}

    /// Whether the session keeps time (idle or header timeouts): if so, the
    /// transport calls [`on_tick`](Self::on_tick) about every 100 ms.
    fn wants_ticks(&self) -> bool {
        false
    }

    /// The time is `now` and the peer has sent nothing for `silent_for`:
    /// say goodbye and close, or keep waiting.
    fn on_tick(&mut self, _now: Instant, _silent_for: Duration, _out: &mut Vec<u8>) -> Next {
        Next::Continue
    }

    /// True while the session has output it has not produced yet (a long
    /// body it writes as the connection drains, not all at once).
    fn has_more_output(&self) -> bool {
        false
    }

    /// The connection's output has room again: produce more of it.
    fn on_drained(&mut self, _out: &mut Vec<u8>) -> Next {
        Next::Continue
    }
}
