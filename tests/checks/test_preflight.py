"""The Pre-Deployment Checklist, each item passing and failing.

ufw's answers are outputs recorded from a real ufw 0.36.2 (tests/data/ufw/record.sh says how);
DNS goes through an injectable resolver; the host is a recorded probe (or a fake host that
answers it); TLS goes to 127.0.0.1 only. The host probe of the sandbox is in the integration
tests (tests/integration/test_checks_on_sandbox.py).
"""

from __future__ import annotations

import datetime as dt
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import SHIPPED
from vedfin_ops.checks.preflight import preflight, published_ports_check, ufw_check
from vedfin_ops.checks.runner import Failed
from vedfin_ops.checks.smoke import Options
from vedfin_ops.config.loader import config_from_dict, load_config
from vedfin_ops.remote.probes.host_facts import HOST_PROBE

UFW = Path(__file__).parent.parent / "data" / "ufw"
VPS = "103.54.153.248"


def _ufw(name: str) -> str:
    return (UFW / f"{name}.txt").read_text()


def test_ufw_as_the_runbook_wants_passes() -> None:
    assert ufw_check(_ufw("runbook"), [22, 80, 443], [3000]) == "active; allows 22, 80, 443"


def test_ufw_with_3000_open_fails() -> None:
    with pytest.raises(Failed, match="allowed but must not be: 3000"):
        ufw_check(_ufw("port-3000-open"), [22, 80, 443], [3000])


def test_ufw_without_443_fails() -> None:
    with pytest.raises(Failed, match="not allowed: 443"):
        ufw_check(_ufw("no-443"), [22, 80, 443], [3000])


def test_ufw_inactive_fails() -> None:
    with pytest.raises(Failed, match=r"ufw is not active \(Status: inactive\)"):
        ufw_check(_ufw("inactive"), [22, 80, 443], [3000])


def test_published_ports_other_than_the_edge_fail() -> None:
    docker_ps = ("vedfin-shared_edge.1.x|0.0.0.0:80->80/tcp, :::80->80/tcp, "
                 "0.0.0.0:443->443/tcp\napi-debug|0.0.0.0:3000->3000/tcp\nredis|6379/tcp\n")
    with pytest.raises(Failed, match="api-debug publishes 3000"):
        published_ports_check(docker_ps, {80, 443})
    assert published_ports_check(docker_ps.replace("api-debug|0.0.0.0:3000->3000/tcp", ""),
                                 {80, 443}) == "only 80, 443 published"


def _resolver(table: dict[str, tuple[str, list[str], list[str]]]) -> Any:
    def resolve(name: str) -> tuple[str, list[str], list[str]]:
        if name not in table:
            raise OSError(f"[Errno -2] Name or service not known: {name}")
        return table[name]
    return resolve


GOOD_DNS = {
    "api.v-edfinance.com": ("api.v-edfinance.com", [], [VPS]),
    "v-edfinance.com": ("v-edfinance.com", [], [VPS]),
    "www.v-edfinance.com": ("v-edfinance.com", ["www.v-edfinance.com"], [VPS]),
}
# With edge.tls off (so no test reaches for a real certificate) the edge publishes 80 only.
PROBE = ("--UFW--\n" + _ufw("runbook") + "--PORTS--\nvedfin-shared_edge.1.a|0.0.0.0:80->80/tcp,"
         " :::80->80/tcp\n--MONITORING--\n19999 open\n3002 open\n")


def _by_name(report: Any) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Any:
    cfg = load_config(SHIPPED)
    for name in cfg.secret_names("production"):
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    return cfg.model_copy(update={"edge": cfg.edge.model_copy(update={"tls": "off"})})


