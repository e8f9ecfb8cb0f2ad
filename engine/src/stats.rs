//! Per-worker counters: written by one worker only, read by anyone.
//!
//! Each counter is a relaxed atomic that only its worker writes, so an
//! increment is a plain load and store (no locked instruction) and readers
//! sum the workers' values whenever they like.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this (single writer).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` from any thread (an atomic add): for server models where
    /// many threads share one set of counters.
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Replaces the value (for figures the worker reads from elsewhere).
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A counter a service's sessions keep ([`crate::SessionContext::counter`]),
/// exported by `/metrics` with the service's name. Add to it from the
/// worker that serves the session: each worker has its own.
#[derive(Debug, Clone)]
pub struct ServiceCounter(Arc<Counter>);

impl ServiceCounter {
    /// A counter counted nowhere else (for server models without workers).
    pub fn detached() -> Self {
        Self(Arc::default())
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.add(n);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.add(1);
    }

    /// The value on this worker.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// One worker's service counters. Registering takes a lock (once per
/// service and name on each worker: the session makers keep what they
/// got); adding does not.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    entries: Mutex<Vec<(Arc<str>, &'static str, ServiceCounter)>>,
}

impl ServiceCounters {
    /// The counter `name` of `service`, made on first use.
    pub(crate) fn register(&self, service: &Arc<str>, name: &'static str) -> ServiceCounter {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, c)) = entries.iter().find(|(s, n, _)| s == service && *n == name) {
            return c.clone();
        }
        let counter = ServiceCounter(Arc::default());
        entries.push((service.clone(), name, counter.clone()));
        counter
    }

    /// Every counter now: (service, name, value), in registration order.
    pub fn snapshot(&self) -> Vec<(Arc<str>, &'static str, u64)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(s, n, c)| (s.clone(), *n, c.get()))
            .collect()
    }
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// One worker's counters. Aligned to its own cache lines so that two
        /// workers never write the same line.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct WorkerStats {
            $($(#[doc = $doc])* pub $name: Counter,)*
            /// Counters the worker's sessions keep, by service and name.
            pub services: ServiceCounters,
        }

        /// A plain copy of counters, for printing and arithmetic.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl WorkerStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.get(),)* }
            }
        }

        impl StatsSnapshot {
            /// Every counter's name, help text and value, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc),*).trim_start(), self.$name),)*]
            }

            /// The sum of two snapshots, counter by counter.
            pub fn plus(&self, other: &StatsSnapshot) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.wrapping_add(other.$name),)* }
            }
        }
    };
}

