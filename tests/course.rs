//! The course pack's commands (`docs/course/*.md`) run as written, in a
//! quick mode (every duration cut to one second), so the pages cannot go
//! stale. Each page runs in a network namespace of the test's own where it
//! can have one (the pages use fixed ports); root-only commands (`sudo ...`)
//! run when the test is root, as in CI, and are skipped with a message
//! otherwise; so is a command whose program is not installed.

mod common;

use std::path::{Path, PathBuf};

use common::pages::{binaries, commands, installed, root, run, search_path, start_server};
use common::{own_network_namespace, port_holder, Lack};

/// The chapter's ports, which a bare `ringcore` binds.
const CHAPTER_PORTS: [u16; 5] = [65432, 12345, 8888, 5555, 8080];

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
        if !installed(&program, path) {
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
        let what = page.display().to_string();
        match command.strip_suffix('&') {
            Some(server) => servers.push(start_server(server.trim(), path, &root(), &what)),
            None => run(&command, path, &root(), &what),
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
    let path = search_path(&binaries());
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
