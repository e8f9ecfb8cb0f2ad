//! Where the workers run, through real sockets: pinned one to a CPU by
//! default, floating over every CPU the process may use with `pin(false)`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use engine::{Fed, Server, StreamSession};

/// The CPUs the calling thread may run on, as the kernel lists them
/// (`Cpus_allowed_list`, such as `0-1`).
fn allowed_cpus() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("read thread status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_string()
}

/// Greets with `WORKER CPUS`: its worker, and the CPUs that worker's
/// thread may run on.
struct WhereAmI(String);

impl StreamSession for WhereAmI {
    fn on_open(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }

    fn on_input(&mut self, input: &[u8], _out: &mut Vec<u8>, _room: usize) -> Fed {
        Fed::all(input.len())
    }
}

/// Each worker's greeting, `WORKER CPUS`, from a server of two workers
/// pinned or not; connects until both workers have answered.
fn greetings(pin: bool) -> Vec<(usize, String)> {
    let running = Server::new()
        .workers(2)
        .pin(pin)
        .tcp("127.0.0.1:0".parse().unwrap(), "where", |cx| {
            WhereAmI(format!("{} {}\n", cx.worker(), allowed_cpus()))
        })
        .start()
        .expect("the engine starts");
    let addr = running.services()[0].addr;
    let mut seen: Vec<(usize, String)> = Vec::new();
    // Connections spread over the workers by their ports' hash; 200 make
    // missing one worker a 2^-200 chance.
    for _ in 0..200 {
        if seen.len() == 2 {
            break;
        }
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("a greeting");
        let (worker, cpus) = line.trim_end().split_once(' ').expect("WORKER CPUS");
        let worker: usize = worker.parse().expect("a worker index");
        if !seen.iter().any(|(w, _)| *w == worker) {
            seen.push((worker, cpus.to_string()));
        }
    }
    running.shutdown();
    running.join().expect("clean stop");
    seen.sort();
    seen
}

#[test]
fn workers_are_pinned_one_to_a_cpu_unless_told_to_float() {
    let process = allowed_cpus();
    let pinned = greetings(true);
    assert_eq!(pinned.len(), 2, "both workers answered: {pinned:?}");
    for (worker, allowed) in &pinned {
        assert!(
            allowed.parse::<usize>().is_ok(),
            "worker {worker} is pinned to one CPU, not {allowed}"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus >= 2 {
        assert_ne!(pinned[0].1, pinned[1].1, "one CPU each: {pinned:?}");
    }
    let floating = greetings(false);
    assert_eq!(floating.len(), 2, "both workers answered: {floating:?}");
    for (worker, allowed) in &floating {
        assert_eq!(
            *allowed, process,
            "worker {worker} may run where the process may"
        );
    }
}
