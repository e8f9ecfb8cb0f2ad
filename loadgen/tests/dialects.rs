//! loadgen's request/response dialects through real sockets: the generic
//! mode against ringcore's own services and against servers written here
//! (a length-prefixed one, a RESP one that refuses and one that lies), and
//! the flags' errors. Real Redis and memcached are in `interop.rs`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{assert_fails_with, loadgen, loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

/// A server written here: every connection's requests are read by `read`
/// (one request's bytes, or None at EOF) and answered by `answer` (given
/// the request and its number on the connection). Stops taking
/// connections on drop.
struct Fake {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

type Reader = fn(&mut BufReader<TcpStream>) -> Option<Vec<u8>>;

impl Fake {
    fn start(read: Reader, answer: fn(&[u8], u64) -> Vec<u8>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                thread::spawn(move || {
                    let mut writer = conn.try_clone().unwrap();
                    let mut reader = BufReader::new(conn);
                    let mut n = 0;
                    while let Some(request) = read(&mut reader) {
                        if writer.write_all(&answer(&request, n)).is_err() {
                            break;
                        }
                        n += 1;
                    }
                });
            }
        });
        Fake { addr, stop }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One line, newline included.
fn read_line(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

/// One RESP command (`*N` and N bulk strings), as its bytes.
fn read_resp(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let head = read_line(r)?;
    let n: usize = std::str::from_utf8(&head[1..head.len() - 2])
        .ok()?
        .parse()
        .ok()?;
    let mut all = head;
    for _ in 0..2 * n {
        all.extend(read_line(r)?);
    }
    Some(all)
}

#[test]
fn generic_mode_drives_reverse_lines_with_every_reply_checked() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::REVERSE_LINES)]);
    let addr = server.addr(0).to_string();
    let r = loadgen_json(&[
        "--tcp",
        &addr,
        "--protocol",
        "generic",
        "--request",
        "ringcore\\n",
        "--expect",
        "erocgnir\\n",
        "--requests",
        "3000",
        "--connections",
        "4",
        "--pipeline",
        "8",
    ]);
    assert_eq!(num(&r, "completed"), 3000.0, "{r}");
    assert_eq!(num(&r, "errors.mismatch"), 0.0, "{r}");
    assert_eq!(num(&r, "bytes_received"), 3000.0 * 9.0);
    assert_eq!(num(&r, "bytes_sent"), 3000.0 * 9.0);
    assert_eq!(r["protocol"], "generic");
    // The same server, but loadgen expects the line unreversed: every
    // reply is caught, none counts as an answer.
    let out = loadgen(&[
        "--tcp",
        &addr,
        "--protocol",
        "generic",
        "--request",
        "ringcore\\n",
        "--expect",
        "ringcore\\n",
        "--requests",
        "20",
        "--connections",
        "2",
        "--json",
    ]);
    assert!(!out.status.success(), "a run with no answer fails");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.mismatch")),
        (0.0, 20.0),
        "{r}"
    );
}

#[test]
fn generic_echo_framing_checks_random_payloads_of_every_size() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let r = loadgen_json(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--protocol",
        "generic",
        "--request",
        "{payload}",
        "--reply",
        "echo",
        "--size",
        "1..5000",
        "--requests",
        "2000",
        "--connections",
        "3",
        "--pipeline",
        "4",
    ]);
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.mismatch")),
        (2000.0, 0.0),
        "{r}"
    );
    // Every byte sent came back and was compared.
    assert_eq!(num(&r, "bytes_received"), num(&r, "bytes_sent"));
    assert!(num(&r, "bytes_sent") > 2000.0 * 1000.0, "{r}");
}

