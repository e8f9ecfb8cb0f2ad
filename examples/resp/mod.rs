//! Just enough RESP (the Redis protocol) for the examples: reading a
//! command, inline or as an array of bulk strings, and writing replies.

/// A command's words, and the bytes after it.
pub type Command<'a> = (Vec<&'a [u8]>, &'a [u8]);

/// Splits the line at the front of `input` from what follows it.
fn line(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = input.windows(2).position(|w| w == b"\r\n")?;
    Some((&input[..end], &input[end + 2..]))
}

fn number(digits: Option<&[u8]>) -> Result<usize, ()> {
    let text = std::str::from_utf8(digits.ok_or(())?).map_err(|_| ())?;
    text.parse().map_err(|_| ())
}

/// The command at the front of `input` and the bytes after it: `Ok(None)`
/// until it is whole (the engine holds the bytes meanwhile), `Err` if it
/// is not RESP.
pub fn command(input: &[u8]) -> Result<Option<Command<'_>>, ()> {
    let Some((first, mut rest)) = line(input) else {
        return Ok(None);
    };
    if first.first() != Some(&b'*') {
        let words = first.split(|&b| b == b' ').filter(|w| !w.is_empty());
        return Ok(Some((words.collect(), rest))); // an inline command
    }
    let mut args = Vec::new();
    for _ in 0..number(first.get(1..))? {
        let Some((head, body)) = line(rest) else {
            return Ok(None);
        };
        let len = number(head.strip_prefix(b"$"))?;
        let Some(arg) = body.get(..len).filter(|_| body.len() >= len + 2) else {
            return Ok(None);
        };
        args.push(arg);
        rest = &body[len + 2..];
    }
    Ok(Some((args, rest)))
}

/// Writes `text` as a bulk string.
pub fn bulk(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", text.len()).as_bytes());
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// True when `word` is the command `name`, in any case.
pub fn is(word: &[u8], name: &str) -> bool {
    word.eq_ignore_ascii_case(name.as_bytes())
}

/// Answers `CONFIG GET key...` (which redis-benchmark sends first) with
/// each key and an empty value: nothing to tell.
pub fn config_get(out: &mut Vec<u8>, keys: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", keys.len() * 2).as_bytes());
    for key in keys {
        bulk(out, key);
        bulk(out, b"");
    }
}
