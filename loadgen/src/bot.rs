//! `loadgen --bot`: many concurrent scripted conversations with the support
//! bot, each a random walk through the script to an end. Every reply is
//! checked against the bot's own state machine (the same `Conversation` the
//! server runs), so a reply from the wrong node is a mismatch.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use protocols::bot::{Conversation, Kind, Outcome, Script};
use protocols::Next;
use serde::Serialize;

use crate::latency;
use crate::progress::Live;
use crate::rng::Rng;
use crate::tcp::connect_error;

/// A walk this long ends with `quit` (scripts may loop).
const MAX_TURNS: usize = 40;

/// What a bot run does.
#[derive(Debug, Clone)]
pub struct BotPlan {
    /// The bot service.
    pub addr: SocketAddr,
    /// Over UDP instead of TCP.
    pub udp: bool,
    /// Conversations at once (one thread each).
    pub concurrent: usize,
    /// How long to run.
    pub duration: Duration,
    /// Stop after this many conversations instead.
    pub conversations: Option<u64>,
    /// The script the server runs.
    pub script: Arc<Script>,
    /// A reply not complete within this is a timeout.
    pub timeout: Duration,
    /// CPUs for the threads.
    pub cpus: Vec<usize>,
}

/// Conversations that ended in an error, by kind.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ConversationErrors {
    /// Connection refused (no server listening).
    pub refused: u64,
    /// Connection reset or broken pipe.
    pub reset: u64,
    /// The server closed the connection mid-conversation.
    pub closed: u64,
    /// A reply not complete within `--timeout`.
    pub timeout: u64,
    /// A reply that differed from the script's.
    pub mismatch: u64,
}

impl ConversationErrors {
    /// All failed conversations.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.closed + self.timeout + self.mismatch
    }
}

/// How conversations ended.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Outcomes {
    /// Ended with the problem solved.
    pub resolved: u64,
    /// Ended with a ticket.
    pub ticket: u64,
    /// Ended by `quit` after too many turns.
    pub quit: u64,
}

/// What a bot run measured.
pub struct BotOutcome {
    /// Conversations completed and verified.
    pub conversations: u64,
    /// Turns (messages answered) in them.
    pub turns: u64,
    /// Errors by kind.
    pub errors: ConversationErrors,
    /// How they ended.
    pub outcomes: Outcomes,
    /// Per-turn latency, nanoseconds.
    pub turn_latency: Histogram<u64>,
    /// Length of the run.
    pub elapsed: Duration,
}

/// Runs the plan.
pub fn run(plan: &BotPlan, live: &Live, quiet: bool) -> anyhow::Result<BotOutcome> {
    if !plan.udp {
        TcpStream::connect_timeout(&plan.addr, plan.timeout)
            .map_err(|e| connect_error(plan.addr, &e))?;
    }
    let start = Instant::now();
    let results = crate::progress::run_threads(
        vec![(); plan.concurrent],
        &plan.cpus,
        live,
        "conversations",
        quiet,
        |t, ()| {
            // Each thread runs its exact share of `--requests` conversations.
            let quota = plan
                .conversations
                .map(|n| crate::tcp::share_u64(n, plan.concurrent, t));
            let mut walker = Walker::new(plan, t as u64, live);
            while start.elapsed() < plan.duration || plan.conversations.is_some() {
                if quota.is_some_and(|q| walker.conversations + walker.failed >= q) {
                    break;
                }
                walker.converse();
            }
            Ok(walker)
        },
    )?;
    let mut total = BotOutcome {
        conversations: 0,
        turns: 0,
        errors: ConversationErrors::default(),
        outcomes: Outcomes::default(),
        turn_latency: latency::histogram(),
        elapsed: start.elapsed(),
    };
    for w in results {
        total.conversations += w.conversations;
        total.turns += w.turns;
        total.errors.refused += w.errors.refused;
        total.errors.reset += w.errors.reset;
        total.errors.closed += w.errors.closed;
        total.errors.timeout += w.errors.timeout;
        total.errors.mismatch += w.errors.mismatch;
        total.outcomes.resolved += w.outcomes.resolved;
        total.outcomes.ticket += w.outcomes.ticket;
        total.outcomes.quit += w.outcomes.quit;
        total
            .turn_latency
            .add(&w.latency)
            .context("merging latency histograms")?;
    }
    Ok(total)
}