def test_checklist_passes_with_everything_in_place(config: Any) -> None:
    report = preflight(None, config, "production", resolve=_resolver(GOOD_DNS), probe=PROBE)
    checks = _by_name(report)
    assert report.passed, report.to_dict()
    assert checks["dns"].detail == (
        "api.v-edfinance.com -> 103.54.153.248; v-edfinance.com -> 103.54.153.248; "
        "www.v-edfinance.com CNAME v-edfinance.com")
    assert checks["capacity"].warning and "over-committed" in checks["capacity"].detail
    assert set(checks) == {"secrets", "dns", "tls", "firewall: ufw",
                           "firewall: published ports", "monitoring", "capacity"}


def test_missing_secret_names_it_and_no_value(config: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    report = preflight(None, config, "production", resolve=_resolver(GOOD_DNS), probe=PROBE)
    secrets = _by_name(report)["secrets"]
    assert not secrets.ok and secrets.detail == "not set: GEMINI_API_KEY"
    assert "value-of" not in str(report.to_dict())


def test_domain_pointing_elsewhere_fails(config: Any) -> None:
    table = {**GOOD_DNS, "api.v-edfinance.com": ("api.v-edfinance.com", [], ["10.9.9.9"])}
    dns = _by_name(preflight(None, config, "production", resolve=_resolver(table),
                             probe=PROBE))["dns"]
    assert not dns.ok and dns.detail == "api.v-edfinance.com -> 10.9.9.9, not 103.54.153.248"


def test_www_with_the_same_a_record_passes(config: Any) -> None:
    table = {**GOOD_DNS, "www.v-edfinance.com": ("www.v-edfinance.com", [], [VPS])}
    dns = _by_name(preflight(None, config, "production", resolve=_resolver(table),
                             probe=PROBE))["dns"]
    assert dns.ok and "www.v-edfinance.com -> same A as v-edfinance.com" in dns.detail


def test_www_elsewhere_and_unresolvable_domains_fail(config: Any) -> None:
    table = {**GOOD_DNS, "www.v-edfinance.com": ("www.v-edfinance.com", [], ["10.1.1.1"])}
    dns = _by_name(preflight(None, config, "production", resolve=_resolver(table),
                             probe=PROBE))["dns"]
    assert not dns.ok and "neither a CNAME of v-edfinance.com nor the same address" in dns.detail
    table = {k: v for k, v in GOOD_DNS.items() if k != "v-edfinance.com"}
    dns = _by_name(preflight(None, config, "production", resolve=_resolver(table),
                             probe=PROBE))["dns"]
    assert not dns.ok and dns.detail.startswith("v-edfinance.com does not resolve")


def test_monitoring_down_fails(config: Any) -> None:
    probe = PROBE.replace("3002 open", "3002 closed")
    check = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                               probe=probe))["monitoring"]
    assert not check.ok and check.detail == "not answering on the host: Uptime Kuma (3002)"


def test_a_published_443_without_tls_is_flagged(config: Any) -> None:
    """Our own edge on 443 from an earlier HTTPS config: said, but not in the way of the
    deploy that renders it without (blocking it would block the fix); anyone else's fails."""
    probe = PROBE.replace(":::80->80/tcp", "0.0.0.0:443->443/tcp")
    check = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                               probe=probe))["firewall: published ports"]
    assert check.ok and check.warning
    assert check.detail == ("warning: only 80 published once deployed; now "
                            "vedfin-shared_edge.1.a publishes 443, from an earlier config")
    other = PROBE.replace("vedfin-shared_edge.1.a|", "someone-else|")
    other = other.replace(":::80->80/tcp", "0.0.0.0:443->443/tcp")
    check = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                               probe=other))["firewall: published ports"]
    assert not check.ok and "someone-else publishes 443" in check.detail


def test_firewall_failures_fail_the_checklist(config: Any) -> None:
    probe = PROBE.replace(_ufw("runbook"), _ufw("port-3000-open"))
    report = preflight(None, config, "production", resolve=_resolver(GOOD_DNS), probe=probe)
    assert not report.passed and not _by_name(report)["firewall: ufw"].ok


# --- ufw as it is often set up (recorded with `ufw status verbose`) ---

