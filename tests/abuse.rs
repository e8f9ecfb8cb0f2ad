//! Hostile clients against every TCP protocol, on the models built on the
//! engine's connection core (`--io uring` and `--io epoll`): input that
//! amplifies and is never read, pipelining during a long body, readers that
//! stall past the send timeout, resets mid-reply, half-closes, and a SIGTERM
//! while all of them are connected. Each test waits on the server's own
//! counters, never on a sleep.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{connect, connect_small_window, Server, PATIENCE};

/// Output limit in these tests: small, so the bound is quick to reach.
const LIMIT: u64 = 256 * 1024;
/// Connections per protocol in the flood.
const PER_PROTOCOL: usize = 12;

/// What each protocol is fed: a request that is answered with more than
/// itself where the protocol allows (the bot's help, HTTP's metrics page).
const PROTOCOLS: [(&str, &[u8]); 5] = [
    ("echo", b"0123456789abcdef"),
    ("reverse", b"0123456789abcdef"),
    ("reverse-lines", b"0123456789abcde\n"),
    ("bot", b"?\n"),
    ("http", b"GET /metrics HTTP/1.1\r\n\r\n"),
];

fn start(io: &str, send_timeout: &str) -> Server {
    start_with(io, LIMIT, send_timeout, &[])
}

/// The server with every protocol, one worker, and `extra` flags.
fn start_with(io: &str, output_limit: u64, send_timeout: &str, extra: &[&str]) -> Server {
    let limit = output_limit.to_string();
    let mut args = vec![
        "--io",
        io,
        "--threads",
        "1",
        "--output-limit",
        &limit,
        "--send-timeout",
        send_timeout,
        "--shutdown-deadline",
        "3s",
    ];
    args.extend_from_slice(extra);
    let specs: Vec<String> = PROTOCOLS
        .iter()
        .map(|(p, _)| format!("tcp:0={p}"))
        .collect();
    for spec in &specs {
        args.extend(["--serve", spec]);
    }
    Server::start(&args)
}

