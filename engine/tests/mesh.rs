//! Messages between workers through real sockets, on both drivers: a
//! sharded counter whose keys live on the worker their hash names, reached
//! from connections on every worker.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use engine::{Driver, Fed, Mesh, Server, StreamSession};

const PATIENCE: Duration = Duration::from_secs(20);

/// A worker's shard: its index and its counters.
struct Counts {
    worker: usize,
    counts: HashMap<Vec<u8>, u64>,
}

/// Answers each line (a key) with `key=N@W`: the key's count after this
/// increment, and the worker whose shard holds it; and the line `?` with
/// `wN`, the connection's own worker.
struct Counter {
    mesh: Mesh<Counts>,
}

fn increment(shard: &mut Counts, key: Vec<u8>) -> Vec<u8> {
    let n = shard.counts.entry(key.clone()).or_default();
    *n += 1;
    let key = String::from_utf8_lossy(&key);
    format!("{key}={n}@{}\n", shard.worker).into_bytes()
}

impl StreamSession for Counter {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let (start, mut taken) = (out.len(), 0);
        while out.len() - start < room && self.mesh.waiting() < engine::mesh::MAX_WAITING {
            let Some(end) = input[taken..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let key = input[taken..taken + end].to_vec();
            taken += end + 1;
            if key == b"?" {
                out.extend_from_slice(format!("w{}\n", self.mesh.worker()).as_bytes());
                continue;
            }
            let owner = self.mesh.owner_of(&key);
            self.mesh
                .ask(out, owner, move |shard| increment(shard, key));
        }
        Fed::all(taken)
    }
}

/// The sharded counter on two workers, on `driver`; with an output limit
/// (and a short shutdown deadline) when one is given.
fn counter_server(driver: Driver, output_limit: Option<usize>) -> Server {
    Server::new()
        .workers(2)
        .driver(driver)
        .configure(|c| {
            if let Some(limit) = output_limit {
                c.output_limit = limit;
                c.shutdown_deadline = Duration::from_secs(1);
            }
        })
        .tcp_sharded(
            "127.0.0.1:0".parse().unwrap(),
            "counter",
            |worker| Counts {
                worker,
                counts: HashMap::new(),
            },
            |_cx, mesh| Counter { mesh: mesh.clone() },
        )
}

fn start(driver: Driver, output_limit: Option<usize>) -> engine::PerCore {
    counter_server(driver, output_limit)
        .start()
        .expect("the engine starts")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Waits until `ready` holds, failing after [`PATIENCE`].
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < PATIENCE, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn total(running: &engine::PerCore, counter: impl Fn(&engine::StatsSnapshot) -> u64) -> u64 {
    running.stats().iter().map(|s| counter(&s.snapshot())).sum()
}

/// Many connections, landing on both workers, pipeline increments of keys
/// owned by both: every reply comes in request order, names the key asked,
/// and the counts add up exactly; messages really travelled.
fn ordered_and_exact(driver: Driver) {
    let running = start(driver, None);
    let addr = running.services()[0].addr;
    let (connections, per_connection, keys) = (8, 2000, 64);
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let sent: Vec<String> = (0..per_connection)
                    .map(|i| format!("k{}", (i * 7 + c * 13) % keys))
                    .collect();
                let request: String = sent.iter().map(|k| format!("{k}\n")).collect();
                // Written whole while replies are read: a pipeline deep
                // enough to keep many asks in flight.
                let mut writer = s.try_clone().expect("clone");
                let write = std::thread::spawn(move || writer.write_all(request.as_bytes()));
                let mut lines = BufReader::new(&mut s).lines();
                let replies: Vec<String> = sent
                    .iter()
                    .map(|_| lines.next().expect("a reply").expect("readable"))
                    .collect();
                write.join().expect("writer").expect("sent");
                (sent, replies)
            })
        })
        .collect();
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut highest: HashMap<String, u64> = HashMap::new();
    let mut asked: HashMap<String, u64> = HashMap::new();
    for client in clients {
        let (sent, replies) = client.join().expect("client");
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (key, reply) in sent.iter().zip(&replies) {
            let (named, rest) = reply.split_once('=').expect("key=N@W");
            assert_eq!(named, key, "replies come in request order");
            let (n, owner) = rest.split_once('@').expect("N@W");
            let n: u64 = n.parse().expect("a count");
            let previous = owners.entry(key.clone()).or_insert(owner.to_string());
            assert_eq!(previous, owner, "{key} lives on one worker");
            assert!(
                n > last.get(key.as_str()).copied().unwrap_or(0),
                "{key} counts up"
            );
            last.insert(key, n);
            let h = highest.entry(key.clone()).or_default();
            *h = (*h).max(n);
            *asked.entry(key.clone()).or_default() += 1;
        }
    }
    assert_eq!(highest, asked, "each key counted every increment, once");
    let on_both = owners.values().any(|w| w == "0") && owners.values().any(|w| w == "1");
    assert!(on_both, "the keys are spread over both workers: {owners:?}");
    assert!(
        total(&running, |s| s.worker_messages_sent) > 0,
        "asks travelled"
    );
    wait_for("every ask answered", || {
        total(&running, |s| s.asks_waiting) == 0
    });
    assert_eq!(
        total(&running, |s| s.worker_messages_sent),
        total(&running, |s| s.worker_messages_received),
        "every message sent was received"
    );
    running.shutdown();
    running.join().expect("clean stop");
}

#[test]
fn io_uring_workers_answer_each_other_in_order() {
    ordered_and_exact(Driver::Uring);
}

