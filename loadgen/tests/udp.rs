//! loadgen's UDP mode against the real engine and small test reflectors on loopback.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_fails_with, loadgen, loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

#[test]
fn a_moderate_paced_run_accounts_for_every_datagram() {
    let server = TestServer::start(&[
        (Transport::Udp, Protocol::ECHO),
        (Transport::Udp, Protocol::OK),
    ]);
    for i in 0..2 {
        let addr = server.addr(i).to_string();
        let before = server.totals();
        let r = loadgen_json(&[
            "--udp",
            &addr,
            "--rate",
            "20k",
            "--duration",
            "1",
            "--size",
            "64",
        ]);
        let (sent, received, lost) = (num(&r, "sent"), num(&r, "received"), num(&r, "lost"));
        let after = server.totals();
        // loadgen's counts against the server's own.
        assert_eq!(
            (after.datagrams_in - before.datagrams_in) as f64,
            sent,
            "the server got every datagram loadgen says it sent: {r}"
        );
        assert_eq!(
            (after.datagrams_out - before.datagrams_out) as f64,
            received,
            "loadgen saw every reply the server sent: {r}"
        );
        assert_eq!(lost, 0.0, "no loss on loopback at 20k/s: {r}");
        let achieved = num(&r, "achieved_pps");
        assert!(
            (18_000.0..=22_000.0).contains(&achieved),
            "asked 20000/s, got {achieved}"
        );
        assert_eq!(num(&r, "duplicated") + num(&r, "reordered"), 0.0);
        assert!(num(&r, "rtt_us.count") == received);
        assert!(num(&r, "largest_burst") >= 1.0);
    }
    assert_eq!(server.totals().datagrams_in, server.totals().datagrams_out);
}

#[test]
fn reordered_and_duplicated_replies_are_counted_as_such() {
    // A reflector that answers each pair of datagrams in swapped order, and
    // sends every fifth pair's later datagram twice.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    // An unpaired last datagram goes back after 10 ms of quiet; loadgen
    // waits 2 s for it (`--drain`), 200 times that. (With both at 50 ms,
    // the reply could come just after loadgen stopped listening, and count
    // as lost: a flake under load.)
    socket
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let (swaps, dups, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let reflector = {
        let (swaps, dups, stop) = (swaps.clone(), dups.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held: Option<(Vec<u8>, std::net::SocketAddr)> = None;
            let mut buf = [0u8; 2048];
            let mut pairs = 0u64;
            while !stop.load(Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, peer)) => match held.take() {
                        None => held = Some((buf[..n].to_vec(), peer)),
                        Some((earlier, earlier_peer)) => {
                            socket.send_to(&buf[..n], peer).unwrap();
                            pairs += 1;
                            if pairs.is_multiple_of(5) {
                                socket.send_to(&buf[..n], peer).unwrap();
                                dups.fetch_add(1, Relaxed);
                            }
                            socket.send_to(&earlier, earlier_peer).unwrap();
                            swaps.fetch_add(1, Relaxed);
                        }
                    },
                    Err(_) => {
                        if let Some((earlier, peer)) = held.take() {
                            socket.send_to(&earlier, peer).unwrap(); // a last, unpaired one
                        }
                    }
                }
            }
        })
    };
    let r = loadgen_json(&[
        "--udp",
        &addr,
        "--rate",
        "5k",
        "--duration",
        "0.4",
        "--size",
        "32",
        "--drain",
        "2s",
    ]);
    stop.store(true, Relaxed);
    reflector.join().unwrap();
    assert_eq!(num(&r, "lost"), 0.0, "{r}");
    assert_eq!(num(&r, "reordered"), swaps.load(Relaxed) as f64, "{r}");
    assert_eq!(num(&r, "duplicated"), dups.load(Relaxed) as f64, "{r}");
    assert!(swaps.load(Relaxed) > 500 && dups.load(Relaxed) > 100);
}

/// A port nobody listens on: every datagram offered is lost and each is
/// attributed exactly once (refused on send after an ICMP error, or counted
/// by the kernel as reaching no listener), and the error names the cause.
#[test]
fn a_closed_port_loses_everything_and_says_where() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = loadgen(&[
        "--udp",
        &format!("127.0.0.1:{port}"),
        "--rate",
        "1k",
        "--duration",
        "0.3",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("nothing listens on UDP") && stderr.contains("ICMP port unreachable"),
        "{stderr}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the report comes first");
    let offered = num(&r, "sent") + num(&r, "loss.not_sent") + num(&r, "loss.refused");
    assert!(offered >= 250.0, "{r}");
    assert_eq!(num(&r, "received"), 0.0);
    assert_eq!(num(&r, "lost"), offered, "each datagram lost once: {r}");
    assert_eq!(num(&r, "loss_pct"), 100.0, "{r}");
    assert_eq!(
        num(&r, "loss.no_listener") + num(&r, "loss.refused") + num(&r, "loss.not_sent"),
        offered,
        "every datagram attributed: {r}"
    );
    assert_eq!(num(&r, "loss.elsewhere"), 0.0, "{r}");
    assert!(
        num(&r, "icmp_errors") >= 1.0,
        "the error queue was read: {r}"
    );
    assert!(num(&r, "icmp_errors") <= num(&r, "sent"), "{r}");
}

#[test]
fn bad_udp_input_gets_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--udp", "--size", "8"], "smaller than the 24-byte header"),
        (&["--udp", "--size", "16..64"], "one size"),
        (&["--udp", "--rate=-5"], "not a rate"),
        (&["--udp", "--duration", "0"], "above zero"),
    ];
    for (args, expected) in cases {
        assert_fails_with(args, expected);
    }
}

#[test]
fn a_sweep_prints_one_step_per_rate_and_draws_the_curve() {
    let server = TestServer::start(&[(Transport::Udp, Protocol::ECHO)]);
    let addr = server.addr(0).to_string();
    let plot = std::env::temp_dir().join(format!("ringcore-sweep-{}.svg", std::process::id()));
    let plot_arg = plot.to_string_lossy().into_owned();
    let r = loadgen_json(&[
        "--udp",
        &addr,
        "--sweep",
        "5k..15k:3",
        "--duration",
        "0.3",
        "--plot",
        &plot_arg,
    ]);
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    for (step, rate) in steps.iter().zip([5e3, 10e3, 15e3]) {
        assert_eq!(num(step, "requested_pps"), rate);
        assert_eq!(num(step, "lost"), 0.0, "{step}");
        assert_eq!(num(step, "received"), num(step, "sent"));
    }
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    let _ = std::fs::remove_file(&plot);
    assert!(
        svg.starts_with("<svg") && svg.contains("delivered") && svg.contains("loss"),
        "{}",
        &svg[..200.min(svg.len())]
    );
}
