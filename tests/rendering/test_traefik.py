"""`edge.mode: traefik`: the apps labelled for an existing Traefik v3 (Dokploy's), no Caddy of
ours; what preflight says about that Traefik; verify waiting through Traefik's default
certificate. The same behaviour runs for real in tests/integration/test_traefik.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.checks.test_preflight import _by_name, _resolver, _self_signed_server, _tls_config
from vedfin_ops import render
from vedfin_ops.checks.preflight import preflight, traefik_check
from vedfin_ops.checks.runner import CertificateNotYet, Failed
from vedfin_ops.checks.smoke import Options, _patient
from vedfin_ops.config.model import Config, Traefik
from vedfin_ops.errors import ConfigError
from vedfin_ops.run.env_run import shared_images

LABEL = "traefik.http."


def _traefik(data: dict[str, Any], **edge: Any) -> None:
    # the shipped config names Caddy's ACME email, which Traefik mode refuses (its own)
    kept = {k: v for k, v in data.get("edge", {}).items() if k != "email"}
    data["edge"] = {**kept, "mode": "traefik", **edge}


@pytest.fixture
def traefik(variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> Config:
    return variant(_traefik)


def _labels(files: Any, env: str, service: str) -> dict[str, str]:
    stack = yaml.safe_load(files[f"stacks/{env}.yml"])
    labels: dict[str, str] = stack["services"][service]["deploy"]["labels"]
    return labels


def test_traefik_mode_deploys_no_caddy_and_joins_traefik_s_network(traefik: Config) -> None:
    files = render(traefik, "production", tag="v1")
    assert "edge/Caddyfile" not in files
    shared = yaml.safe_load(files["stacks/shared.yml"])
    assert set(shared["services"]) == {"postgres", "redis"}
    assert "edge_data" not in shared["volumes"] and "caddyfile" not in shared["configs"]
    assert set(shared_images(traefik)) == {"vedfin-shared_postgres", "vedfin-shared_redis"}
    stack = yaml.safe_load(files["stacks/production.yml"])
    assert stack["networks"]["edge"] == {"external": True, "name": "dokploy-network"}
    for service in stack["services"].values():
        assert service["networks"] == ["shared", "edge"]
        assert service["stop_signal"] == "SIGURG" and service["stop_grace_period"] == "20s"


def test_each_domain_gets_an_https_router_with_the_resolver_and_http_redirects(
        traefik: Config) -> None:
    files = render(traefik, "production", tag="v1")
    api = _labels(files, "production", "api-production")
    assert api["traefik.enable"] == "true"
    assert api["traefik.swarm.network"] == "dokploy-network"
    router = f"{LABEL}routers.vedfin_api-production"
    assert api[f"{router}.rule"] == "Host(`api.v-edfinance.com`)"
    assert api[f"{router}.entrypoints"] == "websecure"
    assert api[f"{router}.tls.certresolver"] == "letsencrypt"
    assert api[f"{router}.middlewares"] == "vedfin_api-production-retry"
    assert api[f"{LABEL}services.vedfin_api-production.loadbalancer.server.port"] == "3000"
    health = f"{LABEL}services.vedfin_api-production.loadbalancer.healthcheck"
    assert api[f"{health}.path"] == "/api/health"
    assert api[f"{LABEL}middlewares.vedfin_api-production-retry.retry.attempts"] == "4"
    assert api[f"{router}-http.entrypoints"] == "web"
    assert api[f"{router}-http.middlewares"] == "vedfin_api-production-https"
    assert f"{router}-http.tls.certresolver" not in api
    assert api[f"{LABEL}middlewares.vedfin_api-production-https.redirectscheme.scheme"] == \
        "https"
    assert not any(".redirectscheme.port" in k for k in api)  # 443 is the default


def test_www_redirects_to_the_apex_keeping_the_path_and_the_public_port(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    config = variant(lambda d: _traefik(d, httpsPort=28443))
    files = render(config, "production", tag="v1")
    web = _labels(files, "production", "web-production")
    aliases = f"{LABEL}routers.vedfin_web-production-aliases"
    assert web[f"{aliases}.rule"] == "Host(`www.v-edfinance.com`)"
    apex = f"{LABEL}middlewares.vedfin_web-production-apex.redirectregex"
    # the stack file doubles `$` (the stack loader reads `$$` as `$`); the label is `${1}`
    assert web[f"{apex}.replacement"] == "https://v-edfinance.com:28443$${1}"
    regex = web[f"{apex}.regex"].replace("$$", "$")
    assert re.sub(regex, "https://v-edfinance.com:28443\\1",
                  "https://www.v-edfinance.com:28443/a/b?c=1") == \
        "https://v-edfinance.com:28443/a/b?c=1"
    assert web[f"{LABEL}middlewares.vedfin_web-production-https.redirectscheme.port"] == \
        "28443"
    http = f"{LABEL}routers.vedfin_web-production-http.rule"
    assert web[http] == "Host(`v-edfinance.com`) || Host(`www.v-edfinance.com`)"


def test_router_names_of_two_configs_on_one_traefik_do_not_collide(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    one = variant(_traefik)
    other = variant(lambda d: (_traefik(d), d.setdefault("remote", {}).update(
        {"stackPrefix": "other"})))
    keys = set(_labels(render(one, "production"), "production", "api-production"))
    theirs = set(_labels(render(other, "production"), "production", "api-production"))
    shared = {k for k in keys & theirs if k.startswith(LABEL)}
    assert not shared, shared


def test_tls_off_routes_plain_http_without_a_resolver(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    config = variant(lambda d: _traefik(d, tls="off"))
    api = _labels(render(config, "production"), "production", "api-production")
    assert api[f"{LABEL}routers.vedfin_api-production.entrypoints"] == "web"
    assert not any("certresolver" in k or "redirectscheme" in k for k in api)


def test_drain_zero_stops_tasks_at_once_as_with_caddy(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    config = variant(lambda d: _traefik(d, traefik={"drain": "0s", "retryAttempts": 0}))
    stack = yaml.safe_load(render(config, "production")["stacks/production.yml"])
    api = stack["services"]["api-production"]
    assert "stop_signal" not in api and api["stop_grace_period"] == "10s"
    assert not any("retry" in k for k in api["deploy"]["labels"])


@pytest.mark.parametrize(("edge", "key"), [
    ({"tls": "internal", "caRoot": "x.pem"}, "edge"),
    ({"acmeCA": "https://acme.example/dir"}, "edge"),
    ({"traefik": {"network": "bad name"}}, "edge.traefik.network"),
    ({"traefik": {"certResolver": "le.prod"}}, "edge.traefik.certResolver"),
    ({"traefik": {"entryPoint": "web`)"}}, "edge.traefik.entryPoint"),
    ({"traefik": {"drain": "-1s"}}, "edge.traefik.drain"),
    ({"traefik": {"retryAttempts": 99}}, "edge.traefik.retryAttempts"),
    ({"traefik": {"service": ""}}, "edge.traefik.service"),
    ({"traefik": {"service": "my.traefik"}}, "edge.traefik.service"),
    ({"traefik": {"network": "vedfin"}}, "edge.traefik.network"),
    ({"email": "ops@example.com"}, "edge.email"),
    ({"traefik": {"drain": "590s"}}, "edge.traefik.drain"),
    ({"mode": "nginx"}, "edge.mode"),
])
def test_bad_traefik_settings_name_the_key(
        variant: Callable[[Callable[[dict[str, Any]], Any]], Config], edge: dict[str, Any],
        key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        variant(lambda d: _traefik(d, **edge))
    assert f": {key}" in str(caught.value) or f" {key}:" in str(caught.value), str(caught.value)


# --- preflight: the Traefik must already be there ---

TRAEFIK = Traefik()
NETWORKS = "bridge|bridge|local\ndokploy-network|overlay|swarm\nvedfin|overlay|swarm\n"
HELD = "dokploy-traefik|0.0.0.0:80->80/tcp, 0.0.0.0:443->443/tcp, 0.0.0.0:443->443/udp\n"


def test_traefik_holding_the_ports_on_its_overlay_passes() -> None:
    assert traefik_check([80, 443], HELD, "", NETWORKS, TRAEFIK) == \
        "dokploy-traefik holds 80, 443; apps join dokploy-network"
    # Dokploy's older installs run it as a swarm service publishing in host mode
    service = "dokploy-traefik|*:80->80/tcp, *:443->443/tcp\n"
    assert traefik_check([80, 443], "", service, NETWORKS, TRAEFIK).startswith(
        "dokploy-traefik holds")


@pytest.mark.parametrize(("ps", "networks", "said"), [
    ("", NETWORKS, "port 80 is not published by dokploy-traefik"),
    ("nginx|0.0.0.0:443->443/tcp\n" + HELD.replace("443->443/tcp, ", ""), NETWORKS,
     "port 443 is held by nginx, not dokploy-traefik"),
    (HELD, "bridge|bridge|local\n", "network dokploy-network does not exist"),
    (HELD, "dokploy-network|bridge|local\n",
     "network dokploy-network is bridge/local, not a swarm overlay"),
])
def test_a_missing_traefik_or_network_fails_before_anything_moves(ps: str, networks: str,
                                                                  said: str) -> None:
    with pytest.raises(Failed) as caught:
        traefik_check([80, 443], ps, "", networks, TRAEFIK)
    assert said in str(caught.value)
    assert "is Dokploy's Traefik running?" in str(caught.value)


def test_preflight_in_traefik_mode_asks_for_traefik_not_for_free_ports(traefik: Config,
                                                                       monkeypatch: Any) -> None:
    for name in traefik.secret_names("production"):
        monkeypatch.setenv(name, "x")
    probe = (f"--PORTS--\n{HELD}--SERVICES--\n--NETWORKS--\n{NETWORKS}--LISTEN--\n"
             "LISTEN 0 4096 0.0.0.0:443 0.0.0.0:* \n--MONITORING--\n")
    checks = _by_name(preflight(None, traefik, "production", resolve=_resolver({}),
                                probe=probe))
    assert "edge ports" not in checks
    assert checks["edge: traefik"].ok, checks["edge: traefik"].detail
    # Traefik's ports are its own: published, but not a firewall finding
    assert checks["firewall: published ports"].ok, checks["firewall: published ports"].detail



def test_moving_from_our_caddy_to_traefik_warns_about_the_edge_this_deploy_removes(
        traefik: Config, monkeypatch: Any) -> None:
    for name in traefik.secret_names("production"):
        monkeypatch.setenv(name, "x")
    traefik.edge.http_port, traefik.edge.https_port = 28080, 28443
    held = "dokploy-traefik|127.0.0.1:28080->80/tcp, 127.0.0.1:28443->443/tcp\n"
    caddy = "vedfin-shared_edge.1.abc|0.0.0.0:18080->80/tcp, 0.0.0.0:18443->443/tcp\n"
    probe = (f"--PORTS--\n{held}{caddy}--SERVICES--\n--NETWORKS--\n{NETWORKS}--LISTEN--\n"
             "--MONITORING--\n")
    checks = _by_name(preflight(None, traefik, "production", resolve=_resolver({}),
                                probe=probe))
    ports = checks["firewall: published ports"]
    assert ports.ok and ports.warning, ports.detail
    assert "vedfin-shared_edge.1.abc publishes 18080" in ports.detail
    assert checks["edge: traefik"].ok, checks["edge: traefik"].detail


# --- TLS before the routers exist: Traefik's default certificate ---

@pytest.fixture
def traefik_default_tls(tmp_path: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 presenting a certificate like Traefik's default one."""
    yield from _self_signed_server(tmp_path, "127.0.0.1", "TRAEFIK DEFAULT CERT")


