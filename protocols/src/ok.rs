//! The chapter's UDP server: every datagram is answered with `OK...` and the
//! datagram's bytes. Unlike the chapter's, an empty datagram does not stop the
//! server; it gets a bare `OK...`.

use std::net::SocketAddr;
use std::time::Instant;

use crate::{DatagramHandler, Replies};

/// The prefix of every reply.
pub const OK_PREFIX: &[u8] = b"OK...";

/// The `ok` datagram service.
#[derive(Debug, Default, Clone, Copy)]
pub struct OkDatagram;

impl DatagramHandler for OkDatagram {
    fn on_datagram(
        &mut self,
        _now: Instant,
        _peer: SocketAddr,
        input: &[u8],
        replies: &mut Replies,
    ) {
        replies.push(&[OK_PREFIX, input]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_ok_prefix_and_payload() {
        let peer: SocketAddr = "[::1]:9".parse().unwrap();
        let mut replies = Replies::new();
        OkDatagram.on_datagram(Instant::now(), peer, b"hello", &mut replies);
        OkDatagram.on_datagram(Instant::now(), peer, b"", &mut replies);
        assert_eq!(replies.get(0), Some(&b"OK...hello"[..]));
        assert_eq!(replies.get(1), Some(&b"OK..."[..]));
    }
}
