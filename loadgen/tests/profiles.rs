//! Rates that change within a run (ramps, steps, a file) and the TCP
//! sweep with its knee, through real sockets. The schedule is checked
//! through `--request-log`'s due times, which no scheduler delay moves;
//! how closely the sends follow it on a quiet machine is measured in
//! docs/loadgen.md, not asserted here.

mod common;

use std::time::Duration;

use common::{assert_fails_with, loadgen_json, num, temp_path, SlowEcho, Slowness, TestServer};
use protocols::{Protocol, Transport};

/// Requests that fell due in each whole second, from a request log.
fn due_per_second(log: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut seconds = Vec::new();
    for line in text.lines().skip(1) {
        let due: u64 = line.split(',').next().unwrap().parse().unwrap();
        let s = (due / 1_000_000_000) as usize;
        if seconds.len() <= s {
            seconds.resize(s + 1, 0);
        }
        seconds[s] += 1;
    }
    seconds
}

#[test]
fn a_ramp_schedules_each_second_what_its_integral_says() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let log = temp_path("ramp.csv");
    // 1k/s to 5k/s over 2 s: 2000 in the first second, 4000 in the second.
    let r = loadgen_json(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--rate",
        "1k..5k",
        "--duration",
        "2s",
        "--connections",
        "8",
        "--threads",
        "2",
        "--request-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(num(&r, "scheduled"), 6000.0, "{r}");
    assert_eq!(due_per_second(&log), vec![2000, 4000]);
    assert_eq!(num(&r, "requested_rate"), 3000.0);
    assert!(r["rate_profile"].as_str().unwrap().contains("ramp"), "{r}");
    let seconds = r["per_second"].as_array().expect("per-second figures");
    assert_eq!(seconds.len(), 2, "{r}");
    let profile: Vec<f64> = seconds.iter().map(|s| num(s, "profile")).collect();
    assert_eq!(profile, vec![2000.0, 4000.0]);
    // Every request sent is in some second's count, or (due before the
    // end, sent after it by a thread the machine held up) after them.
    let sent: f64 = seconds.iter().map(|s| num(s, "sent")).sum();
    assert_eq!(
        sent + num(&r, "sent_after_end"),
        num(&r, "scheduled") - num(&r, "unsent"),
        "{r}"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_rate_file_sets_the_profile_and_the_run_length() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let (file, log) = (temp_path("rates.csv"), temp_path("file-log.csv"));
    // 1000/s for a second, then a step to 3000/s for half a second.
    std::fs::write(&file, "# second,rate\n0,1000\n1,1000\n1,3k\n1.5,3k\n").unwrap();
    let r = loadgen_json(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--rate-file",
        file.to_str().unwrap(),
        "--connections",
        "4",
        "--request-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(num(&r, "scheduled"), 2500.0, "{r}");
    assert_eq!(due_per_second(&log), vec![1000, 1500]);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_sweep_finds_no_knee_below_its_bound_and_the_first_step_past_it() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let plot = temp_path("sweep.svg");
    // A bound no loopback echo reaches: no knee.
    let r = loadgen_json(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--sweep",
        "400..1200:3",
        "--duration",
        "500ms",
        "--connections",
        "4",
        "--knee-p99",
        "2s",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(r["mode"], "tcp-sweep");
    let steps = r["steps"].as_array().unwrap();
    let scheduled: Vec<f64> = steps.iter().map(|s| num(s, "scheduled")).collect();
    assert_eq!(
        scheduled,
        vec![200.0, 400.0, 600.0],
        "each step at its rate for 500 ms"
    );
    assert!(r["knee"].is_null(), "{r}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("offered"),
        "an SVG of the sweep"
    );
    // A server that takes 20 ms over every read: every step's p99 is past
    // a 5 ms bound, so the knee is the first rate.
    let slow = SlowEcho::start(Slowness {
        per_read: Duration::from_millis(20),
        stall_after: Duration::ZERO,
        stall_for: Duration::ZERO,
    });
    let r = loadgen_json(&[
        "--tcp",
        &slow.addr().to_string(),
        "--sweep",
        "50..100:2",
        "--duration",
        "400ms",
        "--connections",
        "8",
        "--knee-p99",
        "5ms",
    ]);
    assert_eq!(num(&r, "knee"), 50.0, "{r}");
    let _ = std::fs::remove_file(&plot);
}

#[test]
fn rate_flags_that_cannot_work_together_say_so() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let addr = server.addr(0).to_string();
    assert_fails_with(
        &["--tcp", &addr, "--plot", "/tmp/x.svg"],
        "--plot draws a --sweep or a changing --rate",
    );
    assert_fails_with(
        &["--tcp", &addr, "--sweep", "1k..2k", "--rate", "1k"],
        "--sweep sets the rate",
    );
    assert_fails_with(
        &["--tcp", &addr, "--rate", "1k..2k", "--requests", "10"],
        "give --duration, not --requests",
    );
    assert_fails_with(&["--udp", &addr, "--rate", "1k..2k"], "UDP holds one rate");
    let file = temp_path("bad.csv");
    std::fs::write(&file, "0,1000\n2,x\n").unwrap();
    assert_fails_with(
        &["--tcp", &addr, "--rate-file", file.to_str().unwrap()],
        "line 2",
    );
    let _ = std::fs::remove_file(&file);
}
