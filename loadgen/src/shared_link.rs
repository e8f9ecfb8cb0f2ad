//! `loadgen lab --with-tcp`: what an unpaced UDP flood does to everyone
//! else on a shared bottleneck, and what pacing or congestion control
//! changes. In phases of equal length on one time axis, a TCP flow runs
//! through the shaped link beside: nothing, an unpaced UDP flood, UDP paced
//! at half the link, and congestion-controlled UDP (`--cc`). Per phase: TCP
//! goodput, UDP delivered and lost, the qdisc's drops, and Jain's fairness
//! index over the two flows.
//!
//! Each phase has a TCP connection of its own, opened before the run
//! starts: a flood leaves a TCP flow in exponential retransmission backoff
//! for long after it ends (seconds; the README shows it), which would
//! otherwise spill into the next phase and hide what that phase does.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::bulk::{BulkOutcome, BulkPlan};
use crate::lab::{
    block_signals, check_can_build, clean_up_on_signals, enter_namespace, parse_link, qdisc_counts,
    remove_namespaces, sh, ServerInNamespace, DISCARD_PORT, ECHO_PORT, METRICS_PORT, SERVER_IP,
};
use crate::report::{run_udp, UdpReport};
use crate::start::{sleep_until_instant, wall_time_of};
use crate::udp::UdpPlan;

/// The time series' resolution.
const BIN: Duration = Duration::from_millis(100);

/// What the shared-link lab does.
#[derive(Debug, Clone)]
pub struct SharedPlan {
    /// The link rate, in tc's syntax.
    pub link: String,
    /// UDP datagram size.
    pub size: usize,
    /// Length of each phase.
    pub phase: Duration,
    /// The TCP flow's congestion control (`cubic`, `reno`, `bbr`).
    pub tcp_cc: String,
    /// No progress lines.
    pub quiet: bool,
}

/// The UDP sender of a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Udp {
    None,
    Flood,
    Paced(f64),
    Controlled(f64),
}

/// One phase's figures.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// "tcp alone", "udp flood", "udp paced", "udp cc".
    pub name: &'static str,
    /// When it began, seconds from the run's start.
    pub start_s: f64,
    /// TCP goodput (payload bytes the receiver acknowledged), Mbit/s.
    pub tcp_goodput_mbps: f64,
    /// UDP payload handed to the kernel, Mbit/s.
    pub udp_offered_mbps: f64,
    /// UDP payload that crossed the link (echoed back), Mbit/s.
    pub udp_delivered_mbps: f64,
    /// UDP datagrams lost, percent of those offered.
    pub udp_loss_pct: f64,
    /// Packets the shaped qdisc dropped in the phase (TCP's and UDP's).
    pub qdisc_dropped: u64,
    /// Jain's fairness index over the two flows' throughputs (1: equal
    /// shares, 0.5: one flow has it all); null without UDP.
    pub jain_index: Option<f64>,
    /// loadgen's full report of the phase's UDP run.
    pub udp: Option<UdpReport>,
}

/// The shared-link lab's result, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct SharedReport {
    /// Always "lab-shared".
    pub mode: &'static str,
    /// The shaped link rate, Mbit/s.
    pub link_mbps: f64,
    /// Length of each phase, seconds.
    pub phase_s: f64,
    /// The phases in order.
    pub phases: Vec<Phase>,
    /// The time series' interval, seconds.
    pub bin_s: f64,
    /// TCP goodput per interval over the whole run, Mbit/s.
    pub tcp_mbps: Vec<f64>,
    /// UDP delivered per interval over the whole run, Mbit/s.
    pub udp_mbps: Vec<f64>,
    /// Segments TCP retransmitted over the run.
    pub tcp_retransmits: u64,
}

/// Three namespaces in a line, client - router - server, the router's
/// egress toward the server shaped with `tbf`: a bottleneck in the network,
/// as on a real path. (With the shaper on the sender's own device, TCP
/// Small Queues would keep TCP's share of that queue to a millisecond's
/// worth while UDP filled the rest: a host effect, not the network's.)
/// Client side 198.51.100.0/24, server side 192.0.2.0/24 (TEST-NET-2 and
/// -1, which exist only inside); removed on drop.
struct RoutedLink {
    client: String,
    router: String,
    server: String,
    /// The router's shaped device, toward the server.
    shaped: String,
}

