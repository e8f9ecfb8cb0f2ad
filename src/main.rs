//! `ringcore`: serves the chapter's protocols with the io_uring engine.

mod cli;
mod limits;
mod model;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use engine::{metrics, StatsSnapshot};

use cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    fix_malloc_thresholds();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcore: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Output buffers of hundreds of KiB come and go with slow readers. glibc
/// raises its mmap threshold each time such a buffer is freed, after which
/// they come from the heap and stay resident once freed; a fixed threshold
/// keeps them mmapped, so the server's memory follows the output it holds
/// (what the README's bound promises) instead of its peak.
fn fix_malloc_thresholds() {
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    // Block the shutdown signals before any thread starts, so every thread
    // inherits the mask and only this one receives them.
    let signals = engine::ShutdownSignals::block().context("blocking SIGINT/SIGTERM")?;
    let cpus = cli.worker_cpus()?;
    let workers = cpus.len();
    let options = cli.protocol_options()?;
    let config = cli.engine_config(cpus, 1, &options)?;
    let max_connections =
        limits::settle_max_connections(cli.max_connections, workers * (config.services.len() + 4))?;
    let config = engine::EngineConfig {
        max_connections,
        ..config
    };
    let deadline = config.shutdown_deadline;
    let memory_limit = config.memory_limit;

    let engine = model::Running::start(cli.io, config)?;
    // The http service's /metrics serves the engine's counters.
    let counters = engine.stats();
    let io_path = engine.io_path();
    let _ = options
        .http
        .metrics
        .set(Box::new(move || metrics::render(&counters, io_path)));
    let workers = engine.workers();
    let plural = if workers == 1 { "worker" } else { "workers" };
    for s in engine.services() {
        println!(
            "{} {} {}, {workers} {plural}",
            s.transport, s.addr, s.protocol
        );
    }
    let memory = if engine.enforces_bounds() {
        format!(
            ", holding at most {} of input and output",
            protocols::units::format_size(memory_limit as u64)
        )
    } else {
        String::new()
    };
    println!(
        "{}; up to {max_connections} connections{memory}",
        engine.describe()
    );
    if let Some(addr) = cli.metrics {
        let bound = metrics::serve(addr, engine.stats(), io_path)
            .with_context(|| format!("starting the metrics endpoint on {addr}"))?;
        println!("metrics http://{bound}/metrics");
    }

    let stats = engine.stats();
    let snapshot = || StatsSnapshot::total(&stats.iter().map(|s| s.snapshot()).collect::<Vec<_>>());
    let mut next_report = cli.stats_interval.map(|i| Instant::now() + i);
    let received = loop {
        if let Some(signal) = signals.wait(Duration::from_millis(200))? {
            break Some(signal);
        }
        if engine.any_stopped() {
            break None;
        }
        if let (Some(at), Some(interval)) = (next_report, cli.stats_interval) {
            if Instant::now() >= at {
                println!("stats: {}", snapshot().summary_line());
                next_report = Some(at + interval);
            }
        }
    };
    match received {
        Some(name) => println!("{name}: stopping; flushing replies for up to {deadline:?}"),
        None => eprintln!("ringcore: a worker stopped unexpectedly; shutting down"),
    }
    engine.shutdown();
    let outcome = engine.join();
    println!("final: {}", snapshot().summary_line());
    outcome?;
    if received.is_none() {
        anyhow::bail!("a worker stopped without being asked to");
    }
    Ok(())
}
