#!/usr/bin/env python3
"""Write one small key every 50 ms over RESP and print, every 20 writes,
"<writes> <median ms> <p99 ms> <max ms>" of the SET latencies so far. Stops when
the server closes the connection or the probe is killed. Used by ci/bench-disk
to show whether background work stalls writes. With a second argument `get`,
it reads a key that is never written instead (GET, answered nil): whether
background work stalls reads."""
import socket
import statistics
import sys
import time

SET_PROBE = b"*3\r\n$3\r\nSET\r\n$11\r\nprobe:write\r\n$3\r\nabc\r\n"
GET_PROBE = b"*2\r\n$3\r\nGET\r\n$12\r\nprobe:absent\r\n"


def main(port, read):
    probe, expected = (GET_PROBE, b"$-1") if read else (SET_PROBE, b"+OK")
    conn = socket.create_connection(("127.0.0.1", port))
    latencies_ms = []
    while True:
        started = time.monotonic()
        conn.sendall(probe)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = conn.recv(64)
            if not chunk:
                return
            reply += chunk
        if not reply.startswith(expected):
            print(f"probe refused: {reply!r}", file=sys.stderr, flush=True)
        latencies_ms.append((time.monotonic() - started) * 1000)
        if len(latencies_ms) % 20 == 0:
            q = sorted(latencies_ms)
            p99 = q[min(len(q) - 1, int(len(q) * 0.99))]
            print(f"{len(q)} {statistics.median(q):.1f} {p99:.1f} {q[-1]:.1f}", flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]), sys.argv[2:3] == ["get"])
    except (ConnectionError, OSError, KeyboardInterrupt):
        pass
