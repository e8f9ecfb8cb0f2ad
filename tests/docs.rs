//! The README's and `docs/*.md`'s shell commands run as written, in a
//! quick mode, so that none goes stale (the course pages have their own
//! test, `tests/course.rs`).
//!
//! Quick mode: `cargo run [--release] [-p loadgen | --example X] -- ARGS`
//! runs the built binary with ARGS; loadgen runs for one second, from a
//! scratch directory (where its plots and logs go), and a fixed
//! `--start-at` becomes `+1s`; `redis-benchmark` sends 10,000 requests per
//! test; `apt-get install` checks that the packages are installed (the
//! test does not change the machine); `cargo test` builds the suite
//! without running it (this is that suite). A server (ringcore, an
//! example, or a command ending in `&`) runs in the background until its
//! ```sh block ends. A command that talks to a port nothing in its block
//! serves gets the server a reader would have running there, started by
//! the test: ringcore on the chapter's ports, Debian's `redis-server` on
//! 6379 and `memcached` on 11211, and the servers the page names beside
//! its command (`reverse-lines` on 7200, the `framed` example on 7001).
//! Everything runs in a network namespace of the test's own, since the
//! pages use fixed ports.
//!
//! Benchmarks (`cargo bench`, `benches/*.sh`, `benches/*.py`) run in their
//! own quick mode (`--quick`, one round of one second) in an ignored test
//! that `.ci/run` runs, and so do the fuzzing commands (1,000 runs; where
//! no nightly toolchain or cargo-fuzz is, they skip, saying so). Docker
//! (no daemon) and kubectl (no API server) cannot run on CI's machine and
//! skip, saying so.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::pages::{self, Background};
use common::{own_network_namespace, Lack, PATIENCE};

/// The chapter's ports, which a bare `ringcore` binds.
const CHAPTER_PORTS: [u16; 5] = [65432, 12345, 8888, 5555, 8080];

/// The README and every page of `docs/` (not the course's).
fn pages() -> Vec<PathBuf> {
    let root = pages::root();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root.join("README.md"));
    pages
}

/// How one command of a page runs here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Run to its end; it must succeed. From the scratch directory when
    /// `scratch`, else from the workspace root.
    Run { command: String, scratch: bool },
    /// Started in the background, stopped when its block ends.
    Serve(String),
    /// A benchmark, in its quick mode: run by the ignored test only.
    Bench(String),
    /// A fuzzing command, in its quick mode: run by the ignored test
    /// where a nightly toolchain and cargo-fuzz are.
    Fuzz(String),
    /// Cannot run on CI's machine; why.
    Skip(Lack, String),
}

/// The words of a command, with `VAR=value` prefixes set apart.
fn split(command: &str) -> (Vec<&str>, Vec<&str>) {
    let words: Vec<&str> = command.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| !w.contains('=') || w.starts_with('-'))
        .unwrap_or(words.len());
    (words[..at].to_vec(), words[at..].to_vec())
}

/// Replaces the value after each `flag` in `words` with `value`.
fn set_flag(words: &mut [String], flag: &str, value: &str) -> bool {
    let mut found = false;
    for i in 0..words.len().saturating_sub(1) {
        if words[i] == flag {
            words[i + 1] = value.to_string();
            found = true;
        }
    }
    found
}

/// `cargo run [--release] [-p loadgen | --example X] [-- ARGS]` as the
/// built program and its arguments; anything else unchanged.
fn without_cargo_run(words: &[&str]) -> Vec<String> {
    if words.len() < 2 || words[0] != "cargo" || words[1] != "run" {
        return words.iter().map(|w| w.to_string()).collect();
    }
    let split = words.iter().position(|w| *w == "--").unwrap_or(words.len());
    let (flags, args) = (&words[2..split], words.get(split + 1..).unwrap_or(&[]));
    let named = |flag: &str| {
        flags
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| flags.get(i + 1))
    };
    let program = named("--example").or(named("-p")).unwrap_or(&"ringcore");
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

