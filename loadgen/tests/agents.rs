//! Load from many machines, played by four loadgen processes: started
//! together with one `--start-at`, tagged, and merged by `loadgen report`
//! into one run. Alone in its test binary, so nothing else in it competes
//! for the CPU at the start instant.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{loadgen_json, num, TestServer};
use loadgen::latency::Percentiles;
use protocols::{Protocol, Transport};

const AGENTS: usize = 4;

#[test]
fn four_agents_started_together_merge_into_one_run() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let addr = server.addr(0).to_string();
    let dir = std::env::temp_dir().join(format!("ringcore-agents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: String| dir.join(name).to_str().unwrap().to_string();
    // One absolute instant for all, as an orchestrator would hand out.
    let start_at = (SystemTime::now() + Duration::from_millis(1500))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start_at_s = start_at;
    let start_at = format!("{start_at:.6}");
    let agents: Vec<_> = (0..AGENTS)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .args(["--tcp", &addr, "--rate", "2000", "--duration", "2s"])
                .args([
                    "--connections",
                    "4",
                    "--start-at",
                    &start_at,
                    "--quiet",
                    "--json",
                ])
                .args(["--tag", &format!("agent-{i}")])
                .args(["--hdr-log", &path(format!("agent-{i}.hlog"))])
                .spawn_output()
        })
        .collect();
    let results: Vec<serde_json::Value> = agents
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("an agent ran");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).expect("JSON")
        })
        .collect();
    let mut files = Vec::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["tag"], format!("agent-{i}"));
        // The absolute instant is honoured: not before it (an agent that
        // ignored --start-at would start 1.5 s early), and late by less
        // than a sixth of the lead however loaded the machine (idle, it is
        // under a millisecond; 20 ms was seen beside a build).
        let started = num(r, "started_at");
        assert!(started >= start_at_s - 0.001, "early: {r}");
        assert!(num(r, "start_lateness_ms") < 250.0, "{r}");
        assert!(started - start_at_s < 0.25, "{r}");
        let file = path(format!("agent-{i}.json"));
        std::fs::write(&file, r.to_string()).unwrap();
        files.push(file);
    }
    for i in 0..AGENTS {
        files.push(path(format!("agent-{i}.hlog")));
    }
    let mut args = vec!["report"];
    args.extend(files.iter().map(String::as_str));
    let m = loadgen_json(&args);

    // The merge reports how far apart they started...
    let starts: Vec<f64> = results.iter().map(|r| num(r, "started_at")).collect();
    let first = starts.iter().cloned().fold(f64::MAX, f64::min);
    let spread = starts.iter().cloned().fold(f64::MIN, f64::max) - first;
    assert!(
        (num(&m, "start_spread_ms") - spread * 1e3).abs() < 1e-6,
        "{m}"
    );
    // ...and the merged run's own rate: every request over the span from
    // the first start to the last end, computed here from the sources.
    let sum: f64 = results.iter().map(|r| num(r, "requests_per_sec")).sum();
    assert!((num(&m, "tcp.requests_per_sec") - sum).abs() < 1e-6);
    let last_end = results
        .iter()
        .map(|r| num(r, "started_at") + num(r, "duration_s"))
        .fold(f64::MIN, f64::max);
    let requests: f64 = results.iter().map(|r| num(r, "requests")).sum();
    let expected_rate = requests / (last_end - first);
    let span_rate = num(&m, "tcp.span_rate");
    assert!(
        (span_rate - expected_rate).abs() <= expected_rate * 1e-6,
        "merged {span_rate:.3}/s against {expected_rate:.3}/s: {m}"
    );
    assert_eq!(
        num(&m, "tcp.requests"),
        results.iter().map(|r| num(r, "requests")).sum::<f64>()
    );
    // The merged percentiles are those of the four histograms merged.
    let mut all = loadgen::latency::histogram();
    for i in 0..AGENTS {
        for interval in
            loadgen::hdr_log::read(dir.join(format!("agent-{i}.hlog")).as_path()).unwrap()
        {
            if interval.tag.as_deref() == Some("latency") {
                all.add(&interval.histogram).unwrap();
            }
        }
    }
    let expected = Percentiles::of(&all);
    for (key, value) in [
        ("p50", expected.p50),
        ("p99", expected.p99),
        ("max", expected.max),
    ] {
        assert_eq!(
            num(&m, &format!("histograms.latency.{key}")),
            value,
            "{key}"
        );
    }
    let samples: f64 = results.iter().map(|r| num(r, "latency_us.count")).sum();
    assert_eq!(num(&m, "histograms.latency.count"), samples);
    let tags: Vec<&str> = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["tag"].as_str())
        .collect();
    assert_eq!(tags, ["agent-0", "agent-1", "agent-2", "agent-3"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Command::spawn` with stdout and stderr captured.
trait SpawnOutput {
    fn spawn_output(&mut self) -> std::process::Child;
}

impl SpawnOutput for Command {
    fn spawn_output(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start an agent")
    }
}
