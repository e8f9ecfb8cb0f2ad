//! One pinned worker: its own io_uring, its own sockets, its own connections.
//!
//! The loop submits everything queued and waits for completions in one
//! `io_uring_enter`, handles the whole batch, hands receive buffers back with
//! one store, and goes round again. Nothing here is shared with other workers
//! except the counters, which only this worker writes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use protocols::{DatagramHandler, Next, Replies};

use crate::bufring::BufRing;
use crate::conn::{Conn, RecvState};
use crate::error::EngineError;
use crate::per_core::{CoreWorker, TcpService, WorkerParts, WorkerSettings};
use crate::ring::RingMode;
use crate::slab::Slab;
use crate::stats::WorkerStats;
use crate::timers::Timers;
use crate::token::{Op, Token};
use crate::udp::{self, SendSlot};

const TCP_GROUP: u16 = 0;
const UDP_GROUP: u16 = 1;
/// Below this much room under --max-connections, accepts are single-shot:
/// a multishot accept could bring a whole burst past the limit.
const MULTISHOT_ROOM: usize = 16;

struct Listener {
    service: TcpService,
    /// An accept is outstanding (possibly being cancelled).
    armed: bool,
    /// The outstanding accept is multishot (single-shot near the limit).
    multishot: bool,
    cancelling: bool,
}

struct UdpSocket {
    fd: OwnedFd,
    handler: Box<dyn DatagramHandler>,
    /// The msghdr template the multishot recvmsg was armed with.
    template: Box<libc::msghdr>,
    armed: bool,
    /// GSO sends work on this socket (cleared after the kernel refuses one).
    gso: bool,
}

/// A worker and everything it owns.
///
/// Field order matters: `ring` is declared first so it is dropped first,
/// tearing down every operation before the buffers they point into are freed.
pub struct Worker {
    ring: IoUring,
    settings: WorkerSettings,
    stats: Arc<WorkerStats>,
    tcp_bufs: BufRing,
    udp_bufs: BufRing,
    listeners: Vec<Listener>,
    udp: Vec<UdpSocket>,
    conns: Slab<Conn>,
    // Boxed: a slot's msghdr points into the slot itself, so it must never
    // move, even if this Vec ever grew.
    #[allow(clippy::vec_box)]
    send_slots: Vec<Box<SendSlot>>,
    free_send_slots: Vec<u32>,
    /// Builds the replies sent synchronously when every slot is busy.
    overflow_slot: Box<SendSlot>,
    wake_fd: OwnedFd,
    wake_buf: Box<u64>,
    /// SQEs that did not fit the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    cqes: Vec<cqueue::Entry>,
    replies: Replies,
    /// Reused per datagram: the replies' lengths and the sends planned for them.
    reply_lens: Vec<usize>,
    send_plan: Vec<udp::PlannedSend>,
    scratch: Vec<u8>,
    timers: Timers,
    /// The time this batch of completions is handled at.
    now: Instant,
}

impl CoreWorker for Worker {
    type Ready = RingMode;

    fn new(parts: WorkerParts) -> Result<(Self, RingMode), EngineError> {
        Worker::create(parts)
    }

    fn run(self) -> Result<(), EngineError> {
        self.serve()
    }
}

