//! The engine's `http` service through real sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::{connect, Server};
use protocols::http::body_byte;

/// Reads one response: status and body (Content-Length or chunked).
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .expect("a status line")
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else if get("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    }
    (status, headers, body)
}

fn pattern_ok(body: &[u8]) -> bool {
    body.iter()
        .enumerate()
        .all(|(i, &b)| b == body_byte(i as u64))
}

#[test]
fn pipelined_requests_are_answered_in_order_and_heads_may_trickle_in() {
    let server = Server::start(&["--serve", "tcp:0=http"]);
    let mut s = connect(server.addr("tcp", "http"));
    s.write_all(b"GET /bytes/5 HTTP/1.1\r\nHost: t\r\n\r\nGET /chunked/100000 HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (a, _, body_a) = read_response(&mut r);
    let (b, _, body_b) = read_response(&mut r);
    let (c, _, body_c) = read_response(&mut r);
    assert_eq!((a, b, c), (200, 200, 200));
    assert_eq!(body_a, b"abcde");
    assert_eq!(body_b.len(), 100_000);
    assert!(pattern_ok(&body_b));
    assert!(String::from_utf8(body_c).unwrap().contains("ringcore"));
    // A head sent one byte at a time, on the same keep-alive connection.
    for byte in b"GET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\n" {
        s.write_all(&[*byte]).unwrap();
        s.flush().unwrap();
    }
    assert_eq!(read_response(&mut r).2, b"abc");
}

#[test]
fn every_bad_request_gets_its_status() {
    let server = Server::start(&["--serve", "tcp:0=http", "--http-header-timeout", "300ms"]);
    let addr = server.addr("tcp", "http");
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(vec![b'x'; 10_000]);
    huge.extend(b"\r\n\r\n");
    let cases: Vec<(Vec<u8>, u16, bool)> = vec![
        (b"DELETE / HTTP/1.1\r\n\r\n".to_vec(), 405, true),
        (b"GET / HTTP/1.1 trailing\r\n\r\n".to_vec(), 400, true),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            400,
            true,
        ),
        (huge, 431, true),
        (b"GET /missing HTTP/1.1\r\n\r\n".to_vec(), 404, false),
        (b"GET /bytes/x HTTP/1.1\r\n\r\n".to_vec(), 400, false),
    ];
    for (request, status, closes) in cases {
        let mut s = connect(addr);
        s.write_all(&request).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let (got, headers, _) = read_response(&mut r);
        assert_eq!(
            got,
            status,
            "{}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
        let connection = headers
            .iter()
            .find(|(k, _)| k == "connection")
            .map(|(_, v)| v.as_str());
        assert_eq!(connection == Some("close"), closes);
        if closes {
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "closed after the error");
        }
    }
    // A client that never finishes its head: 408, then the server closes.
    let mut slow = connect(addr);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: ").unwrap();
    let mut r = BufReader::new(slow.try_clone().unwrap());
    let (status, _, _) = read_response(&mut r);
    assert_eq!(status, 408);
    assert!(server.counter("idle_timeouts") >= 1);
}

#[test]
fn a_thousand_keep_alive_connections_are_served() {
    let server = Server::start(&["--serve", "tcp:0=http", "--threads", "2"]);
    let addr = server.addr("tcp", "http");
    let mut conns: Vec<BufReader<TcpStream>> =
        (0..1000).map(|_| BufReader::new(connect(addr))).collect();
    for round in 0..2 {
        for (i, c) in conns.iter_mut().enumerate() {
            let n = 1 + (i + round) % 300;
            c.get_mut()
                .write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let (status, _, body) = read_response(c);
            assert_eq!((status, body.len()), (200, 1 + (i + round) % 300));
            assert!(pattern_ok(&body));
        }
    }
    assert_eq!(
        server.counter("connections_accepted"),
        1000,
        "every request reused its connection"
    );
}

#[test]
fn a_huge_body_streams_without_growing_the_server() {
    const SIZE: u64 = 512 << 20;
    let server = Server::start(&["--serve", "tcp:0=http"]);
    let mut s = connect(server.addr("tcp", "http"));
    s.write_all(
        format!("GET /bytes/{SIZE} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut head = String::new();
    while head != "\r\n" {
        head.clear();
        r.read_line(&mut head).unwrap();
    }
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == body_byte(received + i as u64)));
        received += n as u64;
    }
    assert_eq!(received, SIZE);
    // The peak, not the end: a body built whole would have shown here.
    let peak = server.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "server peak RSS {peak} KiB for a 512 MiB body"
    );
}
