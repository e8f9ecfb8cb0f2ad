//! The connection core in memory: a scripted driver plays the kernel and
//! the peer, so every bound is checked without a socket.

use std::sync::Arc;

use protocols::bot::{BotConfig, BotStream, Script};
use protocols::echo::EchoStream;
use protocols::http::{HttpConfig, HttpSession};
use protocols::reverse::ReverseLines;
use protocols::{Fed, StreamSession};

use super::*;

/// A driver that does what it is told at once, like a readiness driver
/// whose socket takes nothing until `accept` is called.
struct Sim {
    conn: Connection,
    limits: Limits,
    stats: WorkerStats,
    now: Instant,
    receiving: bool,
    /// The send the kernel holds, if any.
    in_flight: Option<Vec<u8>>,
    /// What the peer has read.
    delivered: Vec<u8>,
    actions: Vec<Action>,
    /// A receive buffer lent to the connection, as the io_uring driver keeps it.
    lent: Option<Vec<u8>>,
    /// Lent buffers given back.
    returned: usize,
}

impl Sim {
    fn new(session: Box<dyn StreamSession>, limits: Limits) -> Self {
        let now = Instant::now();
        let stats = WorkerStats::default();
        let env = Env {
            limits: &limits,
            stats: &stats,
            now,
            mesh: None,
        };
        let conn = Connection::new(session, &env);
        let mut sim = Self {
            conn,
            limits,
            stats: WorkerStats::default(),
            now,
            receiving: false,
            in_flight: None,
            delivered: Vec::new(),
            actions: Vec::new(),
            lent: None,
            returned: 0,
        };
        sim.poll();
        sim
    }

    /// Runs `event` on the connection, then carries out what it asks for.
    fn event(&mut self, event: impl FnOnce(&mut Connection, &Env)) {
        let env = Env {
            limits: &self.limits,
            stats: &self.stats,
            now: self.now,
            mesh: None,
        };
        event(&mut self.conn, &env);
        self.poll();
    }

    /// Carries out every action the connection asks for.
    fn poll(&mut self) {
        for _ in 0..1000 {
            let env = Env {
                limits: &self.limits,
                stats: &self.stats,
                now: self.now,
                mesh: None,
            };
            let Some(action) = self.conn.poll_action(&env) else {
                return;
            };
            self.actions.push(action);
            match action {
                Action::Send => {
                    assert!(self.in_flight.is_none(), "one send at a time");
                    self.in_flight = Some(match self.conn.outgoing() {
                        Outgoing::Owned(bytes) => bytes.to_vec(),
                        Outgoing::Lent(range) => {
                            self.lent.as_ref().expect("a lent send has its buffer")[range].to_vec()
                        }
                    });
                }
                Action::StartReceiving => self.receiving = true,
                Action::StopReceiving => {
                    self.receiving = false;
                    self.conn.on_recv_ended();
                }
                Action::CancelSend => {
                    self.in_flight = None;
                    self.conn.on_send_error(&env);
                }
                Action::ShutdownWrite | Action::Close => {}
            }
        }
        panic!("the connection never settles");
    }

    /// The peer sends `data`; only taken while receiving, as a kernel would.
    fn peer_sends(&mut self, data: &[u8]) -> bool {
        if !self.receiving {
            return false;
        }
        self.event(|c, env| c.on_received(data, env));
        true
    }

    /// The peer sends `data` into a buffer the driver offers to lend, as
    /// the io_uring driver does; true if the connection took the buffer.
    fn peer_sends_lending(&mut self, data: &[u8]) -> bool {
        assert!(self.receiving, "only while receiving");
        let env = Env {
            limits: &self.limits,
            stats: &self.stats,
            now: self.now,
            mesh: None,
        };
        let taken = self.conn.lend(data.len(), &env);
        if taken {
            assert!(
                self.lent.is_none(),
                "a second buffer taken before the first was sent"
            );
            self.lent = Some(data.to_vec());
        } else {
            self.conn.on_received(data, &env);
        }
        self.poll();
        taken
    }