counters! {
    /// TCP connections accepted.
    connections_accepted,
    /// TCP connections closed.
    connections_closed,
    /// Connections closed at once because the worker was at its share of
    /// --max-connections (a burst accepted in one batch).
    connections_rejected,
    /// Bytes received, TCP and UDP payloads.
    bytes_in,
    /// Bytes sent, TCP and UDP payloads.
    bytes_out,
    /// Bytes read after the replies were complete, and discarded.
    bytes_discarded,
    /// TCP receive completions that carried data.
    messages_in,
    /// TCP send completions.
    messages_out,
    /// UDP datagrams received (each GRO segment counts).
    datagrams_in,
    /// UDP datagrams sent (each GSO segment counts).
    datagrams_out,
    /// UDP sends that carried more than one datagram (GSO).
    gso_sends,
    /// UDP receives that carried more than one datagram (GRO).
    gro_receives,
    /// UDP replies the kernel refused (a full socket buffer, an unreachable peer).
    udp_replies_dropped,
    /// GSO trains the path refused (resent one datagram at a time; that
    /// socket sends no more trains).
    gso_refused,
    /// UDP replies sent synchronously because every io_uring send slot was in flight.
    udp_direct_sends,
    /// UDP datagrams larger than a receive buffer, answered truncated.
    udp_truncated,
    /// Connections ended by an error (reset, broken pipe).
    connection_errors,
    /// Failed accepts (EMFILE, ENFILE and others).
    accept_errors,
    /// Times a connection stopped being read because its output was full.
    backpressure_pauses,
    /// TCP connections not read now because their output is full (a
    /// gauge: up when one pauses, down when it resumes or closes).
    connections_paused,
    /// Multishot operations re-armed after ending (ENOBUFS and the like).
    multishot_rearms,
    /// Connections closed on a timeout: --idle-timeout, or their protocol's
    /// own (idle, or headers too slow).
    idle_timeouts,
    /// Connections closed because the peer sent more than the session's
    /// frame bound without completing a frame ("need more input" past
    /// `StreamSession::max_frame`).
    frames_too_large,
    /// Connections closed because the peer accepted none of their pending
    /// output for --send-timeout.
    send_timeouts,
    /// Connections closed because the worker's connections together held
    /// more than its share of --memory-limit: those holding the most go
    /// first.
    connections_evicted,
    /// Bytes of input and output the worker's connections hold now (a
    /// gauge, held within the worker's share of --memory-limit).
    connection_memory,
    /// UDP sessions (per-peer conversations) held now.
    sessions_open,
    /// UDP sessions dropped to keep the session table within its bound.
    sessions_evicted,
    /// UDP sessions that ended because their peer went silent.
    sessions_expired,
    /// UDP replies held back: a datagram from an address that has not
    /// proved it receives (the bot) answered only with a prompt and its
    /// code, within three times its size (anti-amplification), or a reply
    /// cut to what one datagram carries (`ok`).
    udp_replies_capped,
    /// UDP datagrams dropped unanswered because they came from a port that
    /// answers datagrams (this server's UDP services, echo, daytime,
    /// chargen, time): answering a spoofed one could start an endless loop.
    udp_loops_refused,
    /// TCP receives sent back from the buffer the kernel wrote them into,
    /// with no copy in user space (echo on io_uring).
    receives_lent,
    /// TCP receive buffers lent to sends now (a gauge; at most a quarter
    /// of --buffers, so peers that never read cannot take them all).
    tcp_buffers_lent,
    /// TCP receive buffers kept published ahead of need (a gauge: it
    /// doubles in a batch where the kernel runs out, halves when half go
    /// unused).
    tcp_buffers_spare,
    /// Messages this worker sent to other workers (asks of its sessions
    /// for state another worker owns, and answers to theirs).
    worker_messages_sent,
    /// Messages this worker received from other workers (asks it ran on
    /// its shard, and answers to its own asks).
    worker_messages_received,
    /// Asks of this worker's sessions waiting for another worker's answer
    /// now, in flight or waiting for a credit (a gauge).
    asks_waiting,
    /// io_uring_enter system calls.
    io_uring_enter_calls,
    /// Submission queue entries handed to the kernel.
    sqes_submitted,
    /// Completion queue entries reaped.
    cqes_reaped,
    /// epoll_wait system calls (the epoll model).
    epoll_waits,
    /// Readiness events epoll_wait reported (the epoll model).
    readiness_events,
    /// System calls the epoll model made besides epoll_wait: recv, send,
    /// recvmsg, sendmsg, accept4, shutdown, including those that found
    /// nothing to do (EAGAIN).
    io_syscalls,
}

/// One datagram handler's share of session counters that several handlers
/// (several UDP services, or the threads of a shared-counter model) publish
/// into: it adds the change since its last publication, so the counters
/// hold the sum over handlers instead of the last one's figures.
#[derive(Debug, Default)]
pub struct SessionShare {
    last: protocols::SessionStats,
}

impl SessionShare {
    /// Adds what changed in `now` since the last call to the shared counters
    /// (any thread: atomic adds; a shrinking table adds a wrapped negative
    /// change, which the sum absorbs exactly).
    pub fn publish(&mut self, stats: &WorkerStats, now: protocols::SessionStats) {
        stats
            .sessions_open
            .add_shared(now.open.wrapping_sub(self.last.open));
        stats
            .sessions_evicted
            .add_shared(now.evicted.wrapping_sub(self.last.evicted));
        stats
            .sessions_expired
            .add_shared(now.expired.wrapping_sub(self.last.expired));
        stats
            .udp_replies_capped
            .add_shared(now.capped.wrapping_sub(self.last.capped));
        self.last = now;
    }
}

