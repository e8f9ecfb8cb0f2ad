//! `loadgen --bot` against the real engine's bot on loopback.

mod common;

use common::{loadgen, loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

#[test]
fn scripted_conversations_over_tcp_and_udp_are_all_verified() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::BOT),
        (Transport::Udp, Protocol::BOT),
    ]);
    for (flag, addr) in [("--tcp", server.addr(0)), ("--udp", server.addr(1))] {
        let r = loadgen_json(&[
            "--bot",
            flag,
            &addr.to_string(),
            "--requests",
            "200",
            "--connections",
            "20",
        ]);
        assert_eq!(num(&r, "conversations"), 200.0, "{r}");
        assert_eq!(
            num(&r, "outcomes.resolved") + num(&r, "outcomes.ticket") + num(&r, "outcomes.quit"),
            200.0
        );
        assert!(
            num(&r, "outcomes.resolved") > 0.0 && num(&r, "outcomes.ticket") > 0.0,
            "random walks reach both endings: {r}"
        );
        assert_eq!(
            num(&r, "errors.mismatch") + num(&r, "errors.timeout"),
            0.0,
            "{r}"
        );
        assert_eq!(num(&r, "turn_latency_us.count"), num(&r, "turns"));
    }
    // 200 conversations, plus the connection that first checked the bot is there.
    assert_eq!(server.totals().connections_accepted, 201);
}

#[test]
fn a_bot_that_says_something_else_is_a_mismatch() {
    let server = TestServer::start(&[(Transport::Tcp, Protocol::BOT)]);
    let path =
        std::env::temp_dir().join(format!("ringcore-other-script-{}.toml", std::process::id()));
    std::fs::write(&path, "name = \"x\"\ngreeting = \"Howdy!\"\nstart = \"a\"\n[nodes.a]\nsay = \"ok\"\nend = \"resolved\"\n").unwrap();
    let out = loadgen(&[
        "--bot",
        "--tcp",
        &server.addr(0).to_string(),
        "--bot-script",
        &path.to_string_lossy(),
        "--requests",
        "5",
        "--connections",
        "1",
        "--json",
    ]);
    let _ = std::fs::remove_file(&path);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(num(&r, "errors.mismatch"), 5.0, "{r}");
    assert!(!out.status.success());
}

/// A UDP relay in front of the bot that drops the `drop_nth` reply: each
/// client address gets its own upstream socket, so the bot sees the
/// clients' addresses as distinct peers, as it would without the relay.
fn lossy_relay(bot: std::net::SocketAddr, drop_nth: u64) -> std::net::SocketAddr {
    use std::collections::HashMap;
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let addr = front.local_addr().unwrap();
    let replies = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        let mut upstream: HashMap<std::net::SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, client)) = front.recv_from(&mut buf) {
            let up = upstream.entry(client).or_insert_with(|| {
                let up = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                up.connect(bot).unwrap();
                let (up2, front, replies) = (up.clone(), front.clone(), replies.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while let Ok(n) = up2.recv(&mut buf) {
                        if replies.fetch_add(1, Relaxed) + 1 != drop_nth {
                            let _ = front.send_to(&buf[..n], client);
                        }
                    }
                });
                up
            });
            let _ = up.send(&buf[..n]);
        }
    });
    addr
}

/// Over UDP each conversation has its own socket (a fresh source port), so
/// a lost reply fails that conversation alone; and `--requests` runs
/// exactly that many conversations, whatever `--connections` divides.
#[test]
fn a_lost_datagram_fails_one_conversation_only() {
    let server = TestServer::start(&[(Transport::Udp, Protocol::BOT)]);
    let relay = lossy_relay(server.addr(0), 30);
    let out = loadgen(&[
        "--bot",
        "--udp",
        &relay.to_string(),
        "--requests",
        "41",
        "--connections",
        "3",
        "--timeout",
        "300ms",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(num(&r, "errors.timeout"), 1.0, "{r}");
    assert_eq!(num(&r, "errors.mismatch"), 0.0, "{r}");
    assert_eq!(num(&r, "conversations"), 40.0, "{r}");
}