#[test]
fn generic_length_prefixed_replies_are_cut_by_their_prefix() {
    // Answers each line with a 2-byte big-endian length and the line
    // upper-cased, newline dropped.
    let fake = Fake::start(read_line, |line, _| {
        let body = line[..line.len() - 1].to_ascii_uppercase();
        let mut reply = (body.len() as u16).to_be_bytes().to_vec();
        reply.extend(body);
        reply
    });
    let r = loadgen_json(&[
        "--tcp",
        &fake.addr(),
        "--protocol",
        "generic",
        "--request",
        "hello {seq}\\n",
        "--reply",
        "prefix:2be",
        "--requests",
        "500",
        "--connections",
        "2",
        "--pipeline",
        "3",
    ]);
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.mismatch")),
        (500.0, 0.0),
        "{r}"
    );
    let r = loadgen_json(&[
        "--tcp",
        &fake.addr(),
        "--protocol",
        "generic",
        "--request",
        "hello\\n",
        "--reply",
        "prefix:2be",
        "--expect",
        "\\x00\\x05HELLO",
        "--requests",
        "300",
    ]);
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.mismatch")),
        (300.0, 0.0),
        "{r}"
    );
}

#[test]
fn resp_error_replies_count_as_refused_and_wrong_types_as_mismatches() {
    // Refuses every third command as Redis refuses a write past maxmemory.
    let refusing = Fake::start(read_resp, |_, n| {
        if n % 3 == 2 {
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n".to_vec()
        } else {
            b"+OK\r\n".to_vec()
        }
    });
    let r = loadgen_json(&[
        "--tcp",
        &refusing.addr(),
        "--protocol",
        "resp",
        "--mix",
        "set",
        "--requests",
        "300",
        "--connections",
        "1",
        "--pipeline",
        "4",
    ]);
    assert_eq!(
        (
            num(&r, "completed"),
            num(&r, "errors.status"),
            num(&r, "errors.mismatch")
        ),
        (200.0, 100.0, 0.0),
        "{r}"
    );
    // Answers a GET with an integer: not a reply a GET can get.
    let lying = Fake::start(read_resp, |_, _| b":1\r\n".to_vec());
    let out = loadgen(&[
        "--tcp",
        &lying.addr(),
        "--protocol",
        "resp",
        "--mix",
        "get",
        "--requests",
        "10",
        "--connections",
        "1",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.mismatch")),
        (0.0, 10.0),
        "{r}"
    );
    assert!(!out.status.success(), "a run with no answer fails");
}

#[test]
fn memcache_replies_must_name_the_key_asked_for() {
    // Answers every get with a value for a key nobody asked for.
    let wrong_key = Fake::start(read_line, |_, _| {
        b"VALUE key:999999999999 0 2\r\nhi\r\nEND\r\n".to_vec()
    });
    let out = loadgen(&[
        "--tcp",
        &wrong_key.addr(),
        "--protocol",
        "memcache",
        "--mix",
        "get",
        "--keys",
        "1000",
        "--requests",
        "10",
        "--connections",
        "1",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(num(&r, "errors.mismatch"), 10.0, "{r}");
    // Echoes the key asked for back as a hit: every reply is right.
    let right_key = Fake::start(read_line, |line, _| {
        let key = String::from_utf8_lossy(&line[4..line.len() - 2]).into_owned();
        format!("VALUE {key} 0 2\r\nhi\r\nEND\r\n").into_bytes()
    });
    let r = loadgen_json(&[
        "--tcp",
        &right_key.addr(),
        "--protocol",
        "memcache",
        "--mix",
        "get",
        "--requests",
        "500",
        "--connections",
        "2",
        "--pipeline",
        "5",
        "--key-dist",
        "zipf",
    ]);
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.mismatch")),
        (500.0, 0.0),
        "{r}"
    );
}

#[test]
fn dialect_flags_say_what_is_wrong() {
    let addr = "127.0.0.1:1";
    assert_fails_with(
        &["--tcp", addr, "--protocol", "generic"],
        "give --request TEMPLATE",
    );
    assert_fails_with(
        &["--tcp", addr, "--request", "x"],
        "are for --protocol generic",
    );
    assert_fails_with(
        &["--tcp", addr, "--protocol", "resp", "--mix", "put:1"],
        "give get, set, incr, del or ping",
    );
    assert_fails_with(
        &["--tcp", addr, "--protocol", "memcache", "--mix", "get:x"],
        "whole number",
    );
    assert_fails_with(
        &[
            "--tcp",
            addr,
            "--protocol",
            "generic",
            "--request",
            "{nope}",
        ],
        "no placeholder {nope}",
    );
    assert_fails_with(
        &[
            "--tcp",
            addr,
            "--protocol",
            "generic",
            "--request",
            "x",
            "--reply",
            "prefix:3",
        ],
        "1, 2 or 4 bytes",
    );
    assert_fails_with(&["--tcp", addr, "--key-dist", "zipf:-1"], "above 0");
    assert_fails_with(&["--tcp", addr, "--keys", "0"], "at least 1");
    assert_fails_with(
        &[
            "--tcp",
            addr,
            "--protocol",
            "generic",
            "--request-file",
            "/nonexistent/req",
        ],
        "reading --request-file /nonexistent/req",
    );
}

#[test]
fn generic_mode_over_udp_checks_each_datagram_reply() {
    let server = TestServer::start(&[
        (Transport::Udp, Protocol::OK),
        (Transport::Udp, Protocol::ECHO),
    ]);
    // The chapter's UDP server answers OK... and the datagram.
    let before = server.totals();
    let r = loadgen_json(&[
        "--udp",
        &server.addr(0).to_string(),
        "--protocol",
        "generic",
        "--request",
        "hello {seq}",
        "--expect",
        "OK...hello {seq}",
        "--requests",
        "3000",
        "--pipeline",
        "8",
    ]);
    assert_eq!(r["mode"], "udp-generic");
    assert_eq!(
        (
            num(&r, "sent"),
            num(&r, "answered"),
            num(&r, "lost"),
            num(&r, "unmatched")
        ),
        (3000.0, 3000.0, 0.0, 0.0),
        "{r}"
    );
    assert_eq!(
        server.totals().datagrams_in - before.datagrams_in,
        3000,
        "the server's own count"
    );
    // Echo, paced: every payload back byte for byte.
    let r = loadgen_json(&[
        "--udp",
        &server.addr(1).to_string(),
        "--protocol",
        "generic",
        "--request",
        "{payload}",
        "--reply",
        "echo",
        "--size",
        "1..1000",
        "--rate",
        "2000",
        "--duration",
        "500ms",
    ]);
    assert_eq!(
        (num(&r, "sent"), num(&r, "answered")),
        (1000.0, 1000.0),
        "{r}"
    );
    assert_eq!(num(&r, "bytes_received"), num(&r, "bytes_sent"));
}

#[test]
fn udp_replies_are_matched_to_their_requests_through_loss_and_reordering() {
    // Drops every tenth datagram and answers the others in swapped pairs,
    // each reply the request's text upper-cased.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut held: Option<(Vec<u8>, SocketAddr)> = None;
        let mut n = 0u64;
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            n += 1;
            if n.is_multiple_of(10) {
                continue;
            }
            let reply = buf[..len].to_ascii_uppercase();
            match held.take() {
                None => held = Some((reply, from)),
                Some((earlier, to)) => {
                    let _ = socket.send_to(&reply, from);
                    let _ = socket.send_to(&earlier, to);
                }
            }
        }
    });
    let out = loadgen(&[
        "--udp",
        &addr,
        "--protocol",
        "generic",
        "--request",
        "q{seq}",
        "--expect",
        "Q{seq}",
        "--requests",
        "200",
        "--pipeline",
        "4",
        "--timeout",
        "300ms",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every request is answered or lost; the 20 dropped are lost; a reply
    // held until after its request timed out is lost and then unmatched
    // (late), never credited to another request: each reply can only
    // answer the request whose upper-cased text it is.
    let (answered, lost) = (num(&r, "answered"), num(&r, "lost"));
    assert_eq!((num(&r, "sent"), answered + lost), (200.0, 200.0), "{r}");
    assert!(lost >= 20.0, "the dropped are lost: {r}");
    assert!(
        num(&r, "unmatched") <= lost - 20.0,
        "only late replies go unmatched: {r}"
    );
    assert!(
        answered >= 150.0,
        "swapped replies find their requests: {r}"
    );
    // A server that answers something else: nothing matches, nothing is answered.
    let wrong = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let wrong_addr = wrong.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = wrong.recv_from(&mut buf) {
            let _ = wrong.send_to(b"pong", from);
        }
    });
    let out = loadgen(&[
        "--udp",
        &wrong_addr,
        "--protocol",
        "generic",
        "--request",
        "ping {seq}",
        "--expect",
        "pong {seq}",
        "--requests",
        "10",
        "--timeout",
        "200ms",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (num(&r, "answered"), num(&r, "unmatched"), num(&r, "lost")),
        (0.0, 10.0, 10.0),
        "{r}"
    );
    assert!(!out.status.success());
    assert_fails_with(
        &[
            "--udp",
            &wrong_addr,
            "--protocol",
            "generic",
            "--request",
            "x",
            "--reply",
            "fixed:4",
        ],
        "one datagram",
    );
    assert_fails_with(
        &["--udp", &wrong_addr, "--protocol", "resp"],
        "runs over TCP",
    );
}

