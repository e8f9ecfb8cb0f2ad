//! Per-connection deadlines, kept in a min-heap instead of found by a sweep
//! over every connection: a worker's work per wake-up depends on the
//! deadlines due, never on how many connections are open.
//!
//! Each connection remembers the earliest time it has in the heap
//! ([`Scheduled`]); a later deadline is not pushed while an earlier one is
//! there (that entry fires, the connection finds nothing due and schedules
//! its real deadline), so a connection has at most a couple of entries
//! however often its deadline moves.

use crate::moment::Moment;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The earliest time a connection has in the heap, if any.
pub type Scheduled = Option<Moment>;

/// Deadlines of (index, generation) keyed connections.
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Moment, u32, u32)>>,
}

impl Deadlines {
    /// No deadlines yet, with room for `capacity` before the heap grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(capacity),
        }
    }

    /// Makes sure the connection is woken at `at` (or before); `scheduled`
    /// is the connection's own record of what it has in the heap.
    pub fn schedule(
        &mut self,
        at: Option<Moment>,
        index: u32,
        generation: u32,
        scheduled: &mut Scheduled,
    ) {
        let Some(at) = at else {
            return;
        };
        if scheduled.is_some_and(|s| s <= at) {
            return;
        }
        *scheduled = Some(at);
        self.heap.push(Reverse((at, index, generation)));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Moment> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next entry due at `now`: (its time, index, generation). The
    /// caller checks the connection still exists and that its record
    /// equals the time (otherwise the entry was superseded by an earlier
    /// one), clears the record and handles the deadline.
    pub fn pop_due(&mut self, now: Moment) -> Option<(Moment, u32, u32)> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// Entries in the heap (stale ones included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no deadline is waiting.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// True when a popped entry at `at` is the one the connection is waiting
/// on; clears the record so the next deadline gets scheduled.
pub fn claim(at: Moment, scheduled: &mut Scheduled) -> bool {
    if *scheduled == Some(at) {
        *scheduled = None;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn earliest_first_and_later_deadlines_are_not_duplicated() {
        let t0 = Moment::of(Instant::now());
        let s = Duration::from_secs(1);
        let mut d = Deadlines::default();
        let (mut a, mut b) = (None, None);
        d.schedule(Some(t0 + 3 * s), 1, 0, &mut a);
        d.schedule(Some(t0 + 5 * s), 1, 0, &mut a); // later: already covered
        d.schedule(Some(t0 + s), 2, 7, &mut b);
        d.schedule(None, 2, 7, &mut b);
        assert_eq!(d.len(), 2);
        assert_eq!(d.next(), Some(t0 + s));
        assert_eq!(d.pop_due(t0), None);
        let (at, index, generation) = d.pop_due(t0 + 3 * s).unwrap();
        assert_eq!((index, generation), (2, 7));
        assert!(claim(at, &mut b));
        assert_eq!(b, None);
        // An earlier deadline supersedes: the old entry becomes stale.
        d.schedule(Some(t0 + 2 * s), 1, 0, &mut a);
        let (at, ..) = d.pop_due(t0 + 3 * s).unwrap();
        assert!(claim(at, &mut a));
        let (stale, ..) = d.pop_due(t0 + 3 * s).unwrap();
        assert!(!claim(stale, &mut a), "the superseded entry is ignored");
        assert!(d.is_empty());
    }
}
