//! Redis's protocol (RESP2): commands from a mix over a key space, every
//! reply parsed and checked for the type its command gets.

use super::{
    crlf_line, parse_int, push_key, Dialect, Draws, Expect, Frame, KeySpace, Mix, Verdict,
};
use crate::rng::Rng;
use crate::text::push_decimal;

/// The commands loadgen sends a Redis server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCommand {
    /// `GET key`: a bulk string, or nil for a key never set.
    Get,
    /// `SET key value`: `+OK`.
    Set,
    /// `INCR counter:key`: an integer (counters have keys of their own, so a
    /// `SET` of text never makes an `INCR` fail).
    Incr,
    /// `DEL key`: an integer.
    Del,
    /// `PING`: `+PONG`.
    Ping,
}

impl RespCommand {
    const ALL: [RespCommand; 5] = [Self::Get, Self::Set, Self::Incr, Self::Del, Self::Ping];

    fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Set => "set",
            Self::Incr => "incr",
            Self::Del => "del",
            Self::Ping => "ping",
        }
    }

    /// The command called `name`.
    pub fn named(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                format!("loadgen's resp has no command {name:?}: give get, set, incr, del or ping")
            })
    }
}

/// RESP requests drawn from a mix, keys from a key space, values of sizes
/// `value_sizes`.
#[derive(Debug)]
pub struct Resp {
    draws: Draws<RespCommand>,
}

impl Resp {
    /// A dialect drawing commands from `mix`, keys from `keys`, values of
    /// `lo..=hi` bytes.
    pub fn new(mix: Mix<RespCommand>, keys: KeySpace, sizes: (usize, usize)) -> Self {
        Self {
            draws: Draws::new(mix, keys, sizes, 0x7265_7370),
        }
    }
}

/// Appends key number `key`'s name as a bulk string.
fn push_key_bulk(out: &mut Vec<u8>, prefix: &[u8], key: u64) {
    out.push(b'$');
    push_decimal(out, prefix.len() as u64 + 12);
    out.extend_from_slice(b"\r\n");
    push_key(out, prefix, key);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string.
fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

impl Dialect for Resp {
    fn name(&self) -> &'static str {
        "resp"
    }

    fn describe(&self) -> String {
        self.draws.describe(RespCommand::name)
    }

    fn request(&self, _seq: u64, rng: &mut Rng, out: &mut Vec<u8>, _exact: &mut Vec<u8>) -> Expect {
        let (command, key) = self.draws.command(rng);
        let prefix: &[u8] = if command == RespCommand::Incr {
            b"counter:"
        } else {
            b"key:"
        };
        match command {
            RespCommand::Ping => out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"),
            RespCommand::Get => {
                out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
                push_key_bulk(out, prefix, key);
            }
            RespCommand::Del => {
                out.extend_from_slice(b"*2\r\n$3\r\nDEL\r\n");
                push_key_bulk(out, prefix, key);
            }
            RespCommand::Incr => {
                out.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n");
                push_key_bulk(out, prefix, key);
            }
            RespCommand::Set => {
                out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
                push_key_bulk(out, prefix, key);
                push_bulk(out, self.draws.value(rng));
            }
        }
        Expect {
            kind: command as u8,
            key,
            exact: 0,
        }
    }

    fn reply(&self, stream: &[u8], scanned: usize, expect: &Expect, _exact: &[u8]) -> Frame {
        let Some(line) = crlf_line(stream, scanned) else {
            return Frame::Partial {
                need: stream.len() + 1,
                scanned: stream.len(),
            };
        };
        let head = &stream[..line];
        let len = line + 2;
        let done = |ok: bool| Frame::Done {
            len,
            verdict: if ok { Verdict::Ok } else { Verdict::Wrong },
        };
        let command = RespCommand::ALL[usize::from(expect.kind)];
        match (head.first(), command) {
            (Some(b'-'), _) => Frame::Done {
                len,
                verdict: Verdict::Refused,
            },
            (Some(b'+'), RespCommand::Set) => done(&head[1..] == b"OK"),
            (Some(b'+'), RespCommand::Ping) => done(&head[1..] == b"PONG"),
            (Some(b':'), RespCommand::Incr | RespCommand::Del) => {
                done(parse_int(&head[1..]).is_some())
            }
            (Some(b'$'), RespCommand::Get) => match parse_int(&head[1..]) {
                Some(-1) => done(true),
                Some(n) if n >= 0 => {
                    let end = len + n as usize + 2;
                    if stream.len() < end {
                        return Frame::Partial {
                            need: end,
                            scanned: 0,
                        };
                    }
                    Frame::Done {
                        len: end,
                        verdict: if &stream[end - 2..end] == b"\r\n" {
                            Verdict::Ok
                        } else {
                            Verdict::Wrong
                        },
                    }
                }
                _ => done(false),
            },
            _ => done(false),
        }
    }
}