    /// The kernel takes the first `n` bytes of the send in flight.
    fn kernel_takes(&mut self, n: usize) {
        let mut bytes = self.in_flight.take().expect("a send in flight");
        self.delivered.extend_from_slice(&bytes[..n]);
        bytes.drain(..n);
        self.event(|c, env| c.on_sent(n, env));
        self.give_back_if_done();
    }

    /// What the driver does after a send reports: the lent buffer goes
    /// back once the connection is done with it.
    fn give_back_if_done(&mut self) {
        if !self.conn.is_lending() && self.lent.take().is_some() {
            self.returned += 1;
        }
    }

    /// The peer reads everything in flight.
    fn peer_reads(&mut self) {
        while let Some(bytes) = self.in_flight.take() {
            self.delivered.extend_from_slice(&bytes);
            self.event(|c, env| c.on_sent(bytes.len(), env));
            self.give_back_if_done();
        }
    }

    fn peer_closes(&mut self) {
        self.conn.on_eof();
        self.conn.on_recv_ended();
        self.receiving = false;
        self.poll();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.event(|c, env| c.on_deadline(env));
    }

    fn closed(&self) -> bool {
        self.actions.last() == Some(&Action::Close)
    }
}

fn bot_config() -> BotConfig {
    BotConfig::with_script(Arc::new(Script::default_script()))
}

fn bot() -> Box<dyn StreamSession> {
    Box::new(BotStream::new(Arc::new(bot_config()), 1))
}

fn limits(output_limit: usize) -> Limits {
    Limits {
        output_limit,
        ..Limits::default()
    }
}

#[test]
fn echo_answers_then_closes_after_the_peer() {
    let mut sim = Sim::new(Box::new(EchoStream), Limits::default());
    assert_eq!(sim.actions, vec![Action::StartReceiving]);
    assert!(sim.peer_sends(b"hello"));
    assert_eq!(sim.in_flight.as_deref(), Some(&b"hello"[..]));
    sim.peer_reads();
    sim.peer_closes();
    assert_eq!(sim.delivered, b"hello");
    assert!(sim.closed());
    assert_eq!(sim.stats.bytes_in.get(), 5);
    assert_eq!(sim.stats.bytes_out.get(), 5);
}

#[test]
fn amplifying_input_never_read_stays_within_the_output_limit() {
    // `?` gets the bot's help text, hundreds of bytes for two: a peer that
    // never reads must not turn its input into unbounded output.
    let limit = 64 * 1024;
    let mut sim = Sim::new(bot(), limits(limit));
    let questions = b"?\n".repeat(8 * 1024);
    let mut accepted = 0;
    for _ in 0..100 {
        if sim.peer_sends(&questions) {
            accepted += 1;
        }
    }
    assert!(accepted >= 1);
    assert!(!sim.receiving, "reading stops while the output is full");
    let reply = {
        let mut one = bot();
        let mut out = Vec::new();
        one.on_bytes(b"?\n", &mut out);
        out.len()
    };
    assert!(reply > 20, "the bot answers `?` with more than it was sent");
    assert!(
        sim.conn.unsent() <= limit + reply,
        "unsent {} over the limit {limit} plus one reply {reply}",
        sim.conn.unsent()
    );
    assert!(
        sim.conn.held_len() <= questions.len(),
        "held input is what arrived"
    );
    assert_eq!(sim.stats.backpressure_pauses.get(), 1);
    assert_eq!(sim.stats.connections_paused.get(), 1, "paused now");
    // Once the peer reads, the held questions are answered in order.
    for _ in 0..10_000 {
        if sim.conn.held_len() == 0 {
            break;
        }
        sim.peer_reads();
    }
    assert_eq!(sim.conn.held_len(), 0);
    assert!(sim.receiving, "reading resumes once the output drains");
    assert_eq!(sim.stats.connections_paused.get(), 0, "no longer paused");
}

