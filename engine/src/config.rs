//! What the engine serves and how: services, workers, ring and buffer sizes.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use protocols::{DatagramHandler, StreamSession, Transport};

use crate::stats::ServiceCounter;

/// What a new session is told about its connection: who is on the other
/// end, which worker serves it, and which service it belongs to.
///
/// The addresses are read from the socket only when asked (a system call
/// each), so sessions that never ask pay nothing for them.
pub struct SessionContext<'a> {
    socket: BorrowedFd<'a>,
    worker: usize,
    service: &'a str,
    counters: Option<&'a CounterSource>,
}

/// Where a worker's sessions of one service get their counters: the
/// worker's registry, with what was registered kept here so that a new
/// session takes no lock.
pub struct CounterSource {
    service: Arc<str>,
    stats: Option<Arc<crate::stats::WorkerStats>>,
    known: std::cell::RefCell<Vec<(&'static str, ServiceCounter)>>,
}

impl CounterSource {
    /// The counters of `service` on the worker whose counters are `stats`.
    pub(crate) fn new(service: Arc<str>, stats: Option<Arc<crate::stats::WorkerStats>>) -> Self {
        Self {
            service,
            stats,
            known: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn counter(&self, name: &'static str) -> ServiceCounter {
        let Some(stats) = &self.stats else {
            return ServiceCounter::detached();
        };
        let mut known = self.known.borrow_mut();
        if let Some((_, c)) = known.iter().find(|(n, _)| *n == name) {
            return c.clone();
        }
        let counter = stats.services.register(&self.service, name);
        known.push((name, counter.clone()));
        counter
    }
}

impl<'a> SessionContext<'a> {
    /// The context of the connection on `socket`, served by `worker` for
    /// the service named `service`. Transports make these; a session only
    /// reads them.
    pub fn new(socket: BorrowedFd<'a>, worker: usize, service: &'a str) -> Self {
        Self {
            socket,
            worker,
            service,
            counters: None,
        }
    }

    /// The same context, with the sessions' counters going to `source`.
    pub(crate) fn with_counters(mut self, source: &'a CounterSource) -> Self {
        self.counters = Some(source);
        self
    }

    /// The service's counter `name` on this worker, exported by `/metrics`
    /// as `ringcore_service_counter{service="...",name="..."}` (summed over
    /// workers, and per worker). Keep it in the session and add to it; a
    /// transport without workers (the threads and tokio models) gives a
    /// counter that is not exported.
    pub fn counter(&self, name: &'static str) -> ServiceCounter {
        match self.counters {
            Some(source) => source.counter(name),
            None => ServiceCounter::detached(),
        }
    }

    /// The index of the worker (thread) that serves the connection, from 0.
    /// A connection stays on its worker for its whole life.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The name the service was configured with.
    pub fn service(&self) -> &str {
        self.service
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(socket2::SockRef::from(&self.socket).peer_addr()?)
    }

    /// The local address the peer connected to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(socket2::SockRef::from(&self.socket).local_addr()?)
    }
}

fn socket_addr(addr: socket2::SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"))
}

/// Makes a fresh session for every accepted connection, on any thread:
/// the form every server model (threads, tokio, the engine) can serve.
pub type StreamFactory =
    Arc<dyn Fn(&SessionContext) -> Box<dyn StreamSession + Send> + Send + Sync>;
/// Makes one worker's session maker, once, on that worker's own thread
/// (given the worker's index): what it captures is that worker's state,
/// shared by its sessions without locks.
pub type WorkerSessions = Arc<dyn Fn(usize) -> SessionMaker + Send + Sync>;
/// One worker's session maker: called on that worker for each connection
/// it accepts.
pub type SessionMaker = Box<dyn FnMut(&SessionContext) -> Box<dyn StreamSession>>;
/// The per-worker form of a shared stream factory: every worker's maker
/// calls it.
pub(crate) fn per_worker(factory: &StreamFactory) -> WorkerSessions {
    let factory = factory.clone();
    Arc::new(move |_worker| {
        let factory = factory.clone();
        Box::new(move |cx: &SessionContext| -> Box<dyn StreamSession> { factory(cx) })
    })
}

/// Makes one handler for every worker's socket of a datagram service.
pub type DatagramFactory = Arc<dyn Fn() -> Box<dyn DatagramHandler> + Send + Sync>;

/// How a service turns bytes into replies; the engine knows nothing more of it.
#[derive(Clone)]
pub enum Handler {
    /// A TCP service: one session per connection, made on any thread.
    Stream(StreamFactory),
    /// A TCP service whose sessions share per-worker state: each worker
    /// makes its own session maker on its own thread. Served by the
    /// thread-per-core engine (io_uring and epoll), not by the other models.
    StreamPerWorker(WorkerSessions),
    /// A TCP service whose workers each own a shard of its state, which
    /// sessions on any worker reach by message ([`crate::Mesh`]). Made by
    /// [`crate::Server::tcp_sharded`]; served by the thread-per-core
    /// engine only.
    Sharded(Sharded),
    /// A UDP service: one handler per worker socket.
    Datagram(DatagramFactory),
}

/// A sharded service's maker: on each worker, given that worker's end of
/// the mesh and the service's index, makes the worker's shard and its
/// session maker.
#[derive(Clone)]
pub struct Sharded(pub(crate) ShardMaker);

/// Makes a worker's shard and session maker (see [`Sharded`]).
pub(crate) type ShardMaker =
    Arc<dyn Fn(&std::rc::Rc<crate::mesh::MeshLocal>, u32) -> SessionMaker + Send + Sync>;

impl Handler {
    /// The transport this handler is served over.
    pub fn transport(&self) -> Transport {
        match self {
            Handler::Stream(_) | Handler::StreamPerWorker(_) | Handler::Sharded(_) => {
                Transport::Tcp
            }
            Handler::Datagram(_) => Transport::Udp,
        }
    }
}

/// One listening service: an address, a name for messages, and its handler.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Where to listen; port 0 picks a free port shared by every worker.
    pub addr: SocketAddr,
    /// The protocol's name, for messages and metrics.
    pub protocol: String,
    /// The protocol itself.
    pub handler: Handler,
}

impl ServiceConfig {
    /// The service's transport.
    pub fn transport(&self) -> Transport {
        self.handler.transport()
    }
}

/// Everything the engine needs to start.
#[derive(Clone)]
pub struct EngineConfig {
    /// The services every worker serves.
    pub services: Vec<ServiceConfig>,
    /// One worker per entry, pinned to that CPU id (unless `pin` is off).
    pub cpus: Vec<usize>,
    /// Pin each worker to its CPU: thread-per-core's default, for cores
    /// the server has to itself. Off, the workers float: for a machine
    /// whose cores other busy processes share (a client on the same box,
    /// a laptop, an overcommitted VM), where a pinned worker must wait for
    /// its one core while another lies idle (Seastar's
    /// `--overprovisioned` does the same).
    pub pin: bool,
    /// Submission queue depth per worker (the completion queue is 4x).
    pub ring_entries: u32,
    /// Poll each worker's submission queue from a kernel thread that
    /// sleeps after this long idle (IORING_SETUP_SQPOLL); `None`: the
    /// default ring (defer-taskrun).
    pub sqpoll: Option<Duration>,
    /// io_uring: each wait lasts until a batch of completions is ready or
    /// this long has passed (minimum-wait batching, Linux 6.12+); `None`:
    /// wake for the first completion.
    pub batch_wait: Option<Duration>,
    /// Size of each TCP receive buffer in the provided-buffer ring.
    pub tcp_buffer_size: u32,
    /// Number of TCP receive buffers per worker (a power of two).
    pub tcp_buffers: u16,
    /// Number of UDP receive buffers per worker (a power of two); each holds a
    /// whole GRO train of up to 64 KiB.
    pub udp_buffers: u16,
    /// Unsent output above which a connection is not read until it drains.
    pub output_limit: usize,
    /// A connection whose peer accepts none of its pending output for this
    /// long is closed (counted as `send_timeouts`).
    pub send_timeout: Duration,
    /// Most open TCP connections in the whole process (shared evenly by workers).
    pub max_connections: usize,
    /// A TCP connection that owes nothing and has received nothing for
    /// this long is closed (counted as `idle_timeouts`); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// The most memory all TCP connections together may hold for their
    /// input and output (shared evenly by workers); past a worker's share,
    /// the connections holding the most are closed (`connections_evicted`).
    pub memory_limit: usize,
    /// UDP replies in flight per worker; more are dropped and counted.
    pub udp_sends_in_flight: usize,
    /// How long shutdown may spend flushing replies before closing anyway.
    pub shutdown_deadline: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            services: Vec::new(),
            cpus: vec![0],
            pin: true,
            ring_entries: 1024,
            sqpoll: None,
            batch_wait: None,
            tcp_buffer_size: 16 * 1024,
            tcp_buffers: 512,
            udp_buffers: 256,
            output_limit: 1024 * 1024,
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            idle_timeout: Some(Duration::from_secs(300)),
            memory_limit: 1 << 30,
            udp_sends_in_flight: 512,
            shutdown_deadline: Duration::from_secs(5),
        }
    }
}