def test_a_limit_rule_allows_rate_limited() -> None:
    # `ufw limit 22/tcp` (the usual way to guard ssh) plus `ufw allow 80,443/tcp`
    assert ufw_check(_ufw("limit-and-list"), [22, 80, 443], [3000]) == (
        "active; allows 22 (limited), 80, 443")


def test_port_lists_and_application_profiles_are_read() -> None:
    # `ufw allow OpenSSH` is shown as `22/tcp (OpenSSH)`; `80,443/tcp` is one rule
    assert ufw_check(_ufw("app-and-list"), [22, 80, 443], [3000]) == "active; allows 22, 80, 443"
    plain = ("Status: active\n\nTo                         Action      From\n"
             "--                         ------      ----\n"
             "OpenSSH                    ALLOW       Anywhere\n"
             "Nginx Full                 ALLOW       Anywhere\n")  # `ufw status`, not verbose
    assert ufw_check(plain, [22, 80, 443], [3000]) == "active; allows OpenSSH, Nginx Full"


def test_a_range_covering_the_app_port_exposes_it() -> None:
    with pytest.raises(Failed, match=r"allowed but must not be: 3000 \(by 3000:3010/tcp ALLOW\)"):
        ufw_check(_ufw("range-3000"), [22, 80, 443], [3000])


def test_rules_match_in_order_and_by_protocol() -> None:
    # `deny 3000/tcp` before `allow 3000:3010/tcp`: the deny wins, as in ufw
    assert ufw_check(_ufw("deny-before-range"), [22, 80, 443], [3000]).startswith("active")
    # 3000/udp is not the app's TCP port
    assert ufw_check(_ufw("udp-3000"), [22, 80, 443], [3000]).startswith("active")


def test_an_allow_all_from_one_address_exposes_the_app_port_to_it() -> None:
    with pytest.raises(Failed, match=r"3000 \(by Anywhere ALLOW from 203\.0\.113\.7\)"):
        ufw_check(_ufw("all-from-one-address"), [22, 80, 443], [3000])


def test_a_default_allow_incoming_policy_fails() -> None:
    with pytest.raises(Failed, match=r"default incoming policy is allow.*"
                                     r"`ufw default deny incoming`.*3000 \(by the default"):
        ufw_check(_ufw("default-allow"), [22, 80, 443], [3000])


def test_ufw_without_root_names_the_sudoers_line() -> None:
    line = "deploy ALL=(root) NOPASSWD: /usr/sbin/ufw status verbose"
    with pytest.raises(Failed, match="needs root") as err:
        ufw_check(_ufw("not-root"), [22, 80, 443], [3000], user="deploy")
    assert line in str(err.value) and "You need to be root" in str(err.value)
    with pytest.raises(Failed, match="a password is required") as err:
        ufw_check(_ufw("sudo-password"), [22, 80, 443], [3000])
    assert "<deploy-user> ALL=(root) NOPASSWD: /usr/sbin/ufw status verbose" in str(err.value)
    assert not str(err.value).startswith("error:")


def test_ufw_missing_on_the_host_says_so() -> None:
    with pytest.raises(Failed, match="ufw is not installed on the host"):
        ufw_check("bash: line 4: ufw: command not found\n", [22, 80, 443], [3000])


# --- published ports ---

def test_ports_published_on_loopback_only_are_not_reachable() -> None:
    docker_ps = ("vedfin-shared_edge.1.a|0.0.0.0:80->80/tcp, [::]:80->80/tcp\n"
                 "pg|127.0.0.1:5432->5432/tcp, [::1]:5432->5432/tcp\n"
                 "old-docker|::1:6379->6379/tcp, 127.0.0.2:9000->9000/tcp\n")
    assert published_ports_check(docker_ps, {80}) == "only 80 published"
    with pytest.raises(Failed, match="lan publishes 3000"):
        published_ports_check(docker_ps + "lan|10.0.0.5:3000->3000/tcp\n", {80})


