//! Interop with the standard web tools: loadgen against nginx, curl and wrk
//! against the engine's http service. Ignored by a plain `cargo test` (they
//! need `apt-get install nginx wrk curl`); CI installs the tools and runs
//! them with `cargo test -- --ignored`.

mod common;
mod nginx;

use std::process::Command;

use common::{loadgen_json, num, TestServer};
use nginx::{Nginx, FILES};
use protocols::http::body_byte;
use protocols::{Protocol, Transport};

fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("-v").output().is_ok();
    assert!(
        found,
        "{tool} is not installed: apt-get install nginx wrk curl"
    );
}

#[test]
#[ignore = "needs nginx (CI installs it)"]
fn loadgen_fetches_and_loads_nginx() {
    let nginx = Nginx::start(None).expect("nginx is installed");
    for (name, size) in FILES {
        let r = loadgen_json(&["--http", &nginx.url(name)]);
        assert_eq!(
            (num(&r, "status"), num(&r, "body_bytes")),
            (200.0, *size as f64),
            "{name}"
        );
    }
    let r = loadgen_json(&[
        "--http",
        &nginx.url("1k.bin"),
        "--connections",
        "20",
        "--pipeline",
        "2",
        "--requests",
        "5000",
    ]);
    assert_eq!(num(&r, "requests"), 5000.0);
    assert_eq!(
        num(&r, "errors.mismatch") + num(&r, "errors.status") + num(&r, "errors.closed"),
        0.0,
        "{r}"
    );
    // Every response's body, headers included, came back: 5000 x (1 KiB + head).
    assert!(num(&r, "bytes_received") > 5000.0 * 1024.0);
    let r = loadgen_json(&[
        "--http",
        &nginx.url("missing"),
        "--connections",
        "2",
        "--requests",
        "20",
    ]);
    assert_eq!(num(&r, "errors.status"), 20.0, "nginx's 404s are counted");
}

#[test]
#[ignore = "needs curl (CI installs it)"]
fn curl_reads_the_engines_bodies() {
    require("curl");
    let server = TestServer::start(&[(Transport::Tcp, Protocol::HTTP)]);
    for path in ["/bytes/1048576", "/chunked/1048576"] {
        let out = Command::new("curl")
            .args([
                "-s",
                "--fail",
                "--max-time",
                "20",
                &format!("http://{}{path}", server.addr(0)),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), 1 << 20, "{path}");
        assert!(
            out.stdout
                .iter()
                .enumerate()
                .all(|(i, &b)| b == body_byte(i as u64)),
            "{path}"
        );
    }
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}/nope", server.addr(0)),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    // HTTP/1.0, and two URLs on one keep-alive connection.
    let out = Command::new("curl")
        .args(["-s", "-0", &format!("http://{}/bytes/5", server.addr(0))])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"abcde");
    let base = format!("http://{}", server.addr(0));
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "%{num_connects}\n",
            &format!("{base}/bytes/3"),
            &format!("{base}/bytes/4"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "abc1\nabcd0\n",
        "the second URL reused the connection"
    );
}

#[test]
#[ignore = "needs wrk (CI installs it)"]
fn wrk_loads_the_engine_without_errors() {
    require("wrk");
    let server = TestServer::start(&[(Transport::Tcp, Protocol::HTTP)]);
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c20",
            "-d1s",
            &format!("http://{}/bytes/1024", server.addr(0)),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in {text}"));
    assert!(rate > 0.0);
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{text}"
    );
    // Keep-alive: wrk's requests rode a handful of connections (its 20, and
    // at most one it may open first), not one connection each.
    let totals = server.totals();
    assert!(
        totals.connections_accepted <= 21,
        "{} connections",
        totals.connections_accepted
    );
    assert!(totals.messages_in > 100 * totals.connections_accepted);
}

/// A server process on a free loopback port, killed on drop.
struct Daemon {
    child: std::process::Child,
    port: u16,
}

