//! `--io tokio-uring`, a comparison baseline only: the tokio-uring crate
//! (unmaintained; it pins io-uring 0.6 and socket2 0.4, which is why it
//! lives here in the server binary and never in the engine) on the engine's
//! thread-per-core layout. Each pinned worker runs its own tokio-uring
//! runtime (a current-thread tokio runtime driving one io_uring) over its own
//! SO_REUSEPORT sockets, with a task per connection and per UDP socket,
//! serving the same sessions with the same counters.
//!
//! What it shows: io_uring through a general-purpose async runtime (owned
//! buffers, one read or write operation per await, no multishot receives and
//! no provided buffers) rather than through an engine built around the ring.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::per_core::{CoreWorker, TcpService, UdpService, WorkerParts};
use engine::{EngineError, WorkerStats};
use protocols::{DatagramHandler, Next, Replies, StreamSession, Unread, STEP_ROOM};
use tokio::sync::watch;
use tokio_uring::net::{TcpListener, TcpStream, UdpSocket};

const TICK: Duration = Duration::from_millis(100);
const LINGER: Duration = Duration::from_secs(2);
const READ_BUFFER: usize = 16 * 1024;

/// One worker: its tokio-uring runtime and what it serves.
pub struct TokioUringWorker {
    runtime: tokio_uring::Runtime,
    parts: WorkerParts,
}

/// What every task of one worker shares (one thread: no atomics needed
/// beyond the counters' own).
struct Shared {
    stats: Arc<WorkerStats>,
    open: Cell<usize>,
    max_connections: usize,
    stop: watch::Receiver<bool>,
}

impl CoreWorker for TokioUringWorker {
    type Ready = ();

    fn new(parts: WorkerParts) -> Result<(Self, ()), EngineError> {
        let mut builder = tokio_uring::builder();
        builder.entries(parts.settings.ring_entries);
        let runtime = tokio_uring::Runtime::new(&builder).map_err(|source| {
            EngineError::UringUnavailable(format!(
                "tokio-uring could not set up its ring on worker {}: {source}",
                parts.settings.id
            ))
        })?;
        Ok((TokioUringWorker { runtime, parts }, ()))
    }

    fn run(self) -> Result<(), EngineError> {
        let TokioUringWorker { runtime, parts } = self;
        runtime.block_on(serve(parts))
    }
}

async fn serve(parts: WorkerParts) -> Result<(), EngineError> {
    let WorkerParts {
        settings,
        stats,
        tcp,
        udp,
        wake,
        ..
    } = parts;
    let (stop_tx, stop) = watch::channel(false);
    let shared = Rc::new(Shared {
        stats,
        open: Cell::new(0),
        max_connections: settings.max_connections,
        stop,
    });
    let mut services = Vec::new();
    for service in tcp {
        let worker = settings.id;
        services.push(tokio_uring::spawn(accept_loop(
            service,
            worker,
            shared.clone(),
        )));
    }
    for service in udp {
        let guard = settings.loop_guard.clone();
        services.push(tokio_uring::spawn(udp_loop(service, shared.clone(), guard)));
    }
    let woken = wait_for_wake(wake).await;
    let _ = stop_tx.send(true);
    for service in services {
        let _ = service.await;
    }
    // Connections answer what they had received, then close, by the deadline.
    let deadline = Instant::now() + settings.shutdown_deadline;
    while shared.open.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    woken.map_err(|source| EngineError::Worker {
        worker: settings.id,
        context: "reading the shutdown eventfd",
        source,
    })
}

/// Waits until the shutdown eventfd is written, with an io_uring read.
async fn wait_for_wake(wake: OwnedFd) -> std::io::Result<()> {
    let file = tokio_uring::fs::File::from_std(std::fs::File::from(wake));
    let (result, _) = file.read_at(vec![0u8; 8], 0).await;
    result.map(|_| ())
}