/// Replaces ticket digits: the server numbers tickets its own way.
fn mask(text: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    let mut i = 0;
    while let Some(at) = out[i..].windows(3).position(|w| w == b"RC-") {
        let digits = i + at + 3;
        for b in out.iter_mut().skip(digits).take(6) {
            *b = b'#';
        }
        i = digits;
    }
    out
}

/// The conversation's connection, or (over UDP) its own socket: each
/// conversation comes from a fresh source port, as a real client's would,
/// so a datagram lost in one cannot put a later one out of step.
enum Transport {
    Tcp(Option<TcpStream>),
    Udp(Option<UdpSocket>),
}

struct Walker<'a> {
    plan: &'a BotPlan,
    live: &'a Live,
    rng: Rng,
    transport: Transport,
    conversations: u64,
    failed: u64,
    turns: u64,
    errors: ConversationErrors,
    outcomes: Outcomes,
    latency: Histogram<u64>,
}

impl<'a> Walker<'a> {
    fn new(plan: &'a BotPlan, seed: u64, live: &'a Live) -> Self {
        Self {
            plan,
            live,
            rng: Rng::new(seed + 11),
            transport: if plan.udp {
                Transport::Udp(None)
            } else {
                Transport::Tcp(None)
            },
            conversations: 0,
            failed: 0,
            turns: 0,
            errors: ConversationErrors::default(),
            outcomes: Outcomes::default(),
            latency: latency::histogram(),
        }
    }

    /// One whole conversation; counts it, or the error that ended it.
    fn converse(&mut self) {
        match self.walk() {
            Ok(()) => {
                self.conversations += 1;
                self.live.done.fetch_add(1, Relaxed);
            }
            Err(kind) => {
                self.failed += 1;
                match kind {
                    Failure::Refused => self.errors.refused += 1,
                    Failure::Reset => self.errors.reset += 1,
                    Failure::Closed => self.errors.closed += 1,
                    Failure::Timeout => self.errors.timeout += 1,
                    Failure::Mismatch => self.errors.mismatch += 1,
                }
                self.live.errors.fetch_add(1, Relaxed);
                match &mut self.transport {
                    Transport::Tcp(stream) => *stream = None,
                    Transport::Udp(socket) => *socket = None,
                }
            }
        }
    }

