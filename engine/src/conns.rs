//! A worker's TCP connections, whatever its I/O interface: each one's
//! socket, its core, and its place in the deadline heap. The drivers keep
//! their own per-connection I/O state in `io`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use crate::connection::{Connection, Env, Limits};
use crate::deadlines::{self, Deadlines, Scheduled};
use crate::slab::Slab;

/// One connection as a worker holds it.
pub struct Tracked<D> {
    /// The socket; closed when the connection is removed.
    pub fd: OwnedFd,
    /// The connection's core.
    pub conn: Connection,
    /// What the driver keeps of its own (readiness flags, say).
    pub io: D,
    scheduled: Scheduled,
}

/// A worker's connections and their deadlines.
pub struct Conns<D> {
    slab: Slab<Tracked<D>>,
    deadlines: Deadlines,
}

impl<D> Default for Conns<D> {
    fn default() -> Self {
        Self {
            slab: Slab::default(),
            deadlines: Deadlines::default(),
        }
    }
}

impl<D> Conns<D> {
    /// Adds a connection; its index and generation.
    pub fn insert(&mut self, fd: OwnedFd, conn: Connection, io: D) -> (u32, u32) {
        self.slab.insert(Tracked {
            fd,
            conn,
            io,
            scheduled: None,
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
        self.slab.remove(index).map(|t| t.io)
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Schedules the connection's next deadline, after it moved.
    pub fn reschedule(&mut self, index: u32, generation: u32, limits: &Limits) {
        if let Some(t) = self.slab.get_mut(index, generation) {
            let at = t.conn.next_deadline(limits);
            self.deadlines
                .schedule(at, index, generation, &mut t.scheduled);
        }
    }

    /// The nearest deadline of any connection.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Gives every connection whose deadline has come its `on_deadline`,
    /// and lists them in `due` (cleared first) for the driver to move.
    pub fn fire_deadlines(&mut self, env: &Env, due: &mut Vec<(u32, u32)>) {
        due.clear();
        while let Some((at, index, generation)) = self.deadlines.pop_due(env.now) {
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
