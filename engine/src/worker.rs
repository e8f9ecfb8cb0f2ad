//! One pinned worker: its own io_uring, its own sockets, its own connections.
//!
//! The loop submits everything queued and waits for completions in one
//! `io_uring_enter`, handles the whole batch, hands receive buffers back with
//! one store, and goes round again. Nothing here is shared with other workers
//! except the counters, which only this worker writes.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};
use protocols::DatagramHandler;

use crate::bufring::{BufRing, Taken};
use crate::connection::{Action, Connection, Outgoing, RECEIVE_WINDOW};
use crate::conns::Conns;
use crate::error::EngineError;
use crate::lifecycle::{self, WorkerCore};
use crate::mesh::{self, MeshShared, Parcel};
use crate::per_core::{CoreWorker, OpenedParts, Sessions, WorkerParts, WorkerSettings};
use crate::ring::RingMode;
use crate::token::{Op, Token};
use crate::udp::{self, Answering, SendSlot};
use crate::uring::Uring;

const TCP_GROUP: u16 = 0;
const UDP_GROUP: u16 = 1;
/// At teardown, how long to wait for cancelled operations' last completions.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);
/// Below this much room under --max-connections, accepts are single-shot:
/// a multishot accept could bring a whole burst past the limit.
const MULTISHOT_ROOM: usize = 16;

struct Listener {
    fd: OwnedFd,
    sessions: Sessions,
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
/// Its `Drop` cancels every operation and waits for the last completions
/// before any memory they point at (send buffers, msghdrs, the wake buffer)
/// is freed, and leaks that memory if the kernel does not let go in time;
/// the ring and the receive buffers end together inside [`Uring`].
pub struct Worker {
    uring: Uring,
    tcp_bufs: usize,
    udp_bufs: usize,
    settings: WorkerSettings,
    /// The connections and what every worker decides about them, shared
    /// with the other driver ([`lifecycle`]).
    core: WorkerCore<Option<Taken>>,
    listeners: Vec<Listener>,
    udp: Vec<UdpSocket>,
    /// Receive buffers lent out to sends, and the most that may be: a peer
    /// that never reads keeps its buffer until the send timeout, so past
    /// this share of the ring, input is copied instead.
    lent: u16,
    max_lent: u16,
    // Boxed: a slot's msghdr points into the slot itself, so it must never
    // move, even if this Vec ever grew.
    #[allow(clippy::vec_box)]
    send_slots: Vec<Box<SendSlot>>,
    free_send_slots: Vec<u32>,
    /// Builds the replies sent synchronously when every slot is busy, and
    /// the single datagrams of a train the path refused.
    overflow_slot: Box<SendSlot>,
    wake_fd: OwnedFd,
    /// The kernel writes the eventfd's counter here.
    wake_buf: Box<UnsafeCell<u64>>,
    cqes: Vec<cqueue::Entry>,
    /// Hands datagrams to their handlers and plans the replies.
    answering: Answering,
    /// The kernel caps a multishot receive at a byte count (Linux 6.16+);
    /// cleared when it refuses the cap, after which receives are uncapped.
    recv_window: bool,
}

impl CoreWorker for Worker {
    type Ready = RingMode;
    const MESSAGES: Option<bool> = Some(true);

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
        let OpenedParts {
            settings,
            stats,
            tcp,
            udp,
            wake: wake_fd,
            mesh,
        } = parts.open();
        let id = settings.id;
        let mut uring = match settings.sqpoll {
            Some(idle) => Uring::new_sqpoll(settings.ring_entries, idle)?,
            None => Uring::new(settings.ring_entries)?,
        };
        let mode = uring.mode();
        let fail = |context| EngineError::in_worker(id, context);
        if let Some(wait) = settings.batch_wait {
            uring
                .set_batch_wait(wait)
                .map_err(fail("setting the batch wait"))?;
        }
        let (count, size) = settings.tcp_buffers;
        let tcp_bufs = BufRing::new(count, size as usize, TCP_GROUP)
            .map_err(fail("allocating TCP receive buffers"))?;
        let udp_bufs = BufRing::new(
            settings.udp_buffers,
            udp::RECV_HEADROOM + udp::MAX_PAYLOAD,
            UDP_GROUP,
        )
        .map_err(fail("allocating UDP receive buffers"))?;
        // A refused registration (locked-memory limit, an old kernel) means
        // io_uring cannot serve here: `--io auto` falls back on this error.
        let tcp_bufs = uring
            .add_buffers(tcp_bufs)
            .map_err(|e| crate::ring::buffer_ring_refused("TCP", &e))?;
        let udp_bufs = uring
            .add_buffers(udp_bufs)
            .map_err(|e| crate::ring::buffer_ring_refused("UDP", &e))?;
        if let Some(mesh) = &mesh {
            let ring = uring
                .ring_fd()
                .map_err(fail("sharing the ring with the other workers"))?;
            uring.expect_foreign(mesh::DELIVERED_TAG);
            mesh.shared.register_ring(id, ring);
        }
        let slots = settings.udp_sends_in_flight;
        let listeners: Vec<Listener> = tcp
            .into_iter()
            .map(|(fd, sessions)| Listener {
                fd,
                sessions,
                armed: false,
                multishot: false,
                cancelling: false,
            })
            .collect();
        let worker = Self {
            uring,
            tcp_bufs,
            udp_bufs,
            listeners,
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
            lent: 0,
            max_lent: count / 4,
            send_slots: (0..slots).map(|_| SendSlot::new()).collect(),
            free_send_slots: (0..slots as u32).rev().collect(),
            overflow_slot: SendSlot::new(),
            wake_fd,
            wake_buf: Box::new(UnsafeCell::new(0)),
            cqes: Vec::with_capacity(settings.ring_entries as usize * 4),
            answering: Answering::new(settings.loop_guard.clone(), stats.clone()),
            recv_window: true,
            core: WorkerCore::new(&settings, stats, mesh),
            settings,
        };
        Ok((worker, mode))
    }

