//! The server models side by side, in one run: each cell starts each model
//! in turn (`--io uring|epoll|threads|tokio|tokio-uring`, one worker on CPU 0) and drives it
//! with loadgen (on CPU 1), alternating models over rounds. The TCP echo
//! cells also measure an outside peer, a monoio echo server
//! (`peers/monoio-echo`, thread-per-core io_uring), the same way; the
//! open-loop cell also measures the uring model with `--batch-wait 500us`
//! (row `uring-batch`), which trades latency for fewer wake-ups.
//!
//! `cargo bench --bench compare` (full) or `-- --quick` (a smoke run);
//! `-- --replot` redraws the chart from the last run's JSON.
//! Writes a Markdown table to stdout, and `target/compare.json` and
//! `target/compare.svg` (requests/s and p99 per model and cell).
//!
//! Per cell and model: requests (or datagrams) per second, p50/p99 latency,
//! and over the middle half of the run, while the load is steady: server
//! CPU seconds per million requests, the server's and loadgen's CPU use
//! (loadgen near 100 % means the client set the rate, and the server's cost
//! per request is the figure to compare), and context switches and system
//! calls per request (system calls are counted by `perf stat -e
//! raw_syscalls:sys_enter`, io_uring_enter included; "NaN" where perf is
//! not installed). The open-loop cell runs loadgen with `--warmup 1s`, so
//! its latency leaves out the server's first second (accepting 10,000
//! connections), which is not its steady state.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{cpu_seconds, json_number, summary};

const MODELS: &[&str] = &[
    "uring",
    "epoll",
    "threads",
    "tokio",
    "tokio-uring",
    "monoio",
    "uring-batch",
];

/// Whether `model` serves `cell` (the monoio peer serves TCP echo only;
/// batching is measured where it is meant to pay, the open loop).
fn serves(model: &str, cell: Cell) -> bool {
    match model {
        "monoio" => matches!(cell, Cell::Tcp { .. }),
        "uring-batch" => matches!(cell, Cell::Open { .. }),
        _ => true,
    }
}

/// The server under measurement: ringcore in one of its models, or the
/// monoio peer.
enum Under {
    Ringcore(common::Server),
    Peer(std::process::Child, std::net::SocketAddr),
}

impl Under {
    fn start(model: &str, cell: Cell, monoio: &Path) -> Under {
        if model == "monoio" {
            let mut child = Command::new(monoio)
                .args(["127.0.0.1:0", "0"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start the monoio peer");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
                &mut line,
            )
            .expect("the peer's first line");
            let addr = line
                .trim()
                .strip_prefix("listening ")
                .and_then(|a| a.parse().ok())
                .expect("listening ADDR");
            return Under::Peer(child, addr);
        }
        let mut args = vec!["--serve", cell.serve(), "--cpus", "0", "--threads", "1"];
        match model {
            "uring-batch" => args.extend(["--io", "uring", "--batch-wait", "500us"]),
            _ => args.extend(["--io", model]),
        }
        Under::Ringcore(common::Server::start(&args))
    }

    fn pid(&self) -> u32 {
        match self {
            Under::Ringcore(s) => s.pid(),
            Under::Peer(c, _) => c.id(),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Under::Ringcore(s) => s.services[0].2,
            Under::Peer(_, addr) => *addr,
        }
    }
}

impl Drop for Under {
    fn drop(&mut self) {
        if let Under::Peer(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Clone, Copy)]
enum Cell {
    Tcp {
        size: usize,
        connections: usize,
    },
    Udp {
        rate: Option<u64>,
    },
    Http {
        connections: usize,
    },
    Idle {
        connections: usize,
    },
    /// Open loop over many connections at a fixed total rate (each
    /// connection mostly idle between requests).
    Open {
        connections: usize,
        rate: u64,
    },
}

impl Cell {
    fn name(&self) -> String {
        match *self {
            Cell::Tcp { size, connections } => format!("TCP echo {size} B x {connections} conns"),
            Cell::Udp { rate: None } => "UDP echo 64 B, --rate max".into(),
            Cell::Udp { rate: Some(r) } => format!("UDP echo 64 B at {}k/s", r / 1000),
            Cell::Http { connections } => format!("HTTP 1 KiB x {connections} keep-alive conns"),
            Cell::Idle { connections } => format!("{connections} idle TCP conns"),
            Cell::Open { connections, rate } => {
                format!(
                    "TCP echo 64 B x {connections} conns, open loop at {}k/s",
                    rate / 1000
                )
            }
        }
    }

