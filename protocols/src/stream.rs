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

/// What a bounded feed ([`StreamSession::on_input`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// How many bytes from the front of the input the session took. The
    /// transport keeps the rest and offers it again later.
    pub consumed: usize,
    /// Keep reading, or close once the output is sent.
    pub next: Next,
}

impl Fed {
    /// All of `n` bytes taken, keep reading.
    pub fn all(n: usize) -> Self {
        Self {
            consumed: n,
            next: Next::Continue,
        }
    }

    /// `n` bytes taken, and the connection closes once the output is sent.
    pub fn close(n: usize) -> Self {
        Self {
            consumed: n,
            next: Next::Close,
        }
    }

    /// Nothing taken: the session needs more input to complete a frame.
    pub fn need_more() -> Self {
        Self::all(0)
    }
}

/// The most input a session may leave waiting for the rest of its frame
/// unless it says otherwise ([`StreamSession::max_frame`]).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// One conversation on a byte stream.
///
/// The transport offers input with [`on_input`](Self::on_input) in the order
/// it arrived, together with how much more output it is willing to hold
/// (`room`). The session takes a prefix of the input, appends its replies to
/// `out`, and stops taking input once it has appended `room` bytes or more:
/// a reply is never cut, so one message's reply may pass `room`, but no
/// second message is answered after that. This is what keeps a server's
/// memory bounded whatever the protocol's reply-to-request ratio (a 2-byte
/// request with a 400-byte answer cannot make a 16 KiB receive into 3 MB of
/// output). Chunk boundaries carry no meaning unless the protocol gives them
/// one, as the chapter's `reverse` does.
///
/// A framed protocol answers "I need more bytes" by taking nothing
/// (`consumed: 0` with [`Next::Continue`]): the transport holds what it
/// offered, adds what arrives next, and offers it all again, as
/// tokio-util's `Decoder` returning `Ok(None)`. The bytes it holds for one
/// frame are bounded by [`max_frame`](Self::max_frame); past that the
/// session is told ([`on_frame_too_large`](Self::on_frame_too_large)) and
/// the connection is closed once that reply is sent.
///
/// A session lives and dies on the worker thread that accepted its
/// connection, so it need not be `Send`: it may hold per-worker state in an
/// `Rc`. Transports that move sessions between threads (the tokio model)
/// ask for `StreamSession + Send`.
///
/// ```
/// use protocols::{Fed, Next, StreamSession};
///
/// /// Answers each line with its length.
/// struct LineLength;
///
/// impl StreamSession for LineLength {
///     fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
///         let mut taken = 0;
///         // Whole lines only; a line's tail waits for the rest of it.
///         while let Some(end) = input[taken..].iter().position(|&b| b == b'\n') {
///             out.extend_from_slice(format!("{}\n", end).as_bytes());
///             taken += end + 1;
///             if out.len() >= room {
///                 break;
///             }
///         }
///         Fed { consumed: taken, next: Next::Continue }
///     }
/// }
///
/// let mut out = Vec::new();
/// LineLength.on_bytes(b"hello\nab\n", &mut out);
/// assert_eq!(out, b"5\n2\n");
/// ```
pub trait StreamSession {
    /// Takes a prefix of `input`, appending its replies to `out`, and stops
    /// once it has appended at least `room` bytes (finishing the message it
    /// is on). Taking nothing means "need more input": the same bytes are
    /// offered again, with more after them, once more arrive. A session
    /// with output still to produce ([`has_more_output`](Self::has_more_output))
    /// takes no new request until that output is written.
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed;

    /// After taking nothing ("need more input"): how many bytes the frame
    /// needs in all, counting from the first byte the session did not
    /// take, when the session knows (a length prefix says so). The
    /// transport then offers the input again only once it holds that
    /// many, and makes room for them at once, instead of on every byte
    /// that arrives: a peer trickling a large frame cannot make the
    /// session parse it over and over. 0 (the default): offer again on
    /// any new byte.
    fn input_needed(&self) -> usize {
        0
    }

