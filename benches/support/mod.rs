//! What the end-to-end benchmarks share: the chapter's thread-per-connection
//! echo server as a baseline process, pinning, and summary statistics.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

/// The argument that turns a bench executable into the baseline server.
pub const BASELINE_ARG: &str = "--baseline-echo-server";

/// If this process was started as the baseline server, serve forever.
/// Call first thing in `main`.
pub fn maybe_run_baseline() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == BASELINE_ARG) {
        let cpu: usize = args[i + 1].parse().expect("baseline cpu");
        pin_to(cpu);
        baseline_echo_server();
    }
}

/// The chapter's model (figure 8.9): an accept loop and one blocking thread
/// per connection, echoing what it reads.
fn baseline_echo_server() -> ! {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind baseline");
    println!("{}", listener.local_addr().expect("local addr"));
    std::io::stdout().flush().expect("flush");
    loop {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// A baseline server process pinned to `cpu`; killed when dropped.
pub struct Baseline {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Baseline {
    /// Starts this executable again as the baseline server.
    pub fn start(cpu: usize) -> Baseline {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .args([BASELINE_ARG, &cpu.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn baseline");
        let mut line = String::new();
        let mut out = child.stdout.take().expect("stdout");
        let mut byte = [0u8; 1];
        while out.read(&mut byte).expect("read baseline address") == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        Baseline {
            child,
            addr: line.trim().parse().expect("baseline address"),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins the calling thread (and threads it starts later) to `cpu`.
pub fn pin_to(cpu: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        eprintln!("warning: could not pin to CPU {cpu}");
    }
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Median, min and max of `values`.
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

/// Reads `--name VALUE` from the command line, ignoring cargo's own flags.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// User and system CPU seconds `pid` has used so far, apart.
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |i: usize| fields[i].parse::<u64>().expect("ticks") as f64 / hz;
    (ticks(11), ticks(12))
}

/// Builds the loadgen binary (release) and returns its path, next to this
/// bench's own target directory.
pub fn loadgen_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "loadgen"])
        .status()
        .expect("run cargo build -p loadgen");
    assert!(status.success(), "building loadgen failed");
    let exe = std::env::current_exe().expect("current exe");
    // target/release/deps/<bench> -> target/release/loadgen
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("loadgen"))
        .expect("target directory")
}

/// Builds the monoio echo peer (`peers/monoio-echo`, a workspace of its
/// own so the main build never compiles monoio) and returns its path.
pub fn monoio_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join("peers/monoio-echo/Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .expect("run cargo build for peers/monoio-echo");
    assert!(status.success(), "building the monoio peer failed");
    root.join("peers/monoio-echo/target/release/monoio-echo")
}

/// A field of a JSON object printed by `loadgen --json`, found by name.
pub fn json_number(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Runs loadgen's TCP closed loop (pinned to CPU 1) for `seconds` against
/// `addr`; its `--json` result.
pub fn loadgen_tcp(
    loadgen: &std::path::Path,
    addr: SocketAddr,
    connections: usize,
    size: usize,
    seconds: f64,
) -> String {
    let out = Command::new(loadgen)
        .args([
            "--tcp",
            &addr.to_string(),
            "--connections",
            &connections.to_string(),
            "--size",
            &size.to_string(),
        ])
        .args([
            "--duration",
            &seconds.to_string(),
            "--cpus",
            "1",
            "--json",
            "--quiet",
        ])
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Waits (20 s at most) until something accepts TCP connections on the
/// loopback `port`.
pub fn wait_until_listening(port: u16) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "nothing listens on {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
