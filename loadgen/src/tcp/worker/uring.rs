//! The io_uring driver of a load thread: connects bounded by a linked
//! timeout, one multishot receive per connection into a provided buffer
//! ring, one send in flight per connection. It owns everything the kernel
//! reads or writes (the ring and its buffers, the sockets, the bytes being
//! sent, the connect arguments), and its `Drop` reaps every operation
//! before any of it is freed.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::op::{Op, Token};
use anyhow::Context;
use io_uring::{cqueue, opcode, types};
use kernel_io::bufring::BufRing;
use kernel_io::uring::Uring;
use socket2::{Domain, SockAddr, Socket, Type};

use super::super::client::Failure;
use super::super::TcpPlan;
use super::core::{Core, Effect};
use super::{apply, Driver};

/// The target's address and the connect timeout, at addresses that stay put
/// while the kernel reads them.
struct ConnectArgs {
    addr: SockAddr,
    timeout: types::Timespec,
}

/// What the driver keeps of one connection slot.
#[derive(Default)]
struct Slot {
    socket: Option<Socket>,
    /// The core's generation when this socket was opened.
    generation: u32,
    /// A multishot receive is armed (the socket must not close yet).
    recv_armed: bool,
    /// A send is in flight (`sending` must not change).
    send_busy: bool,
    /// The bytes of the send in progress, `sent` of them written.
    sending: Vec<u8>,
    sent: usize,
    /// The core gave the connection up: close once nothing is in flight.
    closing: bool,
}

impl Slot {
    fn fd(&self) -> i32 {
        self.socket.as_ref().map_or(-1, |s| s.as_raw_fd())
    }
}

pub struct UringDriver {
    uring: Uring,
    /// Boxed: connect submissions point into them.
    connect_args: Box<ConnectArgs>,
    addr: SocketAddr,
    slots: Vec<Slot>,
    cqes: Vec<cqueue::Entry>,
    effects: Vec<Effect>,
    /// Receives to arm again once the buffers are published.
    rearm: Vec<usize>,
}

impl UringDriver {
    pub fn new(plan: &TcpPlan, slots: usize) -> anyhow::Result<Self> {
        let entries = (slots * 3 + 64).next_power_of_two().min(4096) as u32;
        let mut uring = Uring::new(entries)?;
        let bufs = BufRing::new(1024, 16 * 1024, 0).context("allocating receive buffers")?;
        uring
            .add_buffers(bufs)
            .context("registering the receive buffer ring")?;
        Ok(Self {
            uring,
            connect_args: Box::new(ConnectArgs {
                addr: SockAddr::from(plan.addr),
                timeout: types::Timespec::from(plan.timeout),
            }),
            addr: plan.addr,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            cqes: Vec::new(),
            effects: Vec::new(),
            rearm: Vec::new(),
        })
    }

    /// Starts a connect on slot `i`, bounded by a linked timeout.
    fn connect(&mut self, core: &mut Core<'_>, i: usize) {
        let socket = match Socket::new(Domain::for_address(self.addr), Type::STREAM.cloexec(), None)
        {
            Ok(socket) => socket,
            // Out of descriptors, say: the core counts it and retries.
            Err(e) => {
                return core.on_connect(
                    i,
                    -e.raw_os_error().unwrap_or(libc::EMFILE),
                    Instant::now(),
                )
            }
        };
        let _ = socket.set_nodelay(true);
        let generation = core.generation(i);
        let slot = &mut self.slots[i];
        *slot = Slot {
            generation,
            sending: std::mem::take(&mut slot.sending),
            ..Slot::default()
        };
        slot.sending.clear();
        let connect = opcode::Connect::new(
            types::Fd(socket.as_raw_fd()),
            self.connect_args.addr.as_ptr().cast(),
            self.connect_args.addr.len(),
        )
        .build()
        .user_data(Token::new(Op::Connect, i as u32, generation).encode());
        let timeout = opcode::LinkTimeout::new(&self.connect_args.timeout)
            .build()
            .user_data(Token::new(Op::Cancel, 0, 0).encode());
        slot.socket = Some(socket);
        // SAFETY: the address and timespec live in `connect_args`, boxed and
        // owned by the driver, whose Drop reaps every operation before they
        // are freed; the socket is closed only once its connect completed.
        unsafe { self.uring.push_linked(connect, timeout) };
    }

    /// Arms the multishot receive of slot `i`.
    fn arm_recv(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.recv_armed = true;
        let group = self.uring.buffers(0).group();
        let entry = opcode::RecvMulti::new(types::Fd(slot.fd()), group)
            .build()
            .user_data(Token::new(Op::Recv, i as u32, slot.generation).encode());
        // SAFETY: the kernel writes only into the provided buffers, which the
        // Uring owns; the socket is closed only after this receive ended, and
        // the driver's Drop reaps it before the slots go.
        unsafe { self.uring.push(entry) };
    }

