//! The command line's modes, run: each builds its plan, runs it and emits
//! the report. The reports themselves (and their text and JSON forms) live
//! in [`crate::report`], which depends on no mode runner.

use anyhow::{bail, Context};

use crate::cli::{parse_cpus, Cli, ClientTransport, Command, Rate, TcpProtocol};
use crate::lab::{self, LabPlan};
use crate::latency::Percentiles;
use crate::plot::RatePoint;
use crate::progress::Live;
use crate::report::{print_sweep, print_tcp, print_udp, run_udp, BotReport, TcpReport, UdpReport};
use crate::schedule::RateProfile;
use crate::targets::Target;
use crate::tcp::{self, TcpPlan, Workload};
use crate::udp::UdpPlan;

/// Runs the mode the command line selects and prints its report.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    if let Some(Command::Client {
        transport,
        addr,
        script,
        reply_timeout,
    }) = &cli.command
    {
        return match transport {
            ClientTransport::Tcp => crate::client::tcp(*addr, script.as_deref(), *reply_timeout),
            ClientTransport::Udp => crate::client::udp(*addr, script.as_deref(), *reply_timeout),
        };
    }
    if let Some(Command::Report { files, merged_log }) = &cli.command {
        let merged = crate::merge::merge(files)?;
        if let Some(path) = merged_log {
            crate::merge::write_log(&merged, path)?;
        }
        if cli.json {
            println!("{}", serde_json::to_string(&merged)?);
        } else {
            crate::merge::print(&merged);
        }
        return Ok(());
    }
    if let Some(Command::Lab {
        link,
        size,
        duration,
        paced,
        sweep,
        with_tcp,
        tcp_cc,
        plot,
    }) = &cli.command
    {
        if *with_tcp {
            let plan = crate::shared_link::SharedPlan {
                link: link.clone(),
                size: usize::try_from(*size)?,
                phase: duration.unwrap_or(std::time::Duration::from_secs(10)),
                tcp_cc: tcp_cc.clone(),
                quiet: cli.quiet,
            };
            let report = crate::shared_link::run(&plan)?;
            if cli.json {
                print_json(&report, &[], None)?;
            } else {
                crate::shared_link::print(&report);
            }
            if let Some(path) = plot {
                crate::plot::shared_link_svg(&report, path)?;
                if !cli.json {
                    println!("plot: {}", path.display());
                }
            }
            return Ok(());
        }
        if plot.is_some() && sweep.is_none() {
            bail!("--plot draws a --sweep or the --with-tcp time series: give one of them");
        }
        let plan = LabPlan {
            link: link.clone(),
            size: usize::try_from(*size)?,
            duration: duration.unwrap_or(std::time::Duration::from_secs(3)),
            paced_pps: *paced,
            sweep: sweep.map(|s| s.rates()),
            quiet: cli.quiet,
        };
        let report = lab::run(&plan)?;
        let steps: Vec<&UdpReport> = report.runs.iter().map(|r| &r.udp).collect();
        if cli.json {
            print_json(&report, &[], None)?;
        } else if plan.sweep.is_some() {
            print_sweep(&steps);
        } else {
            lab::print(&report);
        }
        if let Some(path) = plot {
            crate::plot::sweep_svg(&steps, path)?;
            if !cli.json {
                println!("plot: {}", path.display());
            }
        }
        return Ok(());
    }
    let cpus = match &cli.cpus {
        Some(list) => parse_cpus(list).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    if cli.duration.is_zero() {
        bail!("--duration must be above zero");
    }
    let load_run = !cli.bot && !cli.bulk && (cli.tcp.is_some() || cli.connections.is_some());
    let closed_tcp = cli.tcp.is_some() && !cli.bot && !cli.bulk && cli.http.is_none();
    let paced = cli.rate.is_some() || cli.rate_file.is_some() || cli.sweep.is_some();
    if cli.batch && (!closed_tcp || paced) {
        bail!("--batch shapes a closed-loop TCP load run's pipeline (--tcp, --pipeline N, no --rate or --sweep)");
    }
    if !cli.warmup.is_zero() && (cli.udp.is_some() || !load_run) {
        bail!("--warmup is for TCP and HTTP load runs (--tcp, or --http with --connections)");
    }
    if cli.max_time.is_some() && (cli.http.is_none() || cli.connections.is_some() || cli.bot) {
        bail!("--max-time bounds a single --http fetch; a load run ends at --duration");
    }
    if cli.bot {
        return run_bot(cli, cpus);
    }
    if let Some(url) = &cli.http {
        return run_http(cli, url, cpus);
    }
    if let Some(path) = &cli.targets {
        return run_targets(cli, path, cpus);
    }
    if let (true, Some(addr)) = (cli.bulk, cli.tcp) {
        let plan = crate::bulk::BulkPlan {
            addr,
            flows: cli.connections.unwrap_or(1),
            duration: cli.duration,
            bin: cli.bulk_interval,
            start_at: None,
            congestion: None,
        };
        let outcome = crate::bulk::run(&plan, &std::sync::atomic::AtomicBool::new(false))?;
        if cli.json {
            let mut json = serde_json::to_value(&outcome)?;
            json["mode"] = "tcp-bulk".into();
            json["target"] = addr.to_string().into();
            json["tag"] = cli.tag.clone().into();
            print_json(json, &[], None)?;
        } else {
            crate::bulk::print(addr, &outcome);
        }
        if outcome.bytes_acked == 0 {
            bail!("no byte was acknowledged by {addr}");
        }
        return Ok(());
    }
    if let Some(addr) = cli.tcp {
        let connections = cli.connections.unwrap_or(50);
        let plan = tcp_plan(cli, addr, tcp_workload(cli)?, connections, cpus)?;
        return run_load(cli, &plan, "tcp", cli.protocol.name(), addr.to_string());
    }
    if let Some(addr) = cli.udp {
        match cli.protocol {
            TcpProtocol::Generic => return run_udp_generic(cli, addr, cpus),
            TcpProtocol::Echo => {}
            other => bail!(
                "--protocol {} runs over TCP; over UDP loadgen speaks echo (the default) and generic",
                other.name()
            ),
        }
        if cli.plot.is_some() && cli.sweep.is_none() {
            bail!("--plot draws a UDP --sweep: give one");
        }
        if cli.size.lo != cli.size.hi {
            bail!("UDP datagrams are all one size (GSO needs equal segments): give --size a single value");
        }
        let plan = UdpPlan {
            addr,
            rate: match cli.rate {
                Some(Rate::PerSecond(r)) => Some(r),
                Some(Rate::Max) => None,
                Some(Rate::Profile(_)) => {
                    bail!("UDP holds one rate: a ramp or steps are for TCP and HTTP load")
                }
                // Congestion control finds its own rate.
                None if cli.cc => None,
                None => Some(100_000.0),
            },
            size: cli.size.lo,
            duration: cli.duration,
            threads: cli.threads,
            cpus,
            replies: !cli.no_reply,
            run_id: std::process::id() ^ (crate::pacer::now_ns() as u32),
            drain: cli.drain,
            interval: cli.hdr_log.as_ref().map(|_| cli.hdr_interval),
            start_at: cli.start_at,
            cc: cli.cc,
            bins: None,
        };
        if cli.cc && cli.no_reply {
            bail!("--cc steers by the echoes' feedback: it cannot run with --no-reply");
        }
        if let Some(sweep) = cli.sweep {
            let mut steps = Vec::new();
            for rate in sweep.rates() {
                let step = UdpPlan {
                    rate: Some(rate),
                    ..plan.clone()
                };
                steps.push(run_udp(&step, cli.server_metrics, cli.quiet)?);
            }
            let steps: Vec<&UdpReport> = steps.iter().collect();
            if cli.json {
                let sweep = serde_json::json!({"mode": "udp-sweep", "steps": steps});
                print_json(sweep, &plan.cpus, None)?;
            } else {
                print_sweep(&steps);
            }
            if let Some(path) = &cli.plot {
                crate::plot::sweep_svg(&steps, path)?;
                if !cli.json {
                    println!("plot: {}", path.display());
                }
            }
            return Ok(());
        }
        let mut report = run_udp(&plan, cli.server_metrics, cli.quiet)?;
        report.tag = cli.tag.clone();
        if let (Some(path), Some(series)) = (&cli.hdr_log, &report.series) {
            crate::hdr_log::write_series(path, "rtt", series, report.started)?;
        }
        if cli.json {
            print_json(&report, &plan.cpus, None)?;
        } else {
            print_udp(&report);
        }
        if report.received == Some(0) && (report.refused > 0 || report.icmp_errors > 0) {
            bail!(
                "nothing listens on UDP {} (ICMP port unreachable): start ringcore (`cargo run --release`) or check the address",
                plan.addr
            );
        }
        return Ok(());
    }
    bail!("choose a mode: --tcp [ADDR], --udp [ADDR], --http URL or --targets FILE (see --help)")
}

