//! loadgen's command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
pub use protocols::units::parse_cpu_list as parse_cpus;
use protocols::units::{parse_duration, parse_rate, parse_size};

const EXAMPLES: &str = "\
Examples:
  loadgen --tcp
      closed-loop echo load on 127.0.0.1:65432, 50 connections, 10 s
  loadgen --tcp 127.0.0.1:7200 --protocol reverse --connections 200 --pipeline 4
      line-framed reverse, every reply verified byte for byte
  loadgen --tcp --rate 100k --duration 30s
      open loop at 100,000 requests/s; latency from each request's due time
  loadgen --tcp 127.0.0.1:6379 --protocol resp --mix get:9,set:1 --size 100 --pipeline 16
      a Redis server: GET and SET over 100k keys, every reply parsed
  loadgen --tcp 127.0.0.1:11211 --protocol memcache --key-dist zipf
      memcached's text protocol, hot keys drawn by a Zipf law
  loadgen --tcp 127.0.0.1:7000 --protocol generic --request 'GET {key}\r\n' --reply delim:\r\n
      any request/response protocol: a template and where a reply ends
  loadgen --udp --rate 1M --size 64 --duration 10
      1,000,000 datagrams/s, paced, with loss and round-trip percentiles
  loadgen --udp --rate max --no-reply
      unpaced one-way flood; shows where the kernel dropped packets
  loadgen --http http://127.0.0.1:8080/bytes/100000000
      one GET: throughput, time to first byte, transfer time
  loadgen --http http://127.0.0.1:8080/ --connections 50 --duration 10s
      keep-alive load with latency percentiles
  loadgen --http http://127.0.0.1:8080/users --connections 20 --method POST \
          --header 'Content-Type: application/json' --body-file user.json
      POST load with a body from a file
  loadgen --targets targets.txt --rate 10k..50k --duration 30s --plot ramp.svg
      several requests in turn (vegeta's targets format), a ramp, its plot

Durations take plain seconds or ms/s/m; rates and sizes take k/M (sizes K/M
in powers of 1024); --size takes a range LO..HI for random sizes.";

/// ringcore's load generator.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// A tool other than a load run.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TCP load against ADDR, an address or HOST:PORT (default
    /// 127.0.0.1:65432, the echo service).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:65432", conflicts_with = "udp", value_parser = resolve)]
    pub tcp: Option<SocketAddr>,

    /// UDP load against ADDR, an address or HOST:PORT (default
    /// 127.0.0.1:65432, the UDP echo service).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:65432", value_parser = resolve)]
    pub udp: Option<SocketAddr>,

    /// Fetch URL once (the chapter's third exercise) and report the
    /// throughput and timings; with --connections, a keep-alive load run.
    #[arg(long, value_name = "URL", conflicts_with_all = ["tcp", "udp"])]
    pub http: Option<String>,

    /// HTTP load from a targets file (vegeta's format: `METHOD URL`, then
    /// headers, then `@BODYFILE`, a blank line between targets), every
    /// target in turn; all must name one server.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tcp", "udp", "http"])]
    pub targets: Option<std::path::PathBuf>,

    /// With --http load: the method.
    #[arg(long, default_value = "GET", requires = "http", value_name = "METHOD")]
    pub method: String,

    /// With --http load: a header to send, `Name: value` (repeatable).
    #[arg(long, requires = "http", value_name = "NAME: VALUE")]
    pub header: Vec<String>,

    /// With --http load: the body to send, read from FILE.
    #[arg(long, requires = "http", value_name = "FILE")]
    pub body_file: Option<std::path::PathBuf>,

    /// With --http: follow redirects (at most 5).
    #[arg(long, requires = "http")]
    pub follow: bool,

    /// Drive the support bot: --connections concurrent conversations, each a
    /// random walk through the script to an end, every reply verified (give
    /// the bot's address with --tcp or --udp; ringcore serves it on 5555).
    #[arg(long)]
    pub bot: bool,

    /// With --bot: the script the server runs (default: the built-in one).
    #[arg(long, value_name = "FILE", requires = "bot")]
    pub bot_script: Option<std::path::PathBuf>,

    /// With --tcp: bulk transfer instead of requests. --connections flows
    /// write as fast as they can to a discard service (ringcore: `--serve
    /// tcp:9009=discard`), and the goodput the peer acknowledged is
    /// reported per interval (`--bulk-interval`), like `iperf3 -c`.
    #[arg(long, requires = "tcp")]
    pub bulk: bool,

    /// With --bulk: goodput is reported per interval of this length.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION", requires = "bulk")]
    pub bulk_interval: Duration,

    /// TCP protocol to speak and verify.
    #[arg(long, value_enum, default_value_t = TcpProtocol::Echo)]
    pub protocol: TcpProtocol,

    /// resp and memcache: the commands to send, by weight (resp: get, set,
    /// incr, del, ping; memcache: get, set, delete).
    #[arg(long, default_value = "get:9,set:1", value_name = "CMD:WEIGHT,...")]
    pub mix: String,

    /// resp, memcache and the generic mode's {key}: how many keys requests
    /// draw from (named key:000000000000 up, as redis-benchmark -r names them).
    #[arg(long, default_value = "100k", value_parser = parse_count, value_name = "N")]
    pub keys: u64,

    /// How keys are drawn: uniform, zipf, or zipf:S (a few hot keys; S defaults to 0.99).
    #[arg(long, default_value = "uniform", value_parser = crate::dialect::parse_key_dist, value_name = "DIST")]
    pub key_dist: crate::dialect::KeyDist,

    /// generic: each request, a template with {seq}, {key} and {payload}
    /// (--size bytes) and the escapes \n \r \t \0 \\ \xHH.
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "request_file")]
    pub request: Option<String>,

    /// generic: each request, a template read from FILE as it is (no
    /// escapes; {{ for a literal brace).
    #[arg(long, value_name = "FILE")]
    pub request_file: Option<std::path::PathBuf>,

    /// generic: where each reply ends: line, fixed:N, prefix:1|2be|2le|4be|4le
    /// (a length prefix, itself not counted), delim:BYTES, or echo (the
    /// request itself, checked byte for byte).
    #[arg(long, default_value = "line", value_name = "FRAMING")]
    pub reply: crate::dialect::Framing,

    /// generic: each reply must be exactly this template, filled with its
    /// own request's {seq}, {key} and {payload}.
    #[arg(long, value_name = "TEMPLATE")]
    pub expect: Option<String>,

    /// TCP connections, spread over the threads (default 50). With --http,
    /// giving it turns a single fetch into a load run.
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,

    /// Load threads (TCP: each drives its share of connections; UDP: one socket each).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// CPUs to pin the load threads to, round-robin (e.g. `1` or `0-1`).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,

    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// TCP and HTTP load: run this long first, then --duration. Requests
    /// due (or sent) in the warm-up are made and checked like any other and
    /// count in every total, but are left out of the latency figures: the
    /// server's start (accepting every connection, cold caches) is not its
    /// steady state.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,

    /// Stop after this many requests (TCP) instead of after --duration.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,

    /// Payload bytes per request or datagram, or LO..HI for random sizes.
    #[arg(long, default_value = "64", value_parser = parse_size_range, value_name = "BYTES")]
    pub size: SizeRange,

    /// Requests in flight per TCP connection.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pipeline: usize,

    /// With --pipeline N, closed loop over TCP: send N requests at once and
    /// the next N only once all N are answered, as redis-benchmark's -P
    /// does. Without it each reply frees its slot at once (memtier's way),
    /// which keeps more in flight.
    #[arg(long)]
    pub batch: bool,

    /// Target rate per second for the whole run (k/M suffixes); `max` floods
    /// (UDP). TCP without it runs closed loop. TCP and HTTP also take a
    /// rate that changes: FROM..TO ramps linearly over the run (warm-up
    /// included), R1,R2,... holds each for an equal share of it.
    #[arg(long, value_parser = parse_target_rate, value_name = "RATE")]
    pub rate: Option<Rate>,

    /// How TCP load threads do their I/O: io_uring where the kernel allows
    /// it, else epoll (auto, saying why); or either by force.
    #[arg(long, value_enum, default_value_t = IoChoice::Auto, value_name = "PATH")]
    pub io: IoChoice,

    /// A request unanswered this long after it was sent counts as a
    /// timeout (TCP).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// A single --http fetch gives up after this long in all, reporting
    /// what arrived (as curl's --max-time): a server that never ends its
    /// body would otherwise keep it reading for good.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_time: Option<Duration>,

    /// Run one step per rate from FROM to TO (STEPS rates, evenly spaced,
    /// default 8), each for --duration. UDP: offered vs delivered vs loss.
    /// TCP and HTTP: offered vs answered and p99, and the knee: the first
    /// rate whose p99 passes --knee-p99 or that the server cannot keep.
    #[arg(long, value_parser = parse_sweep, value_name = "FROM..TO[:STEPS]")]
    pub sweep: Option<Sweep>,

    /// TCP and HTTP --sweep: the p99 past which a step is over the knee.
    #[arg(long, default_value = "1ms", value_parser = parse_duration, value_name = "DURATION")]
    pub knee_p99: Duration,

    /// Draw the run as SVG. UDP --sweep: offered load on x, delivered and
    /// loss on y. TCP and HTTP --sweep: offered on x, answered and p99 on
    /// y, the knee marked. A changing TCP or HTTP --rate (or --rate-file):
    /// time on x, each second's profile, sent rate and p99.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,

    /// UDP: how long to keep receiving after the last send before an
    /// unanswered datagram counts as lost (default: twice the slowest round
    /// trip seen, between 50 ms and 2 s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub drain: Option<Duration>,

    /// UDP: congestion control. The rate follows the echoes' feedback
    /// (AIMD: halve on a loss event, one more datagram per round trip each
    /// round trip), so the flow shares a bottleneck with TCP; --rate is its
    /// ceiling.
    #[arg(long)]
    pub cc: bool,

    /// UDP: do not expect replies (one-way flood).
    #[arg(long)]
    pub no_reply: bool,

    /// The server's metrics endpoint (ringcore --metrics), to split UDP loss
    /// between the network and the server.
    #[arg(long, value_name = "ADDR:PORT")]
    pub server_metrics: Option<SocketAddr>,

    /// Also write the latency (TCP) or round-trip (UDP) histogram to FILE
    /// as an HdrHistogram interval log, for `loadgen report`.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<std::path::PathBuf>,

    /// TCP and HTTP load: the rate follows FILE's SECONDS,RATE rows
    /// (linear between rows, a step where two share a second; the run
    /// lasts until the last row), instead of --rate.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rate", "duration", "requests"])]
    pub rate_file: Option<std::path::PathBuf>,

    /// TCP and HTTP load: write one CSV row per request to FILE (when it
    /// fell due, was sent and ended, in ns from the start; its bytes; how
    /// it ended), streamed with bounded memory.
    #[arg(long, value_name = "FILE")]
    pub request_log: Option<std::path::PathBuf>,

    /// Start the load at this wall-clock time, so agents on several
    /// (NTP-synced) machines start together: +DURATION, Unix seconds, or an
    /// RFC 3339 time (2026-11-25T12:00:00Z).
    #[arg(long, value_parser = parse_start_at, value_name = "TIME")]
    pub start_at: Option<std::time::SystemTime>,

    /// A name for this run, carried into its JSON result (e.g. the agent's).
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,

    /// Length of each interval of --hdr-log (one histogram per interval,
    /// as HdrHistogram's log tools plot a run over time).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub hdr_interval: Duration,

    /// No progress line on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,

    /// Print the result as one JSON object on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Tools beside the load runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to a service by hand, like the chapter's clients: send each line
    /// typed (or each line of --script), print every reply.
    Client {
        /// tcp or udp.
        #[arg(value_enum)]
        transport: ClientTransport,
        /// The service's address.
        addr: SocketAddr,
        /// Send the lines of this file instead of the terminal's, and print a transcript.
        #[arg(long, value_name = "FILE")]
        script: Option<std::path::PathBuf>,
        /// How long to wait for a reply (UDP) or a connection (TCP).
        #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
        reply_timeout: Duration,
    },
    /// Merge results from several runs or machines: JSON reports (counts and
    /// rates add up) and HdrHistogram logs from --hdr-log (merged exactly,
    /// since percentiles cannot be averaged).
    Report {
        /// `--json` outputs and `--hdr-log` files, in any mix.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
        /// Also write the merged intervals as one HdrHistogram log.
        #[arg(long = "hdr-log", value_name = "FILE")]
        merged_log: Option<std::path::PathBuf>,
    },
    /// The network lab (needs root): ringcore and loadgen in two network
    /// namespaces joined by a veth pair shaped with `tc tbf`; a paced run
    /// under the link rate and an unpaced flood over it, side by side, with
    /// the drops counted at the qdisc and at the sockets. The namespaces are
    /// removed afterwards, even when interrupted.
    Lab {
        /// The shaped link's rate, in tc's syntax.
        #[arg(long, default_value = "100mbit")]
        link: String,
        /// Bytes per datagram.
        #[arg(long, default_value = "1000", value_parser = parse_size)]
        size: u64,
        /// Length of each run (default 3s), or of each phase with
        /// --with-tcp (default 10s: congestion control needs some
        /// seconds to find its share).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Rate of the paced run (default: 70 % of the link).
        #[arg(long, value_parser = parse_rate)]
        paced: Option<f64>,
        /// Instead of paced vs flood: one paced step per rate across the link.
        #[arg(long, value_parser = parse_sweep, value_name = "FROM..TO[:STEPS]", conflicts_with = "with_tcp")]
        sweep: Option<Sweep>,
        /// A TCP flow shares the link with UDP, in phases of --duration
        /// each: TCP alone; with an unpaced UDP flood; with UDP paced at
        /// half the link; with congestion-controlled UDP (--cc).
        #[arg(long)]
        with_tcp: bool,
        /// With --with-tcp: the TCP flow's congestion control (one of
        /// /proc/sys/net/ipv4/tcp_available_congestion_control).
        #[arg(long, default_value = "cubic", requires = "with_tcp")]
        tcp_cc: String,
        /// With --sweep: draw the curve; with --with-tcp: the time series
        /// (100 ms bins, phases marked). As SVG.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<std::path::PathBuf>,
    },
}

