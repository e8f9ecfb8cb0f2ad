//! Reverse: the chapter's multi-threaded server sends back each chunk it
//! receives, reversed. Two framings:
//!
//! - [`ReverseChunks`], the chapter's semantics: each chunk the transport
//!   delivers is reversed on its own. Chunk boundaries depend on timing, so a
//!   client can only predict the reply when it sends one small message and
//!   waits, as the chapter's client does.
//! - [`ReverseLines`]: each newline-terminated line is reversed, whatever the
//!   chunking; this is what a load generator can verify exactly.
//!
//! Reversal is by Unicode scalar value when the text is valid UTF-8 and byte
//! by byte otherwise.

use crate::stream::prefix_for_room;
use crate::{Fed, Next, StreamSession};

/// Longest line [`ReverseLines`] accepts by default.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Appends `input` reversed to `out`: by `char` for valid UTF-8, else by byte.
pub fn reverse_into(input: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(input) {
        Ok(text) if !text.is_ascii() => {
            let mut utf8 = [0u8; 4];
            out.reserve(input.len());
            for c in text.chars().rev() {
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        // ASCII and invalid UTF-8 both reverse byte by byte.
        _ => out.extend(input.iter().rev()),
    }
}

/// The chapter's reverse: every received chunk is sent back reversed.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReverseChunks;

impl StreamSession for ReverseChunks {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        // A chunk is cut only when the output is nearly full, and then at a
        // character boundary, so UTF-8 text still reverses by character.
        let mut n = prefix_for_room(input, room);
        while n < input.len() && n > 1 && is_continuation(input[n]) {
            n -= 1;
        }
        reverse_into(&input[..n], out);
        Fed::all(n)
    }
}

/// True for the second and later bytes of a UTF-8 sequence.
fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Line-framed reverse: each line is reversed and keeps its terminator (`\n`
/// or `\r\n`) at the end. A partial line waits for its end, held by the
/// transport ("need more input"); at end of stream it is reversed as it
/// is. A line longer than the bound gets an error line and the connection
/// is closed.
#[derive(Debug, Clone)]
pub struct ReverseLines {
    max_line: usize,
    /// How many bytes at the front of the next offered input are known to
    /// hold no newline: the transport offers a held partial line again with
    /// more after it, and only the new bytes are searched, so a line
    /// trickling in a byte at a time costs linear work.
    searched: usize,
    closed: bool,
}

impl Default for ReverseLines {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl ReverseLines {
    /// A session that accepts lines of up to `max_line` bytes (terminator excluded).
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            searched: 0,
            closed: false,
        }
    }

    fn reply_line(line: &[u8], out: &mut Vec<u8>) {
        let (body, terminator): (&[u8], &[u8]) = match line {
            [body @ .., b'\r', b'\n'] => (body, b"\r\n"),
            [body @ .., b'\n'] => (body, b"\n"),
            body => (body, b""),
        };
        reverse_into(body, out);
        out.extend_from_slice(terminator);
    }

    /// Answers a line over the bound and closes; the whole input is taken.
    fn too_long(&mut self, consumed: usize, out: &mut Vec<u8>) -> Fed {
        self.closed = true;
        self.write_too_long(out);
        Fed {
            consumed,
            next: Next::Close,
        }
    }

    fn write_too_long(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("error: line longer than {} bytes\n", self.max_line).as_bytes(),
        );
    }
}

