//! Bad input and a hostile environment: clear errors, non-zero exits, no panics.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, connect, deny_io_uring, run_failing, Server};

#[test]
fn a_port_in_use_is_named_and_fails_startup() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let (code, stderr) = run_failing(&["--serve", &format!("tcp:{port}=echo")]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("tcp port {port}")), "{stderr}");
    assert!(
        stderr.contains("already in use") && stderr.contains("echo"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_second_ringcore_on_the_same_port_is_refused() {
    // SO_REUSEPORT would otherwise let two servers share the port silently.
    let first = Server::start(&["--serve", "udp:0=echo"]);
    let port = first.addr("udp", "echo").port();
    let (code, stderr) = run_failing(&["--serve", &format!("udp:{port}=echo")]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("udp port {port}")) && stderr.contains("already in use"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_get_clear_messages() {
    let cases: &[(&[&str], &str)] = &[
        (&["--serve", "udp:9=reverse"], "not served over udp"),
        (&["--serve", "tcp:70000=echo"], "port"),
        (&["--serve", "tcp:9=gopher"], "unknown protocol 'gopher'"),
        (&["--threads", "0"], "at least 1"),
        (&["--cpus", "4096"], "not available"),
        (&["--output-limit", "lots"], "not a size"),
        (&["--shutdown-deadline", "soon"], "not a duration"),
        (&["--bot-cookie-period", "0"], "--bot-cookie-period must be above zero"),
        (&["--buffers", "300"], "power of two"),
        (&["--memory-limit", "lots"], "not a size"),
        // Found in review: twice this limit overflowed (a panic in debug builds).
        (&["--output-limit", "8589934592G"], "under twice the output limit"),
        (&["--idle-timeout", "soon"], "not a duration"),
        (&["--idle-timeout", "0"], "idle timeout must be above zero (or off)"),
        (
            &["--threads", "2", "--memory-limit", "3M"],
            "memory limit 3M leaves each of 2 workers 1536K, under twice the output limit (1M); raise --memory-limit to at least 4M",
        ),
        (&["--max-connections", "100000000"], "RLIMIT_NOFILE"),
        (
            &["--io", "epoll", "--sqpoll"],
            "--sqpoll tunes the io_uring engine",
        ),
        (
            &["--io", "tokio", "--batch-wait", "100us"],
            "--batch-wait tunes the io_uring engine",
        ),
        (&["--batch-wait", "0"], "between 1us and 1s"),
        (&["--batch-wait", "2s"], "between 1us and 1s"),
        (
            &[
                "--serve",
                "tcp:0=echo",
                "--serve",
                "udp:1=ok",
                "--serve",
                "udp:1=echo",
            ],
            "configured twice",
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run_failing(args);
        assert!(code == 1 || code == 2, "{args:?}: exit {code}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected '{expected}' in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Runs `ringcore ARGS --serve tcp:0=echo` with io_uring_setup failing
/// with `errno`, as a container runtime's seccomp profile would.
fn run_with_io_uring_denied(args: &[&str], errno: i32) -> (Option<i32>, String) {
    let mut command = Command::new(binary());
    command
        .args(args)
        .args(["--serve", "tcp:0=echo"])
        .stdin(Stdio::null());
    deny_io_uring(&mut command, errno);
    let output = command.output().expect("run ringcore under seccomp");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// With no --io flag (auto), a process denied io_uring serves through
/// epoll and says why, on stderr, on its start-up line and in /metrics.
#[test]
fn io_uring_blocked_by_seccomp_falls_back_to_epoll() {
    let mut command = Command::new(binary());
    command.args(["--serve", "tcp:0=echo", "--metrics", "127.0.0.1:0"]);
    deny_io_uring(&mut command, libc::EPERM);
    let server = Server::spawn(command);
    let stderr = server.wait_stderr("io_uring is unavailable, serving with epoll instead");
    assert!(stderr.contains("seccomp"), "the cause is named: {stderr}");
    let mut c = connect(server.services[0].2);
    c.write_all(b"through epoll").unwrap();
    let mut back = [0u8; 13];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"through epoll");
    assert_eq!(server.io_path().as_deref(), Some("epoll-fallback"));
}

#[test]
fn io_uring_blocked_by_seccomp_is_explained_when_asked_for() {
    let (code, stderr) = run_with_io_uring_denied(&["--io", "uring"], libc::EPERM);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("io_uring is unavailable") && stderr.contains("seccomp"),
        "{stderr}"
    );
    let (code, stderr) = run_with_io_uring_denied(&["--io", "uring"], libc::ENOSYS);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ENOSYS") && stderr.contains("6.0"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn set_nofile(pid: u32, limit: u64) {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: 20_000.max(limit),
    };
    // SAFETY: prlimit on our own child; `new` is valid, no old value requested.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn emfile_keeps_serving_open_connections_and_accepts_again_later() {
    // io_uring's accept reads RLIMIT_NOFILE when it is armed, so the limit is
    // lowered while accepting is paused at --max-connections, and a close
    // makes the worker arm a fresh accept under it.
    let server = Server::start(&[
        "--serve",
        "tcp:0=echo",
        "--threads",
        "1",
        "--max-connections",
        "4",
    ]);
    let addr = server.addr("tcp", "echo");
    let mut open: Vec<_> = (0..4).map(|_| connect(addr)).collect();
    server.wait_counter("connections_accepted", |n| n == 4);
    // Only stdio fits: every new descriptor fails with EMFILE. (The metrics
    // endpoint needs one too, so the server is watched from /proc meanwhile.)
    set_nofile(server.pid(), 3);
    drop(open.pop());
    // These complete the TCP handshake in the backlog but cannot be accepted.
    let mut waiting: Vec<_> = (0..2).map(|_| connect(addr)).collect();
    for (i, s) in open.iter_mut().enumerate() {
        let message = format!("still served {i}");
        s.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0u8; message.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes());
    }
    // While EMFILE persists the worker retries on a timer; it does not spin.
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = cpu_ticks(server.pid());
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let busy = (cpu_ticks(server.pid()) - before) as f64
        / ticks_per_second
        / start.elapsed().as_secs_f64();
    assert!(
        busy < 0.25,
        "the server used {:.0}% of a CPU while accept kept failing",
        busy * 100.0
    );
    // Room again: the first waiting connection is accepted and served...
    set_nofile(server.pid(), 20_000);
    let exchange = |s: &mut std::net::TcpStream| {
        s.write_all(b"late").unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"late");
    };
    exchange(&mut waiting[0]);
    // ...and the second once a slot under --max-connections frees up.
    drop(open.pop());
    exchange(&mut waiting[1]);
    assert_eq!(server.counter("connections_accepted"), 6);
    assert!(
        server.counter("accept_errors") >= 1,
        "the failed accepts are counted"
    );
}

#[test]
fn permission_denied_on_a_low_port_is_explained() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        // An unprivileged run meets the error directly.
        let (code, stderr) = run_failing(&["--serve", "tcp:1=echo"]);
        assert_eq!(code, 1);
        assert!(
            stderr.contains("permission denied") && stderr.contains("1024"),
            "{stderr}"
        );
        return;
    }
    // As root, run the server as nobody, as a user would.
    let mut command = Command::new(binary());
    command.args(["--serve", "tcp:1=echo"]).stdin(Stdio::null());
    // SAFETY: between fork and exec the child only drops its privileges.
    unsafe {
        command.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().expect("run ringcore as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("permission denied binding tcp 127.0.0.1:1") && stderr.contains("echo"),
        "{stderr}"
    );
}