/// The generic mode over UDP: a datagram per request, a datagram per reply.
fn run_udp_generic(cli: &Cli, addr: std::net::SocketAddr, cpus: Vec<usize>) -> anyhow::Result<()> {
    let Workload::Dialect(dialect) = tcp_workload(cli)? else {
        unreachable!("--protocol generic makes a dialect");
    };
    let checked = match cli.reply {
        crate::dialect::Framing::Echo => true,
        crate::dialect::Framing::Line => cli.expect.is_some(),
        _ => bail!("over UDP each reply is one datagram: --reply takes line (the default) or echo"),
    };
    let workload = format!(
        "requests from a template, one datagram each way; replies {}",
        if checked {
            "checked byte for byte"
        } else {
            "unchecked"
        }
    );
    let rate = match &cli.rate {
        None => None,
        Some(Rate::PerSecond(r)) => Some(RateProfile::constant(*r)),
        Some(Rate::Profile(spec)) => {
            Some(spec.profile(cli.duration).map_err(|e| anyhow::anyhow!("--rate: {e}"))?)
        }
        Some(Rate::Max) => bail!("the generic mode paces (--rate R) or runs closed loop (--pipeline N in flight per thread); --rate max is the echo flood's"),
    };
    let plan = crate::udp_generic::UdpGenericPlan {
        addr,
        dialect,
        workload,
        threads: cli.threads,
        cpus,
        duration: cli.duration,
        requests: cli.requests,
        window: cli.pipeline,
        rate,
        timeout: cli.timeout,
        request_log: cli.request_log.clone(),
    };
    let mut report = crate::udp_generic::run(&plan, &Live::default(), cli.quiet)?;
    report.tag = cli.tag.clone();
    if let Some(path) = &cli.hdr_log {
        let whole = [
            ("latency", &report.latency, &None),
            ("service", &report.service, &None),
        ];
        let duration = std::time::Duration::from_secs_f64(report.duration_s);
        crate::hdr_log::write_runs(path, &whole, report.started, duration)?;
    }
    if cli.json {
        print_json(&report, &plan.cpus, None)?;
    } else {
        crate::udp_generic::print(&report);
    }
    if report.answered == 0 {
        bail!(
            "no request over UDP was answered ({} sent, {} lost)",
            report.sent,
            report.lost
        );
    }
    Ok(())
}

