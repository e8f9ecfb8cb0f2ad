//! memcached's text protocol: `get`, `set` and `delete` from a mix over a
//! key space, every reply parsed and checked (a `get`'s value must name
//! the key asked for).

use super::{
    crlf_line, parse_int, push_key, Dialect, Draws, Expect, Frame, KeySpace, Mix, Verdict,
};
use crate::rng::Rng;
use crate::text::push_decimal;

/// The commands loadgen sends a memcached server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McCommand {
    /// `get key`: `VALUE key flags bytes` and the value, then `END`; or
    /// `END` alone for a miss.
    Get,
    /// `set key 0 0 bytes` and the value: `STORED`.
    Set,
    /// `delete key`: `DELETED` or `NOT_FOUND`.
    Delete,
}

impl McCommand {
    const ALL: [McCommand; 3] = [Self::Get, Self::Set, Self::Delete];

    fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Set => "set",
            Self::Delete => "delete",
        }
    }

    /// The command called `name`.
    pub fn named(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                format!("loadgen's memcache has no command {name:?}: give get, set or delete")
            })
    }
}

const KEY_PREFIX: &[u8] = b"key:";

/// memcached text-protocol requests drawn from a mix, keys from a key
/// space, values of sizes `value_sizes`.
#[derive(Debug)]
pub struct Memcache {
    draws: Draws<McCommand>,
}

impl Memcache {
    /// A dialect drawing commands from `mix`, keys from `keys`, values of
    /// `lo..=hi` bytes.
    pub fn new(mix: Mix<McCommand>, keys: KeySpace, sizes: (usize, usize)) -> Self {
        Self {
            draws: Draws::new(mix, keys, sizes, 0x6d63),
        }
    }
}

/// A server's error line: `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …`.
fn is_error(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR")
}

impl Dialect for Memcache {
    fn name(&self) -> &'static str {
        "memcache"
    }

    fn describe(&self) -> String {
        self.draws.describe(McCommand::name)
    }

    fn request(&self, _seq: u64, rng: &mut Rng, out: &mut Vec<u8>, _exact: &mut Vec<u8>) -> Expect {
        let (command, key) = self.draws.command(rng);
        match command {
            McCommand::Get => {
                out.extend_from_slice(b"get ");
                push_key(out, KEY_PREFIX, key);
            }
            McCommand::Delete => {
                out.extend_from_slice(b"delete ");
                push_key(out, KEY_PREFIX, key);
            }
            McCommand::Set => {
                let value = self.draws.value(rng);
                out.extend_from_slice(b"set ");
                push_key(out, KEY_PREFIX, key);
                out.extend_from_slice(b" 0 0 ");
                push_decimal(out, value.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(value);
            }
        }
        out.extend_from_slice(b"\r\n");
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
        let verdict = |ok: bool| if ok { Verdict::Ok } else { Verdict::Wrong };
        if is_error(head) {
            return Frame::Done {
                len,
                verdict: Verdict::Refused,
            };
        }
        match McCommand::ALL[usize::from(expect.kind)] {
            McCommand::Set => Frame::Done {
                len,
                verdict: match head {
                    b"STORED" => Verdict::Ok,
                    b"NOT_STORED" => Verdict::Refused,
                    _ => Verdict::Wrong,
                },
            },
            McCommand::Delete => Frame::Done {
                len,
                verdict: verdict(head == b"DELETED" || head == b"NOT_FOUND"),
            },
            McCommand::Get if head == b"END" => Frame::Done {
                len,
                verdict: Verdict::Ok,
            },
            McCommand::Get => {
                let mut words = head.split(|&b| b == b' ');
                let (Some(b"VALUE"), Some(key), Some(_flags), Some(bytes)) =
                    (words.next(), words.next(), words.next(), words.next())
                else {
                    return Frame::Done {
                        len,
                        verdict: Verdict::Wrong,
                    };
                };
                let Some(bytes) = parse_int(bytes).filter(|&n| n >= 0) else {
                    return Frame::Done {
                        len,
                        verdict: Verdict::Wrong,
                    };
                };
                let right_key = key
                    .strip_prefix(KEY_PREFIX)
                    .filter(|digits| digits.len() == 12)
                    .and_then(parse_int)
                    .is_some_and(|k| k as u64 == expect.key);
                let end = len + bytes as usize + 2 + 5;
                if stream.len() < end {
                    return Frame::Partial {
                        need: end,
                        scanned: 0,
                    };
                }
                let tail = &stream[end - 7..end];
                Frame::Done {
                    len: end,
                    verdict: verdict(right_key && tail == b"\r\nEND\r\n"),
                }
            }
        }
    }
}
