//! The request side of ringcore's `--metrics` endpoint: which answer a
//! request head gets. Pure, so the endpoint's only input surface is
//! tested and fuzzed without a socket (the endpoint itself, with its
//! deadline and its bound on requests answered at once, is in the engine).

/// The largest request head the endpoint reads; a longer one gets 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the endpoint answers to what it has read of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRequest {
    /// The head is not complete yet: read more.
    Incomplete,
    /// `GET /metrics` (or `HEAD`): the counters.
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    NotAllowed,
    /// Not an HTTP request head: 400.
    Malformed,
    /// More than [`MAX_HEAD`] bytes without a complete head, or too many
    /// headers: 431.
    TooLarge,
}

impl MetricsRequest {
    /// The status line's code and reason, once the head is complete.
    pub fn status(self) -> Option<&'static str> {
        Some(match self {
            MetricsRequest::Incomplete => return None,
            MetricsRequest::Metrics => "200 OK",
            MetricsRequest::NotFound => "404 Not Found",
            MetricsRequest::NotAllowed => "405 Method Not Allowed",
            MetricsRequest::Malformed => "400 Bad Request",
            MetricsRequest::TooLarge => "431 Request Header Fields Too Large",
        })
    }
}

/// Judges the bytes read so far of a request to the endpoint. A verdict
/// other than `Incomplete` never changes as more bytes arrive, so the
/// endpoint answers at the first one.
pub fn metrics_request(read: &[u8]) -> MetricsRequest {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let head = &read[..read.len().min(MAX_HEAD)];
    match request.parse(head) {
        Ok(httparse::Status::Partial) if read.len() >= MAX_HEAD => MetricsRequest::TooLarge,
        Ok(httparse::Status::Partial) => MetricsRequest::Incomplete,
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some("GET" | "HEAD"), Some(path)) if path_of(path) == "/metrics" => {
                MetricsRequest::Metrics
            }
            (Some("GET" | "HEAD"), _) => MetricsRequest::NotFound,
            _ => MetricsRequest::NotAllowed,
        },
        Err(httparse::Error::TooManyHeaders) => MetricsRequest::TooLarge,
        Err(_) => MetricsRequest::Malformed,
    }
}

/// The path without its query (Prometheus may add `?name[]=...`).
fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricsRequest::*;

    #[test]
    fn heads_get_their_answers() {
        for (head, verdict) in [
            (&b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..], Metrics),
            (b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n", Metrics),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", NotAllowed),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Incomplete),
            (b"GET /metr", Incomplete),
            (b"", Incomplete),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Malformed),
            (b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", Malformed),
        ] {
            assert_eq!(
                metrics_request(head),
                verdict,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_head_that_never_ends_is_cut_off() {
        let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while head.len() < MAX_HEAD {
            head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(metrics_request(&head), TooLarge);
        let many: Vec<u8> = [
            &b"GET /metrics HTTP/1.1\r\n"[..],
            &b"A: b\r\n".repeat(40),
            b"\r\n",
        ]
        .concat();
        assert_eq!(metrics_request(&many), TooLarge);
    }

    #[test]
    fn a_verdict_stands_as_more_bytes_arrive() {
        let input = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let whole = metrics_request(input);
        assert_eq!(whole, Metrics);
        for cut in 0..input.len() {
            let verdict = metrics_request(&input[..cut]);
            assert!(
                verdict == Incomplete || verdict == whole,
                "at {cut}: {verdict:?}"
            );
        }
    }
}