    /// Sends what slot `i` has to send, one send in flight at a time.
    fn flush(&mut self, core: &mut Core<'_>, i: usize) {
        let slot = &mut self.slots[i];
        if slot.send_busy || slot.closing || !core.is_up(i) {
            return;
        }
        if slot.sent == slot.sending.len() {
            core.take_queued(i, &mut slot.sending);
            slot.sent = 0;
        }
        let rest = &slot.sending[slot.sent..];
        if rest.is_empty() {
            return;
        }
        let entry = opcode::Send::new(types::Fd(slot.fd()), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Token::new(Op::Send, i as u32, slot.generation).encode());
        slot.send_busy = true;
        // SAFETY: `sending` is the driver's and is not touched while
        // `send_busy`; the slot is not reconnected until its send completed,
        // and the driver's Drop reaps every send before the slots go.
        unsafe { self.uring.push(entry) };
    }

    /// The core gave slot `i` up: wakes its receive and send with an error
    /// or EOF, and closes the socket once both ended.
    fn close(&mut self, core: &mut Core<'_>, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        slot.closing = true;
        // SAFETY: plain syscall on a descriptor this slot owns (-1: none,
        // which fails harmlessly).
        unsafe { libc::shutdown(slot.fd(), libc::SHUT_RDWR) };
        self.close_if_quiet(core, i, now);
    }

    fn close_if_quiet(&mut self, core: &mut Core<'_>, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        if slot.closing && !slot.recv_armed && !slot.send_busy {
            slot.closing = false;
            slot.socket = None;
            core.on_closed(i, now);
        }
    }

    /// One completion.
    fn complete(&mut self, core: &mut Core<'_>, cqe: &cqueue::Entry, now: Instant) {
        let Some(token) = Token::decode(cqe.user_data()) else {
            return;
        };
        let i = token.index as usize;
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let current = slot.generation & 0xff_ffff == token.generation;
        match token.op {
            Op::Connect if current => {
                if res < 0 {
                    slot.socket = None;
                }
                core.on_connect(i, res, now);
                if res >= 0 && core.is_up(i) {
                    self.arm_recv(i);
                }
            }
            Op::Recv => {
                if !cqueue::more(flags) && current {
                    slot.recv_armed = false;
                }
                if let Some(bid) = cqueue::buffer_select(flags) {
                    let bufs = self.uring.buffers(0);
                    let buf = bufs.take(bid, res.max(0) as usize);
                    if current && res > 0 {
                        core.on_data(i, bufs.bytes(&buf), now);
                    }
                    bufs.recycle(buf);
                }
                if res == -libc::ENOBUFS {
                    self.uring.buffers(0).ran_out();
                }
                if current && core.is_up(i) {
                    match res {
                        0 => core.on_io_error(i, Failure::Closed, now),
                        r if r == -libc::ENOBUFS => self.rearm.push(i),
                        r if r < 0 => core.on_io_error(i, Failure::Reset, now),
                        _ if !cqueue::more(flags) => self.rearm.push(i),
                        _ => {}
                    }
                }
            }
            Op::Send if current => {
                slot.send_busy = false;
                if res < 0 {
                    core.on_io_error(i, Failure::Reset, now);
                } else {
                    slot.sent += res as usize;
                    core.on_sent(res as usize);
                    self.flush(core, i);
                }
            }
            _ => {}
        }
        if current {
            self.close_if_quiet(core, i, now);
        }
    }
}

impl Driver for UringDriver {
    fn carry_out(&mut self, core: &mut Core<'_>, effect: Effect, now: Instant) {
        match effect {
            Effect::Connect(i) => self.connect(core, i),
            Effect::Send(i) => self.flush(core, i),
            Effect::Close(i) => self.close(core, i, now),
        }
    }

    fn effects(&mut self) -> &mut Vec<Effect> {
        &mut self.effects
    }

    fn wait(&mut self, core: &mut Core<'_>, wait: Duration) -> anyhow::Result<()> {
        self.uring
            .enter(Some(wait.max(Duration::from_micros(1))))
            .context("io_uring_enter")?;
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        self.uring.reap(&mut cqes);
        let now = Instant::now();
        for cqe in &cqes {
            self.complete(core, cqe, now);
        }
        self.cqes = cqes;
        self.uring.publish_buffers();
        for i in std::mem::take(&mut self.rearm) {
            let slot = &self.slots[i];
            if core.is_up(i) && !slot.recv_armed && !slot.closing {
                self.arm_recv(i);
            }
        }
        apply(core, self);
        Ok(())
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // The slots' send buffers and sockets and the connect arguments must
        // outlive every operation that points at them: cancel all and wait
        // for the last completions.
        let cancel = Token::new(Op::Cancel, 0, 0).encode();
        if !self.uring.quiesce(cancel, Duration::from_secs(2), |_| {}) {
            // The kernel still holds some: leak them rather than free memory
            // it may read.
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::replace(
                &mut self.connect_args,
                Box::new(ConnectArgs {
                    addr: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
                    timeout: types::Timespec::new(),
                }),
            ));
        }
    }
}
