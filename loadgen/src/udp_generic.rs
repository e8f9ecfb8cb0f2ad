//! The generic mode over UDP: each request one datagram from the template,
//! each reply one datagram, checked against the request it answers when
//! `--expect` says what that must be. Closed loop keeps `--pipeline`
//! requests in flight per thread; `--rate` sends them when due (a constant
//! rate or any profile) and counts latency from the due time.
//!
//! UDP carries no connection to pair a reply with its request: a checked
//! reply answers the oldest request in flight whose expected reply it is;
//! an unchecked one answers the oldest request in flight. A request with no
//! reply after `--timeout` is lost; a reply that answers nothing in flight
//! (stray, late, or wrong) is counted as unmatched.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::dialect::Dialect;
use crate::latency::{self, Percentiles};
use crate::progress::Live;
use crate::request_log::{Outcome, RequestLog};
use crate::rng::Rng;
use crate::schedule::RateProfile;

/// What a generic UDP run does.
#[derive(Debug, Clone)]
pub struct UdpGenericPlan {
    /// The server.
    pub addr: SocketAddr,
    /// Writes each request and, when checked, its expected reply.
    pub dialect: Arc<dyn Dialect>,
    /// What the requests are, for the report.
    pub workload: String,
    /// Sending threads, one socket each.
    pub threads: usize,
    /// CPUs to pin them to, round-robin.
    pub cpus: Vec<usize>,
    /// How long to send (ignored with `requests`).
    pub duration: Duration,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Closed loop: requests in flight per thread.
    pub window: usize,
    /// Open loop: the rate over the run.
    pub rate: Option<RateProfile>,
    /// A request unanswered this long is lost.
    pub timeout: Duration,
    /// Write one row per request here (`--request-log`).
    pub request_log: Option<std::path::PathBuf>,
}

/// What a generic UDP run measured.
#[derive(Debug, Serialize)]
pub struct UdpGenericReport {
    /// "udp-generic".
    pub mode: &'static str,
    /// The server.
    pub target: String,
    /// What the requests were.
    pub workload: String,
    /// `--tag`.
    pub tag: Option<String>,
    /// Threads (one socket each).
    pub threads: usize,
    /// Open loop: the mean requested rate (null: closed loop).
    pub requested_rate: Option<f64>,
    /// Datagrams sent, one per request.
    pub sent: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests unanswered after `--timeout`.
    pub lost: u64,
    /// `lost` of `sent`, percent.
    pub lost_pct: f64,
    /// Replies that answered no request in flight (stray, late, or not
    /// what any request in flight expects).
    pub unmatched: u64,
    /// Datagrams refused by the send path (a full socket buffer).
    pub send_errors: u64,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received.
    pub bytes_received: u64,
    /// First send to last reply (or, open loop, to the last request's due
    /// time when that came later), seconds.
    pub duration_s: f64,
    /// Answers per second over it.
    pub answered_per_sec: f64,
    /// From each request's due time (its send, closed loop), microseconds.
    pub latency_us: Percentiles,
    /// From each request's send, microseconds.
    pub service_us: Percentiles,
    /// The latency histogram (nanoseconds), for `--hdr-log`.
    #[serde(skip)]
    pub latency: Histogram<u64>,
    /// The service-time histogram (nanoseconds), for `--hdr-log`.
    #[serde(skip)]
    pub service: Histogram<u64>,
    /// When the run started, for `--hdr-log`.
    #[serde(skip)]
    pub started: std::time::SystemTime,
}

/// One request in flight.
struct Pending {
    /// This thread's request number: consecutive along the queue.
    local: u64,
    due: Instant,
    sent: Instant,
    /// Answered (or never sent): it only waits to leave the front.
    answered: bool,
    /// The reply it expects, when checked (its key in `expecting`).
    expected: Option<Vec<u8>>,
    /// The request's size, for `--request-log`.
    bytes: u32,
}

#[derive(Default)]
struct Counts {
    sent: u64,
    answered: u64,
    lost: u64,
    unmatched: u64,
    send_errors: u64,
    bytes_sent: u64,
    bytes_received: u64,
    first_send: Option<Instant>,
    /// The last answer.
    last_reply: Option<Instant>,
    /// Open loop: when the last request fell due (a server that answers
    /// slowly does not make the run shorter).
    last_due: Option<Instant>,
}

struct Thread {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    counts: Counts,
}

