//! The readers against replies written out by hand, as the real servers
//! send them, and cut at every place a socket could cut them.

use std::sync::Arc;

use proptest::prelude::*;

use super::memcache::McCommand;
use super::resp::RespCommand;
use super::*;
use crate::rng::Rng;

fn resp(mix: &str) -> Arc<dyn Dialect> {
    let mix = Mix::parse(mix, RespCommand::named).unwrap();
    Arc::new(Resp::new(
        mix,
        KeySpace::new(1000, KeyDist::Uniform),
        (3, 3),
    ))
}

fn memcache(mix: &str) -> Arc<dyn Dialect> {
    let mix = Mix::parse(mix, McCommand::named).unwrap();
    Arc::new(Memcache::new(
        mix,
        KeySpace::new(1000, KeyDist::Uniform),
        (5, 5),
    ))
}

/// Writes `n` requests on a fresh reader: their bytes, and the reader.
fn requests(dialect: &Arc<dyn Dialect>, n: usize) -> (ReplyReader, Vec<u8>) {
    let mut reader = ReplyReader::new(dialect.clone());
    let mut rng = Rng::new(11);
    let mut out = Vec::new();
    for seq in 0..n as u64 {
        reader.request(seq, &mut rng, &mut out);
    }
    (reader, out)
}

/// Feeds `stream` in the pieces `cuts` marks: the refusals of every reply
/// completed, or the error.
fn feed_cut(
    reader: &mut ReplyReader,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<bool>, StreamError> {
    let mut at = 0;
    let mut all = Vec::new();
    let mut refused = Vec::new();
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    for end in ends {
        reader.feed(&stream[at..end], &mut refused)?;
        all.extend_from_slice(&refused);
        at = end;
    }
    Ok(all)
}

#[test]
fn resp_requests_are_what_redis_reads() {
    let (_, out) = requests(&resp("ping"), 1);
    assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
    let (_, out) = requests(&resp("set"), 1);
    let text = String::from_utf8(out).unwrap();
    let parts: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(&parts[..4], &["*3", "$3", "SET", "$16"]);
    assert!(
        parts[4].starts_with("key:") && parts[4].len() == 16,
        "{text:?}"
    );
    assert_eq!((parts[5], parts[6].len(), parts[7]), ("$3", 3, ""));
    let (_, out) = requests(&resp("incr"), 1);
    assert!(
        out.starts_with(b"*2\r\n$4\r\nINCR\r\n$20\r\ncounter:"),
        "{out:?}"
    );
}

#[test]
fn resp_replies_are_checked_for_their_type() {
    // Each command's reply as redis-server writes it, then a wrong one.
    let cases: [(&str, &[u8], &[u8]); 5] = [
        ("ping", b"+PONG\r\n", b"+OK\r\n"),
        ("set", b"+OK\r\n", b":1\r\n"),
        ("get", b"$3\r\nabc\r\n$-1\r\n", b"+OK\r\n"),
        ("incr", b":42\r\n:-3\r\n", b"$2\r\n42\r\n"),
        ("del", b":0\r\n:1\r\n", b"+OK\r\n"),
    ];
    for (mix, right, wrong) in cases {
        let replies =
            right.windows(2).filter(|w| w == b"\r\n").count() - if mix == "get" { 1 } else { 0 };
        let (mut reader, _) = requests(&resp(mix), replies + 1);
        let mut refused = Vec::new();
        reader.feed(right, &mut refused).unwrap();
        assert_eq!(refused, vec![false; replies], "{mix}");
        assert_eq!(
            reader.feed(wrong, &mut refused),
            Err(StreamError::Wrong),
            "{mix}"
        );
    }
    // An error reply is the server refusing, not a broken stream.
    let (mut reader, _) = requests(&resp("set"), 2);
    let mut refused = Vec::new();
    reader
        .feed(
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n+OK\r\n",
            &mut refused,
        )
        .unwrap();
    assert_eq!(refused, vec![true, false]);
    // A bulk whose end is not CRLF, and bytes nobody asked for.
    let (mut reader, _) = requests(&resp("get"), 1);
    assert!(reader.feed(b"$3\r\nabcd\r\n", &mut refused).is_err());
    let (mut reader, _) = requests(&resp("ping"), 1);
    assert!(reader.feed(b"+PONG\r\n+PONG\r\n", &mut refused).is_err());
}

#[test]
fn memcache_requests_and_replies_are_what_memcached_speaks() {
    let (mut reader, out) = requests(&memcache("set"), 1);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("set key:") && text.contains(" 0 0 5\r\n"),
        "{text:?}"
    );
    assert!(
        text.ends_with("\r\n") && text.len() == "set key:000000000000 0 0 5\r\n12345\r\n".len()
    );
    let mut refused = Vec::new();
    reader.feed(b"STORED\r\n", &mut refused).unwrap();
    assert_eq!(refused, [false]);

    let (mut reader, out) = requests(&memcache("get"), 3);
    let text = String::from_utf8(out).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches("get ").trim())
        .collect();
    let replies = format!(
        "VALUE {} 0 5\r\nhello\r\nEND\r\nEND\r\nSERVER_ERROR out of memory\r\n",
        keys[0]
    );
    reader.feed(replies.as_bytes(), &mut refused).unwrap();
    assert_eq!(refused, [false, false, true]);
    // A value for another key than the one asked for.
    let (mut reader, _) = requests(&memcache("get"), 1);
    let wrong = b"VALUE key:999999999999 0 1\r\nx\r\nEND\r\n";
    assert_eq!(reader.feed(wrong, &mut refused), Err(StreamError::Wrong));
    let (mut reader, _) = requests(&memcache("delete"), 2);
    reader
        .feed(b"DELETED\r\nNOT_FOUND\r\n", &mut refused)
        .unwrap();
    assert_eq!(refused, [false, false]);
}

