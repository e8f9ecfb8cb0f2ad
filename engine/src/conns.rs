//! A worker's TCP connections, whatever its I/O interface: each one's
//! socket, its core, its place in the deadline heap, and its share of the
//! worker's memory budget. The drivers keep their own per-connection I/O
//! state in `io`.
//!
//! The memory budget is the bound over all connections together (each one
//! alone is held to the output limit by its core): N peers that never read
//! would otherwise hold N times the output limit, which at the default
//! connection limit is more memory than a machine has. Every time a
//! connection has moved, [`Conns::settle`] re-counts what it holds; once the
//! worker's connections hold more than the budget, [`Conns::evict_over_budget`]
//! ends those holding the most, the ones whose peer has stopped reading
//! first, until they hold an eighth less than it.
//! Connections already ending still count until they are removed (on
//! io_uring a send in flight keeps its buffer until the kernel reports),
//! so a burst of evictions in one batch cannot leave their memory
//! uncounted; they are not evicted twice.

use std::cmp::Reverse;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::connection::{Connection, Env, Limits};
use crate::deadlines::{self, Deadlines, Scheduled};
use crate::moment::Moment;
use crate::slab::Slab;

/// Output that has waited this long without the peer taking a byte marks
/// a connection as stalled: past the memory budget, stalled ones go before
/// any whose peer is reading, whatever they hold.
pub const STALLED: Duration = Duration::from_secs(1);

/// The most connections [`Conns::new`] reserves room for up front; a
/// table past it grows as it needs.
pub const RESERVED_AT_MOST: usize = 1 << 20;

/// One connection as a worker holds it.
pub struct Tracked<D> {
    /// The socket; closed when the connection is removed.
    pub fd: OwnedFd,
    /// The connection's core.
    pub conn: Connection,
    /// What the driver keeps of its own (readiness flags, say).
    pub io: D,
    scheduled: Scheduled,
    /// Its memory when last counted.
    counted: Counted,
}

/// A connection's memory as last counted, in one word (every idle
/// connection pays for it): the bytes [`Connection::memory`] said, and in
/// the top bit whether it had failed (eviction cannot free that memory;
/// the kernel's report will).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counted(u64);

impl Counted {
    const ENDING: u64 = 1 << 63;

    fn new(bytes: usize, ending: bool) -> Self {
        let ending = if ending { Self::ENDING } else { 0 };
        Self(bytes as u64 & !Self::ENDING | ending)
    }

    fn bytes(self) -> usize {
        (self.0 & !Self::ENDING) as usize
    }

    fn ending(self) -> bool {
        self.0 & Self::ENDING != 0
    }
}

/// The memory a worker's connections hold together, against the budget.
#[derive(Debug)]
struct Memory {
    budget: usize,
    /// The sum of every connection's counted bytes.
    held: usize,
    /// The part of `held` that connections already ending hold.
    releasing: usize,
}

impl Memory {
    /// A connection that counted `was` now counts `now`.
    fn recount(&mut self, was: &mut Counted, now: Counted) {
        self.held = self.held - was.bytes() + now.bytes();
        if was.ending() {
            self.releasing -= was.bytes();
        }
        if now.ending() {
            self.releasing += now.bytes();
        }
        *was = now;
    }
}

/// A worker's connections, their deadlines, and the memory they hold.
pub struct Conns<D> {
    slab: Slab<Tracked<D>>,
    deadlines: Deadlines,
    memory: Memory,
}

impl<D> Conns<D> {
    /// No connections yet; together they may hold `budget` bytes, and
    /// there will be at most `expected` at once (room is reserved for that
    /// many, up to [`RESERVED_AT_MOST`]).
    ///
    /// Why reserve: a table that grows by doubling copies itself, and the
    /// copies it leaves behind stay in the allocator's heap, so the memory
    /// an idle connection costs would depend on where the count stopped.
    /// Reserved room is address space only; its pages become resident as
    /// connections arrive.
    pub fn new(budget: usize, expected: usize) -> Self {
        let room = expected.min(RESERVED_AT_MOST);
        Self {
            slab: Slab::with_capacity(room),
            deadlines: Deadlines::with_capacity(room),
            memory: Memory {
                budget,
                held: 0,
                releasing: 0,
            },
        }
    }

    /// Adds a connection; its index and generation. Call [`settle`](Self::settle)
    /// once it has moved.
    pub fn insert(&mut self, fd: OwnedFd, conn: Connection, io: D) -> (u32, u32) {
        self.slab.insert(Tracked {
            fd,
            conn,
            io,
            scheduled: None,
            counted: Counted::default(),
        })
    }

