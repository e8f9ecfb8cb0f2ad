//! The operations a load thread's ring (or epoll instance) carries, as
//! `kernel_io` tokens: the client's own set, with the connect the server
//! never makes.

use kernel_io::token::OpCode;

/// A token of the client's operations.
pub(super) type Token = kernel_io::token::Token<Op>;

/// The operation a submission (or an epoll registration) was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    /// Connect on connection `index` (the epoll path registers the socket
    /// under it, and keeps it for the socket's life).
    Connect = 1,
    /// Multishot recv on connection `index`.
    Recv = 2,
    /// Send on connection `index`.
    Send = 3,
    /// The connect's linked timeout, or an async cancel; its own result is
    /// ignored.
    Cancel = 4,
}

impl OpCode for Op {
    const ALL: &'static [Self] = &[Op::Connect, Op::Recv, Op::Send, Op::Cancel];

    fn code(self) -> u8 {
        self as u8
    }
}
