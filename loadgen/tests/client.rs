//! `loadgen client`: transcripts against the real engine's services.

mod common;

use std::net::UdpSocket;
use std::process::Command;

use common::TestServer;
use protocols::{Protocol, Transport};

fn client(args: &[&str], script: &str) -> (bool, String, String) {
    let path = std::env::temp_dir().join(format!(
        "ringcore-client-{}-{}.txt",
        std::process::id(),
        args.join("-").replace([':', '.'], "_")
    ));
    std::fs::write(&path, script).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("client")
        .args(args)
        .args(["--script", &path.to_string_lossy(), "--reply-timeout", "3s"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn transcripts_over_tcp_and_udp() {
    let server = TestServer::start(&[
        (Transport::Tcp, Protocol::BOT),
        (Transport::Udp, Protocol::BOT),
        (Transport::Tcp, Protocol::REVERSE),
        (Transport::Udp, Protocol::OK),
    ]);
    let (ok, out, err) = client(&["tcp", &server.addr(0).to_string()], "1\nyes\nyes\nyes\n");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("Hello! I'm Rita"),
        "the greeting comes first: {out}"
    );
    let sent = out
        .find("> 1\n")
        .expect("the transcript shows what was sent");
    let asked = out
        .find("Are the lights on your router on? (yes/no)")
        .expect("the next question");
    assert!(sent < asked, "{out}");
    assert!(
        out.trim_end()
            .ends_with("Goodbye! Thanks for contacting us."),
        "{out}"
    );

    // Over UDP the bot asks a new address to prove it receives: `hello`
    // gets `send <code>`, which the client sends back on its own (and says
    // so on stderr); the greeting follows, then the conversation.
    let (ok, out, err) = client(&["udp", &server.addr(1).to_string()], "hello\n6\n1\nyes\n");
    assert!(ok, "{err}");
    let code = out
        .strip_prefix("> hello\nsend ")
        .and_then(|rest| rest.get(..6))
        .unwrap_or_else(|| panic!("the prompt first: {out}"));
    assert!(err.contains(&format!("sending {code} back")), "{err}");
    assert!(
        out.contains(&format!("send {code}\nHello! I'm Rita"))
            && out.contains("Glad I could help."),
        "{out}"
    );

    let (ok, out, _) = client(
        &["tcp", &server.addr(2).to_string()],
        "SNS is the best course ever !\n",
    );
    assert!(ok);
    assert!(out.contains("! reve esruoc tseb eht si SNS"), "{out}");

    let (ok, out, _) = client(&["udp", &server.addr(3).to_string()], "hello\n");
    assert!(ok);
    assert_eq!(out, "> hello\nOK...hello\n");
}

#[test]
fn udp_says_when_no_reply_comes_or_nobody_listens() {
    // A socket that never answers: the client times out and says so.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (ok, _, err) = client(
        &["udp", &silent.local_addr().unwrap().to_string()],
        "anyone?\n",
    );
    assert!(ok);
    assert!(
        err.contains("no reply from") && err.contains("within 3s"),
        "{err}"
    );
    drop(silent);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, _, err) = client(&["udp", &format!("127.0.0.1:{port}")], "anyone?\n");
    assert!(!ok);
    assert!(err.contains("nothing listens on UDP"), "{err}");
}
