//! The readiness path of a load thread, for where io_uring is unavailable
//! (a container's seccomp profile, `kernel.io_uring_disabled`): non-blocking
//! sockets in an edge-triggered epoll set, read and written with plain
//! syscalls. The bookkeeping is the worker's, shared with the ring path.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use engine::epoll::Epoll;
use engine::token::Token;
use socket2::{SockAddr, Socket};

use super::{Failure, Link, Worker};

/// Readiness events taken per wait.
const EVENTS: usize = 256;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// An epoll set and its event buffer.
pub struct Poller {
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    /// A new, empty set.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
            events: Vec::with_capacity(EVENTS),
        })
    }

    /// Starts a non-blocking connect of `socket` to `addr` and watches it
    /// (in, out, peer close), reporting `token`; true if it connected at
    /// once, false if its writable edge will say.
    pub fn connect(&self, socket: &Socket, addr: SocketAddr, token: Token) -> io::Result<bool> {
        socket.set_nonblocking(true)?;
        let now = match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
            Err(e) => return Err(e),
        };
        let interest = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
        self.epoll.add(socket.as_raw_fd(), token, interest)?;
        Ok(now)
    }
}

impl Worker<'_> {
    /// Waits up to `wait` for readiness and handles every event.
    pub(super) fn poll_ready(&mut self, wait: Duration) -> anyhow::Result<()> {
        let super::Io::Readiness(poller) = &mut self.io else {
            return Ok(());
        };
        let mut events = std::mem::take(&mut poller.events);
        match poller.epoll.wait(&mut events, Some(wait)) {
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
            let Some(c) = self.clients.get(i) else {
                continue;
            };
            if c.generation & 0xff_ffff != token.generation {
                continue; // an earlier socket of this slot
            }
            let out = bits & libc::EPOLLOUT as u32 != 0;
            let trouble = bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            if c.link == Link::Connecting && (out || trouble) {
                let res = match c.socket.as_ref().map(Socket::take_error) {
                    Some(Ok(None)) => 0,
                    Some(Ok(Some(e)) | Err(e)) => -e.raw_os_error().unwrap_or(libc::EIO),
                    None => -libc::EBADF,
                };
                self.on_connect(i, res, now);
                continue;
            }
            if self.clients[i].link != Link::Up {
                continue;
            }
            // Read first: replies free slots and decide what to send next.
            self.read_ready(i, now);
            if out && self.clients[i].link == Link::Up {
                self.write_ready(i);
            }
        }
        if let super::Io::Readiness(poller) = &mut self.io {
            poller.events = events;
        }
        Ok(())
    }

    /// Reads client `i` until the socket is empty (edge-triggered), checking
    /// every byte; EOF or an error fails the connection.
    fn read_ready(&mut self, i: usize, now: Instant) {
        if self.read_buf.len() < READ_CHUNK {
            self.read_buf.resize(READ_CHUNK, 0);
        }
        while self.clients[i].link == Link::Up {
            let fd = self.clients[i].fd();
            // SAFETY: `read_buf` is a live buffer of the length passed.
            let n =
                unsafe { libc::read(fd, self.read_buf.as_mut_ptr().cast(), self.read_buf.len()) };
            match n {
                0 => return self.fail(i, Failure::Closed, now),
                n if n > 0 => {
                    let n = n as usize;
                    let taken =
                        self.clients[i].take_reply(&self.read_buf[..n], &mut self.bad_status);
                    self.on_answers(i, taken, n, now);
                }
                _ => {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) => return,
                        Some(libc::EINTR) => continue,
                        _ => return self.fail(i, Failure::Reset, now),
                    }
                }
            }
        }
    }

    /// Writes what client `i` has queued until it is all out or the socket
    /// is full; the next writable edge continues.
    pub(super) fn write_ready(&mut self, i: usize) {
        loop {
            let c = &mut self.clients[i];
            if c.link != Link::Up {
                return;
            }
            let fd = c.fd();
            let rest = c.unsent();
            if rest.is_empty() {
                return;
            }
            // SAFETY: `rest` is a live buffer of the length passed.
            let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                c.sent += n as usize;
                self.out.bytes_sent += n as u64;
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => return,
                Some(libc::EINTR) => continue,
                _ => return self.fail(i, Failure::Reset, Instant::now()),
            }
        }
    }
}
