//! The chapter's server model, for comparison: an accept loop per TCP
//! service, one blocking OS thread per connection, and one blocking thread
//! per UDP service. It serves the same protocols through the same sessions
//! as the io_uring engine, with the same counters; only the I/O differs.
//!
//! Blocking writes are its backpressure (a peer that does not read stalls
//! its own thread), a 100 ms read timeout gives sessions their ticks and
//! lets threads notice shutdown, and shutdown waits for connections up to
//! the same deadline as the engine.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocols::{DatagramHandler, Next, Replies, StreamSession, Unread, STEP_ROOM};

use engine::BoundService;
use engine::EngineError;
use engine::WorkerStats;
use engine::{EngineConfig, Handler, SessionContext};

/// How often blocked threads look up (ticks, shutdown).
const TICK: Duration = Duration::from_millis(100);
/// How long a finished connection waits for the peer's close.
const LINGER: Duration = Duration::from_secs(2);

/// What every thread of the model shares.
struct Shared {
    stats: Arc<WorkerStats>,
    stopping: AtomicBool,
    /// Set when shutdown starts: when connections must be closed by.
    deadline: Mutex<Option<Instant>>,
    shutdown_deadline: Duration,
    open: AtomicUsize,
    max_connections: usize,
    /// CPUs the model's threads may run on (from `--cpus`).
    cpus: Vec<usize>,
}

/// Restricts the calling thread (and the threads it starts later) to `cpus`.
fn pin_to(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data, filled with the CPU_* helpers, and
    // applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!("could not pin to CPUs {cpus:?}");
        }
    }
}

impl Shared {
    fn past_deadline(&self) -> bool {
        self.deadline
            .lock()
            .map(|d| d.is_some_and(|at| Instant::now() >= at))
            .unwrap_or(true)
    }
}

/// A running thread-per-connection server.
pub struct ThreadsServer {
    shared: Arc<Shared>,
    services: Vec<BoundService>,
    threads: Vec<JoinHandle<()>>,
}