fn run_bot(cli: &Cli, cpus: Vec<usize>) -> anyhow::Result<()> {
    let (addr, udp) = match (cli.tcp, cli.udp) {
        (Some(a), _) => (a, false),
        (None, Some(a)) => (a, true),
        (None, None) => bail!("--bot needs the bot's address: --tcp ADDR or --udp ADDR (ringcore serves it on port 5555)"),
    };
    let script = match &cli.bot_script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            protocols::bot::Script::parse(&text)
                .with_context(|| format!("bot script {}", path.display()))?
        }
        None => protocols::bot::Script::default_script(),
    };
    let concurrent = cli.connections.unwrap_or(50);
    if concurrent == 0 {
        bail!("--connections must be at least 1");
    }
    let plan = crate::bot::BotPlan {
        addr,
        udp,
        concurrent,
        duration: cli.duration,
        conversations: cli.requests,
        script: std::sync::Arc::new(script),
        timeout: cli.timeout,
        cpus,
    };
    let o = crate::bot::run(&plan, &Live::default(), cli.quiet)?;
    let seconds = o.elapsed.as_secs_f64();
    let r = BotReport {
        mode: "bot",
        transport: if udp { "udp" } else { "tcp" },
        target: addr.to_string(),
        tag: cli.tag.clone(),
        concurrent: plan.concurrent,
        duration_s: seconds,
        conversations: o.conversations,
        conversations_per_sec: o.conversations as f64 / seconds,
        turns: o.turns,
        outcomes: o.outcomes,
        errors: o.errors,
        turn_latency_us: Percentiles::of(&o.turn_latency),
    };
    if cli.json {
        print_json(&r, &plan.cpus, None)?;
    } else {
        println!(
            "bot over {} -> {}: {} conversations at once, {:.2} s",
            r.transport, r.target, r.concurrent, r.duration_s
        );
        println!(
            "  conversations {} ({:.0}/s), {} turns; resolved {}, ticket {}, quit {}",
            r.conversations,
            r.conversations_per_sec,
            r.turns,
            r.outcomes.resolved,
            r.outcomes.ticket,
            r.outcomes.quit
        );
        let e = &r.errors;
        println!(
            "  errors       {} (refused {}, reset {}, closed {}, timeout {}, mismatch {})",
            e.total(),
            e.refused,
            e.reset,
            e.closed,
            e.timeout,
            e.mismatch
        );
        println!("  per turn     {}", r.turn_latency_us.row());
    }
    if r.conversations == 0 {
        bail!("no conversation completed ({} errors)", r.errors.total());
    }
    Ok(())
}

