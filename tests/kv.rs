//! The sharded key-value example (`examples/kv.rs`) through clients nobody
//! here wrote: Debian's `redis-cli` and `redis-benchmark` (`redis-tools`,
//! which `.ci/run` installs; elsewhere these tests skip and say so), and
//! through a raw socket for what those clients cannot show.

mod common;
#[path = "common/example.rs"]
mod example;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::Lack;
use example::{redis_tool, Example, PATIENCE};

/// True when both redis tools run here; else the test skips.
fn redis_tools_here() -> bool {
    for program in ["redis-cli", "redis-benchmark"] {
        let found = Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            common::skip(
                Lack::Program(program),
                format!("{program} is not installed (apt-get install redis-tools)"),
            );
            return false;
        }
    }
    true
}

/// `redis-cli -p PORT ARGS...`, its output.
fn cli(ex: &Example, args: &[&str]) -> String {
    let port = ex.addr.port().to_string();
    let all = [&["-h", "127.0.0.1", "-p", &port][..], args].concat();
    String::from_utf8(redis_tool("redis-cli", &all).stdout).expect("UTF-8")
}

/// `redis-benchmark` against the example with `args`; its CSV rows.
fn benchmark(ex: &Example, args: &[&str]) -> String {
    let port = ex.addr.port().to_string();
    let all = [&["-h", "127.0.0.1", "-p", &port, "--csv", "-q"][..], args].concat();
    let out = redis_tool("redis-benchmark", &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.to_lowercase().contains("error"),
        "redis-benchmark {args:?}: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_round_trips_every_command() {
    if !redis_tools_here() {
        return;
    }
    let ex = Example::start("kv", &["2"]);
    assert_eq!(cli(&ex, &["ping"]), "PONG\n");
    assert_eq!(cli(&ex, &["echo", "two words"]), "two words\n");
    assert_eq!(cli(&ex, &["set", "greeting", "hello"]), "OK\n");
    assert_eq!(cli(&ex, &["get", "greeting"]), "hello\n");
    assert_eq!(cli(&ex, &["get", "nothing"]), "\n");
    assert_eq!(cli(&ex, &["incr", "visits"]), "1\n");
    assert_eq!(cli(&ex, &["incr", "visits"]), "2\n");
    assert_eq!(
        cli(&ex, &["incr", "greeting"]).trim_end(),
        "ERR value is not an integer or out of range"
    );
    // Sixteen keys: with two workers, some are each worker's.
    let keys: Vec<String> = (0..16).map(|i| format!("key:{i}")).collect();
    let mut mset = vec!["mset"];
    let values: Vec<String> = (0..16).map(|i| format!("value {i}")).collect();
    for (k, v) in keys.iter().zip(&values) {
        mset.extend([k.as_str(), v.as_str()]);
    }
    assert_eq!(cli(&ex, &mset), "OK\n");
    let mut mget = vec!["mget"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("missing");
    let expected: String = values.iter().map(|v| format!("{v}\n")).collect::<String>() + "\n";
    assert_eq!(
        cli(&ex, &mget),
        expected,
        "MGET gathers from both shards, in order"
    );
    let mut exists = vec!["exists", "missing"];
    exists.extend(keys.iter().map(String::as_str));
    assert_eq!(cli(&ex, &exists), "16\n");
    let mut del = vec!["del", "missing"];
    del.extend(keys[..10].iter().map(String::as_str));
    assert_eq!(cli(&ex, &del), "10\n");
    assert_eq!(cli(&ex, &exists), "6\n");
    assert_eq!(cli(&ex, &["config", "get", "save"]), "save\n\n");
    let unknown = cli(&ex, &["flushall"]);
    assert!(unknown.starts_with("ERR unknown command"), "{unknown}");
    ex.stop();
}

#[test]
fn concurrent_increments_of_one_key_add_up_exactly() {
    if !redis_tools_here() {
        return;
    }
    let ex = Example::start("kv", &["2"]);
    // 50 clients: the kernel spreads them over both workers, so most of
    // the increments of the one key travel to the worker that owns it.
    let requests = 20_000;
    // Plain, then pipelined: the count grows by exactly each run's share.
    for (run, pipeline) in ["1", "16"].into_iter().enumerate() {
        let n = requests.to_string();
        benchmark(&ex, &["-t", "incr", "-c", "50", "-P", pipeline, "-n", &n]);
        // redis-benchmark's INCR key is `counter:__rand_int__` without -r.
        assert_eq!(
            cli(&ex, &["get", "counter:__rand_int__"]),
            format!("{}\n", (run + 1) * requests),
            "after the run at -P {pipeline}"
        );
    }
    ex.stop();
}

#[test]
fn random_sets_and_gets_complete_without_errors() {
    if !redis_tools_here() {
        return;
    }
    // Two workers as they come and floating, and one with a batch wait,
    // as the benches run them.
    for args in [&["2"][..], &["2", "--no-pin"], &["1", "--batch-wait", "20"]] {
        sets_and_gets_complete(Example::start("kv", args));
    }
}

fn sets_and_gets_complete(ex: Example) {
    for pipeline in ["1", "16"] {
        let rows = benchmark(
            &ex,
            &[
                "-t", "set,get", "-c", "50", "-n", "20000", "-r", "10000", "-P", pipeline,
            ],
        );
        for test in ["SET", "GET"] {
            assert!(
                rows.lines().any(|l| l.starts_with(&format!("\"{test}\""))),
                "no {test} row at -P {pipeline}: {rows}"
            );
        }
    }
    // What was set is there: a random key's value is redis-benchmark's
    // payload (3 bytes by default), if it drew that key at all.
    let key = "key:000000000042";
    let value = cli(&ex, &["get", key]);
    assert!(value.len() == 4 || value == "\n", "{key}: {value:?}");
    ex.stop();
}

/// The workers are pinned one to a CPU as the example comes, and may run
/// on every CPU the process may with `--no-pin`.
#[test]
fn the_no_pin_flag_lets_the_workers_float() {
    for (args, pinned) in [(&["2"][..], true), (&["2", "--no-pin"], false)] {
        let ex = Example::start("kv", args);
        let (workers, process) = common::thread_cpus(ex.pid(), "ringcore-w");
        assert_eq!(workers.len(), 2, "{args:?}: two workers");
        for cpus in &workers {
            let one_cpu = cpus.parse::<usize>().is_ok();
            if pinned {
                assert!(one_cpu, "{args:?}: a worker may run on {cpus}");
            } else {
                assert_eq!(*cpus, process, "{args:?}: a worker may run on {cpus}");
            }
        }
        ex.stop();
    }
}

/// `--batch-wait` holds each wait for a batch: a lone client's PING,
/// the only completion, waits out a 20 ms window (as the PING example's
/// test says why), so its median round trip is at least half of it.
#[test]
fn the_batch_wait_flag_holds_each_wait_for_a_batch() {
    let window = std::time::Duration::from_millis(20);
    let micros = window.as_micros().to_string();
    let ex = Example::start("kv", &["1", "--batch-wait", &micros]);
    let mut s = TcpStream::connect(ex.addr).expect("connect to the kv example");
    s.set_read_timeout(Some(PATIENCE)).expect("a read timeout");
    let mut trips: Vec<_> = (0..9)
        .map(|_| {
            let sent = std::time::Instant::now();
            s.write_all(b"PING\r\n").expect("send PING");
            let mut pong = [0u8; 7];
            s.read_exact(&mut pong).expect("read +PONG");
            assert_eq!(&pong, b"+PONG\r\n");
            sent.elapsed()
        })
        .collect();
    trips.sort();
    assert!(trips[4] >= window / 2, "median round trip {:?}", trips[4]);
    ex.stop();
}

/// Past `--max-memory`, writes get Redis's OOM error, reads still work,
/// and freeing memory lets writes in again.
#[test]
fn writes_past_max_memory_get_oom_and_nothing_grows() {
    let ex = Example::start("kv", &["2", "--max-memory", "64k"]);
    let mut s = TcpStream::connect(ex.addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let value = "v".repeat(1000);
    let mut stored = 0;
    let mut refused = None;
    for i in 0..200 {
        let key = format!("big:{i}");
        let set = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1000\r\n{value}\r\n",
            key.len()
        );
        s.write_all(set.as_bytes()).expect("send");
        let mut reply = [0u8; 5];
        s.read_exact(&mut reply).expect("reply");
        if &reply == b"+OK\r\n" {
            stored += 1;
            continue;
        }
        let mut rest = Vec::new();
        while !rest.ends_with(b"\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("error line");
            rest.push(b[0]);
        }
        let line = [&reply[..], &rest].concat();
        assert!(
            line.starts_with(b"-OOM "),
            "{}",
            String::from_utf8_lossy(&line)
        );
        refused = Some(i);
        break;
    }
    // Each shard holds 32 KiB: about 30 entries of ~1 KiB each in all.
    assert!(refused.is_some(), "200 KiB of values fit in 64 KiB?");
    assert!((20..=64).contains(&stored), "{stored} stored before OOM");
    // Reads still work; deleting makes room again.
    s.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nbig:0\r\n")
        .expect("send");
    let mut reply = vec![0u8; 1000 + 9];
    s.read_exact(&mut reply).expect("value");
    assert!(reply.starts_with(b"$1000\r\n"));
    let mut del = format!("*{}\r\n$3\r\nDEL\r\n", stored + 1);
    for i in 0..stored {
        let key = format!("big:{i}");
        del.push_str(&format!("${}\r\n{key}\r\n", key.len()));
    }
    s.write_all(del.as_bytes()).expect("send");
    let expected = format!(":{stored}\r\n");
    let mut reply = vec![0u8; expected.len()];
    s.read_exact(&mut reply).expect("count");
    assert_eq!(String::from_utf8_lossy(&reply), expected);
    s.write_all(b"*3\r\n$3\r\nSET\r\n$5\r\nagain\r\n$1\r\n1\r\n")
        .expect("send");
    let mut reply = [0u8; 5];
    s.read_exact(&mut reply).expect("reply");
    assert_eq!(&reply, b"+OK\r\n");
    ex.stop();
}

/// 50 clients pipeline `SET`s of 1 MiB values and never read a reply: the
/// server stores up to `--max-memory`, answers the rest with errors it
/// cannot send, stops reading, and its memory stays within the bound plus
/// what the engine lets each connection hold (a command being gathered, up
/// to the example's 4 MiB frame bound, and its output limit, 1 MiB).
#[test]
fn clients_that_never_read_cannot_grow_the_server_past_its_bounds() {
    let max_memory = 64 << 20;
    let ex = Example::start("kv", &["2", "--max-memory", "64m"]);
    let before = ex.resident_bytes();
    let value = vec![b'v'; 1 << 20];
    let addr = ex.addr;
    let clients: Vec<_> = (0..50)
        .map(|c| {
            let value = value.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_write_timeout(Some(std::time::Duration::from_secs(1)))
                    .expect("timeout");
                let mut written = 0usize;
                // At most 20 MiB each (1 GiB in all): far past the bound.
                for i in 0..20 {
                    let key = format!("c{c}:{i}");
                    let head = format!(
                        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                        key.len(),
                        value.len()
                    );
                    let sent = s
                        .write_all(head.as_bytes())
                        .and_then(|()| s.write_all(&value));
                    if sent.and_then(|()| s.write_all(b"\r\n")).is_err() {
                        break; // the server stopped reading
                    }
                    written += value.len();
                }
                (s, written)
            })
        })
        .collect();
    let held: Vec<(TcpStream, usize)> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let written: usize = held.iter().map(|(_, n)| n).sum();
    let grown = ex.resident_bytes().saturating_sub(before);
    eprintln!("{written} bytes written; the server grew by {grown}");
    let per_connection = (4 << 20) + (1 << 20);
    let bound = max_memory + 50 * per_connection;
    assert!(
        written > 2 * max_memory,
        "the clients wrote {written} bytes: not enough to test the bound"
    );
    assert!(
        grown <= bound as u64,
        "the server grew by {grown} bytes after {written} written; bound {bound}"
    );
    drop(held);
    ex.stop();
}