impl ThreadsServer {
    /// Binds every service (one socket each) and starts its threads.
    pub fn start(config: EngineConfig) -> Result<ThreadsServer, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        let shared = Arc::new(Shared {
            stats: Arc::new(WorkerStats::default()),
            stopping: AtomicBool::new(false),
            deadline: Mutex::new(None),
            shutdown_deadline: config.shutdown_deadline,
            open: AtomicUsize::new(0),
            max_connections: config.max_connections,
            cpus: config.cpus.clone(),
        });
        let mut services = Vec::new();
        let mut sockets = Vec::new();
        for service in &config.services {
            let (mut bound, addr) = engine::per_core::bind_group(service, 1, false)?;
            let fd: OwnedFd = bound.remove(0);
            services.push(BoundService {
                transport: service.transport(),
                addr,
                protocol: service.protocol.clone(),
            });
            sockets.push((service, fd, addr));
        }
        let guard = engine::per_core::LoopGuard::for_services(&services);
        let mut threads = Vec::new();
        for (service, fd, addr) in sockets {
            let shared = shared.clone();
            let guard = guard.clone();
            let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
                std::thread::Builder::new()
                    .name(name)
                    .spawn(f)
                    .map_err(|e| EngineError::Worker {
                        worker: 0,
                        context: "spawning a thread",
                        source: e,
                    })
            };
            match &service.handler {
                Handler::Stream(factory) => {
                    let factory = factory.clone();
                    let listener = TcpListener::from(fd);
                    let protocol: Arc<str> = Arc::from(service.protocol.as_str());
                    threads.push(spawn(
                        format!("accept-{}", addr.port()),
                        Box::new(move || accept_loop(listener, factory, protocol, shared)),
                    )?);
                }
                Handler::StreamPerWorker(_) | Handler::Sharded(_) => {
                    return Err(crate::per_worker_refused(service))
                }
                Handler::Datagram(factory) => {
                    let factory = factory.clone();
                    let socket = UdpSocket::from(fd);
                    threads.push(spawn(
                        format!("udp-{}", addr.port()),
                        Box::new(move || udp_loop(socket, factory(), shared, guard)),
                    )?);
                }
            }
        }
        Ok(ThreadsServer {
            shared,
            services,
            threads,
        })
    }

    /// The services as bound.
    pub fn services(&self) -> &[BoundService] {
        &self.services
    }

    /// The counters (one set, shared by every thread).
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        vec![self.shared.stats.clone()]
    }

    /// Stops accepting, answers what was received, and closes, by the deadline.
    pub fn shutdown(&self) {
        if let Ok(mut deadline) = self.shared.deadline.lock() {
            deadline.get_or_insert(Instant::now() + self.shared.shutdown_deadline);
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// True once a service thread has stopped.
    pub fn any_thread_stopped(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Waits for the service threads (which wait for their connections).
    pub fn join(self) -> Result<(), EngineError> {
        for t in self.threads {
            t.join().map_err(|_| EngineError::WorkerPanicked(0))?;
        }
        Ok(())
    }
}

fn accept_loop(
    listener: TcpListener,
    factory: engine::StreamFactory,
    protocol: Arc<str>,
    shared: Arc<Shared>,
) {
    // Connection threads inherit this thread's CPUs.
    pin_to(&shared.cpus);
    // Non-blocking accept polled every tick, so shutdown is noticed.
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping.load(Ordering::SeqCst) {
        if shared.open.load(Ordering::SeqCst) >= shared.max_connections {
            std::thread::sleep(TICK); // at the limit: new connections wait in the backlog
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                shared.stats.connections_accepted.add_shared(1);
                shared.open.fetch_add(1, Ordering::SeqCst);
                let for_thread = shared.clone();
                // Sessions live on the thread that made them.
                let (factory, protocol) = (factory.clone(), protocol.clone());
                match std::thread::Builder::new().spawn(move || {
                    let session = factory(&SessionContext::new(stream.as_fd(), 0, &protocol));
                    serve(stream, session, &for_thread);
                    for_thread.open.fetch_sub(1, Ordering::SeqCst);
                    for_thread.stats.connections_closed.add_shared(1);
                }) {
                    Ok(handle) => connections.push(handle),
                    Err(_) => {
                        // Out of threads: the connection is dropped (closed), and counted.
                        shared.stats.accept_errors.add_shared(1);
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                connections.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(listener.as_raw_fd()),
            Err(_) => {
                shared.stats.accept_errors.add_shared(1);
                std::thread::sleep(TICK); // EMFILE and the like: retry later, do not spin
            }
        }
    }
    for handle in connections {
        let _ = handle.join();
    }
}

fn wait_readable(fd: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as i32) };
}

/// One connection, start to finish, on its own thread.
fn serve(mut stream: TcpStream, mut session: Box<dyn StreamSession>, shared: &Shared) {
    let stats = &shared.stats;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(TICK));
    let _ = stream.set_write_timeout(Some(TICK));
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut unread = Unread::default();
    session.on_open(&mut out);
    if write_out(&mut stream, &mut out, &mut *session, shared).is_err() {
        return;
    }
    let mut last_active = Instant::now();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            // Answer what the peer had already sent (what the kernel had
            // queued now), a chunk at a time, without waiting for more.
            let mut budget = engine::per_core::queued_input(stream.as_raw_fd());
            while budget > 0 {
                let want = budget.min(buf.len());
                let Ok(n) = stream.read(&mut buf[..want]) else {
                    break;
                };
                if n == 0 {
                    break;
                }
                budget -= n;
                let fed = take_read(
                    &mut stream,
                    &mut *session,
                    &mut unread,
                    &buf[..n],
                    &mut out,
                    shared,
                );
                if !matches!(fed, Ok(Next::Continue)) {
                    break;
                }
            }
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                session.on_eof(unread.as_slice(), &mut out);
                let _ = write_out(&mut stream, &mut out, &mut *session, shared);
                return; // the peer closed: nothing to linger for
            }
            Ok(n) => {
                last_active = Instant::now();
                let fed = take_read(
                    &mut stream,
                    &mut *session,
                    &mut unread,
                    &buf[..n],
                    &mut out,
                    shared,
                );
                match fed {
                    Ok(Next::Close) => break,
                    Ok(Next::Continue) => {}
                    Err(_) => {
                        stats.connection_errors.add_shared(1);
                        return;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if session.wants_ticks() {
                    let now = Instant::now();
                    let next = session.on_tick(now, now.duration_since(last_active), &mut out);
                    if write_out(&mut stream, &mut out, &mut *session, shared).is_err() {
                        return;
                    }
                    if next == Next::Close {
                        stats.idle_timeouts.add_shared(1);
                        break;
                    }
                }
            }
            Err(_) => {
                stats.connection_errors.add_shared(1);
                return;
            }
        }
    }
    // Our side is done: FIN after the last reply, then discard input until
    // the peer closes, so unread input cannot turn the close into a reset.
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    while Instant::now() < until && !shared.past_deadline() {
        match stream.read(&mut buf) {
            Ok(0) => break, // the peer closed too
            Ok(n) => stats.bytes_discarded.add_shared(n as u64),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

/// Counts a read of `bytes` and feeds it (after whatever `unread` held)
/// to the session, writing its replies as they come.
fn take_read(
    stream: &mut TcpStream,
    session: &mut dyn StreamSession,
    unread: &mut Unread,
    bytes: &[u8],
    out: &mut Vec<u8>,
    shared: &Shared,
) -> io::Result<Next> {
    shared.stats.bytes_in.add_shared(bytes.len() as u64);
    shared.stats.messages_in.add_shared(1);
    unread.feed_in_steps(session, bytes, out, STEP_ROOM, |s, out| {
        write_out(stream, out, s, shared)
    })
}

/// Writes `out` (and whatever long body the session still has) with
/// blocking writes, giving up past the shutdown deadline; `Close` when the
/// session asked to close while producing its body.
fn write_out(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    session: &mut dyn StreamSession,
    shared: &Shared,
) -> io::Result<Next> {
    let mut next = Next::Continue;
    loop {
        let mut written = 0;
        while written < out.len() {
            match stream.write(&out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    shared.stats.bytes_out.add_shared(n as u64);
                    shared.stats.messages_out.add_shared(1);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if shared.past_deadline() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        out.clear();
        if !session.has_more_output() {
            return Ok(next);
        }
        if session.on_drained(out) == Next::Close {
            next = Next::Close;
        }
    }
}

fn udp_loop(
    socket: UdpSocket,
    mut handler: Box<dyn DatagramHandler>,
    shared: Arc<Shared>,
    guard: engine::per_core::LoopGuard,
) {
    pin_to(&shared.cpus);
    let stats = &shared.stats;
    let _ = socket.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 65_536];
    let mut replies = Replies::new();
    // Several UDP services share these counters: each adds its own changes.
    let mut sessions = engine::per_core::SessionShare::default();
    while !shared.stopping.load(Ordering::SeqCst) {
        let (n, peer): (usize, SocketAddr) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(_) => continue, // timeout (shutdown check) or a passing error
        };
        stats.datagrams_in.add_shared(1);
        stats.bytes_in.add_shared(n as u64);
        if guard.refuses(peer) {
            stats.udp_loops_refused.add_shared(1);
            continue;
        }
        replies.clear();
        handler.on_datagram(Instant::now(), peer, &buf[..n], &mut replies);
        for reply in replies.iter() {
            match socket.send_to(reply, peer) {
                Ok(sent) => {
                    stats.datagrams_out.add_shared(1);
                    stats.bytes_out.add_shared(sent as u64);
                }
                Err(_) => stats.udp_replies_dropped.add_shared(1),
            }
        }
        sessions.publish(stats, handler.sessions());
    }
}