/// A TCP (or HTTP) load plan from the command line.
/// What `--protocol` and its flags ask the TCP connections to say.
fn tcp_workload(cli: &Cli) -> anyhow::Result<Workload> {
    use crate::dialect::{Generic, KeySpace, Memcache, Mix, Resp, Template};
    use std::sync::Arc;
    let generic_flags = cli.request.is_some() || cli.request_file.is_some() || cli.expect.is_some();
    if generic_flags && cli.protocol != TcpProtocol::Generic {
        bail!("--request, --request-file and --expect are for --protocol generic");
    }
    let keys = KeySpace::new(cli.keys, cli.key_dist);
    let sizes = (cli.size.lo, cli.size.hi);
    let mix_error = |e: String| anyhow::anyhow!("--mix {}: {e}", cli.mix);
    Ok(match cli.protocol {
        TcpProtocol::Echo => Workload::Stream(tcp::StreamProtocol::Echo),
        TcpProtocol::Reverse => Workload::Stream(tcp::StreamProtocol::Reverse),
        TcpProtocol::Resp => {
            let mix =
                Mix::parse(&cli.mix, crate::dialect::RespCommand::named).map_err(mix_error)?;
            Workload::Dialect(Arc::new(Resp::new(mix, keys, sizes)))
        }
        TcpProtocol::Memcache => {
            let mix = Mix::parse(&cli.mix, crate::dialect::McCommand::named).map_err(mix_error)?;
            Workload::Dialect(Arc::new(Memcache::new(mix, keys, sizes)))
        }
        TcpProtocol::Generic => {
            let request = match (&cli.request, &cli.request_file) {
                (Some(text), _) => Template::from_arg(text).map_err(|e| anyhow::anyhow!("--request: {e}"))?,
                (None, Some(path)) => {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("reading --request-file {}", path.display()))?;
                    Template::parse(&bytes)
                        .map_err(|e| anyhow::anyhow!("--request-file {}: {e}", path.display()))?
                }
                (None, None) => bail!("--protocol generic needs the request: give --request TEMPLATE or --request-file FILE"),
            };
            let expect = cli
                .expect
                .as_deref()
                .map(Template::from_arg)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expect: {e}"))?;
            Workload::Dialect(Arc::new(Generic::new(
                request,
                cli.reply.clone(),
                expect,
                keys,
                sizes,
            )))
        }
    })
}

fn tcp_plan(
    cli: &Cli,
    addr: std::net::SocketAddr,
    workload: Workload,
    connections: usize,
    cpus: Vec<usize>,
) -> anyhow::Result<TcpPlan> {
    if !cli.warmup.is_zero() && cli.requests.is_some() {
        bail!("--warmup needs a timed run: give --duration, not --requests");
    }
    let run_length = cli.warmup + cli.duration;
    let mut duration = cli.duration;
    let rate = match (&cli.rate, &cli.rate_file) {
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --rate-file {}", path.display()))?;
            let profile = RateProfile::from_file_text(&text, &path.display().to_string())
                .map_err(|e| anyhow::anyhow!("--rate-file {}: {e}", path.display()))?;
            // The file's last row ends the run.
            let length = std::time::Duration::from_secs_f64(profile.length());
            if length <= cli.warmup {
                bail!("--rate-file {}: its last row (second {:.3}) must come after the warm-up", path.display(), profile.length());
            }
            duration = length - cli.warmup;
            Some(profile)
        }
        (Some(Rate::PerSecond(r)), None) => Some(RateProfile::constant(*r)),
        (Some(Rate::Profile(spec)), None) => {
            if cli.requests.is_some() {
                bail!("a changing --rate spans the run's time: give --duration, not --requests");
            }
            Some(spec.profile(run_length).map_err(|e| anyhow::anyhow!("--rate: {e}"))?)
        }
        (Some(Rate::Max), None) => bail!("--rate max is for UDP floods; TCP and HTTP load without --rate already go as fast as replies come"),
        (None, None) => None,
    };
    Ok(TcpPlan {
        addr,
        workload,
        connections,
        threads: cli.threads,
        cpus,
        duration,
        warmup: cli.warmup,
        requests: cli.requests,
        size: cli.size,
        pipeline: cli.pipeline,
        batch: cli.batch,
        rate,
        timeout: cli.timeout,
        interval: cli.hdr_log.as_ref().map(|_| cli.hdr_interval),
        io: crate::tcp::IoPath::choose(cli.io)?,
        start_at: cli.start_at,
        request_log: cli.request_log.clone(),
    })
}

