"""The sandbox's config: the shipped dokploy.yaml with the sandbox registry's images, small
limits, .localhost.

Generated from the shipped file so that the pipeline that runs on the sandbox is the one that
runs on the VPS: only the registry and images (the stand-in apps are built from
sandbox/apps), sizes, domains, the edge's port and TLS, the remote folder and the user
differ.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from sandbox.images import APPS_DIR, REPO

SANDBOX_TAG = "v1"
APP_MEMORY = "48m"
APP_CPUS = 0.1


def localhost_domain(domain: str) -> str:
    """`api.v-edfinance.com` -> `api.v-edfinance.localhost` (resolves to 127.0.0.1)."""
    return domain.rsplit(".", 1)[0] + ".localhost"


def sandbox_config(shipped: dict[str, Any], *, edge_port: int, base_dir: str,
                   user: str, registry: dict[str, str], s3_endpoint: str | None = None,
                   netdata: tuple[int, str] | None = None, kuma_port: int | None = None,
                   sink: str | None = None) -> dict[str, Any]:
    data = copy.deepcopy(shipped)
    server = registry["server"]
    data["registry"] = dict(registry)
    secret = registry["password"][2:-1]
    data["secrets"] = {**data.get("secrets", {}),
                       "shared": {**data.get("secrets", {}).get("shared", {}),
                                  secret: "manual"}}
    for app in data["applications"]:
        kind = app["name"].split("-")[0]
        app["image"] = f"{server}/{REPO}/{kind}"
        app["build"] = {"context": str(APPS_DIR), "dockerfile": "Dockerfile",
                        "args": {"APP": kind, "VERSION": "{tag}"}}
        app["resources"] = {"memory": APP_MEMORY, "cpus": APP_CPUS}
        if app.get("domain"):
            app["domain"] = localhost_domain(app["domain"])
        app["additionalDomains"] = [localhost_domain(d) for d in app.get("additionalDomains", [])]
        app["healthcheck"] = {"path": "/api/health" if kind == "api" else "/",
                              "interval": "1s", "timeout": "1s", "retries": 2,
                              "startPeriod": "2s"}
        if kind == "api":
            app["migrate"] = "/bin/migrate"
            app["migrateStatus"] = "/bin/migrate status"
    data["tag"] = SANDBOX_TAG
    data["postgres"] = {
        **data.get("postgres", {}),
        "image": f"{server}/{REPO}/postgres:pg17-pgvector",
        "resources": {"memory": "256m", "cpus": 0.5},
        "healthcheck": {"command": ["pg_isready", "-U", "postgres"], "interval": "1s",
                        "retries": 10, "startPeriod": "5s"},
        # the runbook's settings, scaled to the sandbox's 256m (32 + 20 x 1 + 16 = 68 MiB)
        "settings": {"shared_buffers": "32MB", "work_mem": "1MB", "max_connections": 20,
                     "maintenance_work_mem": "16MB"},
    }
    data["redis"] = {"image": f"{server}/{REPO}/redis:7",
                     "resources": {"memory": "64m", "cpus": 0.1}}
    data["edge"] = {"image": f"{server}/{REPO}/edge:caddy", "tls": "off", "httpPort": edge_port,
                    "resources": {"memory": "64m", "cpus": 0.2}}
    data["remote"] = {**data.get("remote", {}), "baseDir": base_dir, "user": user,
                      "rolloutTimeout": "180s"}
    data["vps"] = {**data["vps"], "address": "127.0.0.1"}
    data["secretsFile"] = "secrets.env"
    # off-host backup copies go to the sandbox's own S3 server, never to the shipped R2
    backups = dict(data.get("backups", {}))
    if s3_endpoint is not None and "s3" in backups:
        from sandbox.s3 import BUCKET, REGION

        backups["s3"] = {**backups["s3"], "endpoint": s3_endpoint, "bucket": BUCKET,
                         "region": REGION, "allowHttp": s3_endpoint.startswith("http://")}
    else:
        backups.pop("s3", None)
    data["backups"] = backups
    # This machine runs no ufw and no Uptime Kuma: preflight says "skipped" rather than
    # failing every rehearsal. Published ports are still audited for real. Netdata is the
    # sandbox's own (sandbox/netdata.py): alarms evaluated every 5 s, so tests see them raised.
    data["firewall"] = {**data.get("firewall", {}), "check": "none"}
    if netdata is not None:
        port, config_dir = netdata
        data["monitoring"] = {**data.get("monitoring", {}), "check": True, "apply": True,
                              "netdataPort": port, "netdataConfig": config_dir,
                              "alarmEvery": "5s"}
    else:
        data["monitoring"] = {**data.get("monitoring", {}), "check": False, "apply": False}
    _alerting(data, kuma_port, sink)
    # no off-hours window: a test run at night must deploy the configured replicas (the
    # timer's own test uses a config of its own)
    data["offHours"] = None
    # the stand-in api (busybox httpd) answers a CORS preflight only through CGI
    data["verify"] = {**data.get("verify", {}), "corsPath": "/cgi-bin/cors"}
    return data


def https_edge(sandbox: dict[str, Any], *, https_port: int, acme_ca: str, acme_ca_root: str,
               ca_root: str) -> dict[str, Any]:
    """The sandbox config with the production edge: `tls: auto`, certificates over ACME from
    the sandbox's pebble, HTTPS on `https_port`, smoke trusting pebble's root."""
    data = copy.deepcopy(sandbox)
    data["edge"] = {**data["edge"], "tls": "auto", "httpsPort": https_port,
                    "acmeCA": acme_ca, "acmeCARoot": acme_ca_root, "caRoot": ca_root}
    return data


def traefik_edge(sandbox: dict[str, Any], *, http_port: int, https_port: int,
                 ca_root: str) -> dict[str, Any]:
    """The sandbox config routed by the sandbox's Dokploy-like Traefik (`edge.mode:
    traefik`): certificates from its `letsencrypt` resolver (pebble), smoke trusting
    pebble's root. No Caddy runs in this mode."""
    data = copy.deepcopy(sandbox)
    data["edge"] = {**data["edge"], "mode": "traefik", "tls": "auto", "httpPort": http_port,
                    "httpsPort": https_port, "caRoot": ca_root}
    return data


HEADER = ("# Generated by `inv sandbox.up` from {source}: local images, small limits,\n"
          "# domains under .localhost, the edge on port {port}. Regenerated on every up.\n")


def dump(data: dict[str, Any], source: str, edge_port: int) -> str:
    return HEADER.format(source=source, port=edge_port) + yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True)


def _alerting(data: dict[str, Any], kuma_port: int | None, sink: str | None) -> None:
    """Slack and PagerDuty are the sandbox's webhook sink, and the alerts' email its mail sink
    (sandbox/sink.py: nothing leaves the machine; without the sink, no email); Uptime Kuma is
    the sandbox's own, checking every 20 s (its minimum); a restart alarm clears after a
    minute."""
    email = data.get("alerts", {}).get("email") if sink is not None else None
    alerts = {**data.get("alerts", {}), "email": email,
              "restarts": {**data.get("alerts", {}).get("restarts", {}), "within": "1m"}}
    shared = data.setdefault("secrets", {}).setdefault("shared", {})
    if sink is not None:
        alerts.update({"slack": "${SLACK_WEBHOOK_URL}",
                       "pagerDuty": "${PAGERDUTY_INTEGRATION_KEY}",
                       "pagerDutyUrl": f"{sink}/pagerduty"})
        shared.update({"SLACK_WEBHOOK_URL": "optional", "PAGERDUTY_INTEGRATION_KEY": "optional"})
    else:
        alerts.pop("slack", None)
        alerts.pop("pagerDuty", None)
    data["alerts"] = alerts
    monitoring = data.setdefault("monitoring", {})
    if kuma_port is not None:
        monitoring["uptimeKumaPort"] = kuma_port
        monitoring["uptimeKuma"] = {
            **monitoring.get("uptimeKuma", {"username": "${UPTIME_KUMA_USERNAME}",
                                            "password": "${UPTIME_KUMA_PASSWORD}"}),
            "every": "20s", "downAfter": "20s", "pagerDutyAfter": 2}
        shared.update({"UPTIME_KUMA_USERNAME": "optional", "UPTIME_KUMA_PASSWORD": "optional"})
    else:
        monitoring["uptimeKumaPort"] = None
        monitoring.pop("uptimeKuma", None)


def cluster_nodes(sandbox: dict[str, Any], *, count: int, edge_port: int,
                  base_dir: str) -> dict[str, Any]:
    """The sandbox config for the sandbox's N-node swarm (sandbox/nodes.py): `nodes:` instead
    of `vps:` (node0 the manager with postgres and the public edge, the rest workers, each a
    Host of the nodes' ssh_config), a remote folder of its own, and none of this machine's
    shared daemons (Netdata's health folder, Uptime Kuma, the off-host copies), which the
    single-VPS sandbox's deploys write to at the same time."""
    data = copy.deepcopy(sandbox)
    vps = data.pop("vps")
    data["nodes"] = [
        {"name": f"node{i}", "host": f"node{i}", "role": "manager" if i == 0 else "worker",
         "memory": vps["memory"], "cpus": vps["cpus"], "swap": vps.get("swap", "0m"),
         **({"address": "127.0.0.1", "public": True, "postgres": True} if i == 0 else {})}
        for i in range(count)]
    data["edge"] = {**data["edge"], "httpPort": edge_port}
    data["remote"] = {**data["remote"], "baseDir": base_dir}
    data["monitoring"] = {**data.get("monitoring", {}), "apply": False, "check": False,
                          "uptimeKumaPort": None,
                          "netdataConfig": "/nonexistent/vedfin-sandbox-nodes/netdata"}
    data["monitoring"].pop("uptimeKuma", None)
    data.get("backups", {}).pop("s3", None)
    return data
