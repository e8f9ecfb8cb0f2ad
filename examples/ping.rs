//! A RESP (Redis protocol) server that answers PING and ECHO, enough for
//! `redis-benchmark -t ping_inline,ping_mbulk` and `redis-cli ping`.
//!
//! `cargo run --release --example ping -- [ADDR] [WORKERS] [BATCH_WAIT_US]`
//! (default 127.0.0.1:6379, one worker per CPU); stops on SIGINT/SIGTERM.
//! BATCH_WAIT_US: each wait holds out that long for a batch of completions
//! (`EngineConfig::batch_wait`), so a client that pipelines wakes the
//! worker less often, at up to that much latency.
use std::time::Duration;

use engine::{Fed, Server, StreamSession};

#[path = "resp/mod.rs"]
mod resp;

struct Ping;

impl StreamSession for Ping {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let (start, mut rest) = (out.len(), input);
        while out.len() - start < room {
            let Ok(parsed) = resp::command(rest) else {
                out.extend_from_slice(b"-ERR Protocol error\r\n");
                return Fed::close(input.len());
            };
            let Some((args, after)) = parsed else { break }; // need more input
            rest = after;
            match &args[..] {
                [c] if resp::is(c, "PING") => out.extend_from_slice(b"+PONG\r\n"),
                [c, text] if resp::is(c, "PING") || resp::is(c, "ECHO") => resp::bulk(out, text),
                [c, _, keys @ ..] if resp::is(c, "CONFIG") => resp::config_get(out, keys),
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
    if let Some(micros) = args.next() {
        let wait = Duration::from_micros(micros.parse()?);
        server = server.configure(|config| config.batch_wait = Some(wait));
    }
    Ok(server.run()?)
}
