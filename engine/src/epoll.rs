//! The epoll model: the engine's thread-per-core layout (one pinned worker
//! per CPU, its own SO_REUSEPORT sockets, nothing shared on the hot path)
//! with readiness I/O in place of io_uring. The same sessions, counters,
//! backpressure, lingering close, ticks and shutdown drain as the io_uring
//! worker; UDP uses GRO and GSO as the engine does. Only the I/O interface
//! differs, which is the point: the comparison isolates it.
//!
//! epoll (through mio) is edge-triggered: an event says "something changed",
//! so a worker reads until the socket is empty (a short read says so) and
//! remembers, per socket, whether it stopped early with data left. Sockets
//! left with data (a visit's budget spent, or output full) are revisited
//! without waiting, since no new edge will come for them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use protocols::{DatagramHandler, Next, Replies};

use crate::conn::Conn;
use crate::error::EngineError;
use crate::per_core::{CoreWorker, TcpService, WorkerParts, WorkerSettings};
use crate::slab::Slab;
use crate::stats::WorkerStats;
use crate::timers::Timers;
use crate::token::{Op, Token};
use crate::udp::{self, SendSlot};

/// Reads (or accepts, or datagrams) per socket per visit, so one busy
/// socket cannot starve the others; the rest waits for the next round.
const VISIT_BUDGET: usize = 32;
/// Readiness events taken per epoll_wait.
const EVENTS: usize = 1024;
/// Room for the control messages (the GRO segment size) of a received datagram.
const CONTROL_LEN: usize = 64;

/// A listening socket and whether it may have connections waiting.
struct Listener {
    service: TcpService,
    pending: bool,
}

/// A UDP socket, its protocol, and whether datagrams may be waiting.
struct DatagramSocket {
    fd: OwnedFd,
    handler: Box<dyn DatagramHandler>,
    pending: bool,
    /// Replies go out as GSO trains until the path refuses them.
    gso: bool,
}

/// A connection and whether its socket may hold unread input (an edge was
/// reported and the socket has not been read empty since).
struct EpollConn {
    conn: Conn,
    unread: bool,
    /// Not read because its output is over the bound (counted once per pause).
    paused: bool,
    /// epoll reported the peer's FIN: read until EOF even after a short
    /// read, since that edge has already been delivered.
    hung_up: bool,
}

/// One epoll worker and everything it owns.
pub struct EpollWorker {
    poll: Poll,
    events: Events,
    settings: WorkerSettings,
    stats: Arc<WorkerStats>,
    listeners: Vec<Listener>,
    udp: Vec<DatagramSocket>,
    conns: Slab<EpollConn>,
    /// The shutdown eventfd, in the epoll set; held so it stays open.
    _wake: OwnedFd,
    /// Receive buffer shared by every connection: idle connections hold none.
    scratch: Vec<u8>,
    /// Receive buffer for one datagram or GRO train, and its control data.
    datagram: Vec<u8>,
    control: [u8; CONTROL_LEN],
    replies: Replies,
    reply_lens: Vec<usize>,
    send_plan: Vec<udp::PlannedSend>,
    send_slot: Box<SendSlot>,
    /// Connections to visit again without waiting for an edge.
    revisit: Vec<(u32, u32)>,
    /// The last epoll_wait's events, decoded (reused: no allocation per wait).
    ready: Vec<(Token, Readiness)>,
    timers: Timers,
    /// The time this round's events are handled at.
    now: Instant,
}

/// What an event said of a socket, as far as reading goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Only that it can be written.
    Writable,
    /// That data arrived.
    Readable,
    /// That the peer closed its side, or the socket failed.
    HungUp,
}

fn token(op: Op, index: u32, generation: u32) -> mio::Token {
    mio::Token(Token::new(op, index, generation).encode() as usize)
}

impl CoreWorker for EpollWorker {
    type Ready = ();

