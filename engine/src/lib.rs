//! ringcore's engine: thread-per-core io_uring serving of stream and datagram
//! protocols.
//!
//! [`Engine::start`] binds every service's SO_REUSEPORT sockets (one per
//! worker), starts one pinned worker thread per configured CPU, and returns
//! once every worker's ring is set up. Each worker owns its ring, its sockets
//! and its connections; workers share nothing but read-only configuration and
//! the counters that only they write. The engine knows nothing of any protocol:
//! services bring their own [`StreamFactory`] or [`DatagramFactory`].

pub mod bufring;
pub mod config;
pub mod conn;
pub mod error;
pub mod metrics;
pub mod ring;
pub mod slab;
pub mod socket;
pub mod stats;
pub mod threads;
pub mod token;
pub mod tokio_model;
pub mod udp;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

pub use config::{DatagramFactory, EngineConfig, Handler, ServiceConfig, StreamFactory};
pub use error::EngineError;
pub use protocols::Transport;
pub use ring::RingMode;
pub use stats::{StatsSnapshot, WorkerStats};
pub use threads::ThreadsServer;
pub use tokio_model::TokioServer;

use worker::{TcpService, UdpService, Worker, WorkerSettings};

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

/// Wakes every worker to begin a graceful shutdown. Cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle {
    wakers: Arc<Vec<OwnedFd>>,
}

impl ShutdownHandle {
    /// Asks every worker to stop accepting, flush its replies and exit.
    pub fn shutdown(&self) {
        for fd in self.wakers.iter() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            let rc = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            if rc != 8 {
                tracing::warn!("could not wake a worker: {}", io::Error::last_os_error());
            }
        }
    }
}

/// A running engine.
pub struct Engine {
    workers: Vec<JoinHandle<Result<(), EngineError>>>,
    stats: Vec<Arc<WorkerStats>>,
    services: Vec<BoundService>,
    shutdown: ShutdownHandle,
    mode: RingMode,
}

impl Engine {
    /// Binds every service and starts the workers; returns once all of them
    /// are ready, or the first error any of them met.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        ring::probe()?;
        let n = config.cpus.len();

        let mut tcp: Vec<Vec<TcpService>> = (0..n).map(|_| Vec::new()).collect();
        let mut udp: Vec<Vec<UdpService>> = (0..n).map(|_| Vec::new()).collect();
        let mut services = Vec::new();
        for service in &config.services {
            let (sockets, addr) = socket::bind_group(service, n, true)?;
            for (w, fd) in sockets.into_iter().enumerate() {
                match &service.handler {
                    Handler::Stream(factory) => tcp[w].push(TcpService {
                        fd,
                        factory: factory.clone(),
                    }),
                    Handler::Datagram(factory) => udp[w].push(UdpService {
                        fd,
                        factory: factory.clone(),
                    }),
                }
            }
            services.push(BoundService {
                transport: service.transport(),
                addr,
                protocol: service.protocol.clone(),
            });
        }

        let mut wakers = Vec::with_capacity(n);
        let mut worker_wakes = Vec::with_capacity(n);
        for _ in 0..n {
            let (ours, theirs) = eventfd_pair().map_err(|e| EngineError::Worker {
                worker: wakers.len(),
                context: "creating the shutdown eventfd",
                source: e,
            })?;
            wakers.push(ours);
            worker_wakes.push(theirs);
        }
        let shutdown = ShutdownHandle {
            wakers: Arc::new(wakers),
        };

        let per_worker_connections = config.max_connections.div_ceil(n);
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut handles = Vec::with_capacity(n);
        let mut stats = Vec::with_capacity(n);
        let parts = tcp.into_iter().zip(udp).zip(worker_wakes);
        for (id, ((tcp, udp), wake)) in parts.enumerate() {
            let worker_stats = Arc::new(WorkerStats::default());
            stats.push(worker_stats.clone());
            let settings = WorkerSettings {
                id,
                ring_entries: config.ring_entries,
                tcp_buffers: (config.tcp_buffers, config.tcp_buffer_size),
                udp_buffers: config.udp_buffers,
                output_limit: config.output_limit,
                max_connections: per_worker_connections,
                udp_sends_in_flight: config.udp_sends_in_flight,
                shutdown_deadline: config.shutdown_deadline,
            };
            let cpu = config.cpus[id];
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ringcore-w{id}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        tracing::warn!(worker = id, cpu, "could not pin the worker to its CPU");
                    }
                    match Worker::new(settings, worker_stats, tcp, udp, wake) {
                        Ok((worker, mode)) => {
                            let _ = ready.send(Ok(mode));
                            worker.run()
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            Ok(())
                        }
                    }
                })
                .map_err(|e| EngineError::Worker {
                    worker: id,
                    context: "spawning the worker thread",
                    source: e,
                })?;
            handles.push(handle);
        }
        drop(ready_tx);

        let mut mode = RingMode::DeferTaskrun;
        let mut first_error = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(m)) => mode = m,
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(EngineError::WorkerPanicked(0));
                }
            }
        }
        let engine = Engine {
            workers: handles,
            stats,
            services,
            shutdown,
            mode,
        };
        if let Some(e) = first_error {
            engine.shutdown.shutdown();
            let _ = engine.join();
            return Err(e);
        }
        Ok(engine)
    }

    /// The services as bound, in configuration order.
    pub fn services(&self) -> &[BoundService] {
        &self.services
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.stats.len()
    }

    /// The ring setup the workers got.
    pub fn ring_mode(&self) -> RingMode {
        self.mode
    }

    /// Every worker's live counters, by worker index.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.stats.clone()
    }

    /// A handle that starts graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// True once any worker has stopped (normally only after shutdown).
    pub fn any_worker_stopped(&self) -> bool {
        self.workers.iter().any(JoinHandle::is_finished)
    }

    /// Waits for every worker; the first worker error, if any.
    pub fn join(self) -> Result<(), EngineError> {
        let mut result = Ok(());
        for (id, handle) in self.workers.into_iter().enumerate() {
            let outcome = handle
                .join()
                .unwrap_or(Err(EngineError::WorkerPanicked(id)));
            if let Err(e) = outcome {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

/// Two descriptors of one eventfd: one for the handle, one for the worker.
fn eventfd_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let ours = unsafe { OwnedFd::from_raw_fd(fd) };
    let theirs = ours.try_clone()?;
    Ok((ours, theirs))
}
