//! The interface every datagram (UDP) protocol implements.

use std::net::SocketAddr;
use std::time::Instant;

/// Reply datagrams produced while handling input, stored back to back in one
/// buffer so that handling a packet allocates nothing once the buffer is warm.
#[derive(Debug, Default)]
pub struct Replies {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Replies {
    /// An empty set of replies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one reply datagram made of the concatenation of `parts`.
    pub fn push(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.data.extend_from_slice(part);
        }
        self.ends.push(self.data.len());
    }

    /// Number of reply datagrams.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is no reply.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Reply `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// The replies in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    /// Forgets every reply, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

/// The largest payload one UDP datagram carries over IPv4 (65,535 minus the
/// IP and UDP headers): no reply may be longer.
pub const MAX_DATAGRAM: usize = 65_507;

/// The state of a handler's per-peer session table, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions held now.
    pub open: u64,
    /// Sessions dropped to keep the table within its bound.
    pub evicted: u64,
    /// Sessions that ended because their peer went silent.
    pub expired: u64,
    /// Replies held back: to an address that has not proved it receives,
    /// a prompt within three times what it sent (anti-amplification), or
    /// a reply cut to what one datagram can carry.
    pub capped: u64,
}

/// A datagram service: one value per socket, owned by the worker that reads it.
///
/// Stateful protocols keep their per-peer sessions inside the handler; the
/// kernel's SO_REUSEPORT hash sends a peer's datagrams to one worker, so a
/// peer's session stays with one handler.
pub trait DatagramHandler: Send {
    /// Handles one datagram from `peer` received at `now`, pushing zero or
    /// more replies to it.
    fn on_datagram(&mut self, now: Instant, peer: SocketAddr, input: &[u8], replies: &mut Replies);

    /// The session table's state; stateless protocols keep the default.
    fn sessions(&self) -> SessionStats {
        SessionStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_their_boundaries() {
        let mut r = Replies::new();
        r.push(&[b"ab", b"c"]);
        r.push(&[]);
        r.push(&[b"xyz"]);
        assert_eq!(r.len(), 3);
        let all: Vec<&[u8]> = r.iter().collect();
        assert_eq!(all, vec![&b"abc"[..], &b""[..], &b"xyz"[..]]);
        r.clear();
        assert!(r.is_empty());
        assert_eq!(r.get(0), None);
    }
}