#[test]
fn a_paused_connection_that_closes_leaves_the_paused_gauge() {
    let mut sim = Sim::new(Box::new(EchoStream), limits(1024));
    while sim.peer_sends(&[b'x'; 512]) {}
    assert_eq!(sim.stats.connections_paused.get(), 1);
    // An error ends it while paused: the gauge comes back down at the close.
    sim.event(|c, env| c.on_recv_error(env));
    sim.in_flight = None;
    sim.event(|c, env| c.on_send_error(env));
    assert!(sim.closed());
    assert_eq!(sim.stats.connections_paused.get(), 0);
}

#[test]
fn a_peer_that_accepts_nothing_is_cut_off_after_the_send_timeout() {
    let limits = Limits {
        send_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut sim = Sim::new(Box::new(EchoStream), limits);
    sim.peer_sends(b"never read");
    assert!(sim.in_flight.is_some());
    let deadline = sim
        .conn
        .next_deadline(&sim.limits)
        .map(Moment::instant)
        .expect("a send timeout");
    assert_eq!(deadline, sim.now + Duration::from_secs(5));
    sim.advance(Duration::from_secs(4));
    assert!(!sim.closed());
    sim.advance(Duration::from_secs(1));
    assert!(sim.actions.contains(&Action::CancelSend));
    assert!(sim.closed());
    assert_eq!(sim.stats.send_timeouts.get(), 1);
}

#[test]
fn progress_resets_the_send_timeout() {
    let limits = Limits {
        send_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut sim = Sim::new(Box::new(EchoStream), limits);
    for _ in 0..5 {
        sim.peer_sends(b"slow reader");
        sim.advance(Duration::from_secs(4));
        sim.peer_reads();
    }
    assert!(!sim.closed());
    assert_eq!(
        sim.conn.next_deadline(&sim.limits).map(Moment::instant),
        None,
        "nothing pending"
    );
}

#[test]
fn a_silent_connection_that_owes_nothing_is_closed_after_the_idle_timeout() {
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(10)),
        ..Limits::default()
    };
    let mut sim = Sim::new(Box::new(EchoStream), limits);
    let opened = sim.now;
    assert_eq!(
        sim.conn.next_deadline(&sim.limits).map(Moment::instant),
        Some(opened + Duration::from_secs(10))
    );
    // Traffic either way restarts the clock.
    sim.advance(Duration::from_secs(6));
    assert!(sim.peer_sends(b"ping"));
    sim.advance(Duration::from_secs(3));
    sim.peer_reads();
    assert_eq!(
        sim.conn.next_deadline(&sim.limits).map(Moment::instant),
        Some(opened + Duration::from_secs(19))
    );
    sim.advance(Duration::from_secs(9));
    assert!(!sim.actions.contains(&Action::ShutdownWrite));
    sim.advance(Duration::from_secs(1));
    // Closed as a finished conversation: our FIN, then the peer's close.
    assert_eq!(sim.stats.idle_timeouts.get(), 1);
    assert!(sim.actions.contains(&Action::ShutdownWrite));
    assert_eq!(sim.delivered, b"ping");
    sim.peer_closes();
    assert!(sim.closed());
    assert_eq!(sim.stats.connection_errors.get(), 0);
}

#[test]
fn output_owed_to_a_silent_peer_is_the_send_timeouts_not_the_idle_timeouts() {
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(1)),
        send_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut sim = Sim::new(Box::new(EchoStream), limits);
    sim.peer_sends(b"never read");
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.stats.idle_timeouts.get(), 0);
    assert!(!sim.closed());
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.stats.send_timeouts.get(), 1);
    assert!(sim.closed());
}