def _tls_item(config: Config, **kwargs: Any) -> Any:
    return _by_name(preflight(None, config, "production", resolve=_resolver({}), probe="",
                              options=Options(timeout=2), **kwargs))["tls"]


def test_traefik_s_default_certificate_is_pending_only_while_a_route_starts(
        traefik_default_tls: int) -> None:
    config = _tls_config(traefik_default_tls)
    config.edge.mode = "traefik"
    tls = _tls_item(config, first_deploy=True)
    assert tls.ok and tls.warning and tls.detail.startswith("warning: pending"), tls.detail
    again = _tls_item(config)  # a route that should exist: Traefik has no certificate for it
    assert not again.ok and "Traefik's default certificate" in again.detail, again.detail


def test_any_other_wrong_certificate_fails_even_when_a_route_starts(tmp_path: Path) -> None:
    server = _self_signed_server(tmp_path, "127.0.0.1")
    config = _tls_config(next(server))
    config.edge.mode = "traefik"
    try:
        tls = _tls_item(config, first_deploy=True)
        assert not tls.ok and tls.detail.startswith("certificate not valid for api.pf")
        assert "Traefik" not in tls.detail
    finally:
        next(server, None)


def test_a_new_domain_in_traefik_mode_starts_a_route_and_an_unchanged_one_does_not(
        traefik: Config, variant: Callable[[Callable[[dict[str, Any]], Any]], Config]) -> None:
    from vedfin_ops.checks.endpoints import routes

    before = routes(traefik, "production")
    assert "traefik https://api.v-edfinance.com api.v-edfinance.com" in before

    def more(data: dict[str, Any]) -> None:
        _traefik(data)
        data["applications"][0]["additionalDomains"] = ["api2.v-edfinance.com"]

    assert routes(variant(more), "production") != before
    assert routes(variant(_traefik), "production") == before
    assert routes(variant(lambda d: _traefik(d, tls="off")), "production") != before


def test_verify_retries_an_untrusted_certificate_only_while_waiting() -> None:
    answers = iter([CertificateNotYet("TLS: self-signed certificate"), "valid"])

    def check() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _patient(check, 10) == "valid"  # one retry, 2 s later
    assert issubclass(CertificateNotYet, Failed)  # not waiting: a failure at once


def test_traefik_s_own_404_is_not_routed_yet_and_an_app_s_404_is_a_failure() -> None:
    import http.server
    import threading

    from vedfin_ops.checks.endpoints import Endpoint
    from vedfin_ops.checks.runner import NotRoutedYet
    from vedfin_ops.checks.smoke import TRAEFIK_NOT_FOUND, _expect_status

    bodies = iter([TRAEFIK_NOT_FOUND, "Cannot GET /\n"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = next(bodies).encode()
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        endpoint = Endpoint(url, "api.x.localhost")
        with pytest.raises(NotRoutedYet, match="no router for this host"):
            _expect_status(endpoint, Options(timeout=2))
        with pytest.raises(Failed, match="HTTP 404, expected 200") as caught:
            _expect_status(endpoint, Options(timeout=2))
        assert not isinstance(caught.value, NotRoutedYet)
    finally:
        server.shutdown()
        server.server_close()
