//! A framed protocol on the engine: each frame is a 4-byte big-endian
//! length and that many bytes; the reply is the same frame reversed. An
//! empty frame asks how many frames this worker has served (per-worker
//! state, no lock). A frame must arrive whole within 2 s of its first byte.
//!
//! `cargo run --release --example framed -- [ADDR] [WORKERS]` (default
//! 127.0.0.1:7001, one worker per CPU); stops on SIGINT/SIGTERM.
use std::{cell::Cell, rc::Rc, time::Duration, time::Instant};

use engine::{Fed, Next, Server, StreamSession};

const MAX_PAYLOAD: usize = 1 << 20;

struct Framed {
    served: Rc<Cell<u64>>,     // this worker's count, shared by its sessions
    deadline: Option<Instant>, // set while a frame is incomplete
    needed: usize,             // the incomplete frame's size, once known
}

fn frame(out: &mut Vec<u8>, payload: impl ExactSizeIterator<Item = u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend(payload);
}

impl StreamSession for Framed {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
        // Until the length has arrived, the frame needs at least its 4 bytes.
        let len = input.first_chunk().map_or(0, |h| u32::from_be_bytes(*h)) as usize;
        if len > MAX_PAYLOAD {
            frame(out, b"frame too large".iter().copied());
            return Fed::close(input.len());
        }
        let Some(payload) = input.get(4..4 + len) else {
            self.needed = 4 + len; // offered again once it is all here
            let started = Instant::now();
            self.deadline
                .get_or_insert(started + Duration::from_secs(2));
            return Fed::need_more();
        };
        self.deadline = None;
        self.served.set(self.served.get() + 1);
        match len {
            0 => frame(out, self.served.get().to_string().into_bytes().into_iter()),
            _ => frame(out, payload.iter().rev().copied()),
        }
        Fed::all(4 + len)
    }

    fn max_frame(&self) -> usize {
        4 + MAX_PAYLOAD
    }

    fn input_needed(&self) -> usize {
        self.needed
    }

    fn timer(&self) -> Option<Instant> {
        self.deadline
    }

    fn on_timer(&mut self, _now: Instant, out: &mut Vec<u8>) -> Next {
        frame(out, b"timeout".iter().copied());
        Next::Close
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    let mut server = Server::new().tcp_per_worker(addr.parse()?, "framed", |_worker| {
        let served = Rc::new(Cell::new(0)); // made on, and kept by, this worker
        move |_cx: &engine::SessionContext| Framed {
            served: served.clone(),
            deadline: None,
            needed: 0,
        }
    });
    if let Some(workers) = args.next() {
        server = server.workers(workers.parse()?);
    }
    Ok(server.run()?)
}
