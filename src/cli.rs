//! The command line: flags, their defaults, and turning them into an engine config.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use engine::{EngineConfig, Handler, ServiceConfig};
use protocols::bot::{BotConfig, Script};
use protocols::http::HttpConfig;
use protocols::{Options, Protocol, Transport};

use protocols::units::{parse_cpu_list, parse_duration, parse_size};

const EXAMPLES: &str = "\
Examples:
  ringcore
      the chapter's services on 127.0.0.1: tcp 65432 echo, udp 65432 echo,
      tcp 12345 reverse, udp 8888 ok, the support bot on tcp and udp 5555,
      and http on tcp 8080
  ringcore --serve tcp:5555=bot --bot-script my-dialogue.toml
      the support bot with another dialogue
  ringcore --serve tcp:7100=echo --serve udp:7100=echo --threads 2
      only these two services, on two workers
  ringcore --serve tcp:7200=reverse-lines --bind ::1 --cpus 1
      line-framed reverse on IPv6 loopback, one worker pinned to CPU 1
  ringcore --metrics 127.0.0.1:9100 --stats-interval 5
      Prometheus counters at http://127.0.0.1:9100/metrics, a summary every 5 s
";

/// `--help`'s closing text: the examples, every protocol (from the
/// registry), and how sizes and durations are written.
fn after_help() -> String {
    format!(
        "{EXAMPLES}\nProtocols (--serve TRANSPORT:PORT=PROTOCOL):\n{}\nSizes take K/M/G suffixes; durations take ms/s/m.",
        Protocol::help()
    )
}

/// ringcore: a thread-per-core io_uring server for the classic socket protocols.
#[derive(Debug, Parser)]
#[command(name = "ringcore", version, about, after_help = after_help())]
pub struct Cli {
    /// The I/O model: `auto` (io_uring where the kernel allows it, else
    /// epoll, saying why); the thread-per-core io_uring engine; the same
    /// layout with epoll; the chapter's thread per connection; tokio's
    /// work-stealing runtime; or the tokio-uring crate per core (the last
    /// four for comparison: they serve the same protocols through the same
    /// code).
    #[arg(long = "io", value_enum, default_value = "auto", value_name = "MODEL")]
    pub io: crate::model::IoModel,

    /// Address every service binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: IpAddr,

    /// Serve PROTOCOL over TRANSPORT on PORT (repeatable). When any is given,
    /// only these services run; otherwise the chapter's defaults do.
    #[arg(long = "serve", value_name = "TRANSPORT:PORT=PROTOCOL")]
    pub serve: Vec<ServeSpec>,

    /// Number of workers (default: one per CPU this process may use).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// CPUs to pin workers to, e.g. `0,2-3` (default: every CPU this process may use).
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,

    /// Let the workers float over those CPUs instead of pinning one to
    /// each: for cores other busy processes share (a load generator on the
    /// same machine, a laptop), where a pinned worker waits for its one
    /// core while another is idle.
    #[arg(long)]
    pub no_pin: bool,

    /// Submission queue depth of each worker's io_uring.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub ring_entries: u32,

    /// io_uring: a kernel thread per worker polls its submission queue,
    /// sleeping after this long idle (default 1s): sends need no system
    /// call while it is awake, at the cost of a CPU it keeps busy.
    #[arg(long, value_name = "IDLE", num_args = 0..=1, default_missing_value = "1s", value_parser = parse_duration)]
    pub sqpoll: Option<Duration>,

    /// io_uring: each wait for completions lasts until 32 are ready or this
    /// long has passed, e.g. `100us` (minimum-wait batching, Linux 6.12+):
    /// fewer wake-ups when many connections each send a little, at up to
    /// this much added latency. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub batch_wait: Option<Duration>,

    /// Size of each TCP receive buffer.
    #[arg(long, default_value = "16K", value_parser = parse_size, value_name = "BYTES")]
    pub buffer_size: u64,

    /// TCP receive buffers per worker (a power of two).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub buffers: u16,

    /// UDP receive buffers per worker, 64 KiB each (a power of two).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub udp_buffers: u16,

