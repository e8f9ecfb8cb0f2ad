//! The thread-per-core layout that the io_uring and epoll models share: one
//! pinned worker per configured CPU, each with its own SO_REUSEPORT socket
//! for every service, its own counters and its own shutdown eventfd. Only
//! what a worker does with its sockets differs between the models.
//!
//! This module is also the kit for server models of your own (the `models`
//! crate's threads, tokio and tokio-uring servers are built from it): start
//! the layout with [`PerCore::start`] and a [`CoreWorker`], or bind with
//! [`bind_group`] and run threads of your own; [`queued_input`] sizes a
//! read budget, [`LoopGuard`] refuses datagrams that could start a reply
//! loop, and [`SessionShare`] publishes a handler's session counters.

pub use crate::socket::{bind_group, queued_input};
pub use crate::stats::SessionShare;
pub use crate::udp::LoopGuard;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{
    DatagramFactory, EngineConfig, Handler, SessionContext, SessionMaker, Sharded, WorkerSessions,
};
use crate::error::EngineError;
use crate::mesh::{MeshLocal, MeshShared};
use crate::stats::WorkerStats;
use crate::{socket, BoundService};
use std::rc::Rc;

/// The settings a worker needs, already divided per worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The worker's index, for messages and metrics.
    pub id: usize,
    /// Submission queue depth.
    pub ring_entries: u32,
    /// SQPOLL's idle time, if the ring polls its submission queue.
    pub sqpoll: Option<std::time::Duration>,
    /// Minimum-wait batching of completions, if asked for.
    pub batch_wait: Option<std::time::Duration>,
    /// TCP receive buffers: count and size.
    pub tcp_buffers: (u16, u32),
    /// UDP receive buffers (each sized for a whole GRO train).
    pub udp_buffers: u16,
    /// Unsent output above which a connection is not read.
    pub output_limit: usize,
    /// A peer that accepts no pending output for this long is cut off.
    pub send_timeout: Duration,
    /// A connection silent and owing nothing for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// Most connections this worker keeps open.
    pub max_connections: usize,
    /// The most memory this worker's connections may hold together.
    pub memory_budget: usize,
    /// UDP sends in flight at most.
    pub udp_sends_in_flight: usize,
    /// Time allowed to flush replies at shutdown.
    pub shutdown_deadline: Duration,
    /// Source ports whose datagrams go unanswered (loops).
    pub loop_guard: crate::udp::LoopGuard,
}

impl WorkerSettings {
    /// The bounds the worker's connections are held to.
    pub fn limits(&self) -> crate::connection::Limits {
        crate::connection::Limits {
            output_limit: self.output_limit,
            send_timeout: self.send_timeout,
            idle_timeout: self.idle_timeout,
            ..crate::connection::Limits::default()
        }
    }
}

/// How a service's sessions are made on a worker.
enum MakeSessions {
    /// A maker made on the worker, given its index.
    PerWorker(WorkerSessions),
    /// A shard and a maker made on the worker, given its end of the mesh
    /// (and the service's index in the configuration).
    Sharded(Sharded, u32),
}

/// A TCP listening socket and the protocol of its connections.
pub struct TcpService {
    /// The listening socket (SO_REUSEPORT, this worker's own).
    pub fd: OwnedFd,
    /// Makes the worker's session maker.
    sessions: MakeSessions,
    /// The service's name, for the sessions' context.
    protocol: Arc<str>,
}

impl TcpService {
    /// Splits the service into its listening socket and this worker's
    /// session maker; call on the worker's own thread, where whatever
    /// per-worker state the maker creates stays. The sessions' counters go
    /// to `stats` (the worker's own); `None` leaves them detached. A
    /// sharded service's shard joins `mesh`, the worker's end of the mesh
    /// (which [`PerCore::start`] gives every worker of a model that
    /// carries messages when a service is sharded).
    pub fn on_worker(self, worker: usize, stats: Option<Arc<WorkerStats>>) -> (OwnedFd, Sessions) {
        self.on_worker_in_mesh(worker, stats, None)
    }

