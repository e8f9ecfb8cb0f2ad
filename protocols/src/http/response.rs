//! Reading HTTP/1.1 responses from a byte stream, incrementally: whatever
//! the framing (Content-Length, chunked, or delimited by the close), and
//! several back to back (pipelining). The client side of the service above,
//! used by loadgen.

/// One complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Bytes of the status line and headers.
    pub head_bytes: usize,
    /// Bytes of the body (decoded, without chunk framing).
    pub body_bytes: u64,
    /// The `Location` header, for redirects.
    pub location: Option<String>,
    /// How the body was framed.
    pub framing: Framing,
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes.
    Close,
    /// No body (1xx, 204, 304).
    Empty,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not HTTP at all, or broken framing.
    #[error("malformed response ({reason}); received so far: {received:?}")]
    Malformed {
        /// What was wrong.
        reason: String,
        /// The first bytes received, for the report.
        received: String,
    },
    /// The server closed before the response was complete.
    #[error("truncated response: {0}")]
    Truncated(String),
}

const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    Head,
    Body { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkEnd,
    Trailers,
    UntilClose,
}

/// Reads responses from a stream fed in pieces.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    line: Vec<u8>,
    current: Option<Response>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseReader {
    /// Ready for the first response.
    pub fn new() -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            current: None,
        }
    }

    /// True between responses (nothing half-read).
    pub fn idle(&self) -> bool {
        matches!(self.state, State::Head) && self.line.is_empty()
    }

    /// Feeds bytes; every response they complete is appended to `done`.
    pub fn feed(&mut self, mut data: &[u8], done: &mut Vec<Response>) -> Result<(), ResponseError> {
        while !data.is_empty() {
            match self.state {
                State::Head => {
                    // Collect up to the blank line that ends the head.
                    let before = self.line.len();
                    self.line.extend_from_slice(data);
                    let search_from = before.saturating_sub(3);
                    let Some(end) = self.line[search_from..]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                    else {
                        if self.line.len() > MAX_HEAD {
                            return Err(malformed("response head over 64 KiB", &self.line));
                        }
                        return Ok(());
                    };
                    let head_len = search_from + end + 4;
                    if head_len > MAX_HEAD {
                        // The same verdict however the head was cut.
                        return Err(malformed("response head over 64 KiB", &self.line));
                    }
                    let consumed = head_len - before;
                    data = &data[consumed..];
                    let head = std::mem::take(&mut self.line);
                    let response = parse_head(&head[..head_len])?;
                    self.start_body(response, done);
                }
                State::Body { remaining } => {
                    let n = (remaining as usize).min(data.len());
                    self.add_body(n as u64);
                    data = &data[n..];
                    self.state = State::Body {
                        remaining: remaining - n as u64,
                    };
                    if remaining == n as u64 {
                        self.finish_one(done);
                    }
                }
                State::UntilClose => {
                    self.add_body(data.len() as u64);
                    return Ok(());
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(pos) = data.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(data);
                        if self.line.len() > 1024 {
                            return Err(malformed("a chunk line over 1 KiB", &self.line));
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&data[..=pos]);
                    data = &data[pos + 1..];
                    if self.line.len() > 1024 {
                        // The same verdict however the line was cut.
                        return Err(malformed("a chunk line over 1 KiB", &self.line));
                    }
                    let line = std::mem::take(&mut self.line);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\r', '\n']);
                    match self.state {
                        State::ChunkSize => {
                            let size = text.split(';').next().unwrap_or("").trim();
                            let size = u64::from_str_radix(size, 16)
                                .map_err(|_| malformed("a bad chunk size", &line))?;
                            self.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData { remaining: size }
                            };
                        }
                        State::ChunkEnd => {
                            if !text.is_empty() {
                                return Err(malformed("no CRLF after a chunk", &line));
                            }
                            self.state = State::ChunkSize;
                        }
                        _ => {
                            if text.is_empty() {
                                self.finish_one(done);
                            }
                        }
                    }
                }
                State::ChunkData { remaining } => {
                    let n = (remaining as usize).min(data.len());
                    self.add_body(n as u64);
                    data = &data[n..];
                    self.state = if remaining == n as u64 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData {
                            remaining: remaining - n as u64,
                        }
                    };
                }
            }
        }
        Ok(())
    }

    /// The server closed: completes a close-delimited body, or reports what
    /// was cut short.
    pub fn finish(&mut self, done: &mut Vec<Response>) -> Result<(), ResponseError> {
        match self.state {
            State::Head if self.line.is_empty() => Ok(()),
            State::Head => Err(ResponseError::Truncated(format!(
                "the connection closed inside a response head after {} bytes: {:?}",
                self.line.len(),
                preview(&self.line)
            ))),
            State::UntilClose => {
                self.finish_one(done);
                Ok(())
            }
            State::Body { remaining } => {
                let got = self.current.as_ref().map_or(0, |r| r.body_bytes);
                Err(ResponseError::Truncated(format!(
                    "the body ended after {got} of {} bytes",
                    got + remaining
                )))
            }
            _ => Err(ResponseError::Truncated(
                "the connection closed inside a chunked body".into(),
            )),
        }
    }

    fn start_body(&mut self, response: Response, done: &mut Vec<Response>) {
        self.state = match response.framing {
            Framing::Length(0) | Framing::Empty => State::Head,
            Framing::Length(n) => State::Body { remaining: n },
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::UntilClose,
        };
        self.current = Some(response);
        if matches!(self.state, State::Head) {
            self.finish_one(done);
        }
    }

    fn add_body(&mut self, n: u64) {
        if let Some(r) = self.current.as_mut() {
            r.body_bytes += n;
        }
    }

    fn finish_one(&mut self, done: &mut Vec<Response>) {
        self.state = State::Head;
        if let Some(r) = self.current.take() {
            done.push(r);
        }
    }
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}

