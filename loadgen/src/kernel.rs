//! What the kernel counted: UDP counters from /proc/net/snmp, per-socket
//! drops from /proc/net/udp{,6}, and a ringcore server's own counters from
//! its metrics endpoint. Read before and after a run, their differences show
//! where packets died.
//!
//! The tables are read through /proc/thread-self/net: counters are per
//! network namespace, and a thread may have entered another one (the lab).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

/// The `Udp:` line of /proc/net/snmp (this network namespace).
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct UdpSnmp {
    /// Datagrams delivered to sockets.
    pub in_datagrams: u64,
    /// Datagrams to a port nobody listens on (answered with ICMP).
    pub no_ports: u64,
    /// Datagrams that could not be delivered (queue full, bad checksum, ...).
    pub in_errors: u64,
    /// Datagrams sent.
    pub out_datagrams: u64,
    /// Datagrams dropped because a socket's receive queue was full.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped on the send path (socket buffer or qdisc).
    pub sndbuf_errors: u64,
}

impl UdpSnmp {
    /// Reads the counters now (zeros when /proc is not readable).
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/thread-self/net/snmp")
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Parses the two `Udp:` lines (names, then values).
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Self::default();
        };
        let pairs: Vec<(&str, u64)> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
            .map(|(n, v)| (n, v.parse().unwrap_or(0)))
            .collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v)
        };
        Self {
            in_datagrams: get("InDatagrams"),
            no_ports: get("NoPorts"),
            in_errors: get("InErrors"),
            out_datagrams: get("OutDatagrams"),
            rcvbuf_errors: get("RcvbufErrors"),
            sndbuf_errors: get("SndbufErrors"),
        }
    }

    /// `self - before`, counter by counter.
    pub fn since(&self, before: &UdpSnmp) -> UdpSnmp {
        UdpSnmp {
            in_datagrams: self.in_datagrams.saturating_sub(before.in_datagrams),
            no_ports: self.no_ports.saturating_sub(before.no_ports),
            in_errors: self.in_errors.saturating_sub(before.in_errors),
            out_datagrams: self.out_datagrams.saturating_sub(before.out_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
        }
    }
}

/// Datagrams dropped so far by every UDP socket bound to local `port`
/// (the `drops` column of /proc/net/udp and /proc/net/udp6).
pub fn socket_drops(port: u16) -> u64 {
    ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| drops_in_table(&text, port))
        .sum()
}

/// Sums the drops of sockets on `port` in one /proc/net/udp table.
pub fn drops_in_table(text: &str, port: u16) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (local_port == port).then(|| fields.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// A ringcore server's UDP counters, from its metrics endpoint.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ServerUdp {
    /// Datagrams the server received.
    pub datagrams_in: u64,
    /// Datagrams the server sent.
    pub datagrams_out: u64,
    /// Replies the server dropped itself.
    pub replies_dropped: u64,
}

impl ServerUdp {
    /// Fetches the totals from `http://addr/metrics`.
    pub fn fetch(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| anyhow::anyhow!("cannot reach the server metrics at {addr}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: ringcore\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let total = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        if !text.contains("ringcore_datagrams_in") {
            anyhow::bail!("{addr} did not answer with ringcore metrics");
        }
        Ok(Self {
            datagrams_in: total("ringcore_datagrams_in"),
            datagrams_out: total("ringcore_datagrams_out"),
            replies_dropped: total("ringcore_udp_replies_dropped"),
        })
    }

    /// `self - before`.
    pub fn since(&self, before: &ServerUdp) -> ServerUdp {
        ServerUdp {
            datagrams_in: self.datagrams_in.saturating_sub(before.datagrams_in),
            datagrams_out: self.datagrams_out.saturating_sub(before.datagrams_out),
            replies_dropped: self.replies_dropped.saturating_sub(before.replies_dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snmp_and_udp_tables() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 100 2 7 90 5 1 0 0 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let s = UdpSnmp::parse(snmp);
        assert_eq!(
            (
                s.in_datagrams,
                s.no_ports,
                s.in_errors,
                s.out_datagrams,
                s.rcvbuf_errors,
                s.sndbuf_errors
            ),
            (100, 2, 7, 90, 5, 1)
        );
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 42\n  2: 0100007F:FF98 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 3\n  3: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 8\n";
        assert_eq!(drops_in_table(table, 8080), 50);
        assert_eq!(drops_in_table(table, 65432), 3);
        assert_eq!(drops_in_table(table, 1), 0);
        assert_eq!(
            UdpSnmp {
                rcvbuf_errors: 9,
                ..s
            }
            .since(&s)
            .rcvbuf_errors,
            4
        );
    }
}
