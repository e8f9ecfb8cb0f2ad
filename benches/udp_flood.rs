//! Unpaced UDP send rate, 64-byte datagrams, one sender thread: loadgen vs
//! `iperf3 -u -b 0 -l 64` vs `sockperf tp -m 64 --mps=max`, alternating
//! A B C over several rounds in one run. Senders on CPU 1, receivers on CPU 0.
//!
//! `cargo bench --bench udp_flood -- --seconds 3 --rounds 3`
//! (needs `apt-get install iperf3 sockperf`)

mod support;

use std::process::{Child, Command, Stdio};

use support::{json_number, summary};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(cpu: &str, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu).arg(program).args(args);
    c
}

/// Runs a sender; its stdout and stderr together (tools differ in which
/// they print their summary to).
fn output(mut c: Command) -> String {
    let out = c.output().expect("run a sender");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn main() {
    support::maybe_run_baseline();
    let seconds: u64 = support::arg("--seconds", 3);
    let rounds: usize = support::arg("--rounds", 3);
    for tool in ["iperf3", "sockperf", "taskset"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} is not installed: apt-get install iperf3 sockperf util-linux");
            return;
        }
    }
    let loadgen = support::loadgen_binary();
    let t = seconds.to_string();
    let _iperf_server = Killed(
        pinned("0", "iperf3", &["-s", "-p", "5301"])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 -s"),
    );
    let _sink = Killed(
        pinned("0", "sockperf", &["sr", "-i", "127.0.0.1", "-p", "5302"])
            .stdout(Stdio::null())
            .spawn()
            .expect("sockperf sr"),
    );
    std::thread::sleep(std::time::Duration::from_millis(500)); // let both servers bind

    let (mut ours, mut iperf, mut sockperf) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let json = output(pinned(
            "1",
            loadgen.to_str().expect("path"),
            &[
                "--udp",
                "127.0.0.1:5302",
                "--rate",
                "max",
                "--no-reply",
                "--size",
                "64",
                "--duration",
                &t,
                "--json",
                "--quiet",
            ],
        ));
        ours.push(json_number(&json, "achieved_pps").expect("loadgen's achieved_pps"));

        let json = output(pinned(
            "1",
            "iperf3",
            &[
                "-c",
                "127.0.0.1",
                "-p",
                "5301",
                "-u",
                "-b",
                "0",
                "-l",
                "64",
                "-t",
                &t,
                "-J",
            ],
        ));
        // The client's own summary: packets sent over its seconds.
        let sent = json
            .rfind("\"sum\"")
            .map(|at| &json[at..])
            .expect("iperf3 summary");
        iperf.push(
            json_number(sent, "packets").expect("packets")
                / json_number(sent, "seconds").expect("seconds"),
        );

        let text = output(pinned(
            "1",
            "sockperf",
            &[
                "tp",
                "-i",
                "127.0.0.1",
                "-p",
                "5302",
                "-m",
                "64",
                "--mps=max",
                "-t",
                &t,
            ],
        ));
        let rate = text
            .lines()
            .find_map(|l| l.split("Message Rate is ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse::<f64>().ok());
        sockperf.push(rate.expect("sockperf's message rate"));
        eprintln!(
            "round {round}: loadgen {:.0}/s, iperf3 {:.0}/s, sockperf {:.0}/s",
            ours[round - 1],
            iperf[round - 1],
            sockperf[round - 1]
        );
    }
    let rows = [
        ("loadgen --rate max (GSO batches)", &ours),
        ("iperf3 -u -b 0 -l 64", &iperf),
        ("sockperf tp -m 64 --mps=max", &sockperf),
    ];
    let base = summary(&ours).0;
    println!("Unpaced UDP send rate, 64-byte datagrams, one sender on CPU 1, receiver on CPU 0, {rounds} rounds of {seconds} s");
    println!("| sender | datagrams/s median | min | max | vs loadgen |");
    println!("|---|---|---|---|---|");
    for (name, values) in rows {
        let (m, lo, hi) = summary(values);
        println!("| {name} | {m:.0} | {lo:.0} | {hi:.0} | {:.3} |", m / base);
    }
}