def test_published_ranges_and_swarm_ingress_ports_are_seen() -> None:
    docker_ps = "vedfin-shared_edge.1.a|0.0.0.0:80->80/tcp\n"
    with pytest.raises(Failed, match="dev publishes 3000-3001 "):
        published_ports_check(docker_ps + "dev|0.0.0.0:3000-3001->3000-3001/tcp\n", {80})
    with pytest.raises(Failed, match="edge publishes 79-80"):
        published_ports_check("edge|0.0.0.0:79-80->79-80/tcp\n", {80})
    services = ("vedfin-shared_edge|*:80->80/tcp, *:443->443/tcp\n"
                "vedfin-dev_api-dev|*:8080->80/tcp\nvedfin-shared_redis|\n")
    with pytest.raises(Failed, match=r"vedfin-dev_api-dev publishes 8080 \(swarm ingress\)"):
        published_ports_check(docker_ps, {80, 443}, services)
    assert published_ports_check(docker_ps, {80, 443}, services.replace(
        "vedfin-dev_api-dev|*:8080->80/tcp\n", "")) == "only 80, 443 published"


class _FakeHost:
    """Answers the one probe command with recorded text, and keeps the command."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.commands: list[str] = []

    def run(self, command: str, what: str = "") -> str:
        self.commands.append(command)
        return self.answer


def test_the_probe_asks_ufw_verbose_with_sudo_and_lists_services(config: Any) -> None:
    assert "sudo -n ufw status verbose" in HOST_PROBE
    assert "docker service ls --format '{{.Name}}|{{.Ports}}'" in HOST_PROBE
    host = _FakeHost("--WHO--\ndeploy\n--UFW--\n" + _ufw("sudo-password")
                     + "--PORTS--\nvedfin-shared_edge.1.a|0.0.0.0:80->80/tcp\n"
                     "--SERVICES--\nvedfin-dev_api-dev|*:3000->3000/tcp\n"
                     "--MONITORING--\n19999 open\n3002 open\n")
    checks = _by_name(preflight(host, config, "production", resolve=_resolver(GOOD_DNS)))
    assert len(host.commands) == 1
    ufw = checks["firewall: ufw"]
    assert not ufw.ok and "deploy ALL=(root) NOPASSWD: /usr/sbin/ufw status verbose" in ufw.detail
    ports = checks["firewall: published ports"]
    assert not ports.ok and "vedfin-dev_api-dev publishes 3000 (swarm ingress)" in ports.detail
    assert checks["monitoring"].ok


# --- TLS on a first deploy: no edge answers yet ---

def _tls_config(port: int) -> Any:
    return config_from_dict({
        "applications": [
            {"name": "api-production", "domain": "api.pf.localhost",
             "resources": {"memory": "64m", "cpus": 0.1}},
            {"name": "web-production", "domain": "pf.localhost",
             "resources": {"memory": "64m", "cpus": 0.1}},
        ],
        "vps": {"memory": "1g", "cpus": 1, "address": "127.0.0.1"},
        "edge": {"tls": "auto", "httpsPort": port},
    }, "pf.yaml")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on (bound, so no one else takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def self_signed_tls(tmp_path: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 whose certificate no one trusts (self-signed)."""
    yield from _self_signed_server(tmp_path, "127.0.0.1")


@pytest.fixture
def origin_tls(tmp_path: Path) -> Iterator[int]:
    """The same on 127.0.0.2: an origin that only an address other than the domain's
    reaches."""
    yield from _self_signed_server(tmp_path, "127.0.0.2")


