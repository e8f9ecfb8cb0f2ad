//! What most Rust users would pick, for comparison: tokio's multi-threaded
//! work-stealing runtime, one task per connection and one per UDP service,
//! serving the same protocols through the same sessions and counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocols::{DatagramHandler, Next, Replies, StreamSession, Unread, STEP_ROOM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use engine::BoundService;
use engine::EngineError;
use engine::WorkerStats;
use engine::{EngineConfig, Handler, SessionContext, StreamFactory};
use std::os::fd::AsFd;

const TICK: Duration = Duration::from_millis(100);
const LINGER: Duration = Duration::from_secs(2);

struct Shared {
    stats: Arc<WorkerStats>,
    open: AtomicUsize,
    max_connections: usize,
}

/// A running tokio server.
pub struct TokioServer {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    services: Vec<BoundService>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    shutdown_deadline: Duration,
    workers: usize,
}

fn worker_error(context: &'static str) -> impl Fn(std::io::Error) -> EngineError {
    move |source| EngineError::Worker {
        worker: 0,
        context,
        source,
    }
}

impl TokioServer {
    /// Starts the runtime (one worker thread per configured CPU) and binds
    /// every service (one socket each).
    pub fn start(config: EngineConfig) -> Result<TokioServer, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        let workers = config.cpus.len();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .thread_name("ringcore-tokio")
            .build()
            .map_err(worker_error("starting the tokio runtime"))?;
        let shared = Arc::new(Shared {
            stats: Arc::new(WorkerStats::default()),
            open: AtomicUsize::new(0),
            max_connections: config.max_connections,
        });
        let (stop, _) = watch::channel(false);
        let mut services = Vec::new();
        let mut tasks = Vec::new();
        let _guard = runtime.enter();
        let mut sockets = Vec::new();
        for service in &config.services {
            let (mut bound, addr) = engine::per_core::bind_group(service, 1, false)?;
            services.push(BoundService {
                transport: service.transport(),
                addr,
                protocol: service.protocol.clone(),
            });
            sockets.push((service, bound.remove(0)));
        }
        let guard = engine::per_core::LoopGuard::for_services(&services);
        for (service, fd) in sockets {
            let shared = shared.clone();
            let stop = stop.subscribe();
            match &service.handler {
                Handler::Stream(factory) => {
                    let std_listener = std::net::TcpListener::from(fd);
                    std_listener
                        .set_nonblocking(true)
                        .map_err(worker_error("preparing a listener"))?;
                    let listener = TcpListener::from_std(std_listener)
                        .map_err(worker_error("preparing a listener"))?;
                    let protocol: Arc<str> = Arc::from(service.protocol.as_str());
                    tasks.push(runtime.spawn(accept_loop(
                        listener,
                        factory.clone(),
                        protocol,
                        shared,
                        stop,
                    )));
                }
                Handler::StreamPerWorker(_) | Handler::Sharded(_) => {
                    return Err(crate::per_worker_refused(service))
                }
                Handler::Datagram(factory) => {
                    let std_socket = std::net::UdpSocket::from(fd);
                    std_socket
                        .set_nonblocking(true)
                        .map_err(worker_error("preparing a UDP socket"))?;
                    let socket = UdpSocket::from_std(std_socket)
                        .map_err(worker_error("preparing a UDP socket"))?;
                    let guard = guard.clone();
                    tasks.push(runtime.spawn(udp_loop(socket, factory(), shared, stop, guard)));
                }
            }
        }
        drop(_guard);
        Ok(TokioServer {
            runtime,
            shared,
            services,
            tasks,
            stop,
            shutdown_deadline: config.shutdown_deadline,
            workers,
        })
    }

    /// The services as bound.
    pub fn services(&self) -> &[BoundService] {
        &self.services
    }

    /// The counters (one set, shared by every task).
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        vec![self.shared.stats.clone()]
    }

    /// The runtime's worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Starts graceful shutdown.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// True once a service task has stopped.
    pub fn any_task_stopped(&self) -> bool {
        self.tasks.iter().any(|t| t.is_finished())
    }

    /// Waits for the services, then for open connections up to the deadline.
    pub fn join(self) -> Result<(), EngineError> {
        let deadline = Instant::now() + self.shutdown_deadline;
        let shared = self.shared.clone();
        self.runtime.block_on(async move {
            for t in self.tasks {
                let _ = t.await;
            }
            while shared.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        self.runtime.shutdown_timeout(Duration::ZERO);
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    factory: StreamFactory,
    protocol: Arc<str>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if shared.open.load(Ordering::SeqCst) >= shared.max_connections {
            // At the limit the backlog holds new ones; shutdown still counts.
            tokio::select! {
                _ = tokio::time::sleep(TICK) => continue,
                _ = stop.changed() => return,
            }
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.stats.connections_accepted.add_shared(1);
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    let (factory, shared, stop) = (factory.clone(), shared.clone(), stop.clone());
                    let session = factory(&SessionContext::new(stream.as_fd(), 0, &protocol));
                    tokio::spawn(async move {
                        serve(stream, session, &shared, stop).await;
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                        shared.stats.connections_closed.add_shared(1);
                    });
                }
                Err(_) => {
                    shared.stats.accept_errors.add_shared(1);
                    tokio::time::sleep(TICK).await; // EMFILE and the like: retry later
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    mut session: Box<dyn StreamSession + Send>,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) {
    let stats = &shared.stats;
    let _ = stream.set_nodelay(true);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut unread = Unread::default();
    session.on_open(&mut out);
    if write_out(&mut stream, &mut out, &mut *session, stats)
        .await
        .is_err()
    {
        return;
    }
    let mut last_active = Instant::now();
    let ticks = session.wants_ticks();
    loop {
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = tokio::time::sleep(TICK), if ticks => {
                let now = Instant::now();
                let next = session.on_tick(now, now.duration_since(last_active), &mut out);
                if write_out(&mut stream, &mut out, &mut *session, stats).await.is_err() {
                    return;
                }
                if next == Next::Close {
                    stats.idle_timeouts.add_shared(1);
                    break;
                }
                continue;
            }
            _ = stop.changed() => {
                // Answer what the peer had already sent (what the kernel had
                // queued now), a chunk at a time, without waiting for more.
                let mut budget = engine::per_core::queued_input(std::os::fd::AsRawFd::as_raw_fd(&stream));
                while budget > 0 {
                    let want = budget.min(buf.len());
                    // The kernel holds these bytes, so this read does not
                    // wait for the peer; try_read would give up whenever
                    // the reactor had not seen their edge yet.
                    let Ok(n) = stream.read(&mut buf[..want]).await else { break };
                    if n == 0 {
                        break;
                    }
                    budget -= n;
                    stats.bytes_in.add_shared(n as u64);
                    stats.messages_in.add_shared(1);
                    let fed = feed(&mut stream, &mut *session, &mut unread, &buf[..n], &mut out, stats).await;
                    if !matches!(fed, Ok(Next::Continue)) {
                        break;
                    }
                }
                break;
            }
        };
        match read {
            Ok(0) => {
                session.on_eof(unread.as_slice(), &mut out);
                let _ = write_out(&mut stream, &mut out, &mut *session, stats).await;
                return;
            }
            Ok(n) => {
                last_active = Instant::now();
                stats.bytes_in.add_shared(n as u64);
                stats.messages_in.add_shared(1);
                match feed(
                    &mut stream,
                    &mut *session,
                    &mut unread,
                    &buf[..n],
                    &mut out,
                    stats,
                )
                .await
                {
                    Ok(Next::Close) => break,
                    Ok(Next::Continue) => {}
                    Err(_) => {
                        stats.connection_errors.add_shared(1);
                        return;
                    }
                }
            }
            Err(_) => {
                stats.connection_errors.add_shared(1);
                return;
            }
        }
    }
    // FIN after the last reply, then discard input until the peer closes.
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            stats.bytes_discarded.add_shared(n as u64);
        }
    })
    .await;
}