    /// Unsent output at which a connection stops being read until the peer drains it.
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "BYTES")]
    pub output_limit: u64,

    /// A connection whose peer accepts none of its pending output for this
    /// long is closed (as nginx's send_timeout); counted as send_timeouts.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub send_timeout: Duration,

    /// A TCP connection that owes nothing and has received nothing for this
    /// long is closed with a FIN (counted as idle_timeouts), so silent
    /// clients cannot hold every connection slot; `off` keeps them forever.
    #[arg(long, default_value = "5m", value_parser = parse_idle_timeout, value_name = "DURATION|off")]
    pub idle_timeout: DurationOrOff,

    /// Most open TCP connections (default: what RLIMIT_NOFILE allows, up to 65536).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// The most memory all TCP connections together may hold for their
    /// input and output (each worker gets an equal share); past it, the
    /// connections holding the most are closed, counted as
    /// connections_evicted (default: a quarter of the machine's memory, or
    /// of its control group's limit if lower).
    #[arg(long, value_parser = parse_size, value_name = "BYTES")]
    pub memory_limit: Option<u64>,

    /// The support bot's dialogue, a TOML script (default: the built-in one).
    #[arg(long, value_name = "FILE")]
    pub bot_script: Option<std::path::PathBuf>,

    /// A bot conversation silent this long ends (TCP: closed with a goodbye).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub bot_idle: Duration,

    /// Most UDP bot conversations per worker socket; the least recently used is evicted.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub bot_sessions: usize,

    /// How often the secret behind the UDP bot's codes rotates: a code an
    /// address is sent stays good for one to two of these.
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    pub bot_cookie_period: Duration,

    /// Longest message the bot accepts.
    #[arg(long, default_value = "4K", value_parser = parse_size, value_name = "BYTES")]
    pub bot_line_limit: u64,

    /// HTTP: a request head not complete this long after its first byte gets 408.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub http_header_timeout: Duration,

    /// HTTP: a keep-alive connection silent this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub http_keepalive: Duration,

    /// HTTP: the largest /bytes/N and /chunked/N.
    #[arg(long, default_value = "1G", value_parser = parse_size, value_name = "BYTES")]
    pub http_max_body: u64,

    /// Longest line the line-framed protocols accept.
    #[arg(long, default_value = "64K", value_parser = parse_size, value_name = "BYTES")]
    pub line_limit: u64,

    /// Time allowed to flush replies after SIGINT/SIGTERM before closing anyway.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_deadline: Duration,

    /// Print a one-line counter summary this often.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub stats_interval: Option<Duration>,

    /// Serve Prometheus counters at http://ADDR:PORT/metrics (port 0 picks one).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,

    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
}

/// One `--serve TRANSPORT:PORT=PROTOCOL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSpec {
    /// TCP or UDP.
    pub transport: Transport,
    /// The port (0 picks a free one).
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl FromStr for ServeSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("'{text}' is not TRANSPORT:PORT=PROTOCOL (e.g. tcp:7100=echo)");
        let (left, protocol) = text.split_once('=').ok_or_else(usage)?;
        let (transport, port) = left.split_once(':').ok_or_else(usage)?;
        let transport: Transport = transport.parse()?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("'{port}' is not a port number (0-65535)"))?;
        let protocol: Protocol = protocol.parse().map_err(|e| format!("{e}"))?;
        if !protocol.serves(transport) {
            return Err(format!(
                "protocol '{protocol}' is not served over {transport}"
            ));
        }
        Ok(ServeSpec {
            transport,
            port,
            protocol,
        })
    }
}

/// A list of CPU ids.
pub type CpuList = Vec<usize>;

/// The chapter's services, served when no `--serve` is given.
pub fn default_services() -> Vec<ServeSpec> {
    [
        (Transport::Tcp, 65432, Protocol::ECHO),
        (Transport::Udp, 65432, Protocol::ECHO),
        (Transport::Tcp, 12345, Protocol::REVERSE),
        (Transport::Udp, 8888, Protocol::OK),
        (Transport::Tcp, 5555, Protocol::BOT),
        (Transport::Udp, 5555, Protocol::BOT),
        (Transport::Tcp, 8080, Protocol::HTTP),
    ]
    .into_iter()
    .map(|(transport, port, protocol)| ServeSpec {
        transport,
        port,
        protocol,
    })
    .collect()
}