    /// The most bytes the transport holds for this session while it waits
    /// for the rest of a frame ("need more input"). Past it, the transport
    /// calls [`on_frame_too_large`](Self::on_frame_too_large), sends what
    /// that wrote, and closes the connection.
    fn max_frame(&self) -> usize {
        DEFAULT_MAX_FRAME
    }

    /// The peer sent more than [`max_frame`](Self::max_frame) bytes
    /// without completing a frame: write a last reply (an error the peer
    /// can read) if the protocol has one. The connection closes after it.
    fn on_frame_too_large(&mut self, _out: &mut Vec<u8>) {}

    /// When the session next wants [`on_timer`](Self::on_timer), if ever.
    /// Asked again after every event, so a session moves or clears its
    /// deadline simply by changing what it answers.
    fn timer(&self) -> Option<Instant> {
        None
    }

    /// The time asked for by [`timer`](Self::timer) has come (`now` is at
    /// or after it): reply, keep going, or close once the output is sent.
    fn on_timer(&mut self, _now: Instant, _out: &mut Vec<u8>) -> Next {
        Next::Continue
    }

    /// Consumes all of `input`, appending every reply (long bodies included,
    /// written whole) to `out`. For in-memory use, tests and verifiers: a
    /// transport uses [`on_input`](Self::on_input), which keeps output bounded.
    fn on_bytes(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Next {
        loop {
            let fed = self.on_input(input, out, usize::MAX);
            input = &input[fed.consumed.min(input.len())..];
            if fed.next == Next::Close {
                return Next::Close;
            }
            let mut produced = false;
            while self.has_more_output() {
                produced = true;
                if self.on_drained(out) == Next::Close {
                    return Next::Close;
                }
            }
            if input.is_empty() || (fed.consumed == 0 && !produced) {
                return Next::Continue;
            }
        }
    }

    /// The peer finished sending (half-close); the last chance to reply.
    /// `unread` is the input the session left waiting for the rest of a
    /// frame (empty when it took everything): a frame that will never be
    /// completed, which the session may still answer (as tokio-util's
    /// `decode_eof` sees what is left in its buffer).
    fn on_eof(&mut self, _unread: &[u8], _out: &mut Vec<u8>) {}

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

    /// True when the output still to produce (see
    /// [`has_more_output`](Self::has_more_output)) is a long run of bytes
    /// in static memory that [`take_static_output`](Self::take_static_output)
    /// hands out: a transport then sends them from where they lie, once
    /// every earlier byte is sent, instead of having
    /// [`on_drained`](Self::on_drained) copy them into its buffer.
    fn has_static_output(&self) -> bool {
        false
    }

    /// The next part of the output, at most `max` bytes, as bytes in static
    /// memory, with what follows as for [`on_drained`](Self::on_drained);
    /// `None` when [`has_static_output`](Self::has_static_output) is false.
    fn take_static_output(&mut self, _max: usize) -> Option<(&'static [u8], Next)> {
        None
    }

    /// True when every byte of input is its own reply, unchanged and in
    /// order, and the session keeps no state: a transport may then send
    /// input straight back from its receive buffer, without offering it
    /// through [`on_input`](Self::on_input) (echo's zero-copy path).
    fn echoes(&self) -> bool {
        false
    }
}

/// Output a blocking transport lets one step produce before it writes it:
/// with [`Unread::feed_in_steps`], a connection never holds much more
/// than this.
pub const STEP_ROOM: usize = 256 * 1024;

/// Input a session has not taken yet, held by a transport of one's own (a
/// blocking or async server, a test) until more arrives: what the engine
/// does for its own connections. A session that answers "need more input"
/// is offered the held bytes again with the new ones after them; a frame
/// that outgrows [`StreamSession::max_frame`] gets
/// [`StreamSession::on_frame_too_large`] and the connection closes; at the
/// end of the stream [`as_slice`](Self::as_slice) is what
/// [`StreamSession::on_eof`] is given.
///
/// Nothing is copied while a session takes whole reads: only the untaken
/// tail of one is kept.
///
/// ```
/// use protocols::reverse::ReverseLines;
/// use protocols::{Next, StreamSession, Unread};
///
/// let mut session = ReverseLines::default();
/// let mut unread = Unread::default();
/// let mut out = Vec::new();
/// // A line cut in two by the network is answered once it is whole.
/// unread.feed_all(&mut session, b"abc\nde", &mut out);
/// assert_eq!(out, b"cba\n");
/// unread.feed_all(&mut session, b"f\n", &mut out);
/// assert_eq!(out, b"cba\nfed\n");
/// ```
#[derive(Debug, Default)]
pub struct Unread {
    bytes: Vec<u8>,
    /// How many bytes in all the session said its frame needs when it
    /// last asked for more ([`StreamSession::input_needed`]); 0: any more.
    needed: usize,
}

impl Unread {
    /// The bytes held: a frame's beginning the session waits to complete.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Feeds `fresh` (with whatever was held before it) to `session` as a
    /// blocking transport does: in steps that each answer about `room`
    /// bytes, calling `flush` after each (which writes `out`, and any long
    /// body the session then has, and says whether the session closed
    /// while writing it). Keeps what the session leaves untaken for the
    /// next call. Returns `Close` as soon as the session or `flush` says
    /// so, or the held frame outgrew the session's bound; the rest of the
    /// input is then not read.
    pub fn feed_in_steps<E>(
        &mut self,
        session: &mut dyn StreamSession,
        fresh: &[u8],
        out: &mut Vec<u8>,
        room: usize,
        mut flush: impl FnMut(&mut dyn StreamSession, &mut Vec<u8>) -> Result<Next, E>,
    ) -> Result<Next, E> {
        let Some(mut input) = self.offer(fresh) else {
            return Ok(Next::Continue);
        };
        loop {
            let fed = session.on_input(input, out, room);
            input = &input[fed.consumed.min(input.len())..];
            // A session writing a body takes nothing until the body is written.
            let busy = session.has_more_output();
            let after = flush(session, out)?;
            if fed.next == Next::Close || after == Next::Close {
                return Ok(Next::Close);
            }
            if input.is_empty() || (fed.consumed == 0 && !busy) {
                break;
            }
        }
        let untaken = input.len();
        if self.keep(session, fresh, untaken, out) == Next::Close {
            flush(session, out)?;
            return Ok(Next::Close);
        }
        Ok(Next::Continue)
    }

