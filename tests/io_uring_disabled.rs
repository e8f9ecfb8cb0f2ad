//! With `kernel.io_uring_disabled=2` (io_uring off for every process), the
//! server's defaults and loadgen fall back to epoll and say why, and
//! `--io uring` refuses naming the sysctl.
//!
//! The sysctl is machine-wide, so this test is ignored by a plain `cargo
//! test` (it would take io_uring from every test running beside it);
//! `.ci/run` runs it alone, and it puts the old value back even when it
//! fails.

mod common;

use std::time::Duration;

use common::{run_failing, Lack, Server};
use loadgen::cli::SizeRange;
use loadgen::progress::Live;
use loadgen::tcp::{IoPath, StreamProtocol, TcpPlan, Workload};

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Sets the sysctl; its Drop (which runs on a panic too) restores it.
struct SysctlGuard {
    old: String,
}

impl SysctlGuard {
    fn set(value: &str) -> std::io::Result<SysctlGuard> {
        let old = std::fs::read_to_string(SYSCTL)?;
        std::fs::write(SYSCTL, value)?;
        Ok(SysctlGuard { old })
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, self.old.trim()) {
            eprintln!("could not restore {SYSCTL} to {}: {e}", self.old.trim());
        }
    }
}

#[test]
#[ignore = "sets kernel.io_uring_disabled machine-wide: run alone (.ci/run does)"]
fn with_io_uring_disabled_by_sysctl_everything_falls_back_to_epoll() {
    let _guard = match SysctlGuard::set("2") {
        Ok(guard) => guard,
        Err(e) => {
            common::skip(
                Lack::Root,
                format!("cannot set {SYSCTL} ({e}): needs root on Linux 6.6+"),
            );
            return;
        }
    };
    let server = Server::start(&["--serve", "tcp:0=echo", "--serve", "udp:0=echo"]);
    let stderr = server.wait_stderr("io_uring is unavailable, serving with epoll instead");
    assert!(
        stderr.contains("io_uring_disabled=2"),
        "the sysctl is named: {stderr}"
    );
    assert_eq!(server.io_path().as_deref(), Some("epoll-fallback"));
    let (_, refused) = run_failing(&["--io", "uring", "--serve", "tcp:0=echo"]);
    assert!(refused.contains("io_uring_disabled=2"), "{refused}");

    // loadgen, as a library: auto picks epoll, and the load is verified.
    let io = IoPath::choose(loadgen::cli::IoChoice::Auto).expect("auto never fails for this");
    assert_eq!(io, IoPath::Epoll);
    assert!(IoPath::choose(loadgen::cli::IoChoice::Uring).is_err());
    let plan = TcpPlan {
        addr: server.services[0].2,
        workload: Workload::Stream(StreamProtocol::Echo),
        connections: 4,
        threads: 1,
        cpus: Vec::new(),
        duration: Duration::from_secs(10),
        warmup: Duration::ZERO,
        requests: Some(2_000),
        size: SizeRange { lo: 64, hi: 64 },
        pipeline: 1,
        batch: false,
        rate: None,
        timeout: Duration::from_secs(5),
        interval: None,
        io,
        start_at: None,
        request_log: None,
    };
    let outcome = loadgen::tcp::run(&plan, &Live::default(), true).expect("TCP load on epoll");
    assert_eq!(outcome.fates.completed, 2_000);
    assert_eq!(outcome.errors.total(), 0);

    let udp = loadgen::udp::UdpPlan {
        addr: server.services[1].2,
        rate: Some(100_000.0),
        size: 64,
        duration: Duration::from_millis(500),
        threads: 1,
        cpus: Vec::new(),
        replies: true,
        run_id: 7,
        drain: None,
        interval: None,
        start_at: None,
        cc: false,
        bins: None,
    };
    let report = loadgen::report::run_udp(&udp, None, true).expect("UDP load");
    assert_eq!(report.io, "readiness");
    assert_eq!(report.received, Some(report.sent));
    assert!(report.sent > 40_000);
}
