//! The epoll model: the engine's thread-per-core layout (one pinned worker
//! per CPU, its own SO_REUSEPORT sockets, nothing shared on the hot path)
//! with readiness I/O in place of io_uring. Connections run on the same
//! core ([`crate::connection`]) as the io_uring worker's, so the sessions,
//! counters and every bound are the same; UDP uses GRO and GSO as the
//! engine does. Only the I/O interface differs, which is the point: the
//! comparison isolates it.
//!
//! epoll is used directly (no wrapper crate), edge-triggered: an event says
//! "something changed", so a worker reads until the socket is empty (a short read says so) and
//! remembers, per socket, whether it stopped early with data left. Sockets
//! left with data (a visit's budget spent, or output full) are revisited
//! without waiting, since no new edge will come for them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use kernel_io::epoll::Epoll;
use protocols::DatagramHandler;

use crate::connection::{Action, Connection, Env};
use crate::conns::Tracked;
use crate::error::EngineError;
use crate::lifecycle::{self, WorkerCore};
use crate::mesh::{MeshShared, Parcel};
use crate::per_core::{CoreWorker, OpenedParts, Sessions, WorkerParts, WorkerSettings};
use crate::token::{Op, Token};
use crate::udp::{self, Answering, SendSlot};
use std::sync::mpsc::Receiver;

/// Reads (or accepts, or datagrams) per socket per visit, so one busy
/// socket cannot starve the others; the rest waits for the next round.
const VISIT_BUDGET: usize = 32;
/// Readiness events taken per epoll_wait.
const EVENTS: usize = 1024;
/// Room for the control messages (the GRO segment size) of a received datagram.
const CONTROL_LEN: usize = 64;

/// A listening socket and whether it may have connections waiting.
struct Listener {
    fd: OwnedFd,
    sessions: Sessions,
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

/// What epoll last said of a connection's socket.
pub(crate) struct Readiness {
    /// The socket may hold unread input (an edge was reported and it has
    /// not been read empty since).
    unread: bool,
    /// epoll reported the peer's FIN: read until EOF even after a short
    /// read, since that edge has already been delivered.
    hung_up: bool,
    /// The socket can take more output (no EAGAIN since the last edge).
    writable: bool,
    /// The core wants input read.
    receiving: bool,
}

/// One epoll worker and everything it owns.
pub struct EpollWorker {
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
    settings: WorkerSettings,
    /// The connections and what every worker decides about them, shared
    /// with the other driver ([`lifecycle`]).
    core: WorkerCore<Readiness>,
    listeners: Vec<Listener>,
    udp: Vec<DatagramSocket>,
    /// The shutdown eventfd, in the epoll set; held so it stays open.
    _wake: OwnedFd,
    /// Receive buffer shared by every connection: idle connections hold none.
    scratch: Vec<u8>,
    /// Receive buffer for one datagram or GRO train, and its control data.
    datagram: Vec<u8>,
    control: [u8; CONTROL_LEN],
    /// Hands datagrams to their handlers and plans the replies.
    answering: Answering,
    send_slot: Box<SendSlot>,
    single_slot: Box<SendSlot>,
    /// Connections to visit again without waiting for an edge.
    revisit: Vec<(u32, u32)>,
    /// Parcels from each other worker (sharded services only).
    mailbox: Vec<Receiver<Parcel>>,
}

impl CoreWorker for EpollWorker {
    type Ready = ();
    const MESSAGES: Option<bool> = Some(false);