impl RoutedLink {
    fn create(link: &str) -> anyhow::Result<Self> {
        let id = std::process::id();
        let lab = RoutedLink {
            client: format!("ringcore-shared-cli-{id}"),
            router: format!("ringcore-shared-rtr-{id}"),
            server: format!("ringcore-shared-srv-{id}"),
            shaped: format!("rcrs{id}"),
        };
        let (c, r, s, rs) = (&lab.client, &lab.router, &lab.server, &lab.shaped);
        let (cr, rc, sr) = (
            format!("rccr{id}"),
            format!("rcrc{id}"),
            format!("rcsr{id}"),
        );
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", c],
            vec!["ip", "netns", "add", r],
            vec!["ip", "netns", "add", s],
            vec![
                "ip", "link", "add", &cr, "type", "veth", "peer", "name", &rc,
            ],
            vec!["ip", "link", "add", &sr, "type", "veth", "peer", "name", rs],
            vec!["ip", "link", "set", &cr, "netns", c],
            vec!["ip", "link", "set", &rc, "netns", r],
            vec!["ip", "link", "set", rs, "netns", r],
            vec!["ip", "link", "set", &sr, "netns", s],
            vec!["ip", "-n", c, "addr", "add", "198.51.100.2/24", "dev", &cr],
            vec!["ip", "-n", r, "addr", "add", "198.51.100.1/24", "dev", &rc],
            vec!["ip", "-n", r, "addr", "add", "192.0.2.2/24", "dev", rs],
            vec!["ip", "-n", s, "addr", "add", "192.0.2.1/24", "dev", &sr],
            // The client's link sends packets, not 64 KB GSO trains: a veth
            // has no wire to serialize a train, so it would reach the
            // bottleneck in one instant (no real link delivers that burst).
            vec!["ip", "-n", c, "link", "set", &cr, "gso_max_segs", "1"],
            vec!["ip", "-n", c, "link", "set", &cr, "up"],
            vec!["ip", "-n", r, "link", "set", &rc, "up"],
            vec!["ip", "-n", r, "link", "set", rs, "up"],
            vec!["ip", "-n", s, "link", "set", &sr, "up"],
            vec!["ip", "-n", c, "link", "set", "lo", "up"],
            vec!["ip", "-n", r, "link", "set", "lo", "up"],
            vec!["ip", "-n", s, "link", "set", "lo", "up"],
            vec![
                "ip",
                "-n",
                c,
                "route",
                "add",
                "default",
                "via",
                "198.51.100.1",
            ],
            vec!["ip", "-n", s, "route", "add", "default", "via", "192.0.2.2"],
            // Forwarding is a per-namespace setting: only the router's.
            vec![
                "ip",
                "netns",
                "exec",
                r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            vec![
                "tc", "-n", r, "qdisc", "add", "dev", rs, "root", "tbf", "rate", link, "burst",
                "32kbit", "latency", "50ms",
            ],
        ];
        for step in steps {
            // Whatever was made so far is removed by `lab`'s drop on error.
            sh(&step)?;
        }
        Ok(lab)
    }

    fn names(&self) -> Vec<String> {
        vec![
            self.client.clone(),
            self.router.clone(),
            self.server.clone(),
        ]
    }
}

impl Drop for RoutedLink {
    fn drop(&mut self) {
        remove_namespaces(&self.names());
    }
}

/// Jain's fairness index of `shares`: (sum x)^2 / (n sum x^2).
pub fn jain(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (shares.len() as f64 * squares)
}

