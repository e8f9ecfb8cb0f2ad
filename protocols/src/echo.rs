//! Echo (RFC 862): every byte goes back unchanged, over TCP and UDP.

use std::net::SocketAddr;
use std::time::Instant;

use crate::stream::prefix_for_room;
use crate::{DatagramHandler, Fed, Replies, StreamSession};

/// TCP echo: a zero-sized session, so a connection's session allocates nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoStream;

impl StreamSession for EchoStream {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let n = prefix_for_room(input, room);
        out.extend_from_slice(&input[..n]);
        Fed::all(n)
    }

    fn echoes(&self) -> bool {
        true
    }
}

/// UDP echo: each datagram is answered with itself, the empty one included.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoDatagram;

impl DatagramHandler for EchoDatagram {
    fn on_datagram(
        &mut self,
        _now: Instant,
        _peer: SocketAddr,
        input: &[u8],
        replies: &mut Replies,
    ) {
        replies.push(&[input]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Next;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stream_echo_is_identity_for_any_split(data in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let mut session = EchoStream;
            let mut out = Vec::new();
            for chunk in crate::reverse::tests::split_at_cuts(&data, &cuts) {
                prop_assert_eq!(session.on_bytes(chunk, &mut out), Next::Continue);
            }
            prop_assert_eq!(out, data);
        }

        #[test]
        fn stream_echo_takes_no_more_than_room(data in proptest::collection::vec(any::<u8>(), 1..512), room in 0usize..600) {
            // The session contract, not the code's formula: it makes
            // progress, takes no more than offered, answers exactly what it
            // took, stops within its room (each byte is its own message, so
            // no byte may pass it), and takes all when all fits.
            let mut out = Vec::new();
            let fed = EchoStream.on_input(&data, &mut out, room);
            prop_assert!(fed.consumed >= 1 && fed.consumed <= data.len());
            prop_assert_eq!(&out[..], &data[..fed.consumed]);
            prop_assert!(out.len() <= room.max(1));
            if room >= data.len() {
                prop_assert_eq!(fed.consumed, data.len());
            }
        }
    }

    #[test]
    fn datagram_echo_answers_even_the_empty_datagram() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut replies = Replies::new();
        EchoDatagram.on_datagram(Instant::now(), peer, b"", &mut replies);
        EchoDatagram.on_datagram(Instant::now(), peer, b"hi", &mut replies);
        assert_eq!(
            replies.iter().collect::<Vec<_>>(),
            vec![&b""[..], &b"hi"[..]]
        );
    }
}
