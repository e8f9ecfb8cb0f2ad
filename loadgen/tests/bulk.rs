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
    // The oracle is the discard server's own count. Once both connections
    // have closed, it has read everything loadgen wrote. That is at least
    // what was acknowledged, and at most that plus what each flow could
    // still hold unacknowledged when the run ended: its send buffer (the
    // kernel's tcp_wmem ceiling) and one write begun before the end.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.totals().connections_closed < 2 {
        assert!(
            Instant::now() < deadline,
            "the server still has {} connections open",
            server.totals().connections_open()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let received = server.totals().bytes_in as f64;
    let send_buffer_ceiling: f64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .expect("reading tcp_wmem")
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("tcp_wmem's third field");
    let one_write = 128.0 * 1024.0;
    let unacknowledged = 2.0 * (send_buffer_ceiling + one_write);
    assert!(
        received >= acked && received <= acked + unacknowledged,
        "the server received {received} bytes; loadgen reports {acked} acknowledged \
         (at most {unacknowledged} may have been in flight at the end)"
    );
    assert_eq!(server.totals().bytes_out, 0, "discard answers nothing");
}
