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

/// How many completions a batched wait waits for (see
/// [`Uring::set_batch_wait`]).
pub const BATCH: usize = 32;

/// Probes, before any thread starts, that io_uring can be used here with
/// the features the engine needs: a kernel of [`crate::ring::MIN_KERNEL`] or newer, a
/// ring, and a provided-buffer ring registered on it.
pub fn probe() -> Result<RingMode, crate::Unavailable> {
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        let release = release.trim();
        if crate::ring::release_version(release).is_some_and(|v| v < crate::ring::MIN_KERNEL) {
            return Err(crate::Unavailable(format!(
                "the kernel is {release}, older than {}.{}: the engine needs multishot receives and provided-buffer rings",
                crate::ring::MIN_KERNEL.0, crate::ring::MIN_KERNEL.1
            )));
        }
    }
    let mut uring = Uring::new(8)?;
    let bufs = BufRing::new(2, 64, 0)
        .map_err(|e| crate::Unavailable(format!("cannot allocate a probe buffer ring: {e}")))?;
    uring
        .add_buffers(bufs)
        .map_err(|e| crate::ring::buffer_ring_refused("a probe", &e))?;
    Ok(uring.mode())
}

/// A ring, its buffer rings, and what is in flight on it.
pub struct Uring {
    ring: ManuallyDrop<IoUring>,
    bufs: ManuallyDrop<Vec<BufRing>>,
    /// Entries that did not fit the submission queue, in order; a linked
    /// pair stays one element so it is submitted together.
    backlog: VecDeque<Queued>,
    /// Operations pushed whose final completion has not been reaped.
    in_flight: usize,
    mode: RingMode,
    /// Wait for a batch of completions this long before taking fewer
    /// (see [`set_batch_wait`](Self::set_batch_wait)).
    batch_wait: Option<Duration>,
    /// The top byte of completions other rings post here (see
    /// [`expect_foreign`](Self::expect_foreign)).
    foreign: Option<u8>,
}

impl Uring {
    /// A ring of `entries` SQEs with the best setup flags the kernel takes.
    pub fn new(entries: u32) -> Result<Self, crate::Unavailable> {
        Self::with_ring(crate::ring::create(entries)?)
    }

    /// A ring whose submission queue a kernel thread polls (see
    /// [`crate::ring::create_sqpoll`]).
    pub fn new_sqpoll(entries: u32, idle: Duration) -> Result<Self, crate::Unavailable> {
        Self::with_ring(crate::ring::create_sqpoll(entries, idle)?)
    }

    fn with_ring((ring, mode): (IoUring, RingMode)) -> Result<Self, crate::Unavailable> {
        Ok(Self {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(Vec::new()),
            backlog: VecDeque::new(),
            in_flight: 0,
            mode,
            batch_wait: None,
            foreign: None,
        })
    }

