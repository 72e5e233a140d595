"""The production edge on the sandbox: Caddy with `tls: auto` obtains real certificates over
ACME from the sandbox's pebble; deploy, smoke (TLS, days to expiry, www -> apex on HTTPS) and
rollback run over HTTPS; a restarted edge serves the certificate it stored instead of asking
again (Let's Encrypt rate-limits re-issuing)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vedfin_ops.checks.smoke import Options, smoke_test
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.deploy.rollback import rollback

from .conftest import docker, sandbox_host, switched_to
from .https_client import HttpsLoad, get, serial

pytestmark = pytest.mark.integration

EDGE = "vedfin-shared_edge"


@pytest.fixture(scope="module")
def https(sandbox_up: dict[str, Any]) -> Iterator[Any]:
    """The sandbox switched to its HTTPS config for this module, and back afterwards."""
    with switched_to(sandbox_up, "dokploy-https.yaml") as config:
        yield config


def test_deploy_smoke_and_rollback_over_https_with_acme_certificates(
        sandbox_up: dict[str, Any], https: Any) -> None:
    host = sandbox_host(sandbox_up)
    try:
        first = deploy(host, https, "production", "v2", say=lambda _m: None)
        assert first.result in ("ok", "noop")  # noop: a run before left it so
        report = smoke_test(https, "production", Options(ca_file=https.edge.ca_root,
                                                         tls_wait=60))
        assert report.passed, [(c.name, c.detail) for c in report.checks if not c.ok]
        tls = [c for c in report.checks if c.name.startswith("tls")]
        assert tls and all("days to expiry" in c.detail for c in tls), tls
        assert get(https, "/version").text.strip() == "api v2"
        www = get(https, "/x?y=1", "www.v-edfinance.localhost")
        assert www.status_code in (301, 308)
        assert www.headers["Location"] == \
            f"https://v-edfinance.localhost:{https.edge.https_port}/x?y=1"
        with HttpsLoad(https) as load:
            assert deploy(host, https, "production", "v1", say=lambda _m: None).result == "ok"
        print(f"rolling deploy over HTTPS: {load.ok + load.failed} requests from 8 clients, "
              f"{load.failed} failed")
        assert load.ok + load.failed >= 1000 and load.failed == 0, load.errors[:5]
        assert get(https, "/version").text.strip() == "api v1"
        rollback(host, https, "production", say=lambda _m: None)  # raises if it fails
        assert get(https, "/version").text.strip() == "api v2"
    finally:
        host.close()


def test_a_restarted_edge_serves_its_stored_certificate(https: Any) -> None:
    before = serial(https)
    docker("service", "update", "--quiet", "--force", EDGE, timeout=180)
    deadline = time.monotonic() + 60
    while True:
        try:
            after = serial(https)
            break
        except (OSError, ssl.SSLError):
            assert time.monotonic() < deadline, "the edge never came back"
            time.sleep(0.5)
    assert after == before, "the edge asked for a new certificate instead of reusing it"
    assert Path(https.edge.ca_root).exists()
