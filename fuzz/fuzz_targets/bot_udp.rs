//! The support bot over UDP: datagrams from several peers, in any order,
//! never panic, keep the session table within its bound, never answer
//! more than the datagram limit allows, and never send an address that has
//! not sent back its code more than three times what it sent.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use protocols::bot::{BotConfig, BotDatagram, Script};
use protocols::cookie::{code_in_prompt, Code};
use protocols::{DatagramHandler, Replies};

fuzz_target!(|data: &[u8]| {
    // Parsed once: parsing the script each run would be most of the work.
    static SCRIPT: OnceLock<Arc<Script>> = OnceLock::new();
    let script = SCRIPT.get_or_init(|| Arc::new(Script::default_script()));
    let config = BotConfig {
        max_sessions: 4,
        idle: Duration::from_secs(30),
        ..BotConfig::with_script(script.clone())
    };
    let mut bot = BotDatagram::new(Arc::new(config));
    let start = Instant::now();
    let mut replies = Replies::new();
    // Per peer: the last code it was given, and whether it ever sent one
    // back (until then, the three-times bound holds).
    let mut codes: [Option<Code>; 8] = [None; 8];
    let mut proved = [false; 8];
    // Each datagram: [peer (low 3 bits) and a clock step (high 5 bits)],
    // [length], then that many bytes; a length of 255 sends back the
    // peer's last code instead (a client proving it receives), and the
    // clock steps cover the secret's rotation.
    let mut rest = data;
    let mut now = start;
    while let [head, len, tail @ ..] = rest {
        let p = usize::from(head & 7);
        let peer = SocketAddr::from(([127, 0, 0, 1], 1000 + p as u16));
        now += Duration::from_secs(u64::from(head >> 3) * 4);
        let sent_back: Code;
        let datagram: &[u8] = if *len == 255 {
            rest = tail;
            match codes[p] {
                Some(code) => {
                    proved[p] = true;
                    sent_back = code;
                    &sent_back
                }
                None => b"",
            }
        } else {
            let n = usize::from(*len).min(tail.len());
            let (datagram, after) = tail.split_at(n);
            rest = after;
            datagram
        };
        replies.clear();
        bot.on_datagram(now, peer, datagram, &mut replies);
        assert!(
            bot.sessions().open <= 4,
            "the session table passed its bound"
        );
        let mut total = 0;
        for reply in replies.iter() {
            assert!(reply.len() <= 65_507, "a reply no datagram can carry");
            total += reply.len();
            if let Some(code) = code_in_prompt(reply) {
                codes[p] = Some(code);
            }
        }
        if !proved[p] {
            assert!(
                total <= 3 * datagram.len(),
                "{total} bytes to an unproved address for {}",
                datagram.len()
            );
        }
    }
});
