//! The readiness driver of a load thread, for where io_uring is unavailable
//! (a container's seccomp profile, `kernel.io_uring_disabled`): non-blocking
//! sockets in an edge-triggered epoll set, read and written with plain
//! syscalls. The kernel holds none of its memory between calls, so a broken
//! connection closes at once.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::op::{Op, Token};
use anyhow::Context;
use kernel_io::epoll::Epoll;
use socket2::{Domain, SockAddr, Socket, Type};

use super::super::client::Failure;
use super::super::TcpPlan;
use super::core::{Core, Effect};
use super::{apply, Driver};

/// Readiness events taken per wait.
const EVENTS: usize = 256;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// What the driver keeps of one connection slot.
#[derive(Default)]
struct Slot {
    socket: Option<Socket>,
    /// The core's generation when this socket was opened.
    generation: u32,
    /// When its connect began (a non-blocking connect has no timeout of
    /// its own: the driver bounds it).
    connect_started: Option<Instant>,
    /// The bytes being written, `sent` of them out.
    sending: Vec<u8>,
    sent: usize,
}

impl Slot {
    fn fd(&self) -> i32 {
        self.socket.as_ref().map_or(-1, |s| s.as_raw_fd())
    }
}

pub struct ReadinessDriver {
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
    addr: SocketAddr,
    timeout: Duration,
    slots: Vec<Slot>,
    read_buf: Vec<u8>,
    effects: Vec<Effect>,
    /// When connects are next checked against the timeout.
    next_connect_check: Instant,
}

impl ReadinessDriver {
    pub fn new(plan: &TcpPlan, slots: usize) -> anyhow::Result<Self> {
        Ok(Self {
            epoll: Epoll::new().context("creating the epoll instance")?,
            events: Vec::with_capacity(EVENTS),
            addr: plan.addr,
            timeout: plan.timeout,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            read_buf: vec![0; READ_CHUNK],
            effects: Vec::new(),
            next_connect_check: Instant::now(),
        })
    }

    /// Starts a non-blocking connect on slot `i`, watched for in, out and
    /// peer close; a connect that completes at once is reported at once.
    fn connect(&mut self, core: &mut Core<'_>, i: usize, now: Instant) {
        let generation = core.generation(i);
        let slot = &mut self.slots[i];
        slot.socket = None;
        slot.sending.clear();
        slot.sent = 0;
        slot.generation = generation;
        slot.connect_started = Some(now);
        let started = (|| {
            let socket = Socket::new(
                Domain::for_address(self.addr),
                Type::STREAM.cloexec().nonblocking(),
                None,
            )?;
            let _ = socket.set_nodelay(true);
            let at_once = match socket.connect(&SockAddr::from(self.addr)) {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
                Err(e) => return Err(e),
            };
            let interest = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
            let token = Token::new(Op::Connect, i as u32, generation);
            self.epoll.add(socket.as_raw_fd(), token, interest)?;
            Ok((socket, at_once))
        })();
        match started {
            Ok((socket, at_once)) => {
                slot.socket = Some(socket);
                // Connected at once (loopback can): no event will say so.
                if at_once {
                    slot.connect_started = None;
                    core.on_connect(i, 0, now);
                }
            }
            Err(e) => {
                slot.connect_started = None;
                core.on_connect(i, -e.raw_os_error().unwrap_or(libc::EIO), now);
            }
        }
    }

    /// A connect ended (`res` 0 or a negated errno).
    fn connected(&mut self, core: &mut Core<'_>, i: usize, res: i32, now: Instant) {
        let slot = &mut self.slots[i];
        slot.connect_started = None;
        if res < 0 {
            slot.socket = None;
        }
        core.on_connect(i, res, now);
    }

    /// Connects that took the timeout have failed.
    fn time_out_connects(&mut self, core: &mut Core<'_>, now: Instant) {
        if now < self.next_connect_check {
            return;
        }
        self.next_connect_check =
            now + (self.timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        for i in 0..self.slots.len() {
            let late = self.slots[i]
                .connect_started
                .is_some_and(|at| now.saturating_duration_since(at) >= self.timeout);
            if late && core.is_connecting(i) {
                self.connected(core, i, -libc::ETIMEDOUT, now);
            }
        }
    }

    /// Reads slot `i` until the socket is empty (edge-triggered), handing
    /// every byte to the core; EOF or an error fails the connection.
    fn read_ready(&mut self, core: &mut Core<'_>, i: usize, now: Instant) {
        while core.is_up(i) {
            let fd = self.slots[i].fd();
            // SAFETY: `read_buf` is a live buffer of the length passed.
            let n =
                unsafe { libc::read(fd, self.read_buf.as_mut_ptr().cast(), self.read_buf.len()) };
            match n {
                0 => return core.on_io_error(i, Failure::Closed, now),
                n if n > 0 => core.on_data(i, &self.read_buf[..n as usize], now),
                _ => match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR) => continue,
                    _ => return core.on_io_error(i, Failure::Reset, now),
                },
            }
        }
    }

    /// Writes what slot `i` has to send until it is all out or the socket
    /// is full; the next writable edge continues.
    fn write_ready(&mut self, core: &mut Core<'_>, i: usize) {
        while core.is_up(i) {
            let slot = &mut self.slots[i];
            if slot.sent == slot.sending.len() {
                core.take_queued(i, &mut slot.sending);
                slot.sent = 0;
            }
            let rest = &slot.sending[slot.sent..];
            if rest.is_empty() {
                return;
            }
            // SAFETY: `rest` is a live buffer of the length passed.
            let n = unsafe {
                libc::send(
                    slot.fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                slot.sent += n as usize;
                core.on_sent(n as usize);
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => return,
                Some(libc::EINTR) => continue,
                _ => return core.on_io_error(i, Failure::Reset, Instant::now()),
            }
        }
    }
}

impl Driver for ReadinessDriver {
    fn carry_out(&mut self, core: &mut Core<'_>, effect: Effect, now: Instant) {
        match effect {
            Effect::Connect(i) => self.connect(core, i, now),
            Effect::Send(i) => self.write_ready(core, i),
            Effect::Close(i) => {
                // Closing also drops it from the epoll set.
                self.slots[i].socket = None;
                core.on_closed(i, now);
            }
        }
    }

    fn effects(&mut self) -> &mut Vec<Effect> {
        &mut self.effects
    }

    fn wait(&mut self, core: &mut Core<'_>, wait: Duration) -> anyhow::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        match self.epoll.wait(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("epoll_wait"),
        }
        let now = Instant::now();
        for event in &events {
            let (bits, data) = (event.events, event.u64);
            let Some(token) = Token::decode(data) else {
                continue;
            };
            let i = token.index as usize;
            let Some(slot) = self.slots.get(i) else {
                continue;
            };
            if slot.generation & 0xff_ffff != token.generation {
                continue; // an earlier socket of this slot
            }
            let out = bits & libc::EPOLLOUT as u32 != 0;
            let trouble = bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            if core.is_connecting(i) && (out || trouble) {
                let res = match slot.socket.as_ref().map(Socket::take_error) {
                    Some(Ok(None)) => 0,
                    Some(Ok(Some(e)) | Err(e)) => -e.raw_os_error().unwrap_or(libc::EIO),
                    None => -libc::EBADF,
                };
                self.connected(core, i, res, now);
            } else if core.is_up(i) {
                // Read first: replies free slots and decide what to send next.
                self.read_ready(core, i, now);
                if out {
                    self.write_ready(core, i);
                }
            }
            apply(core, self);
        }
        self.events = events;
        self.time_out_connects(core, now);
        apply(core, self);
        Ok(())
    }
}