async fn accept_loop(service: TcpService, worker: usize, shared: Rc<Shared>) {
    let (fd, mut sessions) = service.on_worker(worker, Some(shared.stats.clone()));
    let listener = TcpListener::from_std(std::net::TcpListener::from(fd));
    let mut stop = shared.stop.clone();
    loop {
        if shared.open.get() >= shared.max_connections {
            // At the limit the backlog holds new ones; shutdown still counts.
            tokio::select! {
                _ = tokio::time::sleep(TICK) => continue,
                _ = stop.changed() => return,
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                shared.stats.connections_accepted.inc();
                shared.open.set(shared.open.get() + 1);
                let shared = shared.clone();
                // SAFETY: the stream owns the descriptor for this borrow's life.
                let session = sessions.open(unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) });
                tokio_uring::spawn(async move {
                    serve_connection(stream, session, &shared).await;
                    shared.open.set(shared.open.get() - 1);
                    shared.stats.connections_closed.inc();
                });
            }
            Err(_) => {
                shared.stats.accept_errors.inc();
                tokio::time::sleep(TICK).await; // EMFILE and the like: retry later
            }
        }
    }
}

/// What one wait on a connection brought.
enum Woke {
    Read(std::io::Result<usize>, Vec<u8>),
    Tick,
    Stop,
}

async fn serve_connection(stream: TcpStream, mut session: Box<dyn StreamSession>, shared: &Shared) {
    let stats = &shared.stats;
    let _ = stream.set_nodelay(true);
    let mut stop = shared.stop.clone();
    let mut out = Vec::new();
    let mut unread = Unread::default();
    session.on_open(&mut out);
    let Ok((next, spare)) = write_out(&stream, out, &mut *session, stats).await else {
        return;
    };
    out = spare;
    let mut last_active = Instant::now();
    let ticks = session.wants_ticks();
    // One read is always in flight and never dropped while data matters:
    // tokio-uring does not cancel a dropped operation, so a dropped read
    // would still take the peer's next bytes and lose them.
    let mut reading = Box::pin(stream.read(vec![0u8; READ_BUFFER]));
    let mut next_step = next;
    while next_step == Next::Continue {
        let woke = tokio::select! {
            (result, buf) = &mut reading => Woke::Read(result, buf),
            _ = tokio::time::sleep(TICK), if ticks => Woke::Tick,
            _ = stop.changed() => Woke::Stop,
        };
        let next = match woke {
            Woke::Read(Ok(0), _) => {
                session.on_eof(unread.as_slice(), &mut out);
                let _ = write_out(&stream, out, &mut *session, stats).await;
                return; // the peer closed: nothing to linger for
            }
            Woke::Read(Ok(n), buf) => {
                last_active = Instant::now();
                stats.bytes_in.add(n as u64);
                stats.messages_in.inc();
                let fed = feed(&stream, &mut *session, &mut unread, &buf[..n], out, stats).await;
                reading.set(stream.read(buf));
                let Ok((next, spare)) = fed else {
                    stats.connection_errors.inc();
                    return;
                };
                out = spare;
                next
            }
            Woke::Read(Err(_), _) => {
                stats.connection_errors.inc();
                return;
            }
            Woke::Tick => {
                let now = Instant::now();
                let next = session.on_tick(now, now.duration_since(last_active), &mut out);
                if next == Next::Close {
                    stats.idle_timeouts.inc();
                }
                next
            }
            Woke::Stop => {
                // Answer what the peer had already sent (what the kernel had
                // queued now): the read in flight takes it, chunk by chunk.
                let mut budget = engine::per_core::queued_input(stream.as_raw_fd());
                while budget > 0 {
                    let (result, buf) = (&mut reading).await;
                    let n = match result {
                        Ok(n) if n > 0 => n,
                        _ => break,
                    };
                    budget = budget.saturating_sub(n);
                    stats.bytes_in.add(n as u64);
                    stats.messages_in.inc();
                    let fed =
                        feed(&stream, &mut *session, &mut unread, &buf[..n], out, stats).await;
                    reading.set(stream.read(buf));
                    match fed {
                        Ok((Next::Continue, spare)) => out = spare,
                        _ => break,
                    }
                }
                break;
            }
        };
        match write_out(&stream, out, &mut *session, stats).await {
            Ok((after, spare)) => {
                out = spare;
                next_step = if after == Next::Close { after } else { next };
            }
            Err(_) => {
                stats.connection_errors.inc();
                return;
            }
        }
    }
    drop(reading); // only discarded input can reach it now
    finish(stream, stats).await;
}

/// FIN after the last reply, then discard input until the peer closes, so
/// unread input cannot turn the close into a reset that destroys replies.
async fn finish(stream: TcpStream, stats: &WorkerStats) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let (result, back) = stream.read(buf).await;
            buf = back;
            match result {
                Ok(n) if n > 0 => stats.bytes_discarded.add(n as u64),
                _ => break,
            }
        }
    })
    .await;
}

