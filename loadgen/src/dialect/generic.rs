//! Any other request/response protocol: requests from a template with
//! placeholders, replies cut by a framing rule and, optionally, each
//! checked against a template of its own.

use super::{push_key, Dialect, Expect, Frame, KeySpace, Values, Verdict};
use crate::rng::Rng;
use crate::text::push_decimal;

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    /// `{seq}`: the request's number, unique in the run.
    Seq,
    /// `{key}`: a key from the key space, named as resp and memcache name them.
    Key,
    /// `{payload}`: random printable bytes of a `--size` length.
    Payload,
}

/// Bytes with placeholders: `{seq}`, `{key}` and `{payload}`; `{{` and
/// `}}` stand for one brace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// A template from the command line, where `\n`, `\r`, `\t`, `\0`,
    /// `\\` and `\xHH` stand for the bytes they name.
    pub fn from_arg(text: &str) -> Result<Self, String> {
        Self::parse(&unescape(text)?)
    }

    /// A template from a file's bytes, taken as they are (no escapes).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            if rest.starts_with(b"{{") || rest.starts_with(b"}}") {
                literal.push(rest[0]);
                i += 2;
                continue;
            }
            if rest[0] != b'{' {
                literal.push(rest[0]);
                i += 1;
                continue;
            }
            let Some(close) = rest.iter().position(|&b| b == b'}') else {
                return Err("a '{' opens no placeholder: write {{ for a brace".into());
            };
            let piece = match &rest[1..close] {
                b"seq" => Piece::Seq,
                b"key" => Piece::Key,
                b"payload" => Piece::Payload,
                other => {
                    return Err(format!(
                        "no placeholder {{{}}}: give {{seq}}, {{key}} or {{payload}}, or write {{{{ for a brace",
                        String::from_utf8_lossy(other)
                    ))
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Bytes(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            i += close + 1;
        }
        if !literal.is_empty() {
            pieces.push(Piece::Bytes(literal));
        }
        if pieces.is_empty() {
            return Err("the template is empty".into());
        }
        Ok(Self { pieces })
    }

    fn uses(&self, wanted: &Piece) -> bool {
        self.pieces.iter().any(|p| p == wanted)
    }

    fn expand(&self, fill: &Fill, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Seq => push_decimal(out, fill.seq),
                Piece::Key => push_key(out, b"key:", fill.key),
                Piece::Payload => out.extend_from_slice(fill.payload),
            }
        }
    }
}

/// What one request's placeholders stand for.
struct Fill<'a> {
    seq: u64,
    key: u64,
    payload: &'a [u8],
}

/// Turns the command line's escapes into bytes.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let byte = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("\\x takes two hex digits, as \\x0a")?;
                out.push(byte);
            }
            other => {
                return Err(format!(
                    "unknown escape \\{}: give \\n, \\r, \\t, \\0, \\\\ or \\xHH",
                    other.map_or(String::new(), |c| (c as char).to_string())
                ))
            }
        }
    }
    Ok(out)
}

/// Where one reply ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// At the first `\n`, inclusive.
    Line,
    /// After exactly this many bytes.
    Fixed(usize),
    /// After a length prefix of `width` bytes (1, 2 or 4) and the bytes it
    /// counts (the prefix not included).
    Prefix {
        /// The prefix's size in bytes.
        width: usize,
        /// Network byte order (else little-endian).
        big_endian: bool,
    },
    /// At the end of the first occurrence of these bytes.
    Delimiter(Vec<u8>),
    /// The reply is the request, byte for byte.
    Echo,
}

impl std::str::FromStr for Framing {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (rule, arg) = text.split_once(':').unwrap_or((text, ""));
        let framing = match (rule, arg) {
            ("line", "") => Framing::Line,
            ("echo", "") => Framing::Echo,
            ("fixed", n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Framing::Fixed(n),
                _ => return Err(format!("fixed:{n}: give the reply's length in bytes, as fixed:16")),
            },
            ("prefix", spec) => {
                let (width, order) = spec.split_at(spec.find(|c: char| !c.is_ascii_digit()).unwrap_or(spec.len()));
                let width = match width {
                    "1" => 1,
                    "2" => 2,
                    "4" => 4,
                    _ => return Err(format!("prefix:{spec}: the prefix is 1, 2 or 4 bytes, as prefix:2be")),
                };
                let big_endian = match order {
                    "" | "be" => true,
                    "le" => false,
                    _ => return Err(format!("prefix:{spec}: the byte order is be or le")),
                };
                Framing::Prefix { width, big_endian }
            }
            ("delim", d) => {
                let d = unescape(d)?;
                if d.is_empty() {
                    return Err("delim: give the bytes that end a reply, as delim:\\r\\n".into());
                }
                Framing::Delimiter(d)
            }
            _ => {
                return Err(format!(
                    "{text:?} is no framing: give line, fixed:N, prefix:1|2be|2le|4be|4le, delim:BYTES or echo"
                ))
            }
        };
        Ok(framing)
    }
}

