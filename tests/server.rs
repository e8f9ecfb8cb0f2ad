//! The server through real sockets on loopback: the chapter's exchanges,
//! concurrency, streaming, half-close, resets, SO_REUSEPORT spreading,
//! backpressure and graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::{
    connect, connect_small_window, gso_client, write_until_stalled, Rng, Server, PATIENCE,
};

fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket
}

fn udp_exchange(socket: &UdpSocket, to: SocketAddr, message: &[u8]) -> Vec<u8> {
    socket.send_to(message, to).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, from) = socket.recv_from(&mut buf).expect("a UDP reply");
    assert_eq!(from, to, "the reply comes from the service's address");
    buf.truncate(n);
    buf
}

#[test]
fn a_thousand_concurrent_connections_get_exact_echoes() {
    const CONNECTIONS: usize = 1000;
    const THREADS: usize = 8;
    const ROUNDS: usize = 3;
    let server = Server::start(&["--serve", "tcp:0=echo", "--threads", "2"]);
    let addr = server.addr("tcp", "echo");
    // Every connection is open before any data moves, so all 1000 are
    // concurrent inside the server.
    let conns: Vec<TcpStream> = (0..CONNECTIONS).map(|_| connect(addr)).collect();
    server.wait_counter("connections_accepted", |n| n == CONNECTIONS as u64);
    let mut groups: Vec<Vec<TcpStream>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % THREADS].push(c);
    }
    let workers: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(t, mut group)| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(t as u64);
                let mut bytes = 0usize;
                for _ in 0..ROUNDS {
                    for c in group.iter_mut() {
                        let mut payload = vec![0u8; rng.range(1, 16 * 1024)];
                        rng.fill(&mut payload);
                        c.write_all(&payload).unwrap();
                        let mut back = vec![0u8; payload.len()];
                        c.read_exact(&mut back).unwrap();
                        assert!(back == payload, "echo mismatch");
                        bytes += payload.len();
                    }
                }
                bytes
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(server.counter("bytes_in"), total as u64);
    server.wait_counter("bytes_out", |n| n == total as u64);
    assert_eq!(server.counter("connection_errors"), 0);
}

#[test]
fn a_64_mib_stream_is_echoed_byte_exact() {
    const TOTAL: usize = 64 << 20;
    let server = Server::start(&["--serve", "tcp:0=echo"]);
    let stream = connect(server.addr("tcp", "echo"));
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut rng = Rng::new(64);
        let mut chunk = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            rng.fill(&mut chunk);
            writer.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = stream;
    let mut rng = Rng::new(64);
    let mut expected = vec![0u8; 256 * 1024];
    let mut got = vec![0u8; 256 * 1024];
    let mut received = 0;
    while received < TOTAL {
        rng.fill(&mut expected);
        reader.read_exact(&mut got).unwrap();
        assert!(
            got == expected,
            "mismatch in the chunk at offset {received}"
        );
        received += got.len();
    }
    let mut tail = Vec::new();
    reader.read_to_end(&mut tail).unwrap();
    assert!(tail.is_empty(), "nothing after the echoed stream, then EOF");
    sender.join().unwrap();
}

#[test]
fn half_close_gets_every_echo_then_eof() {
    let server = Server::start(&["--serve", "tcp:0=echo", "--serve", "tcp:0=reverse-lines"]);
    let mut s = connect(server.addr("tcp", "echo"));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert!(back == payload, "all echoes arrive before EOF");

    // A line-framed session replies to its unterminated last line at EOF.
    let mut s = connect(server.addr("tcp", "reverse-lines"));
    s.write_all(b"one\ntwo").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"eno\nowt");
    server.wait_counter("connections_closed", |n| n == 2);
}

