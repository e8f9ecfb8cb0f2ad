//! The ISP customer-support bot of the chapter's exercises: it introduces
//! itself, asks questions that lead to a diagnosis, and ends with a summary
//! (and a ticket number when it cannot solve the problem).
//!
//! - [`Conversation`] is the dialogue itself, text in and text out, driven by
//!   a [`Script`].
//! - [`BotStream`] serves it over TCP: one conversation per connection, one
//!   line per message.
//! - [`BotDatagram`] serves it over UDP: one datagram per message, one
//!   conversation per peer, in a bounded table.

pub mod script;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use script::{Kind, Outcome, Script, ScriptError};

use crate::cookie::Cookies;
use crate::datagram::SessionStats;
use crate::{DatagramHandler, Fed, Next, Replies, StreamSession};

/// Settings shared by every bot session of a service.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// The dialogue.
    pub script: Arc<Script>,
    /// A conversation silent this long ends (TCP: closed with a goodbye;
    /// UDP: the peer's next message starts a fresh one).
    pub idle: Duration,
    /// Longest message accepted, in bytes.
    pub max_line: usize,
    /// Most UDP conversations kept at once; the least recently used goes first.
    pub max_sessions: usize,
    /// How often the secret behind the UDP codes rotates: a code an
    /// address is given is good for one to two of these.
    pub cookie_period: Duration,
}

impl BotConfig {
    /// The built-in script with the default limits: 5 minutes, 4 KiB, 10,000 sessions.
    pub fn with_script(script: Arc<Script>) -> Self {
        Self {
            script,
            idle: Duration::from_secs(300),
            max_line: 4096,
            max_sessions: 10_000,
            cookie_period: crate::cookie::PERIOD,
        }
    }
}

/// How many steps `back` can undo: a looping script cannot grow a
/// conversation's memory past this.
pub const MAX_HISTORY: usize = 256;
/// How many checked answers the summary records, at most.
pub const MAX_CHECKS: usize = 64;

const HELP: &str = "You can answer the question, or type: back (the previous question), restart (start over), quit (end the chat).";

/// One conversation with one user.
#[derive(Debug, Clone)]
pub struct Conversation {
    script: Arc<Script>,
    node: String,
    /// Earlier nodes (the last [`MAX_HISTORY`]), and how many checks were
    /// recorded when we left each.
    history: VecDeque<(String, usize)>,
    /// (what was checked, the user's answer), in order.
    checks: Vec<(String, String)>,
    ticket_seed: u64,
    finished: bool,
}

impl Conversation {
    /// A conversation at the script's start; `ticket_seed` makes its ticket
    /// number differ from other conversations'.
    pub fn new(script: Arc<Script>, ticket_seed: u64) -> Self {
        let node = script.start().to_string();
        Self {
            script,
            node,
            history: VecDeque::new(),
            checks: Vec::new(),
            ticket_seed,
            finished: false,
        }
    }

    /// The bot's opening: its greeting and first question.
    pub fn open(&mut self, out: &mut String) {
        line(out, self.script.greeting());
        self.ask(out);
    }

    /// True once the conversation has ended.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The node the conversation is at.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Handles one message from the user; `Close` once the conversation ended.
    pub fn answer(&mut self, message: &str, out: &mut String) -> Next {
        if self.finished {
            return Next::Close;
        }
        let text = normalize(message);
        match text.as_str() {
            "help" | "?" => {
                line(out, HELP);
                self.ask(out);
                return Next::Continue;
            }
            "back" => {
                match self.history.pop_back() {
                    Some((node, checks)) => {
                        self.node = node;
                        self.checks.truncate(checks);
                    }
                    None => line(out, "We are at the first question already."),
                }
                self.ask(out);
                return Next::Continue;
            }
            "restart" => {
                self.history.clear();
                self.checks.clear();
                self.node = self.script.start().to_string();
                line(out, "Let's start over.");
                self.ask(out);
                return Next::Continue;
            }
            "quit" | "exit" | "bye" => {
                line(out, "Goodbye! Thanks for contacting us.");
                self.finished = true;
                return Next::Close;
            }
            _ => {}
        }
        let Some(node) = self.script.node(&self.node) else {
            return self.lost(out);
        };
        let chosen = match node.kind() {
            Kind::YesNo => yes_no(&text).map(|yes| {
                let (target, said) = if yes {
                    (&node.yes, "yes")
                } else {
                    (&node.no, "no")
                };
                (target.clone().unwrap_or_default(), said.to_string())
            }),
            Kind::Choice => choice(&text, node.choices.len(), |i| {
                normalize(&node.choices[i].label)
            })
            .map(|i| (node.choices[i].next.clone(), node.choices[i].label.clone())),
            Kind::End(_) => None,
        };
        let Some((target, said)) = chosen else {
            let shown: String = message.trim().chars().take(40).collect();
            match node.kind() {
                Kind::YesNo => line(out, &format!("Sorry, I did not understand \"{shown}\". Please answer yes or no (or type help).")),
                _ => line(out, &format!("Sorry, I did not understand \"{shown}\". Please answer with a number from 1 to {} (or type help).", node.choices.len())),
            }
            self.ask(out);
            return Next::Continue;
        };
        // A script may loop: keep the memory of the path bounded.
        if self.history.len() == MAX_HISTORY {
            self.history.pop_front();
        }
        self.history
            .push_back((self.node.clone(), self.checks.len()));
        if let Some(check) = &node.check {
            if self.checks.len() < MAX_CHECKS {
                self.checks.push((check.clone(), said));
            }
        }
        self.node = target;
        self.ask(out);
        if self.finished {
            Next::Close
        } else {
            Next::Continue
        }
    }