    fn new(parts: WorkerParts) -> Result<(Self, ()), EngineError> {
        let WorkerParts {
            settings,
            stats,
            tcp,
            udp,
            wake,
        } = parts;
        let id = settings.id;
        let fail = |context: &'static str| {
            move |source: io::Error| EngineError::Worker {
                worker: id,
                context,
                source,
            }
        };
        let poll = Poll::new().map_err(fail("creating the epoll instance"))?;
        // The eventfd, the listeners and the UDP sockets are watched for
        // reading only; the sockets are made non-blocking first.
        let sockets = tcp
            .iter()
            .map(|t| &t.fd)
            .enumerate()
            .map(|(i, fd)| (fd, Op::Accept, i));
        let datagrams = udp
            .iter()
            .map(|u| &u.fd)
            .enumerate()
            .map(|(i, fd)| (fd, Op::UdpRecv, i));
        for (fd, op, i) in sockets.chain(datagrams) {
            set_nonblocking(fd).map_err(fail("preparing a socket"))?;
            poll.registry()
                .register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    token(op, i as u32, 0),
                    Interest::READABLE,
                )
                .map_err(fail("watching a socket"))?;
        }
        poll.registry()
            .register(
                &mut SourceFd(&wake.as_raw_fd()),
                token(Op::Wake, 0, 0),
                Interest::READABLE,
            )
            .map_err(fail("watching the shutdown eventfd"))?;
        let worker = EpollWorker {
            poll,
            events: Events::with_capacity(EVENTS),
            stats,
            // Listeners and UDP sockets start pending: anything that arrived
            // before registration is read on the first round.
            listeners: tcp
                .into_iter()
                .map(|service| Listener {
                    service,
                    pending: true,
                })
                .collect(),
            udp: udp
                .into_iter()
                .map(|service| DatagramSocket {
                    handler: (service.factory)(),
                    fd: service.fd,
                    pending: true,
                    gso: true,
                })
                .collect(),
            conns: Slab::default(),
            _wake: wake,
            scratch: vec![0; settings.tcp_buffers.1 as usize],
            datagram: vec![0; udp::MAX_PAYLOAD],
            control: [0; CONTROL_LEN],
            replies: Replies::new(),
            reply_lens: Vec::new(),
            send_plan: Vec::new(),
            send_slot: SendSlot::new(),
            revisit: Vec::new(),
            ready: Vec::with_capacity(EVENTS),
            timers: Timers::default(),
            now: Instant::now(),
            settings,
        };
        Ok((worker, ()))
    }

    fn run(mut self) -> Result<(), EngineError> {
        loop {
            let timeout = self.timeout();
            self.stats.epoll_waits.inc();
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(EngineError::Worker {
                        worker: self.settings.id,
                        context: "epoll_wait",
                        source,
                    })
                }
            }
            self.now = Instant::now();
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            ready.extend(self.events.iter().filter_map(|event| {
                let t = Token::decode(event.token().0 as u64)?;
                let readable = if event.is_read_closed() || event.is_error() {
                    Readiness::HungUp
                } else if event.is_readable() {
                    Readiness::Readable
                } else {
                    Readiness::Writable
                };
                Some((t, readable))
            }));
            self.stats.readiness_events.add(ready.len() as u64);
            for &(t, readable) in &ready {
                match t.op {
                    Op::Accept => self.listeners[t.index as usize].pending = true,
                    Op::UdpRecv => self.udp[t.index as usize].pending = true,
                    Op::Wake => self.begin_shutdown(),
                    Op::Recv => {
                        if let Some(c) = self.conns.get_mut(t.index, t.generation) {
                            // Readable (data, EOF or an error) wants a read;
                            // writable alone only a flush.
                            c.unread |= readable != Readiness::Writable;
                            c.hung_up |= readable == Readiness::HungUp;
                            self.progress(t.index, t.generation);
                        }
                    }
                    _ => {}
                }
            }
            self.ready = ready;
            for (index, generation) in std::mem::take(&mut self.revisit) {
                self.progress(index, generation);
            }
            self.after_batch();
            if self.finished() {
                return Ok(());
            }
        }
    }
}