    /// A descriptor of the ring itself, for other rings to post
    /// completions to (`IORING_OP_MSG_RING`); it keeps the ring's kernel
    /// side alive as long as it is open.
    pub fn ring_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the ring's descriptor is open for as long as `self` is.
        let fd = unsafe { BorrowedFd::borrow_raw(self.ring.as_raw_fd()) };
        fd.try_clone_to_owned()
    }

    /// Completions whose `user_data` has `tag` as its top byte are posted
    /// by other rings (messages), not the end of an operation of ours:
    /// [`reap`](Self::reap) does not count them.
    pub fn expect_foreign(&mut self, tag: u8) {
        self.foreign = Some(tag);
    }

    /// From now on each wait lasts until [`BATCH`] completions are ready or
    /// `wait` has passed, then returns with what there is (at least one):
    /// the kernel's minimum-wait batching (IORING_FEAT_MIN_TIMEOUT, Linux
    /// 6.12+). Under light load this trades up to `wait` of latency for
    /// fewer wake-ups. Fails with `Unsupported` on older kernels.
    pub fn set_batch_wait(&mut self, wait: Duration) -> io::Result<()> {
        if !self.ring.params().is_feature_min_timeout() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel has no io_uring minimum-wait batching (IORING_FEAT_MIN_TIMEOUT, Linux 6.12+)",
            ));
        }
        self.batch_wait = Some(wait);
        Ok(())
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

    /// Publishes recycled buffers of every buffer ring to the kernel.
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
        // SAFETY: the caller's contract is this function's.
        unsafe { self.queue(Queued::One(entry)) }
    }

    /// Queues `first` linked to `second` (`first` gets `IOSQE_IO_LINK`):
    /// an operation and its linked timeout, say. The two always reach the
    /// kernel in one submission, as a link needs.
    ///
    /// # Safety
    ///
    /// As for [`push`](Self::push), for both entries.
    pub unsafe fn push_linked(&mut self, first: squeue::Entry, second: squeue::Entry) {
        let first = first.flags(squeue::Flags::IO_LINK);
        // SAFETY: the caller's contract is this function's.
        unsafe { self.queue(Queued::Linked([first, second])) }
    }

    /// # Safety
    ///
    /// As for [`push`](Self::push), for every entry of `queued`.
    unsafe fn queue(&mut self, queued: Queued) {
        self.in_flight += queued.entries().len();
        // SAFETY: the caller keeps what the entries point at alive.
        if self.backlog.is_empty() && unsafe { self.submit_queued(&queued) } {
            return;
        }
        self.backlog.push_back(queued);
    }

    /// Puts `queued` in the submission queue whole; false if it has no room.
    ///
    /// # Safety
    ///
    /// As for [`push`](Self::push), for every entry of `queued`.
    unsafe fn submit_queued(&mut self, queued: &Queued) -> bool {
        // SAFETY: the caller keeps what the entries point at alive.
        unsafe { self.ring.submission().push_multiple(queued.entries()) }.is_ok()
    }

    /// Submits everything queued and waits for at least one completion
    /// (for at most `wait`, if given); returns how many entries it handed
    /// to the kernel. EINTR, ETIME and EBUSY are not errors.
    pub fn enter(&mut self, wait: Option<Duration>) -> io::Result<u64> {
        while let Some(queued) = self.backlog.pop_front() {
            // SAFETY: queued through `push`, whose caller vouched for it.
            if !unsafe { self.submit_queued(&queued) } {
                self.backlog.push_front(queued);
                break;
            }
        }
        if self.backlog.is_empty() && self.backlog.capacity() > BACKLOG_KEPT {
            // A burst (thousands of connections arriving at once) is all
            // in: give back what it grew, or the process keeps 136 bytes
            // per entry of its largest burst for good.
            self.backlog.shrink_to(BACKLOG_KEPT);
        }
        let queued = self.ring.submission().len() as u64;
        // With a backlog, only submit; the wait happens once it is all in.
        let want = usize::from(self.backlog.is_empty());
        let result = match (wait, self.batch_wait) {
            (_, Some(batch)) if want == 1 => {
                let min_wait = u32::try_from(batch.as_micros()).unwrap_or(u32::MAX);
                let args = types::SubmitArgs::new().min_wait_usec(min_wait);
                match wait {
                    Some(wait) => {
                        let ts = types::Timespec::from(wait);
                        let args = args.timespec(&ts);
                        self.ring.submitter().submit_with_args(BATCH, &args)
                    }
                    None => self.ring.submitter().submit_with_args(BATCH, &args),
                }
            }
            (Some(wait), None) if want == 1 => {
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
        let foreign = self.foreign;
        let ended = into[before..]
            .iter()
            .filter(|cqe| !cqueue::more(cqe.flags()))
            .filter(|cqe| foreign.is_none_or(|tag| (cqe.user_data() >> 56) as u8 != tag))
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
        let never_submitted: usize = self.backlog.iter().map(|q| q.entries().len()).sum();
        self.in_flight -= never_submitted;
        self.backlog.clear();
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data);
        // SAFETY: a cancel request points at no memory.
        unsafe { self.push(entry) };
    }
}

/// Entries waiting for room in the submission queue.
/// Backlog entries kept allocated once a burst has drained: room for the
/// usual overflow of a batch, without holding a burst's worth.
const BACKLOG_KEPT: usize = 64;

enum Queued {
    One(squeue::Entry),
    Linked([squeue::Entry; 2]),
}

impl Queued {
    fn entries(&self) -> &[squeue::Entry] {
        match self {
            Queued::One(entry) => std::slice::from_ref(entry),
            Queued::Linked(pair) => pair,
        }
    }
}

