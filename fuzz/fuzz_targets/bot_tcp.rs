//! The support bot over TCP: any lines, cut anywhere, with any room, give
//! the same conversation as the whole input at once, and no one offer
//! writes more than one answer past its room.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use protocols::bot::{BotConfig, BotStream, Script};
use protocols::stream::drive_bounded;
use protocols::StreamSession;

mod split;

fn session() -> BotStream {
    // Parsed once: parsing the script each run would be most of the work.
    static CONFIG: OnceLock<Arc<BotConfig>> = OnceLock::new();
    let config =
        CONFIG.get_or_init(|| Arc::new(BotConfig::with_script(Arc::new(Script::default_script()))));
    BotStream::new(config.clone(), 7)
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = split::case(data) else {
        return;
    };
    let mut whole = Vec::new();
    let mut s = session();
    s.on_open(&mut whole);
    s.on_bytes(case.whole, &mut whole);
    let mut split = Vec::new();
    let mut s = session();
    s.on_open(&mut split);
    let (rest, worst) = drive_bounded(&mut s, &case.chunks, case.room);
    split.extend_from_slice(&rest);
    assert!(
        split == whole,
        "the conversation depends on how the input was cut"
    );
    assert!(
        worst <= 8 * 1024,
        "one offer wrote {worst} bytes past its room"
    );
});
