"""A progress line for long local runs: each worker process reports its own throughput every few seconds."""

from __future__ import annotations

import os
import sys
import time


class Progress:
    """Counts events in this process and prints one line per `interval_s` to stderr (never per element)."""

    def __init__(self, label: str, interval_s: float = 10.0):
        self.label = label
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self._start = self._last = time.monotonic()

    def add(self, **counts: int) -> None:
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + value
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self.report(now)

    def report(self, now: float | None = None) -> None:
        elapsed = max((now or time.monotonic()) - self._start, 1e-9)
        parts = ", ".join(f"{value} {name} ({value / elapsed:.1f}/s)" for name, value in self.counts.items())
        print(f"[{self.label} pid {os.getpid()}] {elapsed:.0f}s: {parts}", file=sys.stderr, flush=True)