def _self_signed_server(tmp_path: Path, host: str, subject: str = "api.pf.localhost"
                        ) -> Iterator[int]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.pf.localhost")]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")

    class Handshake(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                with context.wrap_socket(self.request, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client refuses the certificate: what the test wants

    server = socketserver.ThreadingTCPServer((host, 0), Handshake)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _tls(config: Any, **kwargs: Any) -> Any:
    report = preflight(None, config, "production", resolve=_resolver({}), probe=PROBE,
                       options=Options(timeout=2), **kwargs)
    return _by_name(report)["tls"]


def test_first_deploy_tls_without_an_edge_is_pending(closed_port: int) -> None:
    tls = _tls(_tls_config(closed_port), first_deploy=True)
    assert tls.ok and tls.warning
    assert tls.detail == ("warning: pending: first deploy, checked by verify after the rollout "
                          "(api.pf.localhost, pf.localhost)")


def test_tls_without_an_edge_fails_when_not_a_first_deploy(closed_port: int) -> None:
    tls = _tls(_tls_config(closed_port))
    assert not tls.ok and tls.detail.startswith("api.pf.localhost: ConnectionRefusedError")


def test_first_deploy_does_not_excuse_a_wrong_certificate(self_signed_tls: int) -> None:
    tls = _tls(_tls_config(self_signed_tls), first_deploy=True)
    assert not tls.ok
    assert tls.detail.startswith("certificate not valid for api.pf.localhost")


# --- capacity: the gate's warning is an ok item, flagged ---

def _meminfo(total_mb: int, available_mb: int, swap_mb: int, swap_free_mb: int) -> str:
    return (f"MemTotal: {total_mb * 1024} kB\nMemAvailable: {available_mb * 1024} kB\n"
            f"SwapTotal: {swap_mb * 1024} kB\nSwapFree: {swap_free_mb * 1024} kB\n"
            "--LOAD--\n1.5 1.2 1.0 2/300 99\n--CPUS--\n2\n--STATS--\n")


def test_capacity_past_the_alert_is_a_warning_and_past_ram_plus_swap_fails(config: Any) -> None:
    # The runbook's normal load: 4200 MiB used (3900 RAM + 300 swap) of 4096 + 2048; nothing
    # measured per service, so the surge is one replica of each at its limit (1536 + 1024).
    busy = PROBE + "--USAGE--\n" + _meminfo(4096, 196, 2048, 1748)
    item = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                              probe=busy))["capacity"]
    assert not item.ok and "exceeds RAM + swap (6144 MiB)" in item.detail  # 4200 + 2560
    assert item.detail.endswith("(--force to deploy anyway)")
    calm = PROBE + "--USAGE--\n" + _meminfo(4096, 696, 2048, 2048)  # 3400 + 2560 = 5960
    item = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                              probe=calm))["capacity"]
    assert item.ok and item.warning and "past the 90% alert" in item.detail


def test_a_host_without_the_planned_swap_is_a_warning_naming_the_fix(config: Any) -> None:
    """The runbook's plan is 4 GB RAM + 2 GB swap; a VPS without the swap file warns (the
    live gate measures what is there, so it is not a failure)."""
    none = PROBE + "--USAGE--\n" + _meminfo(4096, 3000, 0, 0)
    item = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                              probe=none))["swap"]
    assert item.ok and item.warning
    assert item.detail.startswith("warning: the host has 0 MiB of swap, vps.swap plans 2048 "
                                  "MiB (add a swap file: fallocate -l 2G /swapfile")
    planned = PROBE + "--USAGE--\n" + _meminfo(4096, 3000, 2048, 2048)
    item = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                              probe=planned))["swap"]
    assert item.ok and not item.warning and item.detail == "2048 MiB (vps.swap plans 2048 MiB)"


def test_a_check_that_crashes_is_a_failed_item_not_a_crashed_checklist(config: Any) -> None:
    """One runner for smoke and preflight: a bug in one item must not hide the others."""

    def broken_resolver(name: str) -> tuple[str, list[str], list[str]]:
        raise KeyError(name)

    report = preflight(None, config, "production", resolve=broken_resolver, probe=PROBE)
    dns = _by_name(report)["dns"]
    assert not dns.ok and dns.detail.startswith("check crashed: KeyError")
    assert not report.passed and len(report.checks) > 3


# --- Cloudflare in front: the domains resolve to Cloudflare, the origin is the VPS ---