fn run_http(cli: &Cli, url: &str, cpus: Vec<usize>) -> anyhow::Result<()> {
    let url = crate::http::Url::parse(url)?;
    let shaped = cli.method != "GET" || !cli.header.is_empty() || cli.body_file.is_some();
    if shaped && cli.connections.is_none() {
        bail!("--method, --header and --body-file shape a load run: give --connections");
    }
    let Some(connections) = cli.connections else {
        let mut report = crate::http::fetch(&url, cli.follow, cli.timeout, cli.max_time)?;
        report.tag = cli.tag.clone();
        if cli.json {
            print_json(&report, &[], None)?;
        } else {
            crate::http::print(&report);
        }
        return Ok(());
    };
    let mut request = Target::new(&cli.method, url.clone())?;
    for header in &cli.header {
        request.add_header(header).context("--header")?;
    }
    if let Some(path) = &cli.body_file {
        request.body = std::fs::read(path)
            .with_context(|| format!("reading --body-file {}", path.display()))?;
    }
    let workload = Workload::Http {
        requests: vec![request.encode()],
    };
    let plan = tcp_plan(cli, url.resolve()?, workload, connections, cpus)?;
    let target = format!("{} http://{}{}", cli.method, url.host_header(), url.path);
    run_load(cli, &plan, "http", "http", target)
}

/// An HTTP load run over a targets file's requests, used in turn.
fn run_targets(cli: &Cli, path: &std::path::Path, cpus: Vec<usize>) -> anyhow::Result<()> {
    let targets = crate::targets::parse_file(path)?;
    let url = &targets[0].url;
    let workload = Workload::Http {
        requests: targets.iter().map(Target::encode).collect(),
    };
    let connections = cli.connections.unwrap_or(50);
    let plan = tcp_plan(cli, url.resolve()?, workload, connections, cpus)?;
    let target = format!(
        "http://{} ({} targets from {})",
        url.host_header(),
        targets.len(),
        path.display()
    );
    run_load(cli, &plan, "http", "http", target)
}

/// A TCP or HTTP load run (or, with --sweep, one per rate), its plot if
/// asked, and its report.
fn run_load(
    cli: &Cli,
    plan: &TcpPlan,
    mode: &'static str,
    protocol: &'static str,
    target: String,
) -> anyhow::Result<()> {
    if let Some(sweep) = cli.sweep {
        return run_sweep(cli, plan, sweep, mode, protocol, target);
    }
    let changing = plan.rate.as_ref().is_some_and(|r| !r.is_constant());
    if cli.plot.is_some() && !changing {
        bail!("--plot draws a --sweep or a changing --rate (FROM..TO, R1,R2,..., --rate-file)");
    }
    let outcome = tcp::run(plan, &Live::default(), cli.quiet)?;
    let report = TcpReport::new(mode, protocol, target, plan, outcome);
    if let (Some(path), Some(seconds)) = (&cli.plot, &report.per_second) {
        let points: Vec<RatePoint> = seconds
            .iter()
            .map(|s| RatePoint {
                x: s.second as f64 + 0.5,
                asked: s.profile,
                achieved: s.sent as f64,
                p99_us: s.p99_us,
            })
            .collect();
        let title = format!(
            "{} -> {}: {}",
            protocol.to_uppercase(),
            report.target,
            report.rate_profile.as_deref().unwrap_or_default()
        );
        crate::plot::rate_svg(&title, "time (s)", &points, None, path)?;
        if !cli.json {
            println!("plot: {}", path.display());
        }
    }
    emit_tcp(cli, report, &plan.cpus)
}