/// What quick mode makes of `command` (see the module's docs).
fn plan(command: &str) -> Step {
    // A trailing `# comment` is for the reader.
    let command = match command.find(" #") {
        Some(at) => &command[..at],
        None => command,
    };
    let command = command.trim();
    let background = command.ends_with('&');
    let command = command.trim_end_matches('&').trim();
    let (env, words) = split(command);
    let Some(&program) = words.first() else {
        return Step::Run {
            command: command.into(),
            scratch: false,
        };
    };
    let has = |w: &str| words.contains(&w);
    match program {
        "docker" => return Step::Skip(Lack::DockerDaemon, command.into()),
        "kubectl" => return Step::Skip(Lack::KubernetesApi, command.into()),
        "fuzz/run-all.sh" => return Step::Fuzz("fuzz/run-all.sh 1000".into()),
        "cargo" if has("cargo-fuzz") => return Step::Fuzz("cargo fuzz --help > /dev/null".into()),
        "cargo" if has("+nightly") => {
            let runs = if has("--") {
                " -runs=1000"
            } else {
                " -- -runs=1000"
            };
            return Step::Fuzz(format!("{command}{runs}"));
        }
        "apt-get" => {
            let packages: Vec<&str> = words
                .iter()
                .skip(1)
                .filter(|w| !w.starts_with('-') && **w != "install")
                .copied()
                .collect();
            return Step::Run {
                command: format!("dpkg -s {} > /dev/null", packages.join(" ")),
                scratch: false,
            };
        }
        "cargo" if words.get(1) == Some(&"test") => {
            return Step::Run {
                command: "cargo test --quiet --no-run".into(),
                scratch: false,
            }
        }
        "cargo" if words.get(1) == Some(&"bench") => return Step::Bench(quick_bench(&words)),
        p if p.starts_with("benches/") => {
            return Step::Bench(quick_script(&env, &words));
        }
        "python3" if words.get(1).is_some_and(|w| w.starts_with("benches/")) => {
            return Step::Bench(quick_script(&env, &words));
        }
        _ => {}
    }
    let mut words = without_cargo_run(&words);
    let program = words[0].clone();
    let serves = program == "ringcore" || is_example(&program);
    if program == "loadgen" {
        quick_loadgen(&mut words);
    }
    if program == "redis-benchmark" && !words.iter().any(|w| w == "-n") {
        words.extend(["-n".into(), "10000".into()]);
    }
    let line = env
        .iter()
        .map(|w| w.to_string())
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ");
    if background || serves {
        Step::Serve(line)
    } else {
        Step::Run {
            command: line,
            scratch: program == "loadgen",
        }
    }
}

/// True for the name of one of the workspace's examples.
fn is_example(program: &str) -> bool {
    pages::root()
        .join("examples")
        .join(format!("{program}.rs"))
        .is_file()
}

/// loadgen for one second: `--duration` cut (or given), a fixed start time
/// made near, the placeholder host made loopback.
fn quick_loadgen(words: &mut Vec<String>) {
    for w in words.iter_mut() {
        if let Some(rest) = w.strip_prefix("server:") {
            *w = format!("127.0.0.1:{rest}");
        }
    }
    set_flag(words, "--start-at", "+1s");
    let timed = words.get(1).is_some_and(|w| w != "client" && w != "report");
    if !set_flag(words, "--duration", "1s") && timed && !words.iter().any(|w| w == "--requests") {
        words.extend(["--duration".into(), "1s".into()]);
    }
}

/// `cargo bench --bench X [-- ARGS]` for one round of one second, with
/// `--quick` (which every bench takes, criterion's included).
fn quick_bench(words: &[&str]) -> String {
    let mut words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    if !words.iter().any(|w| w == "--") {
        words.push("--".into());
    }
    set_flag(&mut words, "--seconds", "1");
    set_flag(&mut words, "--rounds", "1");
    set_flag(&mut words, "--connections", "1000");
    words.push("--quick".into());
    words.join(" ")
}