#[test]
fn a_client_reset_mid_stream_does_not_disturb_others() {
    let server = Server::start(&["--serve", "tcp:0=echo"]);
    let addr = server.addr("tcp", "echo");
    let mut steady = connect(addr);
    for round in 0..20 {
        let victim = connect(addr);
        let mut w = victim.try_clone().unwrap();
        // Lots of data in flight both ways, never read, then an abortive close (RST).
        let _ = w.write_all(&vec![7u8; 512 * 1024]);
        socket2::SockRef::from(&victim)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(w);
        drop(victim);
        let message = format!("round {round}");
        steady.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0u8; message.len()];
        steady.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes());
    }
    // Every reset connection is cleaned up; only the steady one stays open.
    server.wait_counter("connections_closed", |n| n == 20);
    assert_eq!(server.counter("connections_open"), 1);
}

#[test]
fn so_reuseport_spreads_connections_and_datagrams_over_workers() {
    let server = Server::start(&[
        "--serve",
        "tcp:0=echo",
        "--serve",
        "udp:0=echo",
        "--threads",
        "2",
    ]);
    let tcp = server.addr("tcp", "echo");
    let udp = server.addr("udp", "echo");
    // Distinct source ports hash to both workers (the chance that 64 all land
    // on one worker is 2^-63).
    let conns: Vec<TcpStream> = (0..64).map(|_| connect(tcp)).collect();
    server.wait_counter("connections_accepted", |n| n == 64);
    for w in 0..2 {
        assert!(
            server.worker_counter("connections_accepted", w) > 0,
            "worker {w} accepted nothing"
        );
    }
    for i in 0..64u32 {
        let socket = udp_client();
        assert_eq!(
            udp_exchange(&socket, udp, &i.to_be_bytes()),
            i.to_be_bytes()
        );
    }
    for w in 0..2 {
        assert!(
            server.worker_counter("datagrams_in", w) > 0,
            "worker {w} received no datagram"
        );
    }
    assert_eq!(server.counter("datagrams_out"), 64);
    drop(conns);
}

#[test]
fn a_client_that_never_reads_is_held_to_the_output_bound() {
    const LIMIT: u64 = 256 << 20;
    let server = Server::start(&["--serve", "tcp:0=echo", "--output-limit", "1M"]);
    let addr = server.addr("tcp", "echo");
    // Warm up the receive buffers so their pages count in the baseline.
    let mut warm = connect(addr);
    let block = vec![1u8; 4 << 20];
    warm.write_all(&block).unwrap();
    let mut back = vec![0u8; block.len()];
    warm.read_exact(&mut back).unwrap();
    drop(warm);
    let rss_before = server.rss_kib();

    let mut hog = connect(addr);
    let written = write_until_stalled(&mut hog, LIMIT);
    assert!(
        written < LIMIT,
        "the server kept reading {written} bytes from a client that never reads"
    );
    assert!(server.counter("backpressure_pauses") >= 1);
    let absorbed = server.counter("bytes_in");
    assert!(
        absorbed < 64 << 20,
        "the server read {absorbed} bytes it could not send"
    );

    // Another client is still served while the hog is stuck.
    let mut other = connect(addr);
    other.write_all(b"are you there").unwrap();
    let mut reply = [0u8; 13];
    other.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"are you there");

    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "server RSS grew by {grown} KiB for one stuck client"
    );
}

#[test]
fn sigterm_echoes_every_received_byte_then_exits_zero() {
    const CLIENTS: usize = 20;
    const EACH: usize = 200 * 1024;
    let server = Server::start(&["--serve", "tcp:0=echo", "--threads", "2"]);
    let addr = server.addr("tcp", "echo");
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut s = connect(addr);
        let mut payload = vec![0u8; EACH];
        Rng::new(i as u64).fill(&mut payload);
        s.write_all(&payload).unwrap();
        clients.push((s, payload));
    }
    // Mid-exchange: the server has received everything, nobody has read yet.
    server.wait_counter("bytes_in", |n| n == (CLIENTS * EACH) as u64);
    server.signal(libc::SIGTERM);
    for (mut s, payload) in clients {
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), payload.len());
        assert!(back == payload);
    }
    let (status, stdout) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "stdout: {stdout}");
    assert_eq!(final_counter(&stdout, "tcp in="), (CLIENTS * EACH) as u64);
    assert_eq!(final_counter(&stdout, "out="), (CLIENTS * EACH) as u64);
}