    fn new(parts: WorkerParts) -> Result<(Self, ()), EngineError> {
        let OpenedParts {
            settings,
            stats,
            tcp,
            udp,
            wake,
            mesh,
        } = parts.open();
        let id = settings.id;
        let fail = |context| EngineError::in_worker(id, context);
        let epoll = Epoll::new().map_err(fail("creating the epoll instance"))?;
        // The eventfd, the listeners and the UDP sockets are watched for
        // reading only; the sockets are made non-blocking first.
        let sockets = tcp
            .iter()
            .map(|(fd, _)| fd)
            .enumerate()
            .map(|(i, fd)| (fd, Op::Accept, i));
        let datagrams = udp
            .iter()
            .map(|u| &u.fd)
            .enumerate()
            .map(|(i, fd)| (fd, Op::UdpRecv, i));
        for (fd, op, i) in sockets.chain(datagrams) {
            set_nonblocking(fd).map_err(fail("preparing a socket"))?;
            epoll
                .add(
                    fd.as_raw_fd(),
                    Token::new(op, i as u32, 0),
                    libc::EPOLLIN as u32,
                )
                .map_err(fail("watching a socket"))?;
        }
        epoll
            .add(
                wake.as_raw_fd(),
                Token::new(Op::Wake, 0, 0),
                libc::EPOLLIN as u32,
            )
            .map_err(fail("watching the shutdown eventfd"))?;
        let inbox = mesh.as_ref().and_then(|m| m.shared.inbox(id));
        if let Some(inbox) = inbox {
            epoll
                .add(
                    inbox.bell.as_raw_fd(),
                    Token::new(Op::Mesh, 0, 0),
                    libc::EPOLLIN as u32,
                )
                .map_err(fail("watching the message bell"))?;
        }
        let mailbox = inbox
            .map(|inbox| inbox.take_receivers())
            .unwrap_or_default();
        let listeners: Vec<Listener> = tcp
            .into_iter()
            .map(|(fd, sessions)| Listener {
                fd,
                sessions,
                pending: true,
            })
            .collect();
        let worker = EpollWorker {
            epoll,
            events: Vec::with_capacity(EVENTS),
            // Listeners and UDP sockets start pending: anything that arrived
            // before registration is read on the first round.
            listeners,
            udp: udp
                .into_iter()
                .map(|service| DatagramSocket {
                    handler: (service.factory)(),
                    fd: service.fd,
                    pending: true,
                    gso: true,
                })
                .collect(),
            _wake: wake,
            scratch: vec![0; settings.tcp_buffers.1 as usize],
            datagram: vec![0; udp::MAX_PAYLOAD],
            control: [0; CONTROL_LEN],
            answering: Answering::new(settings.loop_guard.clone(), stats.clone()),
            send_slot: SendSlot::new(),
            single_slot: SendSlot::new(),
            revisit: Vec::new(),
            core: WorkerCore::new(&settings, stats, mesh),
            mailbox,
            settings,
        };
        Ok((worker, ()))
    }

    fn run(mut self) -> Result<(), EngineError> {
        loop {
            let timeout = self.timeout();
            self.core.stats.epoll_waits.inc();
            let mut events = std::mem::take(&mut self.events);
            match self.epoll.wait(&mut events, timeout) {
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
            self.core.now = Instant::now();
            self.core.stats.readiness_events.add(events.len() as u64);
            for event in &events {
                let Some(t) = Token::decode(event.u64) else {
                    continue;
                };
                let bits = event.events;
                match t.op {
                    Op::Accept => self.listeners[t.index as usize].pending = true,
                    Op::UdpRecv => self.udp[t.index as usize].pending = true,
                    Op::Wake => self.begin_shutdown(),
                    Op::Mesh => self.read_parcels(),
                    Op::Recv => self.on_ready(t.index, t.generation, bits),
                    _ => {}
                }
            }
            self.events = events;
            for (index, generation) in std::mem::take(&mut self.revisit) {
                self.progress(index, generation);
            }
            self.after_batch();
            lifecycle::post_parcels(&mut self);
            self.core
                .stats
                .connection_memory
                .set(self.core.conns.memory_held() as u64);
            if self.core.shutdown_finished(self.settings.id, true) {
                return Ok(());
            }
        }
    }
}

impl EpollWorker {
    /// How long epoll_wait may block: not at all while work is left over,
    /// else until the nearest timer, or forever.
    fn timeout(&self) -> Option<Duration> {
        let draining = self.core.timers.draining();
        let accepting = !draining
            && self.core.timers.accept_retry_at.is_none()
            && self.core.conns.len() < self.settings.max_connections;
        let leftover = !self.revisit.is_empty()
            || (accepting && self.listeners.iter().any(|l| l.pending))
            || (!draining && self.udp.iter().any(|u| u.pending));
        if leftover {
            return Some(Duration::ZERO);
        }
        lifecycle::next_wait(&self.core)
    }

    // ----- messages between workers -----