fn generic(request: &str, framing: &str, expect: Option<&str>) -> Arc<dyn Dialect> {
    Arc::new(Generic::new(
        Template::from_arg(request).unwrap(),
        framing.parse().unwrap(),
        expect.map(|e| Template::from_arg(e).unwrap()),
        KeySpace::new(10, KeyDist::Uniform),
        (4, 4),
    ))
}

#[test]
fn generic_templates_fill_their_placeholders() {
    let (_, out) = requests(&generic("n={seq} {{x}}\\r\\n", "line", None), 3);
    assert_eq!(out, b"n=0 {x}\r\nn=1 {x}\r\nn=2 {x}\r\n");
    let (_, out) = requests(&generic("{key}|{payload}\\x00", "line", None), 1);
    assert_eq!(
        (out.len(), &out[..4], out[16], out[21]),
        (22, &b"key:"[..], b'|', 0)
    );
    assert!(Template::from_arg("{nope}").unwrap_err().contains("{seq}"));
    assert!(Template::from_arg("\\q")
        .unwrap_err()
        .contains("unknown escape"));
    assert!(Template::from_arg("open {").is_err());
}

#[test]
fn generic_framings_cut_replies_where_they_end() {
    let mut refused = Vec::new();
    let cases: [(&str, &[u8]); 6] = [
        ("line", b"one\ntwo\n"),
        ("fixed:3", b"abcdef"),
        ("prefix:2be", b"\x00\x02hi\x00\x00"),
        ("prefix:4le", b"\x01\x00\x00\x00z\x00\x00\x00\x00"),
        ("prefix:1", b"\x03abc\x00"),
        ("delim:\\r\\n\\r\\n", b"a\r\n\r\nb\r\nc\r\n\r\n"),
    ];
    for (framing, stream) in cases {
        let (mut reader, _) = requests(&generic("q", framing, None), 2);
        reader
            .feed(&stream[..stream.len() - 1], &mut refused)
            .unwrap();
        assert_eq!(
            refused.len(),
            1,
            "{framing}: the second reply is one byte short"
        );
        reader
            .feed(&stream[stream.len() - 1..], &mut refused)
            .unwrap();
        assert_eq!(refused.len(), 1, "{framing}");
    }
    for bad in [
        "lines",
        "fixed:0",
        "prefix:3",
        "prefix:2xx",
        "delim:",
        "what",
    ] {
        assert!(bad.parse::<Framing>().is_err(), "{bad}");
    }
}

#[test]
fn generic_checks_each_reply_against_its_own_request() {
    // The expected reply uses the same number as its request.
    let (mut reader, _) = requests(&generic("ping {seq}\\n", "line", Some("pong {seq}\\n")), 2);
    let mut refused = Vec::new();
    reader.feed(b"pong 0\n", &mut refused).unwrap();
    assert_eq!(
        reader.feed(b"pong 0\n", &mut refused),
        Err(StreamError::Wrong)
    );
    // Echo: the reply must be the request, payload and all.
    let (mut reader, out) = requests(&generic("{payload}", "echo", None), 2);
    reader.feed(&out, &mut refused).unwrap();
    assert_eq!(refused.len(), 2);
    let (mut reader, mut out) = requests(&generic("{payload}", "echo", None), 1);
    out[2] ^= 1;
    assert_eq!(reader.feed(&out, &mut refused), Err(StreamError::Wrong));
}