/// Writes `pattern` repeated, without blocking, until the socket takes no
/// more; the bytes written.
fn write_nonblocking(stream: &mut TcpStream, block: &[u8]) -> u64 {
    stream.set_nonblocking(true).unwrap();
    let mut written = 0u64;
    loop {
        match stream.write(block) {
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // The server gave up on us (the send timeout): nothing more to do.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                break
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    written
}

/// Opens `PER_PROTOCOL` connections to every protocol, each writing its
/// request over and over and never reading, until the server has stopped
/// reading every one of them (its backpressure counter says so).
fn flood_never_reading(server: &Server) -> Vec<TcpStream> {
    // Every connection paused at once (a gauge; counting pauses would let
    // one connection's repeated pauses stand in for another's none).
    flood_until(server, |server, n| {
        server.counter("connections_paused") >= n
    })
}

/// The flood, until `done(server, connections)`.
fn flood_until(server: &Server, done: impl Fn(&Server, u64) -> bool) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for (protocol, request) in PROTOCOLS {
        let addr = server.addr("tcp", protocol);
        let block = request.repeat(64 * 1024 / request.len());
        for _ in 0..PER_PROTOCOL {
            let mut s = connect(addr);
            write_nonblocking(&mut s, &block);
            streams.push((s, block.clone()));
        }
    }
    let n = streams.len() as u64;
    // Keep the pressure on until `done`: for most callers, until the
    // server stopped reading every connection because its output reached
    // the limit.
    let deadline = Instant::now() + PATIENCE;
    while !done(server, n) {
        assert!(
            Instant::now() < deadline,
            "the flood of {n} connections never got there: {} pauses, {} send timeouts; {:?}",
            server.counter("backpressure_pauses"),
            server.counter("send_timeouts"),
            server.metrics()
        );
        for (s, block) in &mut streams {
            write_nonblocking(s, block);
        }
    }
    streams.into_iter().map(|(s, _)| s).collect()
}

fn amplifying_input_never_read_stays_within_the_bound(io: &str) {
    let server = start(io, "60s");
    let baseline = server.rss_kib();
    let streams = flood_never_reading(&server);
    let n = streams.len() as u64;
    eprintln!("{io}: baseline RSS {baseline} KiB");
    // Everything the server will ever hold for them is now held: reading
    // stopped, and output stopped growing at the limit.
    let rss = server.rss_kib() * 1024;
    // Per connection: its output, the input one receive may bring in
    // beyond it, and 32 KiB for the rest (socket state, the session).
    let window = engine::RECEIVE_WINDOW as u64;
    let bound = n * (LIMIT + window + 32 * 1024) + 16 * 1024 * 1024;
    assert!(
        rss <= bound,
        "{io}: server RSS {} KiB over the bound {} KiB for {n} non-reading clients",
        rss / 1024,
        bound / 1024
    );
    eprintln!(
        "{io}: RSS {} KiB with {n} non-reading clients (bound {} KiB)",
        rss / 1024,
        bound / 1024
    );
    // Others are still served.
    let mut other = connect(server.addr("tcp", "echo"));
    other.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    other.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
    drop(streams);
}

/// The same flood with a larger output limit and a worker-wide memory
/// budget of four of them: 60 clients that never read would hold 60 MiB
/// (a limit each), so the budget must end most of them, the largest
/// holders first, and keep the server within it while others are served.
fn the_memory_limit_evicts_the_largest_holders_and_bounds_the_server(io: &str) {
    const OUTPUT_LIMIT: u64 = 1 << 20;
    const BUDGET: u64 = 4 << 20;
    // 64 receive buffers (1 MiB) rather than 512, so the ring's pages the
    // flood touches stay small beside the budget.
    const RING: u64 = 64 * 16 * 1024;
    let server = start_with(
        io,
        OUTPUT_LIMIT,
        "60s",
        &["--memory-limit", "4M", "--buffers", "64"],
    );
    let before = server.peak_rss_kib() * 1024;
    // A connection the flood can no longer grow is paused, holding at
    // least half its output limit (reading resumes at half), so at most
    // BUDGET / (OUTPUT_LIMIT / 2) of them fit in the budget; every other
    // one must have been evicted.
    let n = (PROTOCOLS.len() * PER_PROTOCOL) as u64;
    let may_stay = 2 * BUDGET / OUTPUT_LIMIT;
    let streams = flood_until(&server, |server, n| {
        server.counter("connections_evicted") >= n - may_stay
    });
    let evicted = server.counter("connections_evicted");
    server.wait_counter("connections_closed", |c| c >= evicted);
    // What evicted connections still held (on io_uring, a send buffer
    // until the kernel reports the cancelled send) is released.
    server.wait_counter("connection_memory", |held| held <= BUDGET);
    // Without the budget the flood holds a limit per connection (the test
    // above: n x 1 MiB here). With it: the budget, what one connection may
    // add in one step before eviction sees it (up to twice its limit, as a
    // buffer doubles), the receive ring, and per-connection and allocator
    // overhead (heap chunks under the mmap threshold stay resident once
    // freed: uring's peak reached 13 MiB in 1 run of 10 here, epoll's 7).
    let grew = (server.peak_rss_kib() * 1024).saturating_sub(before);
    let bound = BUDGET + 2 * OUTPUT_LIMIT + RING + n * 64 * 1024 + (8 << 20);
    eprintln!(
        "{io}: {evicted} of {n} evicted; peak RSS grew {} KiB (bound {} KiB, unbounded flood {} KiB)",
        grew / 1024,
        bound / 1024,
        n * OUTPUT_LIMIT / 1024
    );
    assert!(
        grew <= bound && bound < n * OUTPUT_LIMIT,
        "{io}: peak RSS grew {} KiB with a {} KiB budget (bound {} KiB)",
        grew / 1024,
        BUDGET / 1024,
        bound / 1024
    );
    // An evicted client finds its connection closed by the server.
    let closed = streams
        .into_iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            let mut sink = vec![0u8; 1 << 16];
            loop {
                match (&*s).read(&mut sink) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) => return e.kind() == ErrorKind::ConnectionReset,
                }
            }
        })
        .count() as u64;
    assert!(
        closed >= n - may_stay,
        "{io}: {closed} of {n} connections closed, {evicted} evicted"
    );
    still_served(&server);
}

