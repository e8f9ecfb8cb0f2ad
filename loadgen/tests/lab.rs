//! The network lab, when the tests run as root (as here and in CI).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{loadgen, num};

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
        println!("SKIPPED: the network lab needs root to create namespaces");
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
        println!("SKIPPED: the network lab needs root to create namespaces");
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