    /// The bell rang: takes every parcel queued for this worker.
    fn read_parcels(&mut self) {
        if let Some(inbox) = self
            .core
            .mesh
            .as_ref()
            .and_then(|m| m.shared.inbox(self.settings.id))
        {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from the mesh's
            // non-blocking eventfd; EAGAIN (nothing rung) is fine.
            unsafe { libc::read(inbox.bell.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            self.core.stats.io_syscalls.inc();
        }
        // Read after the bell is reset: a parcel queued later rings again.
        for from in 0..self.mailbox.len() {
            while let Ok(parcel) = self.mailbox[from].try_recv() {
                lifecycle::receive_parcel(self, parcel);
            }
        }
    }

    // ----- connections -----

    /// A connection's socket reported `bits`.
    fn on_ready(&mut self, index: u32, generation: u32, bits: u32) {
        let Some(c) = self.core.conns.get_mut(index, generation) else {
            return;
        };
        let hung_up = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
        // Readable (data, EOF or an error) wants a read; writable a flush.
        c.io.unread |= hung_up || bits & libc::EPOLLIN as u32 != 0;
        c.io.hung_up |= hung_up;
        if bits & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            c.io.writable = true;
            c.conn.on_writable();
        }
        self.progress(index, generation);
    }

    /// Carries out what a connection asks for, reading while it wants input
    /// and the socket has some (up to a budget per visit), and schedules its
    /// next deadline.
    fn progress(&mut self, index: u32, generation: u32) {
        let (conns, env) = self.core.split();
        let Some(c) = conns.get_mut(index, generation) else {
            return;
        };
        let mut reads = 0;
        loop {
            while let Some(action) = c.conn.poll_action(&env) {
                match action {
                    Action::Send => send_once(c, &env),
                    Action::StartReceiving => c.io.receiving = true,
                    Action::StopReceiving => {
                        c.io.receiving = false;
                        c.conn.on_recv_ended();
                    }
                    // A readiness send never stays in flight.
                    Action::CancelSend => {}
                    Action::ShutdownWrite => {
                        // SAFETY: plain syscall on a descriptor this connection owns.
                        unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_WR) };
                        env.stats.io_syscalls.inc();
                    }
                    Action::Close => {
                        // Closing the descriptor also takes it out of the epoll set.
                        conns.remove(index);
                        env.stats.connections_closed.inc();
                        return;
                    }
                }
            }
            if !(c.io.receiving && c.io.unread) || reads >= VISIT_BUDGET {
                break;
            }
            reads += 1;
            read_once(c, &mut self.scratch, &env);
        }
        lifecycle::dispatch_asks(&mut c.conn, (index, generation), env.mesh);
        if c.io.receiving && c.io.unread {
            // Budget spent with input left: no new edge will come for it.
            self.revisit.push((index, generation));
        }
        self.core.conns.settle(index, generation, &self.core.limits);
        if self.core.conns.over_budget() {
            lifecycle::evict_over_budget(self);
        }
    }