#[test]
fn a_reply_that_never_ends_is_refused_past_the_bound() {
    let (mut reader, _) = requests(&generic("q", "line", None), 1);
    let mut refused = Vec::new();
    let chunk = vec![b'a'; 8 << 20];
    let mut result = Ok(());
    for _ in 0..=MAX_REPLY >> 23 {
        result = reader.feed(&chunk, &mut refused);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(StreamError::Wrong));
}

#[test]
fn a_declared_length_past_the_bound_is_refused_at_once() {
    let mut refused = Vec::new();
    // 4 GiB announced by a length prefix, a RESP bulk and a memcached value:
    // each fails on its header, nothing is buffered.
    let (mut reader, _) = requests(&generic("q", "prefix:4be", None), 1);
    assert_eq!(
        reader.feed(b"\xff\xff\xff\xffab", &mut refused),
        Err(StreamError::Wrong)
    );
    let (mut reader, _) = requests(&resp("get"), 1);
    assert_eq!(
        reader.feed(b"$4294967296\r\nab", &mut refused),
        Err(StreamError::Wrong)
    );
    let (mut reader, out) = requests(&memcache("get"), 1);
    let key = String::from_utf8(out[4..out.len() - 2].to_vec()).unwrap();
    let head = format!("VALUE {key} 0 4294967296\r\nab");
    assert_eq!(
        reader.feed(head.as_bytes(), &mut refused),
        Err(StreamError::Wrong)
    );
}

#[test]
fn a_long_line_arriving_byte_by_byte_is_read_whole() {
    // The search resumes where the last one stopped, delimiters that
    // straddle two reads included.
    for framing in ["line", "delim:\\r\\n\\r\\n"] {
        let (mut reader, _) = requests(&generic("q", framing, None), 2);
        let mut refused = Vec::new();
        let mut stream = vec![b'x'; 3000];
        stream.extend_from_slice(if framing == "line" {
            b"\n"
        } else {
            b"\r\n\r\n"
        });
        let one = stream.clone();
        stream.extend_from_slice(&one);
        let mut done = 0;
        for byte in stream.chunks(1) {
            reader.feed(byte, &mut refused).unwrap();
            done += refused.len();
        }
        assert_eq!(done, 2, "{framing}");
    }
}

proptest! {
    /// However a socket cuts the stream, the same replies complete with the
    /// same verdicts as when it all arrives at once.
    #[test]
    fn cuts_change_nothing(cuts in proptest::collection::vec(any::<usize>(), 0..12), which in 0usize..4) {
        let (dialect, stream): (Arc<dyn Dialect>, Vec<u8>) = match which {
            0 => (resp("get"), b"$3\r\nabc\r\n$-1\r\n-ERR x\r\n$10\r\n0123456789\r\n".to_vec()),
            1 => (resp("incr"), b":1\r\n:22\r\n-OOM no\r\n:333\r\n".to_vec()),
            2 => (memcache("get"), Vec::new()),
            _ => (generic("q", "delim:\\r\\n", None), b"a\r\nbb\r\n\r\nccc\r\n".to_vec()),
        };
        let (mut whole, _) = requests(&dialect, 4);
        let stream = if which == 2 {
            // Values for the keys the requests named.
            let (_, out) = requests(&dialect, 4);
            let text = String::from_utf8(out).unwrap();
            let mut s = String::new();
            for (i, line) in text.lines().enumerate() {
                let key = line.trim_start_matches("get ");
                match i % 3 {
                    0 => s += &format!("VALUE {key} 7 {}\r\n{}\r\nEND\r\n", i + 1, "v".repeat(i + 1)),
                    1 => s += "END\r\n",
                    _ => s += "SERVER_ERROR busy\r\n",
                }
            }
            s.into_bytes()
        } else {
            stream
        };
        let expected = feed_cut(&mut whole, &stream, &[]);
        let (mut cut, _) = requests(&dialect, 4);
        prop_assert_eq!(feed_cut(&mut cut, &stream, &cuts), expected.clone());
        prop_assert_eq!(expected.map(|r| r.len()), Ok(4));
    }
}
