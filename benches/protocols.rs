//! Criterion micro-benchmarks of the protocols' hot paths: what every
//! server model and loadgen's verifier spend per message.
//!
//! `cargo bench --bench protocols`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use protocols::bot::{Conversation, Script};
use protocols::echo::EchoStream;
use protocols::http::{HttpConfig, HttpSession};
use protocols::ok::OkDatagram;
use protocols::probe::Probe;
use protocols::reverse::{ReverseChunks, ReverseLines};
use protocols::{DatagramHandler, Replies, StreamSession};

fn stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream");
    for size in [64usize, 16 * 1024] {
        let ascii: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let unit = "añb€";
        let utf8: Vec<u8> = unit.repeat(size / unit.len() + 1).into_bytes()[..size].to_vec();
        let mut lines = Vec::new();
        while lines.len() + 64 <= size {
            lines.extend_from_slice(&ascii[..63]);
            lines.push(b'\n');
        }
        group.throughput(Throughput::Bytes(size as u64));
        let mut out = Vec::with_capacity(2 * size);
        group.bench_with_input(BenchmarkId::new("echo", size), &ascii, |b, input| {
            b.iter(|| {
                out.clear();
                EchoStream.on_bytes(black_box(input), &mut out)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("reverse-ascii", size),
            &ascii,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    ReverseChunks.on_bytes(black_box(input), &mut out)
                })
            },
        );
        // Valid UTF-8 (a cut may split a character: then it is reversed by byte, as served).
        group.bench_with_input(BenchmarkId::new("reverse-utf8", size), &utf8, |b, input| {
            b.iter(|| {
                out.clear();
                ReverseChunks.on_bytes(black_box(input), &mut out)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("reverse-lines", size),
            &lines,
            |b, input| {
                let mut session = ReverseLines::default();
                b.iter(|| {
                    out.clear();
                    session.on_bytes(black_box(input), &mut out)
                })
            },
        );
    }
    group.finish();
}

fn datagram(c: &mut Criterion) {
    let mut group = c.benchmark_group("datagram");
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut buf = [0u8; 64];
    group.bench_function("probe-write", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            Probe {
                run: 7,
                seq,
                sent_ns: seq * 1000,
            }
            .write(black_box(&mut buf))
        })
    });
    Probe {
        run: 7,
        seq: 42,
        sent_ns: 1,
    }
    .write(&mut buf);
    let mut ok_reply = b"OK...".to_vec();
    ok_reply.extend_from_slice(&buf);
    group.bench_function("probe-parse-echo", |b| {
        b.iter(|| Probe::parse_reply(black_box(&buf)))
    });
    group.bench_function("probe-parse-ok", |b| {
        b.iter(|| Probe::parse_reply(black_box(&ok_reply)))
    });
    let mut replies = Replies::new();
    let now = Instant::now();
    let mut ok = OkDatagram::default();
    group.bench_function("ok-reply-64", |b| {
        b.iter(|| {
            replies.clear();
            ok.on_datagram(now, peer, black_box(&buf), &mut replies)
        })
    });
    group.finish();
}

fn bot(c: &mut Criterion) {
    let script = Arc::new(Script::default_script());
    let mut group = c.benchmark_group("bot");
    let mut out = String::new();
    group.bench_function("answer-yes", |b| {
        b.iter_batched(
            || {
                let mut c = Conversation::new(script.clone(), 1);
                let mut s = String::new();
                c.answer("1", &mut s); // at a yes/no question
                c
            },
            |mut c| {
                out.clear();
                c.answer(black_box("Yeah!"), &mut out)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("unclear-input", |b| {
        let mut c = Conversation::new(script.clone(), 1);
        b.iter(|| {
            out.clear();
            c.answer(black_box("what is this"), &mut out)
        })
    });
    group.bench_function("whole-diagnosis", |b| {
        b.iter(|| {
            let mut c = Conversation::new(script.clone(), 1);
            out.clear();
            c.open(&mut out);
            for a in ["1", "yes", "yes", "yes"] {
                c.answer(black_box(a), &mut out);
            }
        })
    });
    group.finish();
}

fn http(c: &mut Criterion) {
    let config = Arc::new(HttpConfig::default());
    let request = b"GET /bytes/1024 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
    let pipelined = request.repeat(16);
    let mut group = c.benchmark_group("http");
    let mut out = Vec::with_capacity(64 * 1024);
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("get-1k", |b| {
        let mut session = HttpSession::new(config.clone());
        b.iter(|| {
            out.clear();
            session.on_bytes(black_box(request), &mut out)
        })
    });
    group.throughput(criterion::Throughput::Elements(16));
    group.bench_function("get-1k-pipelined-16", |b| {
        let mut session = HttpSession::new(config.clone());
        b.iter(|| {
            out.clear();
            session.on_bytes(black_box(&pipelined), &mut out)
        })
    });
    // Pipelined requests waiting behind a long body, answered through the
    // bounded path a transport uses (1 MiB of output room): the time per
    // request must not grow with how many wait (no rescan, no shifting of
    // the whole buffer per request).
    let small = b"GET /bytes/1 HTTP/1.1\r\n\r\n";
    for waiting in [10_000usize, 50_000, 200_000] {
        let mut input = b"GET /bytes/4194304 HTTP/1.1\r\n\r\n".to_vec();
        input.extend(small.repeat(waiting));
        group.throughput(criterion::Throughput::Elements(waiting as u64));
        group.sample_size(10);
        group.bench_with_input(
            BenchmarkId::new("pipelined-behind-a-body", waiting),
            &input,
            |b, input| {
                b.iter(|| {
                    let mut session = HttpSession::new(config.clone());
                    let (written, _) = protocols::stream::drive_bounded(
                        &mut session,
                        &[black_box(input)],
                        1 << 20,
                    );
                    written.len()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, stream, datagram, bot, http);
criterion_main!(benches);
