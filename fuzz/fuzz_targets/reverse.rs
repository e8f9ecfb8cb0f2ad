//! Reverse by line: any input, cut anywhere, with any room, gives the same
//! reply as the whole input; reverse by chunk gives back as many bytes as
//! it got, and reversing valid text twice gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocols::reverse::{reverse_into, ReverseChunks, ReverseLines};
use protocols::stream::drive_bounded;
use protocols::StreamSession;

mod split;

fuzz_target!(|data: &[u8]| {
    let Some(case) = split::case(data) else {
        return;
    };
    let mut whole = Vec::new();
    let mut lines = ReverseLines::new(512);
    lines.on_bytes(case.whole, &mut whole);
    let (split, _) = drive_bounded(&mut ReverseLines::new(512), &case.chunks, case.room);
    assert!(
        split == whole,
        "reverse-lines depends on how the input was cut"
    );
    let (chunks, worst) = drive_bounded(&mut ReverseChunks, &case.chunks, case.room);
    assert_eq!(chunks.len(), case.whole.len());
    assert_eq!(worst, 0, "reverse never writes past its room");
    if std::str::from_utf8(case.whole).is_ok() {
        let mut once = Vec::new();
        reverse_into(case.whole, &mut once);
        let mut twice = Vec::new();
        reverse_into(&once, &mut twice);
        assert_eq!(twice, case.whole);
    }
});
