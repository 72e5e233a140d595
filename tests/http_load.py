"""A bounded HTTP load through the edge, counting every failed request (rollouts, drains)."""

from __future__ import annotations

import contextlib
import threading
import time

import requests

TARGETS = (("api.v-edfinance.localhost", "/api/health"), ("v-edfinance.localhost", "/"))


class Load:
    """`clients` bounded clients, each about `rate` requests/s through the edge, taking
    `targets` (Host, path) in turn (api and web), until stopped or `max_seconds` /
    `max_requests` (all clients together) is reached. `version_path` is asked of the api
    every 20th request of the first client."""

    def __init__(self, port: int, rate: float = 20, max_seconds: float = 240,
                 max_requests: int = 5000, clients: int = 1,
                 version_path: str = "/version",
                 targets: tuple[tuple[str, str], ...] = TARGETS) -> None:
        self.port, self.rate, self.targets = port, rate, targets
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.version_path = version_path
        self.sent = 0
        self.failed: list[str] = []
        # when the first request went out and the last answer came (time.monotonic): a test
        # checks that the load spans what it measures, not only the seconds around it
        self.first_sent = self.last_answered = 0.0
        self.spans: list[tuple[float, float]] = []  # (sent, answered) of each good request
        self.versions: set[str] = set()
        self._count = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        print(f"load: {self.sent} requests sent by {len(self._threads)} clients, "
              f"{len(self.failed)} failed")

    def _next(self) -> int | None:
        with self._count:
            if self.sent >= self.max_requests:
                return None
            self.sent += 1
            return self.sent

    def _run(self, client: int) -> None:
        session = requests.Session()
        deadline = time.monotonic() + self.max_seconds
        mine = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._next() is None:
                return
            if not self.first_sent:
                self.first_sent = time.monotonic()
            name, path = self.targets[(mine + client) % len(self.targets)]
            mine += 1
            sent = time.monotonic()
            try:
                response = session.get(f"http://127.0.0.1:{self.port}{path}",
                                       headers={"Host": name}, timeout=10)
                if response.status_code != 200:
                    self.failed.append(f"{name}{path}: HTTP {response.status_code}")
                else:
                    self.spans.append((sent, time.monotonic()))
            except requests.RequestException as exc:
                self.failed.append(f"{name}{path}: {type(exc).__name__}")
            self.last_answered = max(self.last_answered, time.monotonic())
            if client == 0 and mine % 20 == 0:
                with contextlib.suppress(requests.RequestException):
                    self.versions.add(session.get(
                        f"http://127.0.0.1:{self.port}{self.version_path}",
                        headers={"Host": TARGETS[0][0]}, timeout=10).text.strip())
            time.sleep(1 / self.rate)

    def within(self, start: float, end: float) -> int:
        """Good requests that were in flight at some moment between start and end."""
        return sum(1 for sent, answered in self.spans if sent < end and answered > start)