impl WorkerStats {
    /// Records the state of a worker's session tables: the sum over its
    /// handlers (see [`SessionShare`] where several threads share counters).
    pub fn publish_sessions(&self, tables: impl IntoIterator<Item = protocols::SessionStats>) {
        let sessions = tables
            .into_iter()
            .fold(protocols::SessionStats::default(), |sum, s| {
                protocols::SessionStats {
                    open: sum.open + s.open,
                    evicted: sum.evicted + s.evicted,
                    expired: sum.expired + s.expired,
                    capped: sum.capped + s.capped,
                }
            });
        self.sessions_open.set(sessions.open);
        self.sessions_evicted.set(sessions.evicted);
        self.sessions_expired.set(sessions.expired);
        self.udp_replies_capped.set(sessions.capped);
    }
}

impl StatsSnapshot {
    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_accepted
            .saturating_sub(self.connections_closed)
    }

    /// The sum over several workers.
    pub fn total<'a>(all: impl IntoIterator<Item = &'a StatsSnapshot>) -> StatsSnapshot {
        all.into_iter()
            .fold(StatsSnapshot::default(), |acc, s| acc.plus(s))
    }

    /// A one-line summary for the console.
    pub fn summary_line(&self) -> String {
        let requests = self.messages_in + self.datagrams_in;
        // Per request, once there are requests to divide by.
        let per_request = |calls: u64| {
            if requests == 0 {
                0.0
            } else {
                calls as f64 / requests as f64
            }
        };
        let kernel = if self.epoll_waits > 0 {
            format!(
                "epoll_wait={} events={} io syscalls={} ({:.3} syscalls/request)",
                self.epoll_waits,
                self.readiness_events,
                self.io_syscalls,
                per_request(self.epoll_waits + self.io_syscalls)
            )
        } else {
            format!(
                "io_uring_enter={} sqes={} cqes={} ({:.3} enters/request)",
                self.io_uring_enter_calls,
                self.sqes_submitted,
                self.cqes_reaped,
                per_request(self.io_uring_enter_calls)
            )
        };
        format!(
            "conns open={} accepted={} | tcp in={} B/{} msgs out={} B/{} msgs | udp in={} out={} dgrams | errors={} | {kernel}",
            self.connections_open(),
            self.connections_accepted,
            self.bytes_in,
            self.messages_in,
            self.bytes_out,
            self.messages_out,
            self.datagrams_in,
            self.datagrams_out,
            self.connection_errors + self.accept_errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_several_handlers_sum() {
        let stats = WorkerStats::default();
        let (mut a, mut b) = (SessionShare::default(), SessionShare::default());
        let table = |open, evicted| protocols::SessionStats {
            open,
            evicted,
            ..protocols::SessionStats::default()
        };
        a.publish(&stats, table(3, 1));
        b.publish(&stats, table(5, 0));
        assert_eq!(stats.sessions_open.get(), 8);
        a.publish(&stats, table(1, 2)); // a's table shrank
        assert_eq!(stats.sessions_open.get(), 6);
        assert_eq!(stats.sessions_evicted.get(), 2);
    }

    #[test]
    fn snapshots_sum_and_name_every_counter() {
        let a = WorkerStats::default();
        a.bytes_in.add(5);
        a.connections_accepted.add(3);
        a.connections_closed.inc();
        let b = WorkerStats::default();
        b.bytes_in.add(7);
        let total = StatsSnapshot::total(&[a.snapshot(), b.snapshot()]);
        assert_eq!(total.bytes_in, 12);
        assert_eq!(total.connections_open(), 2);
        let fields = total.fields();
        assert!(fields
            .iter()
            .any(|(n, help, v)| *n == "bytes_in" && *v == 12 && help.starts_with("Bytes")));
        assert_eq!(std::mem::align_of::<WorkerStats>(), 128);
    }
}
