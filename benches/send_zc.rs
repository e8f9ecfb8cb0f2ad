//! Does IORING_OP_SEND_ZC pay on this machine? One TCP connection, one
//! send in flight at a time from an io_uring on CPU 0 (as the engine sends
//! one reply per connection), a plain blocking reader on CPU 1; the same
//! bytes sent with IORING_OP_SEND and with IORING_OP_SEND_ZC, alternating
//! round by round, over loopback and over a veth pair between two network
//! namespaces the bench makes itself (when run as root).
//!
//! `cargo bench --bench send_zc -- --seconds 2 --rounds 3`
//!
//! Reports the sender's CPU per MiB (its thread's own CPU clock), the
//! throughput, and how many zero-copy sends the kernel said it had to copy
//! after all (IORING_SEND_ZC_REPORT_USAGE). A zero-copy send pins the
//! user pages and posts a second completion once the kernel is done with
//! them; where the receiver is on the same host the kernel copies anyway.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring};
use support::{pin_to, summary};

/// zc_flags: report in the notification whether the kernel copied.
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// In a notification's result: the data was copied after all.
const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Send,
    SendZc,
}

#[derive(Default, Clone, Copy)]
struct Run {
    mib_per_s: f64,
    cpu_us_per_mib: f64,
    copied_pct: f64,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sends `size`-byte messages to a reader listening on `addr` for
/// `seconds` with `mode`, connecting from namespace `ns` (or this one).
fn run(addr: SocketAddr, ns: Option<&str>, mode: Mode, size: usize, seconds: f64) -> Run {
    let listener = TcpListener::bind(addr).expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    let reader = std::thread::spawn(move || {
        pin_to(1);
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    pin_to(0);
    let stream = connect_from(ns, addr);
    let fd = types::Fd(stream.as_raw_fd());
    let mut ring = IoUring::new(64).expect("io_uring");
    let buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let (mut sent, mut zc, mut copied) = (0u64, 0u64, 0u64);
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let mut off = 0;
        while off < size {
            let entry = match mode {
                Mode::Send => {
                    opcode::Send::new(fd, buf[off..].as_ptr(), (size - off) as u32).build()
                }
                Mode::SendZc => opcode::SendZc::new(fd, buf[off..].as_ptr(), (size - off) as u32)
                    .zc_flags(IORING_SEND_ZC_REPORT_USAGE)
                    .build(),
            };
            // SAFETY: `buf` and the socket outlive the operation: this loop
            // waits for its completion, and for a zero-copy send also for
            // the notification that the kernel is done with the pages.
            unsafe { ring.submission().push(&entry).expect("room in the ring") };
            let mut notif_due = false;
            let mut result = None;
            while result.is_none() || notif_due {
                ring.submit_and_wait(1).expect("io_uring_enter");
                for cqe in ring.completion() {
                    if cqueue::notif(cqe.flags()) {
                        notif_due = false;
                        zc += 1;
                        if cqe.result() as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
                            copied += 1;
                        }
                    } else {
                        notif_due = cqueue::more(cqe.flags());
                        result = Some(cqe.result());
                    }
                }
            }
            let n = result.unwrap_or(-1);
            assert!(n > 0, "send failed: {n}");
            off += n as usize;
        }
        sent += size as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu0).as_secs_f64();
    drop(stream);
    let received = reader.join().expect("reader");
    assert_eq!(received, sent, "every byte arrived");
    let mib = sent as f64 / (1 << 20) as f64;
    Run {
        mib_per_s: mib / elapsed,
        cpu_us_per_mib: cpu * 1e6 / mib,
        copied_pct: if zc > 0 {
            copied as f64 * 100.0 / zc as f64
        } else {
            0.0
        },
    }
}

/// A namespace joined to this one by a veth pair: 10.77.0.1 here,
/// 10.77.0.2 there. Removed on drop.
struct Veth;

impl Veth {
    const NS: &'static str = "ringcore-zc";

    fn up() -> Option<Veth> {
        let sh = |cmd: &str| {
            Command::new("sh")
                .args(["-c", cmd])
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = sh(&format!("ip netns del {} 2>/dev/null", Self::NS));
        let ok = sh(&format!(
            "ip netns add {ns} && ip link add zc-a type veth peer name zc-b netns {ns} \
             && ip addr add 10.77.0.1/24 dev zc-a && ip link set zc-a up \
             && ip -n {ns} addr add 10.77.0.2/24 dev zc-b && ip -n {ns} link set zc-b up \
             && ip -n {ns} link set lo up",
            ns = Self::NS
        ));
        ok.then_some(Veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair with it.
        let _ = Command::new("ip").args(["netns", "del", Self::NS]).status();
    }
}

fn main() {
    let seconds: f64 = support::arg("--seconds", 2.0);
    let rounds: usize = support::arg("--rounds", 3);
    let sizes = [4096usize, 16 * 1024, 64 * 1024, 256 * 1024];
    let veth = Veth::up();
    if veth.is_none() {
        eprintln!("no veth pair (needs root): loopback only");
    }
    println!("IORING_OP_SEND against IORING_OP_SEND_ZC: one send in flight, sender on CPU 0, reader on CPU 1, {rounds} round(s) of {seconds} s, alternating\n");
    println!("| path | message | SEND MiB/s | SEND_ZC MiB/s | SEND CPU us/MiB | SEND_ZC CPU us/MiB | ZC/SEND CPU | ZC sends copied |");
    println!("|---|---|---|---|---|---|---|---|");
    // The reader listens here; over veth the sender's socket is made in
    // the other namespace, so every byte crosses the pair.
    let mut paths: Vec<(&str, SocketAddr, Option<&str>)> =
        vec![("loopback", "127.0.0.1:0".parse().expect("address"), None)];
    if veth.is_some() {
        paths.push((
            "veth",
            "10.77.0.1:0".parse().expect("address"),
            Some(Veth::NS),
        ));
    }
    for (name, addr, ns) in paths {
        for &size in &sizes {
            let (mut plain, mut zc) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                plain.push(run(addr, ns, Mode::Send, size, seconds));
                zc.push(run(addr, ns, Mode::SendZc, size, seconds));
            }
            let med =
                |v: &[Run], f: fn(&Run) -> f64| summary(&v.iter().map(f).collect::<Vec<_>>()).0;
            let (p_rate, z_rate) = (med(&plain, |r| r.mib_per_s), med(&zc, |r| r.mib_per_s));
            let (p_cpu, z_cpu) = (
                med(&plain, |r| r.cpu_us_per_mib),
                med(&zc, |r| r.cpu_us_per_mib),
            );
            println!(
                "| {name} | {} KiB | {p_rate:.0} | {z_rate:.0} | {p_cpu:.0} | {z_cpu:.0} | {:.2} | {:.0} % |",
                size / 1024,
                z_cpu / p_cpu,
                med(&zc, |r| r.copied_pct)
            );
        }
    }
}

/// A connection to `addr`, its socket made in namespace `ns` if given (by
/// a thread of its own, so this thread stays where it is; a socket keeps
/// the namespace it was made in).
fn connect_from(ns: Option<&str>, addr: SocketAddr) -> TcpStream {
    let Some(ns) = ns else {
        return TcpStream::connect(addr).expect("connect");
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("the namespace");
            // SAFETY: setns on this thread only, with a descriptor we own.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpStream::connect(addr).expect("connect over the veth pair")
        })
        .join()
        .expect("connecting thread")
    })
}
