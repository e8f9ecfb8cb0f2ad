//! The HTTP service through plain bytes: pipelining, framing, bad requests,
//! streaming bodies, timeouts.

use super::*;

fn session() -> HttpSession {
    HttpSession::new(Arc::new(HttpConfig::default()))
}

/// Feeds `chunks` as a transport does (holding a cut head), then lets the
/// session write everything it still has.
fn run(s: &mut HttpSession, chunks: &[&[u8]]) -> (Vec<u8>, Next) {
    let mut unread = crate::Unread::default();
    let mut out = Vec::new();
    let mut next = Next::Continue;
    for c in chunks {
        next = unread.feed_all(s, c, &mut out);
        if next == Next::Close {
            break;
        }
    }
    while s.has_more_output() {
        next = s.on_drained(&mut out);
    }
    (out, next)
}

/// A parsed response: status, headers (lower-case names), decoded body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a byte stream into responses (Content-Length or chunked bodies).
fn responses(mut bytes: &[u8], head_only: bool) -> Vec<Response> {
    let mut all = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        let used = match r.parse(bytes).expect("a response head") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("truncated response head"),
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let status = r.code.unwrap();
        bytes = &bytes[used..];
        let mut body = Vec::new();
        let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        if head_only {
        } else if let Some(len) = find("content-length") {
            let len: usize = len.parse().unwrap();
            body.extend_from_slice(&bytes[..len]);
            bytes = &bytes[len..];
        } else if find("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&bytes[..line_end]).unwrap(), 16)
                        .unwrap();
                bytes = &bytes[line_end + 2..];
                body.extend_from_slice(&bytes[..size]);
                assert_eq!(&bytes[size..size + 2], b"\r\n");
                bytes = &bytes[size + 2..];
                if size == 0 {
                    break;
                }
            }
        }
        all.push(Response {
            status,
            headers,
            body,
        });
    }
    all
}

fn pattern_ok(body: &[u8]) -> bool {
    body.iter()
        .enumerate()
        .all(|(i, &b)| b == body_byte(i as u64))
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut s = session();
    let (out, next) = run(
        &mut s,
        &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked/70000 HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"],
    );
    assert_eq!(next, Next::Continue, "keep-alive");
    let r = responses(&out, false);
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 200, 404]
    );
    assert_eq!(r[0].body, PAGE.as_bytes());
    assert_eq!(r[1].body, b"abcdefghij");
    assert_eq!(r[2].body.len(), 70_000);
    assert!(pattern_ok(&r[2].body));
    assert_eq!(r[2].header("transfer-encoding"), Some("chunked"));
    assert_eq!(r[0].header("connection"), Some("keep-alive"));
}

#[test]
fn a_request_sent_byte_by_byte_works() {
    let request = b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n\r\n";
    let chunks: Vec<&[u8]> = request.chunks(1).collect();
    let (out, _) = run(&mut session(), &chunks);
    let r = responses(&out, false);
    assert_eq!(
        (r.len(), r[0].status, r[0].body.as_slice()),
        (1, 200, &b"abc"[..])
    );
}