    /// [`on_worker`](Self::on_worker) for a worker whose end of the mesh
    /// is `mesh`.
    pub(crate) fn on_worker_in_mesh(
        self,
        worker: usize,
        stats: Option<Arc<WorkerStats>>,
        mesh: Option<&Rc<MeshLocal>>,
    ) -> (OwnedFd, Sessions) {
        let make = match (self.sessions, mesh) {
            (MakeSessions::PerWorker(make), _) => make(worker),
            (MakeSessions::Sharded(sharded, service), Some(mesh)) => (sharded.0)(mesh, service),
            (MakeSessions::Sharded(..), None) => {
                // Never: start refuses a sharded service to a model
                // without messages, and gives the others a mesh.
                unreachable!("a sharded service on a worker without a mesh")
            }
        };
        let sessions = Sessions {
            make,
            counters: crate::config::CounterSource::new(self.protocol.clone(), stats),
            protocol: self.protocol,
            worker,
        };
        (self.fd, sessions)
    }
}

/// One worker's session maker for one service.
pub struct Sessions {
    make: SessionMaker,
    protocol: Arc<str>,
    worker: usize,
    counters: crate::config::CounterSource,
}

impl Sessions {
    /// A session for the connection just accepted on `conn`.
    pub fn open(&mut self, conn: BorrowedFd) -> Box<dyn protocols::StreamSession> {
        let cx =
            SessionContext::new(conn, self.worker, &self.protocol).with_counters(&self.counters);
        (self.make)(&cx)
    }
}

/// A UDP socket and its protocol.
pub struct UdpService {
    /// The socket (SO_REUSEPORT, this worker's own).
    pub fd: OwnedFd,
    /// Makes the handler, on the worker's own thread.
    pub factory: DatagramFactory,
}

/// Everything one worker is given: its settings, counters, sockets, and the
/// eventfd that becomes readable when shutdown starts.
pub struct WorkerParts {
    /// Limits and sizes for this worker.
    pub settings: WorkerSettings,
    /// Counters only this worker writes.
    pub stats: Arc<WorkerStats>,
    /// Its listening sockets.
    pub tcp: Vec<TcpService>,
    /// Its UDP sockets.
    pub udp: Vec<UdpService>,
    /// Readable once shutdown has been asked for.
    pub wake: OwnedFd,
    /// What the workers share to message each other, when a service is
    /// sharded.
    pub(crate) mesh: Option<Arc<MeshShared>>,
}

impl WorkerParts {
    /// Opens the parts on the worker's own thread: its end of the mesh,
    /// and each TCP service's socket with this worker's session maker
    /// (counting into the worker's counters, its shard in the mesh).
    pub(crate) fn open(self) -> OpenedParts {
        let mesh = self
            .mesh
            .map(|shared| MeshLocal::new(self.settings.id, shared, self.stats.clone()));
        let tcp = self
            .tcp
            .into_iter()
            .map(|service| {
                service.on_worker_in_mesh(self.settings.id, Some(self.stats.clone()), mesh.as_ref())
            })
            .collect();
        OpenedParts {
            settings: self.settings,
            stats: self.stats,
            tcp,
            udp: self.udp,
            wake: self.wake,
            mesh,
        }
    }
}

/// A worker's parts as its driver takes them ([`WorkerParts::open`]).
pub(crate) struct OpenedParts {
    pub(crate) settings: WorkerSettings,
    pub(crate) stats: Arc<WorkerStats>,
    /// Each TCP service's listening socket and session maker.
    pub(crate) tcp: Vec<(OwnedFd, Sessions)>,
    pub(crate) udp: Vec<UdpService>,
    pub(crate) wake: OwnedFd,
    /// The worker's end of the mesh, when a service is sharded.
    pub(crate) mesh: Option<Rc<MeshLocal>>,
}

/// A worker of a thread-per-core model.
pub trait CoreWorker: Sized {
    /// What a ready worker reports back to the starter (the ring mode it got,
    /// say).
    type Ready: Send + 'static;
    /// How the workers message each other (sharded services): `Some(true)`
    /// through their io_uring rings, `Some(false)` through queues and
    /// eventfds, `None`: they cannot (sharded services are refused).
    const MESSAGES: Option<bool> = None;
    /// Sets the worker up on its own (pinned) thread.
    fn new(parts: WorkerParts) -> Result<(Self, Self::Ready), EngineError>;
    /// Serves until shutdown is asked for and finished.
    fn run(self) -> Result<(), EngineError>;
}

