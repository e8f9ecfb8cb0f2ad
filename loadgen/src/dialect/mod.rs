//! Request/response protocols loadgen speaks to servers it did not write:
//! Redis's RESP, memcached's text protocol, and a generic mode for any
//! other protocol (requests from a template, replies framed by a rule).
//!
//! A [`Dialect`] is sans-IO: it writes each request's bytes and says what
//! its reply must be ([`Expect`]); a connection's [`ReplyReader`] cuts the
//! reply stream into replies and checks each one against the expectation
//! of the request it answers, in order. The TCP load threads own the
//! sockets; nothing here touches one.

mod generic;
mod keys;
mod memcache;
mod mix;
mod resp;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

pub use generic::{Framing, Generic, Template};
pub use keys::{parse_key_dist, KeyDist, KeySpace};
pub use memcache::{McCommand, Memcache};
pub use mix::Mix;
pub use resp::{Resp, RespCommand};

use crate::rng::Rng;

/// The largest reply a reader holds while waiting for its end: a reply
/// that has not ended by then is taken as a framing error, not buffered on.
pub const MAX_REPLY: usize = 64 << 20;

/// What all the connections of one load thread may hold at once of replies
/// that have not all arrived: past it, the connection whose reply just grew
/// is dropped (a mismatch), so a server that never ends its replies costs
/// loadgen at most this per thread, however many connections it has.
pub const REPLY_MEMORY: usize = 4 * MAX_REPLY;

/// What one request's reply must be. `kind` and `key` mean what the
/// dialect that made it says; `exact` is how many bytes of the
/// connection's exact-reply stream belong to this reply (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// The command the request carried, in the dialect's own numbering.
    pub kind: u8,
    /// The key the request named (dialects that check it).
    pub key: u64,
    /// Bytes of the exact-reply stream this reply must equal.
    pub exact: u32,
}

/// How one reply at the front of the stream reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The reply has not all arrived: no decision before the stream holds
    /// at least `need` bytes.
    Partial {
        /// Bytes the stream must hold before the reply can end.
        need: usize,
        /// The first `scanned` bytes were searched for the reply's end and
        /// hold none: the next call may resume its search there (0: no
        /// such search), so a long line is scanned once, not once a read.
        scanned: usize,
    },
    /// A whole reply of `len` bytes.
    Done {
        /// The reply's length in the stream.
        len: usize,
        /// What it said.
        verdict: Verdict,
    },
}

/// What a whole reply said about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The reply the request calls for.
    Ok,
    /// A well-formed error from the server (Redis `-ERR`/`-OOM`, memcached
    /// `SERVER_ERROR`): counted as a refused request, the connection goes on.
    Refused,
    /// Not a reply this request can get: the stream cannot be trusted and
    /// the connection is dropped.
    Wrong,
}

/// A request/response protocol: how to write a request and how to read
/// (and judge) its reply.
pub trait Dialect: Send + Sync + fmt::Debug {
    /// The name reports show.
    fn name(&self) -> &'static str;

    /// What the requests are, for the report (mix, keys, sizes).
    fn describe(&self) -> String;

    /// Appends request number `seq` to `out` and says what its reply must
    /// be. A dialect that checks replies byte for byte appends the exact
    /// reply to `exact` and counts it in [`Expect::exact`].
    fn request(&self, seq: u64, rng: &mut Rng, out: &mut Vec<u8>, exact: &mut Vec<u8>) -> Expect;

    /// Reads the reply at the front of `stream` (`exact`: its bytes of the
    /// exact-reply stream; `scanned`: what an earlier call on this reply
    /// said it had searched, else 0).
    fn reply(&self, stream: &[u8], scanned: usize, expect: &Expect, exact: &[u8]) -> Frame;
}

/// Why a reply stream went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// A reply was not one its request can get, bytes came that no request
    /// asked for, or a reply grew (or declared it would grow) past
    /// [`MAX_REPLY`] without ending.
    Wrong,
}

/// One connection's reply stream: the expectations of its requests in
/// flight, the bytes of a reply that has not all arrived, and the exact
/// replies still to come.
#[derive(Debug)]
pub struct ReplyReader {
    dialect: Arc<dyn Dialect>,
    expects: VecDeque<Expect>,
    pending: Vec<u8>,
    need: usize,
    /// What the dialect searched of the pending reply.
    scanned: usize,
    exact: Vec<u8>,
    exact_at: usize,
}

impl ReplyReader {
    /// A reader for a fresh connection.
    pub fn new(dialect: Arc<dyn Dialect>) -> Self {
        Self {
            dialect,
            expects: VecDeque::new(),
            pending: Vec::new(),
            need: 0,
            scanned: 0,
            exact: Vec::new(),
            exact_at: 0,
        }
    }

    /// Memory held for replies that have not all arrived.
    pub fn buffered(&self) -> usize {
        self.pending.capacity()
    }

    /// Writes request number `seq` to `out` and expects its reply next
    /// after those already expected.
    pub fn request(&mut self, seq: u64, rng: &mut Rng, out: &mut Vec<u8>) {
        let expect = self.dialect.request(seq, rng, out, &mut self.exact);
        self.expects.push_back(expect);
    }

