//! Known-answer tests: loadgen's figures against what theory predicts for a
//! server that misbehaves in a known way (a stall of a known length, a fixed
//! service time), and the accounting that gives every scheduled request
//! exactly one fate.

mod common;

use std::time::Duration;

use common::{loadgen, loadgen_json, num, SlowEcho, Slowness};

fn assert_balanced(r: &serde_json::Value) {
    let errors = ["reset", "closed", "mismatch", "status", "aborted"]
        .iter()
        .map(|k| num(r, &format!("errors.{k}")))
        .sum::<f64>();
    assert_eq!(
        num(r, "scheduled"),
        num(r, "completed") + num(r, "timeouts") + errors + num(r, "unsent"),
        "every scheduled request has exactly one fate: {r}"
    );
    assert_eq!(
        num(r, "latency_us.count") + num(r, "warmup_samples"),
        num(r, "completed") + num(r, "timeouts"),
        "one latency sample per answer and per timeout (or one left out by the warm-up): {r}"
    );
}

/// A server slow to start (it stalls for 500 ms once the first request
/// arrives, as one still accepting its connections would): without a
/// warm-up the stall is in the latency; with `--warmup 1.5s` the requests
/// due in the first 1.5 s (exactly 1500 at 1000/s) are made, checked and
/// counted, but left out of the latency, which then shows a server
/// answering at once.
#[test]
fn a_warmup_leaves_a_slow_start_out_of_the_latency_and_nothing_else() {
    let slow_start = || {
        SlowEcho::start(Slowness {
            per_read: Duration::ZERO,
            stall_after: Duration::ZERO,
            stall_for: Duration::from_millis(500),
        })
    };
    let run = |server: &SlowEcho, warmup: &str| {
        loadgen_json(&[
            "--tcp",
            &server.addr().to_string(),
            "--rate",
            "1000",
            "--duration",
            "1s",
            "--warmup",
            warmup,
            "--connections",
            "10",
        ])
    };
    let cold = run(&slow_start(), "0s");
    assert!(
        num(&cold, "latency_us.max") >= 400_000.0,
        "the stall shows without a warm-up: {cold}"
    );
    assert_eq!(num(&cold, "warmup_samples"), 0.0);

    let r = run(&slow_start(), "1.5s");
    assert_eq!(num(&r, "warmup_s"), 1.5);
    assert_eq!(
        num(&r, "scheduled"),
        2500.0,
        "the warm-up is run on top of --duration"
    );
    assert_eq!(num(&r, "completed"), 2500.0, "and counted in every total");
    assert_eq!(num(&r, "warmup_samples"), 1500.0);
    assert_eq!(num(&r, "latency_us.count"), 1000.0);
    assert!(
        num(&r, "latency_us.max") < 100_000.0,
        "after the warm-up the server answers at once: {r}"
    );
    assert_balanced(&r);
}

/// Open loop at rate R for D seconds against a server that stops for S
/// seconds in the middle: the requests due during the stall wait for its
/// end, so a fraction (S - L) / D of all requests take longer than L, and
/// the q-quantile is S - (1 - q) D (for q above 1 - S / D).
#[test]
fn a_stall_gives_the_percentiles_theory_predicts() {
    let server = SlowEcho::start(Slowness {
        per_read: Duration::ZERO,
        stall_after: Duration::from_secs(1),
        stall_for: Duration::from_secs(1),
    });
    let r = loadgen_json(&[
        "--tcp",
        &server.addr().to_string(),
        "--rate",
        "2000",
        "--duration",
        "3s",
        "--connections",
        "20",
    ]);
    let (from, until) = server.window().expect("requests arrived");
    let stall = (until - from).as_secs_f64();
    let d = 3.0;
    let predicted = |q: f64| (stall - (1.0 - q) * d) * 1e6;
    for (key, q) in [("latency_us.p90", 0.90), ("latency_us.p99", 0.99)] {
        let measured = num(&r, key);
        assert!(
            (measured - predicted(q)).abs() < 80_000.0,
            "{key}: measured {measured:.0} us, theory {:.0} us: {r}",
            predicted(q)
        );
    }
    assert!(num(&r, "latency_us.p50") < 100_000.0, "{r}");
    assert!(num(&r, "latency_us.max") < stall * 1e6 + 150_000.0, "{r}");
    // Counted from the send instead (what a tool without the correction
    // reports), the stall all but vanishes: only the requests on the wire
    // when it began, one per connection (20 of 6000, 0.33 %), waited it
    // out; the rest waited unsent, which service time does not see. So its
    // p99 is an ordinary round trip while its maximum is the stall.
    assert_eq!(num(&r, "service_us.count"), num(&r, "latency_us.count"));
    assert!(num(&r, "service_us.p99") < 100_000.0, "{r}");
    assert!(
        num(&r, "service_us.max") > stall * 1e6 - 80_000.0,
        "the requests on the wire saw the stall: {r}"
    );
    assert_eq!(num(&r, "scheduled"), 6000.0);
    assert_eq!(num(&r, "completed"), 6000.0);
    assert_balanced(&r);
}

