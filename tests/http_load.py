"""A bounded HTTP load through the edge, counting every failed request (rollouts, drains)."""

from __future__ import annotations

import contextlib
import threading
import time

import requests


class Load:
    """A bounded client: about `rate` requests/s through the edge, alternating api and web,
    until stopped or `max_seconds` / `max_requests` is reached."""

    def __init__(self, port: int, rate: float = 20, max_seconds: float = 240,
                 max_requests: int = 5000) -> None:
        self.port, self.rate = port, rate
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.sent = 0
        self.failed: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        print(f"load: {self.sent} requests sent, {len(self.failed)} failed")

    def _run(self) -> None:
        session = requests.Session()
        hosts = [("api.v-edfinance.localhost", "/api/health"), ("v-edfinance.localhost", "/")]
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and \
                self.sent < self.max_requests:
            name, path = hosts[self.sent % 2]
            self.sent += 1
            try:
                response = session.get(f"http://127.0.0.1:{self.port}{path}",
                                       headers={"Host": name}, timeout=10)
                if response.status_code != 200:
                    self.failed.append(f"{name}{path}: HTTP {response.status_code}")
            except requests.RequestException as exc:
                self.failed.append(f"{name}{path}: {type(exc).__name__}")
            if self.sent % 20 == 0:
                with contextlib.suppress(requests.RequestException):
                    self.versions.add(session.get(
                        f"http://127.0.0.1:{self.port}/version",
                        headers={"Host": "api.v-edfinance.localhost"}, timeout=10).text.strip())
            time.sleep(1 / self.rate)
