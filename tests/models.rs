//! One protocol suite, run against every server model (`--io`): the same
//! protocol code must behave the same whatever does the I/O.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::{connect, gso_client, write_until_stalled, Lack, Rng, Server, PATIENCE};
use protocols::bot::{Conversation, Script};

fn start(io: &str, services: &[&str]) -> Server {
    let mut args = vec!["--io", io];
    for s in services {
        args.extend(["--serve", s]);
    }
    Server::start(&args)
}

fn udp_exchange(to: std::net::SocketAddr, message: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket.send_to(message, to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).expect("a reply");
    buf[..n].to_vec()
}

fn chapter_exchanges(io: &str) {
    let server = start(
        io,
        &["tcp:0=echo", "tcp:0=reverse", "udp:0=ok", "udp:0=echo"],
    );
    let mut echo = connect(server.addr("tcp", "echo"));
    echo.write_all(b"Hello, world").unwrap();
    let mut reply = [0u8; 12];
    echo.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"Hello, world");
    let mut reverse = connect(server.addr("tcp", "reverse"));
    reverse.write_all(b"SNS is the best course ever !").unwrap();
    let mut reply = [0u8; 29];
    reverse.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"! reve esruoc tseb eht si SNS");
    assert_eq!(
        udp_exchange(server.addr("udp", "ok"), b"hello"),
        b"OK...hello"
    );
    assert_eq!(udp_exchange(server.addr("udp", "ok"), b""), b"OK...");
    // The empty datagram does not stop the server (the chapter's would).
    assert_eq!(
        udp_exchange(server.addr("udp", "ok"), b"still there?"),
        b"OK...still there?"
    );
    assert_eq!(udp_exchange(server.addr("udp", "echo"), b"ping"), b"ping");
    assert_eq!(udp_exchange(server.addr("udp", "echo"), b""), b"");
}

fn reverse_lines_and_its_bound(io: &str) {
    let server = Server::start(&[
        "--io",
        io,
        "--serve",
        "tcp:0=reverse-lines",
        "--line-limit",
        "16",
    ]);
    let mut s = connect(server.addr("tcp", "reverse-lines"));
    // The first line's answer comes back while the second's beginning
    // waits for its end: the server holds it across receives.
    s.write_all("ab".as_bytes()).unwrap();
    s.write_all("c\nhél".as_bytes()).unwrap();
    let mut got = vec![0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, b"cba\n");
    for piece in ["lo\r", "\n"] {
        s.write_all(piece.as_bytes()).unwrap();
    }
    let expected = "olléh\r\n".as_bytes();
    let mut got = vec![0u8; expected.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, expected);
    // A last line without its newline is answered at the end of stream.
    let mut last = connect(server.addr("tcp", "reverse-lines"));
    last.write_all(b"one\ntwo").unwrap();
    last.shutdown(Shutdown::Write).unwrap();
    let mut both = Vec::new();
    last.read_to_end(&mut both).unwrap();
    assert_eq!(both, b"eno\nowt");
    s.write_all(&[b'x'; 40]).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"error: line longer than 16 bytes\n");
}

fn concurrent_connections_get_exact_echoes(io: &str) {
    let server = start(io, &["tcp:0=echo"]);
    let addr = server.addr("tcp", "echo");
    let mut conns: Vec<_> = (0..200).map(|_| connect(addr)).collect();
    let mut rng = Rng::new(5);
    for round in 0..3 {
        let payloads: Vec<Vec<u8>> = conns
            .iter_mut()
            .map(|c| {
                let mut p = vec![0u8; rng.range(1, 8 * 1024)];
                rng.fill(&mut p);
                c.write_all(&p).unwrap();
                p
            })
            .collect();
        for (c, p) in conns.iter_mut().zip(&payloads) {
            let mut back = vec![0u8; p.len()];
            c.read_exact(&mut back).unwrap();
            assert!(&back == p, "round {round}");
        }
    }
}

fn half_close(io: &str) {
    let server = start(io, &["tcp:0=echo"]);
    let mut s = connect(server.addr("tcp", "echo"));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let p = payload.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&p).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == payload);
}