impl Daemon {
    /// Starts `args` (`{port}` replaced by a free port) and waits, at most
    /// 20 s, until it accepts connections.
    fn start(args: &[&str], install: &str) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} is not runnable ({e}): {install}", args[0]));
        let daemon = Daemon { child, port };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(daemon.addr()).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "{} never listened",
                args[0]
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        daemon
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends `request` and reads until the reply ends with `end` (or, for
    /// a RESP bulk string, `end` empty, until the length it declares).
    fn ask(&self, request: &[u8], end: &[u8]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr()).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(request).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        let whole = |reply: &[u8]| {
            if !end.is_empty() {
                return reply.ends_with(end);
            }
            let text = String::from_utf8_lossy(reply);
            let Some((head, _)) = text.split_once("\r\n") else {
                return false;
            };
            let len: usize = head[1..].parse().expect("a bulk length");
            reply.len() >= head.len() + 2 + len + 2
        };
        while !whole(&reply) {
            let n = s.read(&mut buf).expect("the reply");
            assert!(n > 0, "closed before the reply ended");
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// The value of `name` in a `name:value` or `STAT name value` listing.
    fn stat(listing: &str, name: &str) -> u64 {
        listing
            .lines()
            .find_map(|l| {
                let l = l.trim_start_matches("STAT ");
                let (k, v) = l.split_once([':', ' '])?;
                (k == name).then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in {listing}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs redis-server (CI installs it)"]
fn loadgen_drives_redis_server_with_every_reply_checked() {
    let redis = Daemon::start(
        &[
            "redis-server",
            "--port",
            "{port}",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        "apt-get install redis-server",
    );
    let before = Daemon::stat(
        &redis.ask(b"INFO stats\r\n", b""),
        "total_commands_processed",
    );
    let r = loadgen_json(&[
        "--tcp",
        &redis.addr(),
        "--protocol",
        "resp",
        "--mix",
        "get:4,set:4,incr:1,del:1,ping:1",
        "--size",
        "1..300",
        "--connections",
        "20",
        "--pipeline",
        "8",
        "--requests",
        "20000",
    ]);
    assert_eq!(num(&r, "completed"), 20000.0, "{r}");
    assert_eq!(
        num(&r, "errors.mismatch") + num(&r, "errors.status"),
        0.0,
        "{r}"
    );
    // The server counted exactly the commands loadgen says it made (and
    // the one INFO that asked).
    let after = Daemon::stat(
        &redis.ask(b"INFO stats\r\n", b""),
        "total_commands_processed",
    );
    assert_eq!(after - before, 20000 + 1);
    // Increments of one counter from 20 connections all land.
    let r = loadgen_json(&[
        "--tcp",
        &redis.addr(),
        "--protocol",
        "resp",
        "--mix",
        "incr",
        "--keys",
        "1",
        "--connections",
        "20",
        "--pipeline",
        "4",
        "--requests",
        "5000",
    ]);
    assert_eq!(num(&r, "completed"), 5000.0, "{r}");
    let counter = redis.ask(b"GET counter:000000000000\r\n", b"");
    // Earlier INCRs of the mix may have touched it too: at least 5000.
    let value: u64 = counter
        .lines()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(value >= 5000, "{counter}");
}

#[test]
#[ignore = "needs memcached (CI installs it)"]
fn loadgen_drives_memcached_with_every_reply_checked() {
    let memcached = Daemon::start(
        &[
            "memcached",
            "-l",
            "127.0.0.1",
            "-p",
            "{port}",
            "-U",
            "0",
            "-t",
            "1",
            "-u",
            "root",
        ],
        "apt-get install memcached",
    );
    let r = loadgen_json(&[
        "--tcp",
        &memcached.addr(),
        "--protocol",
        "memcache",
        "--mix",
        "set",
        "--keys",
        "500",
        "--size",
        "10..2000",
        "--requests",
        "10000",
        "--connections",
        "10",
        "--pipeline",
        "4",
    ]);
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.status")),
        (10000.0, 0.0),
        "{r}"
    );
    let r = loadgen_json(&[
        "--tcp",
        &memcached.addr(),
        "--protocol",
        "memcache",
        "--mix",
        "get:8,set:1,delete:1",
        "--keys",
        "500",
        "--key-dist",
        "zipf",
        "--requests",
        "20000",
        "--connections",
        "10",
        "--pipeline",
        "4",
    ]);
    assert_eq!(num(&r, "completed"), 20000.0, "{r}");
    assert_eq!(
        num(&r, "errors.mismatch") + num(&r, "errors.status"),
        0.0,
        "{r}"
    );
    let stats = memcached.ask(b"stats\r\n", b"END\r\n");
    let (gets, sets, deletes) = (
        Daemon::stat(&stats, "cmd_get"),
        Daemon::stat(&stats, "cmd_set"),
        Daemon::stat(&stats, "delete_hits") + Daemon::stat(&stats, "delete_misses"),
    );
    assert_eq!(gets + sets + deletes, 30000, "{stats}");
    // The gets found what the sets stored (most of 500 keys were set).
    assert!(Daemon::stat(&stats, "get_hits") > gets / 2, "{stats}");
}

#[test]
#[ignore = "needs nginx (CI installs it)"]
fn loadgen_posts_bodies_and_walks_targets_against_nginx() {
    let nginx = Nginx::start(None).expect("nginx is installed");
    let body = nginx.dir.join("body.json");
    std::fs::write(&body, vec![b'x'; 1000]).unwrap();
    let r = loadgen_json(&[
        "--http",
        &nginx.url("submit"),
        "--method",
        "POST",
        "--header",
        "Content-Type: application/json",
        "--body-file",
        body.to_str().unwrap(),
        "--connections",
        "4",
        "--pipeline",
        "2",
        "--requests",
        "2000",
    ]);
    assert_eq!(num(&r, "completed"), 2000.0, "{r}");
    assert_eq!(
        num(&r, "errors.status") + num(&r, "errors.mismatch"),
        0.0,
        "{r}"
    );
    // nginx's own log: 2000 POSTs to /submit, each answered 200 (nginx
    // answers before reading the body, then reads and discards it to keep
    // the connection: a body of the wrong length would break the next).
    let log = std::fs::read_to_string(nginx.dir.join("submit.log")).unwrap();
    let posts = log
        .lines()
        .filter(|l| l.starts_with("POST /submit ") && l.ends_with(" 200"));
    assert_eq!(posts.count(), 2000, "{log}");
    // The body arrives whole: nginx's WebDAV module stores a PUT's body.
    let r = loadgen_json(&[
        "--http",
        &nginx.url("upload/stored.json"),
        "--method",
        "PUT",
        "--body-file",
        body.to_str().unwrap(),
        "--connections",
        "1",
        "--requests",
        "20",
    ]);
    assert_eq!(num(&r, "completed"), 20.0, "{r}");
    let stored = std::fs::read(nginx.dir.join("www/upload/stored.json")).unwrap();
    assert_eq!(stored, std::fs::read(&body).unwrap());
    // A targets file: a GET of a file and a POST with its body, in turn.
    let targets = nginx.dir.join("targets.txt");
    std::fs::write(
        &targets,
        format!(
            "GET {}\n\nPOST {}\nContent-Type: application/json\n@body.json\n",
            nginx.url("1k.bin"),
            nginx.url("submit")
        ),
    )
    .unwrap();
    let r = loadgen_json(&[
        "--targets",
        targets.to_str().unwrap(),
        "--connections",
        "2",
        "--requests",
        "600",
    ]);
    assert_eq!(num(&r, "completed"), 600.0, "{r}");
    assert_eq!(
        num(&r, "errors.status") + num(&r, "errors.mismatch"),
        0.0,
        "{r}"
    );
    let log = std::fs::read_to_string(nginx.dir.join("submit.log")).unwrap();
    assert_eq!(
        log.lines().count(),
        2000 + 300,
        "every other request was the POST"
    );
}