    /// Takes `data`, the next bytes of the reply stream: pushes whether each
    /// reply it completed was refused to `refused`, in order. A reply that
    /// cannot be right fails the whole stream.
    pub fn feed(&mut self, data: &[u8], refused: &mut Vec<bool>) -> Result<(), StreamError> {
        refused.clear();
        if self.pending.is_empty() {
            let used = self.read_replies(data, refused)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            self.pending.extend_from_slice(data);
            if self.pending.len() < self.need {
                return Ok(());
            }
            let pending = std::mem::take(&mut self.pending);
            let used = self.read_replies(&pending, refused);
            self.pending = pending;
            self.pending.drain(..used?);
        }
        if self.pending.len() > MAX_REPLY {
            return Err(StreamError::Wrong);
        }
        if self.pending.is_empty() && self.pending.capacity() > 64 * 1024 {
            // A large reply has passed: its buffer is not kept for good.
            self.pending = Vec::new();
        }
        if !self.pending.is_empty() && self.expects.is_empty() {
            // Bytes that answer no request.
            return Err(StreamError::Wrong);
        }
        Ok(())
    }

    /// Reads whole replies from the front of `stream`: how many bytes they took.
    fn read_replies(
        &mut self,
        stream: &[u8],
        refused: &mut Vec<bool>,
    ) -> Result<usize, StreamError> {
        let mut at = 0;
        self.need = 0;
        while let Some(expect) = self.expects.front() {
            if at == stream.len() {
                break;
            }
            let exact_end = self.exact_at + expect.exact as usize;
            let exact = &self.exact[self.exact_at..exact_end];
            match self
                .dialect
                .reply(&stream[at..], self.scanned, expect, exact)
            {
                Frame::Partial { need, scanned } => {
                    if need > MAX_REPLY {
                        // A declared length no reply may have: refused now,
                        // not after buffering up to the bound.
                        return Err(StreamError::Wrong);
                    }
                    // What stays pending is this reply's start.
                    self.need = need;
                    self.scanned = scanned;
                    break;
                }
                Frame::Done { len, verdict } => {
                    if verdict == Verdict::Wrong || len == 0 {
                        return Err(StreamError::Wrong);
                    }
                    self.scanned = 0;
                    at += len;
                    self.exact_at = exact_end;
                    self.expects.pop_front();
                    refused.push(verdict == Verdict::Refused);
                }
            }
        }
        if self.exact_at > 64 * 1024 {
            self.exact.drain(..self.exact_at);
            self.exact_at = 0;
        }
        Ok(at)
    }
}

/// Finds `\r\n` in `s`, where the first `scanned` bytes hold none: the
/// line's length without it.
fn crlf_line(s: &[u8], scanned: usize) -> Option<usize> {
    let mut from = scanned.min(s.len());
    while let Some(i) = s[from..].iter().position(|&b| b == b'\n') {
        let end = from + i;
        if end > 0 && s[end - 1] == b'\r' {
            return Some(end - 1);
        }
        from = end + 1;
    }
    None
}

/// Parses a decimal integer, optionally negative, as RESP and memcached
/// write them.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(if neg { -v } else { v })
}

/// Appends the name of key number `key`: `prefix` and twelve digits, as
/// `redis-benchmark -r` names its keys (so both tools load the same keys).
fn push_key(out: &mut Vec<u8>, prefix: &[u8], key: u64) {
    out.extend_from_slice(prefix);
    let mut digits = [b'0'; 12];
    let mut n = key;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
}

/// What the key-value dialects (resp, memcache) draw each request from: a
/// command from the mix, a key from the key space, a value of one of the
/// sizes.
#[derive(Debug)]
struct Draws<C> {
    mix: Mix<C>,
    keys: KeySpace,
    value_sizes: (usize, usize),
    values: Values,
}

impl<C: Copy + PartialEq> Draws<C> {
    /// Values of `lo..=hi` bytes, their bytes seeded by `seed`.
    fn new(mix: Mix<C>, keys: KeySpace, (lo, hi): (usize, usize), seed: u64) -> Self {
        Self {
            mix,
            keys,
            value_sizes: (lo, hi),
            values: Values::new(hi, &mut Rng::new(seed)),
        }
    }

    /// A command and the key it names.
    fn command(&self, rng: &mut Rng) -> (C, u64) {
        (self.mix.pick(rng), self.keys.pick(rng))
    }

    /// A value of a drawn size.
    fn value(&self, rng: &mut Rng) -> &[u8] {
        let len = rng.range(self.value_sizes.0, self.value_sizes.1);
        self.values.take(len, rng)
    }

    /// `get:9,set:1 over 100000 keys, uniform, values of 3-3 B`.
    fn describe(&self, name: impl Fn(C) -> &'static str) -> String {
        format!(
            "{} over {}, values of {}-{} B",
            self.mix.describe(name),
            self.keys.describe(),
            self.value_sizes.0,
            self.value_sizes.1
        )
    }
}

/// Random printable values, cut to size per request: filling every value
/// byte by byte would cost the load thread more than the server's work.
#[derive(Debug)]
struct Values {
    bytes: Vec<u8>,
}

impl Values {
    fn new(largest: usize, rng: &mut Rng) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let bytes = (0..largest * 2 + 64)
            .map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize])
            .collect();
        Self { bytes }
    }

    /// A value of `len` bytes starting at a random place.
    fn take(&self, len: usize, rng: &mut Rng) -> &[u8] {
        let start = (rng.next_u64() % (self.bytes.len() - len) as u64) as usize;
        &self.bytes[start..start + len]
    }
}

#[cfg(test)]
mod tests;