    /// Serves until shutdown is requested and finished (or its deadline passes).
    fn serve(mut self) -> Result<(), EngineError> {
        if let Some(mesh) = &self.core.mesh {
            mesh.shared.wait_until_registered();
        }
        self.arm_wake();
        for i in 0..self.udp.len() {
            self.arm_udp(i);
        }
        self.update_accepting(false);
        loop {
            self.enter()?;
            self.core.now = Instant::now();
            let mut cqes = std::mem::take(&mut self.cqes);
            self.uring.reap(&mut cqes);
            self.core.stats.cqes_reaped.add(cqes.len() as u64);
            for cqe in cqes.drain(..) {
                self.handle(&cqe);
            }
            self.cqes = cqes;
            self.uring.publish_buffers();
            let spare = self.uring.buffers(self.tcp_bufs).spare();
            self.core.stats.tcp_buffers_spare.set(u64::from(spare));
            self.core.stats.tcp_buffers_lent.set(u64::from(self.lent));
            self.core
                .stats
                .connection_memory
                .set(self.core.conns.memory_held() as u64);
            self.after_batch();
            lifecycle::post_parcels(&mut self);
            if self.core.shutdown_finished(
                self.settings.id,
                self.free_send_slots.len() == self.send_slots.len(),
            ) {
                return Ok(());
            }
        }
    }

    // ----- submission -----

