//! Proof that a UDP address receives, without keeping anything per address:
//! a cookie, as TCP SYN cookies, DNS cookies (RFC 7873) and QUIC's Retry
//! token do it.
//!
//! A UDP source address can be forged. A server that answers a forged
//! datagram with more bytes than it carried sends those bytes to a victim
//! who never asked: a reflection amplifier. So an address that has not
//! proved it receives gets only a short prompt, never more than
//! [`AMPLIFICATION_LIMIT`] times the bytes of the datagram it answers, and
//! that prompt carries a code: a MAC of the address under a secret of this
//! process. Sending the code back proves the sender reads what is sent to
//! that address; only then does it get more.
//!
//! The secret rotates every [`PERIOD`]: a code is accepted during the
//! period it was made in and the next, then never again. Nothing is stored
//! per address, so a flood of forged addresses costs no memory and can
//! evict nothing.
//!
//! The code is six characters a person can type (digits and lower-case
//! letters without `i`, `l`, `o`, `u`), and every prompt ends with it, so
//! a program finds it with [`code_in_prompt`].

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How much more than a datagram carried an unproved address may be sent
/// in answer to it (QUIC's anti-amplification limit, RFC 9000 section 8).
pub const AMPLIFICATION_LIMIT: usize = 3;

/// How often the secret rotates; a code lives one to two periods.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Characters in a code.
pub const CODE_LEN: usize = 6;

/// The characters codes are written in: 32 of them, 5 bits each, none that
/// a person confuses with another.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The longest prompt, for datagrams that allow it.
const GREETING: &str = "Hello! To start a chat, send: ";
/// A shorter one, that still says what to do.
const SHORT: &str = "send ";

/// A code that proves an address receives.
pub type Code = [u8; CODE_LEN];

/// Makes and checks codes; one per handler (per socket).
pub struct Cookies {
    /// The secrets of this period and the last.
    keys: [RandomState; 2],
    /// When period 0 began (the first datagram seen).
    epoch: Option<Instant>,
    /// The period `keys[0]` belongs to.
    period: u64,
    length: Duration,
}

impl Default for Cookies {
    fn default() -> Self {
        Self::with_period(PERIOD)
    }
}

impl Cookies {
    /// Codes whose secret rotates every `length` (tests shorten it).
    pub fn with_period(length: Duration) -> Self {
        Self {
            keys: [RandomState::new(), RandomState::new()],
            epoch: None,
            period: 0,
            length: length.max(Duration::from_millis(1)),
        }
    }

    /// Rotates the secrets up to the period `now` falls in.
    fn rotate(&mut self, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let period = (now.saturating_duration_since(epoch).as_nanos() / self.length.as_nanos())
            .try_into()
            .unwrap_or(u64::MAX);
        match period.saturating_sub(self.period) {
            0 => {}
            1 => {
                self.keys.swap(0, 1);
                self.keys[0] = RandomState::new();
            }
            _ => self.keys = [RandomState::new(), RandomState::new()],
        }
        self.period = self.period.max(period);
    }

    /// The code for `peer` under secret `key`.
    fn code_with(key: &RandomState, peer: SocketAddr) -> Code {
        // SipHash-1-3 under a random 128-bit key: a MAC of the address.
        let mac = key.hash_one((peer.ip(), peer.port()));
        std::array::from_fn(|i| ALPHABET[((mac >> (5 * i)) & 31) as usize])
    }

    /// The code `peer` must send back, as of `now`.
    pub fn issue(&mut self, now: Instant, peer: SocketAddr) -> Code {
        self.rotate(now);
        Self::code_with(&self.keys[0], peer)
    }

    /// True when `word` is a code this process gave `peer` during this
    /// period or the last (letters in either case).
    pub fn check(&mut self, now: Instant, peer: SocketAddr, word: &[u8]) -> bool {
        if word.len() != CODE_LEN {
            return false;
        }
        self.rotate(now);
        self.keys
            .iter()
            .any(|key| word.eq_ignore_ascii_case(&Self::code_with(key, peer)))
    }

    /// True when any whitespace-separated word of `message` is a valid code
    /// for `peer`: a person may type `send 3kf9xq` as the prompt shows it.
    /// The two codes `peer` may hold are made once, then compared with each
    /// word: a forged datagram full of six-letter words costs comparisons,
    /// not a MAC per word.
    pub fn proves(&mut self, now: Instant, peer: SocketAddr, message: &[u8]) -> bool {
        self.rotate(now);
        let codes = self.keys.each_ref().map(|key| Self::code_with(key, peer));
        message
            .split(|b| b.is_ascii_whitespace())
            .filter(|word| word.len() == CODE_LEN)
            .any(|word| codes.iter().any(|code| word.eq_ignore_ascii_case(code)))
    }

    /// Appends to `out` the longest prompt for `peer` that fits
    /// `allowance` bytes: `Hello! To start a chat, send: <code>\n`, or
    /// `send <code>\n`, or `<code>\n`, or the bare code; false (nothing
    /// written) when not even the code fits.
    pub fn prompt(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        allowance: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        let code = self.issue(now, peer);
        let tiers: [(&str, &str); 4] = [(GREETING, "\n"), (SHORT, "\n"), ("", "\n"), ("", "")];
        let Some((before, after)) = tiers
            .into_iter()
            .find(|(before, after)| before.len() + CODE_LEN + after.len() <= allowance)
        else {
            return false;
        };
        out.extend_from_slice(before.as_bytes());
        out.extend_from_slice(&code);
        out.extend_from_slice(after.as_bytes());
        true
    }
}