    /// Feeds `fresh` to `session` in memory, writing every reply (long
    /// bodies whole) to `out`: [`StreamSession::on_bytes`] for input that
    /// arrives in pieces. For tests, verifiers and fuzzing.
    pub fn feed_all(
        &mut self,
        session: &mut dyn StreamSession,
        fresh: &[u8],
        out: &mut Vec<u8>,
    ) -> Next {
        let written = self.feed_in_steps(session, fresh, out, usize::MAX, |session, out| {
            while session.has_more_output() {
                if session.on_drained(out) == Next::Close {
                    return Ok::<_, std::convert::Infallible>(Next::Close);
                }
            }
            Ok(Next::Continue)
        });
        match written {
            Ok(next) => next,
            Err(never) => match never {},
        }
    }

    /// The input to offer now: what is held, then `fresh`. `None` while
    /// the session said its frame needs more than that: `fresh` is then
    /// held without offering anything.
    ///
    /// After offering, a transport reports what the session left with
    /// [`keep`](Self::keep), passing the same `fresh`.
    pub fn offer<'a>(&'a mut self, fresh: &'a [u8]) -> Option<&'a [u8]> {
        if self.bytes.is_empty() {
            if fresh.len() < self.needed {
                self.bytes.extend_from_slice(fresh);
                return None;
            }
            return Some(fresh);
        }
        self.bytes.extend_from_slice(fresh);
        if self.bytes.len() < self.needed {
            return None;
        }
        Some(&self.bytes)
    }

