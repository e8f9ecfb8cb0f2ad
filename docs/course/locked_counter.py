"""The chapter's threaded server, keeping state: a thread per client, and
one dictionary every thread shares, guarded by one lock (as the chapter's
`print_lock` guards its printing). It speaks just enough of the Redis
protocol for redis-benchmark and redis-cli: INCR, GET, PING, CONFIG GET.

    python3 locked_counter.py HOST:PORT [--no-lock]
"""

import socket
import sys
import threading

counts = {}
counts_lock = threading.Lock()
use_lock = "--no-lock" not in sys.argv


def incr(key):
    if use_lock:
        with counts_lock:
            counts[key] = counts.get(key, 0) + 1
            return counts[key]
    # Without the lock, two threads can read the same old value.
    value = counts.get(key, 0) + 1
    counts[key] = value
    return value


def commands(reader):
    """Yields each command's words (RESP arrays, or inline)."""
    while True:
        line = reader.readline()
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"*"):
            yield line.split()
            continue
        words = []
        for _ in range(int(line[1:])):
            size = int(reader.readline()[1:])
            words.append(reader.read(size + 2)[:size])
        yield words


def answer(words):
    name = words[0].upper() if words else b""
    if name == b"PING":
        return b"+PONG\r\n"
    if name == b"INCR" and len(words) == 2:
        return b":%d\r\n" % incr(words[1])
    if name == b"GET" and len(words) == 2:
        value = counts.get(words[1])
        if value is None:
            return b"$-1\r\n"
        text = str(value).encode()
        return b"$%d\r\n%s\r\n" % (len(text), text)
    if name == b"CONFIG":
        reply = b"*%d\r\n" % (2 * len(words[2:]))
        for key in words[2:]:
            reply += b"$%d\r\n%s\r\n$0\r\n\r\n" % (len(key), key)
        return reply
    return b"-ERR unknown command\r\n"


def serve(conn):
    with conn:
        reader = conn.makefile("rb")
        for words in commands(reader):
            if words:
                conn.sendall(answer(words))


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen(128)
    print(f"tcp {host}:{port} locked-counter", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
