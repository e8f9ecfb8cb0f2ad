//! The chapter's UDP server: every datagram is answered with `OK...` and the
//! datagram's bytes. Unlike the chapter's, an empty datagram does not stop the
//! server; it gets a bare `OK...`.

use std::net::SocketAddr;
use std::time::Instant;

use crate::datagram::MAX_DATAGRAM;
use crate::{DatagramHandler, Replies, SessionStats};

/// The prefix of every reply.
pub const OK_PREFIX: &[u8] = b"OK...";

/// The `ok` datagram service. Its reply is five bytes longer than the
/// datagram it answers (the prefix), so it is cut to what one datagram can
/// carry (and counted) when the datagram is within five bytes of that.
#[derive(Debug, Default, Clone, Copy)]
pub struct OkDatagram {
    capped: u64,
}

impl DatagramHandler for OkDatagram {
    fn on_datagram(
        &mut self,
        _now: Instant,
        _peer: SocketAddr,
        input: &[u8],
        replies: &mut Replies,
    ) {
        let room = MAX_DATAGRAM - OK_PREFIX.len();
        if input.len() > room {
            self.capped += 1;
        }
        replies.push(&[OK_PREFIX, &input[..input.len().min(room)]]);
    }

    fn sessions(&self) -> SessionStats {
        SessionStats {
            capped: self.capped,
            ..SessionStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_ok_prefix_and_payload() {
        let peer: SocketAddr = "[::1]:9".parse().unwrap();
        let mut replies = Replies::new();
        let mut ok = OkDatagram::default();
        ok.on_datagram(Instant::now(), peer, b"hello", &mut replies);
        ok.on_datagram(Instant::now(), peer, b"", &mut replies);
        assert_eq!(replies.get(0), Some(&b"OK...hello"[..]));
        assert_eq!(replies.get(1), Some(&b"OK..."[..]));
    }

    #[test]
    fn a_reply_never_passes_the_datagram_limit() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut ok = OkDatagram::default();
        let mut replies = Replies::new();
        let biggest = vec![7u8; MAX_DATAGRAM];
        ok.on_datagram(Instant::now(), peer, &biggest, &mut replies);
        let reply = replies.get(0).unwrap();
        assert_eq!(reply.len(), MAX_DATAGRAM);
        assert_eq!(&reply[..5], OK_PREFIX);
        assert_eq!(ok.sessions().capped, 1);
    }
}