/// `--io`: how TCP load threads do their I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoChoice {
    /// io_uring if available, else epoll.
    Auto,
    /// io_uring, or refuse to run.
    Uring,
    /// Edge-triggered epoll.
    Epoll,
}

/// The client's transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientTransport {
    /// A TCP connection; lines end with a newline.
    Tcp,
    /// One datagram per line.
    Udp,
}

/// The TCP protocols loadgen speaks, every reply checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcpProtocol {
    /// Every byte back.
    Echo,
    /// Line-framed reverse (ringcore's `reverse-lines`): each line reversed.
    Reverse,
    /// Redis's protocol: --mix of commands over --keys, values of --size.
    Resp,
    /// memcached's text protocol: --mix of get/set/delete over --keys.
    Memcache,
    /// Any request/response protocol: --request, --reply, --expect.
    Generic,
}

impl TcpProtocol {
    /// The name reports show.
    pub fn name(self) -> &'static str {
        match self {
            TcpProtocol::Echo => "echo",
            TcpProtocol::Reverse => "reverse",
            TcpProtocol::Resp => "resp",
            TcpProtocol::Memcache => "memcache",
            TcpProtocol::Generic => "generic",
        }
    }
}

/// A count with an optional k/M/G suffix (powers of 1000).
fn parse_count(text: &str) -> Result<u64, String> {
    let (digits, scale) = match text.as_bytes().last() {
        Some(b'k') => (&text[..text.len() - 1], 1_000),
        Some(b'M') => (&text[..text.len() - 1], 1_000_000),
        Some(b'G') => (&text[..text.len() - 1], 1_000_000_000),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{text:?}: give a whole number of at least 1 (k, M and G allowed)"))
}

/// A payload size, fixed or drawn uniformly from a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    /// Smallest size.
    pub lo: usize,
    /// Largest size.
    pub hi: usize,
}

