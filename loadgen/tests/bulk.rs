//! `loadgen --tcp --bulk` against the engine's discard service: the goodput
//! it reports (bytes the peer acknowledged) is what the server counted.

mod common;

use std::time::{Duration, Instant};

use common::{loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

#[test]
fn bulk_goodput_is_what_the_discard_server_received() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::DISCARD)]);
    let r = loadgen_json(&[
        "--tcp",
        &server.addr(0).to_string(),
        "--bulk",
        "--connections",
        "2",
        "--duration",
        "1s",
        "--bulk-interval",
        "200ms",
    ]);
    assert_eq!(r["mode"], "tcp-bulk");
    let acked = num(&r, "bytes_acked");
    assert!(acked > 1e6, "{r}");
    let bins = r["bins_mbps"].as_array().unwrap();
    assert_eq!(bins.len(), 5, "{r}");
    let in_bins: f64 = bins
        .iter()
        .map(|b| b.as_f64().unwrap() * 0.2 * 1e6 / 8.0)
        .sum();
    assert!(
        (in_bins - acked).abs() < 1.0,
        "the intervals add up: {in_bins} vs {acked}"
    );
    let per_flow: f64 = r["per_flow_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .sum();
    assert_eq!(per_flow, acked);
    // Everything acknowledged reached the server (which may still be
    // reading what the kernel acknowledged for it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while (server.totals().bytes_in as f64) < acked {
        assert!(
            Instant::now() < deadline,
            "the server got {} of {acked}",
            server.totals().bytes_in
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.totals().bytes_out, 0, "discard answers nothing");
}