#[test]
fn sigterm_reaches_bytes_still_queued_in_the_kernel() {
    // Data the peer sent that the server had not read yet when the signal came
    // is still answered: the worker drains the socket before closing.
    let server = Server::start(&["--serve", "tcp:0=echo", "--output-limit", "64K"]);
    let addr = server.addr("tcp", "echo");
    // A tiny receive buffer on our side keeps the server's replies stuck, so
    // it stops reading at its output bound and our bytes queue in its kernel.
    let mut s = connect_small_window(addr);
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // More than the server's send buffer can absorb (tcp_wmem autotunes it to
    // a few MiB), so the server really stops reading.
    let payload = vec![9u8; 32 << 20];
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&payload));
    server.wait_counter("backpressure_pauses", |n| n >= 1);
    let read_before_signal = server.counter("bytes_in");
    server.signal(libc::SIGINT);
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 9));
    // The server discards what it cannot answer until we close; then it exits.
    writer.join().unwrap().unwrap();
    drop(s);
    let (status, stdout) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
    // Every byte the server read, including what it drained from the kernel
    // after the signal, was echoed before the close.
    let read = final_counter(&stdout, "tcp in=");
    assert_eq!(back.len() as u64, read, "stdout: {stdout}");
    assert!(
        read > read_before_signal,
        "the drain read queued bytes: {read_before_signal} -> {read}"
    );
}

/// A byte count from the server's "final:" line, e.g. `tcp in=1234 B`.
fn final_counter(stdout: &str, key: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("final:"))
        .expect("a final: line");
    let rest = &line[line.find(key).expect(key) + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_gso_train_is_received_with_gro_and_answered_with_one_gso_send() {
    const SEGMENT: usize = 100;
    const COUNT: usize = 10;
    let server = Server::start(&[
        "--serve",
        "udp:0=echo",
        "--serve",
        "udp:0=ok",
        "--threads",
        "1",
    ]);
    let client = gso_client(SEGMENT);
    let train: Vec<u8> = (0..SEGMENT * COUNT).map(|i| (i / SEGMENT) as u8).collect();
    for (protocol, prefix) in [("echo", &b""[..]), ("ok", &b"OK..."[..])] {
        client
            .send_to(&train, server.addr("udp", protocol))
            .unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..COUNT {
            let n = client
                .recv(&mut buf)
                .expect("one reply per datagram of the train");
            let mut expected = prefix.to_vec();
            expected.extend_from_slice(&[i as u8; SEGMENT]);
            assert_eq!(&buf[..n], &expected[..], "reply {i} from {protocol}");
        }
    }
    assert_eq!(server.counter("datagrams_in"), 2 * COUNT as u64);
    assert_eq!(server.counter("datagrams_out"), 2 * COUNT as u64);
    assert!(
        server.counter("gro_receives") >= 2,
        "each train arrived as one GRO buffer"
    );
    assert!(
        server.counter("gso_sends") >= 2,
        "each train's replies left as one GSO send"
    );
}

#[test]
fn a_buffer_ring_that_runs_dry_is_rearmed_without_losing_data() {
    // Two 512-byte buffers: a fast stream exhausts them constantly, ending
    // the multishot receive with ENOBUFS again and again.
    const TOTAL: usize = 8 << 20;
    let server = Server::start(&[
        "--serve",
        "tcp:0=echo",
        "--buffers",
        "2",
        "--buffer-size",
        "512",
    ]);
    let stream = connect(server.addr("tcp", "echo"));
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut data = vec![0u8; TOTAL];
        Rng::new(7).fill(&mut data);
        writer.write_all(&data).unwrap();
        data
    });
    let mut reader = stream;
    let mut back = vec![0u8; TOTAL];
    reader.read_exact(&mut back).unwrap();
    let sent = sender.join().unwrap();
    assert!(back == sent, "the echoed stream matches");
    assert!(
        server.counter("multishot_rearms") > 0,
        "the receive was re-armed after running dry"
    );
    assert_eq!(server.counter("connection_errors"), 0);
}

