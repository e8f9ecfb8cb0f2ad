#!/usr/bin/env python3
"""Two ringcore builds side by side: the same model, the same cells, the two
binaries alternated round by round (server on CPU 0, loadgen on CPU 1), so a
change to the engine is measured against the engine before it in one run.

    python3 benches/ab_binaries.py OLD_RINGCORE NEW_RINGCORE LOADGEN [MODEL [CELL]]

CELL picks the cells whose name contains it ("http", "64 B"); all by default.
AB_QUICK=1 (environment) runs one round of one second, a smoke run.
NEW_FLAGS (environment) adds server flags to the new side only, so one
binary can be measured against itself with a flag:

    NEW_FLAGS=--sqpoll python3 benches/ab_binaries.py target/release/ringcore \
        target/release/ringcore target/release/loadgen uring "64 B"

Build the older commit in a worktree with its own CARGO_TARGET_DIR. Prints,
per cell, the median requests (or datagrams) per second and server CPU per
request of each, and their ratios new/old.
"""
import json
import os
import socket
import subprocess
import sys
import time

# AB_QUICK=1: one round of one second per cell, to check the script runs
# (tests/docs.rs runs the documented command so).
QUICK = os.environ.get("AB_QUICK") == "1"
ROUNDS = 1 if QUICK else 3
SECONDS = 1 if QUICK else 5
CELLS = [
    ("tcp 64 B x 50", "echo", ["--size", "64", "--connections", "50"]),
    ("tcp 16 KiB x 50", "echo", ["--size", "16384", "--connections", "50"]),
    ("tcp 64 B x 1000", "echo", ["--size", "64", "--connections", "1000"]),
    ("http 1 KiB x 50", "http", ["--connections", "50"]),
    ("udp 64 B flood", "udp", ["--size", "64", "--rate", "max"]),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port, udp):
    for _ in range(250):
        if udp:
            time.sleep(0.3)  # nothing to connect to; the server binds at once
            return
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"no server on port {port}")


def measure(binary, model, service, args, loadgen, flags=()):
    port = free_port()
    serve = {"echo": f"tcp:{port}=echo", "http": f"tcp:{port}=http", "udp": f"udp:{port}=echo"}[service]
    server = subprocess.Popen(
        [binary, "--io", model, "--serve", serve, "--cpus", "0", "--threads", "1", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, service == "udp")
        target = {
            "echo": ["--tcp", f"127.0.0.1:{port}"],
            "http": ["--http", f"http://127.0.0.1:{port}/bytes/1024"],
            "udp": ["--udp", f"127.0.0.1:{port}"],
        }[service]
        before = cpu_seconds(server.pid)
        out = subprocess.run(
            [loadgen, *target, *args, "--duration", f"{SECONDS}s", "--cpus", "1", "--json", "--quiet"],
            capture_output=True,
            text=True,
            check=True,
        )
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait()
    report = json.loads(out.stdout)
    done = report["received"] if service == "udp" else report["requests"]
    return done / report["duration_s"], used / done * 1e6


def median(values):
    return sorted(values)[len(values) // 2]


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    old, new, loadgen = sys.argv[1:4]
    model = sys.argv[4] if len(sys.argv) > 4 else "uring"
    only = sys.argv[5] if len(sys.argv) > 5 else ""
    new_flags = os.environ.get("NEW_FLAGS", "").split()
    sides = {"old": (old, []), "new": (new, new_flags)}
    for name, service, args in CELLS:
        if only not in name:
            continue
        runs = {side: [] for side in sides}
        for _ in range(ROUNDS):
            for side, (binary, flags) in sides.items():
                runs[side].append(measure(binary, model, service, args, loadgen, flags))
        rate = {s: median([r for r, _ in runs[s]]) for s in runs}
        cost = {s: median([c for _, c in runs[s]]) for s in runs}
        print(
            f"{model} {name}: old {rate['old']:.0f}/s {cost['old']:.3f} us/req | "
            f"new {' '.join(new_flags)} {rate['new']:.0f}/s {cost['new']:.3f} us/req | "
            f"rate new/old {rate['new'] / rate['old']:.3f}, CPU per request new/old {cost['new'] / cost['old']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
