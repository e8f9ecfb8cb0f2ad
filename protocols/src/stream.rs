//! The interface every stream (TCP) protocol implements.

use std::time::Duration;

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
pub trait StreamSession {
    /// Consumes `input`, appending any reply bytes to `out`.
    fn on_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) -> Next;

    /// The peer finished sending (half-close); the last chance to reply.
    fn on_eof(&mut self, _out: &mut Vec<u8>) {}

    /// The connection was just accepted: a protocol that speaks first (a
    /// greeting) writes it here.
    fn on_open(&mut self, _out: &mut Vec<u8>) {}

    /// How long the connection may stay silent before [`on_idle`](Self::on_idle)
    /// is called; `None` (the default) never times out.
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }

    /// The peer was silent for [`idle_timeout`](Self::idle_timeout): say
    /// goodbye and close, or keep waiting.
    fn on_idle(&mut self, _out: &mut Vec<u8>) -> Next {
        Next::Close
    }
}
