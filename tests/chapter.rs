//! The chapter's own Python clients against `ringcore` started with no flags,
//! on the chapter's ports. Needs python3 (skipped, visibly, without it).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{allow_only, binary, deny_io_uring, own_network_namespace, port_holder, Lack, Server};

/// The chapter's ports, which this test must use.
const CHAPTER_PORTS: [u16; 5] = [65432, 12345, 8888, 5555, 8080];

fn run_client(script: &str, input: &str) -> String {
    let path = format!("{}/tests/chapter/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_chapters_clients_work_unchanged_against_the_defaults() {
    if let Some(server) = start_on_the_chapters_ports(|_| {}) {
        check_the_chapters_clients(&server);
        assert_eq!(
            server.io_path().as_deref(),
            Some("io_uring"),
            "this machine has io_uring, and the default uses it"
        );
    }
}

/// Where a container's seccomp profile (or the sysctl) denies io_uring, the
/// defaults still serve the chapter's clients, through epoll, and say so.
#[test]
fn without_io_uring_the_defaults_serve_the_chapter_through_epoll() {
    let Some(server) = start_on_the_chapters_ports(|command| deny_io_uring(command, libc::EPERM))
    else {
        return;
    };
    let stderr = server.wait_stderr("io_uring is unavailable, serving with epoll instead");
    assert!(stderr.contains("seccomp"), "{stderr}");
    check_the_chapters_clients(&server);
    assert_eq!(server.io_path().as_deref(), Some("epoll-fallback"));
}

/// The seccomp profile the README gives for containers
/// (`deploy/docker/seccomp-ringcore.json`) lets the defaults serve the
/// chapter through io_uring: applied here as the container runtime would
/// (an allow-list, everything else EPERM), where no runtime is at hand.
#[test]
fn the_container_seccomp_profile_serves_the_chapter_through_io_uring() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/docker/seccomp-ringcore.json"
    );
    let profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the profile is JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO", "an allow-list");
    let names: Vec<String> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().unwrap().iter())
        .map(|name| name.as_str().unwrap().to_string())
        .collect();
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(names.iter().any(|n| n == call), "{call} is allowed");
    }
    let Some(server) = start_on_the_chapters_ports(|command| {
        allow_only(command, &names).expect("every name in the profile is a syscall");
    }) else {
        return;
    };
    check_the_chapters_clients(&server);
    assert_eq!(
        server.io_path().as_deref(),
        Some("io_uring"),
        "stderr: {}",
        server.stderr()
    );
    assert!(
        !server.stderr().contains("unavailable"),
        "{}",
        server.stderr()
    );
}

/// Starts `ringcore` with no flags but `--metrics` (prepared by `prepare`)
/// on the chapter's ports, in a network namespace of this test thread's
/// own when it can have one; `None` (with a message) when the test must
/// skip.
fn start_on_the_chapters_ports(prepare: impl FnOnce(&mut Command)) -> Option<Server> {
    if Command::new("python3").arg("--version").output().is_err() {
        common::skip(
            Lack::Program("python3"),
            "python3 is not installed, the chapter's clients cannot run",
        );
        return None;
    }
    // The chapter's fixed ports, in a network namespace of the test's own:
    // a server the user is running on them (`cargo run --release`) cannot
    // make this test fail. Without a namespace, the test runs on the
    // machine's ports if they are free, and skips naming the holder if not.
    if let Err(why) = own_network_namespace() {
        for port in CHAPTER_PORTS {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
                || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
            {
                common::skip(
                    Lack::Port,
                    format!("port {port} is held by {} and {why}", port_holder(port)),
                );
                return None;
            }
        }
    }
    // No --serve: the chapter's default ports.
    let mut command = Command::new(binary());
    command.args(["--metrics", "127.0.0.1:0"]);
    prepare(&mut command);
    Some(Server::spawn(command))
}