/// The bytes an unproved address may be sent in answer to a datagram of
/// `received` bytes.
pub fn allowance(received: usize) -> usize {
    received.saturating_mul(AMPLIFICATION_LIMIT)
}

/// The code in a prompt that says what to send (`... send: <code>` or
/// `send <code>`, one line), for a program that validates on its own.
/// A bare code is not recognised: from a server that echoes, it would be
/// the client's own words.
pub fn code_in_prompt(reply: &[u8]) -> Option<Code> {
    let line = reply.strip_suffix(b"\n").unwrap_or(reply);
    if line.contains(&b'\n') {
        return None;
    }
    let rest = line
        .strip_prefix(GREETING.as_bytes())
        .or_else(|| line.strip_prefix(SHORT.as_bytes()))?;
    let code: Code = rest.try_into().ok()?;
    code.iter().all(|c| ALPHABET.contains(c)).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_code_is_accepted_from_its_address_in_this_period_and_the_next_only() {
        let mut c = Cookies::with_period(Duration::from_secs(10));
        let t0 = Instant::now();
        let code = c.issue(t0, addr(1000));
        assert!(code.iter().all(|b| ALPHABET.contains(b)));
        assert!(c.check(t0, addr(1000), &code));
        assert!(c.check(t0, addr(1000), &code.to_ascii_uppercase()));
        assert!(!c.check(t0, addr(1001), &code), "another port");
        let other_ip = SocketAddr::from(([127, 0, 0, 2], 1000));
        assert!(!c.check(t0, other_ip, &code), "another address");
        assert!(!c.check(t0, addr(1000), &code[..5]), "too short");
        // The next period still takes it; the one after does not.
        assert!(c.check(t0 + Duration::from_secs(15), addr(1000), &code));
        assert!(!c.check(t0 + Duration::from_secs(21), addr(1000), &code));
    }

    #[test]
    fn a_long_silence_rotates_both_secrets() {
        let mut c = Cookies::with_period(Duration::from_secs(10));
        let t0 = Instant::now();
        let code = c.issue(t0, addr(7));
        assert!(!c.check(t0 + Duration::from_secs(3600), addr(7), &code));
    }

    #[test]
    fn codes_differ_between_processes_and_addresses() {
        let now = Instant::now();
        let (mut a, mut b) = (Cookies::default(), Cookies::default());
        let codes: std::collections::HashSet<Code> =
            (0..1000).map(|p| a.issue(now, addr(p))).collect();
        assert!(codes.len() > 990, "30 bits spread over addresses");
        assert_ne!(a.issue(now, addr(1)), b.issue(now, addr(1)), "per secret");
    }

    #[test]
    fn every_prompt_fits_its_allowance_and_the_longest_that_fits_is_chosen() {
        let mut c = Cookies::default();
        let now = Instant::now();
        let mut out = Vec::new();
        for received in 0..40 {
            out.clear();
            let wrote = c.prompt(now, addr(9), allowance(received), &mut out);
            assert!(out.len() <= allowance(received), "{received}: {out:?}");
            assert_eq!(wrote, received >= 2, "{received} bytes");
        }
        // Hand-written expectations for each tier.
        let code = c.issue(now, addr(9));
        let code = std::str::from_utf8(&code).unwrap();
        for (received, expected) in [
            (2, code.to_string()),
            (3, format!("{code}\n")),
            (4, format!("send {code}\n")),
            (12, format!("send {code}\n")),
            (13, format!("Hello! To start a chat, send: {code}\n")),
        ] {
            out.clear();
            c.prompt(now, addr(9), allowance(received), &mut out);
            assert_eq!(String::from_utf8_lossy(&out), expected, "{received} bytes");
        }
    }

    #[test]
    fn a_program_finds_the_code_in_the_prompts_that_say_what_to_send() {
        assert_eq!(
            code_in_prompt(b"Hello! To start a chat, send: 3kf9xq\n"),
            Some(*b"3kf9xq")
        );
        assert_eq!(code_in_prompt(b"send 3kf9xq\n"), Some(*b"3kf9xq"));
        assert_eq!(code_in_prompt(b"send 3kf9xq"), Some(*b"3kf9xq"));
        for not_a_prompt in [
            &b"3kf9xq\n"[..],
            b"send 3kf9x\n",
            b"send 3kf9xqq\n",
            b"send 3KF9XQ\n",
            b"send 3kf9iq\n",
            b"send 3kf9xq\nmore\n",
            b"",
        ] {
            assert_eq!(code_in_prompt(not_a_prompt), None, "{not_a_prompt:?}");
        }
    }

    #[test]
    fn a_proof_is_any_word_of_the_message() {
        let mut c = Cookies::default();
        let now = Instant::now();
        let code = c.issue(now, addr(5));
        let typed = [&b"send "[..], &code, b"\n"].concat();
        assert!(c.proves(now, addr(5), &typed));
        assert!(c.proves(now, addr(5), &code));
        assert!(!c.proves(now, addr(5), b"hello there"));
        assert!(!c.proves(now, addr(5), b""));
    }
}