CF = ["104.16.132.229", "104.16.133.229"]  # inside 104.16.0.0/13
PROXIED = {
    "api.v-edfinance.com": ("api.v-edfinance.com", [], CF),
    "v-edfinance.com": ("v-edfinance.com", [], CF),
    "www.v-edfinance.com": ("www.v-edfinance.com", [], ["172.67.1.1"]),  # 172.64.0.0/13
}


def test_a_domain_proxied_by_cloudflare_passes_dns_and_names_the_tls_mode(config: Any) -> None:
    auto = config.model_copy(update={"edge": config.edge.model_copy(update={"tls": "auto"})})
    dns = _by_name(preflight(None, auto, "production", resolve=_resolver(PROXIED),
                             probe=PROBE, options=Options(timeout=0.2)))["dns"]
    assert dns.ok and not dns.warning, dns.detail
    assert "api.v-edfinance.com: proxied by Cloudflare (origin 103.54.153.248 checked " \
           "directly)" in dns.detail
    assert "www.v-edfinance.com: proxied by Cloudflare" in dns.detail
    assert dns.detail.endswith("set Cloudflare SSL/TLS to Full (strict): the origin serves a "
                               "publicly trusted certificate (ACME, HTTP-01 passes through "
                               "the proxy)")


@pytest.mark.parametrize("tls, says", [
    ("internal", "use a Cloudflare Origin CA certificate"),
    ("off", "that is Cloudflare's Flexible mode"),
])
def test_a_proxied_domain_without_a_public_origin_certificate_is_a_warning(
        config: Any, tls: str, says: str) -> None:
    edge = config.model_copy(update={"edge": config.edge.model_copy(update={"tls": tls})})
    dns = _by_name(preflight(None, edge, "production", resolve=_resolver(PROXIED),
                             probe=PROBE, options=Options(timeout=0.2)))["dns"]
    assert dns.ok and dns.warning and says in dns.detail


@pytest.mark.parametrize("addresses", [
    ["104.16.132.229", "203.0.113.9"],  # one of them is not Cloudflare's
    ["203.0.113.9"],
    ["2606:4700::6810:84e5", "2001:db8::1"],
])
def test_an_address_outside_cloudflare_and_the_vps_still_fails(
        config: Any, addresses: list[str]) -> None:
    table = {**PROXIED, "api.v-edfinance.com": ("api.v-edfinance.com", [], addresses)}
    dns = _by_name(preflight(None, config, "production", resolve=_resolver(table),
                             probe=PROBE))["dns"]
    assert not dns.ok and dns.detail.startswith("api.v-edfinance.com -> ")


def test_cloudflare_ranges_both_families() -> None:
    from vedfin_ops.checks.cloudflare import is_cloudflare, proxied

    assert is_cloudflare("173.245.48.1") and is_cloudflare("2a06:98c7::1")
    assert not is_cloudflare("103.54.153.248") and not is_cloudflare("not an address")
    assert not proxied([]) and proxied(["104.24.0.1", "2400:cb00::1"])


def test_a_proxied_domain_s_certificate_is_asked_of_the_origin(origin_tls: int) -> None:
    """The domain resolves to Cloudflare; the TLS item connects to vps.address (127.0.0.2
    here, where a server with a self-signed certificate listens; nothing does where the
    domain itself points) with the domain as SNI, and says what is wrong with the origin's
    certificate. It never connects to a Cloudflare address."""
    table = {"api.pf.localhost": ("api.pf.localhost", [], ["104.16.0.1"]),
             "pf.localhost": ("pf.localhost", [], ["104.16.0.2"])}
    config = _tls_config(origin_tls)
    config.vps.address = "127.0.0.2"
    report = preflight(None, config, "production", resolve=_resolver(table), probe=PROBE,
                       options=Options(timeout=2))
    checks = _by_name(report)
    assert checks["dns"].ok and "proxied by Cloudflare" in checks["dns"].detail
    assert not checks["tls"].ok
    assert checks["tls"].detail == ("certificate not valid for api.pf.localhost: self-signed "
                                    "certificate")


# --- the edge's ports: held by something else (Dokploy's Traefik) or free ---