/// Byte offset of `optlen` (shared with `file_index`) in an SQE: the
/// kernel's ABI, `struct io_uring_sqe`.
const SQE_OPTLEN_OFFSET: usize = 44;

/// Caps a multishot receive (`opcode::RecvMulti`) at `total` bytes: the
/// kernel ends it, without `IORING_CQE_F_MORE`, once that much has been
/// received (Linux 6.16+; older kernels refuse it with EINVAL). The io-uring
/// crate has no setter for this field (`sqe->optlen`), so it is written at
/// its ABI offset.
pub fn cap_multishot_recv(mut entry: squeue::Entry, total: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `Entry` is `#[repr(C)]` around the kernel's 64-byte SQE (the
    // size is asserted above), whose bytes 44..48 are the u32 `optlen`; the
    // write stays inside the entry and an SQE has no invalid bit patterns.
    unsafe {
        (&mut entry as *mut squeue::Entry)
            .cast::<u8>()
            .add(SQE_OPTLEN_OFFSET)
            .cast::<u32>()
            .write_unaligned(total);
    }
    entry
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the `optlen`/`file_index` word of an entry.
    fn optlen(entry: &squeue::Entry) -> u32 {
        // SAFETY: reads 4 bytes inside the 64-byte entry.
        unsafe {
            (entry as *const squeue::Entry)
                .cast::<u8>()
                .add(SQE_OPTLEN_OFFSET)
                .cast::<u32>()
                .read_unaligned()
        }
    }

    #[test]
    fn the_cap_lands_where_the_crate_puts_file_index() {
        // The crate writes `file_index` (the same word) for a direct accept:
        // slot 5 is stored as 6. That pins the offset the cap relies on.
        let slot = types::DestinationSlot::try_from_slot_target(5).unwrap();
        let accept = opcode::Accept::new(types::Fd(0), std::ptr::null_mut(), std::ptr::null_mut())
            .file_index(Some(slot))
            .build();
        assert_eq!(optlen(&accept), 6);
        let recv = opcode::RecvMulti::new(types::Fd(0), 0).build();
        assert_eq!(optlen(&recv), 0);
        assert_eq!(optlen(&cap_multishot_recv(recv, 32 * 1024)), 32 * 1024);
    }

    #[test]
    fn the_probe_finds_what_the_engine_needs_here() {
        assert!(probe().is_ok(), "this machine's kernel has io_uring");
    }

    #[test]
    fn a_capped_multishot_receive_ends_after_its_cap() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut uring = Uring::new(8).unwrap();
        let bufs = uring.add_buffers(BufRing::new(8, 64, 3).unwrap()).unwrap();
        let recv = opcode::RecvMulti::new(types::Fd(std::os::fd::AsRawFd::as_raw_fd(&server)), 3)
            .build()
            .user_data(1);
        // SAFETY: the kernel writes only into the buffer ring the Uring owns;
        // the socket outlives the test's waits, and the receive ends (cap)
        // or is cancelled below before anything is dropped.
        unsafe { uring.push(cap_multishot_recv(recv, 100)) };
        client.write_all(&[7u8; 300]).unwrap();
        let mut cqes = Vec::new();
        let mut received = 0;
        let mut ended = false;
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !ended && std::time::Instant::now() < until {
            uring.enter(Some(Duration::from_millis(100))).unwrap();
            uring.reap(&mut cqes);
            for cqe in cqes.drain(..) {
                if cqe.result() == -libc::EINVAL {
                    crate::test_skip::skip(
                        crate::test_skip::Lack::Kernel,
                        "this kernel takes no cap on multishot receives (Linux 6.16+)",
                    );
                    return;
                }
                assert!(cqe.result() > 0, "{}", cqe.result());
                received += cqe.result();
                if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                    let ring = uring.buffers(bufs);
                    let taken = ring.take(bid, cqe.result() as usize);
                    ring.recycle(taken);
                }
                ended |= !cqueue::more(cqe.flags());
            }
            uring.publish_buffers();
        }
        assert!(ended, "the receive ended on its own");
        // The kernel checks the cap after each buffer it fills.
        assert!(
            (100..100 + 64).contains(&received),
            "{received} bytes for a cap of 100"
        );
        assert_eq!(uring.in_flight(), 0);
    }
}