#[test]
fn a_failed_session_always_finishes() {
    // A line over the bound: an error line, our FIN, then the close once
    // the peer closes, or the linger deadline if it never does.
    let mut sim = Sim::new(Box::new(ReverseLines::new(8)), Limits::default());
    sim.peer_sends(b"far too long a line\n");
    sim.peer_reads();
    assert!(sim.actions.contains(&Action::ShutdownWrite));
    assert!(sim.delivered.starts_with(b"error"));
    assert!(sim.receiving, "input is discarded until the peer closes");
    assert!(sim.peer_sends(b"more"));
    assert_eq!(sim.stats.bytes_discarded.get(), 4);
    sim.advance(Limits::default().linger);
    assert!(sim.closed(), "the linger deadline closes it");
}

#[test]
fn pipelining_during_a_long_body_waits_and_is_answered_after_it() {
    let limit = 1024 * 1024;
    let mut sim = Sim::new(
        Box::new(HttpSession::new(Arc::new(HttpConfig::default()))),
        limits(limit),
    );
    sim.peer_sends(b"GET /bytes/4000000 HTTP/1.1\r\n\r\n");
    let pipelined = b"GET / HTTP/1.1\r\n\r\n".repeat(100);
    // Keep sending while the body is written: nothing may land inside it.
    let mut sends = 0;
    while sim.peer_sends(&pipelined) {
        sends += 1;
    }
    assert_eq!(sends, 1, "held input stops the reading");
    assert_eq!(sim.conn.held_len(), pipelined.len());
    assert!(sim.conn.unsent() <= limit + 256 * 1024 + 512);
    for _ in 0..100_000 {
        if sim.conn.held_len() == 0 && sim.in_flight.is_none() {
            break;
        }
        sim.peer_reads();
    }
    let text = &sim.delivered;
    let head_end = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &text[head_end..head_end + 4_000_000];
    assert!(body.iter().all(u8::is_ascii_lowercase), "the body is whole");
    let after = &text[head_end + 4_000_000..];
    assert!(after.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(
        after
            .windows(15)
            .filter(|w| w == b"HTTP/1.1 200 OK")
            .count(),
        100
    );
    assert!(!text.windows(3).any(|w| w == b"431"));
}

#[test]
fn shutdown_answers_what_was_queued_then_finishes() {
    let mut sim = Sim::new(Box::new(EchoStream), Limits::default());
    sim.conn.on_shutdown(6);
    sim.poll();
    sim.peer_sends(b"abc");
    sim.peer_sends(b"defghi");
    sim.peer_reads();
    assert_eq!(sim.delivered, b"abcdef");
    assert!(sim.actions.contains(&Action::ShutdownWrite));
    assert_eq!(sim.stats.bytes_discarded.get(), 3);
}

/// Frames of one length byte and that many bytes; answers each with
/// `<n>`, past `max_frame` with `too large`, and the end of stream with
/// `eof:` and the bytes it left unread. Written out here, apart
/// from any protocol of the crate, as a user of the API would.
struct LengthPrefixed {
    max_frame: usize,
    timer: Option<Instant>,
}

impl LengthPrefixed {
    fn new(max_frame: usize) -> Box<Self> {
        Box::new(Self {
            max_frame,
            timer: None,
        })
    }
}

impl StreamSession for LengthPrefixed {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
        let Some(&len) = input.first() else {
            return Fed::need_more();
        };
        let end = 1 + len as usize;
        if input.len() < end {
            return Fed::need_more();
        }
        out.extend_from_slice(format!("<{len}>").as_bytes());
        Fed::all(end)
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn on_frame_too_large(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"too large");
    }

    fn on_eof(&mut self, unread: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"eof:");
        out.extend_from_slice(unread);
    }

    fn timer(&self) -> Option<Instant> {
        self.timer
    }
}

/// A length-prefixed session that says how much its frame needs, and
/// counts how often it is offered input.
struct Hinting {
    needed: usize,
    offers: std::rc::Rc<std::cell::Cell<usize>>,
    hint: bool,
}

