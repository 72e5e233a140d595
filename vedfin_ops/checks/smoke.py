"""The runbook's Step 6 smoke tests, as checks that run in parallel and tell the truth.

Each check has a timeout and retries transient errors (connection refused/reset, timeouts,
5xx) with a short backoff; a wrong answer (404, a health JSON that says "disconnected", a
redirect to the wrong host, an expired certificate) fails at once.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from vedfin_ops.checks.cloudflare import Resolver, system_resolver
from vedfin_ops.checks.endpoints import Endpoint, app_endpoint, base, tls_address
from vedfin_ops.checks.runner import (
    CertificateNotYet,
    Check,
    Failed,
    NotRoutedYet,
    NotYet,
    Transient,
    run_check,
    short,
)
from vedfin_ops.config.model import Application, Config

TLS_WARN_DAYS = 14
DB_HEALTH_SAYS = "Connection successful"
HEALTH = {"status": "ok", "database": "connected", "redis": "connected"}
PGVECTOR_SQL = (
    "CREATE TEMP TABLE vedfin_smoke_vectors (id serial, vec vector(3));",
    "INSERT INTO vedfin_smoke_vectors (vec) VALUES ('[1,2,3]');",
    "SELECT count(*) FROM vedfin_smoke_vectors WHERE vec <-> '[1,2,4]' < 2;",
    "DROP TABLE vedfin_smoke_vectors;",
)


@dataclass
class SmokeReport:
    env: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class Options:
    timeout: float = 5.0
    attempts: int = 3
    backoff: float = 0.5
    ca_file: str | None = None  # a private CA (tests, internal TLS)
    database_url: str | None = None
    warn_days: int = TLS_WARN_DAYS
    tls_wait: float = 0.0  # right after a first deploy: keep asking while the edge gets certs
    resolve: Resolver | None = None  # DNS for the Cloudflare question (tests inject one)


class _SniAdapter(HTTPAdapter):
    """HTTPS to an address with the TLS name of a domain (sandbox, tests): SNI + cert check."""

    def __init__(self, server_hostname: str) -> None:
        self.server_hostname = server_hostname
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self.server_hostname
        kwargs["assert_hostname"] = self.server_hostname
        super().init_poolmanager(*args, **kwargs)


def session_for(endpoint: Endpoint) -> requests.Session:
    """A session that reaches `endpoint` as a browser reaches its domain: at an address other
    than the domain (the sandbox's 127.0.0.1, the origin behind Cloudflare) with the domain as
    TLS name and certificate name."""
    session = requests.Session()
    parts = urlsplit(endpoint.url)
    domain = endpoint.host.split(":")[0]
    if parts.scheme == "https" and parts.hostname != domain:
        session.mount(f"https://{parts.netloc}/", _SniAdapter(domain))
    return session


def _get(endpoint: Endpoint, options: Options, *, method: str = "GET",
         headers: dict[str, str] | None = None) -> requests.Response:
    session = session_for(endpoint)
    url = endpoint.url
    try:
        response = session.request(method, url, headers={**endpoint.headers, **(headers or {})},
                                   timeout=options.timeout, allow_redirects=False,
                                   verify=options.ca_file or True)
    except requests.exceptions.SSLError as exc:
        raise CertificateNotYet(f"TLS: {short(exc)}") from None
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError) as exc:
        # a body cut mid-transfer happens while replicas are replaced: worth another try
        raise Transient(f"{type(exc).__name__}: {short(exc)}") from None
    except requests.RequestException as exc:
        raise Failed(f"{type(exc).__name__}: {short(exc)}") from None
    if response.status_code >= 500:
        raise Transient(f"HTTP {response.status_code}")
    if response.status_code == 404 and response.text == TRAEFIK_NOT_FOUND:
        raise NotRoutedYet("HTTP 404 from Traefik: no router for this host (yet)")
    return response


def _expect_status(endpoint: Endpoint, options: Options, wanted: int = 200) -> str:
    response = _get(endpoint, options)
    if response.status_code != wanted:
        raise Failed(f"HTTP {response.status_code}, expected {wanted}")
    return f"HTTP {response.status_code}"


def _says(endpoint: Endpoint, options: Options, wanted: str) -> str:
    """200 and a body that says `wanted` (the runbook's "Expected: Connection successful"):
    a diagnostics page that answers 200 with an error message must not pass."""
    response = _get(endpoint, options)
    if response.status_code != 200:
        raise Failed(f"HTTP {response.status_code}, expected 200")
    if wanted not in response.text:
        said = response.text.strip().splitlines()[0] if response.text.strip() else "nothing"
        raise Failed(f"HTTP 200 but says {short(said)!r}, expected {wanted!r}")
    return f"HTTP 200, {wanted!r}"


def _cors(endpoint: Endpoint, origin: str, options: Options) -> str:
    """The browser's question before the web calls the api: a CORS preflight with the web's
    origin must be answered with that origin (or `*`) allowed. The runbook checks this in
    DevTools' Network tab; a missing allow breaks every page that calls the api."""
    response = _get(endpoint, options, method="OPTIONS",
                    headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    if response.status_code not in (200, 204):
        raise Failed(f"preflight answered HTTP {response.status_code}, expected 200/204")
    allowed = response.headers.get("Access-Control-Allow-Origin")
    if allowed is None:
        raise Failed(f"no Access-Control-Allow-Origin for {origin}: the browser blocks the "
                     f"web's calls to the api")
    if allowed == "*":
        return ("warning: any origin allowed (*): browsers refuse `*` for calls that send "
                "cookies or credentials")
    if allowed != origin:
        raise Failed(f"Access-Control-Allow-Origin is {short(allowed)!r}, not {origin}")
    return f"{origin} allowed ({allowed})"


def _health(endpoint: Endpoint, options: Options) -> str:
    response = _get(endpoint, options)
    if response.status_code != 200:
        raise Failed(f"HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise Failed("not JSON") from None
    if not isinstance(body, dict):
        raise Failed(f"health is JSON but not an object: {short(response.text.strip())}")
    wrong = {k: body.get(k) for k, v in HEALTH.items() if body.get(k) != v}
    if wrong:
        raise Failed("health says " + ", ".join(f"{k}={v!r}" for k, v in wrong.items()))
    return "status ok, database connected, redis connected"


def _redirect(endpoint: Endpoint, apex: Endpoint, options: Options) -> str:
    response = _get(endpoint, options)
    if response.status_code == 200:
        return "HTTP 200 (served, no redirect)"
    if response.status_code not in (301, 308):
        raise Failed(f"HTTP {response.status_code}, expected 301/308 to the apex or 200")
    location = response.headers.get("Location", "")
    target = urlsplit(location)
    if target.netloc != apex.host:
        raise Failed(f"redirects to {location!r}, not to {apex.host}")
    return f"HTTP {response.status_code} -> {location}"


def tls_check(domain: str, address: str, port: int, options: Options) -> str:
    context = ssl.create_default_context(cafile=options.ca_file)
    try:
        with socket.create_connection((address, port), timeout=options.timeout) as raw, \
                context.wrap_socket(raw, server_hostname=domain) as tls:
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        said = f"certificate not valid for {domain}: {exc.verify_message}"
        if _traefik_default(address, port, domain, options.timeout):
            raise CertificateNotYet(f"{said} (Traefik's default certificate: no router or no "
                                    f"issued certificate for {domain} yet)") from None
        raise Failed(said) from None
    except (OSError, TimeoutError) as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from None
    if not cert:
        raise Failed("no certificate presented")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(cert["notAfter"])), UTC)
    days = (expires - datetime.now(UTC)).days
    if days < options.warn_days:
        return f"warning: valid, expires in {days} days ({expires:%Y-%m-%d})"
    return f"valid, {days} days to expiry"


# What Traefik answers for a name it has no router for, and the subject of the certificate
# it serves for a name it has no certificate for.
TRAEFIK_NOT_FOUND = "404 page not found\n"
TRAEFIK_DEFAULT_CN = b"TRAEFIK DEFAULT CERT"


def _traefik_default(address: str, port: int, domain: str, timeout: float) -> bool:
    """Is the certificate served for `domain` Traefik's self-signed default? Asked without
    verification, only after verification failed; the subject is plain ASCII in the DER."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=domain) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    except OSError:
        return False
    return TRAEFIK_DEFAULT_CN in der


def _patient(check: Callable[[], str], seconds: float) -> str:
    """Retry a check's transient failures and untrusted certificates for `seconds` (an
    edge that just started, getting its certificates)."""
    from vedfin_ops.run.polling import TimedOut, until

    try:
        return until(check, timeout=seconds, interval=2.0, transient=(Transient, NotYet))
    except TimedOut as exc:
        raise Failed(f"{exc.last} (still failing after {seconds:g}s)") from None


def _pgvector(url: str, options: Options) -> str:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=int(options.timeout)) as conn:
            for statement in PGVECTOR_SQL:
                cursor = conn.execute(statement)
            count = cursor.fetchone() if cursor.description else None
    except psycopg.OperationalError as exc:
        raise Transient(short(str(exc).strip().splitlines()[0])) from None
    except psycopg.Error as exc:
        raise Failed(short(str(exc).strip().splitlines()[0])) from None
    return f"temp table, insert, distance query ok ({count})"


def checks(config: Config, env: str, options: Options) -> list[tuple[str, Callable[[], str]]]:
    """(name, function) for every check of Step 6 that applies to `env`."""
    out: list[tuple[str, Callable[[], str]]] = []
    for app in config.apps(env):
        out += _app_checks(config, app, options)
    if options.database_url:
        from vedfin_ops import extras

        extras.require("psycopg", "smoke's --database-url (the pgvector check)")
        url = options.database_url
        out.append(("pgvector", lambda: _pgvector(url, options)))
    return out


def _app_checks(config: Config, app: Application,
                options: Options) -> list[tuple[str, Callable[[], str]]]:
    out: list[tuple[str, Callable[[], str]]] = []
    if not app.domain:
        return out

    def at(path: str) -> Endpoint:
        endpoint = app_endpoint(config, app, path)
        assert endpoint is not None
        return endpoint

    if app.app == "api":
        out.append((f"{app.name} /api/health", lambda: _health(at("/api/health"), options)))
        out.append((f"{app.name} /api/auth/health",
                    lambda: _expect_status(at("/api/auth/health"), options)))
        out.append((f"{app.name} /api/debug/diagnostics/db-health",
                    lambda: _says(at("/api/debug/diagnostics/db-health"), options,
                                  DB_HEALTH_SAYS)))
        web = next((w for w in config.apps(app.env) if w.app == "web" and w.domain), None)
        if web is not None and web.domain and config.verify.cors_path:
            front = base(config, web.domain)
            origin = f"{urlsplit(front.url).scheme}://{front.host}"
            out.append((f"{app.name} CORS from {web.domain}",
                        partial(_cors, at(config.verify.cors_path), origin, options)))
    else:
        out.append((f"{app.name} {app.health.path}",
                    lambda: _expect_status(at(app.health.path), options)))
    apex = base(config, app.domain)
    for extra in app.additional_domains:
        endpoint = base(config, extra)
        out.append((f"{extra} -> {app.domain}",
                    partial(_redirect, Endpoint(endpoint.url + "/", endpoint.host), apex,
                            options)))
    if config.edge.tls != "off":
        for domain in app.domains:
            address = tls_address(config, domain, options.resolve or system_resolver)
            port = config.edge.https_port
            out.append((f"tls {domain}", partial(tls_check, domain, address, port, options)))
    if options.tls_wait > 0 and (config.edge.tls != "off" or config.edge.mode == "traefik"):
        # an edge that starts routing: every check waits for its certificate (and for
        # Traefik's next poll of the engine), not only the tls items
        out = [(name, partial(_patient, check, options.tls_wait)) for name, check in out]
    return out


def trusting(config: Config, options: Options) -> Options:
    """The config's own CA root (`edge.caRoot`, e.g. Caddy's internal CA) unless the caller
    named one: without it `tls: internal` could never pass."""
    if options.ca_file is None and config.edge.ca_root:
        return replace(options, ca_file=config.edge.ca_root)
    return options


def smoke_test(config: Config, env: str, options: Options | None = None) -> SmokeReport:
    """Run every check in parallel; the report lists them in a stable order."""
    config.require_env(env)
    options = trusting(config, options or Options())
    todo = checks(config, env, options)
    report = SmokeReport(env)
    if not todo:
        return report
    with ThreadPoolExecutor(max_workers=min(16, len(todo))) as pool:
        report.checks = list(pool.map(
            lambda item: run_check(item[0], item[1], attempts=options.attempts,
                                   backoff=options.backoff), todo))
    return report