/// Clients that connect and say nothing, as many as --max-connections
/// allows: the idle timeout closes them (with a FIN, not a reset), so a
/// client waiting in the backlog gets in, and one that talks more often
/// than the timeout is never cut off.
fn silent_clients_cannot_hold_every_connection_slot(io: &str) {
    const SLOTS: usize = 8;
    let slots = SLOTS.to_string();
    let server = start_with(
        io,
        LIMIT,
        "60s",
        &["--max-connections", &slots, "--idle-timeout", "300ms"],
    );
    let addr = server.addr("tcp", "echo");
    let silent: Vec<TcpStream> = (0..SLOTS).map(|_| connect(addr)).collect();
    server.wait_counter("connections_accepted", |c| c >= SLOTS as u64);
    // Every slot is taken: this one waits in the backlog until the idle
    // timeout frees one.
    let mut waiting = connect(addr);
    waiting.set_read_timeout(Some(PATIENCE)).unwrap();
    waiting.write_all(b"let me in").unwrap();
    let mut back = [0u8; 9];
    waiting.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"let me in");
    assert!(server.counter("idle_timeouts") >= 1);
    for (i, mut s) in silent.into_iter().enumerate() {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("{io}: silent client {i} was not closed cleanly: {e}"));
        assert!(got.is_empty(), "{io}: silent client {i} got {got:?}");
    }
    drop(waiting);
    // Talking every 100 ms for over three timeouts: never idle.
    let mut talker = connect(addr);
    talker.set_read_timeout(Some(PATIENCE)).unwrap();
    for round in 0..10u8 {
        talker.write_all(&[round; 4]).unwrap();
        let mut echo = [0u8; 4];
        talker
            .read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("{io}: the talker was cut off in round {round}: {e}"));
        assert_eq!(echo, [round; 4]);
        std::thread::sleep(Duration::from_millis(100)); // the scenario: a pause under the timeout
    }
}

fn never_reading_clients_are_cut_off_after_the_send_timeout(io: &str) {
    let server = start(io, "1s");
    // The flood goes on until every connection is cut off. A connection
    // owes nothing while the kernel's buffers still take its output (and
    // one that paused resumes once they took half), so stopping the flood
    // at the first pause of each could leave one idle with nothing owed,
    // which no send timeout may end.
    let streams = flood_until(&server, |server, n| server.counter("send_timeouts") >= n);
    let n = streams.len() as u64;
    let timeouts = server.wait_counter("send_timeouts", |t| t >= n);
    assert_eq!(timeouts, n);
    // Their descriptors and their share of --max-connections are released.
    server.wait_counter("connections_closed", |c| c >= n);
    for mut s in streams {
        // What the server had sent arrives, then the close (or a reset,
        // since our own unread input makes the close abortive).
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut sink = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{io}: the connection was not closed: {e}"),
            }
        }
    }
}

/// The send timeout fires no sooner than its duration after the peer's
/// last progress, and well before twice it. A client with a tiny receive
/// window asks for a gigabyte and never reads: the kernel's last progress
/// comes after the request was written (so the close cannot come sooner
/// than the timeout after it), and loopback fills the window within
/// microseconds of it (so the close comes within about the timeout).
fn the_send_timeout_fires_after_its_duration_and_before_twice_it(io: &str) {
    let timeout = Duration::from_secs(1);
    let server = start(io, "1s");
    let mut s = connect_small_window(server.addr("tcp", "http"));
    s.write_all(b"GET /bytes/1073741824 HTTP/1.1\r\n\r\n")
        .unwrap();
    let written = Instant::now();
    let deadline = written + PATIENCE;
    while server.counter("send_timeouts") == 0 {
        assert!(Instant::now() < deadline, "{io}: no send timeout");
        std::thread::sleep(Duration::from_millis(5));
    }
    let fired = written.elapsed();
    assert!(
        fired >= timeout,
        "{io}: fired after {fired:?}, before {timeout:?}"
    );
    assert!(
        fired < 2 * timeout,
        "{io}: fired after {fired:?}, past twice {timeout:?}"
    );
}

