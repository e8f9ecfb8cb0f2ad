//! The network lab, when the tests run as root (as here and in CI).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{loadgen, num, Lack};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lab_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ringcore-lab-") && n.ends_with(&format!("-{pid}")))
        .map(String::from)
        .collect()
}

#[test]
fn the_flood_loses_at_the_qdisc_and_the_paced_run_loses_nothing() {
    if !is_root() {
        common::skip(
            Lack::Root,
            "the network lab needs root to create namespaces",
        );
        let out = loadgen(&["lab"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
        return;
    }
    let out = loadgen(&["lab", "--duration", "1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (paced, flood) = (&r["runs"][0], &r["runs"][1]);
    assert_eq!(paced["name"], "paced");
    assert_eq!(num(paced, "qdisc_dropped"), 0.0, "{paced}");
    assert_eq!(num(paced, "udp.lost"), 0.0, "{paced}");
    assert!(num(paced, "udp.received") > 0.0);
    assert!(
        num(flood, "qdisc_dropped") > 0.0,
        "the flood overflows the shaped link: {flood}"
    );
    assert!(num(flood, "udp.loss_pct") > 50.0, "{flood}");
    // What got through is about the link rate, not the offered flood.
    let delivered = num(flood, "udp.received") / num(flood, "udp.duration_s");
    assert!(
        delivered < num(&r, "link_pps") * 1.5,
        "{delivered} datagrams/s through a {} one",
        num(&r, "link_pps")
    );
}

#[test]
fn an_interrupted_lab_removes_its_namespaces() {
    if !is_root() {
        common::skip(
            Lack::Root,
            "the network lab needs root to create namespaces",
        );
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["lab", "--duration", "20", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab_namespaces(pid).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the lab never created its namespaces"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        lab_namespaces(pid).is_empty(),
        "namespaces left behind: {:?}",
        lab_namespaces(pid)
    );
}

/// The shared link: one TCP flow beside no UDP, an unpaced flood, UDP paced
/// at half the link, and congestion-controlled UDP, on one time axis. With
/// short phases (the defaults are 10 s, for the README's figures) the
/// flood's effect and the paced share are already plain.
#[test]
fn a_flood_starves_tcp_on_a_shared_link_and_pacing_shares_it() {
    if !is_root() {
        common::skip(
            Lack::Root,
            "the shared-link lab needs root to create namespaces",
        );
        return;
    }
    let svg = std::env::temp_dir().join(format!("ringcore-shared-{}.svg", std::process::id()));
    // Spawned by hand: its pid names its namespaces, which must be gone
    // after (another lab may run beside it, with its own).
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["lab", "--with-tcp", "--duration", "2s", "--json", "--quiet"])
        .arg("--plot")
        .arg(&svg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let pid = child.id();
    let out = child.wait_with_output().expect("loadgen's output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = r["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tcp alone", "udp flood", "udp paced", "udp cc"]);
    let tcp = |i: usize| num(&phases[i], "tcp_goodput_mbps");
    let link = num(&r, "link_mbps");
    assert!(tcp(0) > link * 0.8, "TCP alone fills the link: {r}");
    assert!(tcp(1) < tcp(0) * 0.2, "the flood starves TCP: {r}");
    assert!(num(&phases[1], "udp_loss_pct") > 50.0, "{r}");
    assert!(
        num(&phases[1], "qdisc_dropped") > 1000.0,
        "the drops are at the bottleneck: {r}"
    );
    let paced = num(&phases[2], "udp_delivered_mbps");
    assert!(
        (paced - link / 2.0).abs() < link * 0.1,
        "paced at half the link: {r}"
    );
    assert!(
        tcp(2) > (link - paced) * 0.5,
        "TCP takes most of what is left: {r}"
    );
    // Jain's index (its arithmetic is checked against hand-worked values
    // in shared_link's unit test) follows the shares the link gave: within
    // [0.5, 1] for two flows, lower for the phase whose smaller flow got
    // the smaller part, near 0.5 when the flood has it all and near 1 when
    // pacing shares.
    let smaller_part = |p: &serde_json::Value| {
        let (a, b) = (num(p, "tcp_goodput_mbps"), num(p, "udp_delivered_mbps"));
        a.min(b) / (a + b)
    };
    for p in &phases[1..] {
        assert!((0.5..=1.0).contains(&num(p, "jain_index")), "{r}");
    }
    assert_eq!(
        smaller_part(&phases[1]) < smaller_part(&phases[2]),
        num(&phases[1], "jain_index") < num(&phases[2], "jain_index"),
        "{r}"
    );
    assert!(num(&phases[1], "jain_index") < 0.6, "{r}");
    assert!(num(&phases[2], "jain_index") > 0.9, "{r}");
    assert!(phases[0]["jain_index"].is_null());
    assert!(num(&phases[3]["udp"]["cc"], "loss_events") >= 1.0, "{r}");
    // 100 ms bins over the whole run, both series.
    let bins = r["tcp_mbps"].as_array().unwrap().len();
    assert_eq!(bins, 80, "{r}");
    assert_eq!(r["udp_mbps"].as_array().unwrap().len(), bins);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("<svg") && drawn.contains("udp flood"));
    let _ = std::fs::remove_file(&svg);
    let leftovers = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ours = String::from_utf8_lossy(&leftovers.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("ringcore-shared-")
                && l.split_whitespace()
                    .next()
                    .is_some_and(|n| n.ends_with(&format!("-{pid}")))
        })
        .count();
    assert_eq!(ours, 0, "the namespaces are removed");
}
