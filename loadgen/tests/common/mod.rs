//! Helpers for loadgen's tests: the real engine started in-process on
//! loopback, and the loadgen binary run with `--json`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig, Handler, ServiceConfig};

#[path = "../../../tests/common/skip.rs"]
pub mod skip;
use protocols::{Options, Protocol, Transport};
#[allow(unused_imports)] // not every test binary uses it
pub use skip::{skip, Lack};

/// A ringcore engine serving on 127.0.0.1 ephemeral ports; stopped on drop.
pub struct TestServer {
    engine: Option<Engine>,
}

impl TestServer {
    /// Starts one worker serving `services`.
    pub fn start(services: &[(Transport, Protocol)]) -> TestServer {
        let services = services
            .iter()
            .map(|&(transport, protocol)| ServiceConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                protocol: protocol.name().to_string(),
                handler: match transport {
                    Transport::Tcp => Handler::Stream(Arc::new(move |_| {
                        protocol.stream_session(&Options::default()).unwrap()
                    })),
                    Transport::Udp => Handler::Datagram(Arc::new(move || {
                        protocol.datagram_handler(&Options::default()).unwrap()
                    })),
                },
            })
            .collect();
        let engine = Engine::start(EngineConfig {
            services,
            cpus: vec![0],
            ..EngineConfig::default()
        })
        .expect("start the engine");
        TestServer {
            engine: Some(engine),
        }
    }

    /// The address of the `i`-th service.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.engine.as_ref().unwrap().services()[i].addr
    }

    /// The engine's summed counters.
    pub fn totals(&self) -> engine::StatsSnapshot {
        let stats = self.engine.as_ref().unwrap().stats();
        engine::StatsSnapshot::total(&stats.iter().map(|s| s.snapshot()).collect::<Vec<_>>())
    }
}

impl Drop for TestServer {
    /// Stops the engine and fails the test if any worker failed: a worker
    /// error must not pass unseen behind a test that checked only its
    /// client. (Not while the test is already failing: its own panic says
    /// more.)
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown_handle().shutdown();
            let joined = engine.join();
            if !std::thread::panicking() {
                if let Err(e) = joined {
                    panic!("the engine under test failed: {e}");
                }
            }
        }
    }
}

/// Runs `loadgen ARGS --quiet`; its output.
pub fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("run loadgen")
}

/// Runs `loadgen ARGS --quiet --json`, expecting success; the parsed report.
pub fn loadgen_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = loadgen(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Field `path` (dot separated) of a JSON report as u64.
pub fn num(v: &serde_json::Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path} in {v}"))
}

/// Runs `loadgen ARGS` expecting a failure whose stderr names `expected`.
pub fn assert_fails_with(args: &[&str], expected: &str) {
    let out = loadgen(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected '{expected}' in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

/// An echo server with a thread per connection that can be made slow on
/// purpose: it sleeps `per_read` before answering each read, and, from
/// `stall_after` after the first request arrives, answers nothing for
/// `stall_for` (every connection waits out the same window). The window
/// it really kept is readable afterwards, so a test compares loadgen's
/// figures with what theory predicts for that stall.
pub struct SlowEcho {
    addr: SocketAddr,
    window: Arc<std::sync::Mutex<Option<(Instant, Instant)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// How a [`SlowEcho`] misbehaves.
#[derive(Clone, Copy)]
pub struct Slowness {
    /// Sleep this long before answering each read.
    pub per_read: Duration,
    /// Stall this long after the first request arrives...
    pub stall_after: Duration,
    /// ...for this long (zero: never).
    pub stall_for: Duration,
}

impl SlowEcho {
    /// Starts the server on an ephemeral loopback port.
    pub fn start(slowness: Slowness) -> SlowEcho {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let window = Arc::new(std::sync::Mutex::new(None::<(Instant, Instant)>));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, s) = (window.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let w = w.clone();
                std::thread::spawn(move || serve_slowly(stream, slowness, &w));
            }
        });
        SlowEcho { addr, window, stop }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stall window it kept (start, end), once the first request came.
    pub fn window(&self) -> Option<(Instant, Instant)> {
        *self.window.lock().unwrap()
    }
}

impl Drop for SlowEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve_slowly(
    mut stream: std::net::TcpStream,
    slowness: Slowness,
    window: &std::sync::Mutex<Option<(Instant, Instant)>>,
) {
    use std::io::{Read, Write};
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (from, until) = *window.lock().unwrap().get_or_insert_with(|| {
            let from = Instant::now() + slowness.stall_after;
            (from, from + slowness.stall_for)
        });
        let now = Instant::now();
        if now >= from && now < until {
            std::thread::sleep(until - now);
        }
        if !slowness.per_read.is_zero() {
            std::thread::sleep(slowness.per_read);
        }
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

#[path = "../../../tests/common/seccomp.rs"]
mod seccomp;
#[allow(unused_imports)] // not every test binary uses it
pub use seccomp::deny_io_uring;

/// A path named `name` in this test process's own temporary directory
/// (created): test binaries run as separate processes, so their files
/// never meet.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcore-loadgen-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir.join(name)
}
