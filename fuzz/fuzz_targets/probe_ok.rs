//! The loadgen probe header and the `ok` service: parsing any bytes never
//! panics, a parsed header writes back to the same bytes, and `ok` answers
//! every datagram with its prefix and the datagram.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use protocols::ok::{OkDatagram, OK_PREFIX};
use protocols::probe::{Probe, PROBE_LEN};
use protocols::{DatagramHandler, Replies};

fuzz_target!(|data: &[u8]| {
    if let Some(probe) = Probe::parse(data) {
        let mut back = [0u8; PROBE_LEN];
        assert!(probe.write(&mut back));
        assert_eq!(&back[..], &data[..PROBE_LEN]);
    }
    let _ = Probe::parse_reply(data);
    let mut replies = Replies::new();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut ok = OkDatagram::default();
    ok.on_datagram(Instant::now(), peer, data, &mut replies);
    let reply = replies.get(0).expect("a reply");
    assert_eq!(&reply[..OK_PREFIX.len()], OK_PREFIX);
    assert_eq!(&reply[OK_PREFIX.len()..], data);
});