    /// The connection at (`index`, `generation`), if it is still open.
    pub fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut Tracked<D>> {
        self.slab.get_mut(index, generation)
    }

    /// Forgets a connection and closes its socket; hands back the driver's
    /// state of it. Its core must have said `Close` (no operation refers to
    /// it) or the driver must own no operation on it (a connection never
    /// armed).
    pub fn remove(&mut self, index: u32) -> Option<D> {
        let mut t = self.slab.remove(index)?;
        self.memory.recount(&mut t.counted, Counted::default());
        Some(t.io)
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// After the connection moved: schedules its next deadline and counts
    /// the memory it now holds. Then check [`over_budget`](Self::over_budget).
    pub fn settle(&mut self, index: u32, generation: u32, limits: &Limits) {
        if let Some(t) = self.slab.get_mut(index, generation) {
            let at = t.conn.next_deadline(limits);
            self.deadlines
                .schedule(at, index, generation, &mut t.scheduled);
            let now = Counted::new(t.conn.memory(), t.conn.has_failed());
            self.memory.recount(&mut t.counted, now);
        }
    }

    /// The memory the connections hold, as last counted.
    pub fn memory_held(&self) -> usize {
        self.memory.held
    }

    /// True when the connections hold more than the budget and some of it
    /// is held by connections not yet ending, which eviction can free.
    pub fn over_budget(&self) -> bool {
        let m = &self.memory;
        m.held > m.budget && m.held > m.releasing
    }

    /// Once over the budget: evicts connections ([`Connection::evict`]
    /// drops what they queued at once) until they hold at most seven
    /// eighths of it, or none not already ending holds anything, and lists
    /// the evicted in `evicted` (cleared first) for the driver to move to
    /// their close. Those whose peer has taken nothing for [`STALLED`] go
    /// first, the largest first; a peer that is reading goes only after
    /// every one that is not, however much it is owed. What an evicted
    /// connection still holds (a send buffer in flight) counts until the
    /// kernel lets go of it, so a burst of evictions may end more
    /// connections than the memory they queue would need, never fewer.
    /// The walk over every connection happens only here, and leaves an
    /// eighth of the budget free, so a peer cannot make it happen often.
    pub fn evict_over_budget(&mut self, env: &Env, evicted: &mut Vec<(u32, u32)>) {
        evicted.clear();
        if !self.over_budget() {
            return;
        }
        let target = self.memory.budget - self.memory.budget / 8;
        let stalled = |conn: &Connection| {
            conn.stalled_since()
                .is_some_and(|since| Moment::of(env.now).since(since) >= STALLED)
        };
        let mut holders: Vec<(bool, usize, u32, u32)> = self
            .slab
            .iter_mut()
            .filter(|(_, _, t)| t.counted.bytes() > 0 && !t.counted.ending())
            .map(|(index, generation, t)| (stalled(&t.conn), t.counted.bytes(), index, generation))
            .collect();
        holders.sort_unstable_by_key(|&(stalled, held, ..)| Reverse((stalled, held)));
        for (_, _, index, generation) in holders {
            if self.memory.held <= target {
                break;
            }
            let Some(t) = self.slab.get_mut(index, generation) else {
                continue;
            };
            t.conn.evict(env);
            let now = Counted::new(t.conn.memory(), true);
            self.memory.recount(&mut t.counted, now);
            evicted.push((index, generation));
        }
    }

    /// The nearest deadline of any connection.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next().map(Moment::instant)
    }

    /// Gives every connection whose deadline has come its `on_deadline`,
    /// and lists them in `due` (cleared first) for the driver to move.
    pub fn fire_deadlines(&mut self, env: &Env, due: &mut Vec<(u32, u32)>) {
        due.clear();
        while let Some((at, index, generation)) = self.deadlines.pop_due(Moment::of(env.now)) {
            let Some(t) = self.slab.get_mut(index, generation) else {
                continue;
            };
            if deadlines::claim(at, &mut t.scheduled) {
                t.conn.on_deadline(env);
                due.push((index, generation));
            }
        }
    }

