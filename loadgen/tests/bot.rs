//! `loadgen --bot` against the real engine's bot on loopback.

mod common;

use common::{loadgen, loadgen_json, num, TestServer};
use protocols::{Protocol, Transport};

#[test]
fn scripted_conversations_over_tcp_and_udp_are_all_verified() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::Bot),
        (Transport::Udp, Protocol::Bot),
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
    let server = TestServer::start(&[(Transport::Tcp, Protocol::Bot)]);
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