impl Cli {
    /// The CPUs workers are pinned to, one worker each.
    pub fn worker_cpus(&self) -> anyhow::Result<Vec<usize>> {
        let allowed: Vec<usize> = core_ids();
        if allowed.is_empty() {
            bail!("cannot read which CPUs this process may use");
        }
        let chosen = match &self.cpus {
            Some(list) => {
                if let Some(bad) = list.iter().find(|c| !allowed.contains(c)) {
                    bail!("--cpus: CPU {bad} is not available to this process (it may use {allowed:?})");
                }
                list.clone()
            }
            None => allowed,
        };
        Ok(match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            // More workers than CPUs share them round-robin.
            Some(n) => chosen.iter().copied().cycle().take(n).collect(),
            None => chosen,
        })
    }

    /// The protocols' options: line bounds and the bot's script, loaded and
    /// checked now so a bad script stops start-up with the node named.
    pub fn protocol_options(&self) -> anyhow::Result<Options> {
        let script = match &self.bot_script {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the bot script {}", path.display()))?;
                Script::parse(&text).with_context(|| format!("bot script {}", path.display()))?
            }
            None => Script::default_script(),
        };
        if self.bot_sessions == 0 {
            bail!("--bot-sessions must be at least 1");
        }
        if self.bot_cookie_period.is_zero() {
            bail!("--bot-cookie-period must be above zero");
        }
        let bot = BotConfig {
            script: Arc::new(script),
            idle: self.bot_idle,
            max_line: usize::try_from(self.bot_line_limit)
                .context("--bot-line-limit is too large")?,
            max_sessions: self.bot_sessions,
            cookie_period: self.bot_cookie_period,
        };
        let line_limit = usize::try_from(self.line_limit).context("--line-limit is too large")?;
        let http = HttpConfig {
            header_timeout: self.http_header_timeout,
            keepalive_idle: self.http_keepalive,
            max_body: self.http_max_body,
            ..HttpConfig::default()
        };
        Ok(Options::new(line_limit, bot, http))
    }

    /// Builds the engine configuration; `max_connections` is already settled.
    pub fn engine_config(
        &self,
        cpus: Vec<usize>,
        max_connections: usize,
        options: &Options,
    ) -> anyhow::Result<EngineConfig> {
        let specs = if self.serve.is_empty() {
            default_services()
        } else {
            self.serve.clone()
        };
        let services = specs
            .iter()
            .map(|spec| service(spec, self.bind, options))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let config = EngineConfig {
            services,
            cpus,
            pin: !self.no_pin,
            ring_entries: self.ring_entries,
            sqpoll: self.sqpoll,
            batch_wait: self.batch_wait,
            tcp_buffer_size: u32::try_from(self.buffer_size)
                .context("--buffer-size is too large")?,
            tcp_buffers: self.buffers,
            udp_buffers: self.udp_buffers,
            output_limit: usize::try_from(self.output_limit)
                .context("--output-limit is too large")?,
            send_timeout: self.send_timeout,
            idle_timeout: self.idle_timeout.0,
            max_connections,
            memory_limit: usize::try_from(
                self.memory_limit
                    .unwrap_or_else(crate::limits::default_memory_limit),
            )
            .context("--memory-limit is too large")?,
            shutdown_deadline: self.shutdown_deadline,
            ..EngineConfig::default()
        };
        // The engine's rule, in the flags' terms.
        let least = config.least_memory_limit();
        if config.memory_limit < least && !config.cpus.is_empty() {
            let share = config.memory_limit / config.cpus.len();
            anyhow::bail!(
                "memory limit {} leaves each of {} workers {}, under twice the output limit ({}); raise --memory-limit to at least {} or lower --output-limit",
                protocols::units::format_size(config.memory_limit as u64),
                config.cpus.len(),
                protocols::units::format_size(share as u64),
                protocols::units::format_size(config.output_limit as u64),
                protocols::units::format_size(least as u64),
            );
        }
        config.validate().map_err(anyhow::Error::msg)?;
        let uring_only = [
            ("--sqpoll", self.sqpoll.is_some()),
            ("--batch-wait", self.batch_wait.is_some()),
        ];
        if !matches!(
            self.io,
            crate::model::IoModel::Auto | crate::model::IoModel::Uring
        ) {
            if let Some((flag, _)) = uring_only.iter().find(|(_, given)| *given) {
                anyhow::bail!(
                    "{flag} tunes the io_uring engine; it does nothing with --io {}",
                    self.io
                        .to_possible_value()
                        .map_or_else(|| format!("{:?}", self.io), |v| v.get_name().to_string())
                );
            }
        }
        Ok(config)
    }
}