    fn serve(&self) -> &'static str {
        match self {
            Cell::Tcp { .. } | Cell::Idle { .. } | Cell::Open { .. } => "tcp:0=echo",
            Cell::Udp { .. } => "udp:0=echo",
            Cell::Http { .. } => "tcp:0=http",
        }
    }
}

/// One measurement.
#[derive(Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    #[serde(default)]
    p999_us: f64,
    cpu_s_per_million: f64,
    ctx_switches_per_request: f64,
    syscalls_per_request: f64,
    loss_pct: f64,
    rss_bytes_per_conn: f64,
    /// Share of one CPU the server and loadgen used over the window, in %:
    /// loadgen near 100 % means the client, not the server, set the rate.
    #[serde(default)]
    server_cpu_pct: f64,
    #[serde(default)]
    client_cpu_pct: f64,
}

/// Context switches of each live thread of `pid`, by thread id.
fn context_switches(pid: u32) -> BTreeMap<String, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let n = status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
            Some((t.file_name().to_string_lossy().into_owned(), n))
        })
        .collect()
}

/// Context switches between two readings, thread by thread (threads born
/// in between count from zero; threads gone in between are not seen).
fn switches_between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, n)| n.saturating_sub(*before.get(tid).unwrap_or(&0)))
        .sum()
}

