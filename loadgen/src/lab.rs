//! The network lab: two network namespaces joined by a veth pair whose
//! client side is shaped by `tc ... tbf`, a ringcore engine serving UDP echo
//! in one, loadgen in the other. A paced run under the link rate and an
//! unpaced flood over it, side by side, with the drops the qdisc counted:
//! the chapter's warning ("you can easily flood a network") made visible.
//!
//! Both ends run in this process: a thread that enters a namespace with
//! `setns` stays there, and the threads it starts (the engine's workers)
//! inherit it. The namespaces use 192.0.2.0/24 (TEST-NET-1), which exists
//! only inside them, and are removed on every exit path, Ctrl-C included.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use engine::{Engine, EngineConfig, Handler, ServiceConfig};
use serde::Serialize;

use crate::report::{run_udp, UdpReport};
use crate::udp::UdpPlan;

pub(crate) const SERVER_IP: &str = "192.0.2.1";
const CLIENT_IP: &str = "192.0.2.2";
pub(crate) const ECHO_PORT: u16 = 9000;
/// The TCP discard service the shared-link lab's TCP flow writes to.
pub(crate) const DISCARD_PORT: u16 = 9009;
pub(crate) const METRICS_PORT: u16 = 9100;

/// What the lab does.
#[derive(Debug, Clone)]
pub struct LabPlan {
    /// The link rate, in tc's syntax (e.g. `100mbit`).
    pub link: String,
    /// Datagram size.
    pub size: usize,
    /// Length of each of the two runs.
    pub duration: Duration,
    /// Rate of the paced run, datagrams/s (default: 70 % of the link).
    pub paced_pps: Option<f64>,
    /// Instead of paced vs flood, one paced run per rate.
    pub sweep: Option<Vec<f64>>,
    /// No progress lines.
    pub quiet: bool,
}

/// One run of the lab with the qdisc's view of it.
#[derive(Debug, Serialize)]
pub struct LabRun {
    /// "paced", "flood", or "step" (a sweep's).
    pub name: &'static str,
    /// loadgen's report of the run.
    pub udp: UdpReport,
    /// Packets the shaped qdisc sent during the run.
    pub qdisc_sent: u64,
    /// Packets the shaped qdisc dropped during the run.
    pub qdisc_dropped: u64,
}

/// The lab's result, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct LabReport {
    /// Always "lab".
    pub mode: &'static str,
    /// The shaped link rate.
    pub link: String,
    /// The link rate in datagrams/s of this size (wire overhead included).
    pub link_pps: f64,
    /// The paced run, then the flood.
    pub runs: Vec<LabRun>,
}

/// Parses tc's rate syntax (`100mbit`, `1gbit`, `500kbit`) into bits/s.
pub fn parse_link(text: &str) -> anyhow::Result<f64> {
    let t = text.trim().to_ascii_lowercase();
    let (number, scale) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suffix, scale)| t.strip_suffix(suffix).map(|n| (n.to_string(), *scale)))
        .with_context(|| format!("'{text}' is not a link rate like 100mbit"))?;
    let value: f64 = number
        .parse()
        .with_context(|| format!("'{text}' is not a link rate like 100mbit"))?;
    if value <= 0.0 {
        bail!("the link rate must be above zero");
    }
    Ok(value * scale)
}

/// Fails clearly unless this process can build the lab: root and iproute2.
pub(crate) fn check_can_build() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("`loadgen lab` needs root: it creates network namespaces and shapes a link (run it with sudo)");
    }
    for tool in ["ip", "tc"] {
        Command::new(tool)
            .arg("-V")
            .output()
            .with_context(|| format!("`{tool}` is not installed (package iproute2)"))?;
    }
    Ok(())
}

/// Removes the namespaces `names` and exits on Ctrl-C or SIGTERM
/// (`signals`, from [`block_signals`] before the namespaces were made).
pub(crate) fn clean_up_on_signals(names: Vec<String>, signals: libc::sigset_t) {
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: `signals` is a valid, initialised signal set.
        unsafe { libc::sigwait(&signals, &mut signal) };
        remove_namespaces(&names);
        eprintln!("loadgen lab: interrupted; network namespaces removed");
        std::process::exit(130);
    });
}

