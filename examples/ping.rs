//! A RESP (Redis protocol) server that answers PING and ECHO, enough for
//! `redis-benchmark -t ping_inline,ping_mbulk` and `redis-cli ping`.
//!
//! `cargo run --release --example ping -- [ADDR] [WORKERS]`
//! (default 127.0.0.1:6379, one worker per CPU); stops on SIGINT/SIGTERM.
use engine::{Fed, Server, StreamSession};

/// Splits the line at the front of `input` from what follows it.
fn line(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = input.windows(2).position(|w| w == b"\r\n")?;
    Some((&input[..end], &input[end + 2..]))
}

fn number(digits: Option<&[u8]>) -> Result<usize, ()> {
    let text = std::str::from_utf8(digits.ok_or(())?).map_err(|_| ())?;
    text.parse().map_err(|_| ())
}

/// A command's words, and the bytes after it.
type Command<'a> = (Vec<&'a [u8]>, &'a [u8]);

/// The command at the front of `input` and the bytes after it: `Ok(None)`
/// until it is whole (the engine holds the bytes meanwhile), `Err` if it
/// is not RESP.
fn command(input: &[u8]) -> Result<Option<Command<'_>>, ()> {
    let Some((first, mut rest)) = line(input) else {
        return Ok(None);
    };
    if first.first() != Some(&b'*') {
        let words = first.split(|&b| b == b' ').filter(|w| !w.is_empty());
        return Ok(Some((words.collect(), rest))); // an inline command
    }
    let mut args = Vec::new();
    for _ in 0..number(first.get(1..))? {
        let Some((head, body)) = line(rest) else {
            return Ok(None);
        };
        let len = number(head.strip_prefix(b"$"))?;
        let Some(arg) = body.get(..len).filter(|_| body.len() >= len + 2) else {
            return Ok(None);
        };
        args.push(arg);
        rest = &body[len + 2..];
    }
    Ok(Some((args, rest)))
}

/// Writes `text` as a RESP bulk string.
fn bulk(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", text.len()).as_bytes());
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

struct Ping;

impl StreamSession for Ping {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let (start, mut rest) = (out.len(), input);
        while out.len() - start < room {
            let Ok(parsed) = command(rest) else {
                out.extend_from_slice(b"-ERR Protocol error\r\n");
                return Fed::close(input.len());
            };
            let Some((args, after)) = parsed else { break }; // need more input
            rest = after;
            let is = |word: &[u8], name: &[u8]| word.eq_ignore_ascii_case(name);
            match &args[..] {
                [c] if is(c, b"PING") => out.extend_from_slice(b"+PONG\r\n"),
                [c, text] if is(c, b"PING") || is(c, b"ECHO") => bulk(out, text),
                [c, _, keys @ ..] if is(c, b"CONFIG") => {
                    // Each key asked for, with no value: nothing to tell.
                    out.extend_from_slice(format!("*{}\r\n", keys.len() * 2).as_bytes());
                    for key in keys {
                        bulk(out, key);
                        bulk(out, b"");
                    }
                }
                [] => {} // an empty line
                _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
            }
        }
        Fed::all(input.len() - rest.len())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6379".into());
    let mut server = Server::new().tcp(addr.parse()?, "ping", |_cx| Ping);
    if let Some(workers) = args.next() {
        server = server.workers(workers.parse()?);
    }
    Ok(server.run()?)
}
