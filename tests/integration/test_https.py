"""The production edge on the sandbox: Caddy with `tls: auto` obtains real certificates over
ACME from the sandbox's pebble; deploy, smoke (TLS, days to expiry, www -> apex on HTTPS) and
rollback run over HTTPS; a restarted edge serves the certificate it stored instead of asking
again (Let's Encrypt rate-limits re-issuing)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from vedfin_ops import load_config
from vedfin_ops.checks.smoke import Options, smoke_test
from vedfin_ops.checks.smoke import _SniAdapter as SniAdapter
from vedfin_ops.remote.host import Host, connect
from vedfin_ops.steps.deploy import deploy
from vedfin_ops.steps.rollback import rollback

from .conftest import SANDBOX_DIR, docker

pytestmark = pytest.mark.integration

API = "api.v-edfinance.localhost"
EDGE = "vedfin-shared_edge"


def _host(sandbox_up: dict[str, Any]) -> Host:
    return Host(connect("sandbox", sandbox_up["ssh_config"]))


@pytest.fixture(scope="module")
def https(sandbox_up: dict[str, Any]) -> Iterator[Any]:
    """The sandbox switched to its HTTPS config for this module, and back afterwards."""
    config = load_config(SANDBOX_DIR / "dokploy-https.yaml")
    try:
        yield config
    finally:
        host = _host(sandbox_up)
        try:
            deploy(host, load_config(sandbox_up["config"]), "production", "v1",
                   say=lambda _m: None)
        finally:
            host.close()


def _get(config: Any, path: str, domain: str = API) -> requests.Response:
    session = requests.Session()
    port = config.edge.https_port
    session.mount(f"https://127.0.0.1:{port}/", SniAdapter(domain))
    return session.get(f"https://127.0.0.1:{port}{path}", headers={"Host": domain},
                       verify=config.edge.ca_root, timeout=5, allow_redirects=False)


class HttpsLoad:
    """`clients` threads asking /version over HTTPS (SNI, pebble's root trusted) until stopped
    or `max_requests` in all; every answer that is not a 200 is a failure."""

    def __init__(self, config: Any, clients: int = 8, max_requests: int = 20000,
                 max_seconds: float = 240) -> None:
        self.config, self.max_requests, self.max_seconds = config, max_requests, max_seconds
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
                good = _get(self.config, "/version").status_code == 200
                error = "" if good else "not 200"
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


def _serial(config: Any, domain: str = API) -> int:
    context = ssl.create_default_context(cafile=config.edge.ca_root)
    with socket.create_connection(("127.0.0.1", config.edge.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=domain) as tls:
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_deploy_smoke_and_rollback_over_https_with_acme_certificates(
        sandbox_up: dict[str, Any], https: Any) -> None:
    host = _host(sandbox_up)
    try:
        first = deploy(host, https, "production", "v2", say=lambda _m: None)
        assert first.result in ("ok", "noop")  # noop: a run before left it so
        report = smoke_test(https, "production", Options(ca_file=https.edge.ca_root,
                                                         tls_wait=60))
        assert report.passed, [(c.name, c.detail) for c in report.checks if not c.ok]
        tls = [c for c in report.checks if c.name.startswith("tls")]
        assert tls and all("days to expiry" in c.detail for c in tls), tls
        assert _get(https, "/version").text.strip() == "api v2"
        www = _get(https, "/x?y=1", "www.v-edfinance.localhost")
        assert www.status_code in (301, 308)
        assert www.headers["Location"] == \
            f"https://v-edfinance.localhost:{https.edge.https_port}/x?y=1"
        with HttpsLoad(https) as load:
            assert deploy(host, https, "production", "v1", say=lambda _m: None).result == "ok"
        print(f"rolling deploy over HTTPS: {load.ok + load.failed} requests from 8 clients, "
              f"{load.failed} failed")
        assert load.ok + load.failed >= 1000 and load.failed == 0, load.errors[:5]
        assert _get(https, "/version").text.strip() == "api v1"
        rollback(host, https, "production", say=lambda _m: None)  # raises if it fails
        assert _get(https, "/version").text.strip() == "api v2"
    finally:
        host.close()


def test_a_restarted_edge_serves_its_stored_certificate(https: Any) -> None:
    before = _serial(https)
    docker("service", "update", "--quiet", "--force", EDGE, timeout=180)
    deadline = time.monotonic() + 60
    while True:
        try:
            after = _serial(https)
            break
        except (OSError, ssl.SSLError):
            assert time.monotonic() < deadline, "the edge never came back"
            time.sleep(0.5)
    assert after == before, "the edge asked for a new certificate instead of reusing it"
    assert Path(https.edge.ca_root).exists()
