//! A reply train the path refuses as GSO is resent one datagram at a time,
//! and only that socket stops sending trains. The refusal is real: in a
//! network namespace of the test's own whose loopback has a 1500-byte MTU,
//! the `ok` service answers a train of 1472-byte datagrams (the most a
//! 1500-byte MTU carries) with 1477-byte replies, a train the kernel
//! refuses (EMSGSIZE: a segment over the path MTU).

mod common;

use std::net::UdpSocket;
use std::process::Command;

use common::{gso_client, Lack, Server};

/// Moves this test's thread (and the processes it starts) into a new
/// network namespace whose loopback is up with a 1500-byte MTU; false
/// where that cannot be done (not root).
fn enter_small_mtu_namespace() -> bool {
    // SAFETY: unshare(2) moves only the calling thread; libtest runs each
    // test on a thread of its own that ends with it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        common::skip(
            Lack::Root,
            format!(
                "no network namespace of our own ({}); run as root",
                std::io::Error::last_os_error()
            ),
        );
        return false;
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up", "mtu", "1500"])
        .status()
        .expect("run ip (iproute2)");
    assert!(up.success(), "ip link set lo up mtu 1500");
    true
}

fn a_refused_train_is_resent_datagram_by_datagram(io: &str) {
    if !enter_small_mtu_namespace() {
        return;
    }
    let server = Server::start(&["--io", io, "--threads", "1", "--serve", "udp:0=ok"]);
    let to = server.addr("udp", "ok");
    let client = gso_client(1472);
    for round in 0..2u8 {
        let train: Vec<u8> = (0..4u8)
            .flat_map(|i| std::iter::repeat_n(b'a' + round * 4 + i, 1472))
            .collect();
        client.send_to(&train, to).unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..4u8 {
            let n = client.recv(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "{io}: reply {i} of round {round}: {e}; refused {} dropped {}",
                    server.counter("gso_refused"),
                    server.counter("udp_replies_dropped")
                )
            });
            assert_eq!(n, 1477, "{io}: reply {i} of round {round}");
            assert_eq!(&buf[..5], b"OK...");
            assert!(buf[5..n].iter().all(|&b| b == b'a' + round * 4 + i));
        }
    }
    assert!(
        server.counter("gro_receives") >= 1,
        "{io}: the requests arrived as a train"
    );
    assert_eq!(
        server.counter("gso_refused"),
        1,
        "{io}: refused once; the socket sends no trains after that"
    );
    // A send is counted when its completion is reaped, which can come
    // after the client already has the datagram: wait for the count.
    assert_eq!(server.wait_counter("datagrams_out", |n| n >= 8), 8);
    assert_eq!(server.counter("udp_replies_dropped"), 0);
    // An ordinary datagram is still answered.
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    plain.send_to(b"hi", to).unwrap();
    let mut buf = [0u8; 64];
    let n = plain.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"OK...hi");
}

#[test]
fn uring_resends_a_refused_train() {
    a_refused_train_is_resent_datagram_by_datagram("uring");
}

#[test]
fn epoll_resends_a_refused_train() {
    a_refused_train_is_resent_datagram_by_datagram("epoll");
}