#[test]
fn epoll_workers_answer_each_other_in_order() {
    ordered_and_exact(Driver::Epoll);
}

/// A pipeline of two requests, one for a key on the connection's own
/// worker and one for a key on the other, is answered in one send: the
/// first reply, ready at once, waits for the second's answer instead of
/// leaving alone a hop ahead of it (a send and a client wake-up saved).
fn one_send_for_a_pipeline_split_over_workers(driver: Driver) {
    let running = start(driver, None);
    let addr = running.services()[0].addr;
    let mut s = connect(addr);
    let mut lines = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    let mut ask = |request: &str, line: &mut String| {
        s.write_all(request.as_bytes()).expect("send");
        line.clear();
        lines.read_line(line).expect("a reply");
        line.trim_end().to_string()
    };
    let own = ask("?\n", &mut line);
    // A key on each worker: every reply names its key's owner.
    let mut key_on: [Option<String>; 2] = [None, None];
    for k in 0..64 {
        let reply = ask(&format!("k{k}\n"), &mut line);
        let owner: usize = reply
            .rsplit('@')
            .next()
            .and_then(|w| w.parse().ok())
            .expect("@W");
        key_on[owner].get_or_insert(format!("k{k}"));
    }
    let (local, remote) = match (own.as_str(), &key_on) {
        ("w0", [Some(a), Some(b)]) | ("w1", [Some(b), Some(a)]) => (a.clone(), b.clone()),
        _ => panic!("no key on each worker, or no worker named: {own} {key_on:?}"),
    };
    let mut s = lines.into_inner();
    let before = total(&running, |x| x.messages_out);
    let rounds = 20;
    for round in 0..rounds {
        s.write_all(format!("{local}\n{remote}\n").as_bytes())
            .expect("send");
        // One read: what the first segment brought (a signal to another
        // test's thread may interrupt it before anything came).
        let mut buf = [0u8; 256];
        let n = loop {
            match s.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => break read.expect("a reply"),
            }
        };
        let replies = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            replies.matches('\n').count(),
            2,
            "round {round}: both replies in one read, got {replies:?}"
        );
        assert!(
            replies.starts_with(&format!("{local}=")) && replies.contains(&format!("\n{remote}=")),
            "round {round}: in request order: {replies:?}"
        );
    }
    // One send a round: a reply sent ahead of the other would make two.
    // (Slack for the setup's last sends, counted when they completed.)
    wait_for("the rounds' sends counted", || {
        total(&running, |x| x.messages_out) >= before + rounds
    });
    let sends = total(&running, |x| x.messages_out) - before;
    assert!(
        sends < rounds + rounds / 2,
        "{sends} sends for {rounds} pipelines"
    );
    running.shutdown();
    running.join().expect("clean stop");
}

#[test]
fn io_uring_answers_a_pipeline_split_over_workers_in_one_send() {
    one_send_for_a_pipeline_split_over_workers(Driver::Uring);
}

#[test]
fn epoll_answers_a_pipeline_split_over_workers_in_one_send() {
    one_send_for_a_pipeline_split_over_workers(Driver::Epoll);
}

/// Clients that pipeline without end and never read: the connections stop
/// being read, asks waiting stay within their bounds, and shutdown still
/// ends (answering or dropping what is in flight) within its deadline.
fn bounded_and_stoppable(driver: Driver) {
    let running = start(driver, Some(64 * 1024));
    let addr = running.services()[0].addr;
    let line: Vec<u8> = (0..4096)
        .flat_map(|i| format!("key{}\n", i % 97).into_bytes())
        .collect();
    let streams: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    for s in &streams {
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
    }
    // Write until the kernel's buffers are full: the server stopped reading.
    for mut s in &streams {
        let started = Instant::now();
        while s.write_all(&line).is_ok() {
            assert!(
                started.elapsed() < PATIENCE,
                "the server never stopped reading"
            );
        }
    }
    wait_for("every connection paused", || {
        total(&running, |s| s.connections_paused) == 4
    });
    let waiting = total(&running, |s| s.asks_waiting);
    assert!(
        waiting <= 4 * engine::mesh::MAX_WAITING as u64,
        "asks waiting: {waiting}"
    );
    let memory = total(&running, |s| s.connection_memory);
    // Each connection: its output bound, its receive window of held input,
    // and what its asks count.
    let bound = 4 * (64 * 1024 + 128 * 1024 + engine::mesh::MAX_WAITING * 128 + 64 * 1024);
    assert!(
        memory <= bound as u64,
        "connection memory {memory} > {bound}"
    );
    let stopping = Instant::now();
    running.shutdown();
    running.join().expect("clean stop");
    // The shutdown deadline is 1 s; the mesh may add 1 s more.
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopping.elapsed()
    );
    for mut s in streams {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // closed: EOF or a reset
    }
}

#[test]
fn io_uring_asks_stay_bounded_and_shutdown_ends() {
    bounded_and_stoppable(Driver::Uring);
}

#[test]
fn epoll_asks_stay_bounded_and_shutdown_ends() {
    bounded_and_stoppable(Driver::Epoll);
}

/// With no traffic at all, both drivers start a sharded service and stop
/// at once: retiring from the mesh needs no message.
#[test]
fn an_idle_sharded_service_stops_promptly_on_both_drivers() {
    for driver in [Driver::Uring, Driver::Epoll] {
        let running = start(driver, None);
        let stopping = Instant::now();
        running.shutdown();
        running.join().expect("stops");
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "{driver:?}: {:?}",
            stopping.elapsed()
        );
    }
}