    /// Tells every connection that shutdown began (with what the kernel
    /// holds for it, to be answered), and lists them all in `all` (cleared
    /// first) for the driver to move.
    pub fn begin_shutdown(&mut self, all: &mut Vec<(u32, u32)>) {
        all.clear();
        for index in 0..self.slab.capacity() {
            let Some(generation) = self.slab.generation_at(index) else {
                continue;
            };
            if let Some(t) = self.slab.get_mut(index, generation) {
                t.conn
                    .on_shutdown(crate::socket::queued_input(t.fd.as_raw_fd()));
                all.push((index, generation));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::time::Instant;

    use protocols::echo::EchoStream;

    use super::*;
    use crate::connection::Action;
    use crate::stats::WorkerStats;

    const BUDGET: usize = 1 << 20;

    /// What an idle connection costs is mostly its slot in the table
    /// (`cargo bench --bench idle_memory` measures the whole: 234-238 B
    /// per connection against a target of 256): a field that makes the
    /// slot grow fails here first, where the sizes are exact.
    #[test]
    fn an_idle_connections_slot_stays_within_200_bytes() {
        type Slot = (u32, Option<Tracked<Option<kernel_io::bufring::Taken>>>);
        assert!(std::mem::size_of::<Connection>() <= 160);
        assert!(
            std::mem::size_of::<Slot>() <= 200,
            "{}",
            std::mem::size_of::<Slot>()
        );
        assert!(
            std::mem::size_of::<(Moment, u32, u32)>() <= 16,
            "a deadline entry"
        );
    }

    /// A worker's connections driven in memory: sends never complete (the
    /// peers never read) until `report_cancels` plays the kernel.
    struct Sim {
        conns: Conns<()>,
        limits: Limits,
        stats: WorkerStats,
        now: Instant,
    }

    impl Sim {
        fn new() -> Self {
            Self {
                conns: Conns::new(BUDGET, 16),
                limits: Limits {
                    output_limit: 512 * 1024,
                    ..Limits::default()
                },
                stats: WorkerStats::default(),
                now: Instant::now(),
            }
        }

        fn open(&mut self) -> (u32, u32) {
            let fd = File::open("/dev/null").expect("open /dev/null").into();
            let env = Env {
                limits: &self.limits,
                stats: &self.stats,
                now: self.now,
                mesh: None,
            };
            let conn = Connection::new(Box::new(EchoStream), &env);
            let key = self.conns.insert(fd, conn, ());
            self.settle(key);
            key
        }

        /// Carries out what the connection asks for (a send stays in
        /// flight; a cancelled one is reported only by `report_cancels`),
        /// then settles it; false once it has closed.
        fn settle(&mut self, (index, generation): (u32, u32)) -> bool {
            let env = Env {
                limits: &self.limits,
                stats: &self.stats,
                now: self.now,
                mesh: None,
            };
            let t = self.conns.get_mut(index, generation).expect("open");
            while let Some(action) = t.conn.poll_action(&env) {
                match action {
                    Action::StopReceiving => t.conn.on_recv_ended(),
                    Action::Close => {
                        self.conns.remove(index);
                        return false;
                    }
                    _ => {}
                }
            }
            self.conns.settle(index, generation, &self.limits);
            true
        }

        /// Runs `event` on the connection, then settles it as a driver
        /// would; false once it has closed.
        fn event(&mut self, key: (u32, u32), event: impl FnOnce(&mut Connection, &Env)) -> bool {
            let env = Env {
                limits: &self.limits,
                stats: &self.stats,
                now: self.now,
                mesh: None,
            };
            let t = self.conns.get_mut(key.0, key.1).expect("open");
            event(&mut t.conn, &env);
            self.settle(key)
        }

        /// The peer sends `len` bytes, which echo queues to send back.
        fn receive(&mut self, key: (u32, u32), len: usize) {
            self.event(key, |c, env| c.on_received(&vec![b'x'; len], env));
        }

        /// The kernel takes `n` bytes of the connection's send in flight.
        fn kernel_takes(&mut self, key: (u32, u32), n: usize) {
            self.event(key, |c, env| c.on_sent(n, env));
        }

        fn memory(&mut self, key: (u32, u32)) -> usize {
            self.conns
                .get_mut(key.0, key.1)
                .map_or(0, |t| t.conn.memory())
        }

        /// Every connection's memory, summed afresh.
        fn actual(&mut self) -> usize {
            self.conns
                .slab
                .iter_mut()
                .map(|(_, _, t)| t.conn.memory())
                .sum()
        }

        fn evict(&mut self) -> Vec<(u32, u32)> {
            let mut evicted = Vec::new();
            let env = Env {
                limits: &self.limits,
                stats: &self.stats,
                now: self.now,
                mesh: None,
            };
            self.conns.evict_over_budget(&env, &mut evicted);
            for &key in &evicted {
                assert!(self.settle(key), "a send in flight keeps it open");
            }
            evicted
        }

        /// The kernel reports the cancelled sends of `keys`; they close.
        fn report_cancels(&mut self, keys: &[(u32, u32)]) {
            for &key in keys {
                let open = self.event(key, |c, env| c.on_send_error(env));
                assert!(!open, "closed once nothing is in flight");
            }
        }
    }

    #[test]
    fn past_the_budget_the_largest_holders_go_until_an_eighth_is_free() {
        let mut sim = Sim::new();
        let [a, b, c, d, e] = [(); 5].map(|_| sim.open());
        // Each first message goes into a send that stays in flight; a
        // second one waits behind it.
        for (key, first, second) in [(a, 200, 250), (b, 150, 150), (c, 100, 0), (d, 10, 0)] {
            sim.receive(key, first * 1024);
            if second > 0 {
                sim.receive(key, second * 1024);
            }
        }
        assert_eq!(sim.conns.memory_held(), sim.actual());
        assert!(!sim.conns.over_budget(), "{} B", sim.conns.memory_held());
        let largest = sim.memory(a);
        assert!([b, c, d].iter().all(|&k| sim.memory(k) < largest));

        sim.receive(e, 200 * 1024);
        assert!(sim.conns.over_budget(), "{} B", sim.conns.memory_held());
        assert_eq!(sim.evict(), vec![a], "the largest holder, and enough");
        assert_eq!(sim.stats.connections_evicted.get(), 1);
        // What it queued is gone at once; its send in flight still counts.
        assert_eq!(sim.memory(a), 200 * 1024);
        assert_eq!(sim.conns.memory_held(), sim.actual());
        assert!(sim.conns.memory_held() <= BUDGET - BUDGET / 8);
        assert!(!sim.conns.over_budget());

        sim.report_cancels(&[a]);
        assert_eq!(sim.conns.len(), 4);
        assert_eq!(sim.conns.memory_held(), sim.actual());
        assert!(sim.evict().is_empty(), "within the budget: nobody goes");
    }

    #[test]
    fn a_stalled_holder_goes_before_a_larger_one_whose_peer_reads() {
        let mut sim = Sim::new();
        let [stalled, reading, newcomer] = [(); 3].map(|_| sim.open());
        for (key, first, second) in [(stalled, 50, 300), (reading, 300, 200)] {
            sim.receive(key, first * 1024);
            sim.receive(key, second * 1024);
        }
        // Two seconds on, the reader's kernel has taken a little of its
        // send; the other's peer has taken nothing.
        sim.now += 2 * STALLED;
        sim.kernel_takes(reading, 1024);
        assert!(sim.memory(reading) > sim.memory(stalled));
        sim.receive(newcomer, 250 * 1024);
        assert!(sim.conns.over_budget());
        assert_eq!(
            sim.evict(),
            vec![stalled],
            "the stalled one, though smaller"
        );
        assert!(!sim.conns.over_budget());
    }

    #[test]
    fn memory_an_evicted_send_still_holds_counts_until_the_kernel_lets_go() {
        let mut sim = Sim::new();
        // Five connections whose memory is all in sends in flight: evicting
        // one frees nothing until its cancelled send is reported, so the
        // walk ends every one rather than let memory past the budget.
        let keys: Vec<_> = (0..5).map(|_| sim.open()).collect();
        for (i, &key) in keys.iter().enumerate() {
            sim.receive(key, (200 + 10 * i) * 1024);
        }
        assert!(sim.conns.over_budget());
        let evicted = sim.evict();
        assert_eq!(evicted.len(), 5);
        let sizes: Vec<usize> = evicted.iter().map(|&k| sim.memory(k)).collect();
        assert!(
            sizes.windows(2).all(|w| w[0] >= w[1]),
            "largest first: {sizes:?}"
        );
        assert_eq!(sim.conns.memory_held(), sim.actual());
        assert!(
            !sim.conns.over_budget(),
            "nothing is left that eviction frees"
        );
        // Once the kernel has let go of most of it, a newcomer is served.
        let newcomer = sim.open();
        sim.report_cancels(&evicted[..3]);
        sim.receive(newcomer, 10 * 1024);
        assert!(sim.evict().is_empty());
        sim.report_cancels(&evicted[3..]);
        assert_eq!(sim.conns.memory_held(), sim.memory(newcomer));
        assert_eq!(sim.stats.connections_evicted.get(), 5);
    }
}
