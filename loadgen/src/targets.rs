//! HTTP requests for a load run beyond a plain GET: a method, headers and
//! a body from a file (`--method`, `--header`, `--body-file`), or a
//! targets file of several requests used in turn (`--targets`, in
//! vegeta's format):
//!
//! ```text
//! GET http://127.0.0.1:8080/users/1
//! Accept: application/json
//!
//! POST http://127.0.0.1:8080/users
//! Content-Type: application/json
//! @new-user.json
//! ```
//!
//! Targets are separated by blank lines; `@FILE` names the body, relative
//! to the targets file. Every target must name the same server: one run
//! loads one server over one set of connections.

use std::path::Path;

use anyhow::{bail, Context};

use crate::http::Url;

/// One request of an HTTP load run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The method (`GET`, `POST`, ...).
    pub method: String,
    /// Where it goes.
    pub url: Url,
    /// Headers beyond `Host`, `User-Agent`, `Connection` and
    /// `Content-Length`, which loadgen writes itself.
    pub headers: Vec<(String, String)>,
    /// The body (empty: none).
    pub body: Vec<u8>,
}

impl Target {
    /// A target with no headers or body yet.
    pub fn new(method: &str, url: Url) -> anyhow::Result<Self> {
        check_method(method)?;
        Ok(Self {
            method: method.to_string(),
            url,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    /// Adds a `Name: value` header.
    pub fn add_header(&mut self, line: &str) -> anyhow::Result<()> {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("header {line:?} is not Name: value"))?;
        let name = name.trim();
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            bail!("header {line:?}: {name:?} is not a header name");
        }
        if value.contains(['\r', '\n']) {
            bail!("header {line:?}: a value cannot hold a line break");
        }
        let owned = ["host", "content-length", "connection", "transfer-encoding"];
        if owned.contains(&name.to_ascii_lowercase().as_str()) {
            bail!("header {name}: loadgen writes it itself");
        }
        self.headers
            .push((name.to_string(), value.trim().to_string()));
        Ok(())
    }

    /// The request's bytes, keep-alive.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringcore-loadgen/{}\r\nConnection: keep-alive\r\n",
            self.method,
            self.url.path,
            self.url.host_header(),
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in &self.headers {
            head += &format!("{name}: {value}\r\n");
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            head += &format!("Content-Length: {}\r\n", self.body.len());
        }
        head += "\r\n";
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A method loadgen can load with: an upper-case token, and not `HEAD` or
/// `CONNECT`, whose responses do not frame like the others.
fn check_method(method: &str) -> anyhow::Result<()> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        bail!("{method:?} is not an HTTP method (GET, POST, PUT, DELETE, PATCH, OPTIONS)");
    }
    if method == "HEAD" || method == "CONNECT" {
        bail!("{method} is not supported in a load run: its responses carry no body to frame");
    }
    Ok(())
}

/// Reads a targets file (`path`, for relative body files and errors).
pub fn parse_file(path: &Path) -> anyhow::Result<Vec<Target>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --targets {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).with_context(|| format!("in --targets {}", path.display()))
}

/// Parses targets from `text`, body files relative to `base`.
pub fn parse(text: &str, base: &Path) -> anyhow::Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    let mut current: Option<Target> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        let at = || format!("line {}", n + 1);
        if line.trim().is_empty() {
            targets.extend(current.take());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        match &mut current {
            None => {
                let (method, url) = line
                    .split_once(' ')
                    .with_context(|| format!("{}: {line:?} is not METHOD URL", at()))?;
                let url = Url::parse(url.trim()).with_context(at)?;
                current = Some(Target::new(method, url).with_context(at)?);
            }
            Some(target) => match line.strip_prefix('@') {
                Some(file) => {
                    let file = base.join(file.trim());
                    target.body = std::fs::read(&file).with_context(|| {
                        format!("{}: reading the body {}", at(), file.display())
                    })?;
                }
                None => target.add_header(line).with_context(at)?,
            },
        }
    }
    targets.extend(current);
    let Some(first) = targets.first() else {
        bail!("no target: give METHOD URL lines");
    };
    let (host, port) = (first.url.host.clone(), first.url.port);
    if let Some(other) = targets
        .iter()
        .find(|t| t.url.host != host || t.url.port != port)
    {
        bail!(
            "the targets name two servers ({} and {}): one run loads one server",
            first.url.host_header(),
            other.url.host_header()
        );
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_file_reads_as_vegeta_writes_it() {
        let dir = std::env::temp_dir().join(format!("ringcore-targets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("body.json"), b"{\"name\":\"x\"}").unwrap();
        let text = "GET http://127.0.0.1:8080/a\nAccept: text/plain\n\n# a comment\nPOST http://127.0.0.1:8080/b\nContent-Type: application/json\n@body.json\n";
        let targets = parse(text, &dir).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(
            String::from_utf8(targets[0].encode()).unwrap(),
            format!(
                "GET /a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ringcore-loadgen/{}\r\nConnection: keep-alive\r\nAccept: text/plain\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
        );
        let post = String::from_utf8(targets[1].encode()).unwrap();
        assert!(post.starts_with("POST /b HTTP/1.1\r\n"), "{post}");
        assert!(
            post.contains("Content-Type: application/json\r\n"),
            "{post}"
        );
        assert!(
            post.ends_with("Content-Length: 12\r\n\r\n{\"name\":\"x\"}"),
            "{post}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_targets_say_where() {
        let here = Path::new(".");
        let err = |text: &str| format!("{:#}", parse(text, here).unwrap_err());
        assert!(err("GET http://a:1/\n\nGET http://b:1/\n").contains("two servers"));
        assert!(err("get http://a:1/\n").contains("not an HTTP method"));
        assert!(err("HEAD http://a:1/\n").contains("not supported"));
        assert!(err("GET http://a:1/\nBad Header\n").contains("line 2"));
        assert!(err("GET http://a:1/\nHost: x\n").contains("writes it itself"));
        assert!(err("GET http://a:1/\n@missing.bin\n").contains("reading the body"));
        assert!(err("# nothing\n").contains("no target"));
        assert!(err("GET\n").contains("METHOD URL"));
    }
}
