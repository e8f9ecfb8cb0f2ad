//! HTTP load beyond GET: a method, headers and a body from a file, and a
//! targets file's requests in turn, checked by what a server written here
//! received. (nginx takes the same in interop.rs.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{assert_fails_with, loadgen_json, num, temp_path};

/// What the server saw of one request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 server that records every request and answers
/// each `200 ok`.
fn recording_server() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split(' ');
                    let (method, path) = (
                        parts.next().unwrap().to_string(),
                        parts.next().unwrap().to_string(),
                    );
                    let mut headers = Vec::new();
                    let mut length = 0;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end().to_string();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        headers.push(h);
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    log.lock().unwrap().push(Seen {
                        method,
                        path,
                        headers,
                        body,
                    });
                    if writer
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn a_post_carries_its_headers_and_its_body_from_a_file() {
    let (addr, seen) = recording_server();
    let body = temp_path("post.json");
    std::fs::write(&body, b"{\"user\":\"ringcore\",\"n\":1}").unwrap();
    let r = loadgen_json(&[
        "--http",
        &format!("http://{addr}/users"),
        "--method",
        "POST",
        "--header",
        "Content-Type: application/json",
        "--header",
        "X-Trace: 7",
        "--body-file",
        body.to_str().unwrap(),
        "--connections",
        "3",
        "--pipeline",
        "4",
        "--requests",
        "300",
    ]);
    assert_eq!(
        (num(&r, "completed"), num(&r, "errors.mismatch")),
        (300.0, 0.0),
        "{r}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 300);
    for s in seen.iter() {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/users"));
        assert_eq!(s.body, std::fs::read(&body).unwrap());
        assert!(
            s.headers
                .contains(&"Content-Type: application/json".to_string()),
            "{s:?}"
        );
        assert!(s.headers.contains(&"X-Trace: 7".to_string()), "{s:?}");
    }
}

#[test]
fn a_targets_file_sends_its_requests_in_turn() {
    let (addr, seen) = recording_server();
    std::fs::write(temp_path("item.bin"), vec![7u8; 5000]).unwrap();
    let targets = temp_path("targets.txt");
    std::fs::write(
        &targets,
        format!("GET http://{addr}/a\n\nPUT http://{addr}/items/1\nX-Kind: item\n@item.bin\n\nDELETE http://{addr}/items/1\n"),
    )
    .unwrap();
    let r = loadgen_json(&[
        "--targets",
        targets.to_str().unwrap(),
        "--connections",
        "1",
        "--requests",
        "90",
    ]);
    assert_eq!(num(&r, "completed"), 90.0, "{r}");
    let seen = seen.lock().unwrap();
    let order: Vec<(&str, &str, usize)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.body.len()))
        .collect();
    let cycle = [
        ("GET", "/a", 0),
        ("PUT", "/items/1", 5000),
        ("DELETE", "/items/1", 0),
    ];
    assert_eq!(
        order,
        cycle.iter().cycle().take(90).cloned().collect::<Vec<_>>()
    );
    assert!(seen[1].body.iter().all(|&b| b == 7));
}

#[test]
fn bad_http_requests_are_refused_before_the_run() {
    let (addr, _) = recording_server();
    let url = format!("http://{addr}/");
    assert_fails_with(&["--http", &url, "--method", "POST"], "give --connections");
    assert_fails_with(
        &["--http", &url, "--connections", "1", "--method", "HEAD"],
        "not supported",
    );
    assert_fails_with(
        &["--http", &url, "--connections", "1", "--header", "Host: x"],
        "writes it itself",
    );
    assert_fails_with(
        &[
            "--http",
            &url,
            "--connections",
            "1",
            "--body-file",
            "/nonexistent/b",
        ],
        "reading --body-file",
    );
    let targets = temp_path("two-servers.txt");
    std::fs::write(
        &targets,
        "GET http://127.0.0.1:1/\n\nGET http://127.0.0.1:2/\n",
    )
    .unwrap();
    assert_fails_with(&["--targets", targets.to_str().unwrap()], "two servers");
}