/// Feeds `fresh` (after whatever `unread` held) in steps of bounded
/// output, writing each step (and any long body) before the next, and
/// keeps what the session leaves untaken, as `Unread::feed_in_steps` does
/// for blocking writers.
async fn feed(
    stream: &mut TcpStream,
    session: &mut (dyn StreamSession + Send),
    unread: &mut Unread,
    fresh: &[u8],
    out: &mut Vec<u8>,
    stats: &WorkerStats,
) -> std::io::Result<Next> {
    let Some(mut input) = unread.offer(fresh) else {
        return Ok(Next::Continue);
    };
    loop {
        let fed = session.on_input(input, out, STEP_ROOM);
        input = &input[fed.consumed.min(input.len())..];
        let busy = session.has_more_output();
        let after = write_out(stream, out, session, stats).await?;
        if fed.next == Next::Close || after == Next::Close {
            return Ok(Next::Close);
        }
        if input.is_empty() || (fed.consumed == 0 && !busy) {
            break;
        }
    }
    let untaken = input.len();
    if unread.keep(session, fresh, untaken, out) == Next::Close {
        write_out(stream, out, session, stats).await?;
        return Ok(Next::Close);
    }
    Ok(Next::Continue)
}

async fn write_out(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    session: &mut (dyn StreamSession + Send),
    stats: &WorkerStats,
) -> std::io::Result<Next> {
    let mut next = Next::Continue;
    loop {
        if !out.is_empty() {
            stream.write_all(out).await?;
            stats.bytes_out.add_shared(out.len() as u64);
            stats.messages_out.add_shared(1);
            out.clear();
        }
        if !session.has_more_output() {
            return Ok(next);
        }
        if session.on_drained(out) == Next::Close {
            next = Next::Close;
        }
    }
}

async fn udp_loop(
    socket: UdpSocket,
    mut handler: Box<dyn DatagramHandler>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    guard: engine::per_core::LoopGuard,
) {
    let stats = &shared.stats;
    let mut buf = vec![0u8; 65_536];
    let mut replies = Replies::new();
    // Several UDP services share these counters: each adds its own changes.
    let mut sessions = engine::per_core::SessionShare::default();
    loop {
        let (n, peer): (usize, SocketAddr) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(got) => got,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
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
            match socket.send_to(reply, peer).await {
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