/// A reply later than --timeout but not lost: the request counts as a
/// timeout once, its late reply frees the slot, and the connection is kept.
#[test]
fn a_timeout_keeps_the_connection_when_the_late_reply_comes() {
    std::thread::scope(|scope| {
        for io in ["uring", "epoll"] {
            scope.spawn(move || a_timeout_keeps_the_connection(io));
        }
    });
}

fn a_timeout_keeps_the_connection(io: &str) {
    let server = SlowEcho::start(Slowness {
        per_read: Duration::ZERO,
        stall_after: Duration::from_millis(300),
        stall_for: Duration::from_millis(650),
    });
    let r = loadgen_json(&[
        "--tcp",
        &server.addr().to_string(),
        "--connections",
        "2",
        "--duration",
        "1.5s",
        "--timeout",
        "400ms",
        "--io",
        io,
    ]);
    assert_eq!(r["io"], if io == "uring" { "io_uring" } else { "epoll" });
    // Closed loop, pipeline 1: one request per connection was waiting
    // through the stall, and each timed out once.
    assert_eq!(num(&r, "timeouts"), 2.0, "{r}");
    assert_eq!(num(&r, "connects.opened"), 2.0, "{r}");
    assert_eq!(num(&r, "connects.reconnects"), 0.0, "{r}");
    assert_eq!(
        num(&r, "errors.aborted") + num(&r, "errors.reset"),
        0.0,
        "{r}"
    );
    assert!(num(&r, "completed") > 100.0, "{r}");
    assert_balanced(&r);
}

/// Past capacity (here: a server that stops answering for good), requests
/// that fall due but never find a free connection end as `unsent`, those
/// on the wire as timeouts, and the sum is exact.
#[test]
fn overload_accounts_for_every_scheduled_request() {
    std::thread::scope(|scope| {
        for io in ["uring", "epoll"] {
            scope.spawn(move || overload_accounts_for_every_request(io));
        }
    });
}

fn overload_accounts_for_every_request(io: &str) {
    let server = SlowEcho::start(Slowness {
        per_read: Duration::ZERO,
        stall_after: Duration::from_millis(500),
        stall_for: Duration::from_secs(30),
    });
    let addr = server.addr().to_string();
    let args = [
        "--tcp",
        &addr,
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--connections",
        "4",
        "--timeout",
        "300ms",
        "--io",
        io,
    ];
    let r = loadgen_json(&args);
    assert_eq!(num(&r, "scheduled"), 4000.0, "{r}");
    assert!(num(&r, "completed") > 500.0, "{r}");
    assert!(num(&r, "timeouts") >= 4.0, "{r}");
    assert!(num(&r, "unsent") > 2000.0, "{r}");
    assert_eq!(num(&r, "backlog_us.count"), num(&r, "unsent"), "{r}");
    assert!(
        num(&r, "connects.reconnects") >= 1.0,
        "connections stuck for twice the timeout were replaced: {r}"
    );
    assert_balanced(&r);

    let text = loadgen(&args);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("asked 2000/s") && out.contains("of scheduled requests were never sent"),
        "{out}"
    );
}