    /// After offering (see [`offer`](Self::offer)): the session left the
    /// last `untaken` bytes of what was offered, to be held. Past the
    /// session's frame bound they are dropped, the session writes its
    /// last word to `out` ([`StreamSession::on_frame_too_large`]), and
    /// the answer is `Close`.
    pub fn keep(
        &mut self,
        session: &mut dyn StreamSession,
        fresh: &[u8],
        untaken: usize,
        out: &mut Vec<u8>,
    ) -> Next {
        if self.bytes.is_empty() {
            let untaken = untaken.min(fresh.len());
            self.bytes
                .extend_from_slice(&fresh[fresh.len() - untaken..]);
        } else {
            let taken = self.bytes.len().saturating_sub(untaken);
            self.bytes.drain(..taken);
        }
        // A session that passes on a length its peer wrote cannot make the
        // transport wait for more than its frame bound.
        self.needed = if self.bytes.is_empty() {
            0
        } else {
            session
                .input_needed()
                .min(session.max_frame().saturating_add(1))
        };
        if self.bytes.len() > session.max_frame() {
            self.bytes = Vec::new();
            self.needed = 0;
            session.on_frame_too_large(out);
            return Next::Close;
        }
        if self.bytes.is_empty() && self.bytes.capacity() > 4096 {
            // An idle connection gives back what a long frame borrowed.
            self.bytes = Vec::new();
        }
        Next::Continue
    }
}

/// How much of `input` a session whose output is never longer than its
/// input may take with `room` bytes of output left: at most `room`, at
/// least one byte.
pub fn prefix_for_room(input: &[u8], room: usize) -> usize {
    input.len().min(room.max(1))
}

/// Test helpers shared by the protocols' tests.
/// Feeds `chunks` to `session` the way a transport with an output bound
/// does, in memory (for tests and fuzzing): held input is offered with
/// `room` bytes of room at a time, the output is "sent" (moved to the
/// result) between offers, and long bodies are written as the output
/// drains, from static memory when the session offers it (parts of at most
/// `room` bytes). Input a session leaves untaken ("need more input") is
/// held and offered again with the next chunk, up to the session's frame
/// bound (past it, its last word ends the run). Returns everything written
/// and the most one `on_input` call appended beyond its room. Panics when
/// the session takes more than offered.
pub fn drive_bounded(
    session: &mut dyn StreamSession,
    chunks: &[&[u8]],
    room: usize,
) -> (Vec<u8>, usize) {
    assert!(room > 0, "a transport offers input only with room to spare");
    let mut written = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    let mut worst = 0;
    let mut out = Vec::new();
    for chunk in chunks {
        held.extend_from_slice(chunk);
        let mut from = 0;
        loop {
            while session.has_more_output() {
                let next = match session.take_static_output(room) {
                    Some((part, next)) => {
                        written.extend_from_slice(part);
                        next
                    }
                    None => session.on_drained(&mut out),
                };
                written.append(&mut out);
                if next == Next::Close {
                    return (written, worst);
                }
            }
            if from == held.len() {
                break;
            }
            let fed = session.on_input(&held[from..], &mut out, room);
            worst = worst.max(out.len().saturating_sub(room));
            written.append(&mut out);
            assert!(fed.consumed <= held.len() - from, "took more than offered");
            from += fed.consumed;
            if fed.next == Next::Close {
                while session.has_more_output() && session.on_drained(&mut out) == Next::Continue {
                    written.append(&mut out);
                }
                written.append(&mut out);
                return (written, worst);
            }
            if fed.consumed == 0 && !session.has_more_output() {
                break; // needs more input: keep the rest for the next chunk
            }
        }
        held.drain(..from);
        if held.len() > session.max_frame() {
            session.on_frame_too_large(&mut out);
            written.append(&mut out);
            return (written, worst);
        }
    }
    (written, worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpConfig, HttpSession};
    use std::sync::Arc;

    /// One length byte and that many bytes, answered `<n>`; says how many
    /// bytes its frame needs, and counts how often it is offered input.
    #[derive(Default)]
    struct LengthPrefixed {
        needed: usize,
        offers: usize,
    }

    impl StreamSession for LengthPrefixed {
        fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
            self.offers += 1;
            let end = input.first().map_or(1, |&len| 1 + usize::from(len));
            if input.len() < end {
                self.needed = end;
                return Fed::need_more();
            }
            out.extend_from_slice(format!("<{}>", end - 1).as_bytes());
            Fed::all(end)
        }

        fn input_needed(&self) -> usize {
            self.needed
        }

        fn max_frame(&self) -> usize {
            100
        }

        fn on_frame_too_large(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"too large");
        }
    }

    #[test]
    fn unread_input_waits_for_the_frame_the_session_said_it_needs() {
        let mut s = LengthPrefixed::default();
        let mut unread = Unread::default();
        let mut out = Vec::new();
        // A 50-byte frame trickling in a byte at a time is offered twice:
        // its first byte (which says how long it is), and once it is whole.
        let mut frame = vec![50u8];
        frame.extend_from_slice(&[b'x'; 50]);
        for byte in &frame {
            assert_eq!(unread.feed_all(&mut s, &[*byte], &mut out), Next::Continue);
        }
        assert_eq!(out, b"<50>");
        assert_eq!(s.offers, 2);
        assert!(unread.as_slice().is_empty());
        // Whole frames and the start of the next in one read: the start is
        // held, and only it (the read itself was not copied whole).
        unread.feed_all(&mut s, &[1, b'a', 2, b'b', b'c', 3], &mut out);
        assert_eq!(out, b"<50><1><2>");
        assert_eq!(unread.as_slice(), [3]);
    }

    #[test]
    fn unread_input_past_the_frame_bound_gets_the_sessions_last_word() {
        let mut s = LengthPrefixed::default();
        let mut unread = Unread::default();
        let mut out = Vec::new();
        // A frame of 200 bytes announced: the transport waits for at most
        // one byte past the bound (101), then the bound ends it.
        assert_eq!(unread.feed_all(&mut s, &[200], &mut out), Next::Continue);
        assert_eq!(unread.feed_all(&mut s, &[0; 60], &mut out), Next::Continue);
        assert_eq!(s.offers, 1, "61 bytes held is short of what it needs");
        assert_eq!(unread.feed_all(&mut s, &[0; 60], &mut out), Next::Close);
        assert_eq!(out, b"too large");
        assert!(unread.as_slice().is_empty(), "the held frame is dropped");
    }

    #[test]
    fn feeding_in_steps_writes_bodies_between_and_loses_no_request() {
        let mut s = HttpSession::new(Arc::new(HttpConfig::default()));
        let input = b"GET /bytes/600000 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n".repeat(3);
        let mut written = Vec::new();
        let mut largest = 0;
        let mut out = Vec::new();
        let next =
            Unread::default().feed_in_steps(&mut s, &input, &mut out, STEP_ROOM, |session, out| {
                loop {
                    largest = largest.max(out.len());
                    written.append(out);
                    if !session.has_more_output() {
                        return Ok::<_, ()>(Next::Continue);
                    }
                    session.on_drained(out);
                }
            });
        assert_eq!(next, Ok(Next::Continue));
        let mut expected = Vec::new();
        HttpSession::new(Arc::new(HttpConfig::default())).on_bytes(&input, &mut expected);
        assert!(written == expected, "every response, in order");
        assert!(
            largest <= STEP_ROOM + 1024,
            "no step holds a whole body: {largest}"
        );
    }
}
