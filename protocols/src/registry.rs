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

/// Every protocol ringcore serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RFC 862 echo, TCP and UDP.
    Echo,
    /// The chapter's reverse: each received chunk reversed (TCP).
    Reverse,
    /// Line-framed reverse (TCP).
    ReverseLines,
    /// The chapter's UDP server: `OK...` + the datagram (UDP).
    Ok,
    /// The ISP customer-support bot (TCP and UDP).
    Bot,
    /// A minimal HTTP/1.1 service (TCP).
    Http,
    /// RFC 863 discard: read and counted, never answered (TCP and UDP).
    Discard,
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
#[error("unknown protocol '{0}' (expected one of: {names})", names = Protocol::NAMES.join(", "))]
pub struct UnknownProtocol(pub String);

impl Protocol {
    /// Every protocol name, in the order `--help` lists them.
    pub const NAMES: &'static [&'static str] = &[
        "echo",
        "reverse",
        "reverse-lines",
        "ok",
        "bot",
        "http",
        "discard",
    ];

    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Reverse => "reverse",
            Protocol::ReverseLines => "reverse-lines",
            Protocol::Ok => "ok",
            Protocol::Bot => "bot",
            Protocol::Http => "http",
            Protocol::Discard => "discard",
        }
    }

    /// Whether this protocol can be served over `transport`.
    pub fn serves(self, transport: Transport) -> bool {
        match self {
            Protocol::Echo | Protocol::Bot | Protocol::Discard => true,
            Protocol::Reverse | Protocol::ReverseLines | Protocol::Http => {
                transport == Transport::Tcp
            }
            Protocol::Ok => transport == Transport::Udp,
        }
    }

    /// A new session for one TCP connection, if this is a stream protocol.
    pub fn stream_session(self, options: &Options) -> Option<Box<dyn StreamSession + Send>> {
        match self {
            Protocol::Echo => Some(Box::new(EchoStream)),
            Protocol::Reverse => Some(Box::new(ReverseChunks)),
            Protocol::ReverseLines => Some(Box::new(ReverseLines::new(options.max_line))),
            Protocol::Bot => {
                let seed = options.conversations.fetch_add(1, Ordering::Relaxed);
                Some(Box::new(BotStream::new(options.bot.clone(), seed)))
            }
            Protocol::Http => Some(Box::new(HttpSession::new(options.http.clone()))),
            Protocol::Discard => Some(Box::new(DiscardStream)),
            Protocol::Ok => None,
        }
    }

    /// A new handler for one UDP socket, if this is a datagram protocol.
    pub fn datagram_handler(self, options: &Options) -> Option<Box<dyn DatagramHandler>> {
        match self {
            Protocol::Echo => Some(Box::new(EchoDatagram)),
            Protocol::Ok => Some(Box::new(OkDatagram::default())),
            Protocol::Bot => Some(Box::new(BotDatagram::new(options.bot.clone()))),
            Protocol::Discard => Some(Box::new(DiscardDatagram)),
            Protocol::Reverse | Protocol::ReverseLines | Protocol::Http => None,
        }
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
        match s {
            "echo" => Ok(Protocol::Echo),
            "reverse" => Ok(Protocol::Reverse),
            "reverse-lines" => Ok(Protocol::ReverseLines),
            "ok" => Ok(Protocol::Ok),
            "bot" => Ok(Protocol::Bot),
            "http" => Ok(Protocol::Http),
            "discard" => Ok(Protocol::Discard),
            other => Err(UnknownProtocol(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_transports_match_factories() {
        for name in Protocol::NAMES {
            let p: Protocol = name.parse().unwrap();
            assert_eq!(p.name(), *name);
            let options = Options::default();
            assert_eq!(
                p.serves(Transport::Tcp),
                p.stream_session(&options).is_some()
            );
            assert_eq!(
                p.serves(Transport::Udp),
                p.datagram_handler(&options).is_some()
            );
        }
        let err = "gopher".parse::<Protocol>().unwrap_err().to_string();
        assert!(
            err.contains("gopher") && err.contains("reverse-lines"),
            "{err}"
        );
    }
}