fn bot_over_tcp_and_udp(io: &str) {
    let server = start(io, &["tcp:0=bot", "udp:0=bot"]);
    let answers = ["2", "yes", "yes", "no"];
    let mut model = Conversation::new(Arc::new(Script::default_script()), 0);
    let mut turns = vec![String::new()];
    model.open(&mut turns[0]);
    for a in answers {
        let mut t = String::new();
        model.answer(a, &mut t);
        turns.push(t);
    }
    let mask = |t: &str| match t.find("RC-") {
        Some(i) => format!("{}RC-######{}", &t[..i], &t[i + 9..]),
        None => t.to_string(),
    };
    let tcp = connect(server.addr("tcp", "bot"));
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    let mut writer = tcp;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(PATIENCE)).unwrap();
    // The bot greets an address only once it proved it receives.
    loadgen::bot::prove_udp(&udp, server.addr("udp", "bot")).expect("prompt and code");
    writer.write_all(&answers[0].as_bytes()[..1]).unwrap();
    for (i, turn) in turns.iter().enumerate() {
        if i > 0 {
            // Each TCP answer's first byte goes with the line before it, so
            // the bot's server holds it, unanswered, across receives.
            let next_start = answers.get(i).map_or("", |a| &a[..1]);
            writer
                .write_all(format!("{}\n{next_start}", &answers[i - 1][1..]).as_bytes())
                .unwrap();
            udp.send_to(answers[i - 1].as_bytes(), server.addr("udp", "bot"))
                .unwrap();
        }
        let mut got = vec![0u8; turn.len()];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(
            mask(&String::from_utf8(got).unwrap()),
            mask(turn),
            "TCP turn {i}"
        );
        let mut text = Vec::new();
        let mut buf = [0u8; 2048];
        while text.len() < turn.len() {
            let (n, _) = udp.recv_from(&mut buf).unwrap();
            text.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            mask(&String::from_utf8(text).unwrap()),
            mask(turn),
            "UDP turn {i}"
        );
    }
    let mut rest = String::new();
    reader.read_line(&mut rest).unwrap();
    assert_eq!(rest, "", "the bot closes after its goodbye");
}

fn session_counters_sum_over_udp_services(io: &str) {
    // Two UDP bot services: their session tables add up in the counters,
    // whichever service published last.
    let server = start(io, &["udp:0=bot", "udp:0=bot"]);
    let services: Vec<_> = server
        .services
        .iter()
        .filter(|(t, p, _)| t == "udp" && p == "bot")
        .map(|(_, _, addr)| *addr)
        .collect();
    assert_eq!(services.len(), 2);
    let mut peers = Vec::new();
    for (i, to) in services.iter().enumerate() {
        for _ in 0..(3 - i) {
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(PATIENCE)).unwrap();
            // A session begins once the address proved it receives.
            loadgen::bot::prove_udp(&peer, *to).expect("prompt and code");
            let mut buf = [0u8; 2048];
            peer.recv_from(&mut buf).expect("a greeting");
            peers.push(peer);
        }
    }
    server.wait_counter("sessions_open", |n| n == 5);
}