impl Framing {
    fn describe(&self) -> String {
        match self {
            Framing::Line => "line".into(),
            Framing::Fixed(n) => format!("fixed:{n}"),
            Framing::Prefix { width, big_endian } => {
                format!("prefix:{width}{}", if *big_endian { "be" } else { "le" })
            }
            Framing::Delimiter(d) => format!("delim:{}", d.escape_ascii()),
            Framing::Echo => "echo".into(),
        }
    }

    /// Where the reply at the front of `stream` ends; or the bytes needed
    /// before that can be known, and how much of the stream was searched
    /// for the end (`scanned`: what an earlier search covered).
    fn cut(
        &self,
        stream: &[u8],
        scanned: usize,
        exact_len: usize,
    ) -> Result<usize, (usize, usize)> {
        let at_least = |n: usize| {
            if stream.len() >= n {
                Ok(n)
            } else {
                Err((n, 0))
            }
        };
        let searched = (stream.len() + 1, stream.len());
        match self {
            Framing::Line => {
                let from = scanned.min(stream.len());
                stream[from..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|i| from + i + 1)
                    .ok_or(searched)
            }
            Framing::Fixed(n) => at_least(*n),
            Framing::Echo => at_least(exact_len),
            Framing::Prefix { width, big_endian } => {
                if stream.len() < *width {
                    return Err((*width, 0));
                }
                let mut len = 0usize;
                for i in 0..*width {
                    let byte = if *big_endian {
                        stream[i]
                    } else {
                        stream[width - 1 - i]
                    };
                    len = len << 8 | usize::from(byte);
                }
                at_least(width + len)
            }
            Framing::Delimiter(d) => {
                // A delimiter may straddle the end of what was searched.
                let from = scanned.saturating_sub(d.len() - 1).min(stream.len());
                stream[from..]
                    .windows(d.len())
                    .position(|w| w == d.as_slice())
                    .map(|i| from + i + d.len())
                    .ok_or(searched)
            }
        }
    }
}

/// Requests from a template; replies cut by a framing and, with an expected
/// template (or echo framing), checked byte for byte.
#[derive(Debug)]
pub struct Generic {
    request: Template,
    framing: Framing,
    expect: Option<Template>,
    keys: KeySpace,
    payload_sizes: (usize, usize),
    values: Values,
}

impl Generic {
    /// A dialect writing `request`, cutting replies by `framing`, checking
    /// each against `expect` when given; `{key}` draws from `keys`,
    /// `{payload}` is `lo..=hi` bytes.
    pub fn new(
        request: Template,
        framing: Framing,
        expect: Option<Template>,
        keys: KeySpace,
        (lo, hi): (usize, usize),
    ) -> Self {
        let mut rng = Rng::new(0x6765_6e65);
        let uses_payload = request.uses(&Piece::Payload);
        Self {
            request,
            framing,
            expect,
            keys,
            payload_sizes: (lo, hi),
            values: Values::new(if uses_payload { hi } else { 0 }, &mut rng),
        }
    }
}

impl Dialect for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn describe(&self) -> String {
        format!(
            "requests from a template, replies framed by {}{}",
            self.framing.describe(),
            if self.expect.is_some() || self.framing == Framing::Echo {
                ", each checked byte for byte"
            } else {
                ""
            }
        )
    }

    fn request(&self, seq: u64, rng: &mut Rng, out: &mut Vec<u8>, exact: &mut Vec<u8>) -> Expect {
        let key = if self.request.uses(&Piece::Key) {
            self.keys.pick(rng)
        } else {
            0
        };
        let payload = if self.request.uses(&Piece::Payload) {
            let len = rng.range(self.payload_sizes.0, self.payload_sizes.1);
            self.values.take(len, rng)
        } else {
            &[]
        };
        let fill = Fill { seq, key, payload };
        let start = out.len();
        self.request.expand(&fill, out);
        let exact_start = exact.len();
        match (&self.framing, &self.expect) {
            (_, Some(expect)) => expect.expand(&fill, exact),
            (Framing::Echo, None) => exact.extend_from_slice(&out[start..]),
            _ => {}
        }
        let checked = self.expect.is_some() || self.framing == Framing::Echo;
        Expect {
            kind: u8::from(checked),
            key,
            exact: (exact.len() - exact_start) as u32,
        }
    }

    fn reply(&self, stream: &[u8], scanned: usize, expect: &Expect, exact: &[u8]) -> Frame {
        match self.framing.cut(stream, scanned, expect.exact as usize) {
            Err((need, scanned)) => Frame::Partial { need, scanned },
            Ok(len) => Frame::Done {
                len,
                verdict: if expect.kind == 0 || &stream[..len] == exact {
                    Verdict::Ok
                } else {
                    Verdict::Wrong
                },
            },
        }
    }
}
