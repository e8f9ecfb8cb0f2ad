//! The bot through plain strings and bytes: dialogues, commands, bad input,
//! and the UDP session table's bounds.

use super::*;

fn config() -> Arc<BotConfig> {
    Arc::new(BotConfig::with_script(Arc::new(Script::default_script())))
}

/// Plays `answers` and returns everything the bot said, opening included.
fn talk(answers: &[&str]) -> (String, Next) {
    let mut c = Conversation::new(config().script.clone(), 7);
    let mut out = String::new();
    c.open(&mut out);
    let mut next = Next::Continue;
    for a in answers {
        next = c.answer(a, &mut out);
    }
    (out, next)
}

#[test]
fn a_no_connection_diagnosis_is_fixed_by_a_restart() {
    let (out, next) = talk(&["1", "Yes", "yeah", "y"]);
    assert_eq!(next, Next::Close);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Hello! I'm Rita"));
    assert_eq!(lines[1], "What kind of problem are you having?");
    assert_eq!(lines[2], "  1) No connection at all");
    assert_eq!(lines[8], "Are the lights on your router on? (yes/no)");
    assert_eq!(
        lines[9],
        "Is the light marked Internet (or WAN) green? (yes/no)"
    );
    assert!(lines[10].starts_with("Please restart the router"));
    assert_eq!(
        &lines[11..],
        [
            "Great, it works again!",
            "Summary of what we checked:",
            "  - router has power: yes",
            "  - internet light green: yes",
            "  - browsing after a router restart: yes",
            "Goodbye! Thanks for contacting us.",
        ]
    );
}

#[test]
fn an_unsolved_problem_gets_a_ticket() {
    let (out, next) = talk(&["2", "yes", "YES", "nope"]);
    assert_eq!(next, Next::Close);
    assert!(out.contains("I have opened a ticket for our technicians to measure it."));
    let ticket = out
        .lines()
        .find(|l| l.starts_with("Your ticket number is RC-"))
        .expect("a ticket");
    assert_eq!(ticket.len(), "Your ticket number is RC-123456.".len());
    assert!(out.contains("  - speed after a router restart: no"));
}

#[test]
fn commands_and_unclear_answers_never_dead_end() {
    let (out, next) = talk(&[
        "maybe", "9", "help", "1", "back", "restart", "6", "first", "1", "yes",
    ]);
    assert_eq!(next, Next::Close);
    assert!(out.contains("Sorry, I did not understand \"maybe\". Please answer with a number from 1 to 6 (or type help)."));
    assert!(out.contains("Sorry, I did not understand \"9\"."));
    assert!(out.contains(HELP));
    assert!(out.contains("Let's start over."));
    // "first" is not a label: re-asked with the choices; "1" picks the bill.
    assert!(out.contains("Sorry, I did not understand \"first\"."));
    assert!(out.contains("Glad I could help."));
    let (out, next) = talk(&["back", "1", "perhaps", "quit"]);
    assert!(out.contains("We are at the first question already."));
    assert!(out.contains("Please answer yes or no (or type help)."));
    assert_eq!(next, Next::Close);
    // Choices by label work too.
    let (out, _) = talk(&["the connection is slow", "no", "no", "no"]);
    assert!(out.contains("Your ticket number is RC-"));
}