fn http_pipelining_errors_and_long_bodies(io: &str) {
    let server = start(io, &["tcp:0=http"]);
    let addr = server.addr("tcp", "http");
    // A head cut in two, its first part sent with a whole request: the
    // answer to that one comes back while the cut head waits for its end.
    let mut cut = connect(addr);
    cut.write_all(b"GET /bytes/3 HTTP/1.1\r\n\r\nGET /bytes/4 HT")
        .unwrap();
    let first = b"HTTP/1.1 200 OK\r\nServer: ringcore\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc";
    let mut got = vec![0u8; first.len()];
    cut.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(first)
    );
    cut.write_all(b"TP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut second = String::new();
    cut.read_to_string(&mut second).unwrap();
    assert!(second.starts_with("HTTP/1.1 200 OK"), "{second}");
    assert!(second.ends_with("\r\n\r\nabcd"), "{second}");
    let mut s = connect(addr);
    s.write_all(b"GET /bytes/5 HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /bytes/2000000 HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses[..3], ["200", "404", "200"]);
    let head_end = text.rfind("\r\n\r\n").unwrap() + 4;
    assert_eq!(
        all.len() - head_end,
        2_000_000,
        "the long body, then the close"
    );
    let mut bad = connect(addr);
    bad.write_all(b"DELETE / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    bad.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
}

fn sigterm_answers_what_was_received(io: &str) {
    let server = start(io, &["tcp:0=echo"]);
    let addr = server.addr("tcp", "echo");
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut s = connect(addr);
        let mut payload = vec![0u8; 100_000];
        Rng::new(i).fill(&mut payload);
        s.write_all(&payload).unwrap();
        clients.push((s, payload));
    }
    server.wait_counter("bytes_in", |n| n == 1_000_000);
    server.signal(libc::SIGTERM);
    for (mut s, payload) in clients {
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert!(back == payload);
    }
    let (status, _) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
}

fn a_client_that_never_reads_is_contained(io: &str) {
    let server = start(io, &["tcp:0=echo"]);
    let addr = server.addr("tcp", "echo");
    let before = server.rss_kib();
    let mut hog = connect(addr);
    let written = write_until_stalled(&mut hog, 256 << 20);
    assert!(
        written < 256 << 20,
        "the server stopped reading at some point"
    );
    let mut other = connect(addr);
    other.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    other.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
    assert!(server.rss_kib() < before + 32 * 1024, "bounded memory");
}

fn gso_trains_are_answered_datagram_by_datagram(io: &str) {
    // A client sending trains of equal-sized datagrams with UDP_SEGMENT (as
    // loadgen does) must get one reply per datagram from every model.
    let server = start(io, &["udp:0=echo"]);
    let client = gso_client(100);
    let train: Vec<u8> = (0..800).map(|i| (i / 100) as u8).collect();
    client.send_to(&train, server.addr("udp", "echo")).unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..8u8 {
        let n = client
            .recv(&mut buf)
            .expect("one reply per datagram of the train");
        assert_eq!(&buf[..n], &[i; 100][..], "reply {i}");
    }
}

fn sigterm_at_the_connection_limit_still_stops(io: &str) {
    // Full (a third connection waits in the backlog) and silent clients:
    // shutdown must still end, with exit code 0. One worker, so the limit
    // is not split between workers that SO_REUSEPORT may load unevenly.
    let server = Server::start(&[
        "--io",
        io,
        "--threads",
        "1",
        "--serve",
        "tcp:0=echo",
        "--max-connections",
        "2",
        "--shutdown-deadline",
        "1s",
    ]);
    let addr = server.addr("tcp", "echo");
    let _held: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    server.wait_counter("connections_accepted", |n| n == 2);
    assert_eq!(
        server.counter("connections_open"),
        2,
        "--max-connections holds"
    );
    let signalled = std::time::Instant::now();
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
    // Within the 1 s deadline, and a second for the process to exit: the
    // held connections owe nothing, so the deadline is a ceiling here.
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(2), "{io}: exit took {took:?}");
}

fn counters_tell_what_the_kernel_did(io: &str) {
    // The same counters from every model, and the kernel-interface ones
    // from the models that have them: so "syscalls per request" can be read
    // off the server itself.
    let server = Server::start(&["--io", io, "--threads", "1", "--serve", "tcp:0=echo"]);
    let mut s = connect(server.addr("tcp", "echo"));
    for _ in 0..100 {
        s.write_all(b"0123456789abcdef").unwrap();
        let mut back = [0u8; 16];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"0123456789abcdef");
    }
    server.wait_counter("bytes_out", |n| n == 1600);
    assert_eq!(server.counter("bytes_in"), 1600);
    assert_eq!(server.counter("connections_accepted"), 1);
    let messages = server.counter("messages_in");
    assert!((100..=1600).contains(&messages), "{messages} reads");
    let (enters, waits, io_calls) = (
        server.counter("io_uring_enter_calls"),
        server.counter("epoll_waits"),
        server.counter("io_syscalls"),
    );
    match io {
        // In strict ping-pong, at most two enters per request (one submits
        // the send and reaps its completion, one waits for the next
        // request), against epoll's three system calls; under load, one
        // enter serves a whole batch.
        "uring" => assert!((100..=210).contains(&enters), "{enters} enters"),
        // At least one read and one send per request, and a wait per request
        // (the client waits for each reply).
        "epoll" => {
            assert!(io_calls >= 200, "{io_calls} io syscalls");
            assert!(waits >= 100, "{waits} epoll_waits");
        }
        _ => assert_eq!((enters, waits, io_calls), (0, 0, 0)),
    }
}

