//! Running the shell commands of a documentation page as its reader would:
//! what `tests/course.rs` (the course pack) and `tests/docs.rs` (the README
//! and `docs/`) share. A page's commands are the lines of its ```sh
//! blocks; a command ending in `&` (or one that starts a server) runs in
//! the background until its page or block is done.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::PATIENCE;

/// The workspace root: commands run from there, as the pages say.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `ringcore` and `loadgen`, and its `examples`:
/// built fresh in this test's profile, as a reader's set-up would.
pub fn binaries() -> PathBuf {
    let ringcore = PathBuf::from(super::binary());
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

/// `PATH` with the built binaries and examples first.
pub fn search_path(binaries: &Path) -> String {
    format!(
        "{}:{}:{}:/usr/sbin",
        binaries.display(),
        binaries.join("examples").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The commands of each ```sh block of a page, in order: one per line,
/// a line ending in `\` joined with the next, comments and blank lines
/// left out.
pub fn blocks(page: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut pending = String::new();
    for line in page.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None if trimmed == "```sh" => current = Some(Vec::new()),
                None => {}
            }
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        if trimmed.is_empty() || (pending.is_empty() && trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_end());
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                block.push(std::mem::take(&mut pending));
            }
        }
    }
    blocks
}

/// Every command of a page, blocks run together.
pub fn commands(page: &str) -> Vec<String> {
    blocks(page).into_iter().flatten().collect()
}

/// True when `program` runs here (on `path`).
pub fn installed(program: &str, path: &str) -> bool {
    Command::new("bash")
        .args(["-c", &format!("command -v {program}")])
        .env("PATH", path)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `command` under bash, on `path`, from `dir`, reading nothing.
pub fn shell(command: &str, path: &str, dir: &Path) -> Command {
    let mut c = Command::new("bash");
    c.args(["-c", command])
        .env("PATH", path)
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

/// A server started in the background; stopped (SIGTERM) when dropped.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts `command` in the background and waits until it says it serves:
/// ringcore's "...; up to N connections", or an engine server's
/// "tcp ADDR NAME" / "udp ADDR NAME". `what` names it in a failure.
pub fn start_server(command: &str, path: &str, dir: &Path, what: &str) -> Background {
    let mut child = shell(command, path, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start `{command}`: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("; up to ") || line.starts_with("tcp ") || line.starts_with("udp ") {
                let _ = tx.send(());
            }
        }
    });
    let server = Background(child);
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what}: `{command}` did not start"));
    server
}

/// Runs `command` to its end and fails the test, with its output, unless
/// it succeeds.
pub fn run(command: &str, path: &str, dir: &Path, what: &str) {
    run_answering(command, b"", path, dir, what);
}

/// [`run`], with `typed` on its standard input (what a reader would type
/// at its prompts).
pub fn run_answering(command: &str, typed: &[u8], path: &str, dir: &Path, what: &str) {
    let mut child = shell(command, path, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run `{command}`: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    // A command that never reads its input must not block the test.
    let typed = typed.to_vec();
    let typing = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &typed);
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: cannot run `{command}`: {e}"));
    let _ = typing.join();
    assert!(
        out.status.success(),
        "{what}: `{command}` failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
