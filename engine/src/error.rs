//! Errors the engine reports, each carrying what a user needs to act on it.

use std::io;
use std::net::SocketAddr;

use protocols::Transport;

/// Everything that can stop the engine from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another socket already holds the address.
    #[error("{transport} port {} on {} is already in use (service '{protocol}'); stop whatever holds it or choose another port", addr.port(), addr.ip())]
    PortInUse {
        /// The service's transport.
        transport: Transport,
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The service's protocol name.
        protocol: String,
    },
    /// The OS refused the bind (privileged port, or a security policy).
    #[error("permission denied binding {transport} {addr} (service '{protocol}'): ports below 1024 need root or CAP_NET_BIND_SERVICE")]
    PermissionDenied {
        /// The service's transport.
        transport: Transport,
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The service's protocol name.
        protocol: String,
    },
    /// Any other failure setting up a service's socket.
    #[error("cannot set up {transport} {addr} (service '{protocol}'): {source}")]
    Socket {
        /// The service's transport.
        transport: Transport,
        /// The address involved.
        addr: SocketAddr,
        /// The service's protocol name.
        protocol: String,
        /// The OS error.
        source: io::Error,
    },
    /// io_uring cannot be used here; the message names the cause and the remedy.
    #[error("io_uring is unavailable: {0}")]
    UringUnavailable(String),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A worker failed while running.
    #[error("worker {worker}: {context}: {source}")]
    Worker {
        /// The worker's index.
        worker: usize,
        /// What the worker was doing.
        context: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The metrics endpoint could not listen.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// SIGINT and SIGTERM could not be blocked or waited for.
    #[error("cannot wait for SIGINT/SIGTERM: {source}")]
    Signals {
        /// The OS error.
        source: io::Error,
    },
    /// A worker thread panicked; this is a bug.
    #[error("worker {0} panicked (a bug: please report it with the log)")]
    WorkerPanicked(usize),
}

impl EngineError {
    /// What worker `worker` reports of an OS error met while `context`:
    /// `io_result.map_err(EngineError::in_worker(id, "creating the ring"))`.
    pub fn in_worker(worker: usize, context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| EngineError::Worker {
            worker,
            context,
            source,
        }
    }
}

impl From<kernel_io::Unavailable> for EngineError {
    fn from(e: kernel_io::Unavailable) -> Self {
        EngineError::UringUnavailable(e.0)
    }
}
