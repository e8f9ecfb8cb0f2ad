//! Loss attribution against the kernel's own counters. Alone in its test
//! binary so that no other test's datagrams move the namespace-wide
//! RcvbufErrors counter while it runs.

mod common;

use std::net::UdpSocket;

use common::{loadgen_json, num};

#[test]
fn a_receiver_that_never_reads_loses_at_its_queue_and_loadgen_says_so() {
    // A socket with the smallest receive buffer, never read.
    let sink = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    sink.set_recv_buffer_size(1).unwrap();
    sink.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let sink: UdpSocket = sink.into();
    let addr = sink.local_addr().unwrap().to_string();
    let r = loadgen_json(&[
        "--udp",
        &addr,
        "--rate",
        "20k",
        "--duration",
        "0.5",
        "--size",
        "200",
        "--no-reply",
    ]);
    let at_queue = num(&r, "loss.at_target_queue");
    assert!(at_queue > 0.0, "the sink's queue overflowed: {r}");
    assert_eq!(
        at_queue,
        num(&r, "rcvbuf_errors_delta"),
        "attributed loss matches RcvbufErrors: {r}"
    );
    assert_eq!(num(&r, "lost"), at_queue, "{r}");
    assert_eq!(
        num(&r, "loss.not_sent") + num(&r, "loss.elsewhere"),
        0.0,
        "{r}"
    );
    drop(sink);
}
