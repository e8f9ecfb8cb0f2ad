//! A provided-buffer ring: memory the kernel picks receive buffers from.
//!
//! A connection holds no receive buffer while idle: the kernel takes one from
//! this ring only when data arrives, the worker hands the bytes to the
//! protocol, and the buffer goes straight back. Recycled buffers are published
//! with one store of the tail per batch of completions.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

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
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
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

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    /// Only valid for a buffer a completion just handed back, until it is
    /// recycled: the kernel does not touch it in between.
    pub fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid % self.count) * self.size;
        // SAFETY: the range lies inside the allocation (bid < count, len <=
        // size); the kernel gave this buffer back and cannot write it again
        // until `recycle` and `publish` hand it over.
        unsafe { std::slice::from_raw_parts(self.memory.add(start), len.min(self.size)) }
    }

    /// Queues buffer `bid` to be handed back to the kernel at the next [`publish`](Self::publish).
    pub fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let slot = usize::from(self.tail & (self.count - 1));
        let addr = self.memory as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: `slot < count`, so the entry is inside the allocation. The
        // kernel only reads entries between its head and the published tail,
        // and this slot is past the published tail until `publish`.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: the tail field overlays the first entry's reserved field, which
        // the kernel reads and only we write; the release store orders the
        // entry writes above before the kernel can see the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            (*AtomicU16::from_ptr(tail)).store(self.tail, Ordering::Release);
        }
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

    #[test]
    fn recycled_buffers_point_into_their_memory() {
        let ring = BufRing::new(4, 64, 7).unwrap();
        assert_eq!(ring.group(), 7);
        assert_eq!(ring.tail, 4);
        for bid in 0..4u16 {
            // SAFETY: test reads the entries it just wrote.
            let e = unsafe { &*ring.entries.add(usize::from(bid)) };
            assert_eq!(e.bid(), bid);
            assert_eq!(e.len(), 64);
            assert_eq!(e.addr(), ring.memory as u64 + u64::from(bid) * 64);
        }
        assert_eq!(ring.filled(3, 1000).len(), 64);
        assert!(BufRing::new(3, 64, 0).is_err());
    }
}
