//! A key-value server speaking RESP (the Redis protocol), its keys sharded
//! over the workers: each worker owns the keys that hash to it, and a
//! command for a key another worker owns goes there as a message
//! ([`engine::Mesh`]), with no lock anywhere. Enough of Redis for
//! `redis-benchmark -t set,get,incr` and `redis-cli`: PING, ECHO, GET, SET,
//! DEL, EXISTS, INCR, MGET, MSET, and CONFIG GET (answered harmlessly).
//!
//! `cargo run --release --example kv -- [ADDR] [WORKERS] [--max-memory BYTES]
//! [--metrics ADDR] [--batch-wait MICROS] [--no-pin]` (default
//! 127.0.0.1:6379, one worker per CPU, 1 GiB; `k`, `m`, `g` suffixes;
//! `--metrics` serves the counters, messages between workers included, at
//! `http://ADDR/metrics`). Past `--max-memory`, writes get Redis's `-OOM`
//! error and nothing grows (Redis's `noeviction`). Stops on SIGINT/SIGTERM.
//! `--route local|remote` (for measuring, `benches/resp_ping.rs --hop`)
//! sends every key to the connection's own worker, or to the next one.
//! `--batch-wait MICROS`: each wait holds out that long for a batch of
//! completions (`EngineConfig::batch_wait`), as the PING example's third
//! argument. `--no-pin`: the workers float instead of one pinned to each
//! CPU (`EngineConfig::pin`), for cores shared with other busy processes,
//! such as a benchmark client on the same machine.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use engine::{Fed, Mesh, Server, StreamSession};

#[path = "resp/mod.rs"]
mod resp;

/// What one stored entry costs besides its key and value (the map's slot
/// and the two allocations' headers, roughly).
const ENTRY_OVERHEAD: usize = 64;
/// The largest command a client may send: room for a 1 MiB value and more.
const MAX_COMMAND: usize = 4 << 20;
/// Redis's error for a write past the memory bound.
const OOM: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";

/// One worker's share of the keys, and of the memory bound.
struct Shard {
    map: HashMap<Vec<u8>, Vec<u8>>,
    used: usize,
    max: usize,
}

impl Shard {
    /// Stores `value` under `key`, unless that would pass the bound.
    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), ()> {
        let (used, max) = (self.used, self.max);
        let fits = |old: usize, new: usize| new <= old || used + new - old <= max;
        // One probe of the map, whether the key is new or not.
        match self.map.entry(key) {
            Entry::Occupied(mut entry) => {
                let (old, new) = (entry.get().len(), value.len());
                if !fits(old, new) {
                    return Err(());
                }
                entry.insert(value);
                self.used = used + new - old;
            }
            Entry::Vacant(entry) => {
                let new = entry.key().len() + value.len() + ENTRY_OVERHEAD;
                if !fits(0, new) {
                    return Err(());
                }
                entry.insert(value);
                self.used = used + new;
            }
        }
        Ok(())
    }

    fn del(&mut self, key: &[u8]) -> bool {
        let Some(value) = self.map.remove(key) else {
            return false;
        };
        self.used -= key.len() + value.len() + ENTRY_OVERHEAD;
        true
    }

    fn incr(&mut self, key: Vec<u8>) -> Vec<u8> {
        let current = self.map.get(&key).map_or(Some(0), |v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
        });
        let Some(next) = current.and_then(|n| n.checked_add(1)) else {
            return b"-ERR value is not an integer or out of range\r\n".to_vec();
        };
        match self.set(key, next.to_string().into_bytes()) {
            Ok(()) => format!(":{next}\r\n").into_bytes(),
            Err(()) => OOM.to_vec(),
        }
    }
}

/// A reply to GET: the value as a bulk string, or nil.
fn get_reply(shard: &mut Shard, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match shard.map.get(key) {
        Some(value) => resp::bulk(&mut out, value),
        None => out.extend_from_slice(b"$-1\r\n"),
    }
    out
}

/// Sums the counts each shard answered (DEL, EXISTS) into one integer reply.
fn sum_counts(parts: Vec<Vec<u8>>, out: &mut Vec<u8>) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(format!(":{total}\r\n").as_bytes());
}

/// Which worker a key goes to: its owner, or (to measure what a message
/// costs, `--route`) always this one or always the next.
#[derive(Clone, Copy)]
enum Route {
    Owner,
    Local,
    Remote,
}

/// One connection: its commands run on the shard that owns their keys.
struct Kv {
    mesh: Mesh<Shard>,
    route: Route,
}

impl Kv {
    fn owner(&self, key: &[u8]) -> usize {
        match self.route {
            Route::Owner => self.mesh.owner_of(key),
            Route::Local => self.mesh.worker(),
            Route::Remote => (self.mesh.worker() + 1) % self.mesh.workers(),
        }
    }