fn pipelining_during_a_long_body_is_answered_in_order(io: &str) {
    let server = start(io, "60s");
    let addr = server.addr("tcp", "http");
    let body = 16u64 << 20;
    let requests = 50_000;
    let mut s = connect(addr);
    let mut writer = s.try_clone().unwrap();
    let send = std::thread::spawn(move || {
        writer
            .write_all(format!("GET /bytes/{body} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let small = b"GET /bytes/1 HTTP/1.1\r\n\r\n".repeat(1000);
        for _ in 0..requests / 1000 {
            writer.write_all(&small).unwrap();
        }
        writer
            .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
    });
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    send.join().unwrap();
    let head_end = find(&all, b"\r\n\r\n").expect("a head") + 4;
    assert!(all.starts_with(b"HTTP/1.1 200 OK"));
    let payload = &all[head_end..head_end + body as usize];
    assert!(
        payload
            .iter()
            .enumerate()
            .all(|(i, &b)| b == protocols::http::body_byte(i as u64)),
        "{io}: the body arrived whole, nothing written inside it"
    );
    let rest = &all[head_end + body as usize..];
    let one = b"HTTP/1.1 200 OK";
    let answered = rest.windows(one.len()).filter(|w| w == one).count();
    assert_eq!(
        answered,
        requests + 1,
        "{io}: every pipelined request answered"
    );
    assert!(find(rest, b" 431 ").is_none());
    assert!(rest.ends_with(protocols::http::PAGE.as_bytes()));
}

/// Clients that ask for a gigabyte and never read: the server sends long
/// bodies from static memory, so however many of them stall, they hold no
/// output memory of their own; the send timeout still ends every one, and
/// a pipelined request behind the body is never answered inside it.
fn stalled_long_bodies_hold_no_output_memory_and_time_out(io: &str) {
    const CLIENTS: u64 = 48;
    let server = start(io, "2s");
    let addr = server.addr("tcp", "http");
    let before = server.peak_rss_kib();
    let stalled: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = connect_small_window(addr);
            s.write_all(b"GET /bytes/1073741824 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    server.wait_counter("send_timeouts", |t| t >= CLIENTS);
    server.wait_counter("connections_closed", |c| c >= CLIENTS);
    // Copied bodies would have held at least one 256 KiB part each (12 MiB
    // for 48); sent from static memory they hold the session and no more.
    let grew = server.peak_rss_kib().saturating_sub(before);
    eprintln!("{io}: peak RSS grew {grew} KiB");
    let bound = CLIENTS * 32 + 4 * 1024;
    assert!(
        grew <= bound,
        "{io}: peak RSS grew {grew} KiB for {CLIENTS} stalled long bodies (bound {bound} KiB)"
    );
    for mut s in stalled {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got); // ends in a close or a reset
        assert!(
            got.starts_with(b"HTTP/1.1 200 OK"),
            "{io}: the head came first"
        );
        assert!(
            find(&got, protocols::http::PAGE.as_bytes()).is_none(),
            "{io}: nothing answered inside the body"
        );
    }
}

/// A new client of reverse-lines gets its answer: the server still serves.
fn still_served(server: &Server) {
    let mut other = connect(server.addr("tcp", "reverse-lines"));
    other.write_all(b"abc\n").unwrap();
    let mut back = [0u8; 4];
    other.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"cba\n");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sets SO_LINGER to zero so that closing sends a reset.
fn reset_on_close(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

fn a_reset_mid_reply_frees_the_connection(io: &str) {
    let server = start(io, "60s");
    let mut clients = Vec::new();
    for (protocol, request) in PROTOCOLS {
        let mut s = connect(server.addr("tcp", protocol));
        let big = if protocol == "http" {
            b"GET /bytes/104857600 HTTP/1.1\r\n\r\n".to_vec()
        } else {
            request.repeat(4 << 20 >> 4)
        };
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&big); // the reset may cut it short
        });
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).unwrap();
        clients.push((s, writer));
    }
    let opened = server.counter("connections_accepted");
    for (s, writer) in clients {
        reset_on_close(&s);
        let _ = s.shutdown(Shutdown::Read);
        drop(s);
        writer.join().unwrap();
    }
    server.wait_counter("connections_closed", |c| c >= opened);
    still_served(&server);
}