/// Runs the lab. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2.
pub fn run(plan: &LabPlan) -> anyhow::Result<LabReport> {
    check_can_build()?;
    let link_bps = parse_link(&plan.link)?;
    // Bits on the wire per datagram: payload + UDP 8 + IPv4 20 + Ethernet 14.
    let link_pps = link_bps / ((plan.size + 42) as f64 * 8.0);
    let paced = plan.paced_pps.unwrap_or(link_pps * 0.7);

    // Blocked before the namespaces exist, so no signal finds them unowned.
    let signals = block_signals();
    let lab = Namespaces::create(&plan.link)?;
    clean_up_on_signals(vec![lab.server.clone(), lab.client.clone()], signals);

    let server = ServerInNamespace::start(&lab.server)?;
    let client_ns = lab.client.clone();
    let veth = lab.client_veth.clone();
    let plan = plan.clone();
    let runs = std::thread::spawn(move || -> anyhow::Result<Vec<LabRun>> {
        enter_namespace(&client_ns)?;
        let target: SocketAddr = format!("{SERVER_IP}:{ECHO_PORT}").parse()?;
        let metrics: SocketAddr = format!("{SERVER_IP}:{METRICS_PORT}").parse()?;
        let mut runs = Vec::new();
        let schedule: Vec<(&'static str, Option<f64>)> = match &plan.sweep {
            Some(rates) => rates.iter().map(|&r| ("step", Some(r))).collect(),
            None => vec![("paced", Some(paced)), ("flood", None)],
        };
        for (name, rate) in schedule {
            let udp_plan = UdpPlan {
                addr: target,
                rate,
                size: plan.size,
                duration: plan.duration,
                threads: 1,
                cpus: Vec::new(),
                replies: true,
                run_id: std::process::id() ^ runs.len() as u32,
                drain: None,
                interval: None,
                start_at: None,
                cc: false,
                bins: None,
            };
            let before = qdisc_counts(&client_ns, &veth)?;
            let udp = run_udp(&udp_plan, Some(metrics), plan.quiet)?;
            let after = qdisc_counts(&client_ns, &veth)?;
            runs.push(LabRun {
                name,
                udp,
                qdisc_sent: after.0.saturating_sub(before.0),
                qdisc_dropped: after.1.saturating_sub(before.1),
            });
        }
        Ok(runs)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the lab's client thread panicked"))??;
    drop(server);
    drop(lab);
    Ok(LabReport {
        mode: "lab",
        link: format!("{:.0} Mbit/s", link_bps / 1e6),
        link_pps,
        runs,
    })
}

/// Prints the two runs side by side.
pub fn print(report: &LabReport) {
    println!(
        "network lab: {CLIENT_IP} (client namespace) -> {SERVER_IP}:{ECHO_PORT} (ringcore UDP echo) over a veth shaped to {} (tbf on the client's egress, {:.0} datagrams/s of {} B)",
        report.link,
        report.link_pps,
        report.runs.first().map_or(0, |r| r.udp.size)
    );
    let row = |label: &str, f: &dyn Fn(&LabRun) -> String| {
        let cells: Vec<String> = report
            .runs
            .iter()
            .map(|r| format!("{:>16}", f(r)))
            .collect();
        println!("  {label:<34}{}", cells.join(""));
    };
    row("", &|r| r.name.to_string());
    row("offered (datagrams/s)", &|r| {
        r.udp
            .requested_pps
            .map_or("max".into(), |p| format!("{p:.0}"))
    });
    row("handed to the kernel (datagrams/s)", &|r| {
        format!("{:.0}", r.udp.achieved_pps)
    });
    row("refused by the send path (ENOBUFS)", &|r| {
        r.udp.loss.not_sent.to_string()
    });
    row("dropped at the qdisc (tc -s)", &|r| {
        r.qdisc_dropped.to_string()
    });
    row("sent on by the qdisc (packets)", &|r| {
        r.qdisc_sent.to_string()
    });
    row("received by the server", &|r| {
        r.udp
            .server
            .map_or("?".into(), |s| s.datagrams_in.to_string())
    });
    row("echoes back at loadgen", &|r| {
        r.udp.received.unwrap_or(0).to_string()
    });
    row("delivered (datagrams/s)", &|r| {
        format!(
            "{:.0}",
            r.udp.received.unwrap_or(0) as f64 / r.udp.duration_s
        )
    });
    row("loss", &|r| format!("{:.2} %", r.udp.loss_pct));
    row("round trip p99 (us)", &|r| {
        format!("{:.0}", r.udp.rtt_us.p99)
    });
    println!("  (a GSO send is refused as a whole, while the qdisc counts every segment it drops: the two drop rows overlap)");
}

/// The lab's two namespaces and the veth pair between them; removed on drop.
pub(crate) struct Namespaces {
    pub(crate) server: String,
    pub(crate) client: String,
    pub(crate) client_veth: String,
}

impl Namespaces {
    pub(crate) fn create(link: &str) -> anyhow::Result<Self> {
        let id = std::process::id();
        let ns = Namespaces {
            server: format!("ringcore-lab-srv-{id}"),
            client: format!("ringcore-lab-cli-{id}"),
            client_veth: format!("rclc{id}"),
        };
        let server_veth = format!("rcls{id}");
        let (s, c, sv, cv) = (&ns.server, &ns.client, &server_veth, &ns.client_veth);
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", s],
            vec!["ip", "netns", "add", c],
            vec!["ip", "link", "add", sv, "type", "veth", "peer", "name", cv],
            vec!["ip", "link", "set", sv, "netns", s],
            vec!["ip", "link", "set", cv, "netns", c],
            vec!["ip", "-n", s, "addr", "add", "192.0.2.1/24", "dev", sv],
            vec!["ip", "-n", c, "addr", "add", "192.0.2.2/24", "dev", cv],
            vec!["ip", "-n", s, "link", "set", sv, "up"],
            vec!["ip", "-n", c, "link", "set", cv, "up"],
            vec!["ip", "-n", s, "link", "set", "lo", "up"],
            vec!["ip", "-n", c, "link", "set", "lo", "up"],
            vec![
                "tc", "-n", c, "qdisc", "add", "dev", cv, "root", "tbf", "rate", link, "burst",
                "32kbit", "latency", "50ms",
            ],
        ];
        for step in steps {
            // Whatever was made so far is removed by `ns`'s drop on error.
            sh(&step)?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        remove_namespaces(&[self.server.clone(), self.client.clone()]);
    }
}

/// Deletes the named namespaces (and so the veth ends inside them).
pub(crate) fn remove_namespaces(names: &[String]) {
    for ns in names {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// Runs a command, failing with its stderr.
pub(crate) fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Moves the calling thread into the named network namespace.
pub(crate) fn enter_namespace(name: &str) -> anyhow::Result<()> {
    let file = File::open(format!("/var/run/netns/{name}"))
        .with_context(|| format!("opening namespace {name}"))?;
    // SAFETY: setns on a valid namespace descriptor; only this thread moves.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering namespace {name}"));
    }
    Ok(())
}

/// (packets sent, packets dropped) of the root qdisc on `dev` in `ns`.
pub(crate) fn qdisc_counts(ns: &str, dev: &str) -> anyhow::Result<(u64, u64)> {
    let out = Command::new("tc")
        .args(["-n", ns, "-s", "qdisc", "show", "dev", dev])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_qdisc_counts(&text))
}

/// Reads " Sent B bytes P pkt (dropped D, ..." from `tc -s qdisc` output.
pub fn parse_qdisc_counts(text: &str) -> (u64, u64) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .and_then(|w| w.trim_end_matches(',').parse().ok())
            .unwrap_or(0)
    };
    let packets = words
        .iter()
        .position(|w| *w == "pkt")
        .and_then(|i| words.get(i - 1))
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    (packets, after("(dropped"))
}

