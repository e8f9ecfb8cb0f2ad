//! `loadgen --tcp ADDR --bulk`: TCP flows that write as fast as their
//! connections allow (to a discard service), like `iperf3 -c`, and the
//! goodput they achieved per interval: the bytes the peer acknowledged
//! (TCP_INFO's `tcpi_bytes_acked`), which is what crossed the network, not
//! what sits in the socket buffer.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// Bytes per write.
const CHUNK: usize = 128 * 1024;

/// What a bulk run does.
#[derive(Debug, Clone)]
pub struct BulkPlan {
    /// The sink (a discard service).
    pub addr: SocketAddr,
    /// TCP flows at once.
    pub flows: usize,
    /// How long to send.
    pub duration: Duration,
    /// Goodput is sampled per interval of this length.
    pub bin: Duration,
    /// Connect first, then start sending at this instant (the lab's time
    /// axis); `None`: at once.
    pub start_at: Option<Instant>,
    /// The flows' TCP congestion control (`TCP_CONGESTION`: `cubic`,
    /// `reno`, `bbr`); `None`: the system's default.
    pub congestion: Option<String>,
}

/// What a bulk run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BulkOutcome {
    /// Flows.
    pub flows: usize,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Bytes the peer acknowledged, all flows.
    pub bytes_acked: u64,
    /// Goodput over the run, Mbit/s.
    pub goodput_mbps: f64,
    /// Length of each interval, seconds.
    pub bin_s: f64,
    /// Goodput per interval, Mbit/s, all flows.
    pub bins_mbps: Vec<f64>,
    /// Bytes acknowledged per flow.
    pub per_flow_bytes: Vec<u64>,
    /// Segments the kernel retransmitted, all flows.
    pub retransmits: u64,
    /// Smoothed round trip at the end, per flow, microseconds.
    pub rtt_us: Vec<u32>,
}

/// A flow's counters as the kernel keeps them.
#[derive(Debug, Clone, Copy, Default)]
struct FlowInfo {
    bytes_acked: u64,
    retransmits: u64,
    rtt_us: u32,
}

fn flow_info(stream: &TcpStream) -> io::Result<FlowInfo> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are live and describe the buffer.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FlowInfo {
        bytes_acked: info.tcpi_bytes_acked,
        retransmits: u64::from(info.tcpi_total_retrans),
        rtt_us: info.tcpi_rtt,
    })
}

/// Runs the plan until its duration has passed or `stop` is set.
pub fn run(plan: &BulkPlan, stop: &AtomicBool) -> anyhow::Result<BulkOutcome> {
    if plan.flows == 0 {
        anyhow::bail!("--connections must be at least 1 for --bulk");
    }
    let streams = (0..plan.flows)
        .map(|_| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(plan.addr),
                socket2::Type::STREAM.cloexec(),
                None,
            )
            .context("creating a TCP socket")?;
            if let Some(cc) = &plan.congestion {
                socket.set_tcp_congestion(cc.as_bytes()).with_context(|| {
                    format!("TCP congestion control '{cc}' (see /proc/sys/net/ipv4/tcp_available_congestion_control)")
                })?;
            }
            socket
                .connect_timeout(&plan.addr.into(), Duration::from_secs(5))
                .map_err(|e| crate::tcp::connect_error(plan.addr, &e))?;
            let s: TcpStream = socket.into();
            // Writes return now and then, so a writer notices the end.
            s.set_write_timeout(Some(Duration::from_millis(50)))
                .context("setting a send timeout")?;
            Ok(s)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let written = AtomicU64::new(0);
    let start = match plan.start_at {
        Some(at) => {
            crate::start::sleep_until_instant(at);
            at
        }
        None => Instant::now(),
    };
    // What the connects' handshakes were acknowledged with is not goodput.
    let first: Vec<FlowInfo> = streams
        .iter()
        .map(|s| flow_info(s).unwrap_or_default())
        .collect();
    let mut last = first.clone();
    let end = start + plan.duration;
    let bin = plan.bin.max(Duration::from_millis(10));
    let mut bins = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for stream in &streams {
            let written = &written;
            scope.spawn(move || {
                let chunk = vec![0x5au8; CHUNK];
                let mut stream = stream;
                while Instant::now() < end && !stop.load(Relaxed) {
                    match stream.write(&chunk) {
                        Ok(n) => {
                            written.fetch_add(n as u64, Relaxed);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return, // reset: the flow is over
                    }
                }
            });
        }
        // The sampler: every bin, how much more each flow got acknowledged.
        let mut next = start + bin;
        loop {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            let mut delta = 0;
            for (stream, prev) in streams.iter().zip(last.iter_mut()) {
                if let Ok(info) = flow_info(stream) {
                    delta += info.bytes_acked.saturating_sub(prev.bytes_acked);
                    *prev = info;
                }
            }
            bins.push(delta);
            if next >= end || stop.load(Relaxed) {
                return Ok(());
            }
            next += bin;
        }
    })?;
    let elapsed = start.elapsed().min(plan.duration.max(bin)).as_secs_f64();
    let bytes_acked: u64 = bins.iter().sum();
    let mbps = |bytes: u64, seconds: f64| bytes as f64 * 8.0 / seconds / 1e6;
    Ok(BulkOutcome {
        flows: plan.flows,
        duration_s: elapsed,
        bytes_acked,
        goodput_mbps: mbps(bytes_acked, elapsed),
        bin_s: bin.as_secs_f64(),
        bins_mbps: bins.iter().map(|&b| mbps(b, bin.as_secs_f64())).collect(),
        per_flow_bytes: last
            .iter()
            .zip(&first)
            .map(|(l, f)| l.bytes_acked - f.bytes_acked)
            .collect(),
        retransmits: last.iter().map(|f| f.retransmits).sum(),
        rtt_us: last.iter().map(|f| f.rtt_us).collect(),
    })
}

/// Prints a bulk run for people.
pub fn print(target: SocketAddr, o: &BulkOutcome) {
    println!(
        "TCP bulk -> {target}: {} flow(s), {:.2} s",
        o.flows, o.duration_s
    );
    println!(
        "  goodput      {:.1} Mbit/s ({} B acknowledged; {} retransmitted segments)",
        o.goodput_mbps, o.bytes_acked, o.retransmits
    );
    let per_flow: Vec<String> = o
        .per_flow_bytes
        .iter()
        .map(|b| format!("{:.1}", *b as f64 * 8.0 / o.duration_s / 1e6))
        .collect();
    println!("  per flow     {} Mbit/s", per_flow.join(", "));
    let bins: Vec<String> = o.bins_mbps.iter().map(|m| format!("{m:.0}")).collect();
    println!("  every {:.0} ms {} Mbit/s", o.bin_s * 1e3, bins.join(" "));
}