fn malformed(reason: &str, received: &[u8]) -> ResponseError {
    ResponseError::Malformed {
        reason: reason.to_string(),
        received: preview(received),
    }
}

fn parse_head(head: &[u8]) -> Result<Response, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("an incomplete head", head)),
        Err(e) => return Err(malformed(&e.to_string(), head)),
    }
    let status = parsed.code.unwrap_or(0);
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        Framing::Chunked
    } else if let Some(len) = header("content-length") {
        Framing::Length(
            len.parse()
                .map_err(|_| malformed("a bad Content-Length", head))?,
        )
    } else {
        Framing::Close
    };
    Ok(Response {
        status,
        head_bytes: head.len(),
        body_bytes: 0,
        location: header("location"),
        framing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]], close: bool) -> Result<Vec<Response>, ResponseError> {
        let mut r = ResponseReader::new();
        let mut done = Vec::new();
        for c in chunks {
            r.feed(c, &mut done)?;
        }
        if close {
            r.finish(&mut done)?;
        }
        Ok(done)
    }

    #[test]
    fn every_framing_back_to_back_and_split_anywhere() {
        let stream: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: y\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 301 Moved\r\nLocation: /there\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil the end";
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            let done = read_all(&[a, b], true).unwrap();
            let summary: Vec<(u16, u64)> = done.iter().map(|r| (r.status, r.body_bytes)).collect();
            assert_eq!(
                summary,
                [(200, 5), (200, 5), (204, 0), (301, 0), (200, 13)],
                "split at {split}"
            );
            assert_eq!(done[3].location.as_deref(), Some("/there"));
            assert_eq!(done[1].framing, Framing::Chunked);
            assert_eq!(done[4].framing, Framing::Close);
        }
    }

    #[test]
    fn an_overlong_line_gets_one_verdict_however_it_is_cut() {
        // Found by the fuzzer: a chunk's trailing line over 1 KiB was "over
        // 1 KiB" when cut before its newline and "no CRLF" when whole.
        let mut stream =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r".to_vec();
        stream.extend_from_slice(&[0x80; 1100]);
        stream.push(b'\n');
        let whole = read_all(&[&stream], false).unwrap_err().to_string();
        for cut in [60, 500, stream.len() - 1] {
            let (a, b) = stream.split_at(cut);
            let split = read_all(&[a, b], false).unwrap_err().to_string();
            assert_eq!(split, whole, "cut at {cut}");
        }
        assert!(whole.contains("over 1 KiB"), "{whole}");
    }

    #[test]
    fn truncation_and_garbage_are_reported_with_what_came() {
        let err =
            read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated response: the body ended after 3 of 10 bytes"
        );
        let err = read_all(&[b"HTTP/1.1 200 OK\r\nConte"], true).unwrap_err();
        assert!(
            err.to_string()
                .contains("inside a response head after 22 bytes"),
            "{err}"
        );
        let err = read_all(&[b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], false).unwrap_err();
        assert!(
            err.to_string().contains("malformed") && err.to_string().contains("SSH-2.0"),
            "{err}"
        );
        let err = read_all(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad chunk size"), "{err}");
    }
}