fn half_closed_requests_are_answered_whole(io: &str) {
    let server = start(io, "60s");
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("echo", b"one way", b"one way"),
        ("reverse-lines", b"ab\ncd", b"ba\ndc"),
        (
            "http",
            b"GET /bytes/300000 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            protocols::http::PAGE.as_bytes(),
        ),
        // The greeting, then the answer to `quit` after the half-close.
        ("bot", b"quit\n", b"\nGoodbye! Thanks for contacting us.\n"),
    ];
    for (protocol, request, ending) in cases {
        let mut s = connect(server.addr("tcp", protocol));
        s.write_all(request).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert!(
            back.ends_with(ending),
            "{io} {protocol}: {:?}",
            String::from_utf8_lossy(&back[back.len().saturating_sub(200)..])
        );
        if protocol == "http" {
            assert!(back.len() > 300_000);
        }
    }
}

fn sigterm_with_every_hostile_client_connected_exits_in_time(io: &str) {
    let server = start(io, "60s");
    let ports: Vec<SocketAddr> = PROTOCOLS
        .iter()
        .map(|(p, _)| server.addr("tcp", p))
        .collect();
    let flood = flood_never_reading(&server);
    // A pipeliner behind a long body, a silent one, a half-closed one.
    let mut pipeliner = connect(server.addr("tcp", "http"));
    pipeliner
        .write_all(b"GET /bytes/1073741824 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let _silent = connect(server.addr("tcp", "bot"));
    let half = connect(server.addr("tcp", "echo"));
    half.shutdown(Shutdown::Write).unwrap();
    let total = flood.len() as u64 + 3;
    server.wait_counter("connections_accepted", |c| c >= total);
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait_exit();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{io}: a clean exit");
    assert!(
        took < Duration::from_secs(3) + Duration::from_secs(2),
        "{io}: exit took {took:?}, past the 3 s deadline"
    );
    // Once it has exited, nothing of it accepts any more.
    for addr in ports {
        assert!(
            TcpStream::connect(addr).is_err(),
            "{io}: {addr} still accepts after exit"
        );
    }
    drop(flood);
}

/// Echo on io_uring sends input back from the buffer the kernel wrote it
/// into, holding that buffer until the send completes: large messages
/// come back whole, and peers that never read hold at most a quarter of
/// the receive buffers, so everyone else is still served.
#[test]
fn lent_receive_buffers_echo_whole_and_stalled_readers_cannot_take_them_all() {
    let server = Server::start(&[
        "--io",
        "uring",
        "--threads",
        "1",
        "--buffers",
        "16",
        "--serve",
        "tcp:0=echo",
    ]);
    let addr = server.addr("tcp", "echo");
    let round_trip = |len: usize| {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut s = connect(addr);
        let writer = {
            let mut w = s.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                for chunk in data.chunks(16 * 1024) {
                    w.write_all(chunk).unwrap();
                }
            })
        };
        let mut back = vec![0u8; len];
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == data, "{len} bytes echoed unchanged");
    };
    round_trip(1024 * 1024);
    assert!(
        server.counter("receives_lent") > 0,
        "{:?}",
        server.metrics()
    );
    // Eight readers that never read, with small receive windows, each
    // sending one message at a time: the server takes each message into a
    // buffer of its own and lends it to the send back, until the server's
    // send buffer for that reader is full (loopback autotunes it to a MiB
    // or more) and the send stalls, keeping its buffer. Messages of a
    // whole receive buffer fill it in a few dozen rounds.
    const STALLED: usize = 8;
    let mut stalled: Vec<TcpStream> = (0..STALLED).map(|_| connect_small_window(addr)).collect();
    let message = [b's'; 16 * 1024];
    // Rounds go on until the server has paused every reader: its output
    // is at the limit behind a send that can never finish, so the lent
    // buffers can no longer come back. (Four lent at one moment proves
    // nothing: sends still moving return theirs.)
    let paused_before = server.counter("backpressure_pauses");
    let all_paused = paused_before + STALLED as u64;
    let mut written = server.counter("bytes_in");
    let deadline = Instant::now() + PATIENCE;
    loop {
        for s in &mut stalled {
            written += write_nonblocking_once(s, &message);
        }
        // One message per receive on each connection: wait until the
        // server has them all before the next, or has stopped reading.
        let metrics = loop {
            let m = server.metrics();
            if m["ringcore_bytes_in"] >= written || m["ringcore_backpressure_pauses"] >= all_paused
            {
                break m;
            }
            assert!(
                Instant::now() < deadline,
                "the server stopped reading: {m:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let lent = metrics["ringcore_tcp_buffers_lent"];
        assert!(lent <= 4, "{lent} lent: more than a quarter of 16 buffers");
        if metrics["ringcore_backpressure_pauses"] >= all_paused {
            // More stalled sends than the quarter of 16 buffers: that many
            // lent, no more.
            assert_eq!(lent, 4, "stalled sends hold a quarter of 16 buffers");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled readers never stalled: {metrics:?}"
        );
    }
    round_trip(256 * 1024);
    drop(stalled);
}

/// The `--metrics` endpoint against clients that connect and say nothing,
/// one that trickles its head a byte at a time, and one that never reads:
/// each is cut off at the request deadline, and a scrape behind twice as
/// many of them as are answered at once still gets the counters. (Before,
/// one thread answered one request at a time, each read waiting up to 2 s
/// afresh: the trickler held it for as long as it liked.)
#[test]
fn slow_and_silent_clients_cannot_hold_the_metrics_endpoint() {
    let server = Server::start(&["--threads", "1", "--serve", "tcp:0=echo"]);
    let endpoint = server.metrics;
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(endpoint).unwrap();
        // Bounded: 10 s of a byte every 50 ms, far past the deadline.
        for &byte in b"GET /metrics HTTP/1.1\r\n".iter().cycle().take(200) {
            if s.write_all(&[byte]).is_err() {
                return true; // cut off
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let silent: Vec<TcpStream> = (0..2 * engine::metrics::CONCURRENT_REQUESTS)
        .map(|_| TcpStream::connect(endpoint).unwrap())
        .collect();
    let never_reads = connect_small_window(endpoint);
    (&never_reads)
        .write_all(&b"GET /metrics HTTP/1.1\r\n\r\n".repeat(8))
        .unwrap();
    // The scrape waits behind them in the backlog, then is answered.
    let counters = server.metrics();
    assert_eq!(counters.get("ringcore_connections_accepted"), Some(&0));
    for (i, mut s) in silent.into_iter().enumerate() {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => assert!(got.is_empty(), "silent client {i} got {got:?}"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "client {i}: {e}"),
        }
    }
    assert!(trickler.join().unwrap(), "the trickler was never cut off");
    // Statuses for what is not a scrape.
    let ask = |request: &[u8]| {
        let mut s = TcpStream::connect(endpoint).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(request).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    };
    assert!(ask(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(ask(b"PUT /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(ask(b"\x16\x03\x01\x00\x05hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let huge = [&b"GET /metrics HTTP/1.1\r\n"[..], &b"X: y\r\n".repeat(2000)].concat();
    assert!(ask(&huge).starts_with("HTTP/1.1 431 "));
    let head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    drop(never_reads);
}

/// Writes what the socket takes of `data` at once, without blocking.
fn write_nonblocking_once(stream: &mut TcpStream, data: &[u8]) -> u64 {
    stream.set_nonblocking(true).unwrap();
    let n = match stream.write(data) {
        Ok(n) => n as u64,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => panic!("write failed: {e}"),
    };
    stream.set_nonblocking(false).unwrap();
    n
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { super::$name("uring") })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name("epoll") })*
        }
    };
}

suite!(
    amplifying_input_never_read_stays_within_the_bound,
    the_memory_limit_evicts_the_largest_holders_and_bounds_the_server,
    silent_clients_cannot_hold_every_connection_slot,
    never_reading_clients_are_cut_off_after_the_send_timeout,
    the_send_timeout_fires_after_its_duration_and_before_twice_it,
    pipelining_during_a_long_body_is_answered_in_order,
    a_reset_mid_reply_frees_the_connection,
    half_closed_requests_are_answered_whole,
    sigterm_with_every_hostile_client_connected_exits_in_time,
    stalled_long_bodies_hold_no_output_memory_and_time_out,
);