#[test]
fn tcp_framing_handles_crlf_garbage_and_long_lines() {
    let mut s = BotStream::new(config(), 1);
    let mut out = Vec::new();
    s.on_open(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("Hello! I'm Rita"));
    out.clear();
    // Split across chunks, CRLF, invalid UTF-8, control characters, an empty line.
    let mut unread = crate::Unread::default();
    for chunk in [
        &b"\xff\xfe\r\n"[..],
        b"\x01\x02\x03\n",
        b"\r\n",
        b"1",
        b"\r\n",
    ] {
        assert_eq!(unread.feed_all(&mut s, chunk, &mut out), Next::Continue);
    }
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("error: please send text encoded as UTF-8\nerror: control characters are not allowed\nSorry, I did not understand \"\""));
    assert!(text.ends_with("Are the lights on your router on? (yes/no)\n"));
    out.clear();
    assert_eq!(
        unread.feed_all(&mut s, &vec![b'a'; 5000], &mut out),
        Next::Close
    );
    assert_eq!(out, b"error: line longer than 4096 bytes; goodbye\n");
    let mut out = Vec::new();
    let now = Instant::now();
    assert_eq!(
        s.on_tick(now, Duration::from_secs(299), &mut out),
        Next::Continue
    );
    assert!(out.is_empty());
    assert_eq!(
        s.on_tick(now, Duration::from_secs(300), &mut out),
        Next::Close
    );
    assert!(String::from_utf8_lossy(&out).contains("without a message. Goodbye!"));
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn say(bot: &mut BotDatagram, now: Instant, port: u16, text: &str) -> String {
    let mut replies = Replies::new();
    bot.on_datagram(now, peer(port), text.as_bytes(), &mut replies);
    replies
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

/// Proves `port` receives, as a client does: any datagram, then the code
/// from the prompt; returns the reply to the code (the greeting).
fn prove(bot: &mut BotDatagram, now: Instant, port: u16) -> String {
    let prompt = say(bot, now, port, "hello");
    let code = crate::cookie::code_in_prompt(prompt.as_bytes())
        .unwrap_or_else(|| panic!("a prompt with a code: {prompt:?}"));
    say(bot, now, port, std::str::from_utf8(&code).unwrap())
}

const GREETING_START: &str = "Hello! I'm Rita";

#[test]
fn udp_sessions_are_per_peer_and_bounded() {
    let mut bot = BotDatagram::new(Arc::new(BotConfig {
        max_sessions: 3,
        ..(*config()).clone()
    }));
    let t0 = Instant::now();
    for port in 1..=3 {
        assert!(prove(&mut bot, t0, port).starts_with(GREETING_START));
    }
    // Peers keep their own place.
    assert!(say(&mut bot, t0, 1, "1").contains("router on?"));
    assert!(say(&mut bot, t0, 2, "4").contains("network's name"));
    assert!(say(&mut bot, t0, 3, "1").contains("router on?"));
    // A fourth peer's first datagram evicts nobody; once proved, it
    // evicts the least recently used (1).
    say(&mut bot, t0, 4, "hello");
    assert_eq!(bot.sessions().open, 3, "an unproved datagram evicts nobody");
    prove(&mut bot, t0, 4);
    let stats = |open, evicted, expired, capped| SessionStats {
        open,
        evicted,
        expired,
        capped,
    };
    // Four prompts so far (one per peer) and one more for "hello" of 4.
    assert_eq!(bot.sessions(), stats(3, 1, 0, 5));
    // Peer 1 was evicted: it is unproved again, and gets a prompt.
    assert!(
        say(&mut bot, t0, 1, "1").is_empty(),
        "1 byte: no code fits 3"
    );
    assert!(prove(&mut bot, t0, 1).starts_with(GREETING_START));
    assert_eq!(bot.sessions(), stats(3, 2, 0, 7));
    // A finished conversation leaves the table.
    assert!(say(&mut bot, t0, 3, "quit").starts_with("Goodbye!"));
    assert_eq!(bot.sessions().open, 2);
    // Silence past the idle time: forgotten, and to be proved again.
    let later = t0 + Duration::from_secs(301);
    let prompt = say(&mut bot, later, 4, "yes, go on");
    assert!(prompt.starts_with("send "), "{prompt}");
    assert_eq!(bot.sessions(), stats(1, 2, 1, 8));
}

#[test]
fn a_blind_sender_gets_at_most_three_times_what_it_sent() {
    let mut bot = BotDatagram::new(config());
    let t0 = Instant::now();
    // Every mix a sender that never reads can make: K datagrams of 0..N
    // bytes from one address, help and empties included.
    let messages = [
        "", "x", "hi", "hey", "help", "?", "yes", "1", "hello", "restart",
    ];
    for k in 1..=100usize {
        let port = 20_000 + k as u16;
        let (mut sent, mut received) = (0, 0);
        for i in 0..k {
            let m = messages[(i * 7 + k) % messages.len()];
            sent += m.len();
            let reply = say(&mut bot, t0, port, m);
            assert!(reply.len() <= 3 * m.len(), "{m:?} got {reply:?}");
            received += reply.len();
        }
        assert!(received <= 3 * sent, "{k} datagrams: {received} for {sent}");
    }
    assert_eq!(bot.sessions().open, 0, "nothing kept for a blind sender");
}

#[test]
fn a_flood_of_new_addresses_keeps_nothing_and_evicts_no_conversation() {
    let mut bot = BotDatagram::new(Arc::new(BotConfig {
        max_sessions: 2,
        ..(*config()).clone()
    }));
    let t0 = Instant::now();
    prove(&mut bot, t0, 1);
    assert!(say(&mut bot, t0, 1, "1").contains("router on?"));
    for port in 1000..31_000 {
        let reply = say(&mut bot, t0, port, "hello!!");
        assert!(reply.len() <= 21, "{} bytes for 7", reply.len());
    }
    assert_eq!(bot.sessions().open, 1, "only the proved conversation");
    assert_eq!(bot.sessions().evicted, 0, "the flood evicted nobody");
    assert_eq!(bot.sessions().capped, 30_001);
    // The conversation goes on where it was.
    assert!(say(&mut bot, t0, 1, "yes").contains('?'));
}

#[test]
fn a_code_from_another_address_or_an_old_period_starts_nothing() {
    let period = Duration::from_secs(60);
    let mut bot = BotDatagram::with_cookies(config(), crate::cookie::Cookies::with_period(period));
    let t0 = Instant::now();
    let prompt = say(&mut bot, t0, 1, "hello");
    let code = String::from_utf8(
        crate::cookie::code_in_prompt(prompt.as_bytes())
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    // Port 2 replays port 1's code: another prompt, no conversation.
    assert!(say(&mut bot, t0, 2, &code).starts_with("send "));
    // Two periods later the code is stale.
    assert!(say(&mut bot, t0 + 2 * period + Duration::from_secs(1), 1, &code).starts_with("send "));
    assert_eq!(bot.sessions().open, 0);
    // A fresh code still works, typed as the prompt shows it.
    let later = t0 + 3 * period;
    let prompt = say(&mut bot, later, 1, "hello");
    assert!(say(&mut bot, later, 1, prompt.trim_end()).starts_with(GREETING_START));
    assert_eq!(bot.sessions().open, 1);
}

#[test]
fn a_person_typing_hello_is_told_what_to_send() {
    let mut bot = BotDatagram::new(config());
    let t0 = Instant::now();
    let reply = say(&mut bot, t0, 7, "hello");
    assert!(reply.starts_with("send ") && reply.len() == 12, "{reply:?}");
    let longer = say(&mut bot, t0, 7, "hello, I need help");
    assert!(
        longer.starts_with("Hello! To start a chat, send: "),
        "{longer:?}"
    );
}

#[test]
fn udp_replies_fit_in_datagrams() {
    let mut bot = BotDatagram::new(config());
    let mut replies = Replies::new();
    let t0 = Instant::now();
    let greeting = prove(&mut bot, t0, 9);
    assert!(greeting.ends_with("  6) A billing question or an outage\n"));
    bot.on_datagram(t0, peer(9), b"?", &mut replies);
    assert!(replies.iter().all(|r| r.len() <= MAX_REPLY_DATAGRAM));
    replies.clear();
    bot.on_datagram(t0, peer(9), &vec![b'x'; 5000], &mut replies);
    assert_eq!(
        replies.get(0),
        Some(&b"error: message longer than 4096 bytes\n"[..])
    );
}

mod bounded_feeding {
    use super::*;
    use crate::reverse::tests::split_at_cuts;
    use crate::stream::drive_bounded as drive;
    use proptest::prelude::*;

    fn stream() -> BotStream {
        BotStream::new(config(), 7)
    }

    /// The longest single answer among those the test input provokes.
    const ONE_ANSWER: usize = 2048;

    #[test]
    fn amplifying_questions_stop_at_the_room() {
        // `?` is answered with the help text: far more than two bytes.
        let questions = b"?\n".repeat(10_000);
        let mut s = stream();
        let mut out = Vec::new();
        let fed = s.on_input(&questions, &mut out, 4096);
        assert!(
            fed.consumed < questions.len(),
            "not every question answered"
        );
        assert!(
            out.len() >= 4096 && out.len() <= 4096 + ONE_ANSWER,
            "{}",
            out.len()
        );
        assert_eq!(fed.consumed % 2, 0, "whole lines only");
    }

    proptest! {
        #[test]
        fn any_split_and_any_room_give_the_same_conversation(
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            room in 1usize..3000,
        ) {
            let input = b"?\n1\nhelp\n\xff\xfe\nback\nrestart\n2\n?\nquit\nignored\n";
            let mut whole = stream();
            let mut expected = Vec::new();
            whole.on_open(&mut expected);
            whole.on_bytes(input, &mut expected);
            let mut split = stream();
            let mut got = Vec::new();
            split.on_open(&mut got);
            let chunks = split_at_cuts(input, &cuts);
            let (written, worst) = drive(&mut split, &chunks, room);
            got.extend_from_slice(&written);
            prop_assert_eq!(got, expected);
            prop_assert!(worst <= ONE_ANSWER, "one call went {} past its room", worst);
        }

        /// Generated conversations: answers of every kind (the script's
        /// words in any case and punctuation, numbers in and out of range,
        /// commands, empty lines, control characters, bytes that are not
        /// UTF-8, a line past the bound), pipelined, cut anywhere, fed with
        /// any room. What holds whatever the script says: every line gets
        /// an answer of bounded size, `quit` gets the goodbye and nothing
        /// after it is answered, a line past the bound gets the error and
        /// the close, and cuts and room change nothing.
        #[test]
        fn generated_conversations_answer_every_line_once(
            lines in proptest::collection::vec(message(), 0..24),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            room in 1usize..3000,
        ) {
            let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let input: Vec<u8> = lines.iter().flat_map(|l| l.iter().chain(end)).copied().collect();

            // Line by line: what each line alone is answered with.
            let mut one_by_one = stream();
            let mut said = Vec::new();
            one_by_one.on_open(&mut said);
            for (i, line) in lines.iter().enumerate() {
                let mut answer = Vec::new();
                let mut framed = line.clone();
                framed.extend_from_slice(end);
                let next = one_by_one.on_bytes(&framed, &mut answer);
                prop_assert!(!answer.is_empty(), "line {} ({:?}) went unanswered", i, line);
                prop_assert!(answer.len() <= ONE_ANSWER, "line {} drew {} bytes", i, answer.len());
                prop_assert!(answer.ends_with(b"\n"), "answers are whole lines");
                // What the bot reads: the line without its end, `\r\n` or
                // `\n` (so a line's own last `\r` before a bare `\n` ends it).
                let line = framed[..framed.len() - 1]
                    .strip_suffix(b"\r")
                    .unwrap_or(&framed[..framed.len() - 1]);
                let word = String::from_utf8_lossy(line).trim().to_lowercase();
                if line.len() > 4096 {
                    prop_assert_eq!(&answer[..], &b"error: line longer than 4096 bytes; goodbye\n"[..]);
                    prop_assert_eq!(next, Next::Close);
                } else if ["quit", "exit", "bye"].contains(&word.as_str()) {
                    prop_assert!(answer.ends_with(b"Goodbye! Thanks for contacting us.\n"));
                    prop_assert_eq!(next, Next::Close);
                } else if line.iter().any(|&b| b < 0x20 && b != b'\t') && std::str::from_utf8(line).is_ok() {
                    prop_assert_eq!(&answer[..], &b"error: control characters are not allowed\n"[..]);
                } else if std::str::from_utf8(line).is_err() {
                    prop_assert_eq!(&answer[..], &b"error: please send text encoded as UTF-8\n"[..]);
                }
                said.extend_from_slice(&answer);
                if next == Next::Close {
                    break;
                }
            }
            // All at once, cut anywhere, with any room: the same words, and
            // nothing for the lines after a close.
            let mut split = stream();
            let mut got = Vec::new();
            split.on_open(&mut got);
            let (written, worst) = drive(&mut split, &split_at_cuts(&input, &cuts), room);
            got.extend_from_slice(&written);
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&said));
            prop_assert!(worst <= ONE_ANSWER, "one call went {} past its room", worst);
        }
    }

    /// One message of a generated conversation, without its line end.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let word = prop_oneof![
            Just("yes"),
            Just("No"),
            Just("y"),
            Just("nope"),
            Just("YEAH!"),
            Just("sure."),
            Just("1"),
            Just("2"),
            Just("3"),
            Just("4"),
            Just("0"),
            Just("99"),
            Just("1)"),
            Just("help"),
            Just("?"),
            Just("back"),
            Just("restart"),
            Just("quit"),
            Just(" Bye "),
            Just(""),
            Just("   "),
            Just("maybe"),
            Just("\u{e9}t\u{e9}"),
        ];
        prop_oneof![
            8 => word.prop_map(|w| w.as_bytes().to_vec()),
            1 => "[ -~]{0,40}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 1..40)
                .prop_map(|mut b| { b.retain(|&c| c != b'\n'); b }),
            1 => prop_oneof![4000usize..4200, 4095usize..4098].prop_map(|n| vec![b'z'; n]),
        ]
    }
}