/// A bench script (`benches/ab-echo.sh`, `benches/ab_binaries.py`) with
/// `AB_QUICK=1` (one round of one second), comparing this build's release
/// binaries with themselves (a reader's older build is not here).
fn quick_script(env: &[&str], words: &[&str]) -> String {
    let release = pages::root().join("target/release");
    let words: Vec<String> = words
        .iter()
        .map(|w| match w.rsplit('/').next() {
            Some(name @ ("ringcore" | "loadgen")) if w.contains("target") => {
                release.join(name).display().to_string()
            }
            _ => w.to_string(),
        })
        .collect();
    std::iter::once("AB_QUICK=1".to_string())
        .chain(env.iter().map(|w| w.to_string()))
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ports a command talks to (for a server: serves), as far as its
/// words say.
fn ports(command: &str, serving: bool) -> Vec<u16> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut ports: Vec<u16> = words
        .iter()
        .flat_map(|w| w.split(['=', ',']))
        .filter_map(|w| {
            let (host, port) = w.rsplit_once(':')?;
            let host = host.rsplit(':').next()?;
            let hosted = ["127.0.0.1", "localhost", "tcp", "udp"].contains(&host);
            hosted.then(|| port.parse().ok()).flatten()
        })
        .collect();
    let program = words.first().copied().unwrap_or("");
    let chapter = match program {
        "ringcore" => serving && !command.contains("--serve"),
        "redis-benchmark" => {
            ports.push(6379);
            false
        }
        "loadgen" => ports.is_empty() && (command.contains("--tcp") || command.contains("--udp")),
        "python3" => command.contains("tests/chapter/"),
        _ => false,
    };
    if chapter {
        ports.extend(CHAPTER_PORTS);
    }
    ports
}

/// The server a reader would have on `port`: its command, and the program
/// it needs.
fn fixture(port: u16) -> Option<String> {
    let command = match port {
        p if CHAPTER_PORTS.contains(&p) => "ringcore".to_string(),
        6379 => "redis-server --port 6379 --save '' --appendonly no".into(),
        // SAFETY: geteuid has no preconditions.
        11211 if unsafe { libc::geteuid() } == 0 => "memcached -p 11211 -U 0 -u root".into(),
        11211 => "memcached -p 11211 -U 0".into(),
        7200 => "ringcore --serve tcp:7200=reverse-lines".into(),
        7001 => "framed 127.0.0.1:7001".into(),
        _ => return None,
    };
    Some(command)
}

/// Starts `command` for `ports` and waits until it serves them: ringcore
/// and the examples say so once every socket is bound (a probe of a UDP
/// port could take it from them mid-start); the other servers, once each
/// port takes TCP connections.
fn start_fixture(command: &str, ports: &[u16], path: &str) -> Background {
    let program = command.split_whitespace().next().unwrap_or("");
    if program == "ringcore" || is_example(program) {
        return pages::start_server(command, path, &pages::root(), command);
    }
    let child = pages::shell(command, path, &pages::root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let fixture = Background(child);
    let deadline = Instant::now() + PATIENCE;
    for &port in ports {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "`{command}` never served {port}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    fixture
}

/// True where the fuzzing commands can run: a nightly toolchain and
/// cargo-fuzz.
fn fuzzing_here() -> bool {
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        });
    let cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    nightly && cargo_fuzz
}

/// What one page's run did: commands run, and benches (and fuzzing) left
/// for the ignored test (or run by it).
#[derive(Default)]
struct Ran {
    run: usize,
    benches: usize,
    skipped: usize,
}