#[test]
fn stats_interval_prints_a_summary_line() {
    let server = Server::start(&["--serve", "udp:0=echo", "--stats-interval", "100ms"]);
    let udp = udp_client();
    assert_eq!(
        udp_exchange(&udp, server.addr("udp", "echo"), b"count me"),
        b"count me"
    );
    // Summaries keep coming; one printed after the exchange counts it.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let line = server.wait_line("stats:");
        if line.contains("udp in=1 out=1 dgrams") {
            assert!(line.contains("io_uring_enter="), "{line}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "last summary: {line}");
    }
}

/// Discard (RFC 863): every byte and datagram is read and counted, and
/// nothing is ever sent back; at the client's FIN the server closes.
#[test]
fn discard_reads_everything_and_answers_nothing() {
    let server = Server::start(&["--serve", "tcp:0=discard", "--serve", "udp:0=discard"]);
    let mut stream = connect(server.addr("tcp", "discard"));
    let data = vec![7u8; 4 << 20];
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert!(back.is_empty(), "discard answered {} bytes", back.len());
    server.wait_counter("bytes_in", |n| n == data.len() as u64);
    assert_eq!(server.counter("bytes_out"), 0);

    let socket = udp_client();
    let to = server.addr("udp", "discard");
    for i in 0..10u8 {
        socket.send_to(&[i; 100], to).unwrap();
    }
    server.wait_counter("datagrams_in", |n| n == 10);
    assert_eq!(
        server.counter("datagrams_out"),
        0,
        "not one datagram answered"
    );
}

/// `--sqpoll`: a kernel thread polls each worker's submission queue; the
/// server says so and serves the same bytes.
#[test]
fn sqpoll_rings_serve_the_same_echo() {
    let server = Server::start(&["--serve", "tcp:0=echo", "--serve", "udp:0=echo", "--sqpoll"]);
    let mut stream = connect(server.addr("tcp", "echo"));
    let mut data = vec![0u8; 256 * 1024];
    Rng::new(7).fill(&mut data);
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert!(back == data, "the echo differs");
    let socket = udp_client();
    assert_eq!(
        udp_exchange(&socket, server.addr("udp", "echo"), b"polled"),
        b"polled"
    );
    assert!(
        server.io_path().as_deref() == Some("io_uring"),
        "{}",
        server.stderr()
    );
    // The kernel's word, not the server's: every ring has a polling thread
    // (`SqThread` in its fdinfo, -1 without SQPOLL), and that thread is the
    // kernel's `iou-sqp-*`.
    let rings = server.ring_fdinfo();
    assert!(!rings.is_empty(), "no io_uring among the server's fds");
    for ring in &rings {
        let thread = ring.get("SqThread").map(String::as_str).unwrap_or("-1");
        assert!(thread != "-1", "a ring without SQPOLL: {ring:?}");
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{thread}/comm", server.pid()))
            .unwrap_or_default();
        assert!(comm.starts_with("iou-sqp"), "SqThread {thread} is {comm:?}");
    }
}

/// Workers are pinned one to a CPU, unless `--no-pin` lets them run on
/// every CPU the server may use.
#[test]
fn no_pin_lets_the_workers_float() {
    let pinned = Server::start(&["--serve", "tcp:0=echo", "--threads", "2"]);
    let (workers, _) = common::thread_cpus(pinned.pid(), "ringcore-w");
    assert_eq!(workers.len(), 2, "{workers:?}");
    for cpus in &workers {
        assert!(
            cpus.parse::<usize>().is_ok(),
            "a pinned worker may run on {cpus}"
        );
    }
    let floating = Server::start(&["--serve", "tcp:0=echo", "--threads", "2", "--no-pin"]);
    let (workers, main) = common::thread_cpus(floating.pid(), "ringcore-w");
    assert_eq!(workers.len(), 2, "{workers:?}");
    for cpus in &workers {
        assert_eq!(
            *cpus, main,
            "a floating worker may run where the server may"
        );
    }
    let mut stream = connect(floating.addr("tcp", "echo"));
    stream.write_all(b"afloat").unwrap();
    let mut back = [0u8; 6];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"afloat");
}

