//! A TCP echo server on monoio, as its users would write one: a runtime
//! per pinned thread (io_uring driver), each with its own SO_REUSEPORT
//! listener, a task per connection reading into an owned buffer and writing
//! it back. A comparison peer for `cargo bench --bench compare`, nothing
//! more.
//!
//! `monoio-echo ADDR CPU[,CPU...]`; prints `listening ADDR` once every
//! thread is serving.

use std::net::SocketAddr;
use std::sync::mpsc;

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerConfig, TcpListener, TcpStream};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(cpus)) = (args.next(), args.next()) else {
        eprintln!("usage: monoio-echo ADDR CPU[,CPU...]");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("monoio-echo: '{addr}' is not an address: {e}");
        std::process::exit(2);
    });
    let cpus: Vec<usize> = cpus.split(',').filter_map(|c| c.parse().ok()).collect();
    // Port 0: the first listener picks the port, the others share it.
    let first = std::net::TcpListener::bind(addr).map(|l| l.local_addr());
    let addr = match first {
        Ok(Ok(bound)) if addr.port() == 0 => bound,
        _ => addr,
    };
    let (ready, ready_rx) = mpsc::channel();
    let threads: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let ready = ready.clone();
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let mut runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(1024)
                    .build()
                    .expect("an io_uring runtime");
                runtime.block_on(serve(addr, ready));
            })
        })
        .collect();
    drop(ready);
    for _ in &cpus {
        ready_rx.recv().expect("a serving thread");
    }
    println!("listening {addr}");
    for t in threads {
        let _ = t.join();
    }
}

async fn serve(addr: SocketAddr, ready: mpsc::Sender<()>) {
    let config = ListenerConfig::default().reuse_port(true);
    let listener = TcpListener::bind_with_config(addr, &config).expect("bind");
    let _ = ready.send(());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(echo(stream));
            }
            Err(e) => eprintln!("monoio-echo: accept: {e}"),
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let (read, b) = stream.read(buf).await;
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (written, b) = stream.write_all(b.slice(..n)).await;
        if written.is_err() {
            return;
        }
        buf = b.into_inner();
    }
}