#[test]
fn bad_requests_get_their_status() {
    let cases: &[(&[u8], u16, bool)] = &[
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            405,
            true,
        ),
        (b"\x01\x02 / HTTP/1.1\r\n\r\n", 400, true),
        (b"GET / HTTP/9.9\r\n\r\n", 400, true),
        (b"GET /bytes/lots HTTP/1.1\r\n\r\n", 400, false),
        (b"GET /bytes/99999999999999 HTTP/1.1\r\n\r\n", 400, false),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            400,
            true,
        ),
    ];
    for (request, status, closes) in cases {
        let (out, next) = run(&mut session(), &[request]);
        let r = responses(&out, false);
        assert_eq!(r[0].status, *status, "{}", String::from_utf8_lossy(request));
        assert_eq!(
            next == Next::Close,
            *closes,
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    // A head over the bound: 431 before the head even ends.
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(vec![b'x'; 9000]);
    let (out, next) = run(&mut session(), &[&huge]);
    assert_eq!((responses(&out, false)[0].status, next), (431, Next::Close));
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..70 {
        many.extend(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend(b"\r\n");
    assert_eq!(
        responses(&run(&mut session(), &[&many]).0, false)[0].status,
        431
    );
}

#[test]
fn http_1_0_and_connection_close_close_after_the_response() {
    let (out, next) = run(&mut session(), &[b"GET /bytes/5 HTTP/1.0\r\n\r\n"]);
    let r = responses(&out, false);
    assert_eq!(
        (r[0].header("connection"), next),
        (Some("close"), Next::Close)
    );
    let (_, next) = run(
        &mut session(),
        &[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"],
    );
    assert_eq!(next, Next::Continue);
    let (out, next) = run(
        &mut session(),
        &[b"GET /bytes/100000 HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"],
    );
    let r = responses(&out, false);
    assert_eq!(
        (r.len(), r[0].body.len(), next),
        (1, 100_000, Next::Close),
        "nothing after a closing response"
    );
}

#[test]
fn long_bodies_stream_in_bounded_steps() {
    let mut s = session();
    let mut out = Vec::new();
    let request = b"GET /bytes/3145728 HTTP/1.1\r\n\r\n";
    let fed = s.on_input(request, &mut out, usize::MAX);
    assert_eq!(fed.consumed, request.len());
    assert!(
        out.len() < 512,
        "taking the request writes the head; body steps come only on drain"
    );
    assert!(s.has_more_output());
    let mut steps = 0;
    while s.has_more_output() {
        let before = out.len();
        s.on_drained(&mut out);
        assert!(out.len() - before <= STEP);
        steps += 1;
    }
    let r = responses(&out, false);
    assert_eq!(r[0].body.len(), 3 << 20);
    assert!(pattern_ok(&r[0].body));
    assert_eq!(steps, (3 << 20) / STEP);
    // HEAD: the same head, no body.
    let (out, _) = run(&mut session(), &[b"HEAD /bytes/3145728 HTTP/1.1\r\n\r\n"]);
    let r = responses(&out, true);
    assert_eq!(
        (r[0].status, r[0].header("content-length")),
        (200, Some("3145728"))
    );
    assert!(out.ends_with(b"\r\n\r\n"));
}

/// A transport that sends long plain bodies from static memory: it takes
/// static parts while the session offers them and drains the rest.
fn run_static(s: &mut HttpSession, request: &[u8], max: usize) -> (Vec<u8>, Vec<usize>, Next) {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut next = s.on_input(request, &mut out, usize::MAX).next;
    while s.has_more_output() && next == Next::Continue {
        if s.has_static_output() {
            let (part, then) = s.take_static_output(max).expect("a static part");
            parts.push(part.len());
            out.extend_from_slice(part);
            next = then;
        } else {
            next = s.on_drained(&mut out);
        }
    }
    (out, parts, next)
}

#[test]
fn long_plain_bodies_are_handed_out_from_static_memory() {
    // 1 MiB + 100: four static parts of a step each, then the last 100
    // bytes (under the static minimum) copied by on_drained.
    let size = (1 << 20) + 100;
    let request = format!("GET /bytes/{size} HTTP/1.1\r\n\r\n");
    let mut s = session();
    let (mut out, parts, next) = run_static(&mut s, request.as_bytes(), usize::MAX);
    assert_eq!(parts, vec![STEP; 4]);
    assert_eq!(next, Next::Continue);
    // The connection goes on after the body.
    let fed = s.on_input(b"GET / HTTP/1.1\r\n\r\n", &mut out, usize::MAX);
    assert_eq!(fed.next, Next::Continue);
    let r = responses(&out, false);
    assert_eq!(r[0].body.len(), size);
    assert!(
        pattern_ok(&r[0].body),
        "every part starts where the last ended"
    );
    assert_eq!(r[1].body, PAGE.as_bytes());

    // Parts never exceed what the transport asks for, and any offset works.
    let (out, parts, _) = run_static(
        &mut session(),
        b"GET /bytes/200013 HTTP/1.1\r\n\r\n",
        70_001,
    );
    assert_eq!(parts, vec![70_001, 70_001]);
    let r = responses(&out, false);
    assert_eq!(r[0].body.len(), 200_013);
    assert!(pattern_ok(&r[0].body));

    // A final response closes after its last static part.
    let (out, parts, next) = run_static(
        &mut session(),
        b"GET /bytes/524288 HTTP/1.1\r\nConnection: close\r\n\r\n",
        usize::MAX,
    );
    assert_eq!((parts.len(), next), (2, Next::Close));
    assert_eq!(responses(&out, false)[0].body.len(), 524_288);
}

#[test]
fn small_chunked_and_head_only_bodies_are_never_static() {
    for request in [
        &b"GET /bytes/65535 HTTP/1.1\r\n\r\n"[..],
        b"GET /chunked/1048576 HTTP/1.1\r\n\r\n",
        b"HEAD /bytes/1048576 HTTP/1.1\r\n\r\n",
    ] {
        let mut s = session();
        let mut out = Vec::new();
        s.on_input(request, &mut out, usize::MAX);
        assert!(!s.has_static_output());
        assert!(s.take_static_output(usize::MAX).is_none());
    }
    let mut s = session();
    s.on_input(
        b"GET /bytes/65536 HTTP/1.1\r\n\r\n",
        &mut Vec::new(),
        usize::MAX,
    );
    assert!(s.has_static_output());
    assert!(s.take_static_output(0).is_none(), "no empty parts");
}

#[test]
fn slow_heads_time_out_and_idle_connections_go() {
    let mut s = session();
    let mut out = Vec::new();
    let mut unread = crate::Unread::default();
    let t0 = Instant::now();
    unread.feed_all(&mut s, b"GET / HT", &mut out);
    assert_eq!(s.on_tick(t0, Duration::ZERO, &mut out), Next::Continue);
    // A byte now and then does not reset the head's deadline.
    unread.feed_all(&mut s, b"T", &mut out);
    assert_eq!(
        s.on_tick(t0 + Duration::from_secs(9), Duration::ZERO, &mut out),
        Next::Continue
    );
    assert_eq!(
        s.on_tick(t0 + Duration::from_secs(10), Duration::ZERO, &mut out),
        Next::Close
    );
    assert_eq!(responses(&out, false)[0].status, 408);
    let mut idle = session();
    let mut out = Vec::new();
    assert_eq!(
        idle.on_tick(t0, Duration::from_secs(59), &mut out),
        Next::Continue
    );
    assert_eq!(
        idle.on_tick(t0, Duration::from_secs(60), &mut out),
        Next::Close
    );
    assert!(out.is_empty(), "idle keep-alive connections close quietly");
}

#[test]
fn metrics_come_from_the_server_once_it_provides_them() {
    let config = Arc::new(HttpConfig::default());
    let (out, _) = run(
        &mut HttpSession::new(config.clone()),
        &[b"GET /metrics HTTP/1.1\r\n\r\n"],
    );
    assert_eq!(responses(&out, false)[0].status, 503);
    assert!(config
        .metrics
        .set(Box::new(|| "ringcore_up 1\n".to_string()))
        .is_ok());
    let (out, _) = run(
        &mut HttpSession::new(config),
        &[b"GET /metrics HTTP/1.1\r\n\r\n"],
    );
    let r = responses(&out, false);
    assert_eq!(
        (r[0].status, r[0].body.as_slice()),
        (200, &b"ringcore_up 1\n"[..])
    );
}

mod bounded_feeding {
    use super::*;
    use crate::reverse::tests::split_at_cuts;
    use crate::stream::drive_bounded as drive;
    use proptest::prelude::*;

    #[test]
    fn pipelined_requests_stop_at_the_room_and_a_body_takes_no_input() {
        let requests = b"GET / HTTP/1.1\r\n\r\n".repeat(1000);
        let mut s = session();
        let mut out = Vec::new();
        let fed = s.on_input(&requests, &mut out, 10_000);
        assert!(fed.consumed < requests.len());
        assert_eq!(fed.consumed % 18, 0, "whole requests only");
        let one = out.len() / (fed.consumed / 18);
        assert!(out.len() >= 10_000 && out.len() < 10_000 + one);
        // Behind a long body, nothing more is taken until it is written.
        let mut s = session();
        let mut out = Vec::new();
        let body = b"GET /bytes/10000000 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let fed = s.on_input(body, &mut out, usize::MAX);
        assert_eq!(fed.consumed, 32, "the second request waits");
        assert!(s.has_more_output());
        assert_eq!(s.on_input(&body[32..], &mut out, usize::MAX).consumed, 0);
    }

    #[test]
    fn a_failed_session_has_no_more_output() {
        let mut s = session();
        let mut out = Vec::new();
        let fed = s.on_input(b"\x00\x01garbage\r\n\r\n", &mut out, usize::MAX);
        assert_eq!(fed.next, Next::Close);
        assert!(!s.has_more_output());
        assert!(out.starts_with(b"HTTP/1.1 400"));
    }

    /// A request a generated pipeline holds.
    #[derive(Debug, Clone)]
    enum Req {
        Page,
        Bytes(usize),
        Chunked(usize),
        Missing,
        /// A head httparse refuses: control bytes where the method goes.
        Garbage(Vec<u8>),
    }

    fn request() -> impl Strategy<Value = (Req, Vec<(&'static str, String)>)> {
        let req = prop_oneof![
            3 => Just(Req::Page),
            3 => (0usize..5000).prop_map(Req::Bytes),
            2 => (0usize..5000).prop_map(Req::Chunked),
            2 => Just(Req::Missing),
            1 => proptest::collection::vec(1u8..32, 1..8).prop_map(Req::Garbage),
        ];
        let header = (
            prop_oneof![
                Just("Accept"),
                Just("User-Agent"),
                Just("X-Trace"),
                Just("Cache-Control")
            ],
            "[a-zA-Z0-9 ./=-]{0,24}",
        );
        (req, proptest::collection::vec(header, 0..4))
    }

    fn encode(requests: &[(Req, Vec<(&'static str, String)>)]) -> Vec<u8> {
        let mut wire = Vec::new();
        for (req, headers) in requests {
            let target = match req {
                Req::Page => "/".to_string(),
                Req::Bytes(n) => format!("/bytes/{n}"),
                Req::Chunked(n) => format!("/chunked/{n}"),
                Req::Missing => "/nope".to_string(),
                Req::Garbage(junk) => {
                    wire.extend_from_slice(junk);
                    wire.extend_from_slice(b" / HTTP/1.1\r\n\r\n");
                    continue;
                }
            };
            wire.extend_from_slice(format!("GET {target} HTTP/1.1\r\n").as_bytes());
            for (name, value) in headers {
                wire.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
        }
        wire
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Generated pipelines, checked against what each request asks for
        /// (worked out here from the request list, not by the server's
        /// code), whatever the split and the room.
        #[test]
        fn generated_pipelines_get_one_right_answer_each_in_order(
            requests in proptest::collection::vec(request(), 1..12),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            room in 1usize..4000,
        ) {
            let wire = encode(&requests);
            let (got, _) = drive(&mut session(), &split_at_cuts(&wire, &cuts), room);
            let answers = responses(&got, false);
            // Every request up to the first malformed one is answered, in
            // order; the malformed one gets a 400, and nothing after it.
            let answered: Vec<&Req> = requests
                .iter()
                .map(|(r, _)| r)
                .take_while(|r| !matches!(r, Req::Garbage(_)))
                .collect();
            let refused = requests.iter().any(|(r, _)| matches!(r, Req::Garbage(_)));
            prop_assert_eq!(answers.len(), answered.len() + usize::from(refused), "{:?}", requests);
            for (req, answer) in answered.iter().zip(&answers) {
                match req {
                    Req::Page => {
                        prop_assert_eq!(answer.status, 200);
                        prop_assert_eq!(&answer.body[..], PAGE.as_bytes());
                    }
                    Req::Bytes(n) | Req::Chunked(n) => {
                        prop_assert_eq!(answer.status, 200);
                        prop_assert_eq!(answer.body.len(), *n);
                        prop_assert!(pattern_ok(&answer.body));
                    }
                    Req::Missing => prop_assert_eq!(answer.status, 404),
                    Req::Garbage(_) => unreachable!("taken while not garbage"),
                }
            }
            if refused {
                prop_assert_eq!(answers.last().map(|a| a.status), Some(400));
            }
        }
    }

    proptest! {
        #[test]
        fn any_split_and_any_room_give_the_same_responses(
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            room in 1usize..2000,
        ) {
            let input: &[u8] = b"GET / HTTP/1.1\r\n\r\nGET /bytes/70000 HTTP/1.1\r\n\r\nHEAD /chunked/100 HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /chunked/300000 HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
            let mut whole = session();
            let mut expected = Vec::new();
            whole.on_bytes(input, &mut expected);
            let mut split = session();
            let chunks = split_at_cuts(input, &cuts);
            let (got, worst) = drive(&mut split, &chunks, room);
            prop_assert_eq!(got, expected);
            prop_assert!(worst <= 1024, "one call went {} past its room", worst);
        }
    }
}

#[test]
fn a_cut_head_is_left_to_the_transport_and_bounded() {
    let mut s = session();
    let mut out = Vec::new();
    let whole = b"GET / HTTP/1.1\r\n\r\n";
    let mut input = whole.to_vec();
    input.extend_from_slice(b"GET / HT");
    // The whole request is answered; the cut head is not taken.
    let fed = s.on_input(&input, &mut out, usize::MAX);
    assert_eq!(fed, Fed::all(whole.len()));
    assert!(out.ends_with(PAGE.as_bytes()));
    // Offered alone, the cut head is "need more input".
    assert_eq!(
        s.on_input(b"GET / HT", &mut out, usize::MAX),
        Fed::need_more()
    );
    // The transport's bound is the head limit: past it, a 431 and the close.
    assert!(s.max_frame() > HttpConfig::default().max_header);
    let mut last = Vec::new();
    s.on_frame_too_large(&mut last);
    assert!(last.starts_with(b"HTTP/1.1 431"));
    let (written, _) = crate::stream::drive_bounded(&mut session(), &[&[b'a'; 9000]], 64);
    assert!(
        written.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&written)
    );
}
