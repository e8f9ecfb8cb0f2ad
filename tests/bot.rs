//! The support bot through real sockets: whole diagnoses over TCP and UDP,
//! hundreds of concurrent conversations, garbage, idle timeouts, the UDP
//! session table's bound, and a bad script.
//!
//! Every reply is checked against the same `Conversation` state machine run
//! here as an oracle; only ticket digits may differ (the server seeds them).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::{connect, run_failing, Lack, Server, PATIENCE};
use protocols::bot::{Conversation, Script};

/// Three paths through the built-in script, each to its own diagnosis.
const PATHS: &[(&[&str], &str)] = &[
    (&["1", "yes", "yes", "yes"], "Great, it works again!"),
    (
        &["2", "yes", "yes", "no"],
        "I have opened a ticket for our technicians to measure it.",
    ),
    (&["6", "1", "yes"], "Glad I could help."),
    (&["4", "no", "no"], "Your router's Wi-Fi may be faulty."),
    (
        &["5", "yes", "no"],
        "Then the website itself is having trouble",
    ),
    (
        &["3", "yes", "no"],
        "The drops need a closer look at your line.",
    ),
];

/// Replaces ticket digits so transcripts compare across seeds.
fn mask(text: &str) -> String {
    match text.find("RC-") {
        Some(at) if text.len() >= at + 9 => {
            format!("{}RC-######{}", &text[..at], mask(&text[at + 9..]))
        }
        _ => text.to_string(),
    }
}

/// The oracle: what the bot must say to open, then after each answer.
fn expected_turns(answers: &[&str]) -> Vec<String> {
    let mut model = Conversation::new(Arc::new(Script::default_script()), 0);
    let mut turns = vec![String::new()];
    model.open(&mut turns[0]);
    for a in answers {
        let mut out = String::new();
        model.answer(a, &mut out);
        turns.push(out);
    }
    turns
}