impl Worker {
    /// Creates the worker's ring and buffer rings. Runs on the worker's own
    /// thread: a SINGLE_ISSUER ring belongs to the thread that creates it.
    fn create(parts: WorkerParts) -> Result<(Self, RingMode), EngineError> {
        let WorkerParts {
            settings,
            stats,
            tcp,
            udp,
            wake: wake_fd,
        } = parts;
        let id = settings.id;
        let (ring, mode) = crate::ring::create(settings.ring_entries)?;
        let fail = |context: &'static str| {
            move |source: io::Error| EngineError::Worker {
                worker: id,
                context,
                source,
            }
        };
        let (count, size) = settings.tcp_buffers;
        let tcp_bufs = BufRing::new(count, size as usize, TCP_GROUP)
            .map_err(fail("allocating TCP receive buffers"))?;
        let udp_bufs = BufRing::new(
            settings.udp_buffers,
            udp::RECV_HEADROOM + udp::MAX_PAYLOAD,
            UDP_GROUP,
        )
        .map_err(fail("allocating UDP receive buffers"))?;
        tcp_bufs
            .register(&ring)
            .map_err(fail("registering the TCP buffer ring (needs Linux 5.19+)"))?;
        udp_bufs
            .register(&ring)
            .map_err(fail("registering the UDP buffer ring (needs Linux 5.19+)"))?;
        let slots = settings.udp_sends_in_flight;
        let worker = Self {
            ring,
            stats,
            tcp_bufs,
            udp_bufs,
            listeners: tcp
                .into_iter()
                .map(|service| Listener {
                    service,
                    armed: false,
                    multishot: false,
                    cancelling: false,
                })
                .collect(),
            udp: udp
                .into_iter()
                .map(|service| UdpSocket {
                    handler: (service.factory)(),
                    fd: service.fd,
                    template: udp::recv_template(),
                    armed: false,
                    gso: true,
                })
                .collect(),
            conns: Slab::default(),
            send_slots: (0..slots).map(|_| SendSlot::new()).collect(),
            free_send_slots: (0..slots as u32).rev().collect(),
            overflow_slot: SendSlot::new(),
            wake_fd,
            wake_buf: Box::new(0),
            backlog: VecDeque::new(),
            cqes: Vec::with_capacity(settings.ring_entries as usize * 4),
            replies: Replies::new(),
            reply_lens: Vec::new(),
            send_plan: Vec::new(),
            scratch: vec![0; 64 * 1024],
            timers: Timers::default(),
            now: Instant::now(),
            settings,
        };
        Ok((worker, mode))
    }

    /// Serves until shutdown is requested and finished (or its deadline passes).
    fn serve(mut self) -> Result<(), EngineError> {
        self.arm_wake();
        for i in 0..self.udp.len() {
            self.arm_udp(i);
        }
        self.update_accepting(false);
        loop {
            self.enter()?;
            self.now = Instant::now();
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(self.ring.completion());
            self.stats.cqes_reaped.add(cqes.len() as u64);
            for cqe in cqes.drain(..) {
                self.handle(&cqe);
            }
            self.cqes = cqes;
            self.tcp_bufs.publish();
            self.udp_bufs.publish();
            self.after_batch();
            if self.finished() {
                return Ok(());
            }
        }
    }

    // ----- submission -----

    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: every entry built by this worker points only at memory the
            // worker owns and keeps unmoved until the entry's completion (see each
            // builder's SAFETY note).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    fn enter(&mut self) -> Result<(), EngineError> {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
        let queued = self.ring.submission().len() as u64;
        // With a backlog, only submit; the wait happens once it is all in.
        let want = usize::from(self.backlog.is_empty());
        let result = match self.timers.next_wait() {
            Some(wait) if want == 1 => {
                let ts = types::Timespec::from(wait);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submitter().submit_and_wait(want),
        };
        self.stats.io_uring_enter_calls.inc();
        self.stats.sqes_submitted.add(queued);
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(source) => Err(EngineError::Worker {
                worker: self.settings.id,
                context: "io_uring_enter",
                source,
            }),
        }
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(Token::new(Op::Wake, 0, 0).encode());
        // SAFETY (for `push`): `wake_buf` is boxed and lives as long as the worker.
        self.push(entry);
    }

    fn arm_udp(&mut self, i: usize) {
        let socket = &mut self.udp[i];
        socket.armed = true;
        let entry = opcode::RecvMsgMulti::new(
            types::Fd(socket.fd.as_raw_fd()),
            &*socket.template,
            self.udp_bufs.group(),
        )
        .build()
        .user_data(Token::new(Op::UdpRecv, i as u32, 0).encode());
        // SAFETY (for `push`): the boxed template lives as long as the worker.
        self.push(entry);
    }

    fn arm_recv(&mut self, index: u32, generation: u32) {
        let group = self.tcp_bufs.group();
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        conn.recv = RecvState::Armed;
        let entry = opcode::RecvMulti::new(types::Fd(conn.fd.as_raw_fd()), group)
            .build()
            .user_data(Token::new(Op::Recv, index, generation).encode());
        // SAFETY (for `push`): the kernel writes only into provided buffers,
        // which live as long as the worker.
        self.push(entry);
    }

    fn cancel(&mut self, target: Token) {
        let entry = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(Token::new(Op::Cancel, 0, 0).encode());
        self.push(entry);
    }

    // ----- completions -----

    fn handle(&mut self, cqe: &cqueue::Entry) {
        let Some(token) = Token::decode(cqe.user_data()) else {
            return;
        };
        let (res, flags) = (cqe.result(), cqe.flags());
        match token.op {
            Op::Accept => self.on_accept(token.index as usize, res, flags),
            Op::Recv => self.on_recv(token, res, flags),
            Op::Send => self.on_send(token, res),
            Op::UdpRecv => self.on_udp_recv(token.index as usize, res, flags),
            Op::UdpSend => self.on_udp_send(token.index, res),
            Op::Wake => self.begin_shutdown(),
            Op::Cancel => {}
        }
    }

    fn on_accept(&mut self, listener: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            let l = &mut self.listeners[listener];
            l.armed = false;
            l.cancelling = false;
        }
        if res < 0 {
            match -res {
                libc::ECANCELED => {}
                errno => {
                    let error = io::Error::from_raw_os_error(errno);
                    self.timers
                        .accept_failed(self.settings.id, &error, &self.stats);
                }
            }
            return;
        }
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        if self.timers.draining() {
            return; // shutting down: the new connection is closed at once
        }
        if self.conns.len() >= self.settings.max_connections {
            // A multishot accept can deliver more in one batch than the limit
            // leaves room for (the cancel lands after): close the extra one
            // rather than exceed --max-connections.
            self.stats.connections_rejected.inc();
            return;
        }
        self.stats.connections_accepted.inc();
        let session = (self.listeners[listener].service.factory)();
        let mut conn = Conn::new(fd, session, self.now);
        // A protocol that speaks first (the bot's greeting) does it now.
        conn.session.on_open(&mut conn.pending);
        if conn.ticks {
            self.timers.watch_ticks(self.now);
        }
        let (index, generation) = self.conns.insert(conn);
        self.progress(index, generation);
    }

    fn on_recv(&mut self, token: Token, res: i32, flags: u32) {
        let buffer = cqueue::buffer_select(flags);
        let more = cqueue::more(flags);
        let Some(conn) = self.conns.get_mut(token.index, token.generation) else {
            if let Some(bid) = buffer {
                self.tcp_bufs.recycle(bid);
            }
            return;
        };
        if !more {
            conn.recv = RecvState::Idle;
        }
        match res {
            n if n > 0 => {
                if let Some(bid) = buffer {
                    let data = self.tcp_bufs.filled(bid, n as usize);
                    conn.last_active = self.now;
                    if conn.read_done || conn.failed {
                        self.stats.bytes_discarded.add(data.len() as u64);
                    } else {
                        self.stats.bytes_in.add(data.len() as u64);
                        self.stats.messages_in.inc();
                        if conn.session.on_bytes(data, &mut conn.pending) == Next::Close {
                            conn.read_done = true;
                        }
                    }
                    self.tcp_bufs.recycle(bid);
                }
                if !more {
                    self.stats.multishot_rearms.inc();
                }
            }
            0 => {
                if !conn.read_done && !conn.failed {
                    conn.session.on_eof(&mut conn.pending);
                }
                conn.read_done = true;
                conn.peer_closed = true;
            }
            _ => match -res {
                libc::ENOBUFS => self.stats.multishot_rearms.inc(),
                libc::ECANCELED => {}
                _ => {
                    conn.failed = true;
                    self.stats.connection_errors.inc();
                }
            },
        }
        self.progress(token.index, token.generation);
    }

    fn on_send(&mut self, token: Token, res: i32) {
        let Some(conn) = self.conns.get_mut(token.index, token.generation) else {
            return;
        };
        conn.send_in_flight = false;
        if res < 0 {
            if !conn.failed {
                conn.failed = true;
                self.stats.connection_errors.inc();
            }
        } else {
            conn.sent += res as usize;
            self.stats.bytes_out.add(res as u64);
            self.stats.messages_out.inc();
        }
        self.progress(token.index, token.generation);
    }

    /// Moves a connection forward after anything happened to it: start the
    /// next send, pause or resume reading, or close it.
    fn progress(&mut self, index: u32, generation: u32) {
        let limit = self.settings.output_limit;
        let draining = self.timers.draining();
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if draining && !conn.read_done && !conn.failed && conn.recv == RecvState::Idle {
            // The multishot receive has ended: answer what the kernel had
            // already queued, as fast as the output bound allows, then stop.
            conn.drain_received(&mut self.scratch, limit, &self.stats);
        }
        conn.refill_output(limit);
        if conn.failed {
            conn.pending.clear();
        } else if conn.next_send() {
            conn.send_in_flight = true;
            let remaining = &conn.sending[conn.sent..];
            let entry = opcode::Send::new(
                types::Fd(conn.fd.as_raw_fd()),
                remaining.as_ptr(),
                remaining.len() as u32,
            )
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Token::new(Op::Send, index, generation).encode());
            // SAFETY (for `push`): `sending` is not touched while
            // `send_in_flight`, and the connection is not removed until it is
            // quiescent; moving the Conn inside the slab does not move the
            // Vec's heap buffer.
            self.push(entry);
        }
        let Some(conn) = self.conns.get_mut(index, generation) else {
            return;
        };
        if conn.finish_sending() {
            self.timers.linger(self.now, index, generation);
        }
        match conn.recv {
            RecvState::Armed if !conn.wants_input(draining, limit) => {
                if !conn.read_done && !conn.failed && !draining {
                    self.stats.backpressure_pauses.inc();
                }
                conn.recv = RecvState::Cancelling;
                self.cancel(Token::new(Op::Recv, index, generation));
            }
            RecvState::Idle if conn.wants_input(draining, limit / 2) => {
                self.arm_recv(index, generation);
            }
            RecvState::Idle
                if conn.quiescent()
                    && (conn.failed || (conn.peer_closed && conn.all_answered())) =>
            {
                if conn.ticks {
                    self.timers.unwatch_ticks();
                }
                self.conns.remove(index);
                self.stats.connections_closed.inc();
            }
            _ => {}
        }
    }

    fn on_udp_recv(&mut self, i: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.udp[i].armed = false;
        }
        if res < 0 {
            match -res {
                libc::ENOBUFS => self.stats.multishot_rearms.inc(),
                libc::ECANCELED => {}
                errno => tracing::debug!("udp recvmsg: {}", io::Error::from_raw_os_error(errno)),
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let socket = &mut self.udp[i];
        let buffer = self.udp_bufs.filled(bid, res as usize);
        let received = udp::parse_received(buffer, &socket.template);
        let peer = received.as_ref().and_then(|r| r.peer);
        if let (Some(received), Some(peer)) = (&received, peer) {
            let handler = &mut *socket.handler;
            udp::deliver(
                received,
                peer,
                handler,
                self.now,
                &mut self.replies,
                &self.stats,
            );
        }
        self.udp_bufs.recycle(bid);
        if let Some(peer) = peer {
            self.send_replies(i, peer);
        }
        self.replies.clear();
        self.publish_sessions();
    }

    /// Copies the session tables' state (summed over this worker's UDP
    /// sockets) into the counters.
    fn publish_sessions(&self) {
        let mut total = protocols::SessionStats::default();
        for socket in &self.udp {
            let s = socket.handler.sessions();
            total.open += s.open;
            total.evicted += s.evicted;
            total.expired += s.expired;
        }
        self.stats.publish_sessions(total);
    }

    /// Gives every time-keeping session its tick; ends those that say so.
    /// Walks the slab by index: this runs every 100 ms and allocates nothing.
    fn sweep_idle(&mut self) {
        let now = self.now;
        for index in 0..self.conns.capacity() {
            let Some(generation) = self.conns.generation_at(index) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(index, generation) else {
                continue;
            };
            if conn.tick(now, &self.stats) {
                self.progress(index, generation);
            }
        }
    }

    /// Sends `self.replies` to `peer`, equal-sized runs as GSO trains.
    fn send_replies(&mut self, i: usize, peer: std::net::SocketAddr) {
        self.reply_lens.clear();
        self.reply_lens.extend(self.replies.iter().map(<[u8]>::len));
        udp::plan_sends(&self.reply_lens, self.udp[i].gso, &mut self.send_plan);
        for p in 0..self.send_plan.len() {
            let (first, count, size) = self.send_plan[p];
            let gso = (count > 1).then_some(size as u16);
            let Some(slot_index) = self.free_send_slots.pop() else {
                // Every slot is in flight (a burst): send this one right away
                // rather than drop it.
                self.send_now(i, peer, first, count, gso);
                continue;
            };
            let slot = &mut self.send_slots[slot_index as usize];
            slot.fill(&self.replies, first, count);
            let msg = slot.prepare(peer, gso);
            let entry = opcode::SendMsg::new(types::Fd(self.udp[i].fd.as_raw_fd()), msg)
                .build()
                .user_data(Token::new(Op::UdpSend, slot_index, 0).encode());
            // SAFETY (for `push`): the slot is boxed and stays off the free list
            // (so unchanged) until this send completes.
            self.push(entry);
        }
    }

    /// A synchronous, non-blocking sendmsg for when every send slot is busy.
    fn send_now(
        &mut self,
        i: usize,
        peer: std::net::SocketAddr,
        first: usize,
        count: usize,
        gso: Option<u16>,
    ) {
        let slot = &mut self.overflow_slot;
        slot.fill(&self.replies, first, count);
        let result = udp::send_now(self.udp[i].fd.as_raw_fd(), slot, peer, gso);
        self.stats.udp_direct_sends.inc();
        if udp::count_send(&self.stats, slot.segments, result) {
            self.udp[i].gso = false;
        }
    }

    fn on_udp_send(&mut self, slot_index: u32, res: i32) {
        let Some(slot) = self.send_slots.get(slot_index as usize) else {
            return;
        };
        let result = if res >= 0 {
            Ok(res as usize)
        } else {
            Err(io::Error::from_raw_os_error(-res))
        };
        if udp::count_send(&self.stats, slot.segments, result) {
            // The path refused GSO: send one datagram per call from now on.
            for socket in &mut self.udp {
                socket.gso = false;
            }
        }
        self.free_send_slots.push(slot_index);
    }

    // ----- accepting, timers and shutdown -----

    fn after_batch(&mut self) {
        let now = Instant::now();
        if self.timers.sweep_due(now) {
            self.sweep_idle();
        }
        while let Some((index, generation)) = self.timers.expired_linger(now) {
            if let Some(conn) = self.conns.get_mut(index, generation) {
                // The peer never closed: close without waiting any longer.
                conn.failed = true;
                self.progress(index, generation);
            }
        }
        let accept_paused = self.timers.accept_paused(now);
        self.update_accepting(accept_paused);
        if !self.timers.draining() {
            for i in 0..self.udp.len() {
                if !self.udp[i].armed {
                    self.arm_udp(i);
                }
            }
        }
    }

    /// Arms accepts while below the connection limit, cancels them at it
    /// (and while `paused` after EMFILE, or shutting down).
    fn update_accepting(&mut self, paused: bool) {
        let open = !self.timers.draining() && !paused;
        let mut room = self
            .settings
            .max_connections
            .saturating_sub(self.conns.len());
        for i in 0..self.listeners.len() {
            let multishot_fits = room > MULTISHOT_ROOM;
            let l = &mut self.listeners[i];
            if l.armed {
                // Near the limit a multishot accept could bring more than
                // the room left: cancel it, a single-shot one follows.
                let wrong = !open || room == 0 || (l.multishot && !multishot_fits);
                if wrong && !l.cancelling {
                    l.cancelling = true;
                    self.cancel(Token::new(Op::Accept, i as u32, 0));
                } else if !l.multishot {
                    room = room.saturating_sub(1); // its one connection is spoken for
                }
                continue;
            }
            if !open || room == 0 {
                continue;
            }
            l.armed = true;
            l.multishot = multishot_fits;
            let fd = types::Fd(l.service.fd.as_raw_fd());
            let entry = if multishot_fits {
                opcode::AcceptMulti::new(fd)
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            } else {
                room -= 1;
                opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            };
            self.push(entry.user_data(Token::new(Op::Accept, i as u32, 0).encode()));
        }
    }

    fn begin_shutdown(&mut self) {
        if self.timers.draining() {
            return;
        }
        self.timers.drain_deadline = Some(Instant::now() + self.settings.shutdown_deadline);
        self.update_accepting(true);
        for i in 0..self.udp.len() {
            if self.udp[i].armed {
                self.cancel(Token::new(Op::UdpRecv, i as u32, 0));
            }
        }
        for (index, generation) in self.conns.keys() {
            self.progress(index, generation);
        }
    }

    fn finished(&mut self) -> bool {
        let Some(deadline) = self.timers.drain_deadline else {
            return false;
        };
        let flushed = self.conns.is_empty() && self.free_send_slots.len() == self.send_slots.len();
        if !flushed && Instant::now() >= deadline {
            tracing::warn!(
                worker = self.settings.id,
                "shutdown deadline passed with {} connection(s) still flushing; closing them",
                self.conns.len()
            );
            return true;
        }
        flushed
    }
}