/// Runs the four phases. Needs root and iproute2, as the lab does.
pub fn run(plan: &SharedPlan) -> anyhow::Result<SharedReport> {
    check_can_build()?;
    let link_bps = parse_link(&plan.link)?;
    // Bits on the wire per datagram: payload + UDP 8 + IPv4 20 + Ethernet 14.
    let link_pps = link_bps / ((plan.size + 42) as f64 * 8.0);
    let phases = [
        ("tcp alone", Udp::None),
        ("udp flood", Udp::Flood),
        ("udp paced", Udp::Paced(link_pps * 0.5)),
        ("udp cc", Udp::Controlled(link_pps * 1.5)),
    ];
    let signals = block_signals();
    let lab = RoutedLink::create(&plan.link)?;
    clean_up_on_signals(lab.names(), signals);
    let server = ServerInNamespace::start(&lab.server)?;
    let (router_ns, shaped) = (lab.router.clone(), lab.shaped.clone());
    let client_ns = lab.client.clone();
    let inner = plan.clone();
    let (runs, tcp) = std::thread::spawn(move || -> anyhow::Result<_> {
        let plan = inner;
        enter_namespace(&client_ns)?;
        let echo: SocketAddr = format!("{SERVER_IP}:{ECHO_PORT}").parse()?;
        let metrics: SocketAddr = format!("{SERVER_IP}:{METRICS_PORT}").parse()?;
        // The time axis: the TCP flows connect, then everything starts here.
        let t0 = Instant::now() + Duration::from_millis(500);
        let flows: Vec<BulkPlan> = (0..phases.len())
            .map(|k| {
                Ok(BulkPlan {
                    addr: format!("{SERVER_IP}:{DISCARD_PORT}").parse()?,
                    flows: 1,
                    duration: plan.phase,
                    bin: BIN,
                    start_at: Some(t0 + plan.phase * k as u32),
                    congestion: Some(plan.tcp_cc.clone()),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let tcp: Vec<_> = flows
                .iter()
                .map(|flow| scope.spawn(|| crate::bulk::run(flow, &stop)))
                .collect();
            let mut runs = Vec::new();
            for (k, &(_, udp)) in phases.iter().enumerate() {
                let phase_start = t0 + plan.phase * k as u32;
                sleep_until_instant(phase_start);
                let before = qdisc_counts(&router_ns, &shaped)?;
                let report = match udp {
                    Udp::None => {
                        sleep_until_instant(phase_start + plan.phase);
                        None
                    }
                    Udp::Flood | Udp::Paced(_) | Udp::Controlled(_) => {
                        let udp_plan = UdpPlan {
                            addr: echo,
                            rate: match udp {
                                Udp::Paced(r) | Udp::Controlled(r) => Some(r),
                                _ => None,
                            },
                            size: plan.size,
                            duration: plan.phase,
                            threads: 1,
                            cpus: Vec::new(),
                            replies: true,
                            run_id: std::process::id() ^ k as u32,
                            drain: Some(Duration::from_millis(100)),
                            interval: None,
                            start_at: Some(wall_time_of(phase_start)),
                            cc: matches!(udp, Udp::Controlled(_)),
                            bins: Some(BIN),
                        };
                        Some(run_udp(&udp_plan, Some(metrics), plan.quiet)?)
                    }
                };
                let after = qdisc_counts(&router_ns, &shaped)?;
                runs.push((report, after.1.saturating_sub(before.1)));
            }
            let tcp = tcp
                .into_iter()
                .map(|flow| {
                    flow.join()
                        .map_err(|_| anyhow::anyhow!("a TCP flow's thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<BulkOutcome>>>()?;
            Ok((runs, tcp))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the lab's client thread panicked"))?
    .context("running the shared-link lab")?;
    drop(server);
    drop(lab);
    Ok(summarize(plan, link_bps, &phases, runs, &tcp))
}

fn summarize(
    plan: &SharedPlan,
    link_bps: f64,
    phases: &[(&'static str, Udp)],
    runs: Vec<(Option<UdpReport>, u64)>,
    tcp: &[BulkOutcome],
) -> SharedReport {
    let bins_per_phase = (plan.phase.as_secs_f64() / BIN.as_secs_f64()).round() as usize;
    // The phases' flows, one after the other on the time axis.
    let tcp_mbps: Vec<f64> = tcp
        .iter()
        .flat_map(|flow| {
            let mut bins = flow.bins_mbps.clone();
            bins.resize(bins_per_phase, 0.0);
            bins
        })
        .collect();
    let mbps_of =
        |datagrams: u64, seconds: f64| datagrams as f64 * plan.size as f64 * 8.0 / seconds / 1e6;
    let mut udp_mbps = vec![0.0; tcp_mbps.len()];
    let mut out = Vec::new();
    for (k, ((name, _), (udp, qdisc_dropped))) in phases.iter().zip(runs).enumerate() {
        let tcp_goodput = tcp_mbps
            .iter()
            .skip(k * bins_per_phase)
            .take(bins_per_phase)
            .sum::<f64>()
            / bins_per_phase.max(1) as f64;
        let seconds = plan.phase.as_secs_f64();
        let (offered, delivered, loss) = udp.as_ref().map_or((0.0, 0.0, 0.0), |u| {
            (
                mbps_of(u.sent, seconds),
                mbps_of(u.received.unwrap_or(0), seconds),
                u.loss_pct,
            )
        });
        if let Some(u) = &udp {
            for (i, &count) in u.delivered_bins.iter().enumerate().take(bins_per_phase) {
                if let Some(slot) = udp_mbps.get_mut(k * bins_per_phase + i) {
                    *slot = mbps_of(count, BIN.as_secs_f64());
                }
            }
        }
        out.push(Phase {
            name,
            start_s: seconds * k as f64,
            tcp_goodput_mbps: tcp_goodput,
            udp_offered_mbps: offered,
            udp_delivered_mbps: delivered,
            udp_loss_pct: loss,
            qdisc_dropped,
            jain_index: udp.as_ref().map(|_| jain(&[tcp_goodput, delivered])),
            udp,
        });
    }
    SharedReport {
        mode: "lab-shared",
        link_mbps: link_bps / 1e6,
        phase_s: plan.phase.as_secs_f64(),
        phases: out,
        bin_s: BIN.as_secs_f64(),
        tcp_mbps,
        udp_mbps,
        tcp_retransmits: tcp.iter().map(|flow| flow.retransmits).sum(),
    }
}

/// Prints the phases side by side.
pub fn print(r: &SharedReport) {
    println!(
        "shared-link lab: one TCP flow and a UDP flow through one {:.0} Mbit/s link (tbf), {:.1} s per phase",
        r.link_mbps, r.phase_s
    );
    let row = |label: &str, f: &dyn Fn(&Phase) -> String| {
        let cells: Vec<String> = r.phases.iter().map(|p| format!("{:>12}", f(p))).collect();
        println!("  {label:<28}{}", cells.join(""));
    };
    row("", &|p| p.name.to_string());
    row("TCP goodput (Mbit/s)", &|p| {
        format!("{:.1}", p.tcp_goodput_mbps)
    });
    row("UDP offered (Mbit/s)", &|p| {
        format!("{:.1}", p.udp_offered_mbps)
    });
    row("UDP delivered (Mbit/s)", &|p| {
        format!("{:.1}", p.udp_delivered_mbps)
    });
    row("UDP loss", &|p| format!("{:.2} %", p.udp_loss_pct));
    row("dropped at the qdisc (pkts)", &|p| {
        p.qdisc_dropped.to_string()
    });
    row("Jain's fairness index", &|p| {
        p.jain_index.map_or("-".into(), |j| format!("{j:.3}"))
    });
    println!(
        "  (TCP retransmitted {} segments; Jain's index is 1 for equal shares, 0.5 when one flow has it all)",
        r.tcp_retransmits
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked out by hand, not by the formula under test: equal
    /// shares are perfectly fair; one flow of n holding everything scores
    /// 1/n; (2, 1) is 9/10; (1, 2, 3) is 36/42 = 6/7; (1, 0, 0, 1) is two
    /// of four flows served, 1/2; (9, 1) is 100/164 = 25/41.
    #[test]
    fn jains_index_matches_hand_worked_values() {
        let close = |shares: &[f64], want: f64| {
            let got = jain(shares);
            assert!((got - want).abs() < 1e-12, "{shares:?}: {got} vs {want}");
        };
        close(&[5.0, 5.0], 1.0);
        close(&[3.0, 3.0, 3.0], 1.0);
        close(&[10.0, 0.0], 0.5);
        close(&[7.0, 0.0, 0.0], 1.0 / 3.0);
        close(&[2.0, 1.0], 0.9);
        close(&[1.0, 2.0, 3.0], 6.0 / 7.0);
        close(&[1.0, 0.0, 0.0, 1.0], 0.5);
        close(&[9.0, 1.0], 25.0 / 41.0);
        // Nothing delivered at all is not unfair to anyone.
        close(&[0.0, 0.0], 1.0);
    }
}
