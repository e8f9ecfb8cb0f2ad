//! The operations the server's rings and epoll instances carry, as
//! `kernel_io` tokens.

use kernel_io::token::OpCode;

/// A token of the server's operations.
pub(crate) type Token = kernel_io::token::Token<Op>;

/// The operation a submission (or an epoll registration) was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
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
    /// Messages from other workers are waiting (the epoll worker's bell).
    Mesh = 9,
}

impl OpCode for Op {
    const ALL: &'static [Self] = &[
        Op::Accept,
        Op::Recv,
        Op::Send,
        Op::UdpRecv,
        Op::UdpSend,
        Op::Wake,
        Op::Cancel,
        Op::Mesh,
    ];

    fn code(self) -> u8 {
        self as u8
    }
}
