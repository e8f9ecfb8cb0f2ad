#!/usr/bin/env python3
"""A/B of RESP servers (builds of the kv example, redis-server) under
redis-benchmark, alternated within every round, on the CPUs given.

    python3 benches/ab_kv.py [--cpus 0,1] [--rounds 4] [--pipeline 16]
        [--tests set,get] NAME=COMMAND NAME=COMMAND ...

COMMAND is a kv example binary and its arguments after the address (the
script adds 127.0.0.1:PORT first), or `redis` / `redis2` for Debian's
redis-server with one or two I/O threads (persistence off). Each server
and the client run under `taskset -c CPUS`; redis-benchmark uses 50
connections and 100k random keys. Prints, per test and server, the median
requests/s, its ratio to the first server's in the same round (median and
range), and the server's CPU per request (from /proc/PID/stat).

For example, the kv example before and after a change, two workers on
both CPUs (build the old one in a `git worktree` with its own
CARGO_TARGET_DIR):

    python3 benches/ab_kv.py old=/tmp/old-target/release/examples/kv\\ 2 \\
        new=target/release/examples/kv\\ 2
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}) before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listened on port {port} within 20 s")


def start(command, cpus, port):
    if command in ("redis", "redis2"):
        threads = "2" if command == "redis2" else "1"
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                "--save", "", "--appendonly", "no", "--io-threads", threads,
                "--logfile", "", "--loglevel", "warning"]
    else:
        binary, *rest = command.split()
        args = [binary, f"127.0.0.1:{port}", *rest]
    proc = subprocess.Popen(["taskset", "-c", cpus, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc


def cpu_seconds(proc):
    fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", default="0,1")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--tests", default="set,get")
    parser.add_argument("servers", nargs="+", help="NAME=COMMAND")
    a = parser.parse_args()
    servers = [s.split("=", 1) for s in a.servers]
    tests = a.tests.split(",")
    requests = 200_000 if a.pipeline == 1 else 2_000_000
    rps = {(n, t): [] for n, _ in servers for t in tests}
    cpu = {(n, t): [] for n, _ in servers for t in tests}
    for r in range(a.rounds):
        # Each server goes first in turn.
        for name, command in servers[r % len(servers):] + servers[:r % len(servers)]:
            port = free_port()
            proc = start(command, a.cpus, port)
            try:
                for t in tests:
                    before = cpu_seconds(proc)
                    out = subprocess.run(
                        ["taskset", "-c", a.cpus, "redis-benchmark", "-p", str(port),
                         "-c", "50", "-P", str(a.pipeline), "-n", str(requests),
                         "-r", "100000", "-d", "3", "-t", t, "-q"],
                        capture_output=True, text=True, timeout=300, check=True).stdout
                    found = re.findall(r"([\d.]+) requests per second", out.replace("\r", "\n"))
                    if not found:
                        raise SystemExit(f"{name} {t}: no result in {out!r}")
                    rps[(name, t)].append(float(found[-1]))
                    cpu[(name, t)].append((cpu_seconds(proc) - before) / requests * 1e6)
            finally:
                proc.kill()
                proc.wait()
    first = servers[0][0]
    for t in tests:
        for name, _ in servers:
            ratios = [x / y for x, y in zip(rps[(name, t)], rps[(first, t)])]
            c = cpu[(name, t)]
            print(f"-P {a.pipeline} {t:5} {name:16} {statistics.median(rps[(name, t)]):>10.0f} req/s"
                  f"  vs {first}: {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
                  f"  server CPU µs/req {statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})")


if __name__ == "__main__":
    main()