SS = ("LISTEN 0      4096         0.0.0.0:80        0.0.0.0:*    "
      'users:(("docker-proxy",pid=1234,fd=4))\n'
      "LISTEN 0      4096            [::]:443          [::]:*    \n"
      "LISTEN 0      128       127.0.0.1:5432      0.0.0.0:*    "
      'users:(("postgres",pid=99,fd=5),("postgres",pid=98,fd=5))\n')


def test_listeners_are_read_with_or_without_their_process() -> None:
    from vedfin_ops.remote.probes.host_facts import listeners

    assert listeners(SS) == {80: ["docker-proxy"], 443: [""], 5432: ["postgres"]}
    assert listeners("State Recv-Q\ngarbage\n") == {}


@pytest.mark.parametrize("docker_ps, services, ss, says", [
    ("", "dokploy-traefik|*:80->80/tcp, *:443->443/tcp", SS,
     "port 80 is held by swarm service dokploy-traefik; port 443 is held by swarm service "
     "dokploy-traefik (Dokploy's Traefik: stop it, or give the edge other ports with "
     "edge.httpPort/httpsPort)"),
    ("nginx-proxy|0.0.0.0:80->80/tcp", "", SS,
     "port 80 is held by container nginx-proxy; port 443 is held by a process not visible to "
     "the deploy user (free it, or give the edge other ports with edge.httpPort/httpsPort)"),
    ("", "", 'LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:(("nginx",pid=7,fd=6))\n',
     "port 80 is held by process nginx (free it"),
])
def test_whatever_holds_the_edge_ports_is_named(docker_ps: str, services: str, ss: str,
                                                says: str) -> None:
    from vedfin_ops.checks.preflight import edge_ports_check

    with pytest.raises(Failed) as info:
        edge_ports_check([80, 443], docker_ps, services, ss, "vedfin-shared_edge")
    assert str(info.value).startswith(says)


def test_our_own_edge_on_its_ports_passes() -> None:
    from vedfin_ops.checks.preflight import edge_ports_check

    ours = "vedfin-shared_edge.1.abc|0.0.0.0:80->80/tcp, 0.0.0.0:443->443/tcp"
    assert edge_ports_check([80, 443], ours, "vedfin-shared_edge|*:80->80/tcp", SS,
                            "vedfin-shared_edge") == \
        "80, 443: free or held by our edge (vedfin-shared_edge)"
    assert edge_ports_check([80], "", "", "", "vedfin-shared_edge").startswith("80: free")


def test_the_probe_asks_what_listens_and_preflight_judges_it(config: Any) -> None:
    probe = PROBE + "--SERVICES--\ndokploy-traefik|*:80->80/tcp\n--LISTEN--\n" + SS
    check = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                               probe=probe))["edge ports"]
    assert not check.ok and "swarm service dokploy-traefik" in check.detail
    from vedfin_ops.remote.probes.host_facts import command

    assert "ss -ltnpH" in command([19999])


def test_dokploy_s_own_published_ports_are_named_as_dokploy_s_not_failed() -> None:
    services = "dokploy|*:3000->3000/tcp\nuptime-kuma|*:3002->3001/tcp\n"
    ours = "vedfin-shared_edge.1.x|0.0.0.0:80->80/tcp"
    said = published_ports_check(ours, {80, 443}, services)
    assert said == ("warning: only 80, 443 published by us; Dokploy's own, public: dokploy "
                    "publishes 3000 (swarm ingress); uptime-kuma publishes 3002 (swarm "
                    "ingress) (bind them to 127.0.0.1 or deny them in ufw once off Dokploy)")
    with pytest.raises(Failed, match="not-dokploy publishes 3000"):
        published_ports_check(ours, {80, 443}, services + "not-dokploy|*:3000->3000/tcp\n")