impl StreamSession for ReverseLines {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        if self.closed {
            return Fed {
                consumed: input.len(),
                next: Next::Close,
            };
        }
        let start = out.len();
        let mut taken = 0;
        loop {
            if out.len() - start >= room {
                // Out of room: the remaining lines wait for the output to drain.
                return Fed::all(taken);
            }
            let rest = &input[taken..];
            let known = std::mem::take(&mut self.searched).min(rest.len());
            let Some(pos) = rest[known..].iter().position(|&b| b == b'\n') else {
                // A pending '\r' may still become part of "\r\n", so it
                // does not count yet.
                let pending_body = rest.len() - usize::from(rest.last() == Some(&b'\r'));
                if pending_body > self.max_line {
                    return self.too_long(input.len(), out);
                }
                self.searched = rest.len();
                return Fed::all(taken);
            };
            let line = &rest[..known + pos + 1];
            let ends_with_cr = line.ends_with(b"\r\n");
            if line.len() - 1 - usize::from(ends_with_cr) > self.max_line {
                return self.too_long(input.len(), out);
            }
            Self::reply_line(line, out);
            taken += line.len();
        }
    }

    fn max_frame(&self) -> usize {
        // The session's own bound (body and "\r") closes first; this only
        // backs it up.
        self.max_line.saturating_add(2)
    }

    fn on_frame_too_large(&mut self, out: &mut Vec<u8>) {
        self.closed = true;
        self.write_too_long(out);
    }

    fn on_eof(&mut self, unread: &[u8], out: &mut Vec<u8>) {
        if !self.closed && !unread.is_empty() {
            Self::reply_line(unread, out);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Unread;
    use proptest::prelude::*;

    /// Splits `data` at the given cut points (taken modulo its length, sorted).
    pub(crate) fn split_at_cuts<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| {
                if data.is_empty() {
                    0
                } else {
                    c % (data.len() + 1)
                }
            })
            .collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&data[start..p]);
            start = p;
        }
        chunks.push(&data[start..]);
        chunks
    }

    /// Feeds `chunks` as a transport does (holding a partial line), then
    /// ends the stream.
    fn run_lines(max: usize, chunks: &[&[u8]]) -> (Vec<u8>, Next) {
        let mut s = ReverseLines::new(max);
        let mut unread = Unread::default();
        let mut out = Vec::new();
        let mut next = Next::Continue;
        for c in chunks {
            next = unread.feed_all(&mut s, c, &mut out);
            if next == Next::Close {
                break;
            }
        }
        if next == Next::Continue {
            s.on_eof(unread.as_slice(), &mut out);
        }
        (out, next)
    }

    #[test]
    fn chapter_message_is_reversed() {
        let mut out = Vec::new();
        ReverseChunks.on_bytes(b"SNS is the best course ever !", &mut out);
        assert_eq!(out, b"! reve esruoc tseb eht si SNS");
    }

    #[test]
    fn utf8_reverses_by_scalar_value_and_invalid_by_byte() {
        let mut out = Vec::new();
        ReverseChunks.on_bytes("añb€".as_bytes(), &mut out);
        assert_eq!(out, "€bña".as_bytes());
        out.clear();
        ReverseChunks.on_bytes(&[0xff, b'a', 0xc3], &mut out);
        assert_eq!(out, [0xc3, b'a', 0xff]);
    }

    #[test]
    fn lines_keep_their_terminators() {
        let (out, next) = run_lines(64, &[b"abc\nde\r\nf"]);
        assert_eq!(next, Next::Continue);
        assert_eq!(out, b"cba\ned\r\nf");
    }

    #[test]
    fn crlf_split_between_chunks_is_still_crlf() {
        let (out, _) = run_lines(64, &[b"ab\r", b"\ncd\n"]);
        assert_eq!(out, b"ba\r\ndc\n");
    }

    #[test]
    fn line_at_the_bound_passes_and_one_past_it_closes() {
        let (out, next) = run_lines(4, &[b"abcd\r\n"]);
        assert_eq!((out.as_slice(), next), (&b"dcba\r\n"[..], Next::Continue));
        let (out, next) = run_lines(4, &[b"ab", b"cde"]);
        assert_eq!(next, Next::Close);
        assert_eq!(out, b"error: line longer than 4 bytes\n");
        // Input after the error is ignored.
        let mut s = ReverseLines::new(4);
        let mut out = Vec::new();
        s.on_bytes(b"abcdef\n", &mut out);
        assert_eq!(s.on_bytes(b"x\n", &mut out), Next::Close);
        s.on_eof(b"y", &mut out);
        assert_eq!(out, b"error: line longer than 4 bytes\n");
    }

    #[test]
    fn long_partial_line_is_rejected_before_its_end_arrives() {
        let mut s = ReverseLines::new(8);
        let mut unread = Unread::default();
        let mut out = Vec::new();
        assert_eq!(
            unread.feed_all(&mut s, &[b'x'; 8], &mut out),
            Next::Continue
        );
        assert_eq!(unread.as_slice(), [b'x'; 8], "the partial line is held");
        assert_eq!(unread.feed_all(&mut s, b"y", &mut out), Next::Close);
        assert_eq!(out, b"error: line longer than 8 bytes\n");
    }

    #[test]
    fn a_partial_line_is_searched_once_however_it_trickles_in() {
        // Offered again with one more byte each time, the session only
        // looks at the new byte: the newline found at the end completes
        // the line it held, whole and reversed.
        let mut s = ReverseLines::new(usize::MAX);
        let mut unread = Unread::default();
        let mut out = Vec::new();
        for b in b"abcdef" {
            unread.feed_all(&mut s, &[*b], &mut out);
            assert!(out.is_empty());
            assert_eq!(s.searched, unread.as_slice().len());
        }
        unread.feed_all(&mut s, b"\ng", &mut out);
        assert_eq!(out, b"fedcba\n");
        assert_eq!(unread.as_slice(), b"g");
        assert_eq!(s.searched, 1);
    }

    #[test]
    fn a_transport_bound_past_the_line_bound_never_cuts_a_line_first() {
        let s = ReverseLines::new(8);
        let mut t = s.clone();
        let mut out = Vec::new();
        // A held "line" one past what the session allows: the session's
        // own answer and the transport's backstop say the same.
        let (written, _) = crate::stream::drive_bounded(&mut t, &[&[b'x'; 10]], 64);
        t.on_frame_too_large(&mut out);
        assert_eq!(written, b"error: line longer than 8 bytes\n");
        assert_eq!(out, written);
        assert!(s.max_frame() > 8 + 1);
    }

    /// The rule, written apart from the code under test: each line's body
    /// reversed (by character when it is valid UTF-8, byte by byte
    /// otherwise), its terminator (`\r\n` or `\n`) kept.
    fn reference_lines(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in data.split_inclusive(|&b| b == b'\n') {
            let (body, end): (&[u8], &[u8]) = if let Some(b) = piece.strip_suffix(b"\r\n") {
                (b, b"\r\n")
            } else if let Some(b) = piece.strip_suffix(b"\n") {
                (b, b"\n")
            } else {
                (piece, b"")
            };
            match std::str::from_utf8(body) {
                Ok(text) => out.extend(text.chars().rev().collect::<String>().into_bytes()),
                Err(_) => out.extend(body.iter().rev()),
            }
            out.extend_from_slice(end);
        }
        out
    }

    #[test]
    fn the_reference_agrees_with_hand_written_cases() {
        assert_eq!(reference_lines(b"abc\r\nx\n"), b"cba\r\nx\n");
        assert_eq!(
            reference_lines("h\u{e9}\u{20ac}\n".as_bytes()),
            "\u{20ac}\u{e9}h\n".as_bytes()
        );
        assert_eq!(reference_lines(&[0xff, b'a', b'\n']), [b'a', 0xff, b'\n']);
    }

    proptest! {
        #[test]
        fn line_reversal_does_not_depend_on_chunking(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(0xe2), Just(0x82), Just(0xac), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let (out, next) = run_lines(usize::MAX, &split_at_cuts(&data, &cuts));
            prop_assert_eq!(next, Next::Continue);
            prop_assert_eq!(out, reference_lines(&data));
        }

        /// The chapter's chunk reverse over arbitrary bytes and any room:
        /// every call takes at least a byte and at most its room, and says
        /// back exactly what it took, reversed by the rule.
        #[test]
        fn chunks_reverse_what_they_take_whatever_the_bytes(
            data in proptest::collection::vec(prop_oneof![Just(0xe2), Just(0x82), Just(0xac), Just(0xc3), Just(0xa9), any::<u8>()], 1..300),
            room in 0usize..400,
        ) {
            let mut session = ReverseChunks;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let mut out = Vec::new();
                let fed = session.on_input(rest, &mut out, room);
                prop_assert_eq!(fed.next, Next::Continue);
                prop_assert!(fed.consumed >= 1 && fed.consumed <= rest.len().min(room.max(1)));
                let taken = &rest[..fed.consumed];
                let mut expected = Vec::new();
                match std::str::from_utf8(taken) {
                    Ok(text) => expected.extend(text.chars().rev().collect::<String>().into_bytes()),
                    Err(_) => expected.extend(taken.iter().rev()),
                }
                prop_assert_eq!(out, expected);
                rest = &rest[fed.consumed..];
            }
        }

        #[test]
        fn reversing_a_line_twice_gives_it_back(line in "[^\n\r]{0,64}") {
            let mut once = Vec::new();
            reverse_into(line.as_bytes(), &mut once);
            let mut twice = Vec::new();
            reverse_into(&once, &mut twice);
            prop_assert_eq!(twice, line.as_bytes());
        }

        #[test]
        fn the_bound_closes_whatever_the_chunking(
            len in 0usize..40,
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut data = vec![b'a'; len];
            data.push(b'\n');
            let (out, next) = run_lines(16, &split_at_cuts(&data, &cuts));
            if len > 16 {
                prop_assert_eq!(next, Next::Close);
                prop_assert_eq!(out, b"error: line longer than 16 bytes\n".to_vec());
            } else {
                prop_assert_eq!(next, Next::Continue);
                prop_assert_eq!(out, data);
            }
        }
    }
}
