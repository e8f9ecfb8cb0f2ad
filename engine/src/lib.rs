//! ringcore's engine: thread-per-core io_uring serving of stream and datagram
//! protocols.
//!
//! [`Engine::start`] binds every service's SO_REUSEPORT sockets (one per
//! worker), starts one pinned worker thread per configured CPU, and returns
//! once every worker's ring is set up. Each worker owns its ring, its sockets
//! and its connections; workers share nothing but read-only configuration and
//! the counters that only they write. The engine knows nothing of any protocol:
//! services bring their own [`StreamFactory`] or [`DatagramFactory`].
//!
//! The crate also holds [`start_epoll`]: the same [`PerCore`] layout and the
//! same connection core driven by epoll, so that a
//! comparison isolates the I/O interface. The other server models
//! (threads, tokio, tokio-uring) live in the `models` crate; the io_uring
//! building blocks it shares with loadgen (ring setup, buffer rings,
//! tokens, epoll, socket options) live in the `kernel-io` crate.

#![deny(missing_docs)]

mod config;
mod connection;
mod conns;
mod deadlines;
mod epoll;
mod error;
mod lifecycle;
pub mod mesh;
pub mod metrics;
mod moment;
pub mod per_core;
mod server;
mod signals;
mod slab;
mod socket;
mod stats;
/// The test suite's one way to skip (shared with the integration tests).
#[cfg(test)]
#[path = "../../tests/common/skip.rs"]
mod test_skip;
mod timers;
mod udp;
mod worker;

// The kernel I/O building blocks, under the names the engine has always
// used for them.
pub(crate) use kernel_io::{bufring, ring, uring};
mod token;

use std::net::SocketAddr;
use std::ops::Deref;

pub use config::{
    DatagramFactory, EngineConfig, Handler, ServiceConfig, SessionContext, SessionMaker, Sharded,
    StreamFactory, WorkerSessions,
};
pub use connection::RECEIVE_WINDOW;
pub use error::EngineError;
pub use mesh::Mesh;
pub use per_core::{PerCore, ShutdownHandle};
pub use protocols::Transport;
pub use protocols::{DatagramHandler, Fed, Next, Replies, StreamSession};
pub use ring::RingMode;
pub use server::{Driver, Server};
pub use signals::ShutdownSignals;
pub use stats::{Counter, ServiceCounter, ServiceCounters, StatsSnapshot, WorkerStats};

/// How many completions each wait holds out for under
/// [`EngineConfig::batch_wait`] (at most its time).
pub const BATCH_COMPLETIONS: usize = kernel_io::uring::BATCH;

/// A service as it was actually bound.
#[derive(Debug, Clone)]
pub struct BoundService {
    /// TCP or UDP.
    pub transport: Transport,
    /// The address every worker's socket shares (the real port if 0 was asked).
    pub addr: SocketAddr,
    /// The protocol's name.
    pub protocol: String,
}

/// A running io_uring engine: the pinned workers and the ring setup they got.
/// Everything else (services, counters, shutdown, join) is [`PerCore`]'s.
pub struct Engine {
    core: PerCore,
    mode: RingMode,
    batch_wait: Option<std::time::Duration>,
}

impl Engine {
    /// Binds every service and starts the workers; returns once all of them
    /// are ready, or the first error any of them met.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        uring::probe()?;
        // The engine splits GRO trains, so its UDP sockets ask for them.
        let (core, mode) = PerCore::start::<worker::Worker>(&config, true)?;
        Ok(Engine {
            core,
            mode,
            batch_wait: config.batch_wait,
        })
    }

    /// The ring setup the workers got.
    pub fn ring_mode(&self) -> RingMode {
        self.mode
    }

    /// How long each wait holds out for a batch of completions, if asked.
    pub fn batch_wait(&self) -> Option<std::time::Duration> {
        self.batch_wait
    }

    /// Waits for every worker; the first worker error, if any.
    pub fn join(self) -> Result<(), EngineError> {
        self.core.join()
    }

    /// The running workers, without the ring setup they report.
    pub fn into_core(self) -> PerCore {
        self.core
    }
}

impl Deref for Engine {
    type Target = PerCore;

    fn deref(&self) -> &PerCore {
        &self.core
    }
}

/// Starts the epoll model: the engine's thread-per-core layout (pinned
/// workers, SO_REUSEPORT sockets, GRO/GSO for UDP) with readiness I/O in
/// place of io_uring, so that only the I/O interface differs.
pub fn start_epoll(config: EngineConfig) -> Result<PerCore, EngineError> {
    config.validate().map_err(EngineError::Config)?;
    let (core, ()) = PerCore::start::<epoll::EpollWorker>(&config, true)?;
    Ok(core)
}

/// The engine guide, `docs/engine.md`: its code compiles as doc tests, so
/// what a newcomer copies from it builds.
#[cfg(doctest)]
#[doc = include_str!("../../docs/engine.md")]
pub struct EngineGuide;