impl EpollWorker {
    /// How long epoll_wait may block: not at all while work is left over,
    /// else until the nearest timer, or forever.
    fn timeout(&self) -> Option<Duration> {
        let draining = self.timers.draining();
        let accepting = !draining
            && self.timers.accept_retry_at.is_none()
            && self.conns.len() < self.settings.max_connections;
        let leftover = !self.revisit.is_empty()
            || (accepting && self.listeners.iter().any(|l| l.pending))
            || (!draining && self.udp.iter().any(|u| u.pending));
        if leftover {
            return Some(Duration::ZERO);
        }
        self.timers.next_wait()
    }

    // ----- connections -----

    /// Moves a connection forward after an edge (or a revisit): read what
    /// the output bound allows, send what it can, close when done.
    fn progress(&mut self, index: u32, generation: u32) {
        let limit = self.settings.output_limit;
        let draining = self.timers.draining();
        let Some(c) = self.conns.get_mut(index, generation) else {
            return;
        };
        let mut reads = 0;
        loop {
            let mut moved = false;
            while c.unread && c.conn.wants_input(draining, limit) && reads < VISIT_BUDGET {
                reads += 1;
                moved = true;
                read_once(c, &mut self.scratch, self.now, &self.stats);
            }
            if draining && !c.conn.read_done && !c.conn.failed {
                // Answer what the kernel had queued when shutdown began,
                // as fast as the output bound allows, then stop.
                c.conn.drain_received(&mut self.scratch, limit, &self.stats);
            }
            c.conn.refill_output(limit);
            moved |= flush(&mut c.conn, &self.stats);
            if c.conn.finish_sending() {
                // Input is now read and discarded until the peer closes.
                self.stats.io_syscalls.inc();
                self.timers.linger(self.now, index, generation);
                moved = true;
            }
            if !moved || reads >= VISIT_BUDGET {
                break;
            }
        }
        if c.conn.failed || (c.conn.peer_closed && c.conn.all_answered()) {
            // Closing the descriptor also takes it out of the epoll set.
            if c.conn.ticks {
                self.timers.unwatch_ticks();
            }
            self.conns.remove(index);
            self.stats.connections_closed.inc();
            return;
        }
        if c.unread && c.conn.wants_input(draining, limit) {
            // Budget spent with input left: no new edge will come for it.
            self.revisit.push((index, generation));
        }
        let paused = c.unread && !c.conn.read_done && !draining && c.conn.unsent() > limit;
        if paused && !c.paused {
            self.stats.backpressure_pauses.inc();
        }
        c.paused = paused;
    }

