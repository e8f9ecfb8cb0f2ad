//! A provided-buffer ring: memory the kernel picks receive buffers from.
//!
//! A connection holds no receive buffer while idle: the kernel takes one from
//! this ring only when data arrives, the worker hands the bytes to the
//! protocol, and the buffer goes back. Recycled buffers are published with
//! one store of the tail per batch of completions.
//!
//! The kernel takes buffers in the order they were published, so a ring
//! holding every buffer would hand out the one recycled longest ago: with
//! 512 buffers of 16 KiB, each receive would write to memory 8 MiB away in
//! the cycle, long gone from the cache (a profile of 16 KiB echo showed the
//! kernel's copy into user memory at twice its cost with a hot buffer). So
//! only a few spare buffers are published ahead of need, the most recently
//! recycled first, and the rest wait on a stack: the buffers in use stay
//! the same few, warm in the cache. The number kept ahead doubles in a
//! batch in which the kernel runs out (ENOBUFS, see [`BufRing::ran_out`]),
//! plus one for each further receive that found it empty, and halves after
//! a long stretch in which half of it was never needed.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Spare buffers published at first (or all of them, if fewer).
const FIRST_SPARE: u16 = 32;
/// The fewest spare buffers kept published.
const MIN_SPARE: u16 = 8;
/// Publishes after which an unneeded half of the spare buffers is withdrawn.
const SHRINK_WINDOW: u32 = 4096;

/// One buffer group: `count` buffers of `size` bytes, and the ring describing them.
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    memory: *mut u8,
    memory_layout: Layout,
    size: usize,
    count: u16,
    group: u16,
    tail: u16,
    /// Buffers neither published nor taken, the most recently recycled last.
    free: Vec<u16>,
    /// Buffers published and not yet taken by a completion (as far as the
    /// completions reaped so far tell).
    in_ring: u16,
    /// How many buffers to keep published ahead of need.
    spare: u16,
    /// The fewest published buffers found unused at a publish, this window.
    low_water: u16,
    /// Publishes so far in this window.
    window: u32,
    /// The spare count already doubled since the last publish.
    grew: bool,
}

/// A buffer a completion handed over. The kernel does not touch it until
/// it goes back with [`BufRing::recycle`], which is the only way to end it:
/// a buffer cannot be recycled twice, nor read after it went back.
#[must_use = "a taken buffer must go back with BufRing::recycle"]
#[derive(Debug)]
pub struct Taken {
    bid: u16,
    len: u32,
}

