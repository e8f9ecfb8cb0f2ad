//! One TCP connection's state as the worker sees it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use protocols::{Next, StreamSession};

use crate::stats::WorkerStats;

/// Where the connection's multishot receive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvState {
    /// No receive outstanding.
    Idle,
    /// A multishot receive is armed.
    Armed,
    /// A cancel was requested; the final completion has not arrived yet.
    Cancelling,
}

/// Output buffers above this capacity are released once empty, so a
/// connection that once moved a lot of data does not keep the memory idle.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A TCP connection: its socket, its protocol session and its output.
pub struct Conn {
    /// The socket; closed when the connection is dropped.
    pub fd: OwnedFd,
    /// The protocol state machine.
    pub session: Box<dyn StreamSession>,
    /// Reply bytes not yet handed to the kernel.
    pub pending: Vec<u8>,
    /// Bytes owned by the send in flight (or waiting for the next part of it).
    pub sending: Vec<u8>,
    /// How much of `sending` the kernel has taken.
    pub sent: usize,
    /// A send is outstanding; `sending` must not change until it completes.
    pub send_in_flight: bool,
    /// The multishot receive's state.
    pub recv: RecvState,
    /// No more reading: the peer closed its side, the protocol asked to
    /// close, or the worker is shutting down.
    pub read_done: bool,
    /// The peer closed its sending side (we read EOF).
    pub peer_closed: bool,
    /// Everything is answered and our side is shut down (FIN sent); input is
    /// read and discarded until the peer closes, so that closing with unread
    /// input does not turn into a reset that could destroy our replies.
    pub lingering: bool,
    /// At shutdown: the bytes still to read of what the kernel had queued
    /// when reading stopped; set once, counted down by the drain.
    pub drain_budget: Option<usize>,
    /// An error ended the connection; close once the kernel is done with it.
    pub failed: bool,
    /// The protocol keeps time: it gets a tick every sweep.
    pub ticks: bool,
    /// When data last arrived (or the connection was accepted).
    pub last_active: Instant,
}

impl Conn {
    /// A fresh connection on `fd` speaking through `session`.
    pub fn new(fd: OwnedFd, session: Box<dyn StreamSession>, now: Instant) -> Self {
        Self {
            ticks: session.wants_ticks(),
            last_active: now,
            fd,
            session,
            pending: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            send_in_flight: false,
            recv: RecvState::Idle,
            read_done: false,
            peer_closed: false,
            lingering: false,
            drain_budget: None,
            failed: false,
        }
    }

    /// Reply bytes produced but not yet taken by the kernel.
    pub fn unsent(&self) -> usize {
        self.pending.len() + self.sending.len() - self.sent
    }

    /// True once every reply the connection will ever make has been sent
    /// (including output the session has yet to produce).
    pub fn all_answered(&self) -> bool {
        self.read_done
            && self.unsent() == 0
            && !self.send_in_flight
            && !self.session.has_more_output()
    }

    /// Whether a receive should be armed: to feed the protocol (unless the
    /// output is above `resume_at`), or to discard input while lingering.
    pub fn wants_input(&self, draining: bool, resume_at: usize) -> bool {
        if self.failed || self.peer_closed {
            return false;
        }
        self.lingering || (!self.read_done && !draining && self.unsent() <= resume_at)
    }

    /// True when no kernel operation refers to this connection any more.
    pub fn quiescent(&self) -> bool {
        self.recv == RecvState::Idle && !self.send_in_flight
    }

    /// Moves queued output into `sending` when no send is under way; returns
    /// true when there is something to send.
    pub fn next_send(&mut self) -> bool {
        if self.send_in_flight {
            return false;
        }
        if self.sent == self.sending.len() {
            self.sending.clear();
            self.sent = 0;
            std::mem::swap(&mut self.pending, &mut self.sending);
        }
        if self.sending.is_empty() {
            self.release_idle_memory();
            return false;
        }
        true
    }