    fn accept(&mut self, i: usize) {
        let mut budget = VISIT_BUDGET;
        while self.listeners[i].pending && budget > 0 {
            if self.conns.len() >= self.settings.max_connections {
                return; // at the limit: new connections wait in the backlog
            }
            budget -= 1;
            let listener = self.listeners[i].service.fd.as_raw_fd();
            // SAFETY: plain syscall; no address is asked for.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            self.stats.io_syscalls.inc();
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => self.listeners[i].pending = false,
                    Some(libc::EINTR | libc::ECONNABORTED) => {}
                    _ => {
                        self.timers.accept_failed(self.settings.id, &e, &self.stats);
                        if self.timers.accept_retry_at.is_some() {
                            return;
                        }
                    }
                }
                continue;
            }
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            self.open(i, fd);
        }
    }

    fn open(&mut self, listener: usize, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let session = (self.listeners[listener].service.factory)();
        let mut conn = Conn::new(fd, session, self.now);
        // A protocol that speaks first (the bot's greeting) does it now.
        conn.session.on_open(&mut conn.pending);
        let ticks = conn.ticks;
        let (index, generation) = self.conns.insert(EpollConn {
            conn,
            unread: false,
            paused: false,
            hung_up: false,
        });
        // Both directions, edge-triggered, once: no epoll_ctl per send.
        let registered = self.poll.registry().register(
            &mut SourceFd(&raw),
            token(Op::Recv, index, generation),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            tracing::debug!("watching a connection: {e}");
            self.conns.remove(index);
            self.stats.accept_errors.inc();
            return;
        }
        self.stats.connections_accepted.inc();
        if ticks {
            self.timers.watch_ticks(self.now);
        }
        self.progress(index, generation);
    }

    /// Gives every time-keeping session its tick; ends those that say so.
    fn sweep_idle(&mut self) {
        let now = self.now;
        for index in 0..self.conns.capacity() {
            let Some(generation) = self.conns.generation_at(index) else {
                continue;
            };
            let Some(c) = self.conns.get_mut(index, generation) else {
                continue;
            };
            if c.conn.tick(now, &self.stats) {
                self.progress(index, generation);
            }
        }
    }

    // ----- UDP -----

    fn receive_datagrams(&mut self, i: usize) {
        for _ in 0..VISIT_BUDGET {
            if !self.udp[i].pending {
                return;
            }
            let mut name: libc::sockaddr_storage =
                // SAFETY: plain old data; all-zero is a valid value.
                unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: self.datagram.as_mut_ptr().cast(),
                iov_len: self.datagram.len(),
            };
            // SAFETY: plain old data; all-zero is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = self.control.as_mut_ptr().cast();
            msg.msg_controllen = CONTROL_LEN;
            // SAFETY: every pointer in `msg` refers to a live buffer of the
            // length given, owned by this worker for the whole call.
            let n = unsafe { libc::recvmsg(self.udp[i].fd.as_raw_fd(), &mut msg, 0) };
            self.stats.io_syscalls.inc();
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.udp[i].pending = false;
                } else {
                    tracing::debug!("udp recvmsg: {e}");
                }
                continue;
            }
            let payload = &self.datagram[..n as usize];
            // SAFETY: the kernel wrote `msg_namelen` bytes of address into `name`.
            let name_bytes = unsafe {
                std::slice::from_raw_parts(
                    (&name as *const libc::sockaddr_storage).cast::<u8>(),
                    msg.msg_namelen as usize,
                )
            };
            let Some(peer) = udp::sockaddr_from_bytes(name_bytes) else {
                continue;
            };
            let control = &self.control[..msg.msg_controllen.min(CONTROL_LEN)];
            let received = udp::Received {
                peer: Some(peer),
                payload,
                segment: udp::gro_segment(control)
                    .filter(|&s| s > 0)
                    .unwrap_or(payload.len()),
                truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            };
            let handler = &mut *self.udp[i].handler;
            udp::deliver(
                &received,
                peer,
                handler,
                self.now,
                &mut self.replies,
                &self.stats,
            );
            self.send_replies(i, peer);
            self.replies.clear();
        }
        let sessions = self.udp[i].handler.sessions();
        self.stats.publish_sessions(sessions);
    }

    /// Sends `self.replies` to `peer` at once, equal-sized runs as GSO trains.
    fn send_replies(&mut self, i: usize, peer: std::net::SocketAddr) {
        self.reply_lens.clear();
        self.reply_lens.extend(self.replies.iter().map(<[u8]>::len));
        udp::plan_sends(&self.reply_lens, self.udp[i].gso, &mut self.send_plan);
        for &(first, count, size) in &self.send_plan {
            let gso = (count > 1).then_some(size as u16);
            self.send_slot.fill(&self.replies, first, count);
            let result = udp::send_now(self.udp[i].fd.as_raw_fd(), &mut self.send_slot, peer, gso);
            self.stats.io_syscalls.inc();
            if udp::count_send(&self.stats, self.send_slot.segments, result) {
                self.udp[i].gso = false; // the path refused GSO
            }
        }
    }

    // ----- timers, accepting and shutdown -----

    fn after_batch(&mut self) {
        let now = self.now;
        if self.timers.sweep_due(now) {
            self.sweep_idle();
        }
        while let Some((index, generation)) = self.timers.expired_linger(now) {
            if let Some(c) = self.conns.get_mut(index, generation) {
                // The peer never closed: close without waiting any longer.
                c.conn.failed = true;
                self.progress(index, generation);
            }
        }
        let accept_paused = self.timers.accept_paused(now);
        if self.timers.draining() {
            return;
        }
        if !accept_paused {
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
        for i in 0..self.udp.len() {
            self.receive_datagrams(i);
        }
    }

    fn begin_shutdown(&mut self) {
        if self.timers.draining() {
            return;
        }
        self.timers.drain_deadline = Some(self.now + self.settings.shutdown_deadline);
        for index in 0..self.conns.capacity() {
            if let Some(generation) = self.conns.generation_at(index) {
                self.progress(index, generation);
            }
        }
    }

    fn finished(&mut self) -> bool {
        let Some(deadline) = self.timers.drain_deadline else {
            return false;
        };
        if !self.conns.is_empty() && Instant::now() >= deadline {
            tracing::warn!(
                worker = self.settings.id,
                "shutdown deadline passed with {} connection(s) still flushing; closing them",
                self.conns.len()
            );
            return true;
        }
        self.conns.is_empty()
    }
}