/// Runs one page's commands in order, block by block: everything but
/// benchmarks, or (`benches`) the benchmarks only.
fn run_page(page: &Path, path: &str, scratch: &Path, benches: bool) -> Ran {
    let text = std::fs::read_to_string(page).unwrap();
    let what = page.display().to_string();
    let mut ran = Ran::default();
    for block in pages::blocks(&text) {
        let mut servers: Vec<Background> = Vec::new();
        let mut fixtures: Vec<Background> = Vec::new();
        let mut served: Vec<u16> = Vec::new();
        for command in &block {
            let step = plan(command);
            let (line, background, in_scratch) = match step {
                // The bench test runs a page's benchmarks only (none needs
                // a server of the page's).
                Step::Serve(_) | Step::Run { .. } if benches => continue,
                Step::Skip(..) if benches => continue,
                Step::Skip(lack, why) => {
                    common::skip(lack, format!("{what}: cannot run here: {why}"));
                    ran.skipped += 1;
                    continue;
                }
                Step::Bench(line) if benches => (line, false, false),
                Step::Fuzz(line) if benches && fuzzing_here() => (line, false, false),
                Step::Fuzz(line) if benches => {
                    common::skip(
                        Lack::NightlyToolchain,
                        format!("{what}: no nightly toolchain or cargo-fuzz for `{line}`"),
                    );
                    continue;
                }
                Step::Bench(_) | Step::Fuzz(_) => {
                    ran.benches += 1;
                    continue;
                }
                Step::Serve(line) => (line, true, false),
                Step::Run { command, scratch } => (command, false, scratch),
            };
            let env_words = split(&line).0.len();
            let program = line.split_whitespace().nth(env_words).unwrap_or("");
            if !pages::installed(program, path) {
                common::skip(
                    Lack::Program("a documented command's program"),
                    format!("{what}: {program} is not installed: {line}"),
                );
                ran.skipped += 1;
                continue;
            }
            if background {
                servers.push(pages::start_server(&line, path, &pages::root(), &what));
                served.extend(ports(&line, true));
                ran.run += 1;
                continue;
            }
            for port in ports(&line, false) {
                if served.contains(&port) {
                    continue;
                }
                let Some(fixture) = fixture(port) else {
                    continue;
                };
                let program = fixture.split_whitespace().next().unwrap_or("");
                if !pages::installed(program, path) {
                    common::skip(
                        Lack::Program("the server a documented command talks to"),
                        format!("{what}: {program} is not installed, for `{line}`"),
                    );
                    continue;
                }
                let serves: Vec<u16> = if CHAPTER_PORTS.contains(&port) {
                    CHAPTER_PORTS.to_vec()
                } else {
                    vec![port]
                };
                fixtures.push(start_fixture(&fixture, &serves, path));
                served.extend(serves);
            }
            let dir = if in_scratch {
                scratch.to_path_buf()
            } else {
                pages::root()
            };
            // The chapter's reverse client asks "continue (y/n)".
            pages::run_answering(&line, b"n\n", path, &dir, &what);
            ran.run += 1;
        }
        drop(servers);
        drop(fixtures);
    }
    ran
}

/// Runs every page (benchmarks only, or all but them) in a network
/// namespace of this thread's own; the totals.
fn run_pages(benches: bool) -> Option<Ran> {
    if let Err(why) = own_network_namespace() {
        common::skip(Lack::Root, format!("the pages use fixed ports, and {why}"));
        return None;
    }
    let path = pages::search_path(&pages::binaries());
    let scratch = std::env::temp_dir().join(format!("ringcore-docs-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut total = Ran::default();
    for page in pages() {
        let ran = run_page(&page, &path, &scratch, benches);
        total.run += ran.run;
        total.benches += ran.benches;
        total.skipped += ran.skipped;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Some(total)
}

#[test]
fn every_documented_command_runs_as_written() {
    let Some(ran) = run_pages(false) else {
        return;
    };
    println!(
        "ran {} documented commands; {} benchmark and fuzzing commands are the ignored test's; {} skipped",
        ran.run, ran.benches, ran.skipped
    );
    let all: usize = pages()
        .iter()
        .map(|p| pages::commands(&std::fs::read_to_string(p).unwrap()).len())
        .sum();
    assert_eq!(
        ran.run + ran.benches + ran.skipped,
        all,
        "every command is accounted for"
    );
    assert!(
        ran.run >= 20,
        "the pages' commands ran ({} of {all})",
        ran.run
    );
}

/// The benchmark commands, in their quick mode (release builds: minutes,
/// so `.ci/run` runs this, not a plain `cargo test`).
#[test]
#[ignore = "builds and runs every documented benchmark and fuzz target (minutes); .ci/run runs it"]
fn every_documented_benchmark_runs_in_quick_mode() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "ringcore",
            "-p",
            "loadgen",
        ])
        .current_dir(pages::root())
        .status()
        .expect("cargo build --release");
    assert!(built.success(), "cargo build --release");
    // The pages run in a network namespace of their own, where crates.io
    // cannot be reached: the monoio peer (a workspace of its own, built by
    // the compare bench) gets its crates now.
    let peer = pages::root().join("peers/monoio-echo/Cargo.toml");
    let fetched = Command::new(&cargo)
        .args(["fetch", "--locked", "--manifest-path"])
        .arg(&peer)
        .status()
        .expect("cargo fetch for the monoio peer");
    assert!(
        fetched.success(),
        "cargo fetch --manifest-path {}",
        peer.display()
    );
    let Some(ran) = run_pages(true) else {
        return;
    };
    println!("ran {} documented benchmark and fuzzing commands", ran.run);
    assert!(ran.run >= 10, "the benchmarks ran ({})", ran.run);
}

