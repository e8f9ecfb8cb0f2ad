//! Runs the examples in `examples/` as a user does: a fresh build, a
//! free loopback port, SIGTERM to stop. Shared by the tests that drive them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long anything the example should do promptly may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// An example started on a free loopback port; killed if still running
/// when dropped.
pub struct Example {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Example {
    /// Starts `target/<profile>/examples/NAME 127.0.0.1:0 EXTRA...` and
    /// reads the address it bound from its first line.
    pub fn start(name: &str, extra: &[&str]) -> Example {
        let path = examples_dir().join(name);
        let mut child = Command::new(&path)
            .arg("127.0.0.1:0")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        // "tcp 127.0.0.1:PORT NAME"
        let addr = line
            .split_whitespace()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name} printed no address: {line:?}"));
        Example { child, addr }
    }

    /// Its resident memory now, from `/proc` (bytes).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the example's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals our own child, which we have not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "the example exited with {status}");
                return;
            }
            assert!(started.elapsed() < PATIENCE, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/examples`, with every example freshly built: a
/// `cargo test` that runs only this file does not build them, and a stale
/// binary would test old code.
pub fn examples_dir() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--examples"])
            .args((!cfg!(debug_assertions)).then_some("--release"))
            .status()
            .expect("running cargo build --examples");
        assert!(status.success(), "cargo build --examples: {status}");
        // Integration tests run from target/<profile>/deps.
        let exe = std::env::current_exe().expect("test binary path");
        let profile = exe.parent().and_then(|d| d.parent()).expect("target dir");
        profile.join("examples")
    })
}

/// Runs a tool from Debian's redis-tools, failing with what it printed.
pub fn redis_tool(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} not runnable ({e}): apt-get install redis-tools"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