/// Runs the plan.
pub fn run(plan: &UdpGenericPlan, live: &Live, quiet: bool) -> anyhow::Result<UdpGenericReport> {
    if plan.window == 0 {
        anyhow::bail!("--pipeline must be at least 1");
    }
    let log = plan
        .request_log
        .as_deref()
        .map(crate::request_log::create)
        .transpose()?;
    let start = Instant::now();
    let started = std::time::SystemTime::now();
    let threads = crate::progress::run_threads(
        vec![(); plan.threads],
        &plan.cpus,
        live,
        "requests",
        quiet,
        |t, ()| run_thread(plan, t, start, live, log.clone().map(RequestLog::new)),
    )?;
    let mut latency = latency::histogram();
    let mut service = latency::histogram();
    let mut c = Counts::default();
    for t in &threads {
        latency.add(&t.latency).context("merging histograms")?;
        service.add(&t.service).context("merging histograms")?;
        let o = &t.counts;
        c.sent += o.sent;
        c.answered += o.answered;
        c.lost += o.lost;
        c.unmatched += o.unmatched;
        c.send_errors += o.send_errors;
        c.bytes_sent += o.bytes_sent;
        c.bytes_received += o.bytes_received;
        c.first_send = [c.first_send, o.first_send].into_iter().flatten().min();
        c.last_reply = c.last_reply.max(o.last_reply);
        c.last_due = c.last_due.max(o.last_due);
    }
    let seconds = match (c.first_send, c.last_reply.max(c.last_due)) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 1e-6,
    };
    Ok(UdpGenericReport {
        mode: "udp-generic",
        target: plan.addr.to_string(),
        workload: plan.workload.clone(),
        tag: None,
        threads: plan.threads,
        requested_rate: plan
            .rate
            .as_ref()
            .map(|r| r.mean_over(plan.duration.as_secs_f64())),
        sent: c.sent,
        answered: c.answered,
        lost: c.lost,
        lost_pct: if c.sent == 0 {
            0.0
        } else {
            c.lost as f64 * 100.0 / c.sent as f64
        },
        unmatched: c.unmatched,
        send_errors: c.send_errors,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
        duration_s: seconds,
        answered_per_sec: c.answered as f64 / seconds,
        latency_us: Percentiles::of(&latency),
        service_us: Percentiles::of(&service),
        latency,
        service,
        started,
    })
}