    /// How many steps and checks the conversation holds (bounded by
    /// [`MAX_HISTORY`] and [`MAX_CHECKS`] whatever the script).
    pub fn remembered(&self) -> usize {
        self.history.len() + self.checks.len()
    }

    /// Says the current node: a question with its answers, or an ending with
    /// the summary.
    fn ask(&mut self, out: &mut String) {
        let Some(node) = self.script.node(&self.node) else {
            self.lost(out);
            return;
        };
        match node.kind() {
            Kind::YesNo => line(out, &format!("{} (yes/no)", node.say)),
            Kind::Choice => {
                line(out, &node.say);
                for (i, c) in node.choices.iter().enumerate() {
                    line(out, &format!("  {}) {}", i + 1, c.label));
                }
            }
            Kind::End(outcome) => {
                line(out, &node.say);
                if !self.checks.is_empty() {
                    line(out, "Summary of what we checked:");
                    for (check, said) in &self.checks {
                        line(out, &format!("  - {check}: {said}"));
                    }
                }
                if outcome == Outcome::Ticket {
                    line(out, &format!("Your ticket number is {}.", self.ticket()));
                }
                line(out, "Goodbye! Thanks for contacting us.");
                self.finished = true;
            }
        }
    }

    /// Where a script could lead to a missing node. A checked [`Script`]
    /// cannot (every target exists), so this is never reached; it ends the
    /// conversation politely rather than panic.
    fn lost(&mut self, out: &mut String) -> Next {
        line(out, "Sorry, something went wrong on my side. Goodbye!");
        self.finished = true;
        Next::Close
    }

    /// RC- and six digits, from the seed and the path taken.
    fn ticket(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.ticket_seed;
        for (check, said) in &self.checks {
            for b in check.bytes().chain(said.bytes()) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("RC-{:06}", h % 1_000_000)
    }
}

fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

/// Lower case, trimmed, without trailing punctuation.
fn normalize(text: &str) -> String {
    text.trim()
        .trim_end_matches(['.', '!', ')'])
        .trim()
        .to_lowercase()
}

/// Reads a yes or a no in their usual forms.
pub fn yes_no(text: &str) -> Option<bool> {
    match text {
        "y" | "yes" | "yeah" | "yep" | "yup" | "sure" | "ok" | "okay" | "correct" | "it is"
        | "they are" => Some(true),
        "n" | "no" | "nope" | "nah" | "not really" | "no it isn't" | "it isn't" | "they aren't" => {
            Some(false)
        }
        _ => None,
    }
}

/// Reads a choice by number (1-based) or by its label.
fn choice(text: &str, count: usize, label: impl Fn(usize) -> String) -> Option<usize> {
    if let Ok(n) = text.parse::<usize>() {
        return (1..=count).contains(&n).then(|| n - 1);
    }
    (0..count).find(|&i| label(i) == text)
}

/// Checks one message's text: UTF-8, no control characters.
fn message_text(bytes: &[u8]) -> Result<&str, &'static str> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| "error: please send text encoded as UTF-8")?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err("error: control characters are not allowed");
    }
    Ok(text)
}

/// The bot over TCP: one conversation per connection, lines ending in LF or
/// CRLF. A partial line waits for its end, held by the transport ("need
/// more input"); one longer than the bound gets an error and the close.
#[derive(Debug)]
pub struct BotStream {
    config: Arc<BotConfig>,
    conversation: Conversation,
    /// How many bytes at the front of the next offered input are known to
    /// hold no newline (see [`crate::reverse::ReverseLines`]).
    searched: usize,
    text: String,
}

