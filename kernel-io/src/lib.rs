//! The kernel I/O building blocks ringcore's engine and loadgen share:
//! io_uring setup and probing ([`ring`], [`uring::probe`]), a ring that owns
//! its provided-buffer rings and counts its operations ([`uring::Uring`],
//! [`bufring`]), the tokens operations carry ([`token`]), an edge-triggered
//! epoll instance ([`epoll`]), and the socket options and control messages
//! `libc` does not wrap (UDP GSO and GRO, [`sockopt`]). Nothing here knows
//! a protocol, a connection or a server; the engine and loadgen build those
//! on it.

#![deny(missing_docs)]

pub mod bufring;
pub mod epoll;
pub mod ring;
pub mod sockopt;
pub mod token;
pub mod uring;

/// The test suite's one way to skip (shared with the integration tests).
#[cfg(test)]
#[path = "../../tests/common/skip.rs"]
mod test_skip;

/// io_uring cannot be used here: the message names the cause and the
/// remedy (a kernel too old, `kernel.io_uring_disabled`, a seccomp filter,
/// a refused buffer ring).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);