impl StreamSession for Hinting {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
        self.offers.set(self.offers.get() + 1);
        self.needed = input.first().map_or(0, |&len| 1 + len as usize);
        if self.needed == 0 || input.len() < self.needed {
            return Fed::need_more();
        }
        out.extend_from_slice(b"!");
        Fed::all(self.needed)
    }

    fn input_needed(&self) -> usize {
        if self.hint {
            self.needed
        } else {
            0
        }
    }
}

#[test]
fn a_session_that_says_how_much_it_needs_is_not_offered_every_byte() {
    for (hint, most_offers) in [(false, 200), (true, 2)] {
        let offers = std::rc::Rc::new(std::cell::Cell::new(0));
        let session = Hinting {
            needed: 0,
            offers: offers.clone(),
            hint,
        };
        let mut sim = Sim::new(Box::new(session), Limits::default());
        // A 200-byte frame (a length byte of 199), one byte per receive.
        let frame: Vec<u8> = std::iter::once(199u8).chain([7u8; 199]).collect();
        for byte in &frame {
            assert!(sim.peer_sends(&[*byte]));
        }
        sim.peer_reads();
        assert_eq!(sim.delivered, b"!", "hint {hint}");
        assert!(
            offers.get() <= most_offers,
            "hint {hint}: offered {} times",
            offers.get()
        );
    }
}

#[test]
fn a_needed_length_the_peer_wrote_reserves_no_more_than_the_frame_bound() {
    /// Passes on the length the peer wrote, unchecked.
    struct Credulous;
    impl StreamSession for Credulous {
        fn on_input(&mut self, _input: &[u8], _out: &mut Vec<u8>, _room: usize) -> Fed {
            Fed::need_more()
        }
        fn input_needed(&self) -> usize {
            4 << 30
        }
        fn max_frame(&self) -> usize {
            1024
        }
    }
    let mut sim = Sim::new(Box::new(Credulous), Limits::default());
    sim.peer_sends(&[0xff; 10]);
    sim.peer_sends(&[0xff; 10]);
    assert!(sim.conn.memory() <= 2048, "reserved {}", sim.conn.memory());
    sim.peer_sends(&[0xff; 1024]);
    assert_eq!(sim.stats.frames_too_large.get(), 1);
}

#[test]
fn a_frame_arriving_a_byte_at_a_time_is_answered_once_whole() {
    let mut sim = Sim::new(LengthPrefixed::new(64), Limits::default());
    let frames = [&[3u8, b'a', b'b', b'c'][..], &[0], &[2, b'x', b'y']].concat();
    for byte in &frames {
        assert!(sim.peer_sends(&[*byte]), "still receiving mid-frame");
        sim.peer_reads();
    }
    assert_eq!(sim.delivered, b"<3><0><2>");
    assert_eq!(sim.conn.held_len(), 0);
    // Two frames and a half in one receive: two answers, the half held.
    sim.peer_sends(&[1, b'q', 4, b'w']);
    sim.peer_reads();
    assert_eq!(sim.delivered, b"<3><0><2><1>");
    assert_eq!(sim.conn.held_len(), 2);
    assert!(sim.receiving);
    sim.peer_sends(b"xyz");
    sim.peer_reads();
    assert_eq!(sim.delivered, b"<3><0><2><1><4>");
}

#[test]
fn a_frame_past_the_sessions_bound_gets_its_error_and_a_close() {
    let mut sim = Sim::new(LengthPrefixed::new(16), Limits::default());
    sim.peer_sends(&[200]);
    sim.peer_sends(&[0; 15]);
    assert!(sim.receiving, "16 bytes held is within the bound");
    assert_eq!(sim.stats.frames_too_large.get(), 0);
    sim.peer_sends(&[0]);
    assert_eq!(sim.stats.frames_too_large.get(), 1);
    sim.peer_reads();
    assert_eq!(sim.delivered, b"too large");
    assert!(sim.actions.contains(&Action::ShutdownWrite));
    assert_eq!(sim.conn.held_len(), 0, "the held frame is dropped");
    assert_eq!(sim.stats.bytes_discarded.get(), 17);
    sim.peer_closes();
    assert!(sim.closed());
}

