//! Protocol names as the command line spells them, and which transports each serves.

use std::fmt;
use std::str::FromStr;

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
}

/// A protocol name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol '{0}' (expected one of: {names})", names = Protocol::NAMES.join(", "))]
pub struct UnknownProtocol(pub String);

impl Protocol {
    /// Every protocol name, in the order `--help` lists them.
    pub const NAMES: &'static [&'static str] = &["echo", "reverse", "reverse-lines", "ok"];

    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Reverse => "reverse",
            Protocol::ReverseLines => "reverse-lines",
            Protocol::Ok => "ok",
        }
    }

    /// Whether this protocol can be served over `transport`.
    pub fn serves(self, transport: Transport) -> bool {
        match self {
            Protocol::Echo => true,
            Protocol::Reverse | Protocol::ReverseLines => transport == Transport::Tcp,
            Protocol::Ok => transport == Transport::Udp,
        }
    }

    /// A new session for one TCP connection, if this is a stream protocol.
    /// `max_line` bounds line-framed protocols.
    pub fn stream_session(self, max_line: usize) -> Option<Box<dyn StreamSession>> {
        match self {
            Protocol::Echo => Some(Box::new(EchoStream)),
            Protocol::Reverse => Some(Box::new(ReverseChunks)),
            Protocol::ReverseLines => Some(Box::new(ReverseLines::new(max_line))),
            Protocol::Ok => None,
        }
    }

    /// A new handler for one UDP socket, if this is a datagram protocol.
    pub fn datagram_handler(self) -> Option<Box<dyn DatagramHandler>> {
        match self {
            Protocol::Echo => Some(Box::new(EchoDatagram)),
            Protocol::Ok => Some(Box::new(OkDatagram)),
            Protocol::Reverse | Protocol::ReverseLines => None,
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
            assert_eq!(p.serves(Transport::Tcp), p.stream_session(16).is_some());
            assert_eq!(p.serves(Transport::Udp), p.datagram_handler().is_some());
        }
        let err = "gopher".parse::<Protocol>().unwrap_err().to_string();
        assert!(
            err.contains("gopher") && err.contains("reverse-lines"),
            "{err}"
        );
    }
}
