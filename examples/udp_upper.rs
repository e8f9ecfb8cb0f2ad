//! A UDP service on the engine: every datagram comes back in capitals,
//! never longer than it came (a reply larger than its request would make
//! the server a reflection amplifier for spoofed senders).
//!
//! `cargo run --release --example udp_upper -- [ADDR]` (default 127.0.0.1:7002)
use std::{net::SocketAddr, time::Instant};

use engine::{DatagramHandler, Replies, Server};

struct Upper {
    buf: Vec<u8>, // reused: no allocation per datagram once warm
}

impl DatagramHandler for Upper {
    fn on_datagram(&mut self, _now: Instant, _peer: SocketAddr, input: &[u8], out: &mut Replies) {
        self.buf.clear();
        self.buf.extend(input.iter().map(u8::to_ascii_uppercase));
        out.push(&[&self.buf]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7002".into());
    let server = Server::new().udp(addr.parse()?, "upper", || Upper { buf: Vec::new() });
    Ok(server.run()?)
}