#[test]
fn the_end_of_stream_mid_frame_reaches_the_session_and_finishes() {
    let mut sim = Sim::new(LengthPrefixed::new(64), Limits::default());
    sim.peer_sends(&[1, b'a', 5, b'b']);
    sim.peer_reads();
    sim.peer_closes();
    sim.peer_reads();
    // The session's last look: the frame that never completed.
    assert_eq!(sim.delivered, b"<1>eof:\x05b");
    assert_eq!(sim.stats.bytes_discarded.get(), 2);
    assert!(sim.closed());
}

#[test]
fn a_peer_that_stops_mid_frame_meets_the_idle_timeout() {
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(10)),
        ..Limits::default()
    };
    let mut sim = Sim::new(LengthPrefixed::new(64), limits);
    sim.peer_sends(&[9, b'a']);
    assert_eq!(
        sim.conn.next_deadline(&sim.limits).map(Moment::instant),
        Some(sim.now + Duration::from_secs(10))
    );
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.stats.idle_timeouts.get(), 1);
    assert!(sim.actions.contains(&Action::ShutdownWrite));
}

#[test]
fn a_session_timer_is_a_deadline_that_calls_on_timer() {
    struct Beeper {
        at: Option<Instant>,
    }
    impl StreamSession for Beeper {
        fn on_input(&mut self, input: &[u8], _out: &mut Vec<u8>, _room: usize) -> Fed {
            Fed::all(input.len())
        }
        fn timer(&self) -> Option<Instant> {
            self.at
        }
        fn on_timer(&mut self, now: Instant, out: &mut Vec<u8>) -> Next {
            out.extend_from_slice(b"beep");
            self.at = Some(now + Duration::from_millis(50));
            Next::Continue
        }
    }
    let start = Instant::now();
    let at = start + Duration::from_millis(50);
    let mut sim = Sim::new(Box::new(Beeper { at: Some(at) }), Limits::default());
    sim.now = start;
    assert_eq!(
        sim.conn.next_deadline(&sim.limits).map(Moment::instant),
        Some(at)
    );
    sim.advance(Duration::from_millis(49));
    sim.peer_reads();
    assert!(sim.delivered.is_empty(), "not before its time");
    sim.advance(Duration::from_millis(1));
    sim.peer_reads();
    assert_eq!(sim.delivered, b"beep");
    assert_eq!(
        sim.conn.next_deadline(&sim.limits).map(Moment::instant),
        Some(at + Duration::from_millis(50)),
        "the session moved its timer"
    );
}

#[test]
fn ticks_come_from_the_deadline_and_end_idle_sessions() {
    let mut config = bot_config();
    config.idle = Duration::from_millis(300);
    let mut sim = Sim::new(
        Box::new(BotStream::new(Arc::new(config), 1)),
        Limits::default(),
    );
    sim.peer_reads(); // the greeting
    assert_eq!(
        sim.conn.next_deadline(&sim.limits).map(Moment::instant),
        Some(sim.now + TICK)
    );
    for _ in 0..3 {
        sim.advance(TICK);
    }
    sim.peer_reads();
    assert_eq!(sim.stats.idle_timeouts.get(), 1);
    assert!(sim.actions.contains(&Action::ShutdownWrite));
    sim.peer_closes();
    assert!(sim.closed());
}

