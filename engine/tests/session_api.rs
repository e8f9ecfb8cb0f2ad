//! The session API through real sockets, on both drivers: what a session
//! is told at creation, and the counters it keeps.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use engine::{Driver, Fed, Server, ServiceCounter, SessionContext, StreamSession};

/// Greets with what its context says, then counts the bytes and lines it
/// is sent (answering each line with `ok`).
struct Introspective {
    bytes: ServiceCounter,
    lines: ServiceCounter,
}

impl Introspective {
    fn new(cx: &SessionContext) -> (Self, String) {
        let about = format!(
            "worker={} service={} peer={} local={}\n",
            cx.worker(),
            cx.service(),
            cx.peer_addr().expect("peer address"),
            cx.local_addr().expect("local address"),
        );
        let session = Self {
            bytes: cx.counter("bytes"),
            lines: cx.counter("lines"),
        };
        (session, about)
    }
}

struct Greeting(Introspective, String);

impl StreamSession for Greeting {
    fn on_open(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.1.as_bytes());
    }

    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
        let Some(end) = input.iter().rposition(|&b| b == b'\n') else {
            return Fed::need_more();
        };
        let lines = input[..=end].iter().filter(|&&b| b == b'\n').count();
        self.0.bytes.add(end as u64 + 1);
        self.0.lines.add(lines as u64);
        out.extend(std::iter::repeat_n(b"ok\n".iter().copied(), lines).flatten());
        Fed::all(end + 1)
    }
}

fn context_and_counters(driver: Driver) {
    let running = Server::new()
        .workers(2)
        .driver(driver)
        .tcp("127.0.0.1:0".parse().unwrap(), "introspective", |cx| {
            let (session, about) = Introspective::new(cx);
            Greeting(session, about)
        })
        .start()
        .expect("start");
    let addr = running.services()[0].addr;
    let mut sent_bytes = 0;
    let mut sent_lines = 0;
    for c in 0..8 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut about = String::new();
        reader.read_line(&mut about).unwrap();
        let expected_tail = format!(
            "service=introspective peer={} local={addr}\n",
            stream.local_addr().unwrap()
        );
        assert!(about.ends_with(&expected_tail), "{about:?}");
        let worker: usize = about["worker=".len()..about.find(' ').unwrap()]
            .parse()
            .unwrap();
        assert!(worker < 2, "{about}");
        // Lines split across writes: the engine holds a partial one.
        let text = "a line\n".repeat(c + 1);
        let (head, tail) = text.split_at(text.len() / 2);
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(tail.as_bytes()).unwrap();
        for _ in 0..=c {
            let mut ok = String::new();
            reader.read_line(&mut ok).unwrap();
            assert_eq!(ok, "ok\n");
        }
        sent_bytes += text.len() as u64;
        sent_lines += c as u64 + 1;
    }
    // Every reply was read, so every count is in: summed over workers.
    let sum = |name: &str| -> u64 {
        running
            .stats()
            .iter()
            .flat_map(|s| s.services.snapshot())
            .filter(|(service, n, _)| &**service == "introspective" && *n == name)
            .map(|(_, _, v)| v)
            .sum()
    };
    assert_eq!(sum("bytes"), sent_bytes);
    assert_eq!(sum("lines"), sent_lines);
    let text = engine::metrics::render(&running.stats(), "test");
    let total = format!(
        "ringcore_service_counter{{service=\"introspective\",name=\"lines\"}} {sent_lines}\n"
    );
    assert!(text.contains(&total), "{text}");
    running.shutdown();
    running.join().expect("join");
}

#[test]
fn io_uring_sessions_see_their_context_and_keep_counters() {
    context_and_counters(Driver::Uring);
}

#[test]
fn epoll_sessions_see_their_context_and_keep_counters() {
    context_and_counters(Driver::Epoll);
}
