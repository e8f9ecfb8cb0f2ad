//! The examples in `examples/`, each run as its own process the way a user
//! runs it (`cargo run --example NAME -- ADDR`), through real sockets on
//! loopback, and stopped with SIGTERM. The redis-benchmark and redis-cli
//! checks need Debian's `redis-tools` (`.ci/run` installs it and runs them
//! with `--ignored`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[path = "common/example.rs"]
mod example;
use example::{redis_tool, Example, PATIENCE};

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Reads exactly `n` bytes.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("reply");
    buf
}

#[test]
fn ping_answers_resp_split_anywhere_and_pipelined() {
    let ex = Example::start("ping", &["1"]);
    let mut s = connect(ex.addr);
    // Multibulk PING, ECHO of a value with CR LF inside, inline PING, and
    // an unknown command, in one write.
    s.write_all(
        b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\nPING\r\n*1\r\n$3\r\nFOO\r\n",
    )
    .unwrap();
    let expected = b"+PONG\r\n$4\r\na\r\nb\r\n+PONG\r\n-ERR unknown command\r\n";
    assert_eq!(read_n(&mut s, expected.len()), expected);
    // The same ECHO a byte at a time: the engine holds the partial command.
    for byte in b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n" {
        s.write_all(&[*byte]).unwrap();
    }
    assert_eq!(read_n(&mut s, 11), b"$5\r\nhello\r\n");
    // Garbage is an error the client can read, then a close.
    s.write_all(b"*x\r\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"-ERR Protocol error\r\n");
    ex.stop();
}

#[test]
fn the_ping_examples_third_argument_holds_each_wait_for_a_batch() {
    // A 20 ms batch wait: a lone ping-pong client, whose each request is
    // the only completion, waits out the window every time (the kernel
    // holds a fresh wait for it; nothing else can end it early), so its
    // median round trip is at least half of it. Without the argument it
    // is microseconds.
    let window = Duration::from_millis(20);
    let ex = Example::start("ping", &["1", &window.as_micros().to_string()]);
    let mut s = connect(ex.addr);
    let mut trips: Vec<Duration> = (0..9)
        .map(|_| {
            let sent = Instant::now();
            s.write_all(b"PING\r\n").unwrap();
            assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");
            sent.elapsed()
        })
        .collect();
    trips.sort();
    assert!(trips[4] >= window / 2, "median round trip {:?}", trips[4]);
    ex.stop();
}

/// Sends one frame of the framed example and reads its reply frame.
fn framed_round_trip(s: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    s.write_all(&frame).unwrap();
    let len = u32::from_be_bytes(read_n(s, 4).try_into().unwrap()) as usize;
    read_n(s, len)
}

#[test]
fn framed_reverses_frames_counts_per_worker_and_times_out_a_partial_frame() {
    // One worker, so that both connections below share its state.
    let ex = Example::start("framed", &["1"]);
    let mut a = connect(ex.addr);
    assert_eq!(framed_round_trip(&mut a, b"abc"), b"cba");
    // A frame larger than one receive, sent in two halves.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut frame = (big.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&big);
    a.write_all(&frame[..100_000]).unwrap();
    a.write_all(&frame[100_000..]).unwrap();
    let len = u32::from_be_bytes(read_n(&mut a, 4).try_into().unwrap()) as usize;
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    assert_eq!(read_n(&mut a, len), reversed);
    // Another connection's frame counts in the same worker's tally: 2
    // from a, 1 from d, and the empty frame that asks.
    let mut d = connect(ex.addr);
    assert_eq!(framed_round_trip(&mut d, b"z"), b"z");
    assert_eq!(framed_round_trip(&mut a, b""), b"4");
    // A partial frame is answered "timeout" after 2 s, then closed.
    let mut b = connect(ex.addr);
    let sent = Instant::now();
    b.write_all(&[0, 0, 0, 9, b'x']).unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    let waited = sent.elapsed();
    assert_eq!(rest, b"\0\0\0\x07timeout");
    assert!(
        waited >= Duration::from_secs(2),
        "timed out early: {waited:?}"
    );
    // A length past the 1 MiB bound is refused at once.
    let mut c = connect(ex.addr);
    c.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"\0\0\0\x0fframe too large");
    ex.stop();
}

#[test]
fn udp_upper_answers_in_capitals_and_never_longer() {
    let ex = Example::start("udp_upper", &[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    for message in [&b"hello, World 42"[..], b"", &[b'q'; 1400]] {
        s.send_to(message, ex.addr).unwrap();
        let mut buf = [0; 2048];
        let (n, from) = s.recv_from(&mut buf).expect("a reply");
        assert_eq!(from, ex.addr);
        assert_eq!(&buf[..n], message.to_ascii_uppercase());
    }
    ex.stop();
}

#[test]
#[ignore = "needs redis-tools (CI installs it)"]
fn redis_cli_and_redis_benchmark_drive_the_ping_example() {
    let ex = Example::start("ping", &["1"]);
    let port = ex.addr.port().to_string();
    let cli = |args: &[&str]| {
        let all = [&["-h", "127.0.0.1", "-p", &port][..], args].concat();
        String::from_utf8(redis_tool("redis-cli", &all).stdout).unwrap()
    };
    assert_eq!(cli(&["ping"]), "PONG\n");
    assert_eq!(cli(&["ping", "hi there"]), "hi there\n");
    assert_eq!(cli(&["echo", "line\r\nbreak"]), "line\r\nbreak\n");
    for pipeline in ["1", "16"] {
        let out = redis_tool(
            "redis-benchmark",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "ping_inline,ping_mbulk",
                "-c",
                "50",
                "-n",
                "50000",
                "-P",
                pipeline,
                "--csv",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // redis-benchmark finishes only once every request is answered; it
        // reports each test as one CSV row, and any error on stderr.
        for test in ["PING_INLINE", "PING_MBULK"] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("\"{test}\"")))
                .unwrap_or_else(|| panic!("no {test} row at -P {pipeline}: {stdout}"));
            let rps: f64 = row
                .split(',')
                .nth(1)
                .unwrap()
                .trim_matches('"')
                .parse()
                .unwrap();
            assert!(rps > 0.0, "{row}");
        }
        assert!(
            !stderr.to_lowercase().contains("error") && !stderr.contains("WARNING"),
            "-P {pipeline}: {stderr}"
        );
    }
    ex.stop();
}
