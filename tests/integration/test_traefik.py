"""`edge.mode: traefik` against a real Traefik v3 run as Dokploy runs it (the sandbox's
`dokploy-traefik` on `dokploy-network`, swarm provider, `letsencrypt` resolver on pebble):
deploy, www -> apex, HTTP -> HTTPS, zero failed requests through a rolling deploy, rollback,
certificates kept across a Traefik restart; and preflight naming that Traefik when it holds
the ports our Caddy would need, or when it is not running in Traefik mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from vedfin_ops import load_config
from vedfin_ops.checks.preflight import preflight
from vedfin_ops.checks.smoke import Options, smoke_test
from vedfin_ops.deploy.pipeline import deploy
from vedfin_ops.deploy.rollback import rollback
from vedfin_ops.errors import CheckFailed

from .conftest import SANDBOX_DIR, docker, sandbox_host, switched_to
from .https_client import HttpsLoad, get, serial

pytestmark = pytest.mark.integration

TRAEFIK = "dokploy-traefik"


@pytest.fixture(scope="module")
def routed(sandbox_up: dict[str, Any]) -> Iterator[Any]:
    """The sandbox switched to its Traefik-mode config, and back to Caddy afterwards."""
    with switched_to(sandbox_up, "dokploy-traefik.yaml") as config:
        yield config


def _version(config: Any) -> str:
    return get(config, "/version").text.strip()


def test_deploy_www_redirect_and_rollback_through_dokploy_s_traefik(
        sandbox_up: dict[str, Any], routed: Any) -> None:
    host = sandbox_host(sandbox_up)
    try:
        first = deploy(host, routed, "production", "v2", say=lambda _m: None)
        assert first.result in ("ok", "noop")
        assert not [s for s in docker("service", "ls", "--format", "{{.Name}}").stdout.split()
                    if s.endswith("_edge")], "our Caddy still runs beside Traefik"
        report = smoke_test(routed, "production", Options(ca_file=routed.edge.ca_root,
                                                          tls_wait=60))
        assert report.passed, [(c.name, c.detail) for c in report.checks if not c.ok]
        assert all("days to expiry" in c.detail for c in report.checks
                   if c.name.startswith("tls")), report.checks
        assert _version(routed) == "api v2"
        port = routed.edge.https_port
        www = get(routed, "/x?y=1", "www.v-edfinance.localhost")
        assert www.status_code in (301, 308)
        assert www.headers["Location"] == f"https://v-edfinance.localhost:{port}/x?y=1"
        plain = requests.get(f"http://127.0.0.1:{routed.edge.http_port}/a?b=2",
                             headers={"Host": "api.v-edfinance.localhost"},
                             allow_redirects=False, timeout=5)
        assert plain.status_code in (301, 308)
        assert plain.headers["Location"] == f"https://api.v-edfinance.localhost:{port}/a?b=2"

        with HttpsLoad(routed) as load:
            assert deploy(host, routed, "production", "v1", say=lambda _m: None).result == "ok"
        print(f"rolling deploy through Traefik: {load.ok + load.failed} requests from 8 "
              f"clients, {load.failed} failed")
        assert load.ok + load.failed >= 1000 and load.failed == 0, load.errors[:5]
        assert _version(routed) == "api v1"
        rollback(host, routed, "production", say=lambda _m: None)
        assert _version(routed) == "api v2"
    finally:
        host.close()


def test_a_restarted_traefik_serves_its_stored_certificate(routed: Any) -> None:
    before = serial(routed)
    docker("restart", TRAEFIK, timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            after = serial(routed)
            if after == before or time.monotonic() > deadline:
                break
        except OSError:  # ssl.SSLError is an OSError
            pass
        assert time.monotonic() < deadline, "Traefik never served the domain again"
        time.sleep(0.5)
    assert after == before, "Traefik asked for a new certificate instead of reusing it"


def test_preflight_names_dokploy_s_traefik_on_the_ports_our_caddy_needs(
        sandbox_up: dict[str, Any], routed: Any) -> None:
    caddy = load_config(sandbox_up["config"])
    caddy.edge.http_port = routed.edge.http_port  # where Dokploy's Traefik already listens
    host = sandbox_host(sandbox_up)
    try:
        report = preflight(host, caddy, "production")
    finally:
        host.close()
    item = {c.name: c for c in report.checks}["edge ports"]
    assert not item.ok
    assert f"port {routed.edge.http_port} is held by container {TRAEFIK}" in item.detail
    assert "Dokploy's Traefik: stop it, or give the edge other ports" in item.detail


def test_traefik_mode_without_a_running_traefik_stops_before_any_change(
        sandbox_up: dict[str, Any], routed: Any) -> None:
    host = sandbox_host(sandbox_up)
    current = host.run("readlink /srv/vedfin-sandbox/production/current", what="current")
    docker("stop", TRAEFIK, timeout=60)
    try:
        report = preflight(host, routed, "production")
        item = {c.name: c for c in report.checks}["edge: traefik"]
        assert not item.ok
        assert f"not published by {TRAEFIK}" in item.detail, item.detail
        with pytest.raises(CheckFailed, match="edge: traefik"):  # v2 runs: v1 is a change
            deploy(host, routed, "production", "v1", say=lambda _m: None)
        assert host.run("readlink /srv/vedfin-sandbox/production/current",
                        what="current") == current
    finally:
        docker("start", TRAEFIK, timeout=60)
        host.close()


def test_an_expired_or_wrong_name_certificate_on_the_edge_fails_smoke_and_preflight(
        routed: Any, tmp_path: Any) -> None:
    """Traefik serves, from its file provider (Dokploy's dynamic folder), an expired
    certificate for one domain and, as its default, one for another name: smoke and
    preflight both name what is wrong, as the unit tests show against a local TLS server."""
    from tests.checks.test_smoke import _cert
    from vedfin_ops.config.loader import config_from_dict

    folder = SANDBOX_DIR / "traefik" / "dynamic"
    ca_path, _, ca_cert, ca_key = _cert(tmp_path, ["vedfin edge test CA"], 365)
    expired = _cert(tmp_path, ["expired.v-edfinance.localhost"], -2, (ca_cert, ca_key))
    wrong = _cert(tmp_path, ["elsewhere.localhost"], 90, (ca_cert, ca_key))
    certs = folder / "vedfin-test-certs"
    certs.mkdir(mode=0o700, exist_ok=True)
    inside = "/etc/dokploy/traefik/dynamic/vedfin-test-certs"
    for name, (cert, key, _, _) in (("expired", expired), ("wrong", wrong)):
        (certs / f"{name}.crt").write_bytes(cert.read_bytes())
        (certs / f"{name}.key").write_bytes(key.read_bytes())
    dynamic = folder / "vedfin-test-tls.yml"
    dynamic.write_text(
        "tls:\n  certificates:\n"
        f"    - {{certFile: {inside}/expired.crt, keyFile: {inside}/expired.key}}\n"
        "  stores:\n    default:\n      defaultCertificate:\n"
        f"        {{certFile: {inside}/wrong.crt, keyFile: {inside}/wrong.key}}\n")
    config = config_from_dict({
        "applications": [
            {"name": "api-production", "domain": "expired.v-edfinance.localhost",
             "resources": {"memory": "64m", "cpus": 0.1}},
            {"name": "web-production", "domain": "wrong.v-edfinance.localhost",
             "resources": {"memory": "64m", "cpus": 0.1}},
        ],
        "vps": {"memory": "1g", "cpus": 1, "address": "127.0.0.1"},
        "edge": {"mode": "traefik", "tls": "auto", "httpPort": routed.edge.http_port,
                 "httpsPort": routed.edge.https_port, "caRoot": str(ca_path)},
    }, str(tmp_path / "edge-certs.yaml"))
    options = Options(timeout=3, attempts=1)
    try:
        deadline = time.monotonic() + 30
        while True:  # the file provider picks the file up within a second or two
            tls = {c.name: c for c in smoke_test(config, "production", options).checks}
            found = (tls["tls expired.v-edfinance.localhost"].detail,
                     tls["tls wrong.v-edfinance.localhost"].detail)
            # both certificates served (the domain's own name says "expired" too)
            if ("certificate has expired" in found[0] and "Hostname mismatch" in found[1]) \
                    or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not tls["tls expired.v-edfinance.localhost"].ok
        assert "certificate has expired" in found[0], found
        assert not tls["tls wrong.v-edfinance.localhost"].ok
        assert "Hostname mismatch" in found[1], found
        report = preflight(None, config, "production", probe="",
                           resolve=lambda name: (name, [], ["127.0.0.1"]),
                           options=Options(timeout=3))
        item = {c.name: c for c in report.checks}["tls"]
        assert not item.ok and "certificate has expired" in item.detail, item.detail
    finally:
        dynamic.unlink(missing_ok=True)
        for path in certs.iterdir():
            path.unlink()
        certs.rmdir()