impl BotStream {
    /// A connection's session; `ticket_seed` individualises its ticket numbers.
    pub fn new(config: Arc<BotConfig>, ticket_seed: u64) -> Self {
        let conversation = Conversation::new(config.script.clone(), ticket_seed);
        Self {
            config,
            conversation,
            searched: 0,
            text: String::new(),
        }
    }

    fn flush_text(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.text.as_bytes());
        self.text.clear();
    }

    /// Answers a line over the bound and closes; the whole input is taken.
    fn too_long(&self, consumed: usize, out: &mut Vec<u8>) -> Fed {
        self.write_too_long(out);
        Fed {
            consumed,
            next: Next::Close,
        }
    }

    fn write_too_long(&self, out: &mut Vec<u8>) {
        let max = self.config.max_line;
        out.extend_from_slice(format!("error: line longer than {max} bytes; goodbye\n").as_bytes());
    }
}

impl StreamSession for BotStream {
    fn on_open(&mut self, out: &mut Vec<u8>) {
        self.conversation.open(&mut self.text);
        self.flush_text(out);
    }

    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, room: usize) -> Fed {
        let max = self.config.max_line;
        let start = out.len();
        let mut taken = 0;
        loop {
            if out.len() - start >= room {
                // Out of room: the next questions wait for the output to drain.
                return Fed::all(taken);
            }
            let rest = &input[taken..];
            let known = std::mem::take(&mut self.searched).min(rest.len());
            let Some(pos) = rest[known..].iter().position(|&b| b == b'\n') else {
                // One byte over: a last `\r` may be a CRLF's, which the
                // line's own length does not count (cut between `\r` and
                // `\n`, a line at the bound must pass as it does whole).
                if rest.len() > max + 1 {
                    return self.too_long(input.len(), out);
                }
                self.searched = rest.len();
                return Fed::all(taken);
            };
            let ended = &rest[..known + pos];
            taken += ended.len() + 1;
            let message = ended.strip_suffix(b"\r").unwrap_or(ended);
            if message.len() > max {
                return self.too_long(input.len(), out);
            }
            let next = match message_text(message) {
                Ok(text) => self.conversation.answer(text, &mut self.text),
                Err(problem) => {
                    line(&mut self.text, problem);
                    Next::Continue
                }
            };
            self.flush_text(out);
            if next == Next::Close {
                return Fed {
                    consumed: input.len(),
                    next: Next::Close,
                };
            }
        }
    }

    fn max_frame(&self) -> usize {
        // The session's own bound closes first; this only backs it up.
        self.config.max_line.saturating_add(2)
    }

    fn on_frame_too_large(&mut self, out: &mut Vec<u8>) {
        self.write_too_long(out);
    }

    fn wants_ticks(&self) -> bool {
        true
    }

    fn on_tick(&mut self, _now: Instant, silent_for: Duration, out: &mut Vec<u8>) -> Next {
        if silent_for < self.config.idle {
            return Next::Continue;
        }
        let minutes = self.config.idle.as_secs_f64() / 60.0;
        out.extend_from_slice(
            format!("Closing this chat after {minutes:.1} minutes without a message. Goodbye!\n")
                .as_bytes(),
        );
        Next::Close
    }
}

/// Largest reply datagram; longer replies are split at line boundaries.
pub const MAX_REPLY_DATAGRAM: usize = 1200;

struct PeerSession {
    conversation: Conversation,
    last_seen: Instant,
    touch: u64,
}

pub use crate::cookie::AMPLIFICATION_LIMIT;

/// The bot over UDP: one datagram per message, one conversation per peer
/// address, at most `max_sessions` of them (least recently used evicted).
///
/// A conversation starts only once its address has proved it receives:
/// any datagram from an address without one is answered with a short
/// prompt carrying a code ([`crate::cookie`]), never more than
/// [`AMPLIFICATION_LIMIT`] times the bytes it carried, and nothing is kept
/// of it. A datagram that sends the code back starts the conversation (the
/// greeting and the first question). So a forged source address gets at
/// most three times what the forger sent, and a flood of them neither
/// grows memory nor evicts a conversation. A conversation silent past the
/// idle time is forgotten, and its address must prove itself again.
pub struct BotDatagram {
    config: Arc<BotConfig>,
    sessions: HashMap<SocketAddr, PeerSession>,
    cookies: Cookies,
    /// Datagrams from unproved addresses, answered with a prompt (or
    /// nothing, when not even the code fits three times their size).
    capped: u64,
    /// Peers in the order they were last seen; stale entries (an older
    /// touch than the session's) are skipped and dropped lazily.
    recency: VecDeque<(SocketAddr, u64)>,
    touches: u64,
    evicted: u64,
    expired: u64,
    text: String,
    prompt: Vec<u8>,
}