/// What a worker thread runs.
type WorkerBody = Box<dyn FnOnce() -> Result<(), EngineError> + Send>;
/// A worker thread.
type WorkerHandle = JoinHandle<Result<(), EngineError>>;

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

/// Running pinned workers of one model.
pub struct PerCore {
    workers: Vec<WorkerHandle>,
    stats: Vec<Arc<WorkerStats>>,
    services: Vec<BoundService>,
    shutdown: ShutdownHandle,
}

impl PerCore {
    /// Binds every service's sockets (one per worker; UDP_GRO on when
    /// `udp_gro`), starts one worker `W` per CPU, and returns once all are
    /// ready (with the last worker's `Ready`), or the first error any met.
    pub fn start<W: CoreWorker + 'static>(
        config: &EngineConfig,
        udp_gro: bool,
    ) -> Result<(PerCore, W::Ready), EngineError> {
        Self::start_with::<W>(config, udp_gro, |builder, body| builder.spawn(body))
    }

    /// [`start`](Self::start) with the thread spawner given (tests make it
    /// fail): if a worker cannot be started, the ones already started are
    /// stopped and joined, and the error is returned.
    fn start_with<W: CoreWorker + 'static>(
        config: &EngineConfig,
        udp_gro: bool,
        mut spawn: impl FnMut(std::thread::Builder, WorkerBody) -> io::Result<WorkerHandle>,
    ) -> Result<(PerCore, W::Ready), EngineError> {
        let n = config.cpus.len();
        let sharded = config
            .services
            .iter()
            .find(|s| matches!(s.handler, Handler::Sharded(_)));
        let mesh = match (sharded, W::MESSAGES) {
            (None, _) => None,
            (Some(service), None) => {
                return Err(EngineError::Config(format!(
                    "service '{}' is sharded over the workers, which only the thread-per-core engine (io_uring or epoll) serves",
                    service.protocol
                )))
            }
            (Some(_), Some(rings)) => {
                Some(
                    MeshShared::new(n, rings).map_err(|source| EngineError::Worker {
                        worker: 0,
                        context: "creating the workers' message queues",
                        source,
                    })?,
                )
            }
        };
        let mut tcp: Vec<Vec<TcpService>> = (0..n).map(|_| Vec::new()).collect();
        let mut udp: Vec<Vec<UdpService>> = (0..n).map(|_| Vec::new()).collect();
        let mut services = Vec::new();
        for (index, service) in config.services.iter().enumerate() {
            let (sockets, addr) = socket::bind_group(service, n, udp_gro)?;
            let protocol: Arc<str> = Arc::from(service.protocol.as_str());
            for (w, fd) in sockets.into_iter().enumerate() {
                let sessions = match &service.handler {
                    Handler::Datagram(factory) => {
                        udp[w].push(UdpService {
                            fd,
                            factory: factory.clone(),
                        });
                        continue;
                    }
                    Handler::Stream(factory) => {
                        MakeSessions::PerWorker(crate::config::per_worker(factory))
                    }
                    Handler::StreamPerWorker(make) => MakeSessions::PerWorker(make.clone()),
                    Handler::Sharded(sharded) => {
                        MakeSessions::Sharded(sharded.clone(), index as u32)
                    }
                };
                tcp[w].push(TcpService {
                    fd,
                    sessions,
                    protocol: protocol.clone(),
                });
            }
            services.push(BoundService {
                transport: service.transport(),
                addr,
                protocol: service.protocol.clone(),
            });
        }

        let loop_guard = crate::udp::LoopGuard::for_services(&services);
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
        let mut spawn_error = None;
        let parts = tcp.into_iter().zip(udp).zip(worker_wakes);
        for (id, ((tcp, udp), wake)) in parts.enumerate() {
            let worker_stats = Arc::new(WorkerStats::default());
            stats.push(worker_stats.clone());
            let parts = WorkerParts {
                settings: WorkerSettings {
                    id,
                    ring_entries: config.ring_entries,
                    sqpoll: config.sqpoll,
                    batch_wait: config.batch_wait,
                    tcp_buffers: (config.tcp_buffers, config.tcp_buffer_size),
                    udp_buffers: config.udp_buffers,
                    output_limit: config.output_limit,
                    send_timeout: config.send_timeout,
                    idle_timeout: config.idle_timeout,
                    max_connections: per_worker_connections,
                    memory_budget: config.memory_limit / n,
                    udp_sends_in_flight: config.udp_sends_in_flight,
                    shutdown_deadline: config.shutdown_deadline,
                    loop_guard: loop_guard.clone(),
                },
                stats: worker_stats,
                tcp,
                udp,
                wake,
                mesh: mesh.clone(),
            };
            let (cpu, pin) = (config.cpus[id], config.pin);
            let worker_mesh = mesh.clone();
            let ready = ready_tx.clone();
            let builder = std::thread::Builder::new().name(format!("ringcore-w{id}"));
            let body: WorkerBody = Box::new(move || {
                let pinned =
                    !pin || core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                if !pinned {
                    tracing::warn!(worker = id, cpu, "could not pin the worker to its CPU");
                }
                // A worker that fails leaves the mesh, so that no other
                // waits for it to start or to answer.
                let abandon = || {
                    if let Some(mesh) = &worker_mesh {
                        mesh.abandon();
                    }
                };
                match W::new(parts) {
                    Ok((worker, report)) => {
                        let _ = ready.send(Ok(report));
                        let result = worker.run();
                        if result.is_err() {
                            abandon();
                        }
                        result
                    }
                    Err(e) => {
                        abandon();
                        let _ = ready.send(Err(e));
                        Ok(())
                    }
                }
            });
            match spawn(builder, body) {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    if let Some(mesh) = &mesh {
                        mesh.abandon();
                    }
                    spawn_error = Some(EngineError::Worker {
                        worker: id,
                        context: "spawning the worker thread",
                        source: e,
                    });
                    break;
                }
            }
        }
        drop(ready_tx);

        let mut report = None;
        let mut first_error = spawn_error;
        // Every started worker reports once it is set up (or failed to be).
        for _ in 0..handles.len() {
            match ready_rx.recv() {
                Ok(Ok(r)) => report = Some(r),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(EngineError::WorkerPanicked(0));
                }
            }
        }
        let core = PerCore {
            workers: handles,
            stats,
            services,
            shutdown,
        };
        match (first_error, report) {
            (None, Some(report)) => Ok((core, report)),
            (error, _) => {
                core.shutdown.shutdown();
                let _ = core.join();
                Err(error.unwrap_or(EngineError::WorkerPanicked(0)))
            }
        }
    }

    /// The services as bound, in configuration order.
    pub fn services(&self) -> &[BoundService] {
        &self.services
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.stats.len()
    }

    /// Every worker's live counters, by worker index.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.stats.clone()
    }

    /// A handle that starts graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Asks every worker to stop accepting, flush its replies and exit;
    /// [`join`](Self::join) then waits for them.
    pub fn shutdown(&self) {
        self.shutdown.shutdown();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Workers that are running right now.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);

    /// A worker that runs until its shutdown eventfd is written.
    struct Waiter(OwnedFd);

    impl CoreWorker for Waiter {
        type Ready = ();

        fn new(parts: WorkerParts) -> Result<(Self, ()), EngineError> {
            RUNNING.fetch_add(1, Ordering::SeqCst);
            Ok((Waiter(parts.wake), ()))
        }

        fn run(self) -> Result<(), EngineError> {
            let mut value = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from an eventfd we own;
            // blocks until shutdown writes it.
            unsafe { libc::read(self.0.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_worker_that_cannot_start_stops_the_started_ones() {
        let config = EngineConfig {
            services: vec![crate::ServiceConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                protocol: "echo".into(),
                handler: Handler::Stream(Arc::new(|_| Box::new(protocols::echo::EchoStream))),
            }],
            cpus: vec![0, 0, 0],
            ..EngineConfig::default()
        };
        let mut spawned = 0;
        let result = PerCore::start_with::<Waiter>(&config, false, |builder, body| {
            spawned += 1;
            if spawned == 3 {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            builder.spawn(body)
        });
        let Err(error) = result else {
            panic!("the start should fail");
        };
        let message = error.to_string();
        assert!(message.contains("spawning the worker thread"), "{message}");
        assert_eq!(
            RUNNING.load(Ordering::SeqCst),
            0,
            "the two workers already started were stopped and joined"
        );
    }
}
