//! What a completion is about, packed into the 64-bit `user_data`.
//!
//! Layout: `[op:8][generation:24][index:32]`. The generation lets a worker
//! recognise a completion for a connection slot that was since closed and
//! reused, and drop it.

/// The operation a submission was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept on listener `index`.
    Accept = 1,
    /// Multishot recv on connection `index`.
    Recv = 2,
    /// Send on connection `index`.
    Send = 3,
    /// Multishot recvmsg on UDP socket `index`.
    UdpRecv = 4,
    /// Sendmsg from UDP send slot `index`.
    UdpSend = 5,
    /// The shutdown eventfd became readable.
    Wake = 6,
    /// An async cancel request (or a linked timeout); its own result is
    /// ignored.
    Cancel = 7,
    /// Connect on client connection `index` (loadgen).
    Connect = 8,
    /// Messages from other workers are waiting (the epoll worker's bell).
    Mesh = 9,
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The operation.
    pub op: Op,
    /// Slot generation (connections only; zero elsewhere).
    pub generation: u32,
    /// Index of the listener, connection, socket or send slot.
    pub index: u32,
}

const GENERATION_MASK: u32 = (1 << 24) - 1;

impl Token {
    /// A token for `op` on `index`, with `generation` (truncated to 24 bits).
    pub fn new(op: Op, index: u32, generation: u32) -> Self {
        Self {
            op,
            generation: generation & GENERATION_MASK,
            index,
        }
    }

    /// Packs the token into `user_data`.
    pub fn encode(self) -> u64 {
        (self.op as u64) << 56 | u64::from(self.generation) << 32 | u64::from(self.index)
    }

    /// Unpacks `user_data`; `None` for a value no token produced.
    pub fn decode(user_data: u64) -> Option<Self> {
        let op = match (user_data >> 56) as u8 {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::UdpRecv,
            5 => Op::UdpSend,
            6 => Op::Wake,
            7 => Op::Cancel,
            8 => Op::Connect,
            9 => Op::Mesh,
            _ => return None,
        };
        Some(Self {
            op,
            generation: (user_data >> 32) as u32 & GENERATION_MASK,
            index: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_truncates_generation() {
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::UdpRecv,
            Op::UdpSend,
            Op::Wake,
            Op::Cancel,
            Op::Connect,
            Op::Mesh,
        ] {
            let t = Token::new(op, u32::MAX, 0x1ab_cdef);
            let back = Token::decode(t.encode()).unwrap();
            assert_eq!(back, t);
            assert_eq!(back.generation, 0xab_cdef);
        }
        assert_eq!(Token::decode(0), None);
    }
}