/// The rates of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sweep {
    /// First rate, per second.
    pub from: f64,
    /// Last rate, per second.
    pub to: f64,
    /// Number of rates.
    pub steps: usize,
}

impl Sweep {
    /// The rates, evenly spaced from `from` to `to`.
    pub fn rates(&self) -> Vec<f64> {
        if self.steps == 1 {
            return vec![self.from];
        }
        let step = (self.to - self.from) / (self.steps - 1) as f64;
        (0..self.steps)
            .map(|i| self.from + step * i as f64)
            .collect()
    }
}

fn parse_sweep(text: &str) -> Result<Sweep, String> {
    let usage = || format!("'{text}' is not FROM..TO[:STEPS] (e.g. 50k..1M:10)");
    let (range, steps) = match text.split_once(':') {
        Some((r, s)) => (r, s.parse::<usize>().map_err(|_| usage())?),
        None => (text, 8),
    };
    let (from, to) = range.split_once("..").ok_or_else(usage)?;
    let (from, to) = (parse_rate(from)?, parse_rate(to)?);
    if from > to || steps == 0 || steps > 1000 {
        return Err(format!("'{text}': need FROM <= TO and 1 to 1000 steps"));
    }
    Ok(Sweep { from, to, steps })
}

/// A target rate.
#[derive(Debug, Clone, PartialEq)]
pub enum Rate {
    /// This many per second.
    PerSecond(f64),
    /// TCP and HTTP: a rate that changes over the run (`FROM..TO`, a
    /// linear ramp; `R1,R2,...`, equal steps).
    Profile(crate::schedule::RateSpec),
    /// As fast as possible, unpaced.
    Max,
}

