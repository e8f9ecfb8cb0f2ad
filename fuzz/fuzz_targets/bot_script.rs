//! Bot scripts: any TOML either loads as a valid script or is refused, and
//! a conversation on a valid one never panics and keeps its memory bounded,
//! whatever the answers (a looping script included).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use protocols::bot::{Conversation, Script};
use protocols::Next;

fuzz_target!(|data: &[u8]| {
    // The script, then answers after a NUL, one per line.
    let (script, answers) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(script) else {
        return;
    };
    // Only a checked script can be had: parse validates.
    let Ok(script) = Script::parse(text) else {
        return;
    };
    let mut conversation = Conversation::new(Arc::new(script), 1);
    let mut out = String::new();
    conversation.open(&mut out);
    for answer in String::from_utf8_lossy(answers).lines().take(1000) {
        out.clear();
        if conversation.answer(answer, &mut out) == Next::Close {
            break;
        }
        assert!(
            conversation.remembered() <= 256 + 64,
            "the path's memory grew"
        );
    }
});