def test_a_mixed_answer_fails_and_a_www_straight_at_the_vps_passes(config: Any) -> None:
    mixed = {**PROXIED, "api.v-edfinance.com": ("api.v-edfinance.com", [], [VPS, CF[0]])}
    dns = _by_name(preflight(None, config, "production", resolve=_resolver(mixed),
                             probe=PROBE))["dns"]
    assert not dns.ok and "some addresses are Cloudflare's, some not" in dns.detail
    direct_www = {**PROXIED, "www.v-edfinance.com": ("www.v-edfinance.com", [], [VPS])}
    dns = _by_name(preflight(None, config, "production", resolve=_resolver(direct_www),
                             probe=PROBE))["dns"]
    assert dns.ok and f"www.v-edfinance.com -> {VPS}" in dns.detail


def test_edge_ports_count_tcp_only_and_say_when_ss_is_missing() -> None:
    from vedfin_ops.checks.preflight import edge_ports_check

    quic = "quic|0.0.0.0:443->443/udp"
    assert edge_ports_check([80, 443], quic, "", "", "vedfin-shared_edge").startswith(
        "80, 443: free")
    blind = edge_ports_check([80], "", "", "no-ss\n", "vedfin-shared_edge")
    assert blind.startswith("warning: 80: free") and "no `ss` on the host" in blind
    with pytest.raises(Failed, match="swarm service dokploy-traefik"):
        edge_ports_check([80], "", "dokploy-traefik|*:80->80/tcp", "no-ss",
                         "vedfin-shared_edge")


def test_only_dokploy_s_own_services_on_their_own_ports_are_excused() -> None:
    ours = "vedfin-shared_edge.1.x|0.0.0.0:80->80/tcp"
    for impostor in ("dokploy-postgres|*:5432->5432/tcp", "my-uptime-kuma-clone|*:22->22/tcp",
                     "dokploy|*:3000-3010->3000-3010/tcp"):
        with pytest.raises(Failed, match="published ports bypass ufw"):
            published_ports_check(ours, {80, 443}, impostor)


@pytest.mark.parametrize("edge, says", [
    ({"tls": "internal", "caRoot": "ca.pem", "acmeCA": "https://acme.test/dir"},
     "acmeCA needs tls: auto (tls is internal)"),
    ({"acmeCARoot": "root.pem"}, "acmeCARoot without acmeCA"),
])
def test_acme_settings_that_would_be_ignored_are_refused(edge: dict[str, Any], says: str
                                                         ) -> None:
    from vedfin_ops.config.loader import config_from_dict
    from vedfin_ops.errors import ConfigError

    data = yaml.safe_load(SHIPPED.read_text())
    data["edge"] = {**data["edge"], **edge}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "d.yaml")
    assert says in info.value.line()


def test_verify_s_smoke_asks_the_origin_of_a_proxied_domain_too(origin_tls: int) -> None:
    """After the deploy, smoke's TLS check of a domain behind Cloudflare also goes to the
    VPS (127.0.0.2 here): Cloudflare's certificate says nothing of the origin's expiry."""
    from vedfin_ops.checks.smoke import smoke_test

    config = _tls_config(origin_tls)
    config.vps.address = "127.0.0.2"
    behind = _resolver({"api.pf.localhost": ("api.pf.localhost", [], ["104.16.0.1"]),
                        "pf.localhost": ("pf.localhost", [], ["104.16.0.2"])})
    report = smoke_test(config, "production", Options(timeout=2, attempts=1, resolve=behind))
    tls = {c.name: c for c in report.checks}["tls api.pf.localhost"]
    assert tls.detail == "certificate not valid for api.pf.localhost: self-signed certificate"
    direct = _resolver({"api.pf.localhost": ("api.pf.localhost", [], ["127.0.0.1"]),
                        "pf.localhost": ("pf.localhost", [], ["127.0.0.1"])})
    report = smoke_test(config, "production", Options(timeout=2, attempts=1, resolve=direct))
    tls = {c.name: c for c in report.checks}["tls api.pf.localhost"]
    assert "certificate not valid" not in tls.detail  # it went to 127.0.0.1: nothing there
