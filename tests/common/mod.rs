//! Shared helpers for the integration tests: start a real `ringcore`, find the
//! ports it bound, read its counters, and make reproducible test data.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for anything the server should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The CPUs each thread of process `pid` named `prefix...` may run on
/// (`Cpus_allowed_list`, such as `0-1`), and its main thread's.
pub fn thread_cpus(pid: u32, prefix: &str) -> (Vec<String>, String) {
    let allowed = |status: String| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .expect("Cpus_allowed_list")
    };
    let main = allowed(std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status"));
    let named = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            comm.starts_with(prefix)
                .then(|| std::fs::read_to_string(dir.join("status")).ok())?
        })
        .map(allowed)
        .collect();
    (named, main)
}

/// A `ringcore` process started for one test; killed when dropped.
pub struct Server {
    child: Option<Child>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// (transport, protocol) -> address, from the start-up lines.
    pub services: Vec<(String, String, SocketAddr)>,
    /// The metrics endpoint.
    pub metrics: SocketAddr,
}

/// Path of the server binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringcore")
}

impl Server {
    /// Starts `ringcore ARGS --metrics 127.0.0.1:0` and waits until it is serving.
    pub fn start(args: &[&str]) -> Server {
        let mut command = Command::new(binary());
        command.args(args).args(["--metrics", "127.0.0.1:0"]);
        Self::spawn(command)
    }

