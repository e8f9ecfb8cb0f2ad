//! The HTTP service's request side: any bytes, cut anywhere, with any room,
//! give the same responses as the whole input at once (long bodies taken
//! from static memory, as a transport does, against copied), and no one offer
//! writes much past its room; and the --metrics endpoint's verdict on a
//! request head never changes as more of it arrives.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use protocols::http::metrics_endpoint::{metrics_request, MetricsRequest};
use protocols::http::{HttpConfig, HttpSession};
use protocols::stream::drive_bounded;
use protocols::StreamSession;

mod split;

fn session() -> HttpSession {
    HttpSession::new(Arc::new(HttpConfig {
        // Small bodies keep each run fast; framing is the same at any size.
        max_body: 200_000,
        ..HttpConfig::default()
    }))
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = split::case(data) else {
        return;
    };
    let mut whole = Vec::new();
    session().on_bytes(case.whole, &mut whole);
    let (split, worst) = drive_bounded(&mut session(), &case.chunks, case.room);
    assert!(
        split == whole,
        "the responses depend on how the input was cut"
    );
    // One response past the room at most: a head, or an error page that
    // quotes at most a head's worth of the request.
    assert!(
        worst <= 16 * 1024,
        "one offer wrote {worst} bytes past its room"
    );
    // The --metrics endpoint answers at its first verdict on what it has
    // read: no later byte may change it.
    let verdict = metrics_request(case.whole);
    let mut read = 0;
    for chunk in &case.chunks {
        read += chunk.len();
        let early = metrics_request(&case.whole[..read]);
        assert!(
            early == MetricsRequest::Incomplete || early == verdict,
            "{early:?} after {read} bytes, {verdict:?} on the whole"
        );
    }
});