/// The chapter's clients, unchanged, against a server on its ports.
fn check_the_chapters_clients(server: &Server) {
    let ports: Vec<String> = server
        .services
        .iter()
        .map(|(t, p, a)| format!("{t} {} {p}", a.port()))
        .collect();
    assert_eq!(
        ports,
        [
            "tcp 65432 echo",
            "udp 65432 echo",
            "tcp 12345 reverse",
            "udp 8888 ok",
            "tcp 5555 bot",
            "udp 5555 bot",
            "tcp 8080 http"
        ]
    );

    assert_eq!(
        run_client("tcp_echo_client.py", ""),
        "Received b'Hello, world'\n"
    );

    let transcript = run_client("reverse_client.py", "y\nn\n");
    assert_eq!(
        transcript
            .matches("Received from the server : ! reve esruoc tseb eht si SNS")
            .count(),
        2,
        "{transcript}"
    );

    let transcript = run_client("udp_client.py", "hello\n\nbye\n");
    assert!(
        transcript.contains("Server reply : OK...hello"),
        "{transcript}"
    );
    assert!(
        transcript.contains("Server reply : OK...\n"),
        "the empty message is answered: {transcript}"
    );
    assert!(
        transcript.contains("Server reply : OK...bye"),
        "and the server is still up: {transcript}"
    );
}

#[test]
fn cargo_run_starts_the_server() {
    // The workspace builds two binaries (ringcore and loadgen); the README's
    // `cargo run --release` must pick the server.
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let package = &manifest[manifest.find("[package]").expect("a [package] table")..];
    let package = &package[..package[1..].find("\n[").map_or(package.len(), |i| i + 1)];
    assert!(
        package.contains("default-run = \"ringcore\""),
        "the root package names its default binary"
    );
}

/// The chapter's UDP client, run by a person: lines go in as typed, and
/// each answer is read from its output before the next line is typed.
struct Person {
    child: std::process::Child,
    output: std::sync::mpsc::Receiver<u8>,
    seen: String,
}

impl Person {
    fn start(script: &str) -> Person {
        let path = format!("{}/tests/chapter/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg("-u") // unbuffered, as at a terminal
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut byte = [0u8; 1];
            while stdout.read_exact(&mut byte).is_ok() && tx.send(byte[0]).is_ok() {}
        });
        let mut person = Person {
            child,
            output,
            seen: String::new(),
        };
        person.read_until_prompt();
        person
    }

    /// Everything printed up to the client's next `Enter message to send`.
    fn read_until_prompt(&mut self) -> String {
        const PROMPT: &str = "Enter message to send";
        let deadline = std::time::Instant::now() + common::PATIENCE;
        let start = self.seen.len();
        while !self.seen[start..].contains(PROMPT) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let byte = self.output.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no prompt from the client; it printed:\n{}", self.seen)
            });
            self.seen.push(byte as char);
        }
        self.seen[start..].replace(PROMPT, "")
    }

    /// Types `line` and returns the reply the client printed.
    fn say(&mut self, line: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        let printed = self.read_until_prompt();
        printed
            .strip_prefix("Server reply : ")
            .unwrap_or_else(|| panic!("no reply to {line:?}: {printed:?}"))
            .to_string()
    }
}

impl Drop for Person {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_person_at_the_chapters_udp_client_can_talk_to_the_bot() {
    // The chapter's UDP client sends to port 8888: the bot serves there.
    let Some(server) = start_on_the_chapters_ports(|c| {
        c.args(["--serve", "udp:8888=bot"]);
    }) else {
        return;
    };
    assert_eq!(server.addr("udp", "bot").port(), 8888);
    let mut person = Person::start("udp_client.py");
    // The first line typed gets an answer that says what to do next.
    let first = person.say("hello");
    let code = first
        .trim_end()
        .strip_prefix("send ")
        .unwrap_or_else(|| panic!("told what to send: {first:?}"))
        .to_string();
    assert_eq!(code.len(), 6, "{first:?}");
    // Typing it (as the prompt shows, "send" included) starts the chat.
    let greeting = person.say(&format!("send {code}"));
    assert!(greeting.starts_with("Hello! I'm Rita"), "{greeting}");
    assert!(greeting.contains("1) No connection at all"), "{greeting}");
    // The whole conversation, to its end.
    assert!(person
        .say("1")
        .contains("Are the lights on your router on?"));
    assert!(person.say("no").contains('?'));
    let end = person.say("quit");
    assert!(end.starts_with("Goodbye!"), "{end}");
}