/// One non-blocking read into `scratch`, handed to the session (or
/// discarded while lingering). A short read means the socket is empty.
fn read_once(c: &mut EpollConn, scratch: &mut [u8], now: Instant, stats: &WorkerStats) {
    let conn = &mut c.conn;
    // SAFETY: `scratch` is a live, writable buffer of `scratch.len()` bytes.
    let n = unsafe {
        libc::recv(
            conn.fd.as_raw_fd(),
            scratch.as_mut_ptr().cast(),
            scratch.len(),
            0,
        )
    };
    stats.io_syscalls.inc();
    match n {
        n if n > 0 => {
            let data = &scratch[..n as usize];
            if (n as usize) < scratch.len() && !c.hung_up {
                c.unread = false; // read empty: the next arrival brings a new edge
            }
            conn.last_active = now;
            if conn.read_done {
                stats.bytes_discarded.add(data.len() as u64);
                return;
            }
            stats.bytes_in.add(data.len() as u64);
            stats.messages_in.inc();
            if conn.session.on_bytes(data, &mut conn.pending) == Next::Close {
                conn.read_done = true;
            }
        }
        0 => {
            c.unread = false;
            if !conn.read_done {
                conn.session.on_eof(&mut conn.pending);
            }
            conn.read_done = true;
            conn.peer_closed = true;
        }
        _ => {
            c.unread = false;
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                conn.failed = true;
                stats.connection_errors.inc();
            }
        }
    }
}

/// Sends queued output until it is all sent or the socket is full (the
/// writable edge resumes it). True when anything was sent.
fn flush(conn: &mut Conn, stats: &WorkerStats) -> bool {
    if conn.failed {
        conn.pending.clear();
        return false;
    }
    let mut moved = false;
    while conn.next_send() {
        let remaining = &conn.sending[conn.sent..];
        // SAFETY: `remaining` is a live buffer of the length given.
        let n = unsafe {
            libc::send(
                conn.fd.as_raw_fd(),
                remaining.as_ptr().cast(),
                remaining.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        stats.io_syscalls.inc();
        if n < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                conn.failed = true;
                conn.pending.clear();
                stats.connection_errors.inc();
            }
            break;
        }
        conn.sent += n as usize;
        stats.bytes_out.add(n as u64);
        stats.messages_out.inc();
        moved = true;
    }
    moved
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    socket2::SockRef::from(fd).set_nonblocking(true)
}