    /// Queues `entry`.
    ///
    /// # Safety
    ///
    /// As [`Uring::push`]: what the entry points at lives, unmoved, until its
    /// final completion is reaped. The worker's `Drop` waits for that.
    unsafe fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: passed on from the caller.
        unsafe { self.uring.push(entry) };
    }

    fn enter(&mut self) -> Result<(), EngineError> {
        let wait = lifecycle::next_wait(&self.core);
        let submitted = self
            .uring
            .enter(wait)
            .map_err(|source| EngineError::Worker {
                worker: self.settings.id,
                context: "io_uring_enter",
                source,
            })?;
        self.core.stats.io_uring_enter_calls.inc();
        self.core.stats.sqes_submitted.add(submitted);
        Ok(())
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd.as_raw_fd()),
            self.wake_buf.get().cast(),
            8,
        )
        .build()
        .user_data(Token::new(Op::Wake, 0, 0).encode());
        // SAFETY: `wake_buf` is boxed, written only by the kernel, and lives
        // as long as the worker, whose Drop reaps this read first.
        unsafe { self.push(entry) };
    }

    fn arm_udp(&mut self, i: usize) {
        let group = self.uring.buffers(self.udp_bufs).group();
        let socket = &mut self.udp[i];
        socket.armed = true;
        let entry =
            opcode::RecvMsgMulti::new(types::Fd(socket.fd.as_raw_fd()), &*socket.template, group)
                .build()
                .user_data(Token::new(Op::UdpRecv, i as u32, 0).encode());
        // SAFETY: the boxed template and the socket live as long as the
        // worker, whose Drop reaps this receive first; the kernel writes
        // only into provided buffers, which the Uring owns.
        unsafe { self.push(entry) };
    }

    fn cancel(&mut self, target: Token) {
        // SAFETY: a cancel request points at no memory.
        unsafe { self.push(cancel_entry(target)) };
    }

    // ----- completions -----

    fn handle(&mut self, cqe: &cqueue::Entry) {
        if let Some((tag, parcel)) = mesh::untag_address(cqe.user_data()) {
            self.on_parcel(tag, parcel, cqe.result());
            return;
        }
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
            // The server submits no connects; messages come tagged.
            Op::Cancel | Op::Mesh => {}
        }
    }

    // ----- messages between workers -----

    /// A parcel's completion: one another worker posted here
    /// (`DELIVERED`), or the end of one this worker posted (`POSTED`).
    fn on_parcel(&mut self, tag: u8, parcel: *mut Parcel, res: i32) {
        if tag == mesh::DELIVERED_TAG {
            // SAFETY: the sender gave the box up (`Box::into_raw`) when it
            // posted it, and the kernel delivers each post once, here.
            let parcel = unsafe { Box::from_raw(parcel) };
            lifecycle::receive_parcel(self, *parcel);
        } else if res < 0 {
            // SAFETY: the kernel could not post it, so the receiver never
            // saw the address: the box is still this worker's.
            let parcel = unsafe { Box::from_raw(parcel) };
            self.parcel_failed(*parcel, res);
        }
        // Posted: the box is the receiver's now.
    }

    /// A parcel could not travel (`error`, a negated errno): its asks'
    /// connections can never complete their replies, so they end.
    fn parcel_failed(&mut self, parcel: Parcel, error: i32) {
        tracing::warn!(
            worker = self.settings.id,
            "a parcel of {} message(s) to another worker failed: {}",
            parcel.len(),
            io::Error::from_raw_os_error(-error)
        );
        lifecycle::parcel_failed(self, parcel);
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
                    self.core
                        .timers
                        .accept_failed(self.settings.id, &error, &self.core.stats);
                }
            }
            return;
        }
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        if self.core.timers.draining() {
            return; // shutting down: the new connection is closed at once
        }
        if self.core.conns.len() >= self.settings.max_connections {
            // A multishot accept can deliver more in one batch than the limit
            // leaves room for (the cancel lands after): close the extra one
            // rather than exceed --max-connections.
            self.core.stats.connections_rejected.inc();
            return;
        }
        self.core.stats.connections_accepted.inc();
        let session = self.listeners[listener].sessions.open(fd.as_fd());
        let conn = Connection::new(session, &self.core.env());
        let (index, generation) = self.core.conns.insert(fd, conn, None);
        self.progress(index, generation);
    }

    fn on_recv(&mut self, token: Token, res: i32, flags: u32) {
        let buffer = cqueue::buffer_select(flags);
        let more = cqueue::more(flags);
        let (conns, env) = self.core.split();
        let bufs = self.uring.buffers(self.tcp_bufs);
        let taken = buffer.map(|bid| bufs.take(bid, res.max(0) as usize));
        let Some(c) = conns.get_mut(token.index, token.generation) else {
            if let Some(taken) = taken {
                bufs.recycle(taken);
            }
            return;
        };
        if let Some(taken) = taken {
            let lent = res > 0 && self.lent < self.max_lent && c.conn.lend(taken.len(), &env);
            if lent {
                // Sent back from where it lies; recycled once sent.
                c.io = Some(taken);
                self.lent += 1;
                env.stats.receives_lent.inc();
            } else {
                if res > 0 {
                    c.conn.on_received(bufs.bytes(&taken), &env);
                }
                bufs.recycle(taken);
            }
        }
        match res {
            n if n > 0 => {
                if !more {
                    env.stats.multishot_rearms.inc();
                }
            }
            0 => c.conn.on_eof(),
            _ => match -res {
                libc::ENOBUFS => {
                    bufs.ran_out();
                    env.stats.multishot_rearms.inc();
                }
                libc::ECANCELED => {}
                libc::EINVAL if self.recv_window => {
                    // An older kernel: multishot receives take no byte cap.
                    tracing::debug!(
                        "this kernel does not cap multishot receives; receiving uncapped"
                    );
                    self.recv_window = false;
                }
                _ => c.conn.on_recv_error(&env),
            },
        }
        if !more {
            c.conn.on_recv_ended();
        }
        self.progress(token.index, token.generation);
    }

    fn on_send(&mut self, token: Token, res: i32) {
        let (conns, env) = self.core.split();
        let Some(c) = conns.get_mut(token.index, token.generation) else {
            return;
        };
        if res < 0 {
            c.conn.on_send_error(&env);
        } else {
            c.conn.on_sent(res as usize, &env);
        }
        if !c.conn.is_lending() {
            if let Some(taken) = c.io.take() {
                self.give_back_lent(taken);
            }
        }
        self.progress(token.index, token.generation);
    }

    /// Carries out what a connection asks for after anything happened to
    /// it, and schedules its next deadline.
    fn progress(&mut self, index: u32, generation: u32) {
        let (conns, env) = self.core.split();
        let group = self.uring.buffers(self.tcp_bufs).group();
        let Some(c) = conns.get_mut(index, generation) else {
            return;
        };
        let fd = types::Fd(c.fd.as_raw_fd());
        let mut close = false;
        let key = (index, generation);
        while let Some(action) = c.conn.poll_action(&env) {
            let entry = match action {
                Action::Send => {
                    let buf = match (c.conn.outgoing(), &c.io) {
                        (Outgoing::Owned(buf), _) => buf,
                        (Outgoing::Lent(range), Some(taken)) => {
                            &self.uring.buffers(self.tcp_bufs).bytes(taken)[range]
                        }
                        (Outgoing::Lent(_), None) => {
                            // Never: a lent send always has its buffer here.
                            tracing::error!("a lent send without its buffer; closing");
                            c.conn.on_send_error(&env);
                            continue;
                        }
                    };
                    opcode::Send::new(fd, buf.as_ptr(), buf.len() as u32)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(Token::new(Op::Send, index, generation).encode())
                }
                Action::StartReceiving => {
                    // The kernel ends the multishot receive after this many
                    // bytes (Linux 6.16+), so input the session cannot take
                    // yet never piles up past the window.
                    let recv = opcode::RecvMulti::new(fd, group)
                        .build()
                        .user_data(Token::new(Op::Recv, index, generation).encode());
                    if self.recv_window {
                        crate::uring::cap_multishot_recv(recv, RECEIVE_WINDOW as u32)
                    } else {
                        recv
                    }
                }
                Action::StopReceiving => cancel_entry(Token::new(Op::Recv, index, generation)),
                Action::CancelSend => cancel_entry(Token::new(Op::Send, index, generation)),
                Action::ShutdownWrite => {
                    // SAFETY: plain syscall on a descriptor this connection owns.
                    unsafe { libc::shutdown(fd.0, libc::SHUT_WR) };
                    continue;
                }
                Action::Close => {
                    close = true;
                    break;
                }
            };
            // SAFETY: a send points into the connection's `sending` buffer,
            // which the core leaves untouched until the send reports back,
            // into a session's `'static` bytes, or into a receive buffer
            // lent to it, which is out of the kernel's ring (so never
            // written) and is recycled only once the core is no longer
            // lending it, after the send reports. The connection (with its
            // heap buffer and descriptor) is not removed before its core
            // says Close, which it says only when no send or receive is in
            // flight; moving the slot inside the slab does not move either
            // buffer. Receives write only into
            // provided buffers, which the Uring owns. At teardown the
            // worker's Drop reaps every operation first.
            unsafe { self.uring.push(entry) };
        }
        lifecycle::dispatch_asks(&mut c.conn, key, env.mesh);
        if close {
            // Nothing in flight refers to it any more (the core waits for
            // that): closing the descriptor and freeing the output is safe.
            if let Some(Some(taken)) = self.core.conns.remove(index) {
                self.give_back_lent(taken);
            }
            self.core.stats.connections_closed.inc();
        } else {
            self.core.conns.settle(index, generation, &self.core.limits);
            if self.core.conns.over_budget() {
                lifecycle::evict_over_budget(self);
            }
        }
    }

    /// A receive buffer lent to a send goes back to the ring.
    fn give_back_lent(&mut self, taken: Taken) {
        self.uring.buffers(self.tcp_bufs).recycle(taken);
        self.lent -= 1;
    }

    fn on_udp_recv(&mut self, i: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.udp[i].armed = false;
        }
        if res < 0 {
            match -res {
                libc::ENOBUFS => {
                    self.uring.buffers(self.udp_bufs).ran_out();
                    self.core.stats.multishot_rearms.inc();
                }
                libc::ECANCELED => {}
                errno => tracing::debug!("udp recvmsg: {}", io::Error::from_raw_os_error(errno)),
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let bufs = self.uring.buffers(self.udp_bufs);
        let taken = bufs.take(bid, res as usize);
        let socket = &mut self.udp[i];
        let received = udp::parse_received(bufs.bytes(&taken), &socket.template);
        let peer = received.as_ref().and_then(|r| r.peer);
        let answered = received.as_ref().zip(peer).map(|(received, peer)| {
            let (handler, gso) = (&mut *socket.handler, socket.gso);
            self.answering
                .answer(received, peer, handler, self.core.now, gso);
            peer
        });
        bufs.recycle(taken);
        if let Some(peer) = answered {
            self.send_replies(i, peer);
        }
        self.publish_sessions();
    }

    /// Copies the session tables' state (summed over this worker's UDP
    /// sockets) into the counters.
    fn publish_sessions(&self) {
        let tables = self.udp.iter().map(|socket| socket.handler.sessions());
        self.core.stats.publish_sessions(tables);
    }

    /// Sends the replies just planned to `peer`.
    fn send_replies(&mut self, i: usize, peer: std::net::SocketAddr) {
        for p in 0..self.answering.sends().len() {
            let (first, count, size) = self.answering.sends()[p];
            let gso = (count > 1).then_some(size as u16);
            let Some(slot_index) = self.free_send_slots.pop() else {
                // Every slot is in flight (a burst): send this one right away
                // rather than drop it.
                self.send_now(i, peer, first, count, gso);
                continue;
            };
            let slot = &mut self.send_slots[slot_index as usize];
            slot.fill(self.answering.replies(), first, count);
            slot.socket = i;
            let msg = slot.prepare(peer, gso);
            let entry = opcode::SendMsg::new(types::Fd(self.udp[i].fd.as_raw_fd()), msg)
                .build()
                .user_data(Token::new(Op::UdpSend, slot_index, 0).encode());
            // SAFETY: the slot is boxed and stays off the free list (so
            // unchanged) until this send completes; the worker's Drop reaps
            // it before the slots are freed.
            unsafe { self.push(entry) };
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
        slot.fill(self.answering.replies(), first, count);
        let fd = self.udp[i].fd.as_raw_fd();
        let result = udp::send_now(fd, slot, peer, gso);
        self.core.stats.udp_direct_sends.inc();
        if udp::count_send(&self.core.stats, slot.segments, result) {
            // The path refused the train: this socket sends no more, and
            // this one goes out a datagram at a time.
            self.udp[i].gso = false;
            let train = std::mem::replace(&mut self.overflow_slot, SendSlot::new());
            udp::resend_singly(fd, &train, &mut self.overflow_slot, &self.core.stats);
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
        if udp::count_send(&self.core.stats, slot.segments, result) {
            // The path refused GSO on this socket: resend this train one
            // datagram at a time, and send no more trains there.
            let i = slot.socket;
            if let Some(socket) = self.udp.get_mut(i) {
                socket.gso = false;
                let fd = socket.fd.as_raw_fd();
                udp::resend_singly(fd, slot, &mut self.overflow_slot, &self.core.stats);
            }
        }
        self.free_send_slots.push(slot_index);
    }

    // ----- accepting, timers and shutdown -----

    fn after_batch(&mut self) {
        lifecycle::fire_deadlines(self);
        let accept_paused = self.core.timers.accept_paused(self.core.now);
        self.update_accepting(accept_paused);
        if !self.core.timers.draining() {
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
        let open = !self.core.timers.draining() && !paused;
        let mut room = self
            .settings
            .max_connections
            .saturating_sub(self.core.conns.len());
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
            let fd = types::Fd(l.fd.as_raw_fd());
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
            let entry = entry.user_data(Token::new(Op::Accept, i as u32, 0).encode());
            // SAFETY: no address is asked for; the listening socket lives as
            // long as the worker, whose Drop reaps this accept first.
            unsafe { self.push(entry) };
        }
    }

    fn begin_shutdown(&mut self) {
        if !lifecycle::begin_shutdown(self, self.settings.shutdown_deadline) {
            return;
        }
        self.update_accepting(true);
        for i in 0..self.udp.len() {
            if self.udp[i].armed {
                self.cancel(Token::new(Op::UdpRecv, i as u32, 0));
            }
        }
    }

    /// Cancels every operation and reaps until none is in flight (closing
    /// connections accepted meanwhile); false if the kernel did not finish
    /// within [`TEARDOWN_WAIT`].
    fn quiesce(&mut self) -> bool {
        let cancel = Token::new(Op::Cancel, 0, 0).encode();
        self.uring.quiesce(cancel, TEARDOWN_WAIT, |cqe| {
            if let Some((tag, parcel)) = mesh::untag_address(cqe.user_data()) {
                if tag == mesh::DELIVERED_TAG || cqe.result() < 0 {
                    // SAFETY: as in `on_parcel`: this box is ours. Too
                    // late to answer it: it is dropped.
                    drop(unsafe { Box::from_raw(parcel) });
                }
                return;
            }
            let accepted = Token::decode(cqe.user_data()).is_some_and(|t| t.op == Op::Accept);
            if accepted && cqe.result() >= 0 {
                // SAFETY: a new descriptor nothing else owns; closed at once.
                drop(unsafe { OwnedFd::from_raw_fd(cqe.result()) });
            }
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.quiesce() {
            return;
        }
        tracing::warn!(
            worker = self.settings.id,
            "{} io_uring operation(s) did not finish at teardown; leaking their memory",
            self.uring.in_flight()
        );
        // The kernel may still read or write these: never free them.
        std::mem::forget(std::mem::replace(&mut self.core.conns, Conns::new(0, 0)));
        std::mem::forget(std::mem::take(&mut self.send_slots));
        std::mem::forget(std::mem::take(&mut self.udp));
        std::mem::forget(std::mem::replace(&mut self.overflow_slot, SendSlot::new()));
        std::mem::forget(std::mem::replace(
            &mut self.wake_buf,
            Box::new(UnsafeCell::new(0)),
        ));
    }
}

/// An entry that cancels the operation `target` names.
fn cancel_entry(target: Token) -> squeue::Entry {
    opcode::AsyncCancel::new(target.encode())
        .build()
        .user_data(Token::new(Op::Cancel, 0, 0).encode())
}

impl lifecycle::Driver for Worker {
    type Io = Option<Taken>;

    fn core(&mut self) -> &mut WorkerCore<Option<Taken>> {
        &mut self.core
    }

    fn progress(&mut self, index: u32, generation: u32) {
        Worker::progress(self, index, generation);
    }

    /// Posts the parcel to its worker's ring with one `MSG_RING`.
    fn post_parcel(&mut self, mesh: &MeshShared, to: usize, parcel: Parcel) {
        let Some(ring) = mesh.ring(to) else {
            self.parcel_failed(parcel, -libc::EBADFD);
            return;
        };
        let raw = Box::into_raw(Box::new(parcel));
        let tags = mesh::tag_address(mesh::DELIVERED_TAG, raw)
            .zip(mesh::tag_address(mesh::POSTED_TAG, raw));
        let Some((delivered, posted)) = tags else {
            // SAFETY: made from a box just now and handed to nobody.
            let parcel = unsafe { Box::from_raw(raw) };
            self.parcel_failed(*parcel, -libc::EFAULT);
            return;
        };
        let entry = opcode::MsgRingData::new(types::Fd(ring), 0, delivered, None)
            .build()
            .user_data(posted);
        // SAFETY: the entry points at no memory: it carries the parcel's
        // address as a number, which the receiver turns back into the box
        // (or this worker, if the post fails). The receiver's ring stays
        // open in the mesh until every worker has stopped, and no worker
        // stops while parcels to it may still come (`MeshLocal::may_stop`).
        unsafe { self.push(entry) };
    }
}