fn parse_size_range(text: &str) -> Result<SizeRange, String> {
    let to_usize =
        |s: &str| parse_size(s).and_then(|v| usize::try_from(v).map_err(|e| e.to_string()));
    let (lo, hi) = match text.split_once("..") {
        Some((lo, hi)) => (to_usize(lo)?, to_usize(hi)?),
        None => {
            let v = to_usize(text)?;
            (v, v)
        }
    };
    if lo == 0 || lo > hi {
        return Err(format!("'{text}': sizes must be at least 1 and LO <= HI"));
    }
    Ok(SizeRange { lo, hi })
}

/// An address, or a HOST:PORT resolved now (a Kubernetes service's name,
/// say).
fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{text}' (give ADDR:PORT or HOST:PORT): {e}"))?
        .next()
        .ok_or_else(|| format!("'{text}' resolves to no address"))
}

fn parse_start_at(text: &str) -> Result<std::time::SystemTime, String> {
    protocols::units::parse_wall_time(text, std::time::SystemTime::now())
}

fn parse_target_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match crate::schedule::RateSpec::parse(text)? {
        crate::schedule::RateSpec::Constant(r) => Ok(Rate::PerSecond(r)),
        profile => Ok(Rate::Profile(profile)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_cpus() {
        assert_eq!(parse_size_range("64"), Ok(SizeRange { lo: 64, hi: 64 }));
        assert_eq!(
            parse_size_range("16..1K"),
            Ok(SizeRange { lo: 16, hi: 1024 })
        );
        assert!(parse_size_range("0").is_err());
        assert!(parse_size_range("9..3").is_err());
        assert_eq!(parse_target_rate("MAX"), Ok(Rate::Max));
        assert_eq!(parse_target_rate("1M"), Ok(Rate::PerSecond(1e6)));
        assert!(parse_target_rate("lots").is_err());
        let s = parse_sweep("10k..40k:4").unwrap();
        assert_eq!(s.rates(), vec![10e3, 20e3, 30e3, 40e3]);
        assert_eq!(parse_sweep("1M..2M").unwrap().steps, 8);
        assert!(parse_sweep("2M..1M").is_err());
        assert!(parse_sweep("1k..2k:0").is_err());
    }
}