    /// At shutdown, reads (without waiting) what the kernel had queued for
    /// the connection when reading stopped, and feeds it to the session while
    /// the output stays under `limit`; called again as sends free room. Marks
    /// reading done once that budget is used up, the peer closed, or the
    /// protocol closed.
    pub fn drain_received(&mut self, scratch: &mut [u8], limit: usize, stats: &WorkerStats) {
        let fd = self.fd.as_raw_fd();
        let mut budget = self
            .drain_budget
            .unwrap_or_else(|| crate::socket::queued_input(fd));
        while budget > 0 && self.unsent() <= limit {
            let want = budget.min(scratch.len());
            // SAFETY: `scratch` is a live, writable buffer of at least `want` bytes.
            let n =
                unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
            if n <= 0 {
                if n == 0 {
                    self.peer_closed = true;
                    self.session.on_eof(&mut self.pending);
                }
                break; // EOF, or nothing queued after all: done
            }
            budget -= n as usize;
            let data = &scratch[..n as usize];
            stats.bytes_in.add(data.len() as u64);
            stats.messages_in.inc();
            if self.session.on_bytes(data, &mut self.pending) == Next::Close {
                budget = 0;
            }
        }
        self.drain_budget = Some(budget);
        // Stopped with room to spare: the budget is spent or the socket is empty.
        if budget == 0 || self.unsent() <= limit {
            self.read_done = true;
        }
    }

    /// A session writing a long body writes more once the output has
    /// drained below half of `limit`.
    pub fn refill_output(&mut self, limit: usize) {
        if !self.failed
            && self.unsent() <= limit / 2
            && self.session.has_more_output()
            && self.session.on_drained(&mut self.pending) == Next::Close
        {
            self.read_done = true;
        }
    }

    /// Once every reply is sent, sends our FIN and starts lingering (input
    /// is then read and discarded until the peer closes). True when it did
    /// so now: the caller starts the linger timer.
    pub fn finish_sending(&mut self) -> bool {
        if !self.all_answered() || self.failed || self.peer_closed || self.lingering {
            return false;
        }
        // SAFETY: plain syscall on a descriptor this connection owns.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
        self.lingering = true;
        true
    }

    /// Gives a time-keeping session its tick at `now`; true when that
    /// changed something the caller must act on (a reply, or the close).
    pub fn tick(&mut self, now: Instant, stats: &WorkerStats) -> bool {
        if !self.ticks || self.read_done || self.failed {
            return false;
        }
        let before = self.pending.len();
        let silent_for = now.duration_since(self.last_active);
        if self.session.on_tick(now, silent_for, &mut self.pending) == Next::Close {
            self.read_done = true;
            stats.idle_timeouts.inc();
        }
        self.read_done || self.pending.len() != before
    }

    fn release_idle_memory(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
        if self.sending.is_empty() && self.sending.capacity() > KEEP_CAPACITY {
            self.sending = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocols::echo::EchoStream;

    fn conn() -> Conn {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Conn::new(OwnedFd::from(a), Box::new(EchoStream), Instant::now())
    }

    #[test]
    fn output_moves_from_pending_to_sending_in_order() {
        let mut c = conn();
        assert!(!c.next_send());
        c.pending.extend_from_slice(b"abc");
        assert!(c.next_send());
        assert_eq!(c.sending, b"abc");
        c.send_in_flight = true;
        c.pending.extend_from_slice(b"de");
        assert!(!c.next_send(), "one send at a time");
        assert_eq!(c.unsent(), 5);
        c.send_in_flight = false;
        c.sent = 2;
        assert!(c.next_send(), "the rest of a short send goes first");
        assert_eq!(&c.sending[c.sent..], b"c");
        c.sent = 3;
        assert!(c.next_send());
        assert_eq!(c.sending, b"de");
        assert_eq!(c.unsent(), 2);
    }

    #[test]
    fn large_idle_buffers_are_released() {
        let mut c = conn();
        c.pending = vec![0; 100_000];
        assert!(c.next_send());
        c.sent = c.sending.len();
        assert!(!c.next_send());
        assert_eq!(c.sending.capacity() + c.pending.capacity(), 0);
    }
}