/// A line at the bound ends in CRLF: cut between its `\r` and its `\n`,
/// it passes as it does whole (the `\r` is the line end's, not the
/// line's); one byte more fails both ways. Found by the generated
/// conversations.
#[test]
fn a_line_at_the_bound_passes_however_its_crlf_is_cut() {
    for (len, passes) in [(4096, true), (4097, false)] {
        let mut line = vec![b'z'; len];
        line.extend_from_slice(b"\r\n");
        let mut whole = BotStream::new(config(), 7);
        let mut cut = BotStream::new(config(), 7);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let whole_next = whole.on_bytes(&line, &mut a);
        let mut unread = crate::Unread::default();
        let first = unread.feed_all(&mut cut, &line[..len + 1], &mut b);
        let cut_next = if first == Next::Close {
            first
        } else {
            unread.feed_all(&mut cut, b"\n", &mut b)
        };
        assert_eq!((whole_next, a.clone()), (cut_next, b), "{len} bytes");
        assert_eq!(
            whole_next == Next::Continue,
            passes,
            "{len}: {}",
            String::from_utf8_lossy(&a)
        );
    }
}

#[test]
fn a_looping_script_cannot_grow_a_conversation() {
    // Valid (an end stays reachable), but "yes" loops on the same question.
    let script = Script::parse(
        "name = \"t\"\ngreeting = \"hi\"\nstart = \"a\"\n\
         [nodes.a]\nsay = \"again?\"\ncheck = \"loop\"\nyes = \"a\"\nno = \"b\"\n\
         [nodes.b]\nsay = \"done\"\nend = \"resolved\"\n",
    )
    .unwrap();
    let mut c = Conversation::new(Arc::new(script), 1);
    let mut out = String::new();
    c.open(&mut out);
    for _ in 0..100_000 {
        out.clear();
        assert_eq!(c.answer("yes", &mut out), Next::Continue);
    }
    assert!(c.remembered() <= MAX_HISTORY + MAX_CHECKS);
    out.clear();
    assert_eq!(c.answer("no", &mut out), Next::Close);
    assert!(out.lines().count() < MAX_CHECKS + 10, "a bounded summary");
}