    /// Starts a prepared command (which must include `--metrics`).
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcore");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err_pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut server = Server {
            child: Some(child),
            lines,
            stderr,
            services: Vec::new(),
            metrics: "0.0.0.0:0".parse().unwrap(),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match server.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "ringcore did not report its metrics endpoint; stderr:\n{}",
                    server.stderr()
                ),
            };
            if let Some(rest) = line.strip_prefix("metrics http://") {
                server.metrics = rest.trim_end_matches("/metrics").parse().unwrap();
                return server;
            }
            // "tcp 127.0.0.1:65432 echo, 2 workers"
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() >= 3 && (words[0] == "tcp" || words[0] == "udp") {
                let protocol = words[2].trim_end_matches(',');
                server.services.push((
                    words[0].to_string(),
                    protocol.to_string(),
                    words[1].parse().unwrap(),
                ));
            }
        }
    }

    /// Waits for a stdout line starting with `prefix`; returns it.
    pub fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line starting with '{prefix}'; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// The address of the service `transport`/`protocol`.
    pub fn addr(&self, transport: &str, protocol: &str) -> SocketAddr {
        self.services
            .iter()
            .find(|(t, p, _)| t == transport && p == protocol)
            .map(|(_, _, a)| *a)
            .unwrap_or_else(|| panic!("no {transport} {protocol} service in {:?}", self.services))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the kernel says of each io_uring the server holds open: the
    /// fields of `/proc/PID/fdinfo/FD` (`SqThread`, `CqTail`, ...) for
    /// every descriptor that is a ring.
    pub fn ring_fdinfo(&self) -> Vec<HashMap<String, String>> {
        let pid = self.pid();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("listing the server's fds");
        let mut rings = Vec::new();
        for fd in fds.flatten() {
            let is_ring = std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[io_uring]");
            if !is_ring {
                continue;
            }
            let name = fd.file_name();
            let Ok(info) =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", name.to_string_lossy()))
            else {
                continue; // closed meanwhile
            };
            rings.push(
                info.lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect(),
            );
        }
        rings
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the server's stderr contains `needle`; returns all of it.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never said '{needle}':\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every metric line as `name{labels}` -> value.
    pub fn metrics(&self) -> HashMap<String, u64> {
        let mut stream = TcpStream::connect(self.metrics).expect("connect to metrics");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).expect("metrics body");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    /// The I/O path `/metrics` says serves (`ringcore_io_info{path=...} 1`):
    /// `io_uring`, `epoll`, `epoll-fallback`...; `None` if it names none.
    pub fn io_path(&self) -> Option<String> {
        let paths: Vec<String> = self
            .metrics()
            .into_iter()
            .filter(|(_, value)| *value == 1)
            .filter_map(|(key, _)| {
                let path = key.strip_prefix("ringcore_io_info{path=\"")?;
                Some(path.strip_suffix("\"}")?.to_string())
            })
            .collect();
        assert!(paths.len() <= 1, "more than one I/O path: {paths:?}");
        paths.into_iter().next()
    }

    /// The process-wide total of counter `name` (without the `ringcore_` prefix).
    pub fn counter(&self, name: &str) -> u64 {
        self.metrics()[&format!("ringcore_{name}")]
    }

    /// Counter `name` of worker `w`.
    pub fn worker_counter(&self, name: &str, w: usize) -> u64 {
        self.metrics()[&format!("ringcore_{name}{{worker=\"{w}\"}}")]
    }

    /// Waits until `check(counter)` holds, polling the metrics; returns the value.
    pub fn wait_counter(&self, name: &str, check: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.counter(name);
            if check(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "counter {name} stayed at {value}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the server in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the server has ever had, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
    }

    /// Waits for the server to exit; its status and the rest of its stdout.
    /// Returns the moment the process is reaped (a blocking wait, not a
    /// poll), so a test can check what is left of it right after.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            status
        });
        if rx.recv_timeout(PATIENCE).is_err() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            panic!("ringcore did not exit; stderr:\n{}", self.stderr());
        }
        let status = waiter.join().unwrap().unwrap();
        // Everything it printed: the reader thread forwards lines until the
        // pipe's end (which the exit brings), maybe after the exit is seen,
        // so read to the channel's close, not only what has arrived.
        let mut rest = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("ringcore's stdout stayed open after it exited")
                }
            }
        }
        (status, rest.join("\n"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ringcore ARGS` expecting it to fail; its exit code and stderr.
pub fn run_failing(args: &[&str]) -> (i32, String) {
    let output = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringcore");
    assert!(!output.status.success(), "ringcore {args:?} should fail");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reproducible payloads and sizes: loadgen's own generator.
#[allow(unused_imports)] // not every user of this module needs it
pub use loadgen::rng::Rng;

/// Connects with a bounded read/write timeout so a broken server fails the
/// test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// A connection whose receive window is a few KiB (SO_RCVBUF 4096 set
/// before connecting): the server's replies to it stall almost at once.
pub fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    socket.into()
}

/// A loopback UDP client whose every send is cut into `segment`-byte
/// datagrams (UDP_SEGMENT): a GSO train, as loadgen sends them.
pub fn gso_client(segment: usize) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    kernel_io::sockopt::set_int_option(
        &socket,
        kernel_io::sockopt::SOL_UDP,
        kernel_io::sockopt::UDP_SEGMENT,
        segment as libc::c_int,
    )
    .expect("UDP_SEGMENT");
    socket
}

/// Writes 1 MiB blocks until `limit` bytes are written or a write blocks for
/// a whole second (the server stopped reading); the bytes written.
pub fn write_until_stalled(stream: &mut TcpStream, limit: u64) -> u64 {
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    while written < limit {
        match stream.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    written
}

/// Moves the calling test's thread, and every process it starts from now
/// on, into a network namespace of its own with loopback up: fixed ports
/// (the chapter's) are then free whatever runs on the machine, and nothing
/// the test does is seen outside. libtest runs each test on a thread of its
/// own that ends with it. `Err` says why not (not root, say).
pub fn own_network_namespace() -> Result<(), String> {
    // SAFETY: unshare(2) moves only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "no network namespace of our own: {}",
            std::io::Error::last_os_error()
        ));
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if !up.success() {
        return Err("ip link set lo up failed".into());
    }
    Ok(())
}

/// Who holds TCP or UDP `port` on this machine, as far as /proc tells:
/// "pid 123 (ringcore)", or a plain description when it cannot tell.
pub fn port_holder(port: u16) -> String {
    let hex = format!(":{port:04X} ");
    let mut inodes = Vec::new();
    for table in [
        "/proc/net/tcp",
        "/proc/net/tcp6",
        "/proc/net/udp",
        "/proc/net/udp6",
    ] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields
                .get(1)
                .is_some_and(|local| format!("{local} ").contains(&hex))
            {
                if let Some(inode) = fields.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for entry in procs {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let fds = std::fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        for fd in fds {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            if inodes.iter().any(|i| target.to_string_lossy() == *i) {
                let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return format!("pid {pid} ({})", name.trim());
            }
        }
    }
    if inodes.is_empty() {
        "nothing that /proc shows".into()
    } else {
        "a process this user cannot see".into()
    }
}

pub mod pages;
mod seccomp;
pub mod skip;
#[allow(unused_imports)] // not every test binary uses it
pub use seccomp::{allow_only, deny_io_uring};
#[allow(unused_imports)] // not every test binary uses it
pub use skip::{skip, Lack};

/// Sends one UDP datagram to `to` (IPv4 loopback) that claims to come from
/// `from_port`, through a raw socket, as a spoofing attacker would. Needs
/// CAP_NET_RAW: `Err` says why it could not (the caller skips).
pub fn send_spoofed_udp(from_port: u16, to: SocketAddr, payload: &[u8]) -> Result<(), String> {
    send_spoofed_udp_from(SocketAddr::from(([127, 0, 0, 1], from_port)), to, payload)
}

/// Sends one UDP datagram to `to` that claims to come from `from` (both
/// IPv4), with an IP header of our own through a raw socket, as a spoofing
/// attacker would. Needs CAP_NET_RAW: `Err` says why it could not.
pub fn send_spoofed_udp_from(
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Result<(), String> {
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (from.ip(), to.ip()) else {
        return Err("spoofing is done over IPv4".into());
    };
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(format!(
            "no raw socket ({}): spoofing needs CAP_NET_RAW",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor just returned by socket(2), owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // IPPROTO_RAW: the IP header is ours; the kernel fills in its checksum
    // and total length (raw(7)). A zero UDP checksum means "none" over IPv4.
    let udp_len = 8 + payload.len();
    let mut packet = Vec::with_capacity(20 + udp_len);
    packet.extend_from_slice(&[
        0x45,
        0,
        0,
        0,
        0,
        0,
        0x40,
        0,
        64,
        libc::IPPROTO_UDP as u8,
        0,
        0,
    ]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `packet` and `addr` are live for the call, lengths match.
    let sent = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent != packet.len() as isize {
        return Err(format!("raw send: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