/// One open-loop run per rate of `sweep`, each for --duration, and the
/// knee: the first rate whose p99 passes --knee-p99, or that the server
/// could not keep (more than 1 % of its requests never sent, or any
/// timeout or error).
fn run_sweep(
    cli: &Cli,
    plan: &TcpPlan,
    sweep: crate::cli::Sweep,
    mode: &'static str,
    protocol: &'static str,
    target: String,
) -> anyhow::Result<()> {
    if cli.rate.is_some() || cli.rate_file.is_some() || cli.requests.is_some() {
        bail!("--sweep sets the rate of each step itself: drop --rate, --rate-file and --requests");
    }
    let knee_us = cli.knee_p99.as_secs_f64() * 1e6;
    let mut steps = Vec::new();
    for rate in sweep.rates() {
        let step = TcpPlan {
            rate: Some(RateProfile::constant(rate)),
            ..plan.clone()
        };
        let outcome = tcp::run(&step, &Live::default(), true)?;
        let mut report = TcpReport::new(mode, protocol, target.clone(), &step, outcome);
        report.tag = cli.tag.clone();
        if !cli.json {
            println!(
                "  offered {:>9.0}/s  answered {:>9.0}/s  unsent {:>5.2} %  errors {:>5}  timeouts {:>5}  p50 {:>9.1}  p99 {:>9.1} us",
                rate,
                report.requests_per_sec,
                report.unsent_pct,
                report.errors.total(),
                report.timeouts,
                report.latency_us.p50,
                report.latency_us.p99
            );
        }
        steps.push(report);
    }
    let over = |r: &TcpReport| {
        r.latency_us.p99 > knee_us || r.unsent_pct > 1.0 || r.timeouts > 0 || r.errors.total() > 0
    };
    let knee = steps
        .iter()
        .find(|r| over(r))
        .and_then(|r| r.requested_rate);
    if cli.json {
        let json = serde_json::json!({
            "mode": format!("{mode}-sweep"),
            "target": target,
            "knee_p99_us": knee_us,
            "knee": knee,
            "steps": steps,
        });
        print_json(json, &plan.cpus, Some(plan.io.name()))?;
    } else {
        match knee {
            Some(k) => println!(
                "knee: {k:.0} requests/s, the first rate with p99 over {:.1} us or that the server could not keep",
                knee_us
            ),
            None => println!("no knee up to {:.0} requests/s: p99 stayed under {knee_us:.1} us", sweep.to),
        }
    }
    if let Some(path) = &cli.plot {
        let points: Vec<RatePoint> = steps
            .iter()
            .map(|r| RatePoint {
                x: r.requested_rate.unwrap_or(0.0),
                asked: r.requested_rate.unwrap_or(0.0),
                achieved: r.requests_per_sec,
                p99_us: r.latency_us.p99,
            })
            .collect();
        let title = format!(
            "{} -> {target}: offered load vs p99",
            protocol.to_uppercase()
        );
        crate::plot::rate_svg(&title, "offered (requests/s)", &points, knee, path)?;
        if !cli.json {
            println!("plot: {}", path.display());
        }
    }
    Ok(())
}

/// Prints a result as one JSON object, with the manifest of how and where
/// it was made (threads pinned to `pinning`, I/O through `io`).
fn print_json(
    result: impl serde::Serialize,
    pinning: &[usize],
    io: Option<&str>,
) -> anyhow::Result<()> {
    let json = crate::manifest::Manifest::collect(pinning, io).attach(result)?;
    println!("{json}");
    Ok(())
}

/// Writes the histogram log if asked, prints the report, and fails a run
/// that answered nothing.
fn emit_tcp(cli: &Cli, mut report: TcpReport, pinning: &[usize]) -> anyhow::Result<()> {
    report.tag = cli.tag.clone();
    let started = report.started;
    if let Some(path) = &cli.hdr_log {
        let elapsed = std::time::Duration::from_secs_f64(report.duration_s);
        let whole = [
            ("latency", &report.latency, &report.series),
            ("service", &report.service, &report.service_series),
        ];
        crate::hdr_log::write_runs(path, &whole, started, elapsed)?;
    }
    if cli.json {
        print_json(&report, pinning, Some(report.io))?;
    } else {
        print_tcp(&report);
    }
    // Error statuses are answers too: only a run with no answer at all fails.
    if report.completed + report.errors.status == 0 {
        bail!(
            "no request was answered ({} errors, {} timeouts)",
            report.errors.total(),
            report.timeouts
        );
    }
    Ok(())
}
