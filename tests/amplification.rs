//! How much each UDP service sends a blind sender (one who forges its
//! source address and never reads) for what it sent: the README's
//! amplification table, measured through real sockets. Each datagram comes
//! from a fresh socket (a new address, as a forger would use), and what
//! comes back to that socket is counted, payload and on the wire (with the
//! 20-byte IPv4 and 8-byte UDP headers). `cargo test --test amplification
//! -- --nocapture` prints the table.

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::{Server, PATIENCE};

/// IPv4 and UDP headers: what every datagram costs on the wire besides
/// its payload.
const HEADERS: usize = 28;

/// Sizes a blind sender may try: every small one, where prompts and
/// prefixes weigh most, and a few large ones.
fn sizes() -> Vec<usize> {
    (0..=40).chain([64, 512, 1200, 1472]).collect()
}

/// One datagram of `size` bytes from a new address; the reply datagrams'
/// sizes, waiting for `replies` of them (as many as the service answers
/// with: the caller knows which get none).
fn blind(to: SocketAddr, size: usize, replies: usize) -> (UdpSocket, Vec<usize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket.send_to(&vec![b'a'; size], to).unwrap();
    let mut buf = vec![0u8; 65_536];
    let got = (0..replies)
        .map(|_| socket.recv(&mut buf).expect("a reply"))
        .collect();
    (socket, got)
}

/// Nothing more arrived on `socket` than was counted.
fn assert_nothing_more(socket: &UdpSocket) {
    socket.set_nonblocking(true).unwrap();
    assert!(socket.recv(&mut [0u8; 16]).is_err(), "an extra reply");
}

/// The worst ratios over the sizes tried: (payload, the size it came at),
/// (wire, the size it came at).
#[derive(Default, Debug)]
struct Worst {
    payload: (f64, usize),
    wire: (f64, usize),
}

impl Worst {
    fn add(&mut self, sent: usize, replies: &[usize]) {
        let back: usize = replies.iter().sum();
        let wire_back: usize = back + HEADERS * replies.len();
        if sent > 0 {
            let ratio = back as f64 / sent as f64;
            if ratio > self.payload.0 {
                self.payload = (ratio, sent);
            }
        }
        let wire = wire_back as f64 / (sent + HEADERS) as f64;
        if wire > self.wire.0 {
            self.wire = (wire, sent);
        }
    }
}

#[test]
fn no_udp_service_sends_a_blind_sender_more_than_its_documented_ratio() {
    let server = Server::start(&[
        "--threads",
        "1",
        "--serve",
        "udp:0=echo",
        "--serve",
        "udp:0=ok",
        "--serve",
        "udp:0=bot",
        "--serve",
        "udp:0=discard",
    ]);
    let mut table = Vec::new();

    // echo: the datagram back, byte for byte (empty included).
    let mut worst = Worst::default();
    for size in sizes() {
        let (socket, got) = blind(server.addr("udp", "echo"), size, 1);
        assert_eq!(got, [size]);
        worst.add(size, &got);
        assert_nothing_more(&socket);
    }
    assert_eq!(worst.payload.0, 1.0);
    assert_eq!(worst.wire.0, 1.0);
    table.push(("echo", worst));

    // ok: the chapter's `OK...` and the datagram, 5 bytes more.
    let mut worst = Worst::default();
    for size in sizes() {
        let (socket, got) = blind(server.addr("udp", "ok"), size, 1);
        assert_eq!(got, [size + 5]);
        worst.add(size, &got);
        assert_nothing_more(&socket);
    }
    assert_eq!(worst.payload, (6.0, 1), "5 more bytes weigh most on 1");
    assert_eq!(worst.wire.1, 0, "an empty datagram gets 5 bytes");
    assert!((worst.wire.0 - 33.0 / 28.0).abs() < 1e-9);
    table.push(("ok", worst));

    // bot: a prompt within three times the datagram, nothing for 0 or 1.
    let mut worst = Worst::default();
    let mut silent = Vec::new();
    for size in sizes() {
        let expected = usize::from(size >= 2);
        let (socket, got) = blind(server.addr("udp", "bot"), size, expected);
        assert!(got.iter().sum::<usize>() <= 3 * size, "{size}: {got:?}");
        worst.add(size, &got);
        silent.push(socket);
    }
    // One worker reads the bot's socket in order: once a later datagram is
    // answered, the silent ones were handled, and got nothing.
    blind(server.addr("udp", "bot"), 5, 1);
    silent.iter().for_each(assert_nothing_more);
    assert_eq!(worst.payload.0, 3.0);
    assert!(worst.wire.0 < 1.6, "{worst:?}");
    table.push(("bot", worst));

    // discard: never a reply.
    let before = server.counter("datagrams_out");
    let received = server.counter("datagrams_in");
    let mut sockets = Vec::new();
    for size in sizes() {
        sockets.push(blind(server.addr("udp", "discard"), size, 0).0);
    }
    server.wait_counter("datagrams_in", |n| n >= received + sizes().len() as u64);
    assert_eq!(server.counter("datagrams_out"), before, "discard answered");
    sockets.iter().for_each(assert_nothing_more);
    table.push(("discard", Worst::default()));

    println!("| service | worst reply/request, payload | worst on the wire (IPv4 + UDP headers) |");
    println!("|---|---|---|");
    for (name, w) in table {
        println!(
            "| {name} | {:.2}x (at {} bytes) | {:.3}x (at {} bytes) |",
            w.payload.0, w.payload.1, w.wire.0, w.wire.1
        );
    }
}