fn a_long_body_streams_in_bounded_memory(io: &str) {
    // Every model writes a long body as the connection drains, step by
    // step: a body built whole in memory would show in the peak.
    const SIZE: usize = 128 << 20;
    let server = start(io, &["tcp:0=http"]);
    let mut s = connect(server.addr("tcp", "http"));
    s.write_all(format!("GET /bytes/{SIZE} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(
        received > SIZE && received < SIZE + 512,
        "{io}: {received} bytes"
    );
    let peak = server.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "{io}: peak RSS {peak} KiB for a {SIZE}-byte body"
    );
}

/// Datagrams spoofed to come from a port that answers datagrams (the
/// server's own UDP services, or the classic echo port): answering one
/// would start an endless exchange between two answering services (one
/// such datagram from "our echo" to our `ok` kept both at 130,000
/// datagrams a second, for good). Each is dropped, counted, unanswered,
/// and ordinary clients are still answered.
fn udp_loops_are_refused(io: &str) {
    let server = start(io, &["udp:0=echo", "udp:0=ok", "udp:0=bot"]);
    let (echo, ok, bot) = (
        server.addr("udp", "echo"),
        server.addr("udp", "ok"),
        server.addr("udp", "bot"),
    );
    let spoofed = [
        (echo.port(), ok, &b"from our echo"[..]),
        (ok.port(), ok, b"from itself"),
        (bot.port(), echo, b"from our bot"),
        (7, echo, b"from an echo service"),
    ];
    for (from, to, payload) in spoofed {
        if let Err(why) = common::send_spoofed_udp(from, to, payload) {
            common::skip(Lack::Root, format!("{io}: {why}"));
            return;
        }
    }
    server.wait_counter("udp_loops_refused", |n| n >= spoofed.len() as u64);
    // Nothing was answered: a loop would have sent replies by now, and
    // kept the refusals counting.
    assert_eq!(
        server.counter("datagrams_out"),
        0,
        "{io}: {:?}",
        server.metrics()
    );
    assert_eq!(udp_exchange(ok, b"hi"), b"OK...hi");
    assert_eq!(udp_exchange(echo, b"ping"), b"ping");
    // A client that was handed our port number on another address is no
    // loop (the services' ports here are in the ephemeral range, where
    // clients get them all the time): it is answered.
    let twin = UdpSocket::bind(("127.0.0.2", ok.port())).unwrap();
    twin.set_read_timeout(Some(PATIENCE)).unwrap();
    twin.send_to(b"same port", ok).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = twin
        .recv_from(&mut buf)
        .expect("an answer to our port number elsewhere");
    assert_eq!(&buf[..n], b"OK...same port");
    assert_eq!(server.counter("udp_loops_refused"), spoofed.len() as u64);
}

macro_rules! for_every_model {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { super::$name("uring") })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name("epoll") })*
        }
        mod threads {
            $(#[test] fn $name() { super::$name("threads") })*
        }
        mod tokio {
            $(#[test] fn $name() { super::$name("tokio") })*
        }
        mod tokio_uring {
            $(#[test] fn $name() { super::$name("tokio-uring") })*
        }
    };
}

for_every_model!(
    chapter_exchanges,
    reverse_lines_and_its_bound,
    concurrent_connections_get_exact_echoes,
    half_close,
    bot_over_tcp_and_udp,
    http_pipelining_errors_and_long_bodies,
    sigterm_answers_what_was_received,
    a_client_that_never_reads_is_contained,
    gso_trains_are_answered_datagram_by_datagram,
    sigterm_at_the_connection_limit_still_stops,
    counters_tell_what_the_kernel_did,
    a_long_body_streams_in_bounded_memory,
    session_counters_sum_over_udp_services,
    udp_loops_are_refused,
);
