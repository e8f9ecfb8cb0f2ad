//! A worker's io_uring together with the buffer rings registered on it.
//!
//! [`Uring`] owns the ring and the provided-buffer memory the kernel writes
//! through it, so the order in which they end is structural: its `Drop`
//! closes the ring first and frees the buffers after, and frees them only if
//! no operation can still be using them (otherwise it leaks them, on
//! purpose). It also counts the operations in flight, so an owner can
//! cancel everything and wait for the last completion before it frees the
//! memory its own operations point at (send buffers, msghdrs): see
//! [`Uring::cancel_all`] and [`Uring::in_flight`].

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::bufring::BufRing;
use crate::ring::RingMode;

/// A ring, its buffer rings, and what is in flight on it.
pub struct Uring {
    ring: ManuallyDrop<IoUring>,
    bufs: ManuallyDrop<Vec<BufRing>>,
    /// Entries that did not fit the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Operations pushed whose final completion has not been reaped.
    in_flight: usize,
    mode: RingMode,
}

impl Uring {
    /// A ring of `entries` SQEs with the best setup flags the kernel takes.
    pub fn new(entries: u32) -> Result<Self, crate::EngineError> {
        let (ring, mode) = crate::ring::create(entries)?;
        Ok(Self {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(Vec::new()),
            backlog: VecDeque::new(),
            in_flight: 0,
            mode,
        })
    }

    /// The setup flags the ring got.
    pub fn mode(&self) -> RingMode {
        self.mode
    }

    /// Registers `bufs` (its group id must be unused) and keeps it until the
    /// ring has ended; returns its index for [`buffers`](Self::buffers).
    pub fn add_buffers(&mut self, bufs: BufRing) -> io::Result<usize> {
        // SAFETY: `bufs` moves into `self`, whose Drop ends the ring before
        // freeing it (or leaks it while operations may still use it).
        unsafe { bufs.register(&self.ring)? };
        self.bufs.push(bufs);
        Ok(self.bufs.len() - 1)
    }

    /// Buffer ring `i`, as returned by [`add_buffers`](Self::add_buffers).
    pub fn buffers(&mut self, i: usize) -> &mut BufRing {
        &mut self.bufs[i]
    }

    /// Makes every recycled buffer of every buffer ring visible to the kernel.
    pub fn publish_buffers(&mut self) {
        for bufs in self.bufs.iter_mut() {
            bufs.publish();
        }
    }

    /// Queues `entry` for the next [`enter`](Self::enter) (holding it back
    /// in order if the submission queue is full).
    ///
    /// # Safety
    ///
    /// Every buffer, msghdr, iovec and descriptor `entry` points at must stay
    /// valid and unmoved (and buffers the kernel writes must not be read or
    /// written by Rust code) until the operation's final completion (the one
    /// without `IORING_CQE_F_MORE`) has been reaped, including when it is
    /// cancelled; or be deliberately leaked.
    pub unsafe fn push(&mut self, entry: squeue::Entry) {
        self.in_flight += 1;
        if self.backlog.is_empty() {
            // SAFETY: the caller keeps what the entry points at alive.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    /// Submits everything queued and waits for at least one completion
    /// (for at most `wait`, if given); returns how many entries it handed
    /// to the kernel. EINTR, ETIME and EBUSY are not errors.
    pub fn enter(&mut self, wait: Option<Duration>) -> io::Result<u64> {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: pushed through `push`, whose caller vouched for it.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
        let queued = self.ring.submission().len() as u64;
        // With a backlog, only submit; the wait happens once it is all in.
        let want = usize::from(self.backlog.is_empty());
        let result = match wait {
            Some(wait) if want == 1 => {
                let ts = types::Timespec::from(wait);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            _ => self.ring.submitter().submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(queued),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(queued)
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every completion waiting in the completion queue into `into`,
    /// counting the operations they end.
    pub fn reap(&mut self, into: &mut Vec<cqueue::Entry>) {
        let before = into.len();
        into.extend(self.ring.completion());
        let ended = into[before..]
            .iter()
            .filter(|cqe| !cqueue::more(cqe.flags()))
            .count();
        self.in_flight = self.in_flight.saturating_sub(ended);
    }

    /// Operations whose final completion has not been reaped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Cancels every operation in flight and reaps until none is left,
    /// handing each completion to `on_cqe` (to close a descriptor an accept
    /// returned meanwhile, say); false if the kernel did not finish within
    /// `wait`. Only after `true` may the memory the operations pointed at
    /// be freed.
    pub fn quiesce(
        &mut self,
        cancel_user_data: u64,
        wait: Duration,
        mut on_cqe: impl FnMut(&cqueue::Entry),
    ) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        self.cancel_all(cancel_user_data);
        let until = std::time::Instant::now() + wait;
        let mut cqes = Vec::new();
        while self.in_flight > 0 {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || self.enter(Some(left)).is_err() {
                return false;
            }
            self.reap(&mut cqes);
            cqes.drain(..).for_each(|cqe| on_cqe(&cqe));
        }
        true
    }

    /// Asks the kernel to cancel every operation in flight (and drops what
    /// was never submitted). Completions still arrive, as ECANCELED.
    pub fn cancel_all(&mut self, user_data: u64) {
        self.in_flight -= self.backlog.len();
        self.backlog.clear();
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data);
        // SAFETY: a cancel request points at no memory.
        unsafe { self.push(entry) };
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // SAFETY: each field is taken exactly once, here.
        let ring = unsafe { ManuallyDrop::take(&mut self.ring) };
        let bufs = unsafe { ManuallyDrop::take(&mut self.bufs) };
        drop(ring);
        if self.in_flight == 0 {
            drop(bufs);
        } else {
            // The kernel may still write into them while it tears down the
            // operations nobody waited for: leak rather than free.
            tracing::warn!(
                "{} io_uring operation(s) still in flight at teardown; leaking their buffers",
                self.in_flight
            );
            std::mem::forget(bufs);
        }
    }
}
