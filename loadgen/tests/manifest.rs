//! Every `--json` result says how and where it was made, and `loadgen
//! report` says where merged results were made differently.

mod common;

use common::{loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

fn proc_value(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_result_carries_the_machine_the_build_and_the_command() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::ECHO),
        (Transport::Udp, Protocol::ECHO),
    ]);
    let tcp = server.addr(0).to_string();
    let r = loadgen_json(&[
        "--tcp",
        &tcp,
        "--requests",
        "100",
        "--io",
        "epoll",
        "--cpus",
        "0",
        "--connections",
        "2",
    ]);
    let m = &r["manifest"];
    assert_eq!(m["io"], "epoll", "{m}");
    assert_eq!(m["pinning"], serde_json::json!([0]), "{m}");
    let line: Vec<&str> = m["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(line.windows(2).any(|w| w == ["--io", "epoll"]), "{line:?}");
    assert!(
        line.windows(2).any(|w| w == ["--tcp", tcp.as_str()]),
        "{line:?}"
    );
    assert!(m["kernel"]
        .as_str()
        .unwrap()
        .starts_with(&proc_value("/proc/sys/kernel/osrelease")));
    assert_eq!(
        m["sysctls"]["net.core.somaxconn"],
        proc_value("/proc/sys/net/core/somaxconn")
    );
    assert_eq!(
        m["sysctls"]["net.ipv4.ip_local_port_range"],
        proc_value("/proc/sys/net/ipv4/ip_local_port_range")
    );
    assert_eq!(
        num(m, "cpus") as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    // loadgen inherits this test's descriptor limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    assert_eq!(
        m["rlimit_nofile"],
        serde_json::json!([limit.rlim_cur, limit.rlim_max])
    );
    let commit = m["loadgen_commit"].as_str().unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    // The other modes too.
    let udp = server.addr(1).to_string();
    let r = loadgen_json(&["--udp", &udp, "--rate", "1000", "--duration", "200ms"]);
    assert!(r["manifest"]["kernel"].is_string(), "{r}");
}

#[test]
fn report_says_where_merged_results_were_made_differently() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::ECHO)]);
    let tcp = server.addr(0).to_string();
    let dir = std::env::temp_dir().join(format!("ringcore-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = loadgen_json(&["--tcp", &tcp, "--requests", "50", "--connections", "1"]);
    let mut b = loadgen_json(&["--tcp", &tcp, "--requests", "50", "--connections", "1"]);
    // As if b had run on another kernel.
    b["manifest"]["kernel"] = "5.10.0-other".into();
    let (pa, pb) = (dir.join("a.json"), dir.join("b.json"));
    std::fs::write(&pa, a.to_string()).unwrap();
    std::fs::write(&pb, b.to_string()).unwrap();
    let m = loadgen_json(&["report", pa.to_str().unwrap(), pb.to_str().unwrap()]);
    let differences: Vec<&str> = m["manifest_differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert!(differences[0].starts_with("kernel: "), "{differences:?}");
    assert!(differences[0].contains("5.10.0-other") && differences[0].contains("b.json"));
    // The same results unchanged: nothing to say.
    std::fs::write(&pb, a.to_string()).unwrap();
    let m = loadgen_json(&["report", pa.to_str().unwrap(), pb.to_str().unwrap()]);
    assert_eq!(m["manifest_differences"], serde_json::json!([]), "{m}");
    let _ = std::fs::remove_dir_all(&dir);
}
