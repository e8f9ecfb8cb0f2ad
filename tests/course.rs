//! The course pack's commands (`docs/course/*.md`) run as written, in a
//! quick mode (every duration cut to one second), so the pages cannot go
//! stale. Each page runs in a network namespace of the test's own where it
//! can have one (the pages use fixed ports); root-only commands (`sudo ...`)
//! run when the test is root, as in CI, and are skipped with a message
//! otherwise; so is a command whose program is not installed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{own_network_namespace, port_holder, Lack, PATIENCE};

/// The chapter's ports, which a bare `ringcore` binds.
const CHAPTER_PORTS: [u16; 5] = [65432, 12345, 8888, 5555, 8080];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `ringcore` and `loadgen`, and its `examples`
/// (`kv`): built fresh, as the course's set-up says.
fn binaries() -> PathBuf {
    let ringcore = PathBuf::from(common::binary());
    let dir = ringcore.parent().unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "loadgen", "--bin", "loadgen"])
        .args(["-p", "ringcore", "--examples"])
        .args((!cfg!(debug_assertions)).then_some("--release"))
        .current_dir(root())
        .status()
        .expect("build loadgen and the examples");
    assert!(status.success(), "cargo build loadgen and the examples");
    dir
}

/// The commands of a page: every line of its ```sh blocks.
fn commands(page: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in page.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            inside = !inside && trimmed == "```sh";
            continue;
        }
        if inside && !trimmed.is_empty() && !trimmed.starts_with('#') {
            out.push(trimmed.to_string());
        }
    }
    out
}

/// The command in quick mode: every `--duration` one second, and a lab
/// without one given one.
fn quick(command: &str) -> String {
    let mut words: Vec<String> = command.split_whitespace().map(String::from).collect();
    let mut had = false;
    for i in 0..words.len() {
        if words[i] == "--duration" && i + 1 < words.len() {
            words[i + 1] = "1s".into();
            had = true;
        }
    }
    if !had && words.iter().any(|w| w == "lab") {
        words.extend(["--duration".into(), "1s".into()]);
    }
    words.join(" ")
}

/// Ports a page's commands bind or talk to, for the check without a
/// namespace of our own.
fn ports(commands: &[String]) -> Vec<u16> {
    let mut ports = Vec::new();
    for c in commands {
        for word in c.split([' ', '=', '/']) {
            if let Some(port) = word.rsplit(':').next().and_then(|p| p.parse().ok()) {
                if word.contains(':') {
                    ports.push(port);
                }
            }
        }
        if c.starts_with("ringcore") && !c.contains("--serve") {
            ports.extend(CHAPTER_PORTS);
        }
    }
    ports
}

/// A server started in the background; stopped (SIGTERM) when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn shell(command: &str, path: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-c", command])
        .env("PATH", path)
        .current_dir(root())
        .stdin(Stdio::null());
    c
}

/// Runs one page's commands in order; what was run.
fn run_page(page: &Path, path: &str, is_root: bool) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut servers = Vec::new();
    let mut ran = Vec::new();
    let scratch = std::env::temp_dir().join(format!("ringcore-course-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    for command in commands(&text) {
        let mut command = quick(&command);
        if let Some(rest) = command.strip_prefix("sudo ") {
            if !is_root {
                common::skip(Lack::Root, format!("needs root: {command}"));
                continue;
            }
            command = rest.to_string();
        }
        let program = command.split_whitespace().next().unwrap().to_string();
        let found = Command::new("bash")
            .args(["-c", &format!("command -v {program}")])
            .env("PATH", path)
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            common::skip(
                Lack::Program("a course command's program"),
                format!("{program} is not installed: {command}"),
            );
            continue;
        }
        // Files a command writes (plots) go to a scratch directory.
        let command = command.replace(" sweep.svg", &format!(" {}/sweep.svg", scratch.display()));
        let command = command.replace(
            " fairness.svg",
            &format!(" {}/fairness.svg", scratch.display()),
        );
        if let Some(server) = command.strip_suffix('&') {
            let mut child = shell(server.trim(), path)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a server");
            // Ready once it has printed how it serves: ringcore's "...; up
            // to N connections", or an engine server's "tcp ADDR NAME".
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.contains("; up to ") || line.starts_with("tcp ") {
                        let _ = tx.send(());
                    }
                }
            });
            rx.recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("{}: `{server}` did not start", page.display()));
            servers.push(Background(child));
        } else {
            let out = shell(&command, path).output().expect("run a command");
            assert!(
                out.status.success(),
                "{}: `{command}` failed:\n{}\n{}",
                page.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ran.push(command);
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&scratch);
    ran
}

#[test]
fn every_course_command_runs_as_written() {
    let dir = root().join("docs/course");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 5, "the course has its labs");
    let bin = binaries();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        bin.join("examples").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    // One page after another, in a namespace of this thread's own: fixed
    // ports, and a server the user runs cannot interfere.
    let own = own_network_namespace();
    let mut ran = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        if let Err(why) = &own {
            let busy = ports(&commands(&text))
                .into_iter()
                .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_err());
            if let Some(port) = busy {
                common::skip(
                    Lack::Port,
                    format!(
                        "{}: port {port} is held by {} and {why}",
                        page.display(),
                        port_holder(port)
                    ),
                );
                continue;
            }
        }
        ran += run_page(page, &path, is_root).len();
    }
    println!("ran {ran} course commands");
    // Every page's commands, wherever the pages could run (the skips above
    // say why not, and fail under CI): the count of a full run, less the
    // root-only commands when not root.
    let expected: usize = pages
        .iter()
        .map(|p| commands(&std::fs::read_to_string(p).unwrap()).len())
        .sum();
    let root_only: usize = pages
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            commands(&text)
                .iter()
                .filter(|c| c.starts_with("sudo "))
                .count()
        })
        .sum();
    if own.is_ok() {
        let least = if is_root {
            expected
        } else {
            expected - root_only
        };
        assert!(ran >= least, "ran {ran} of {least} commands");
    }
}

#[test]
fn quick_mode_cuts_durations_and_gives_labs_one() {
    assert_eq!(
        quick("loadgen --udp --duration 5s"),
        "loadgen --udp --duration 1s"
    );
    assert_eq!(
        quick("sudo loadgen lab --with-tcp --plot f.svg"),
        "sudo loadgen lab --with-tcp --plot f.svg --duration 1s"
    );
    assert_eq!(
        commands("x\n```sh\na\n# no\nb &\n```\n```text\nc\n```\n"),
        ["a", "b &"]
    );
    assert_eq!(
        ports(&["ringcore --serve tcp:7101=echo --metrics 127.0.0.1:9101 &".into()]),
        [7101, 9101]
    );
}
