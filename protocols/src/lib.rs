//! ringcore's protocols as pure state machines: bytes in, bytes out.
//!
//! Nothing here touches a socket, a clock or a thread. A stream protocol is a
//! [`StreamSession`] fed with whatever chunks the transport delivers; a datagram
//! protocol is a [`DatagramHandler`] fed one datagram at a time. The io_uring
//! engine, the baseline servers and the load generator's verifier all share this
//! code, and every protocol is tested here with plain byte slices.

#![deny(missing_docs)]

pub mod bot;
pub mod cookie;
pub mod datagram;
pub mod discard;
pub mod echo;
pub mod http;
pub mod ok;
pub mod probe;
pub mod registry;
pub mod reverse;
pub mod stream;
pub mod units;

pub use datagram::{DatagramHandler, Replies, SessionStats};
pub use registry::{Options, Protocol, Transport, UnknownProtocol};
pub use stream::{Fed, Next, StreamSession, Unread, DEFAULT_MAX_FRAME, STEP_ROOM};