fn run_thread(
    plan: &UdpGenericPlan,
    t: usize,
    start: Instant,
    live: &Live,
    mut log: Option<RequestLog>,
) -> anyhow::Result<Thread> {
    let domain = if plan.addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).context("creating a UDP socket")?;
    socket
        .connect(&SockAddr::from(plan.addr))
        .with_context(|| format!("connecting a UDP socket to {}", plan.addr))?;
    socket
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    let profile = plan.rate.as_ref().map(|r| r.share(plan.threads));
    let quota = plan
        .requests
        .map(|n| crate::tcp::share_u64(n, plan.threads, t));
    let deadline = start + plan.duration;
    // A --requests run against a server too slow to finish it still ends:
    // a minute (and the timeouts) past --duration, whatever is left.
    let give_up = deadline + plan.timeout * 4 + Duration::from_secs(60);
    let mut rng = Rng::new(t as u64 + 1);
    let mut out = Thread {
        latency: latency::histogram(),
        service: latency::histogram(),
        counts: Counts::default(),
    };
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // Checked replies: expected bytes -> the requests expecting them, oldest first.
    let mut expecting: HashMap<Vec<u8>, VecDeque<u64>> = HashMap::new();
    let (mut request, mut exact) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 65536];
    let mut issued = 0u64;
    let mut checked = false;
    loop {
        let now = Instant::now();
        let running = match (quota, &profile) {
            (Some(q), _) => issued < q && now < give_up,
            // Open loop: until every request due before the end is sent,
            // however late the thread got round to it (a request that fell
            // due is never silently dropped from the count).
            (None, Some(p)) => p
                .due(issued)
                .is_some_and(|s| start + Duration::from_secs_f64(s) < deadline),
            (None, None) => now < deadline,
        };
        // Send what is due (open loop) or what the window allows (closed).
        while running && quota.is_none_or(|q| issued < q) {
            let due = match &profile {
                Some(p) => match p.due(issued).map(|s| start + Duration::from_secs_f64(s)) {
                    Some(due) if due <= now && (plan.requests.is_some() || due < deadline) => due,
                    _ => break,
                },
                None if pending.len() < plan.window => now,
                None => break,
            };
            // Unique over the run's threads.
            let seq = issued * plan.threads as u64 + t as u64;
            request.clear();
            exact.clear();
            let expect = plan
                .dialect
                .request(seq, &mut rng, &mut request, &mut exact);
            let local = issued;
            issued += 1;
            if profile.is_some() {
                out.counts.last_due = Some(due);
            }
            let result = socket.send(&request);
            if let Err(e) = &result {
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    anyhow::bail!(nobody_listens(plan.addr));
                }
            }
            let sent = result.is_ok();
            if sent {
                out.counts.sent += 1;
                out.counts.bytes_sent += request.len() as u64;
                out.counts.first_send.get_or_insert(now);
                checked = expect.kind != 0;
                if checked {
                    match expecting.get_mut(&exact) {
                        Some(waiting) => waiting.push_back(local),
                        None => {
                            expecting.insert(exact.clone(), VecDeque::from([local]));
                        }
                    }
                }
            } else {
                out.counts.send_errors += 1;
                if let Some(log) = &mut log {
                    log.row(start, due, None, now, request.len(), Outcome::SendError);
                }
            }
            pending.push_back(Pending {
                local,
                due,
                sent: now,
                answered: !sent,
                expected: (sent && expect.kind != 0).then(|| exact.clone()),
                bytes: request.len() as u32,
            });
        }
        // Every reply waiting.
        loop {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ECONNREFUSED) {
                    anyhow::bail!(nobody_listens(plan.addr));
                }
                break;
            }
            let reply = &buf[..n as usize];
            let at = Instant::now();
            out.counts.bytes_received += reply.len() as u64;
            let first = pending.front().map_or(u64::MAX, |p| p.local);
            let answers = if checked {
                let local = expecting.get_mut(reply).and_then(VecDeque::pop_front);
                if expecting.get(reply).is_some_and(VecDeque::is_empty) {
                    expecting.remove(reply);
                }
                local.map(|l| (l - first) as usize)
            } else {
                pending.iter().position(|p| !p.answered)
            };
            match answers
                .and_then(|i| pending.get_mut(i))
                .filter(|p| !p.answered)
            {
                Some(p) => {
                    p.answered = true;
                    out.counts.answered += 1;
                    out.counts.last_reply = Some(at);
                    out.latency
                        .saturating_record(at.saturating_duration_since(p.due).as_nanos() as u64);
                    out.service
                        .saturating_record(at.saturating_duration_since(p.sent).as_nanos() as u64);
                    live.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(log) = &mut log {
                        log.row(
                            start,
                            p.due,
                            Some(p.sent),
                            at,
                            p.bytes as usize,
                            Outcome::Ok,
                        );
                    }
                }
                None => out.counts.unmatched += 1,
            }
        }
        // The answered at the front leave; the unanswered past the timeout are lost.
        let now = Instant::now();
        while let Some(p) = pending.front() {
            if p.answered {
                pending.pop_front();
            } else if now.saturating_duration_since(p.sent) >= plan.timeout {
                out.counts.lost += 1;
                if let Some(p) = pending.pop_front() {
                    if let Some(log) = &mut log {
                        log.row(
                            start,
                            p.due,
                            Some(p.sent),
                            now,
                            p.bytes as usize,
                            Outcome::Timeout,
                        );
                    }
                    // It is the oldest expecting its reply: first in its queue.
                    if let Some(expected) = &p.expected {
                        if let Some(waiting) = expecting.get_mut(expected) {
                            waiting.retain(|&l| l != p.local);
                            if waiting.is_empty() {
                                expecting.remove(expected);
                            }
                        }
                    }
                }
            } else {
                break;
            }
        }
        if !running && pending.is_empty() {
            if let Some(log) = &mut log {
                log.finish().context("writing --request-log")?;
            }
            break;
        }
        // Closed loop: a slot that a reply freed is refilled at once.
        let room = profile.is_none() && pending.len() < plan.window;
        if running && room && quota.is_none_or(|q| issued < q) {
            continue;
        }
        // Wait for a reply, the next due request, or the oldest's timeout.
        let mut wake = now + Duration::from_millis(10);
        if let Some(p) = pending.front() {
            wake = wake.min(p.sent + plan.timeout);
        }
        if let (true, Some(p)) = (running, &profile) {
            if let Some(s) = p.due(issued) {
                wake = wake.min(start + Duration::from_secs_f64(s));
            }
        }
        let wait = wake.saturating_duration_since(Instant::now());
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd and a valid timespec; no signal mask.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    }
    Ok(out)
}

/// The error when ICMP says no one listens.
fn nobody_listens(addr: SocketAddr) -> String {
    format!("nothing listens on UDP {addr} (ICMP port unreachable): start the server or check the address")
}

/// Prints a generic UDP run's report for a person.
pub fn print(r: &UdpGenericReport) {
    let mode = match r.requested_rate {
        Some(rate) => format!("open loop at {rate:.0} req/s on average"),
        None => "closed loop".into(),
    };
    println!(
        "UDP generic -> {}: {} thread(s), {mode}",
        r.target, r.threads
    );
    println!("  workload     {}", r.workload);
    println!(
        "  requests     sent {} = answered {} + lost {} ({:.3} %); {} replies unmatched; {} refused by the send path",
        r.sent, r.answered, r.lost, r.lost_pct, r.unmatched, r.send_errors
    );
    println!(
        "  rate         {:.0} answers/s over {:.2} s ({} B sent, {} B received)",
        r.answered_per_sec, r.duration_s, r.bytes_sent, r.bytes_received
    );
    println!("  latency      {}", r.latency_us.row());
    println!("  service      {} (from each send)", r.service_us.row());
}