    fn run(&self, args: &[&[u8]], out: &mut Vec<u8>) {
        let mesh = &self.mesh;
        let own = |key: &[u8]| (self.owner(key), key.to_vec());
        match args {
            [c] if resp::is(c, "PING") => out.extend_from_slice(b"+PONG\r\n"),
            [c, text] if resp::is(c, "PING") || resp::is(c, "ECHO") => resp::bulk(out, text),
            [c, _, keys @ ..] if resp::is(c, "CONFIG") => resp::config_get(out, keys),
            [c, key] if resp::is(c, "GET") => {
                let (owner, key) = own(key);
                mesh.ask(out, owner, move |s: &mut Shard| get_reply(s, &key));
            }
            [c, key, value] if resp::is(c, "SET") => {
                let ((owner, key), value) = (own(key), value.to_vec());
                mesh.ask(out, owner, move |s: &mut Shard| match s.set(key, value) {
                    Ok(()) => b"+OK\r\n".to_vec(),
                    Err(()) => OOM.to_vec(),
                });
            }
            [c, key] if resp::is(c, "INCR") => {
                let (owner, key) = own(key);
                mesh.ask(out, owner, move |s: &mut Shard| s.incr(key));
            }
            // A count as that many bytes: one byte per key found.
            [c, keys @ ..] if !keys.is_empty() && (resp::is(c, "DEL") || resp::is(c, "EXISTS")) => {
                let delete = resp::is(c, "DEL");
                let parts = keys.iter().map(|k| own(k)).map(|(owner, key)| {
                    (owner, move |s: &mut Shard| {
                        let found = if delete {
                            s.del(&key)
                        } else {
                            s.map.contains_key(&key)
                        };
                        if found {
                            vec![1]
                        } else {
                            Vec::new()
                        }
                    })
                });
                mesh.gather(out, parts.collect(), sum_counts);
            }
            [c, keys @ ..] if !keys.is_empty() && resp::is(c, "MGET") => {
                let parts = keys
                    .iter()
                    .map(|k| own(k))
                    .map(|(owner, key)| (owner, move |s: &mut Shard| get_reply(s, &key)));
                mesh.gather(out, parts.collect(), |values, out| {
                    out.extend_from_slice(format!("*{}\r\n", values.len()).as_bytes());
                    values.iter().for_each(|v| out.extend_from_slice(v));
                });
            }
            [c, pairs @ ..] if !pairs.is_empty() && pairs.len() % 2 == 0 && resp::is(c, "MSET") => {
                let parts = pairs.chunks(2).map(|kv| (own(kv[0]), kv[1].to_vec()));
                let parts = parts.map(|((owner, key), value)| {
                    (owner, move |s: &mut Shard| match s.set(key, value) {
                        Ok(()) => Vec::new(),
                        Err(()) => OOM.to_vec(),
                    })
                });
                // +OK once every part is stored; the first error otherwise.
                mesh.gather(out, parts.collect(), |errors, out| {
                    let error = errors.into_iter().find(|e| !e.is_empty());
                    out.extend_from_slice(error.as_deref().unwrap_or(b"+OK\r\n"));
                });
            }
            [] => {} // an empty line
            [c, ..] => {
                let name = String::from_utf8_lossy(c);
                let error = format!("-ERR unknown command or arguments for '{name}'\r\n");
                out.extend_from_slice(error.as_bytes());
            }
        }
    }
}

impl StreamSession for Kv {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let (start, mut rest) = (out.len(), input);
        // Stops at the room left, and at a bound on asks still travelling.
        while out.len() - start < room && self.mesh.waiting() < engine::mesh::MAX_WAITING {
            let Ok(parsed) = resp::command(rest) else {
                out.extend_from_slice(b"-ERR Protocol error\r\n");
                return Fed::close(input.len());
            };
            let Some((args, after)) = parsed else { break }; // need more input
            rest = after;
            self.run(&args, out);
        }
        Fed::all(input.len() - rest.len())
    }

    fn max_frame(&self) -> usize {
        MAX_COMMAND
    }

    fn on_frame_too_large(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR Protocol error: command too large\r\n");
    }
}

/// Bytes from `256m`, `1g`, `4096` and the like.
fn bytes(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" => 10,
        "m" | "mb" => 20,
        "g" | "gb" => 30,
        _ => return Err(format!("--max-memory {text}: unknown unit '{unit}'")),
    };
    let n: usize = digits
        .parse()
        .map_err(|e| format!("--max-memory {text}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or(format!("--max-memory {text}: too large"))
}

/// Removes `--name VALUE` from `args`, giving VALUE.
fn take_flag(args: &mut Vec<String>, name: &str) -> Result<Option<String>, String> {
    let Some(i) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let value = args
        .get(i + 1)
        .cloned()
        .ok_or(format!("{name} needs a value"))?;
    args.drain(i..i + 2);
    Ok(Some(value))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let max_memory = take_flag(&mut args, "--max-memory")?.map_or(Ok(1 << 30), |m| bytes(&m))?;
    let metrics = take_flag(&mut args, "--metrics")?;
    let batch_wait = take_flag(&mut args, "--batch-wait")?;
    let pin = match args.iter().position(|a| a == "--no-pin") {
        Some(i) => {
            args.remove(i);
            false
        }
        None => true,
    };
    let route = match take_flag(&mut args, "--route")?.as_deref() {
        None => Route::Owner,
        Some("local") => Route::Local,
        Some("remote") => Route::Remote,
        Some(other) => return Err(format!("--route {other}: local or remote").into()),
    };
    let addr = args
        .first()
        .map_or("127.0.0.1:6379", String::as_str)
        .parse()?;
    let mut server = Server::new().pin(pin);
    if let Some(addr) = metrics {
        server = server.metrics(addr.parse()?);
    }
    if let Some(workers) = args.get(1) {
        server = server.workers(workers.parse()?);
    }
    if let Some(micros) = batch_wait {
        let micros = micros
            .parse()
            .map_err(|e| format!("--batch-wait {micros}: {e}"))?;
        let wait = std::time::Duration::from_micros(micros);
        server = server.configure(|config| config.batch_wait = Some(wait));
    }
    let workers = server.worker_count();
    let shard = move |_worker| Shard {
        map: HashMap::new(),
        used: 0,
        max: max_memory / workers,
    };
    let server = server.tcp_sharded(addr, "kv", shard, move |_cx, mesh| Kv {
        mesh: mesh.clone(),
        route,
    });
    Ok(server.run()?)
}