/// Feeds `fresh` (after whatever `unread` held) in steps of bounded
/// output, writing each step (and any long body) before the next, and
/// keeps what the session leaves untaken, as `Unread::feed_in_steps` does
/// for blocking writers; gives `out` back for reuse.
async fn feed(
    stream: &TcpStream,
    session: &mut dyn StreamSession,
    unread: &mut Unread,
    fresh: &[u8],
    mut out: Vec<u8>,
    stats: &WorkerStats,
) -> std::io::Result<(Next, Vec<u8>)> {
    let Some(mut input) = unread.offer(fresh) else {
        return Ok((Next::Continue, out));
    };
    loop {
        let fed = session.on_input(input, &mut out, STEP_ROOM);
        input = &input[fed.consumed.min(input.len())..];
        let busy = session.has_more_output();
        let (after, spare) = write_out(stream, out, session, stats).await?;
        out = spare;
        if fed.next == Next::Close || after == Next::Close {
            return Ok((Next::Close, out));
        }
        if input.is_empty() || (fed.consumed == 0 && !busy) {
            break;
        }
    }
    let untaken = input.len();
    if unread.keep(session, fresh, untaken, &mut out) == Next::Close {
        let (_, spare) = write_out(stream, out, session, stats).await?;
        return Ok((Next::Close, spare));
    }
    Ok((Next::Continue, out))
}

/// Writes `out` and whatever long body the session still has; returns the
/// emptied buffer for reuse, and `Close` when the session asked to close
/// while producing its body.
async fn write_out(
    stream: &TcpStream,
    mut out: Vec<u8>,
    session: &mut dyn StreamSession,
    stats: &WorkerStats,
) -> std::io::Result<(Next, Vec<u8>)> {
    let mut next = Next::Continue;
    loop {
        if !out.is_empty() {
            let len = out.len() as u64;
            let (result, back) = stream.write_all(out).await;
            result?;
            out = back;
            stats.bytes_out.add(len);
            stats.messages_out.inc();
            out.clear();
        }
        if !session.has_more_output() {
            return Ok((next, out));
        }
        if session.on_drained(&mut out) == Next::Close {
            next = Next::Close;
        }
    }
}

async fn udp_loop(service: UdpService, shared: Rc<Shared>, guard: engine::per_core::LoopGuard) {
    let stats = &shared.stats;
    let mut handler: Box<dyn DatagramHandler> = (service.factory)();
    let socket = UdpSocket::from_std(std::net::UdpSocket::from(service.fd));
    let mut stop = shared.stop.clone();
    let mut buf = vec![0u8; 65_536];
    let mut replies = Replies::new();
    // Several UDP services share these counters: each adds its own changes.
    let mut sessions = engine::per_core::SessionShare::default();
    let mut reply = Vec::new();
    loop {
        let (result, back) = tokio::select! {
            r = socket.recv_from(std::mem::take(&mut buf)) => r,
            _ = stop.changed() => return,
        };
        buf = back;
        let (n, peer): (usize, SocketAddr) = match result {
            Ok(got) => got,
            Err(_) => continue,
        };
        stats.datagrams_in.inc();
        stats.bytes_in.add(n as u64);
        if guard.refuses(peer) {
            stats.udp_loops_refused.inc();
            continue;
        }
        replies.clear();
        handler.on_datagram(Instant::now(), peer, &buf[..n], &mut replies);
        for r in replies.iter() {
            reply.clear();
            reply.extend_from_slice(r);
            let (result, back) = socket.send_to(std::mem::take(&mut reply), peer).await;
            reply = back;
            match result {
                Ok(sent) => {
                    stats.datagrams_out.inc();
                    stats.bytes_out.add(sent as u64);
                }
                Err(_) => stats.udp_replies_dropped.inc(),
            }
        }
        sessions.publish(stats, handler.sessions());
    }
}

/// Checks the configuration and starts the tokio-uring workers.
pub fn start(config: engine::EngineConfig) -> Result<engine::PerCore, EngineError> {
    config.validate().map_err(EngineError::Config)?;
    // Plain datagrams: tokio-uring's recv_from does not split GRO trains.
    let (core, ()) = engine::PerCore::start::<TokioUringWorker>(&config, false)?;
    Ok(core)
}