/// Counts `pid`'s system calls (every thread, new ones included) for
/// `seconds` with perf's raw_syscalls tracepoint; None without perf.
fn count_syscalls(pid: u32, seconds: f64) -> Option<std::process::Child> {
    Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "raw_syscalls:sys_enter",
            "-p",
            &pid.to_string(),
            "--",
            "sleep",
            &format!("{seconds:.3}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()
}

fn syscalls_counted(perf: Option<std::process::Child>) -> Option<f64> {
    let out = perf?.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.contains("raw_syscalls"))?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The number after `key` that follows `anchor` in a JSON text.
fn json_after(json: &str, anchor: &str, key: &str) -> f64 {
    json.find(anchor)
        .and_then(|at| json_number(&json[at..], key))
        .unwrap_or(0.0)
}

fn measure(model: &str, cell: Cell, seconds: f64, loadgen: &Path, monoio: &Path) -> Sample {
    let under = Under::start(model, cell, monoio);
    let pid = under.pid();
    let addr = under.addr().to_string();
    if let (Cell::Idle { connections }, Under::Ringcore(server)) = (cell, &under) {
        let before = server.rss_kib();
        let conns: Vec<_> = (0..connections)
            .map(|_| common::connect(server.services[0].2))
            .collect();
        server.wait_counter("connections_open", |n| n == connections as u64);
        let grown = server.rss_kib().saturating_sub(before);
        drop(conns);
        return Sample {
            rss_bytes_per_conn: grown as f64 * 1024.0 / connections as f64,
            ..Sample::default()
        };
    }
    let duration = seconds.to_string();
    let mut args: Vec<String> = match cell {
        Cell::Tcp { size, connections } => vec![
            "--tcp".into(),
            addr,
            "--size".into(),
            size.to_string(),
            "--connections".into(),
            connections.to_string(),
        ],
        Cell::Udp { rate } => vec![
            "--udp".into(),
            addr,
            "--size".into(),
            "64".into(),
            "--rate".into(),
            rate.map_or("max".to_string(), |r| r.to_string()),
        ],
        Cell::Http { connections } => vec![
            "--http".into(),
            format!("http://{addr}/bytes/1024"),
            "--connections".into(),
            connections.to_string(),
        ],
        Cell::Open { connections, rate } => vec![
            "--tcp".into(),
            addr,
            "--size".into(),
            "64".into(),
            "--connections".into(),
            connections.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--warmup".into(),
            "1s".into(),
        ],
        Cell::Idle { .. } => unreachable!(),
    };
    args.extend([
        "--duration".into(),
        duration,
        "--cpus".into(),
        "1".into(),
        "--json".into(),
        "--quiet".into(),
    ]);
    let child = Command::new(loadgen)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run loadgen");
    // CPU, context switches and system calls over the middle half of the
    // run, while the load is steady; the open loop's run begins after its
    // connects (about 50 us each here: half a second for 10,000) and its
    // 1 s warm-up, so a quick run's window does not outlast loadgen.
    let lead = match cell {
        Cell::Open { connections, .. } => 1.0 + connections as f64 * 50e-6,
        _ => 0.0,
    };
    std::thread::sleep(Duration::from_secs_f64(lead + seconds * 0.25));
    let window = seconds * 0.5;
    let (ctx0, window0) = (context_switches(pid), Instant::now());
    let (server0, client0) = (cpu_seconds(pid), cpu_seconds(child.id()));
    let perf = count_syscalls(pid, window);
    std::thread::sleep(Duration::from_secs_f64(window));
    let window_s = window0.elapsed().as_secs_f64();
    let server_cpu_pct = (cpu_seconds(pid) - server0) / window_s * 100.0;
    let client_cpu_pct = (cpu_seconds(child.id()) - client0) / window_s * 100.0;
    let ctx_per_s = switches_between(&ctx0, &context_switches(pid)) as f64 / window_s;
    let syscalls_per_s = syscalls_counted(perf).map(|n| n / window);
    let out = child.wait_with_output().expect("loadgen");
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let p999 = json_after(&json, "\"latency_us\"", "p999");
    let (rate, p50, p99, loss) = match cell {
        Cell::Udp { .. } => {
            let delivered = json_number(&json, "received").unwrap_or(0.0)
                / json_number(&json, "duration_s").unwrap_or(1.0);
            (
                delivered,
                json_after(&json, "\"rtt_us\"", "p50"),
                json_after(&json, "\"rtt_us\"", "p99"),
                json_number(&json, "loss_pct").unwrap_or(0.0),
            )
        }
        _ => (
            json_number(&json, "requests_per_sec").unwrap_or(0.0),
            json_after(&json, "\"latency_us\"", "p50"),
            json_after(&json, "\"latency_us\"", "p99"),
            0.0,
        ),
    };
    Sample {
        rate,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        // Over the steady middle of the run, not its start (connects, and
        // for the open loop 10,000 accepts) or its end.
        cpu_s_per_million: server_cpu_pct / 100.0 / rate.max(1.0) * 1e6,
        ctx_switches_per_request: ctx_per_s / rate.max(1.0),
        syscalls_per_request: syscalls_per_s.map_or(f64::NAN, |n| n / rate.max(1.0)),
        loss_pct: loss,
        rss_bytes_per_conn: 0.0,
        server_cpu_pct,
        client_cpu_pct,
    }
}

fn median(samples: &[Sample], f: fn(&Sample) -> f64) -> (f64, f64, f64) {
    summary(&samples.iter().map(f).collect::<Vec<_>>())
}

fn main() {
    support::maybe_run_baseline();
    let quick = std::env::args().any(|a| a == "--quick");
    let seconds: f64 = support::arg("--seconds", if quick { 1.0 } else { 5.0 });
    let rounds: usize = support::arg("--rounds", if quick { 1 } else { 3 });
    let idle: usize = if quick { 1000 } else { 10_000 };
    let cells = [
        Cell::Tcp {
            size: 64,
            connections: 50,
        },
        Cell::Tcp {
            size: 64,
            connections: 1000,
        },
        Cell::Tcp {
            size: 16 * 1024,
            connections: 50,
        },
        Cell::Udp { rate: None },
        Cell::Udp {
            rate: Some(200_000),
        },
        Cell::Http { connections: 50 },
        Cell::Open {
            connections: if quick { 1000 } else { 10_000 },
            rate: 50_000,
        },
        Cell::Idle { connections: idle },
    ];
    // `-- --only TEXT`: just the cells whose name contains TEXT.
    let only: String = support::arg("--only", String::new());
    let cells: Vec<Cell> = cells
        .into_iter()
        .filter(|c| c.name().contains(&only))
        .collect();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    if std::env::args().any(|a| a == "--replot") {
        // Redraw the chart from the last run's JSON, measuring nothing.
        let text = std::fs::read_to_string(target.join("compare.json"))
            .expect("target/compare.json from a run");
        let results: BTreeMap<String, BTreeMap<String, Vec<Sample>>> =
            serde_json::from_str(&text).expect("compare.json");
        let results: BTreeMap<String, BTreeMap<&str, Vec<Sample>>> = results
            .into_iter()
            .map(|(cell, by)| {
                (
                    cell,
                    by.into_iter()
                        .filter_map(|(m, v)| Some((*MODELS.iter().find(|x| **x == m)?, v)))
                        .collect(),
                )
            })
            .collect();
        let cells: Vec<Cell> = cells
            .into_iter()
            .filter(|c| results.contains_key(&c.name()))
            .collect();
        chart(&results, &cells, &target.join("compare.svg")).expect("draw the chart");
        println!("chart: target/compare.svg");
        return;
    }
    let loadgen = support::loadgen_binary();
    let monoio = support::monoio_binary();
    let mut results: BTreeMap<String, BTreeMap<&str, Vec<Sample>>> = BTreeMap::new();
    for round in 1..=rounds {
        for &cell in &cells {
            for model in MODELS.iter().filter(|m| serves(m, cell)) {
                let s = measure(model, cell, seconds, &loadgen, &monoio);
                eprintln!(
                    "round {round}: {} / {model}: {:.0}/s p99 {:.0} us",
                    cell.name(),
                    s.rate,
                    s.p99_us
                );
                results
                    .entry(cell.name())
                    .or_default()
                    .entry(model)
                    .or_default()
                    .push(s);
            }
        }
    }
    println!("Server models side by side: one worker on CPU 0, loadgen on CPU 1, {rounds} round(s) of {seconds} s per cell, models alternating");
    for &cell in &cells {
        let by_model = &results[&cell.name()];
        println!("\n**{}**\n", cell.name());
        if let Cell::Idle { .. } = cell {
            println!("| model | RSS per connection | ratio to uring |\n|---|---|---|");
            let base = median(&by_model["uring"], |s| s.rss_bytes_per_conn)
                .0
                .max(1.0);
            for model in MODELS.iter().filter(|m| serves(m, cell)) {
                let (m, _, _) = median(&by_model[model], |s| s.rss_bytes_per_conn);
                println!("| {model} | {m:.0} B | {:.2} |", m / base);
            }
            continue;
        }
        let udp = matches!(cell, Cell::Udp { .. });
        let open = matches!(cell, Cell::Open { .. });
        println!(
            "| model | {} median (min-max) | ratio to uring | p50 us | p99 us | CPU s / M req | server CPU % | loadgen CPU % | ctx switches / req | syscalls / req |{}",
            if udp { "delivered/s" } else { "req/s" },
            if udp {
                " loss % |"
            } else if open {
                " p99.9 us |"
            } else {
                ""
            }
        );
        println!(
            "|---|---|---|---|---|---|---|---|---|---|{}",
            if udp || open { "---|" } else { "" }
        );
        let base = median(&by_model["uring"], |s| s.rate).0.max(1.0);
        for model in MODELS.iter().filter(|m| serves(m, cell)) {
            let samples = &by_model[model];
            let (m, lo, hi) = median(samples, |s| s.rate);
            print!(
                "| {model} | {m:.0} ({lo:.0}-{hi:.0}) | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.3} | {:.3} |",
                m / base,
                median(samples, |s| s.p50_us).0,
                median(samples, |s| s.p99_us).0,
                median(samples, |s| s.cpu_s_per_million).0,
                median(samples, |s| s.server_cpu_pct).0,
                median(samples, |s| s.client_cpu_pct).0,
                median(samples, |s| s.ctx_switches_per_request).0,
                median(samples, |s| s.syscalls_per_request).0,
            );
            if udp {
                print!(" {:.2} |", median(samples, |s| s.loss_pct).0);
            }
            if open {
                print!(" {:.0} |", median(samples, |s| s.p999_us).0);
            }
            println!();
        }
    }
    let json = serde_json::to_string_pretty(&results).expect("results as JSON");
    let _ = std::fs::write(target.join("compare.json"), json);
    if let Err(e) = chart(&results, &cells, &target.join("compare.svg")) {
        eprintln!("could not draw the chart: {e}");
    }
    println!("\nJSON: target/compare.json, chart: target/compare.svg");
}

/// Requests/s (bars) per model for each throughput cell, and p99 beneath.
fn chart(
    results: &BTreeMap<String, BTreeMap<&str, Vec<Sample>>>,
    cells: &[Cell],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let cells: Vec<Cell> = cells
        .iter()
        .copied()
        .filter(|c| !matches!(c, Cell::Idle { .. }))
        .collect();
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(127, 127, 127),
    ];
    assert!(colors.len() >= MODELS.len(), "a colour per model");
    let width = 0.7 / MODELS.len() as f64;
    for (area, title, pick) in [
        (
            top,
            "requests (or datagrams) per second, relative to uring",
            (|s: &Sample| s.rate) as fn(&Sample) -> f64,
        ),
        (
            bottom,
            "p99 latency, relative to uring (lower is better)",
            |s: &Sample| s.p99_us,
        ),
    ] {
        let values: Vec<Vec<f64>> = cells
            .iter()
            .map(|c| {
                let by = &results[&c.name()];
                let base = median(&by["uring"], pick).0.max(1e-9);
                MODELS
                    .iter()
                    .map(|m| by.get(m).map_or(0.0, |v| median(v, pick).0 / base))
                    .collect()
            })
            .collect();
        // Headroom above the bars for the legend.
        let y_max = values.iter().flatten().copied().fold(1.0, f64::max) * 1.4;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5..cells.len() as f64 - 0.5, 0.0..y_max)?;
        // Each group of bars is centred on an integer, where its label goes.
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(cells.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() > 0.01 || i < 0.0 {
                    return String::new();
                }
                cells
                    .get(i as usize)
                    .map(|c| c.name().replace(" conns", "").replace(" keep-alive", ""))
                    .unwrap_or_default()
            })
            .draw()?;
        for (m, model) in MODELS.iter().enumerate() {
            let color = colors[m];
            chart
                .draw_series(values.iter().enumerate().map(|(c, v)| {
                    let x0 = c as f64 - 0.35 + m as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v[m])], color.filled())
                }))?
                .label(*model)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
