//! A server started the moment the previous one exits binds its ports every
//! time, whatever the two models, and once a server has exited nothing of
//! it accepts any more: a worker cancels and reaps every operation before
//! it closes its sockets, so no ring teardown keeps a listener alive.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use common::{connect, Server};

const MODELS: [&str; 5] = ["uring", "epoll", "threads", "tokio", "tokio-uring"];
const RUNS: usize = 100;

/// A port nothing listens on now (the kernel's pick, then released).
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// A short loaded run: several connections, many round trips, some left
/// with replies in flight when the signal comes.
fn load(addr: SocketAddr) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for i in 0..8u8 {
        let mut s = connect(addr);
        for _ in 0..20 {
            s.write_all(&[i; 512]).unwrap();
            let mut back = [0u8; 512];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, [i; 512]);
        }
        s.write_all(&[i; 4096]).unwrap(); // answered during shutdown
        open.push(s);
    }
    open
}

#[test]
fn a_server_restarted_at_once_always_binds_and_a_stopped_one_never_accepts() {
    let port = free_port();
    let spec = format!("tcp:{port}=echo");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for run in 0..RUNS {
        // Every ordered pair of models follows each other somewhere in the runs.
        let io = MODELS[(run + run / MODELS.len()) % MODELS.len()];
        let server = Server::start(&["--io", io, "--threads", "1", "--serve", &spec]);
        let clients = load(addr);
        if run % 2 == 0 {
            // An idle server: it exits at once, while its accept is armed.
            for (i, mut s) in clients.into_iter().enumerate() {
                let mut back = [0u8; 4096];
                s.read_exact(&mut back).unwrap();
                assert!(back.iter().all(|&b| b == i as u8), "run {run} ({io})");
            }
            server.wait_counter("connections_closed", |c| c == 8);
            server.signal(libc::SIGTERM);
        } else {
            // Replies in flight: answered during shutdown, then the close.
            server.signal(libc::SIGTERM);
            for (i, mut s) in clients.into_iter().enumerate() {
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(
                    rest.len() == 4096 && rest.iter().all(|&b| b == i as u8),
                    "run {run} ({io}): {} bytes answered of the 4096 in flight",
                    rest.len()
                );
            }
        }
        let (status, _) = server.wait_exit();
        assert_eq!(status.code(), Some(0), "run {run} ({io})");
        assert!(
            TcpStream::connect(addr).is_err(),
            "run {run} ({io}): port {port} still accepts after the process exited"
        );
    }
}