/// `--batch-wait` as the kernel carries it out: a wait that has just begun
/// is held for the window unless a batch (32) completes first. A client
/// that sends its next request the moment a reply arrives (ping-pong) lands
/// inside the window the worker's wait began with the reply, so each round
/// trip lasts about the window; without it, tens of microseconds. The
/// bound is half the window, and only the median must reach it: a client
/// whose wake-up is delayed (a loaded machine) sends later into the window
/// and waits less, but would have to be late by 10 ms in most rounds to
/// break it, and a late client can only make a round trip shorter, never
/// longer. A wait also ends early at one of the worker's deadlines, which
/// costs at most a few rounds.
#[test]
fn batch_wait_holds_each_fresh_wait_for_its_window() {
    const WINDOW: Duration = Duration::from_millis(20);
    let server = Server::start(&[
        "--serve",
        "tcp:0=echo",
        "--threads",
        "1",
        "--batch-wait",
        "20ms",
    ]);
    let mut stream = connect(server.addr("tcp", "echo"));
    stream.set_nodelay(true).unwrap();
    let mut round_trips = Vec::new();
    for i in 0..21u8 {
        let sent = std::time::Instant::now();
        stream.write_all(&[i; 8]).unwrap();
        let mut back = [0u8; 8];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, [i; 8]);
        round_trips.push(sent.elapsed());
    }
    // The first round found the worker long asleep: not held.
    let mut held = round_trips[1..].to_vec();
    held.sort();
    let median = held[held.len() / 2];
    assert!(
        median >= WINDOW / 2,
        "median round trip {median:?} with a {WINDOW:?} window: {round_trips:?}"
    );
}

/// `--batch-wait`: each wait for completions holds out for a batch, up to
/// the time given. A lone request is still answered (the wait ends with
/// fewer than a batch), forty clients at once get every byte back, and
/// deadlines still fire: a peer that never reads is cut off by the send
/// timeout.
#[test]
fn batch_wait_rings_answer_lone_and_concurrent_requests_and_keep_deadlines() {
    let server = Server::start(&[
        "--serve",
        "tcp:0=echo",
        "--serve",
        "udp:0=echo",
        "--threads",
        "1",
        "--batch-wait",
        "2ms",
        "--send-timeout",
        "1s",
    ]);
    let addr = server.addr("tcp", "echo");
    let mut lone = connect(addr);
    lone.write_all(b"alone").unwrap();
    let mut back = [0u8; 5];
    lone.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"alone");
    for ring in server.ring_fdinfo() {
        assert_eq!(
            ring.get("SqThread").map(String::as_str),
            Some("-1"),
            "{ring:?}"
        );
    }

    let clients: Vec<_> = (0..40u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let mut data = vec![0u8; 1000];
                Rng::new(i).fill(&mut data);
                for _ in 0..20 {
                    s.write_all(&data).unwrap();
                    let mut back = vec![0u8; data.len()];
                    s.read_exact(&mut back).unwrap();
                    assert!(back == data, "client {i}: the echo differs");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let socket = udp_client();
    assert_eq!(
        udp_exchange(&socket, server.addr("udp", "echo"), b"batched"),
        b"batched"
    );

    let mut stalled = common::connect_small_window(addr);
    stalled.set_write_timeout(Some(PATIENCE)).unwrap();
    let writer = std::thread::spawn(move || {
        let block = [b'x'; 64 * 1024];
        // Ends when the server gives up on us (a reset or a broken pipe).
        while stalled.write_all(&block).is_ok() {}
    });
    server.wait_counter("send_timeouts", |n| n >= 1);
    writer.join().unwrap();
    assert_eq!(server.io_path().as_deref(), Some("io_uring"));
}
