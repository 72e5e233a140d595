"""An HTTPS client for the sandbox's edges (Caddy or Traefik): a domain's name as SNI and
Host on 127.0.0.1, the edge's CA root trusted; and a load of concurrent clients that counts
every answer that is not a 200."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

import requests

from vedfin_ops.checks.smoke import _SniAdapter as SniAdapter

API = "api.v-edfinance.localhost"


def get(config: Any, path: str, domain: str = API) -> requests.Response:
    session = requests.Session()
    port = config.edge.https_port
    session.mount(f"https://127.0.0.1:{port}/", SniAdapter(domain))
    return session.get(f"https://127.0.0.1:{port}{path}", headers={"Host": domain},
                       verify=config.edge.ca_root, timeout=5, allow_redirects=False)


class HttpsLoad:
    """`clients` threads asking `path` (/version) over HTTPS (SNI, pebble's root trusted)
    until stopped or `max_requests` in all; every answer that is not a 200 is a failure."""

    def __init__(self, config: Any, clients: int = 8, max_requests: int = 20000,
                 max_seconds: float = 240, path: str = "/version") -> None:
        self.config, self.max_requests, self.max_seconds = config, max_requests, max_seconds
        self.path = path
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(clients)]

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            with self._lock:
                if self.ok + self.failed >= self.max_requests:
                    return
            try:
                code = get(self.config, self.path).status_code
                good, error = code == 200, f"HTTP {code}"
            except requests.RequestException as exc:
                good, error = False, type(exc).__name__
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(error)

    def __enter__(self) -> HttpsLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def serial(config: Any, domain: str = API) -> int:
    context = ssl.create_default_context(cafile=config.edge.ca_root)
    with socket.create_connection(("127.0.0.1", config.edge.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=domain) as tls:
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
