"""Step 6's checks, each passing and failing against real servers on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vedfin_ops.checks.smoke import Options, smoke_test
from vedfin_ops.config.loader import config_from_dict

HEALTHY = {"status": "ok", "database": "connected", "redis": "connected"}
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def _json(body: dict[str, Any]) -> Route:
    return _text(json.dumps(body), "application/json")


def _status(code: int, location: str | None = None) -> Route:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        if location:
            handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return reply


def _text(body: str, kind: str = "text/plain") -> Route:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        data = body.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    return reply


def _preflight(allow: str | None, code: int = 204) -> Route:
    """A CORS preflight answer: `origin` echoes the request's Origin, None allows nothing."""
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        if allow is not None:
            origin = handler.headers.get("Origin", "")
            handler.send_header("Access-Control-Allow-Origin",
                                origin if allow == "origin" else allow)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return reply


def _hang(seconds: float) -> Route:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        _status(200)(handler)
    return reply


def _flaky(failures: int, then: Route) -> Route:
    left = {"n": failures}

    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        if left["n"] > 0:
            left["n"] -= 1
            _status(500)(handler)
        else:
            then(handler)
    return reply


class Server:
    """A real HTTP(S) server on 127.0.0.1 whose answer is chosen per (Host, path)."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = self.headers.get("Host", "").split(":")[0]
                route = routes.get((host, self.path)) or routes.get(("*", self.path))
                (route or _status(404))(self)

            def do_OPTIONS(self) -> None:
                host = self.headers.get("Host", "").split(":")[0]
                (routes.get((host, f"OPTIONS {self.path}")) or _status(501))(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


def _config(port: int, tls: str = "off") -> Any:
    return config_from_dict({
        "applications": [
            {"name": "api-production", "domain": "api.smoke.localhost",
             "resources": {"memory": "64m", "cpus": 0.1}},
            {"name": "web-production", "domain": "smoke.localhost",
             "additionalDomains": ["www.smoke.localhost"],
             "resources": {"memory": "64m", "cpus": 0.1}},
        ],
        "vps": {"memory": "1g", "cpus": 1},
        "edge": {"tls": tls, "httpPort": port, "httpsPort": port},
    }, "smoke.yaml")


def _healthy_routes(server: Server) -> None:
    api = "api.smoke.localhost"
    server.routes.update({
        (api, "/api/health"): _json(HEALTHY),
        (api, "/api/auth/health"): _status(200),
        (api, "/api/debug/diagnostics/db-health"): _text("Connection successful\n"),
        (api, "OPTIONS /api/health"): _preflight(allow="origin"),
        ("smoke.localhost", "/"): _status(200),
        ("www.smoke.localhost", "/"): _status(308, f"http://smoke.localhost:{server.port}/"),
    })


FAST = Options(timeout=1.0, attempts=3, backoff=0.05)


def _by_name(report: Any) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


def test_every_check_passes_against_a_healthy_env(server: Server) -> None:
    _healthy_routes(server)
    report = smoke_test(_config(server.port), "production", FAST)
    assert report.passed, report.to_dict()
    assert set(_by_name(report)) == {
        "api-production /api/health", "api-production /api/auth/health",
        "api-production /api/debug/diagnostics/db-health", "web-production /",
        "www.smoke.localhost -> smoke.localhost", "api-production CORS from smoke.localhost"}
    assert _by_name(report)["api-production CORS from smoke.localhost"].detail == (
        f"http://smoke.localhost:{server.port} allowed (http://smoke.localhost:{server.port})")
    as_json = report.to_dict()
    assert as_json["env"] == "production" and as_json["passed"] is True
    assert all({"name", "ok", "detail", "seconds"} <= set(c) for c in as_json["checks"])


def test_health_json_saying_disconnected_fails(server: Server) -> None:
    _healthy_routes(server)
    server.routes[("api.smoke.localhost", "/api/health")] = _json(
        {"status": "ok", "database": "disconnected", "redis": "connected"})
    check = _by_name(smoke_test(_config(server.port), "production", FAST))[
        "api-production /api/health"]
    assert not check.ok and check.detail == "health says database='disconnected'"


def test_db_health_answering_200_with_an_error_fails(server: Server) -> None:
    """The runbook expects "Connection successful"; a diagnostics page that reports the
    failure with HTTP 200 must not pass (it did while any 200 passed)."""
    _healthy_routes(server)
    server.routes[("api.smoke.localhost", "/api/debug/diagnostics/db-health")] = _text(
        "Connection failed: [red]timeout[/red]\nstack...\n")
    check = _by_name(smoke_test(_config(server.port), "production", FAST))[
        "api-production /api/debug/diagnostics/db-health"]
    assert not check.ok
    assert check.detail == ("HTTP 200 but says 'Connection failed: [red]timeout[/red]', "
                            "expected 'Connection successful'")


@pytest.mark.parametrize(("answer", "detail"), [
    (_preflight(None), "no Access-Control-Allow-Origin for http://smoke.localhost:{port}: "
                       "the browser blocks the web's calls to the api"),
    (_preflight("https://elsewhere.example"),
     "Access-Control-Allow-Origin is 'https://elsewhere.example', not "
     "http://smoke.localhost:{port}"),
    (_preflight("origin", code=404), "preflight answered HTTP 404, expected 200/204"),
])
def test_api_that_does_not_allow_the_webs_origin_fails_cors(server: Server, answer: Route,
                                                            detail: str) -> None:
    _healthy_routes(server)
    server.routes[("api.smoke.localhost", "OPTIONS /api/health")] = answer
    report = smoke_test(_config(server.port), "production", FAST)
    check = _by_name(report)["api-production CORS from smoke.localhost"]
    assert not check.ok and check.detail == detail.format(port=server.port)
    assert not report.passed


def test_cors_allowing_any_origin_passes_and_cors_path_null_skips_it(server: Server) -> None:
    _healthy_routes(server)
    server.routes[("api.smoke.localhost", "OPTIONS /api/health")] = _preflight("*")
    assert _by_name(smoke_test(_config(server.port), "production", FAST))[
        "api-production CORS from smoke.localhost"].ok
    config = _config(server.port)
    config.verify.cors_path = None
    assert "api-production CORS from smoke.localhost" not in _by_name(
        smoke_test(config, "production", FAST))


def _raw(body: bytes, headers: dict[str, str]) -> Route:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
        handler.close_connection = True
    return reply


def test_health_json_that_is_not_an_object_is_a_failed_check_not_a_crash(server: Server
                                                                        ) -> None:
    _healthy_routes(server)
    server.routes[("api.smoke.localhost", "/api/health")] = _raw(b"[]", {
        "Content-Type": "application/json", "Content-Length": "2"})
    check = _by_name(smoke_test(_config(server.port), "production", FAST))[
        "api-production /api/health"]
    assert not check.ok and check.detail == "health is JSON but not an object: []"


def test_a_body_cut_mid_transfer_is_retried_then_failed_not_raised(server: Server) -> None:
    """A chunked body that ends without its last chunk: what an edge says while the replica
    behind it is replaced (requests raises ChunkedEncodingError)."""
    _healthy_routes(server)
    server.routes[("api.smoke.localhost", "/api/health")] = _raw(
        b"20\r\n{\"status\":\"ok\",\"database\":\"conn", {
            "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    check = _by_name(smoke_test(_config(server.port), "production", FAST))[
        "api-production /api/health"]
    assert not check.ok and "ChunkedEncodingError" in check.detail
    assert "after 3 tries" in check.detail  # FAST: 3 attempts


def test_a_check_that_crashes_is_a_failed_check(server: Server,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from vedfin_ops.checks import smoke

    _healthy_routes(server)

    def boom(*args: Any) -> str:
        raise AttributeError("'NoneType' object has no attribute 'get'")

    monkeypatch.setattr(smoke, "_expect_status", boom)
    report = smoke_test(_config(server.port), "production", FAST)
    crashed = [c for c in report.checks if "crashed" in c.detail]
    assert crashed and not report.passed
    assert crashed[0].detail.startswith("check crashed: AttributeError")


def test_a_hanging_server_times_out(server: Server) -> None:
    _healthy_routes(server)
    server.routes[("smoke.localhost", "/")] = _hang(3)
    report = smoke_test(_config(server.port), "production",
                        Options(timeout=0.3, attempts=2, backoff=0.01))
    check = _by_name(report)["web-production /"]
    assert not check.ok and "Timeout" in check.detail and "after 2 tries" in check.detail
    assert not report.passed


def test_a_500_that_recovers_is_retried(server: Server) -> None:
    _healthy_routes(server)
    server.routes[("api.smoke.localhost", "/api/auth/health")] = _flaky(2, _status(200))
    check = _by_name(smoke_test(_config(server.port), "production", FAST))[
        "api-production /api/auth/health"]
    assert check.ok, check.detail


def test_a_404_fails_without_retries(server: Server) -> None:
    _healthy_routes(server)
    del server.routes[("api.smoke.localhost", "/api/debug/diagnostics/db-health")]
    check = _by_name(smoke_test(_config(server.port), "production", FAST))[
        "api-production /api/debug/diagnostics/db-health"]
    assert not check.ok and check.detail == "HTTP 404, expected 200"


def test_redirect_to_the_wrong_host_fails(server: Server) -> None:
    _healthy_routes(server)
    server.routes[("www.smoke.localhost", "/")] = _status(301, "http://evil.example/")
    check = _by_name(smoke_test(_config(server.port), "production", FAST))[
        "www.smoke.localhost -> smoke.localhost"]
    assert not check.ok and "not to smoke.localhost" in check.detail


def test_www_served_directly_is_accepted(server: Server) -> None:
    _healthy_routes(server)
    server.routes[("www.smoke.localhost", "/")] = _status(200)
    assert _by_name(smoke_test(_config(server.port), "production", FAST))[
        "www.smoke.localhost -> smoke.localhost"].ok


def test_checks_run_in_parallel(server: Server) -> None:
    """Measured by what the server sees at once, not by a clock: all checks in flight."""
    _healthy_routes(server)
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def counting(route: Route) -> Route:
        def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            time.sleep(0.3)
            with lock:
                state["now"] -= 1
            route(handler)
        return reply

    for key, route in list(server.routes.items()):
        server.routes[key] = counting(route)
    report = smoke_test(_config(server.port), "production", FAST)
    assert report.passed
    assert state["most"] == len(report.checks) == 6


# --- TLS, with a CA and certificates made here ---

def _cert(tmp: Path, names: list[str], days: int, ca: tuple[Any, Any] | None = None
          ) -> tuple[Path, Path, Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(ca[0].subject if ca else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=30))
               .not_valid_after(now + dt.timedelta(days=days)))
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    cert = builder.sign(ca[1] if ca else key, hashes.SHA256())
    cert_path, key_path = tmp / f"{names[0]}-{days}.pem", tmp / f"{names[0]}-{days}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert, key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Callable[[int], tuple[Server, Options]]]:
    ca_path, _, ca_cert, ca_key = _cert(tmp_path, ["vedfin test CA"], 365)
    servers: list[Server] = []

    def make(days: int) -> tuple[Server, Options]:
        names = ["api.smoke.localhost", "smoke.localhost", "www.smoke.localhost"]
        cert_path, key_path, _, _ = _cert(tmp_path, names, days, (ca_cert, ca_key))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        srv = Server(context)
        servers.append(srv)
        _healthy_routes(srv)
        srv.routes[("www.smoke.localhost", "/")] = _status(
            301, f"https://smoke.localhost:{srv.port}/")
        return srv, Options(timeout=2, attempts=2, backoff=0.05, ca_file=str(ca_path))

    yield make
    for srv in servers:
        srv.close()


def test_tls_valid_certificate_reports_days_to_expiry(tls_server: Any) -> None:
    srv, options = tls_server(90)
    report = smoke_test(_config(srv.port, tls="auto"), "production", options)
    assert report.passed, report.to_dict()
    tls = _by_name(report)["tls api.smoke.localhost"]
    assert tls.detail in ("valid, 89 days to expiry", "valid, 90 days to expiry")
    assert not tls.warning


def test_tls_expiring_soon_warns_but_passes(tls_server: Any) -> None:
    srv, options = tls_server(10)
    tls = _by_name(smoke_test(_config(srv.port, tls="auto"), "production", options))[
        "tls smoke.localhost"]
    assert tls.ok and tls.warning and "expires in" in tls.detail


def test_tls_expired_certificate_fails(tls_server: Any) -> None:
    srv, options = tls_server(-1)
    report = smoke_test(_config(srv.port, tls="auto"), "production", options)
    tls = _by_name(report)["tls api.smoke.localhost"]
    assert not tls.ok and "expired" in tls.detail
    assert not report.passed


def test_tls_certificate_for_another_name_fails(tls_server: Any) -> None:
    srv, options = tls_server(90)
    config = config_from_dict({
        "applications": [{"name": "web-production", "domain": "other.localhost",
                          "resources": {"memory": "64m", "cpus": 0.1}}],
        "vps": {"memory": "1g", "cpus": 1},
        "edge": {"tls": "auto", "httpsPort": srv.port}}, "x.yaml")
    tls = _by_name(smoke_test(config, "production", options))["tls other.localhost"]
    assert not tls.ok and "not valid for other.localhost" in tls.detail


def test_smoke_test_task_prints_json_and_exits_1_on_failure(server: Server,
                                                           tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml
    _healthy_routes(server)
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({
        "applications": [{"name": "api-production", "domain": "api.smoke.localhost",
                          "resources": {"memory": "64m", "cpus": 0.1}}],
        "vps": {"memory": "1g", "cpus": 1},
        "edge": {"tls": "off", "httpPort": server.port}}))
    root = Path(__file__).resolve().parents[2]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(root),
                               "smoke-test", "--env", "production", "--json", "--config",
                               str(config)], capture_output=True, text=True, timeout=60,
                              check=False)
    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["passed"] is True
    server.routes[("api.smoke.localhost", "/api/health")] = _json({"status": "down"})
    bad = run()
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["passed"] is False
    assert bad.stderr.startswith("error: smoke-test production: 1 of 3 checks failed")