impl Taken {
    /// How many bytes the kernel wrote into the buffer.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the kernel wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl BufRing {
    /// Allocates `count` (a power of two) buffers of `size` bytes for buffer group `group`.
    ///
    /// The buffer memory is zero-allocated, so pages become resident only when
    /// the kernel first writes to them.
    pub fn new(count: u16, size: usize, group: u16) -> io::Result<Self> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two",
            ));
        }
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (count >= 1) and a valid alignment.
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "buffer ring allocation failed",
            ));
        }
        // No stronger alignment than malloc's own: then alloc_zeroed is a
        // calloc, whose fresh pages stay unresident until the kernel first
        // writes a buffer (an over-aligned zeroed allocation is memset).
        let memory_layout = Layout::from_size_align((usize::from(count) * size).max(1), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size and a valid alignment.
        let memory = unsafe { alloc_zeroed(memory_layout) };
        if memory.is_null() {
            // SAFETY: allocated just above with this layout.
            unsafe { dealloc(entries.cast(), entries_layout) };
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "receive buffer allocation failed",
            ));
        }
        let mut ring = Self {
            entries,
            entries_layout,
            memory,
            memory_layout,
            size,
            count,
            group,
            tail: 0,
            // Buffer 0 on top: the first published, the first used.
            free: (0..count).rev().collect(),
            in_ring: 0,
            spare: FIRST_SPARE.min(count),
            low_water: u16::MAX,
            window: 0,
            grew: false,
        };
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring with `ring` as buffer group `self.group`.
    ///
    /// # Safety
    ///
    /// The kernel reads the entries and writes the buffers for as long as
    /// the registration lasts: `ring` must be closed (or the group
    /// unregistered, with no operation still selecting from it) before
    /// `self` is dropped. [`crate::uring::Uring`] owns both and keeps that
    /// order itself.
    pub unsafe fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: `entries` points to `count` initialised entries, page
        // aligned, alive until `self` is dropped, which the caller orders
        // after the ring's end.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries as u64,
                self.count,
                self.group,
                0,
            )
        }
    }

    /// The buffer group id operations select from.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Takes over buffer `bid`, into which a completion says the kernel
    /// wrote `len` bytes. Every completion that carries a buffer must be
    /// taken (and its buffer recycled), or the ring runs dry.
    pub fn take(&mut self, bid: u16, len: usize) -> Taken {
        self.in_ring = self.in_ring.saturating_sub(1);
        Taken {
            bid: bid % self.count,
            len: len.min(self.size) as u32,
        }
    }

    /// The bytes the kernel wrote into a taken buffer.
    pub fn bytes(&self, taken: &Taken) -> &[u8] {
        let start = usize::from(taken.bid) * self.size;
        // SAFETY: the range lies inside the allocation (bid < count, len <=
        // size); the kernel gave this buffer back and cannot write it again
        // until `recycle` and `publish` hand it over, and `recycle` consumes
        // the `Taken` this borrow comes from.
        unsafe { std::slice::from_raw_parts(self.memory.add(start), taken.len as usize) }
    }

    /// Gives a taken buffer back; the kernel may have it again after the
    /// next [`publish`](Self::publish).
    pub fn recycle(&mut self, taken: Taken) {
        self.free.push(taken.bid);
    }

    /// The kernel found no buffer (a receive ended with ENOBUFS): the ring
    /// is empty, and more spare buffers are kept published from now on:
    /// twice as many for the first such receive since the last publish,
    /// and one more for each further one, which wanted a buffer too.
    /// Doubling for each of them published the whole ring after one burst
    /// (512 buffers, 8 MiB for the kernel to copy into, cold, where 64 were
    /// enough for 16 KiB echo over 50 connections).
    pub fn ran_out(&mut self) {
        // Exact: the kernel consumes only what was published, and nothing
        // has been published since it found the ring empty.
        self.in_ring = 0;
        let grown = if self.grew {
            self.spare.saturating_add(1)
        } else {
            self.spare.saturating_mul(2)
        };
        self.spare = grown.min(self.count);
        self.grew = true;
        self.low_water = u16::MAX;
        self.window = 0;
    }

    /// How many buffers are kept published ahead of need.
    pub fn spare(&self) -> u16 {
        self.spare
    }

    /// Publishes recycled buffers, the most recently recycled (the warmest)
    /// first, until `spare` of them are waiting for the kernel.
    pub fn publish(&mut self) {
        self.grew = false;
        self.low_water = self.low_water.min(self.in_ring);
        self.window += 1;
        if self.window >= SHRINK_WINDOW {
            // Half the spare buffers went unused for a whole window.
            if self.low_water >= self.spare / 2 {
                self.spare = (self.spare / 2).max(MIN_SPARE.min(self.count));
            }
            self.low_water = u16::MAX;
            self.window = 0;
        }
        let before = self.tail;
        while self.in_ring < self.spare {
            let Some(bid) = self.free.pop() else { break };
            self.push_entry(bid);
            self.in_ring += 1;
        }
        if self.tail != before {
            // SAFETY: the tail field overlays the first entry's reserved
            // field, which the kernel reads and only we write; the release
            // store orders the entry writes above before the kernel can see
            // the new tail.
            unsafe {
                let tail = BufRingEntry::tail(self.entries).cast_mut();
                (*AtomicU16::from_ptr(tail)).store(self.tail, Ordering::Release);
            }
        }
    }

    /// Writes buffer `bid` into the entry past the published tail.
    fn push_entry(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        let addr = self.memory as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: `slot < count`, so the entry is inside the allocation. The
        // kernel only reads entries between its head and the published tail,
        // and this slot is past the published tail until `publish` stores
        // it; at most `count` buffers exist, so it never laps the head.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the io_uring that
        // used them is gone (the contract of `register`).
        unsafe {
            dealloc(self.entries.cast(), self.entries_layout);
            dealloc(self.memory, self.memory_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel does on a receive: takes the entry at its head.
    fn kernel_takes(ring: &mut BufRing, head: &mut u16) -> Taken {
        let bid = entry(ring, *head).2;
        *head = head.wrapping_add(1);
        ring.take(bid, 1)
    }

    fn entry(ring: &BufRing, slot: u16) -> (u64, u32, u16) {
        // SAFETY: the test reads entries inside the allocation.
        let e = unsafe { &*ring.entries.add(usize::from(slot & (ring.count - 1))) };
        (e.addr(), e.len(), e.bid())
    }

    #[test]
    fn published_buffers_point_into_their_memory() {
        let ring = BufRing::new(4, 64, 7).unwrap();
        assert_eq!(ring.group(), 7);
        assert_eq!(
            ring.tail, 4,
            "a ring smaller than the spare count is all published"
        );
        for bid in 0..4u16 {
            assert_eq!(
                entry(&ring, bid),
                (ring.memory as u64 + u64::from(bid) * 64, 64, bid)
            );
        }
        assert!(BufRing::new(3, 64, 0).is_err());
    }

    #[test]
    fn taken_bytes_are_the_buffer_and_no_longer_than_it() {
        let mut ring = BufRing::new(4, 64, 0).unwrap();
        let taken = ring.take(3, 1000);
        assert_eq!(taken.len(), 64);
        assert_eq!(
            ring.bytes(&taken).as_ptr() as u64,
            ring.memory as u64 + 3 * 64
        );
        ring.recycle(taken);
    }

    #[test]
    fn only_the_spare_buffers_are_published_and_the_warmest_go_first() {
        let mut ring = BufRing::new(256, 64, 0).unwrap();
        assert_eq!(ring.tail, FIRST_SPARE);
        assert_eq!(ring.in_ring, FIRST_SPARE);
        // The kernel takes the first two; they come back in the order 1, 0.
        let mut head = 0;
        let a = kernel_takes(&mut ring, &mut head);
        let b = kernel_takes(&mut ring, &mut head);
        ring.recycle(b);
        ring.recycle(a);
        ring.publish();
        assert_eq!(ring.tail, FIRST_SPARE + 2, "topped up by two");
        // Buffer 0, recycled last, is published first of the two.
        assert_eq!(entry(&ring, FIRST_SPARE).2, 0);
        assert_eq!(entry(&ring, FIRST_SPARE + 1).2, 1);
        assert_eq!(ring.free.len(), 256 - usize::from(FIRST_SPARE));
    }

    #[test]
    fn running_out_doubles_the_spares_and_resynchronises() {
        let mut ring = BufRing::new(256, 64, 0).unwrap();
        let mut head = 0;
        let taken: Vec<Taken> = (0..FIRST_SPARE)
            .map(|_| kernel_takes(&mut ring, &mut head))
            .collect();
        ring.ran_out();
        assert_eq!(ring.spare(), FIRST_SPARE * 2);
        ring.publish();
        assert_eq!(ring.in_ring, FIRST_SPARE * 2);
        for t in taken {
            ring.recycle(t);
        }
        for _ in 0..10 {
            ring.ran_out();
            ring.publish();
        }
        assert_eq!(ring.spare(), 256, "never more than the ring holds");
    }

    #[test]
    fn many_receives_running_out_in_one_batch_double_the_spares_once() {
        let mut ring = BufRing::new(512, 64, 0).unwrap();
        // Thirty receives of one batch each end with ENOBUFS: double for
        // the first, one more buffer for each of the other 29.
        for _ in 0..30 {
            ring.ran_out();
        }
        assert_eq!(ring.spare(), FIRST_SPARE * 2 + 29);
        ring.publish();
        ring.ran_out();
        assert_eq!(
            ring.spare(),
            (FIRST_SPARE * 2 + 29) * 2,
            "the next batch may double again"
        );
        for _ in 0..1000 {
            ring.ran_out();
        }
        assert_eq!(ring.spare(), 512, "never more than the ring holds");
    }

    #[test]
    fn unneeded_spares_are_withdrawn_after_a_window() {
        let mut ring = BufRing::new(256, 64, 0).unwrap();
        ring.ran_out();
        ring.publish();
        assert_eq!(ring.spare(), 64);
        // One buffer used per batch: the spares are far more than needed.
        // The window that ran out is not one of plenty; the next one is.
        let mut head = 0;
        for _ in 0..2 * SHRINK_WINDOW {
            let t = kernel_takes(&mut ring, &mut head);
            ring.recycle(t);
            ring.publish();
        }
        assert_eq!(ring.spare(), 32);
        for _ in 0..SHRINK_WINDOW * 8 {
            ring.publish();
        }
        assert_eq!(ring.spare(), MIN_SPARE);
    }
}