#[test]
fn a_lent_buffer_goes_back_once_sent_and_later_input_follows_it() {
    let mut sim = Sim::new(Box::new(EchoStream), Limits::default());
    assert!(sim.peer_sends_lending(b"abc"), "echo takes the buffer");
    assert_eq!(sim.in_flight.as_deref(), Some(&b"abc"[..]));
    assert_eq!(sim.conn.unsent(), 3);
    assert_eq!(sim.conn.output_held(), 3, "the lent buffer is output held");
    // A short send: the rest goes from the same buffer.
    sim.kernel_takes(1);
    assert!(sim.conn.is_lending());
    assert_eq!(sim.in_flight.as_deref(), Some(&b"bc"[..]));
    // Input meanwhile cannot overtake it: it is copied and queued behind.
    assert!(!sim.peer_sends_lending(b"def"), "one lent send at a time");
    assert_eq!(sim.returned, 0);
    sim.peer_reads();
    assert_eq!(sim.returned, 1, "given back once all of it was sent");
    assert_eq!(sim.delivered, b"abcdef");
    assert_eq!(sim.conn.unsent(), 0);
    // Quiet again: the next input is lent.
    assert!(sim.peer_sends_lending(b"g"));
    sim.peer_reads();
    assert_eq!(sim.returned, 2);
    assert_eq!(sim.delivered, b"abcdefg");
    assert_eq!(sim.stats.bytes_in.get(), 7);
    assert_eq!(sim.stats.bytes_out.get(), 7);
}

#[test]
fn only_an_echoing_session_borrows_and_never_past_the_limit() {
    let mut sim = Sim::new(Box::new(ReverseLines::default()), Limits::default());
    assert!(
        !sim.peer_sends_lending(b"abc\n"),
        "reverse replies with other bytes"
    );
    assert_eq!(sim.in_flight.as_deref(), Some(&b"cba\n"[..]));
    let mut sim = Sim::new(Box::new(EchoStream), limits(4));
    assert!(!sim.peer_sends_lending(b"hello"), "over the output limit");
    assert_eq!(
        sim.in_flight.as_deref(),
        Some(&b"hell"[..]),
        "copied within room"
    );
}

#[test]
fn a_failed_lent_send_keeps_its_buffer_until_the_close() {
    let mut sim = Sim::new(Box::new(EchoStream), Limits::default());
    assert!(sim.peer_sends_lending(b"abc"));
    // The peer resets: the send fails; the core stops its receive and
    // closes, and only then may the driver take the buffer back.
    sim.in_flight = None;
    sim.event(|c, env| c.on_send_error(env));
    assert!(sim.closed());
    assert!(sim.conn.is_lending(), "never handed back by a failed send");
}

#[test]
fn a_static_body_part_follows_its_head_holds_no_memory_and_still_times_out() {
    let limits = Limits {
        send_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut sim = Sim::new(
        Box::new(HttpSession::new(Arc::new(HttpConfig::default()))),
        limits,
    );
    sim.peer_sends(b"GET /bytes/1048576 HTTP/1.1\r\n\r\n");
    let head = sim.in_flight.clone().expect("the head is sent first");
    assert!(head.starts_with(b"HTTP/1.1 200 OK") && head.ends_with(b"\r\n\r\n"));
    sim.kernel_takes(head.len());
    // The body's first part goes from static memory: owed, but not held.
    let part = sim.in_flight.as_ref().expect("a body part").len();
    assert_eq!(part, 256 * 1024);
    assert_eq!(
        (sim.conn.unsent(), sim.conn.output_held()),
        (part, 0),
        "a static part is owed but holds no memory"
    );
    // A short send: the rest of the same part follows, then the next part.
    sim.kernel_takes(1000);
    assert_eq!(sim.in_flight.as_ref().map(Vec::len), Some(part - 1000));
    sim.kernel_takes(part - 1000);
    assert_eq!(sim.in_flight.as_ref().map(Vec::len), Some(part));
    let body = &sim.delivered[head.len()..];
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == protocols::http::body_byte(i as u64)));
    // A peer that takes nothing more is cut off as with any output.
    sim.advance(Duration::from_secs(5));
    assert!(sim.actions.contains(&Action::CancelSend));
    assert!(sim.closed());
    assert_eq!(sim.stats.send_timeouts.get(), 1);
}