impl EngineConfig {
    /// The smallest `memory_limit` these workers and this output limit
    /// allow: each worker's share must hold two connections at their output
    /// limit, or one ordinary large reply would evict others.
    pub fn least_memory_limit(&self) -> usize {
        self.output_limit
            .saturating_mul(2)
            .saturating_mul(self.cpus.len().max(1))
    }

    /// Checks the values that would otherwise fail deep inside a worker.
    pub fn validate(&self) -> Result<(), String> {
        if self.services.is_empty() {
            return Err("no service to serve".into());
        }
        if self.cpus.is_empty() {
            return Err("no worker: give at least one CPU or thread".into());
        }
        if !(2..=32768).contains(&self.ring_entries) {
            return Err(format!(
                "ring entries must be between 2 and 32768, got {}",
                self.ring_entries
            ));
        }
        for (name, n) in [
            ("TCP buffer count", self.tcp_buffers),
            ("UDP buffer count", self.udp_buffers),
        ] {
            if !n.is_power_of_two() || n > 32768 {
                return Err(format!(
                    "{name} must be a power of two up to 32768, got {n}"
                ));
            }
        }
        if !(512..=1 << 24).contains(&self.tcp_buffer_size) {
            return Err(format!(
                "buffer size must be between 512 B and 16 MiB, got {}",
                self.tcp_buffer_size
            ));
        }
        if self.output_limit == 0 {
            return Err("output limit must be above zero".into());
        }
        if self.send_timeout.is_zero() {
            return Err("send timeout must be above zero".into());
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err("idle timeout must be above zero (or off)".into());
        }
        if self.max_connections == 0 {
            return Err("max connections must be above zero".into());
        }
        let least = self.least_memory_limit();
        if self.memory_limit < least {
            let workers = self.cpus.len();
            return Err(format!(
                "memory limit {} leaves each of {workers} workers {}, under twice the output limit ({}); raise the memory limit to at least {} or lower the output limit",
                protocols::units::format_size(self.memory_limit as u64),
                protocols::units::format_size((self.memory_limit / workers) as u64),
                protocols::units::format_size(self.output_limit as u64),
                protocols::units::format_size(least as u64),
            ));
        }
        if self.udp_sends_in_flight == 0 {
            return Err("UDP sends in flight must be above zero".into());
        }
        if let Some(wait) = self.batch_wait {
            // Under a microsecond the kernel sees no minimum at all and would
            // wait for a full batch however long it takes.
            if !(Duration::from_micros(1)..=Duration::from_secs(1)).contains(&wait) {
                return Err(format!(
                    "batch wait must be between 1us and 1s, got {wait:?}"
                ));
            }
        }
        for (i, a) in self.services.iter().enumerate() {
            for b in &self.services[..i] {
                if a.transport() == b.transport() && a.addr == b.addr && a.addr.port() != 0 {
                    return Err(format!(
                        "{} {} is configured twice ('{}' and '{}')",
                        a.transport(),
                        a.addr,
                        b.protocol,
                        a.protocol
                    ));
                }
            }
        }
        Ok(())
    }
}