    fn accept(&mut self, i: usize) {
        let mut budget = VISIT_BUDGET;
        while self.listeners[i].pending && budget > 0 {
            if self.core.conns.len() >= self.settings.max_connections {
                return; // at the limit: new connections wait in the backlog
            }
            budget -= 1;
            let listener = self.listeners[i].fd.as_raw_fd();
            // SAFETY: plain syscall; no address is asked for.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            self.core.stats.io_syscalls.inc();
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => self.listeners[i].pending = false,
                    Some(libc::EINTR | libc::ECONNABORTED) => {}
                    _ => {
                        self.core
                            .timers
                            .accept_failed(self.settings.id, &e, &self.core.stats);
                        if self.core.timers.accept_retry_at.is_some() {
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
        let session = self.listeners[listener].sessions.open(fd.as_fd());
        let io = Readiness {
            unread: false,
            hung_up: false,
            writable: true,
            receiving: false,
        };
        let conn = Connection::new(session, &self.core.env());
        let (index, generation) = self.core.conns.insert(fd, conn, io);
        // Both directions, edge-triggered, once: no epoll_ctl per send.
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
        if let Err(e) = self
            .epoll
            .add(raw, Token::new(Op::Recv, index, generation), events)
        {
            tracing::debug!("watching a connection: {e}");
            self.core.conns.remove(index);
            self.core.stats.accept_errors.inc();
            return;
        }
        self.core.stats.connections_accepted.inc();
        self.progress(index, generation);
    }

    // ----- UDP -----

    fn receive_datagrams(&mut self, i: usize) {
        let mut any = false;
        for _ in 0..VISIT_BUDGET {
            if !self.udp[i].pending {
                break;
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
            self.core.stats.io_syscalls.inc();
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
            let socket = &mut self.udp[i];
            let (handler, gso) = (&mut *socket.handler, socket.gso);
            self.answering
                .answer(&received, peer, handler, self.core.now, gso);
            self.send_replies(i, peer);
            any = true;
        }
        if any {
            self.publish_sessions();
        }
    }

    /// Copies the session tables' state, summed over this worker's UDP
    /// sockets, into the counters.
    fn publish_sessions(&self) {
        let tables = self.udp.iter().map(|socket| socket.handler.sessions());
        self.core.stats.publish_sessions(tables);
    }

    /// Sends the replies just planned to `peer` at once.
    fn send_replies(&mut self, i: usize, peer: std::net::SocketAddr) {
        let fd = self.udp[i].fd.as_raw_fd();
        for &(first, count, size) in self.answering.sends() {
            let gso = (count > 1).then_some(size as u16);
            self.send_slot.fill(self.answering.replies(), first, count);
            let result = udp::send_now(fd, &mut self.send_slot, peer, gso);
            self.core.stats.io_syscalls.inc();
            if udp::count_send(&self.core.stats, self.send_slot.segments, result) {
                // The path refused GSO: this train goes a datagram at a
                // time, and this socket sends no more trains.
                self.udp[i].gso = false;
                udp::resend_singly(fd, &self.send_slot, &mut self.single_slot, &self.core.stats);
            }
        }
    }

    // ----- timers, accepting and shutdown -----

    fn after_batch(&mut self) {
        lifecycle::fire_deadlines(self);
        let accept_paused = self.core.timers.accept_paused(self.core.now);
        if self.core.timers.draining() {
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
        lifecycle::begin_shutdown(self, self.settings.shutdown_deadline);
    }
}

impl lifecycle::Driver for EpollWorker {
    type Io = Readiness;

    fn core(&mut self) -> &mut WorkerCore<Readiness> {
        &mut self.core
    }

    fn progress(&mut self, index: u32, generation: u32) {
        EpollWorker::progress(self, index, generation);
    }

    /// Queues the parcel and rings its receiver's bell.
    fn post_parcel(&mut self, mesh: &MeshShared, to: usize, parcel: Parcel) {
        let Some(inbox) = mesh.inbox(to) else {
            // Never: an epoll mesh has an inbox per worker. Were it
            // missing, the asks' connections end rather than wait forever.
            tracing::warn!(worker = self.settings.id, to, "no inbox for a worker");
            lifecycle::parcel_failed(self, parcel);
            return;
        };
        match inbox.queue(self.settings.id, parcel) {
            Ok(()) => {
                inbox.ring_bell();
                self.core.stats.io_syscalls.inc();
            }
            Err(parcel) => {
                // Never: credits bound what the queue holds.
                tracing::warn!(worker = self.settings.id, to, "a worker's inbox is full");
                lifecycle::parcel_failed(self, parcel);
            }
        }
    }
}

/// One non-blocking read into `scratch`, handed to the core. A short read
/// means the socket is empty.
fn read_once(c: &mut Tracked<Readiness>, scratch: &mut [u8], env: &Env) {
    // SAFETY: `scratch` is a live, writable buffer of `scratch.len()` bytes.
    let n = unsafe {
        libc::recv(
            c.fd.as_raw_fd(),
            scratch.as_mut_ptr().cast(),
            scratch.len(),
            0,
        )
    };
    env.stats.io_syscalls.inc();
    match n {
        n if n > 0 => {
            if (n as usize) < scratch.len() && !c.io.hung_up {
                c.io.unread = false; // read empty: the next arrival brings a new edge
            }
            c.conn.on_received(&scratch[..n as usize], env);
        }
        0 => {
            c.io.unread = false;
            c.io.receiving = false;
            c.conn.on_eof();
            c.conn.on_recv_ended();
        }
        _ => {
            c.io.unread = false;
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                c.io.receiving = false;
                c.conn.on_recv_error(env);
                c.conn.on_recv_ended();
            }
        }
    }
}

/// One non-blocking send of what the core asks to send.
fn send_once(c: &mut Tracked<Readiness>, env: &Env) {
    if !c.io.writable {
        c.conn.on_send_blocked();
        return;
    }
    let buf = c.conn.send_buf();
    // SAFETY: `buf` is a live buffer of the length given.
    let n = unsafe {
        libc::send(
            c.fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    env.stats.io_syscalls.inc();
    if n >= 0 {
        c.conn.on_sent(n as usize, env);
        return;
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            c.io.writable = false; // the writable edge resumes it
            c.conn.on_send_blocked();
        }
        io::ErrorKind::Interrupted => c.conn.on_sent(0, env),
        _ => c.conn.on_send_error(env),
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    socket2::SockRef::from(fd).set_nonblocking(true)
}
