//! The header loadgen puts at the start of every UDP datagram it sends, so
//! that each reply tells which run and which packet it answers, and when that
//! packet left.
//!
//! Layout (little endian), 24 bytes: magic `RCLG`, run id (u32), sequence
//! number (u64), send time in nanoseconds since the run started (u64). The
//! rest of the datagram is padding. Replies from the `ok` service carry the
//! `OK...` prefix before the echoed header; [`Probe::parse_reply`] skips it.

use crate::ok::OK_PREFIX;

/// Bytes the header takes; a datagram may not be smaller.
pub const PROBE_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"RCLG";

/// One datagram's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Which run sent it (replies from other runs are ignored).
    pub run: u32,
    /// Sequence number within the run, from 0.
    pub seq: u64,
    /// When it was sent, in nanoseconds since the run started.
    pub sent_ns: u64,
}

impl Probe {
    /// Writes the header into the first [`PROBE_LEN`] bytes of `buf`.
    /// Returns false (writing nothing) when `buf` is too short.
    pub fn write(&self, buf: &mut [u8]) -> bool {
        let Some(header) = buf.get_mut(..PROBE_LEN) else {
            return false;
        };
        header[..4].copy_from_slice(&MAGIC);
        header[4..8].copy_from_slice(&self.run.to_le_bytes());
        header[8..16].copy_from_slice(&self.seq.to_le_bytes());
        header[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
        true
    }

    /// Reads a header from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Option<Probe> {
        let header = buf.get(..PROBE_LEN)?;
        if header[..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or_default());
        Some(Probe {
            run: u32::from_le_bytes(header[4..8].try_into().ok()?),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }

    /// Reads the header of a reply: an echo, or the `ok` service's `OK...` + echo.
    pub fn parse_reply(reply: &[u8]) -> Option<Probe> {
        Probe::parse(reply).or_else(|| Probe::parse(reply.strip_prefix(OK_PREFIX)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_with_and_without_the_ok_prefix(run: u32, seq: u64, sent_ns: u64, pad in 0usize..64) {
            let probe = Probe { run, seq, sent_ns };
            let mut datagram = vec![0xAB; PROBE_LEN + pad];
            prop_assert!(probe.write(&mut datagram));
            prop_assert_eq!(Probe::parse_reply(&datagram), Some(probe));
            let mut ok = OK_PREFIX.to_vec();
            ok.extend_from_slice(&datagram);
            prop_assert_eq!(Probe::parse_reply(&ok), Some(probe));
        }
    }

    #[test]
    fn short_or_foreign_datagrams_are_not_probes() {
        let mut short = [0u8; PROBE_LEN - 1];
        assert!(!Probe {
            run: 1,
            seq: 2,
            sent_ns: 3
        }
        .write(&mut short));
        assert_eq!(Probe::parse(&short), None);
        assert_eq!(Probe::parse_reply(&[0u8; 64]), None);
        assert_eq!(Probe::parse_reply(b"OK...hello"), None);
    }
}