struct TcpChat {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl TcpChat {
    fn open(addr: SocketAddr) -> Self {
        let s = connect(addr);
        Self {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, line: &[u8]) {
        self.writer.write_all(line).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    /// Reads exactly as many bytes as `expected` holds.
    fn read_like(&mut self, expected: &str) -> String {
        let mut buf = vec![0u8; expected.len()];
        self.reader.read_exact(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    fn rest(&mut self) -> String {
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).unwrap();
        rest
    }
}

struct UdpChat {
    socket: UdpSocket,
    to: SocketAddr,
}

impl UdpChat {
    fn open(to: SocketAddr) -> Self {
        Self::open_from("127.0.0.1:0", to)
    }

    fn open_from(local: &str, to: SocketAddr) -> Self {
        let socket = UdpSocket::bind(local).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Self { socket, to }
    }

    fn send(&self, message: &[u8]) {
        self.socket.send_to(message, self.to).unwrap();
    }

    /// Opens the conversation: proves this address receives (the bot's
    /// prompt and its code), after which the greeting comes.
    fn hello(&self) {
        loadgen::bot::prove_udp(&self.socket, self.to).expect("the bot's prompt and code");
    }

    /// Reads reply datagrams until they hold as many bytes as `expected`.
    fn read_like(&self, expected: &str) -> String {
        let mut text = Vec::new();
        let mut buf = [0u8; 2048];
        while text.len() < expected.len() {
            let (n, _) = self.socket.recv_from(&mut buf).expect("a reply datagram");
            assert!(n <= 1200, "reply datagrams stay small: {n}");
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(text).unwrap()
    }
}

#[test]
fn three_diagnoses_over_tcp_and_over_udp() {
    let server = Server::start(&["--serve", "tcp:0=bot", "--serve", "udp:0=bot"]);
    for (answers, diagnosis) in &PATHS[..3] {
        let turns = expected_turns(answers);
        let mut tcp = TcpChat::open(server.addr("tcp", "bot"));
        let udp = UdpChat::open(server.addr("udp", "bot"));
        udp.hello();
        for (i, turn) in turns.iter().enumerate() {
            if i > 0 {
                tcp.send(answers[i - 1].as_bytes());
                udp.send(answers[i - 1].as_bytes());
            }
            assert_eq!(
                mask(&tcp.read_like(turn)),
                mask(turn),
                "TCP turn {i} of {answers:?}"
            );
            assert_eq!(
                mask(&udp.read_like(turn)),
                mask(turn),
                "UDP turn {i} of {answers:?}"
            );
        }
        let last = turns.last().unwrap();
        assert!(
            last.contains(diagnosis) && last.ends_with("Goodbye! Thanks for contacting us.\n"),
            "{last}"
        );
        assert!(turns[0].starts_with("Hello! I'm Rita"));
        // The conversation is over: TCP closes.
        assert_eq!(tcp.rest(), "");
    }
    assert!(mask(&expected_turns(PATHS[1].0)[4]).contains("Your ticket number is RC-######."));
}

#[test]
fn five_hundred_tcp_sessions_and_five_hundred_udp_peers_at_once() {
    const SESSIONS: usize = 500;
    const THREADS: usize = 10;
    let server = Server::start(&[
        "--serve",
        "tcp:0=bot",
        "--serve",
        "udp:0=bot",
        "--threads",
        "2",
    ]);
    let (tcp_addr, udp_addr) = (server.addr("tcp", "bot"), server.addr("udp", "bot"));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let ids: Vec<usize> = (t..SESSIONS).step_by(THREADS).collect();
                let mut tcp: Vec<TcpChat> = ids.iter().map(|_| TcpChat::open(tcp_addr)).collect();
                let udp: Vec<UdpChat> = ids.iter().map(|_| UdpChat::open(udp_addr)).collect();
                let scripts: Vec<Vec<String>> = ids
                    .iter()
                    .map(|i| expected_turns(PATHS[i % PATHS.len()].0))
                    .collect();
                for chat in &udp {
                    chat.hello();
                }
                // Turn by turn across all of this thread's sessions, so every
                // conversation is open at the same time.
                for turn in 0..5 {
                    for (k, &i) in ids.iter().enumerate() {
                        let (answers, _) = PATHS[i % PATHS.len()];
                        let Some(expected) = scripts[k].get(turn) else {
                            continue;
                        };
                        if turn > 0 {
                            tcp[k].send(answers[turn - 1].as_bytes());
                            udp[k].send(answers[turn - 1].as_bytes());
                        }
                        assert_eq!(
                            mask(&tcp[k].read_like(expected)),
                            mask(expected),
                            "TCP session {i}, turn {turn}"
                        );
                        assert_eq!(
                            mask(&udp[k].read_like(expected)),
                            mask(expected),
                            "UDP peer {i}, turn {turn}"
                        );
                    }
                }
                for (k, &i) in ids.iter().enumerate() {
                    let diagnosis = PATHS[i % PATHS.len()].1;
                    assert!(scripts[k].last().unwrap().contains(diagnosis));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(server.counter("connections_accepted"), SESSIONS as u64);
    // Finished UDP conversations leave the table.
    assert_eq!(server.counter("sessions_open"), 0);
}

#[test]
fn garbage_gets_errors_and_the_session_goes_on() {
    let server = Server::start(&["--serve", "tcp:0=bot", "--serve", "udp:0=bot"]);
    let mut tcp = TcpChat::open(server.addr("tcp", "bot"));
    let opening = expected_turns(&[]).remove(0);
    tcp.read_like(&opening);
    tcp.send(b"\xff\xfe\xfd");
    assert_eq!(
        tcp.read_line(),
        "error: please send text encoded as UTF-8\n"
    );
    tcp.send(&[0x00, 0x07, 0x1b, 0x02, 0x7f]);
    assert_eq!(
        tcp.read_line(),
        "error: control characters are not allowed\n"
    );
    tcp.send(b"");
    assert_eq!(tcp.read_line(), "Sorry, I did not understand \"\". Please answer with a number from 1 to 6 (or type help).\n");
    let menu = expected_turns(&["restart"]).remove(1);
    tcp.read_like(&menu[menu.find("What kind").unwrap()..]);
    tcp.send(b"1");
    assert_eq!(
        tcp.read_line(),
        "Are the lights on your router on? (yes/no)\n"
    );
    // A 1 MiB line: an error, then the connection closes.
    tcp.send(&vec![b'x'; 1 << 20]);
    let rest = tcp.rest();
    assert!(
        rest.starts_with("error: line longer than 4096 bytes; goodbye\n"),
        "{}",
        &rest[..rest.len().min(200)]
    );

    let udp = UdpChat::open(server.addr("udp", "bot"));
    udp.hello();
    udp.read_like(&opening);
    udp.send(b"\xc3\x28 binary \xff noise");
    assert_eq!(
        udp.read_like("error: please send text encoded as UTF-8\n"),
        "error: please send text encoded as UTF-8\n"
    );
    udp.send(b"6");
    assert_eq!(
        udp.read_like(&expected_turns(&["6"])[1]),
        expected_turns(&["6"])[1],
        "the session survived the noise"
    );
}

#[test]
fn idle_conversations_end_with_a_goodbye_or_start_fresh() {
    let server = Server::start(&[
        "--serve",
        "tcp:0=bot",
        "--serve",
        "udp:0=bot",
        "--bot-idle",
        "300ms",
    ]);
    let mut tcp = TcpChat::open(server.addr("tcp", "bot"));
    tcp.read_like(&expected_turns(&[]).remove(0));
    // Say nothing: the server says goodbye and closes (read_to_end waits for it).
    let rest = tcp.rest();
    assert_eq!(
        rest,
        "Closing this chat after 0.0 minutes without a message. Goodbye!\n"
    );
    assert!(server.counter("idle_timeouts") >= 1);

    let udp = UdpChat::open(server.addr("udp", "bot"));
    udp.hello();
    let opening = expected_turns(&[]).remove(0);
    udp.read_like(&opening);
    udp.send(b"1");
    udp.read_like(&expected_turns(&["1"])[1]);
    // Outlast the idle time (the wait is the test's subject, not luck).
    std::thread::sleep(Duration::from_millis(450));
    // Forgotten: the address proves itself again before anything more.
    udp.send(b"yes, still here");
    let prompt = udp.read_like("Hello! To start a chat, send: 3kf9xq\n");
    assert!(
        protocols::cookie::code_in_prompt(prompt.as_bytes()).is_some(),
        "{prompt}"
    );
    assert_eq!(server.counter("sessions_expired"), 1);
    udp.hello();
    assert_eq!(udp.read_like(&opening), opening);
}

#[test]
fn twenty_thousand_udp_peers_leave_a_bounded_table() {
    const PEERS: usize = 20_000;
    let server = Server::start(&["--serve", "udp:0=bot", "--threads", "1"]);
    let addr = server.addr("udp", "bot");
    let opening = expected_turns(&[]).remove(0);
    let first_answer = expected_turns(&["1"]).remove(1);
    // Twenty thousand distinct peers, a thousand sockets open at a time; each
    // batch binds its own loopback address, so no closed socket's port comes
    // back as an old peer.
    for batch in 0..PEERS / 1000 {
        let from = format!("127.0.{}.1:0", batch + 1);
        let chats: Vec<UdpChat> = (0..1000).map(|_| UdpChat::open_from(&from, addr)).collect();
        for chat in &chats {
            chat.hello();
        }
        for chat in &chats {
            chat.read_like(&opening);
        }
        // Trusted from the second datagram on: that one makes a session.
        for chat in &chats {
            chat.send(b"1");
        }
        for chat in &chats {
            chat.read_like(&first_answer);
        }
    }
    assert_eq!(
        server.counter("sessions_open"),
        10_000,
        "the default bound holds"
    );
    assert_eq!(server.counter("sessions_evicted"), (PEERS - 10_000) as u64);
}

#[test]
fn a_bad_script_fails_startup_naming_the_node() {
    let path =
        std::env::temp_dir().join(format!("ringcore-bad-script-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "name = \"x\"\ngreeting = \"hi\"\nstart = \"a\"\n[nodes.a]\nsay = \"?\"\nyes = \"nowhere\"\nno = \"b\"\n[nodes.b]\nsay = \"bye\"\nend = \"resolved\"\n",
    )
    .unwrap();
    let (code, stderr) = run_failing(&[
        "--serve",
        "tcp:0=bot",
        "--bot-script",
        &path.to_string_lossy(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("node 'a': yes leads to missing node 'nowhere'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ringcore-bad-script"),
        "the file is named: {stderr}"
    );
}

/// The bytes the bot's prompt takes for a first datagram of `sent` bytes,
/// written out by hand from the README's table: nothing for 0 or 1 byte,
/// the bare 6-character code for 2, the code and a newline for 3,
/// `send <code>` for 4 to 12, the full sentence from 13 on.
fn prompt_len(sent: usize) -> usize {
    match sent {
        0 | 1 => 0,
        2 => 6,
        3 => 7,
        4..=12 => 12,
        _ => "Hello! To start a chat, send: ".len() + 7,
    }
}

/// Waits until the bot has handled everything sent to it before: one
/// worker reads one socket in order, so once a later datagram is
/// answered, every earlier one was.
fn settle(bot: SocketAddr) {
    let marker = UdpSocket::bind("127.0.0.1:0").unwrap();
    marker.set_read_timeout(Some(PATIENCE)).unwrap();
    marker.send_to(b"hello", bot).unwrap();
    let mut buf = [0u8; 64];
    marker.recv_from(&mut buf).expect("the marker's prompt");
}

/// Everything waiting on `socket`, read without blocking.
fn drain(socket: &UdpSocket) -> usize {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut total = 0;
    while let Ok(n) = socket.recv(&mut buf) {
        total += n;
    }
    total
}

#[test]
fn a_blind_sender_gets_at_most_three_times_what_it_sent() {
    let server = Server::start(&["--serve", "udp:0=bot", "--threads", "1"]);
    let bot = server.addr("udp", "bot");
    // K datagrams of 0 to 12 bytes from one address that never reads
    // (until the end, to count), for K from 1 to 100.
    let messages = [
        "",
        "x",
        "hi",
        "hey",
        "help",
        "?",
        "yes",
        "1",
        "hello",
        "restart",
        "quit",
        "back it up",
        "hello there!",
    ];
    let mut blind = Vec::new();
    for k in 1..=100usize {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent: Vec<usize> = (0..k)
            .map(|i| {
                let m = messages[(i * 7 + k) % messages.len()];
                socket.send_to(m.as_bytes(), bot).unwrap();
                m.len()
            })
            .collect();
        blind.push((socket, sent));
    }
    settle(bot);
    for (socket, sent) in &blind {
        let got = drain(socket);
        let expected: usize = sent.iter().map(|&n| prompt_len(n)).sum();
        assert_eq!(got, expected, "{} datagrams of {sent:?}", sent.len());
        assert!(got <= 3 * sent.iter().sum::<usize>());
    }
    assert_eq!(
        server.counter("sessions_open"),
        0,
        "a blind sender keeps nothing"
    );
    // An honest client proves itself and talks.
    let chat = UdpChat::open(bot);
    chat.hello();
    let greeting = expected_turns(&[]).remove(0);
    assert_eq!(chat.read_like(&greeting), greeting);
    chat.send(b"1");
    let next = expected_turns(&["1"]).remove(1);
    assert_eq!(chat.read_like(&next), next);
    assert_eq!(server.counter("sessions_open"), 1);
}

#[test]
fn a_spoofed_victim_receives_at_most_three_times_what_the_spoofer_sent() {
    if let Err(why) = common::own_network_namespace() {
        common::skip(Lack::Root, format!("{why} (run as root)"));
        return;
    }
    let server = Server::start(&["--serve", "udp:0=bot", "--threads", "1"]);
    let bot = server.addr("udp", "bot");
    // The victim, at an address of this namespace's loopback that never
    // sent the bot anything; the attacker forges its address.
    let victim = UdpSocket::bind("127.0.0.2:0").unwrap();
    let victim_addr = victim.local_addr().unwrap();
    let forged = [
        "x",
        "hi",
        "hey",
        "help",
        "hello",
        "restart",
        "1",
        "",
        "hello there!",
        "yes",
    ];
    let mut sent = Vec::new();
    for round in 0..20 {
        for m in forged {
            // A forged "code" too: a guess, which starts nothing.
            let payload = if round % 5 == 4 { "3kf9xq" } else { m };
            if let Err(why) = common::send_spoofed_udp_from(victim_addr, bot, payload.as_bytes()) {
                common::skip(Lack::Root, why);
                return;
            }
            sent.push(payload.len());
        }
    }
    server.wait_counter("datagrams_in", |n| n >= sent.len() as u64);
    settle(bot);
    let got = drain(&victim);
    let expected: usize = sent.iter().map(|&n| prompt_len(n)).sum();
    let payload: usize = sent.iter().sum();
    assert_eq!(got, expected, "the victim got the prompts only");
    assert!(got <= 3 * payload, "{got} bytes for {payload}");
    assert_eq!(server.counter("sessions_open"), 0);
    eprintln!(
        "spoofed {} datagrams, {payload} bytes: the victim got {got} bytes",
        sent.len()
    );
}

/// One conversation as the built-in script (`default_script.toml`) says it
/// goes, written out here by hand from the script, not computed by the
/// bot's own state machine: no connection, lights on, Internet light
/// green, a restart fixes it.
const NO_CONNECTION_FIXED_BY_A_RESTART: [(&str, &str); 4] = [
    (
        "",
        "Hello! I'm Rita, Ringcore ISP's automated support assistant. I'll ask a few questions to find out what's wrong. You can type help, back, restart or quit at any time.\n\
         What kind of problem are you having?\n  1) No connection at all\n  2) The connection is slow\n  3) The connection keeps dropping\n  4) Only Wi-Fi is not working\n  5) One device or one website has trouble\n  6) A billing question or an outage\n",
    ),
    ("1", "Are the lights on your router on? (yes/no)\n"),
    ("yes", "Is the light marked Internet (or WAN) green? (yes/no)\n"),
    (
        "yes",
        "Please restart the router: unplug it for 30 seconds, plug it back in and wait two minutes. Can you browse now? (yes/no)\n",
    ),
];

const FIXED_SUMMARY: &str = "Great, it works again!\nSummary of what we checked:\n  - router has power: yes\n  - internet light green: yes\n  - browsing after a router restart: yes\nGoodbye! Thanks for contacting us.\n";

#[test]
fn a_conversation_goes_as_the_script_is_written() {
    let server = Server::start(&["--serve", "tcp:0=bot", "--serve", "udp:0=bot"]);
    let mut tcp = TcpChat::open(server.addr("tcp", "bot"));
    let udp = UdpChat::open(server.addr("udp", "bot"));
    udp.hello();
    let mut turns: Vec<(&str, &str)> = NO_CONNECTION_FIXED_BY_A_RESTART.to_vec();
    turns.push(("yes", FIXED_SUMMARY));
    for (answer, expected) in turns {
        if !answer.is_empty() {
            tcp.send(answer.as_bytes());
            udp.send(answer.as_bytes());
        }
        assert_eq!(tcp.read_like(expected), expected, "TCP, after {answer:?}");
        assert_eq!(udp.read_like(expected), expected, "UDP, after {answer:?}");
    }
    assert_eq!(tcp.rest(), "", "TCP closes after the goodbye");
}

#[test]
fn a_code_from_another_address_or_an_old_period_starts_nothing() {
    // A short period, so that "two periods later" is 2 s, and a fresh
    // code sent straight back has a whole second to arrive in.
    let server = Server::start(&[
        "--serve",
        "udp:0=bot",
        "--threads",
        "1",
        "--bot-cookie-period",
        "1s",
    ]);
    let bot = server.addr("udp", "bot");
    let socket = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    };
    let ask = |s: &UdpSocket, message: &[u8]| -> String {
        s.send_to(message, bot).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).expect("a reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let (a, b) = (socket(), socket());
    let prompt = ask(&a, b"hello");
    let code = protocols::cookie::code_in_prompt(prompt.as_bytes()).expect("a code");
    let issued = std::time::Instant::now();
    // Another address replaying it gets a prompt of its own.
    let replayed = ask(&b, &code);
    assert!(replayed.starts_with("send "), "{replayed}");
    assert_ne!(
        protocols::cookie::code_in_prompt(replayed.as_bytes()),
        Some(code),
        "each address has its own code"
    );
    // Two periods after it was issued the code is stale (the wait is the
    // test's subject: a code is good for at most two periods, 2 s).
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(issued.elapsed()));
    let stale = ask(&a, &code);
    assert!(
        stale.starts_with("send "),
        "a stale code starts nothing: {stale}"
    );
    assert_eq!(server.counter("sessions_open"), 0);
    // A fresh code, sent straight back, starts the conversation.
    loadgen::bot::prove_udp(&a, bot).expect("prompt and code");
    let mut buf = [0u8; 2048];
    let (n, _) = a.recv_from(&mut buf).expect("the greeting");
    assert!(buf[..n].starts_with(b"Hello! I'm Rita"));
    assert_eq!(server.counter("sessions_open"), 1);
}