/// A duration, or `off` (`None`).
#[derive(Debug, Clone, Copy)]
pub struct DurationOrOff(pub Option<Duration>);

fn parse_idle_timeout(text: &str) -> Result<DurationOrOff, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(DurationOrOff(None));
    }
    parse_duration(text).map(|d| DurationOrOff(Some(d)))
}

fn service(spec: &ServeSpec, bind: IpAddr, options: &Options) -> anyhow::Result<ServiceConfig> {
    let protocol = spec.protocol;
    let options = options.clone();
    let handler = match spec.transport {
        // `ServeSpec` only pairs protocols with transports they serve, so the
        // factories below always produce a session.
        Transport::Tcp => Handler::Stream(Arc::new(move |_| {
            protocol
                .stream_session(&options)
                .unwrap_or_else(|| Box::new(protocols::echo::EchoStream))
        })),
        Transport::Udp => Handler::Datagram(Arc::new(move || {
            protocol
                .datagram_handler(&options)
                .unwrap_or_else(|| Box::new(protocols::echo::EchoDatagram))
        })),
    };
    Ok(ServiceConfig {
        addr: SocketAddr::new(bind, spec.port),
        protocol: protocol.name().to_string(),
        handler,
    })
}

fn core_ids() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocols page's table names every protocol of the registry,
    /// with the transports the registry serves it over, and no other.
    #[test]
    fn the_protocols_page_lists_the_registry() {
        let page = include_str!("../docs/protocols.md");
        let rows: Vec<(String, String)> = page
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| {
                let (name, rest) = l.split_once("` | ")?;
                let transports = rest.split(" | ").next()?;
                Some((name.to_string(), transports.to_string()))
            })
            .collect();
        let expected: Vec<(String, String)> = Protocol::names()
            .map(|name| {
                let p: Protocol = name.parse().unwrap();
                let served: Vec<&str> = [(Transport::Tcp, "tcp"), (Transport::Udp, "udp")]
                    .into_iter()
                    .filter(|(t, _)| p.serves(*t))
                    .map(|(_, t)| t)
                    .collect();
                (name.to_string(), served.join(", "))
            })
            .collect();
        assert_eq!(
            rows, expected,
            "docs/protocols.md's table against the registry"
        );
    }

    #[test]
    fn serve_specs_parse_and_reject_clearly() {
        assert_eq!(
            "tcp:7100=echo".parse::<ServeSpec>(),
            Ok(ServeSpec {
                transport: Transport::Tcp,
                port: 7100,
                protocol: Protocol::ECHO
            })
        );
        assert!("udp:1=reverse"
            .parse::<ServeSpec>()
            .unwrap_err()
            .contains("not served over udp"));
        assert!("tcp:99999=echo"
            .parse::<ServeSpec>()
            .unwrap_err()
            .contains("port"));
        assert!("tcp7100echo"
            .parse::<ServeSpec>()
            .unwrap_err()
            .contains("TRANSPORT:PORT=PROTOCOL"));
        assert!("sctp:1=echo"
            .parse::<ServeSpec>()
            .unwrap_err()
            .contains("transport"));
    }
}
