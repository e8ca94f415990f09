"""The serving load test's harness (issue 21; with credentials, issue 35), shared by tests/test_server.py and
tests/test_serving_access.py: a victim's step timed while the server is idle, then while flooding threads send
requests and hold half-open connections."""

from __future__ import annotations

import socket
import threading
import time


def step_latencies(step, flood_once, address, steps: int = 6, threads: int = 2,
                   held_connections: int = 40) -> tuple[list[float], list[float]]:
    """(seconds of `steps` calls of `step()` on an idle server, the same while `threads` threads each call
    `flood_once()` in a loop and open up to `held_connections` connections to `address` that send nothing)."""
    def timed() -> list[float]:
        out = []
        for _ in range(steps):
            began = time.monotonic()
            step()
            out.append(time.monotonic() - began)
        return out

    idle = timed()
    stop = threading.Event()

    def flood():
        held = []
        while not stop.is_set():
            flood_once()
            if len(held) < held_connections:
                held.append(socket.create_connection(address, timeout=5))
            time.sleep(0.01)
        for connection in held:
            connection.close()

    flooders = [threading.Thread(target=flood) for _ in range(threads)]
    for thread in flooders:
        thread.start()
    try:
        busy = timed()
    finally:
        stop.set()
        for thread in flooders:
            thread.join()
    return idle, busy
