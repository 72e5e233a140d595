"""The Pre-Deployment Checklist, each item passing and failing.

ufw's answers are outputs recorded from a real ufw 0.36.2 (tests/data/ufw/record.sh says how);
DNS goes through an injectable resolver; the host probe of the sandbox is in the integration
tests (test_preflight_sandbox.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vedfin_ops.loader import load_config
from vedfin_ops.preflight import (
    preflight,
    published_ports_check,
    ufw_check,
)
from vedfin_ops.smoke import Failed

from .conftest import SHIPPED

UFW = Path(__file__).parent / "data" / "ufw"
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
    probe = PROBE.replace(":::80->80/tcp", "0.0.0.0:443->443/tcp")
    check = _by_name(preflight(None, config, "production", resolve=_resolver(GOOD_DNS),
                               probe=probe))["firewall: published ports"]
    assert not check.ok and "publishes 443" in check.detail


def test_firewall_failures_fail_the_checklist(config: Any) -> None:
    probe = PROBE.replace(_ufw("runbook"), _ufw("port-3000-open"))
    report = preflight(None, config, "production", resolve=_resolver(GOOD_DNS), probe=probe)
    assert not report.passed and not _by_name(report)["firewall: ufw"].ok