/// A run far past capacity: at 2M/s against a server that stops answering
/// after 300 ms, about four million requests fall due and wait for a free
/// connection. loadgen holds a count for them, not an entry each, so its
/// peak memory is that of a small run (it was 99 MiB for a 3 s run with a
/// due time kept per waiting request).
#[test]
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also gives its peak memory"
)]
fn requests_waiting_past_capacity_hold_no_memory_each() {
    use std::io::Read;
    let server = SlowEcho::start(Slowness {
        per_read: Duration::ZERO,
        stall_after: Duration::from_millis(300),
        stall_for: Duration::from_secs(30),
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--tcp", &server.addr().to_string()])
        .args(["--rate", "2M", "--duration", "2s", "--connections", "4"])
        .args(["--timeout", "1s", "--quiet", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut stdout)
        .expect("loadgen's report");
    // SAFETY: wait4 on our own child, writing into values we own; the
    // child is reaped here, so `child` is never waited on again.
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(
        pid,
        child.id() as i32,
        "{}",
        std::io::Error::last_os_error()
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "loadgen failed: status {status:#x}"
    );
    let r: serde_json::Value = serde_json::from_slice(&stdout).expect("JSON report");
    assert!(num(&r, "unsent") > 3e6, "{r}");
    assert_balanced(&r);
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    assert!(
        peak_mib < 32.0,
        "loadgen peaked at {peak_mib:.0} MiB holding {} unsent requests",
        num(&r, "unsent")
    );
}

/// With a fixed service time per request, the rate is known: two
/// connections answering 1 ms apart each give at most 2000 requests/s, and
/// the rate spans the whole run, not the thread that finished first (here
/// one thread drives two connections and the other one, so the first
/// finishes in half the time).
#[test]
fn the_rate_of_uneven_threads_is_the_whole_runs() {
    let server = SlowEcho::start(Slowness {
        per_read: Duration::from_millis(1),
        stall_after: Duration::ZERO,
        stall_for: Duration::ZERO,
    });
    let addr = server.addr().to_string();
    let one = loadgen_json(&[
        "--tcp",
        &addr,
        "--connections",
        "2",
        "--threads",
        "1",
        "--requests",
        "2000",
    ]);
    let two = loadgen_json(&[
        "--tcp",
        &addr,
        "--connections",
        "3",
        "--threads",
        "2",
        "--requests",
        "2000",
    ]);
    for r in [&one, &two] {
        assert_eq!(num(r, "completed"), 2000.0);
        let rate = num(r, "requests_per_sec");
        assert!((900.0..=2100.0).contains(&rate), "rate {rate:.0}/s: {r}");
        assert!(num(r, "duration_s") >= 0.95, "{r}");
        assert_balanced(r);
    }
}

/// A stall of loadgen's own shows as its own: stopped (SIGSTOP) for 300 ms
/// in the middle of an open-loop run against a server that answers at
/// once, it reports an own delay of at least that, next to the latency
/// tail the stop caused, so a reader can tell whose the tail is. The same
/// run left alone reports an own delay far below it.
#[test]
fn a_stall_of_loadgens_own_shows_as_its_own_delay() {
    let run = |stop: Option<Duration>| {
        let server = SlowEcho::start(Slowness {
            per_read: Duration::ZERO,
            stall_after: Duration::ZERO,
            stall_for: Duration::ZERO,
        });
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--tcp", &server.addr().to_string()])
            .args(["--rate", "1000", "--duration", "2s", "--connections", "4"])
            .args(["--json", "--quiet"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run loadgen");
        if let Some(stop) = stop {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while server.window().is_none() {
                assert!(std::time::Instant::now() < deadline, "no request arrived");
                std::thread::sleep(Duration::from_millis(5));
            }
            // Half a second into the 2 s run, loadgen stops for `stop`.
            std::thread::sleep(Duration::from_millis(500));
            let pid = child.id() as i32;
            // SAFETY: signals to our own child process.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(stop);
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        let out = child.wait_with_output().expect("loadgen");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("a JSON report")
    };
    let stopped = run(Some(Duration::from_millis(300)));
    assert!(
        num(&stopped, "own_lateness_us.max") >= 250_000.0,
        "the stop is loadgen's own delay: {stopped}"
    );
    assert!(num(&stopped, "latency_us.max") >= 250_000.0, "{stopped}");
    let alone = run(None);
    assert!(
        num(&alone, "own_lateness_us.max") < 250_000.0,
        "no stop, no such delay: {alone}"
    );
    assert!(num(&alone, "own_lateness_us.count") > 0.0, "{alone}");
}
