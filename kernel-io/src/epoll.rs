//! An epoll instance for edge-triggered readiness, for the engine's epoll
//! driver and loadgen's readiness path.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::token::{OpCode, Token};

/// An epoll instance (edge-triggered use only).
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for `events` (edge-triggered), reporting `token`.
    pub fn add<O: OpCode>(&self, fd: RawFd, token: Token<O>, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events | libc::EPOLLET as u32,
            u64: token.encode(),
        };
        // SAFETY: `event` is a live epoll_event for the duration of the call.
        let rc =
            unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (forever if `None`) and fills `events` (up to
    /// its capacity).
    pub fn wait(
        &self,
        events: &mut Vec<libc::epoll_event>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            // Round up: a wait that ends before its timer would spin.
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        events.clear();
        // SAFETY: the pointer and capacity describe `events`' spare room,
        // which the kernel fills with at most that many entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.capacity() as i32,
                ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel initialised the first `n` entries.
        unsafe { events.set_len(n as usize) };
        Ok(())
    }
}