/// Blocks SIGINT and SIGTERM in this thread and those it starts; the set.
pub(crate) fn block_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; the mask
    // change affects this thread and the threads it starts afterwards.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// A ringcore engine serving UDP echo, TCP discard (the shared-link lab's
/// sink) and its metrics inside a namespace.
pub(crate) struct ServerInNamespace {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerInNamespace {
    pub(crate) fn start(ns: &str) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let ns = ns.to_string();
        let thread = std::thread::spawn(move || {
            let started = (|| -> anyhow::Result<Engine> {
                enter_namespace(&ns)?;
                let addr: SocketAddr = format!("{SERVER_IP}:{ECHO_PORT}").parse()?;
                let discard: SocketAddr = format!("{SERVER_IP}:{DISCARD_PORT}").parse()?;
                let engine = Engine::start(EngineConfig {
                    services: vec![
                        ServiceConfig {
                            addr,
                            protocol: "echo".into(),
                            handler: Handler::Datagram(Arc::new(|| {
                                Box::new(protocols::echo::EchoDatagram)
                            })),
                        },
                        ServiceConfig {
                            addr: discard,
                            protocol: "discard".into(),
                            handler: Handler::Stream(Arc::new(|_| {
                                Box::new(protocols::discard::DiscardStream)
                            })),
                        },
                    ],
                    cpus: vec![0],
                    ..EngineConfig::default()
                })?;
                engine::metrics::serve(
                    format!("{SERVER_IP}:{METRICS_PORT}").parse()?,
                    engine.stats(),
                    "io_uring",
                )?;
                Ok(engine)
            })();
            match started {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.recv();
                    engine.shutdown_handle().shutdown();
                    let _ = engine.join();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the lab's server thread died"))?
            .context("starting ringcore in the server namespace")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ServerInNamespace {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rates_and_qdisc_output() {
        assert_eq!(parse_link("100mbit").unwrap(), 100e6);
        assert_eq!(parse_link("1gbit").unwrap(), 1e9);
        assert!(parse_link("fast").is_err());
        let tc = "qdisc tbf 8001: root refcnt 2 rate 100Mbit burst 4Kb lat 50ms \n Sent 1234 bytes 56 pkt (dropped 789, overlimits 10 requeues 0) \n backlog 0b 0p requeues 0\n";
        assert_eq!(parse_qdisc_counts(tc), (56, 789));
    }
}
