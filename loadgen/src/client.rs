//! `loadgen client tcp|udp ADDR`: the chapter's interactive clients grown up.
//! Reads lines from the terminal (or a `--script` file, printing a
//! transcript), sends each, and prints what comes back: works against the
//! bot, echo, reverse and ok services.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Replies are complete once nothing more arrived for this long.
const QUIET: Duration = Duration::from_millis(250);

/// The lines to send: a script file's, or the terminal's.
fn input_lines(
    script: Option<&Path>,
) -> anyhow::Result<Box<dyn Iterator<Item = io::Result<String>>>> {
    Ok(match script {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("opening the script {}", path.display()))?;
            Box::new(io::BufReader::new(file).lines())
        }
        None => Box::new(io::stdin().lock().lines()),
    })
}

/// Talks to a TCP service until the input ends (then half-closes and prints
/// the rest) or the server closes.
pub fn tcp(addr: SocketAddr, script: Option<&Path>, reply_timeout: Duration) -> anyhow::Result<()> {
    let stream = TcpStream::connect_timeout(&addr, reply_timeout)
        .map_err(|e| crate::tcp::connect_error(addr, &e))?;
    let received = Arc::new(AtomicU64::new(0));
    let mut reader = stream.try_clone()?;
    let counter = received.clone();
    // Whatever the server says, whenever it says it, goes to the screen.
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut out = io::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            counter.fetch_add(n as u64, Relaxed);
        }
    });
    let transcript = script.is_some();
    let mut writer = stream;
    if transcript {
        wait_quiet(&received, 0, reply_timeout); // a greeting, if the service speaks first
    }
    for line in input_lines(script)? {
        let line = line.context("reading input")?;
        let before = received.load(Relaxed);
        if transcript {
            println!("> {line}");
        }
        if writer.write_all(format!("{line}\n").as_bytes()).is_err() {
            break; // the server closed
        }
        if transcript {
            wait_quiet(&received, before, reply_timeout);
        }
    }
    let _ = writer.shutdown(Shutdown::Write);
    let _ = printer.join();
    Ok(())
}

/// Waits until more than `since` bytes arrived and then nothing for
/// [`QUIET`], or `timeout` passed without anything.
fn wait_quiet(received: &AtomicU64, since: u64, timeout: Duration) {
    let start = Instant::now();
    let mut last = since;
    let mut last_change = start;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = received.load(Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        let heard = last != since;
        if (heard && last_change.elapsed() >= QUIET) || (!heard && start.elapsed() >= timeout) {
            return;
        }
    }
}

/// Sends each line as one datagram and prints the reply datagrams.
pub fn udp(addr: SocketAddr, script: Option<&Path>, reply_timeout: Duration) -> anyhow::Result<()> {
    let bind = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(bind).context("creating a UDP socket")?;
    socket
        .connect(addr)
        .with_context(|| format!("cannot reach UDP {addr}"))?;
    let transcript = script.is_some();
    let mut buf = vec![0u8; 65_536];
    // A server that asks new addresses to prove they receive (ringcore's
    // bot) is answered once, on its own.
    let mut proved = false;
    for line in input_lines(script)? {
        let line = line.context("reading input")?;
        if transcript {
            println!("> {line}");
        }
        socket
            .send(line.as_bytes())
            .with_context(|| format!("sending to UDP {addr}"))?;
        let mut heard = false;
        socket.set_read_timeout(Some(reply_timeout))?;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    heard = true;
                    let text = String::from_utf8_lossy(&buf[..n]);
                    print!("{text}");
                    if !text.ends_with('\n') {
                        println!();
                    }
                    io::stdout().flush()?;
                    if let Some(code) = (!proved)
                        .then(|| protocols::cookie::code_in_prompt(&buf[..n]))
                        .flatten()
                    {
                        proved = true;
                        let code = String::from_utf8_lossy(&code).into_owned();
                        eprintln!("(sending {code} back: the server asks a new address to prove it receives before it says more)");
                        socket
                            .send(code.as_bytes())
                            .with_context(|| format!("sending to UDP {addr}"))?;
                        socket.set_read_timeout(Some(reply_timeout))?;
                        continue;
                    }
                    // A reply may come in several datagrams.
                    socket.set_read_timeout(Some(QUIET))?;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    bail!("nothing listens on UDP {addr} (ICMP port unreachable): start ringcore (`cargo run --release`) or check the address");
                }
                Err(_) => break, // quiet: this reply is complete (or never came)
            }
        }
        if !heard {
            eprintln!("(no reply from {addr} within {reply_timeout:?}; UDP gives no guarantee, try again)");
        }
    }
    Ok(())
}