/// loadgen's resp dialect on the sharded store: every reply of a mixed
/// run is parsed and type-checked, with no redis tool needed; and
/// increments of one key from connections on both workers add up.
#[test]
fn loadgen_drives_the_store_with_every_reply_checked() {
    use std::sync::Arc;
    use std::time::Duration;

    use loadgen::cli::SizeRange;
    use loadgen::dialect::{KeyDist, KeySpace, Mix, Resp, RespCommand};
    use loadgen::progress::Live;
    use loadgen::tcp::{IoPath, TcpPlan, Workload};

    let ex = Example::start("kv", &["2"]);
    let plan = |mix: &str, keys: u64, requests: u64| TcpPlan {
        addr: ex.addr,
        workload: Workload::Dialect(Arc::new(Resp::new(
            Mix::parse(mix, RespCommand::named).expect("a mix"),
            KeySpace::new(keys, KeyDist::Uniform),
            (1, 200),
        ))),
        connections: 20,
        threads: 2,
        cpus: Vec::new(),
        duration: Duration::from_secs(30),
        warmup: Duration::ZERO,
        requests: Some(requests),
        size: SizeRange { lo: 1, hi: 200 },
        pipeline: 8,
        batch: false,
        rate: None,
        timeout: Duration::from_secs(5),
        interval: None,
        io: IoPath::choose(loadgen::cli::IoChoice::Auto).expect("an I/O path"),
        start_at: None,
        request_log: None,
    };
    let outcome = loadgen::tcp::run(
        &plan("get:4,set:4,del:1,ping:1", 1000, 20_000),
        &Live::default(),
        true,
    )
    .expect("a load run against kv");
    assert_eq!(outcome.fates.completed, 20_000);
    assert_eq!(outcome.errors.total(), 0, "{:?}", outcome.errors);
    // One counter, pipelined from 20 connections over both workers: the
    // increments of the connections on the other worker travel as messages.
    let outcome = loadgen::tcp::run(&plan("incr", 1, 5_000), &Live::default(), true)
        .expect("increments against kv");
    assert_eq!(
        (outcome.fates.completed, outcome.errors.total()),
        (5_000, 0)
    );
    let mut s = TcpStream::connect(ex.addr).expect("connect");
    s.write_all(b"GET counter:000000000000\r\n").expect("send");
    let mut reply = [0u8; 32];
    let n = s.read(&mut reply).expect("reply");
    assert_eq!(&reply[..n], b"$4\r\n5000\r\n");
    ex.stop();
}
