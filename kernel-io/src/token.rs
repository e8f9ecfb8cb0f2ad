//! What a completion is about, packed into the 64-bit `user_data`.
//!
//! Layout: `[op:8][generation:24][index:32]`. The generation lets a worker
//! recognise a completion for a connection slot that was since closed and
//! reused, and drop it.
//!
//! Each user of the rings names its own operations (the server's accepts
//! and multishot receives, the client's connects) with an enum that
//! implements [`OpCode`]; this module only packs and unpacks them.

/// A set of operations a ring's submissions are for: a fieldless enum
/// whose codes are distinct and not zero (zero is never a token, so a
/// stray `user_data` of 0 decodes to nothing).
pub trait OpCode: Copy + Eq + std::fmt::Debug + 'static {
    /// Every operation of the set.
    const ALL: &'static [Self];

    /// The operation's code, 1 to 255.
    fn code(self) -> u8;

    /// The operation whose code is `code`, if any.
    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|op| op.code() == code)
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<O> {
    /// The operation.
    pub op: O,
    /// Slot generation (connections only; zero elsewhere).
    pub generation: u32,
    /// Index of the listener, connection, socket or send slot.
    pub index: u32,
}

const GENERATION_MASK: u32 = (1 << 24) - 1;

impl<O: OpCode> Token<O> {
    /// A token for `op` on `index`, with `generation` (truncated to 24 bits).
    pub fn new(op: O, index: u32, generation: u32) -> Self {
        Self {
            op,
            generation: generation & GENERATION_MASK,
            index,
        }
    }

    /// Packs the token into `user_data`.
    pub fn encode(self) -> u64 {
        u64::from(self.op.code()) << 56 | u64::from(self.generation) << 32 | u64::from(self.index)
    }

    /// Unpacks `user_data`; `None` for a value no token of this set produced.
    pub fn decode(user_data: u64) -> Option<Self> {
        let op = O::from_code((user_data >> 56) as u8)?;
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

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Read = 1,
        Write = 2,
        Last = 255,
    }

    impl OpCode for Op {
        const ALL: &'static [Self] = &[Op::Read, Op::Write, Op::Last];

        fn code(self) -> u8 {
            self as u8
        }
    }

    #[test]
    fn round_trips_and_truncates_generation() {
        for &op in Op::ALL {
            let t = Token::new(op, u32::MAX, 0x1ab_cdef);
            let back = Token::<Op>::decode(t.encode()).unwrap();
            assert_eq!(back, t);
            assert_eq!(back.generation, 0xab_cdef);
        }
    }

    #[test]
    fn values_no_token_produced_decode_to_nothing() {
        assert_eq!(Token::<Op>::decode(0), None);
        assert_eq!(Token::<Op>::decode(3 << 56), None);
    }
}