    fn walk(&mut self) -> Result<(), Failure> {
        let mut model = Conversation::new(self.plan.script.clone(), 0);
        let mut expected = String::new();
        model.open(&mut expected);
        match &mut self.transport {
            Transport::Tcp(stream) => {
                let s = TcpStream::connect_timeout(&self.plan.addr, self.plan.timeout)
                    .map_err(|e| Failure::from_io(&e))?;
                let _ = s.set_nodelay(true);
                s.set_read_timeout(Some(self.plan.timeout))
                    .map_err(|e| Failure::from_io(&e))?;
                *stream = Some(s);
            }
            Transport::Udp(socket) => {
                let s = udp_socket(self.plan.addr, self.plan.timeout)
                    .map_err(|e| Failure::from_io(&e))?;
                // The bot says more than three times what it got only to an
                // address that proved it receives.
                prove_udp(&s, self.plan.addr).map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => Failure::Mismatch,
                    _ => Failure::from_io(&e),
                })?;
                *socket = Some(s);
            }
        }
        self.expect(expected.as_bytes())?;
        let mut turns = 0;
        loop {
            let answer = if turns >= MAX_TURNS {
                "quit".to_string()
            } else {
                self.choose(&model)
            };
            expected.clear();
            let next = model.answer(&answer, &mut expected);
            let sent = Instant::now();
            self.send(&answer)?;
            self.expect(expected.as_bytes())?;
            self.latency
                .saturating_record(sent.elapsed().as_nanos() as u64);
            self.turns += 1;
            turns += 1;
            if next == Next::Close {
                break;
            }
        }
        let Some(node) = self.plan.script.node(model.node()) else {
            return Err(Failure::Mismatch);
        };
        match node.kind() {
            Kind::End(Outcome::Resolved) => self.outcomes.resolved += 1,
            Kind::End(Outcome::Ticket) => self.outcomes.ticket += 1,
            _ => self.outcomes.quit += 1,
        }
        match &mut self.transport {
            Transport::Tcp(stream) => {
                // The bot closes after its goodbye: read to the end.
                let mut rest = Vec::new();
                let s = stream.as_mut().ok_or(Failure::Closed)?;
                s.read_to_end(&mut rest).map_err(|e| Failure::from_io(&e))?;
                if !rest.is_empty() {
                    return Err(Failure::Mismatch);
                }
                *stream = None;
            }
            Transport::Udp(socket) => *socket = None,
        }
        Ok(())
    }

    /// A random valid answer at the model's current node.
    fn choose(&mut self, model: &Conversation) -> String {
        let Some(node) = self.plan.script.node(model.node()) else {
            return "quit".to_string(); // a checked script has every node
        };
        match node.kind() {
            Kind::YesNo => if self.rng.range(0, 1) == 0 {
                "yes"
            } else {
                "no"
            }
            .to_string(),
            Kind::Choice => self.rng.range(1, node.choices.len()).to_string(),
            Kind::End(_) => "quit".to_string(),
        }
    }

    fn send(&mut self, message: &str) -> Result<(), Failure> {
        match &mut self.transport {
            Transport::Tcp(stream) => {
                let s = stream.as_mut().ok_or(Failure::Closed)?;
                s.write_all(format!("{message}\n").as_bytes())
                    .map_err(|e| Failure::from_io(&e))
            }
            Transport::Udp(socket) => socket
                .as_ref()
                .ok_or(Failure::Closed)?
                .send(message.as_bytes())
                .map(drop)
                .map_err(|e| Failure::from_io(&e)),
        }
    }

    /// Reads a reply of exactly `expected`'s length and compares it.
    fn expect(&mut self, expected: &[u8]) -> Result<(), Failure> {
        let mut got = vec![0u8; expected.len()];
        match &mut self.transport {
            Transport::Tcp(stream) => {
                let s = stream.as_mut().ok_or(Failure::Closed)?;
                s.read_exact(&mut got).map_err(|e| Failure::from_io(&e))?;
            }
            Transport::Udp(socket) => {
                let socket = socket.as_ref().ok_or(Failure::Closed)?;
                let mut filled = 0;
                let mut buf = [0u8; 2048];
                while filled < got.len() {
                    let n = socket.recv(&mut buf).map_err(|e| Failure::from_io(&e))?;
                    if filled + n > got.len() {
                        return Err(Failure::Mismatch);
                    }
                    got[filled..filled + n].copy_from_slice(&buf[..n]);
                    filled += n;
                }
            }
        }
        if mask(&got) == mask(expected) {
            Ok(())
        } else {
            Err(Failure::Mismatch)
        }
    }
}

/// A fresh UDP socket connected to the bot: a new source port.
fn udp_socket(addr: SocketAddr, timeout: Duration) -> std::io::Result<UdpSocket> {
    let bind = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(timeout))?;
    Ok(socket)
}

/// What a program sends the bot over UDP first: long enough (18 bytes)
/// that the prompt it gets back is the full one.
pub const UDP_OPENER: &[u8] = b"hello, I need help";

/// Proves to the bot at `to` that `socket` receives, as the bot asks of
/// every new address before it says more than three times what it got:
/// sends [`UDP_OPENER`], reads the prompt, and sends back its code. The
/// bot's next datagrams are the greeting. This costs one round trip before
/// the greeting, the least a proof of receipt can (as TCP's handshake).
pub fn prove_udp(socket: &UdpSocket, to: SocketAddr) -> std::io::Result<()> {
    socket.send_to(UDP_OPENER, to)?;
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf)?;
    let code = protocols::cookie::code_in_prompt(&buf[..n]).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "expected the bot's prompt with a code, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        )
    })?;
    socket.send_to(&code, to)?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    Refused,
    Reset,
    Closed,
    Timeout,
    Mismatch,
}

impl Failure {
    fn from_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Failure::Refused,
            WouldBlock | TimedOut => Failure::Timeout,
            UnexpectedEof => Failure::Closed,
            _ => Failure::Reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_masked_wherever_they_appear() {
        assert_eq!(
            mask(b"ticket RC-123456. and RC-654321"),
            b"ticket RC-######. and RC-######".to_vec()
        );
        assert_eq!(mask(b"no ticket"), b"no ticket".to_vec());
    }
}
