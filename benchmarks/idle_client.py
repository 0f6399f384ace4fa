#!/usr/bin/env python3
"""Client of benchmarks/idle.py: opens COUNT keep-alive connections to 127.0.0.1:PORT; each sends
one GET /, reads the whole response (200, body Hello, World!) and then stays open, idle.

    idle_client.py PORT COUNT

Prints `held COUNT SECONDS` once every response is in, then holds the connections until SIGTERM
(or HOLD_MAX_S). Its own process, so that its open-file limit (raised here to the hard limit) is
not the benchmark's or the server's. Connections are opened in batches of BATCH, each step with a
timeout, and the whole opening has a deadline: nothing waits forever.
"""
import resource
import signal
import socket
import sys
import time

BATCH = 256
TIMEOUT_S = 10
OPEN_DEADLINE_S = 120
HOLD_MAX_S = 900
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
HELLO = b"Hello, World!"


def read_response(s):
    """One whole response (head and Content-Length body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError(f"closed after {data[:80]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("closed in the body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200") or body != HELLO:
        raise OSError(f"unexpected answer {head[:40]!r} {body[:40]!r}")


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    start = time.time()
    held = []
    try:
        while len(held) < count:
            if time.time() - start > OPEN_DEADLINE_S:
                raise OSError(f"deadline: {len(held)} of {count} open")
            batch = []
            for _ in range(min(BATCH, count - len(held))):
                s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
                s.sendall(REQUEST)
                batch.append(s)
            for s in batch:
                read_response(s)
            held += batch
    except OSError as error:
        print(f"failed after {len(held)}: {error}", flush=True)
        sys.exit(1)
    print(f"held {len(held)} {time.time() - start:.2f}", flush=True)
    time.sleep(HOLD_MAX_S)


if __name__ == "__main__":
    main()
