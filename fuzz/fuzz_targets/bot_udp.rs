//! The support bot over UDP: datagrams from several peers, in any order,
//! never panic, keep the session table within its bound, and never answer
//! more than the datagram limit allows.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use protocols::bot::{BotConfig, BotDatagram, Script};
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
    // Each datagram: [peer (low 3 bits) and a clock step (high 5 bits)],
    // [length], then that many bytes.
    let mut rest = data;
    let mut now = start;
    while let [head, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, after) = tail.split_at(n);
        rest = after;
        let peer = SocketAddr::from(([127, 0, 0, 1], 1000 + u16::from(head & 7)));
        now += Duration::from_secs(u64::from(head >> 3));
        replies.clear();
        bot.on_datagram(now, peer, datagram, &mut replies);
        assert!(
            bot.sessions().open <= 4,
            "the session table passed its bound"
        );
        for reply in replies.iter() {
            assert!(reply.len() <= 65_507, "a reply no datagram can carry");
        }
    }
});
