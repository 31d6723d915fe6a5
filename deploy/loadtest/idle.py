#!/usr/bin/env python3
"""Idle keep-alive clients for deploy/loadtest/run.sh (SCENARIO=idle).

Opens COUNT connections to 127.0.0.1:PORT, sends one keep-alive `GET /` on each, reads each response to its
end, and then keeps every connection open and silent. Prints `ready COUNT` once all are idle, waits until
its standard input closes, closes every connection, and prints `closed`.

    idle.py PORT COUNT

Connections are opened in batches (non-blocking, one selector), so 10,000 take a second or two.
"""

import resource
import selectors
import socket
import sys

BATCH = 500
REQUEST = b"GET / HTTP/1.1\r\nHost: loadtest\r\nUser-Agent: idle.py\r\n\r\n"


def response_done(buf: bytes) -> bool:
    """Whether `buf` holds one whole response (headers, and a Content-Length body)."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True  # no body announced (a 204 or 304): the head is all


def open_batch(port: int, n: int) -> list:
    sel = selectors.DefaultSelector()
    pending = {}
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        pending[s.fileno()] = [s, b"", False]
        sel.register(s, selectors.EVENT_WRITE)
    done = []
    while pending:
        events = sel.select(timeout=10)
        if not events:
            sys.exit(f"idle.py: {len(pending)} connections got no answer within 10s")
        for key, mask in events:
            entry = pending[key.fd]
            s = entry[0]
            if mask & selectors.EVENT_WRITE and not entry[2]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sys.exit(f"idle.py: connect failed: {err}")
                s.sendall(REQUEST)
                entry[2] = True
                sel.modify(s, selectors.EVENT_READ)
                continue
            data = s.recv(65536)
            if not data:
                sys.exit("idle.py: the server closed a connection before answering")
            entry[1] += data
            if response_done(entry[1]):
                if not entry[1].startswith(b"HTTP/1.1 200"):
                    sys.exit(f"idle.py: unexpected answer: {entry[1][:80]!r}")
                sel.unregister(s)
                done.append(s)
                del pending[key.fd]
    sel.close()
    return done


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    port, count = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    conns = []
    while len(conns) < count:
        conns += open_batch(port, min(BATCH, count - len(conns)))
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()
    for s in conns:
        s.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
