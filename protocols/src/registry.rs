//! Protocol names as the command line spells them, and which transports each serves.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::bot::{BotConfig, BotDatagram, BotStream, Script};
use crate::http::{HttpConfig, HttpSession};

use crate::discard::{DiscardDatagram, DiscardStream};
use crate::echo::{EchoDatagram, EchoStream};
use crate::ok::OkDatagram;
use crate::reverse::{ReverseChunks, ReverseLines};
use crate::{DatagramHandler, StreamSession};

/// A transport a service listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP listener; one session per connection.
    Tcp,
    /// A UDP socket; one handler per socket.
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Transport::Tcp),
            "udp" => Ok(Transport::Udp),
            other => Err(format!("unknown transport '{other}' (expected tcp or udp)")),
        }
    }
}

/// What protocols need beyond their name: limits and the bot's script.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest line the line-framed protocols accept.
    pub max_line: usize,
    /// The bot's script and limits.
    pub bot: Arc<BotConfig>,
    /// The HTTP service's limits and metrics source.
    pub http: Arc<HttpConfig>,
    /// Counts bot conversations so that their ticket numbers differ.
    conversations: Arc<AtomicU64>,
}

impl Options {
    /// Options with the given line bound and bot configuration.
    pub fn new(max_line: usize, bot: BotConfig, http: HttpConfig) -> Self {
        Self {
            max_line,
            bot: Arc::new(bot),
            http: Arc::new(http),
            conversations: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new(
            crate::reverse::DEFAULT_MAX_LINE,
            BotConfig::with_script(Arc::new(Script::default_script())),
            HttpConfig::default(),
        )
    }
}

/// A protocol name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol '{0}' (expected one of: {names})", names = Protocol::names().collect::<Vec<_>>().join(", "))]
pub struct UnknownProtocol(pub String);

/// Makes a protocol's session for one TCP connection.
pub type MakeSession = fn(&Options) -> Box<dyn StreamSession + Send>;
/// Makes a protocol's handler for one UDP socket.
pub type MakeHandler = fn(&Options) -> Box<dyn DatagramHandler>;

/// Everything the `ringcore` binary knows of one protocol. Parsing,
/// `--serve`'s checks and `--help` all come from [`REGISTRY`], so a new
/// protocol is its module and one entry there.
pub struct Entry {
    /// The name the command line uses.
    pub name: &'static str,
    /// What it does, in one line, for `--help`.
    pub help: &'static str,
    /// Makes the session of one TCP connection; `None`: not served over TCP.
    pub stream: Option<MakeSession>,
    /// Makes the handler of one UDP socket; `None`: not served over UDP.
    pub datagram: Option<MakeHandler>,
}

/// Every protocol the binary serves, in the order `--help` lists them.
pub const REGISTRY: &[Entry] = &[
    Entry {
        name: "echo",
        help: "RFC 862: every byte (or datagram) back as it came",
        stream: Some(|_| Box::new(EchoStream)),
        datagram: Some(|_| Box::new(EchoDatagram)),
    },
    Entry {
        name: "reverse",
        help: "the chapter's threaded server: each received chunk reversed",
        stream: Some(|_| Box::new(ReverseChunks)),
        datagram: None,
    },
    Entry {
        name: "reverse-lines",
        help: "each line reversed, whatever the chunks (up to --line-limit)",
        stream: Some(|o| Box::new(ReverseLines::new(o.max_line))),
        datagram: None,
    },
    Entry {
        name: "ok",
        help: "the chapter's UDP server: `OK...` and the datagram",
        stream: None,
        datagram: Some(|_| Box::new(OkDatagram::default())),
    },
    Entry {
        name: "bot",
        help: "the ISP support bot of the chapter's exercises (--bot-script)",
        stream: Some(|o| {
            let seed = o.conversations.fetch_add(1, Ordering::Relaxed);
            Box::new(BotStream::new(o.bot.clone(), seed))
        }),
        datagram: Some(|o| Box::new(BotDatagram::new(o.bot.clone()))),
    },
    Entry {
        name: "http",
        help: "HTTP/1.1: /, /bytes/N, /metrics, pipelining and keep-alive",
        stream: Some(|o| Box::new(HttpSession::new(o.http.clone()))),
        datagram: None,
    },
    Entry {
        name: "discard",
        help: "RFC 863: read and counted, never answered",
        stream: Some(|_| Box::new(DiscardStream)),
        datagram: Some(|_| Box::new(DiscardDatagram)),
    },
];

/// A protocol of [`REGISTRY`]: a handle on its entry.
#[derive(Clone, Copy)]
pub struct Protocol(&'static Entry);

impl Protocol {
    /// RFC 862 echo, TCP and UDP.
    pub const ECHO: Protocol = Protocol(&REGISTRY[0]);
    /// The chapter's reverse: each received chunk reversed (TCP).
    pub const REVERSE: Protocol = Protocol(&REGISTRY[1]);
    /// Line-framed reverse (TCP).
    pub const REVERSE_LINES: Protocol = Protocol(&REGISTRY[2]);
    /// The chapter's UDP server: `OK...` + the datagram (UDP).
    pub const OK: Protocol = Protocol(&REGISTRY[3]);
    /// The ISP customer-support bot (TCP and UDP).
    pub const BOT: Protocol = Protocol(&REGISTRY[4]);
    /// A minimal HTTP/1.1 service (TCP).
    pub const HTTP: Protocol = Protocol(&REGISTRY[5]);
    /// RFC 863 discard: read and counted, never answered (TCP and UDP).
    pub const DISCARD: Protocol = Protocol(&REGISTRY[6]);

    /// Every protocol's name, in the order `--help` lists them.
    pub fn names() -> impl Iterator<Item = &'static str> {
        REGISTRY.iter().map(|e| e.name)
    }

    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Whether this protocol can be served over `transport`.
    pub fn serves(self, transport: Transport) -> bool {
        match transport {
            Transport::Tcp => self.0.stream.is_some(),
            Transport::Udp => self.0.datagram.is_some(),
        }
    }

    /// A new session for one TCP connection, if this is a stream protocol.
    pub fn stream_session(self, options: &Options) -> Option<Box<dyn StreamSession + Send>> {
        self.0.stream.map(|make| make(options))
    }

    /// A new handler for one UDP socket, if this is a datagram protocol.
    pub fn datagram_handler(self, options: &Options) -> Option<Box<dyn DatagramHandler>> {
        self.0.datagram.map(|make| make(options))
    }

    /// The protocols for `--help`, one line each: name, transports, what it does.
    pub fn help() -> String {
        REGISTRY
            .iter()
            .map(|e| {
                let transports: Vec<&str> =
                    [(e.stream.is_some(), "tcp"), (e.datagram.is_some(), "udp")]
                        .into_iter()
                        .filter_map(|(served, t)| served.then_some(t))
                        .collect();
                format!("  {:<14} {:<9} {}\n", e.name, transports.join(", "), e.help)
            })
            .collect()
    }
}

impl PartialEq for Protocol {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Protocol {}

impl std::hash::Hash for Protocol {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        REGISTRY
            .iter()
            .find(|e| e.name == s)
            .map(Protocol)
            .ok_or_else(|| UnknownProtocol(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_their_entries_and_the_constants_name_theirs() {
        for name in Protocol::names() {
            let p: Protocol = name.parse().unwrap();
            assert_eq!(p.name(), name);
            let options = Options::default();
            assert_eq!(
                p.serves(Transport::Tcp),
                p.stream_session(&options).is_some()
            );
            assert_eq!(
                p.serves(Transport::Udp),
                p.datagram_handler(&options).is_some()
            );
            assert!(
                p.serves(Transport::Tcp) || p.serves(Transport::Udp),
                "{name}"
            );
        }
        // The constants point at the entries their names say (written out
        // here, apart from the table).
        for (p, name) in [
            (Protocol::ECHO, "echo"),
            (Protocol::REVERSE, "reverse"),
            (Protocol::REVERSE_LINES, "reverse-lines"),
            (Protocol::OK, "ok"),
            (Protocol::BOT, "bot"),
            (Protocol::HTTP, "http"),
            (Protocol::DISCARD, "discard"),
        ] {
            assert_eq!(p.name(), name);
        }
        let names: Vec<&str> = Protocol::names().collect();
        let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "a name used twice");
        let err = "gopher".parse::<Protocol>().unwrap_err().to_string();
        assert!(
            err.contains("gopher") && err.contains("reverse-lines"),
            "{err}"
        );
    }

    #[test]
    fn help_lists_every_protocol_with_its_transports() {
        let help = Protocol::help();
        assert_eq!(help.lines().count(), REGISTRY.len());
        assert!(
            help.contains("  echo           tcp, udp  RFC 862"),
            "{help}"
        );
        assert!(help.contains("  ok             udp       "), "{help}");
        assert!(help.contains("  http           tcp       "), "{help}");
    }
}