#[test]
fn quick_mode_says_how_each_kind_of_command_runs() {
    let run = |command: &str, scratch| Step::Run {
        command: command.into(),
        scratch,
    };
    assert_eq!(plan("cargo run --release"), Step::Serve("ringcore".into()));
    assert_eq!(
        plan("cargo run --release --example ping -- 127.0.0.1:6379 1"),
        Step::Serve("ping 127.0.0.1:6379 1".into())
    );
    assert_eq!(
        plan("cargo run --release -p loadgen -- --tcp --connections 50 --duration 5s"),
        run("loadgen --tcp --connections 50 --duration 1s", true)
    );
    assert_eq!(
        plan("cargo run --release -p loadgen -- client tcp 127.0.0.1:5555   # talk to the bot"),
        run("loadgen client tcp 127.0.0.1:5555", true)
    );
    assert_eq!(
        plan("loadgen --tcp server:65432 --rate 100k --start-at 2026-11-25T12:00:00Z --json"),
        run(
            "loadgen --tcp 127.0.0.1:65432 --rate 100k --start-at +1s --json --duration 1s",
            true
        )
    );
    assert_eq!(
        plan("redis-benchmark -t ping_inline -q"),
        run("redis-benchmark -t ping_inline -q -n 10000", false)
    );
    assert_eq!(
        plan("apt-get install redis-server redis-tools"),
        run("dpkg -s redis-server redis-tools > /dev/null", false)
    );
    assert_eq!(
        plan("cargo test   # all"),
        run("cargo test --quiet --no-run", false)
    );
    assert_eq!(
        plan("cargo bench --bench echo_throughput -- --seconds 5 --rounds 5"),
        Step::Bench("cargo bench --bench echo_throughput -- --seconds 1 --rounds 1 --quick".into())
    );
    assert_eq!(
        plan("cargo bench --bench compare            # full"),
        Step::Bench("cargo bench --bench compare -- --quick".into())
    );
    assert!(matches!(
        plan("docker run --rm ringcore"),
        Step::Skip(Lack::DockerDaemon, _)
    ));
    assert_eq!(
        plan("cargo +nightly fuzz run -O http_request      # one target, until stopped"),
        Step::Fuzz("cargo +nightly fuzz run -O http_request -- -runs=1000".into())
    );
    assert_eq!(
        plan("fuzz/run-all.sh 10000000"),
        Step::Fuzz("fuzz/run-all.sh 1000".into())
    );
    assert_eq!(
        ports(
            "ringcore --serve tcp:7100=echo --metrics 127.0.0.1:7490",
            true
        ),
        [7100, 7490]
    );
    assert_eq!(ports("loadgen --udp --rate 1M", false), CHAPTER_PORTS);
    assert_eq!(ports("redis-benchmark -q", false), [6379]);
}