impl BotDatagram {
    /// A handler for one socket.
    pub fn new(config: Arc<BotConfig>) -> Self {
        let cookies = Cookies::with_period(config.cookie_period);
        Self::with_cookies(config, cookies)
    }

    /// A handler that makes its codes with `cookies` (tests shorten their
    /// period).
    pub fn with_cookies(config: Arc<BotConfig>, cookies: Cookies) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            cookies,
            capped: 0,
            recency: VecDeque::new(),
            touches: 0,
            evicted: 0,
            expired: 0,
            text: String::new(),
            prompt: Vec::new(),
        }
    }

    fn touch(&mut self, peer: SocketAddr, now: Instant) {
        self.touches += 1;
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.last_seen = now;
            s.touch = self.touches;
        }
        self.recency.push_back((peer, self.touches));
        if self.recency.len() > 4 * self.sessions.len().max(16) {
            let sessions = &self.sessions;
            self.recency
                .retain(|(p, t)| sessions.get(p).is_some_and(|s| s.touch == *t));
        }
    }

    /// Drops the least recently used sessions beyond the bound.
    fn enforce_bound(&mut self, now: Instant) {
        while self.sessions.len() > self.config.max_sessions {
            let Some((peer, touch)) = self.recency.pop_front() else {
                break;
            };
            if self.sessions.get(&peer).is_some_and(|s| s.touch == touch) {
                let session = self.sessions.remove(&peer);
                if session.is_some_and(|s| now.duration_since(s.last_seen) > self.config.idle) {
                    self.expired += 1;
                } else {
                    self.evicted += 1;
                }
            }
        }
    }

    /// A datagram of `input` from an address with no conversation: the
    /// conversation starts if it carries the address's code, otherwise the
    /// address gets a prompt within its allowance.
    fn unproved(&mut self, now: Instant, peer: SocketAddr, input: &[u8], replies: &mut Replies) {
        if !self.cookies.proves(now, peer, input) {
            self.capped += 1;
            self.prompt.clear();
            let allowance = crate::cookie::allowance(input.len());
            if self.cookies.prompt(now, peer, allowance, &mut self.prompt) {
                replies.push(&[&self.prompt]);
            }
            return;
        }
        let mut conversation = Conversation::new(
            self.config.script.clone(),
            self.touches ^ u64::from(peer.port()),
        );
        conversation.open(&mut self.text);
        self.sessions.insert(
            peer,
            PeerSession {
                conversation,
                last_seen: now,
                touch: 0,
            },
        );
        self.touch(peer, now);
        self.enforce_bound(now);
        self.reply(replies);
    }

    fn reply(&mut self, replies: &mut Replies) {
        let mut datagram = String::new();
        for l in self.text.split_inclusive('\n') {
            if !datagram.is_empty() && datagram.len() + l.len() > MAX_REPLY_DATAGRAM {
                replies.push(&[datagram.as_bytes()]);
                datagram.clear();
            }
            // A single line longer than a datagram is cut at char boundaries.
            let mut rest = l;
            while rest.len() > MAX_REPLY_DATAGRAM {
                let mut cut = MAX_REPLY_DATAGRAM;
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                replies.push(&[&rest.as_bytes()[..cut]]);
                rest = &rest[cut..];
            }
            datagram.push_str(rest);
        }
        if !datagram.is_empty() {
            replies.push(&[datagram.as_bytes()]);
        }
        self.text.clear();
    }
}

impl DatagramHandler for BotDatagram {
    fn on_datagram(&mut self, now: Instant, peer: SocketAddr, input: &[u8], replies: &mut Replies) {
        let idle = self.config.idle;
        let Some(session) = self.sessions.get_mut(&peer) else {
            return self.unproved(now, peer, input, replies);
        };
        if now.duration_since(session.last_seen) > idle {
            // Silent too long: forgotten, and to be proved again.
            self.sessions.remove(&peer);
            self.expired += 1;
            return self.unproved(now, peer, input, replies);
        }
        let mut message = input.strip_suffix(b"\n").unwrap_or(input);
        message = message.strip_suffix(b"\r").unwrap_or(message);
        if message.len() > self.config.max_line {
            line(
                &mut self.text,
                &format!("error: message longer than {} bytes", self.config.max_line),
            );
        } else {
            match message_text(message) {
                Ok(text) => {
                    if session.conversation.answer(text, &mut self.text) == Next::Close {
                        self.sessions.remove(&peer);
                    }
                }
                Err(problem) => line(&mut self.text, problem),
            }
        }
        self.touch(peer, now);
        self.reply(replies);
    }

    fn sessions(&self) -> SessionStats {
        SessionStats {
            open: self.sessions.len() as u64,
            evicted: self.evicted,
            expired: self.expired,
            capped: self.capped,
        }
    }
}

#[cfg(test)]
mod tests;
