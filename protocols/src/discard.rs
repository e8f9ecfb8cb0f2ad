//! Discard (RFC 863), the sibling of echo: every byte is read and dropped,
//! nothing is ever sent back, over TCP and UDP. The sink for bulk TCP and
//! one-way UDP (the network lab's TCP flow ends here); the server's byte
//! and datagram counters say what arrived.

use std::net::SocketAddr;
use std::time::Instant;

use crate::{DatagramHandler, Fed, Replies, StreamSession};

/// TCP discard: takes all input, answers nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardStream;

impl StreamSession for DiscardStream {
    fn on_input(&mut self, input: &[u8], _out: &mut Vec<u8>, _room: usize) -> Fed {
        // Output room does not matter: nothing is ever written.
        Fed::all(input.len())
    }
}

/// UDP discard: no datagram is answered.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardDatagram;

impl DatagramHandler for DiscardDatagram {
    fn on_datagram(
        &mut self,
        _now: Instant,
        _peer: SocketAddr,
        _input: &[u8],
        _replies: &mut Replies,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Next;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stream_discard_takes_everything_and_says_nothing(data in proptest::collection::vec(any::<u8>(), 0..4096), room in 0usize..64) {
            let mut out = Vec::new();
            let fed = DiscardStream.on_input(&data, &mut out, room);
            prop_assert_eq!(fed.consumed, data.len());
            prop_assert!(out.is_empty());
            prop_assert_eq!(DiscardStream.on_bytes(&data, &mut out), Next::Continue);
            prop_assert!(out.is_empty());
        }
    }

    #[test]
    fn datagram_discard_answers_nothing() {
        let mut replies = Replies::new();
        DiscardDatagram.on_datagram(
            Instant::now(),
            "127.0.0.1:9".parse().unwrap(),
            b"x",
            &mut replies,
        );
        assert_eq!(replies.iter().count(), 0);
    }
}