/// A thread held up past the run's end (here: the whole process stopped
/// with SIGSTOP from before the end until after it) still sends every
/// request that fell due before the end when it runs again: the schedule
/// is accounted for, not cut off at the moment the thread happens to look.
#[test]
fn udp_generic_sends_every_request_due_before_the_end_even_when_held_up() {
    let server = TestServer::start(&[(Transport::Udp, Protocol::ECHO)]);
    let before = server.totals().datagrams_in;
    let started = std::time::Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--udp", &server.addr(0).to_string()])
        .args([
            "--protocol",
            "generic",
            "--request",
            "r{seq}",
            "--reply",
            "echo",
        ])
        .args(["--rate", "2000", "--duration", "1s", "--json", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let pid = child.id() as i32;
    // Sending has begun...
    let deadline = started + Duration::from_secs(20);
    while server.totals().datagrams_in - before < 100 {
        assert!(std::time::Instant::now() < deadline, "loadgen never sent");
        thread::sleep(Duration::from_millis(1));
    }
    // ...stop it before its 1 s run ends, and let it go on well after.
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped_at = server.totals().datagrams_in - before;
    thread::sleep(Duration::from_millis(1500));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = child.wait_with_output().expect("loadgen's output");
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stopped_at < 2000,
        "stopped only after the end: {stopped_at}"
    );
    assert_eq!(num(&r, "sent"), 2000.0, "{r}");
    assert_eq!(
        num(&r, "sent"),
        num(&r, "answered") + num(&r, "lost"),
        "{r}"
    );
}

/// A server that answers every request with a line that never ends, on
/// eight connections at once. Each reply alone may grow to 64 MiB before
/// it counts as wrong, which would let eight hold 512 MiB; the thread's
/// bound on replies not yet ended (256 MiB) drops connections first.
/// Every request ends as a mismatch, and loadgen's peak memory (the
/// kernel's count for the child) stays near the bound.
#[test]
// The child is reaped by wait4, for its own peak memory.
#[allow(clippy::zombie_processes)]
fn replies_that_never_end_cost_one_bound_per_thread_not_per_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut request = [0u8; 2];
                if std::io::Read::read_exact(&mut stream, &mut request).is_err() {
                    return;
                }
                // Ends when loadgen drops the connection.
                let endless = vec![b'x'; 256 * 1024];
                while stream.write_all(&endless).is_ok() {}
            });
        }
    });
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--tcp", &addr.to_string()])
        .args([
            "--protocol",
            "generic",
            "--request",
            "q\n",
            "--reply",
            "line",
        ])
        .args(["--connections", "8", "--requests", "8", "--threads", "1"])
        .args(["--timeout", "60s", "--json", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let pid = child.id() as i32;
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: our own child, reaped here once; valid out-pointers.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    let mut stdout = child.stdout.expect("stdout");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
    // It says no request was answered (exit status 1), with its report.
    assert!(libc::WIFEXITED(status), "loadgen did not exit: {status}");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(num(&r, "errors.mismatch"), 8.0, "{r}");
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    assert!(
        peak_mib < 400.0,
        "loadgen peaked at {peak_mib:.0} MiB for replies bounded at 256 MiB a thread"
    );
    eprintln!("peak {peak_mib:.0} MiB");
}

/// What a server saw of a pipeline of 4 on one connection: it reads the
/// first 4 requests, answers only the first, and looks whether a 5th
/// comes before it answers the other 3 (it waits `window` for one). Then
/// it answers every request as it comes, until loadgen closes.
/// How long the server waits for what must come.
const PATIENCE: Duration = Duration::from_secs(20);

fn fifth_before_the_batch_is_answered(batch: bool, window: Duration) -> bool {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        // loadgen's probe connects and closes first: serve the connection
        // that sends.
        let mut line = String::new();
        let (mut reader, mut writer) = loop {
            let (conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(PATIENCE)).unwrap();
            let writer = conn.try_clone().unwrap();
            let mut reader = BufReader::new(conn);
            line.clear();
            if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                break (reader, writer);
            }
        };
        for _ in 1..4 {
            line.clear();
            reader.read_line(&mut line).expect("the first 4 requests");
        }
        writer.write_all(b"a\n").unwrap();
        reader.get_ref().set_read_timeout(Some(window)).unwrap();
        line.clear();
        let early = reader.read_line(&mut line).is_ok_and(|n| n > 0);
        reader.get_ref().set_read_timeout(Some(PATIENCE)).unwrap();
        writer.write_all(b"a\na\na\n").unwrap();
        if early {
            writer.write_all(b"a\n").unwrap();
        }
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => writer.write_all(b"a\n").unwrap(),
                _ => break early,
            }
        }
    });
    let mut args = vec![
        "--tcp",
        &addr,
        "--protocol",
        "generic",
        "--request",
        "q\\n",
        "--reply",
        "line",
        "--connections",
        "1",
        "--pipeline",
        "4",
        "--requests",
        "12",
    ];
    if batch {
        args.push("--batch");
    }
    let json = loadgen_json(&args);
    assert_eq!(num(&json, "requests"), 12.0, "{json}");
    assert_eq!(num(&json, "scheduled"), 12.0, "answered is all: {json}");
    assert_eq!(json["pipeline_batch"], batch, "{json}");
    server.join().unwrap()
}

#[test]
fn a_pipeline_refills_per_reply_and_in_batches_with_batch() {
    // Each reply frees its slot: the 5th request comes as soon as the 1st
    // is answered (the server waits for it as long as it must).
    assert!(fifth_before_the_batch_is_answered(false, PATIENCE));
    // --batch (redis-benchmark's -P): nothing more comes while 3 of the 4
    // are unanswered; loadgen would send within microseconds if it did.
    assert!(!fifth_before_the_batch_is_answered(
        true,
        Duration::from_millis(300)
    ));
}

#[test]
fn batch_is_for_closed_loop_tcp() {
    assert_fails_with(
        &["--tcp", "127.0.0.1:9", "--rate", "1000", "--batch"],
        "--batch shapes a closed-loop TCP load run",
    );
    assert_fails_with(
        &["--udp", "127.0.0.1:9", "--batch"],
        "--batch shapes a closed-loop TCP load run",
    );
}
