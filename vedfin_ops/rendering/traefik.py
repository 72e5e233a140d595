"""Labels that route an app through an existing Traefik v3 (`edge.mode: traefik`), read by
its swarm provider from the service's deploy labels, as Dokploy's own apps are routed.

Every name is `<stackPrefix>_<app>`: Traefik's routers, services and middlewares share one
namespace with whatever else the Traefik serves (Dokploy's own apps among them).
"""

from __future__ import annotations

from vedfin_ops.config.model import Application, Config
from vedfin_ops.config.names import traefik_name
from vedfin_ops.config.units import format_seconds


def _hosts(domains: list[str]) -> str:
    # domains are validated as DNS names: no backtick or parenthesis can reach the rule
    return " || ".join(f"Host(`{d}`)" for d in domains)


def labels(config: Config, app: Application) -> dict[str, str]:
    """Routers for the domain (HTTPS with the cert resolver, plain HTTP redirected), one
    for the additional domains that redirects them to the domain, the port, a
    load-balancer health check (a replica stops receiving requests once it fails) and a
    retry middleware (a request that reached a replica being replaced goes to another)."""
    if not app.domain:
        return {}
    edge = config.edge
    tr = edge.traefik
    name = traefik_name(config, app)
    secure = edge.tls != "off"
    port = edge.https_port if secure else edge.http_port
    suffix = "" if port == (443 if secure else 80) else f":{port}"
    scheme = "https" if secure else "http"
    routers = "traefik.http.routers"
    middlewares = "traefik.http.middlewares"
    out: dict[str, str] = {
        "traefik.enable": "true",
        # the app is on two networks; Traefik reaches it only through its own
        "traefik.swarm.network": tr.network,
        f"traefik.http.services.{name}.loadbalancer.server.port": str(app.port),
    }
    health = app.health
    if health.path and not health.command:
        service = f"traefik.http.services.{name}.loadbalancer.healthcheck"
        out |= {f"{service}.path": health.path,
                f"{service}.interval": format_seconds(health.interval),
                f"{service}.timeout": format_seconds(health.timeout)}
    chain = []
    if tr.retry_attempts:
        out |= {f"{middlewares}.{name}-retry.retry.attempts": str(tr.retry_attempts),
                f"{middlewares}.{name}-retry.retry.initialinterval": "100ms"}
        chain.append(f"{name}-retry")

    def router(router_name: str, hosts: list[str], entry: str, tls: bool,
               uses: list[str]) -> None:
        key = f"{routers}.{router_name}"
        out[f"{key}.rule"] = _hosts(hosts)
        out[f"{key}.entrypoints"] = entry
        out[f"{key}.service"] = name
        if tls:
            out[f"{key}.tls.certresolver"] = tr.cert_resolver
        if uses:
            out[f"{key}.middlewares"] = ",".join(uses)

    entry = tr.secure_entry_point if secure else tr.entry_point
    router(name, [app.domain], entry, secure, chain)
    if app.additional_domains:
        # www -> apex, keeping the path and query (Caddy's `redir ... permanent` does too)
        out |= {f"{middlewares}.{name}-apex.redirectregex.regex": r"^[a-z]+://[^/]+(.*)$",
                f"{middlewares}.{name}-apex.redirectregex.replacement":
                    f"{scheme}://{app.domain}{suffix}${{1}}",
                f"{middlewares}.{name}-apex.redirectregex.permanent": "true"}
        router(f"{name}-aliases", list(app.additional_domains), entry, secure,
               [f"{name}-apex"])
    if secure:
        out |= {f"{middlewares}.{name}-https.redirectscheme.scheme": "https",
                f"{middlewares}.{name}-https.redirectscheme.permanent": "true"}
        if suffix:
            out[f"{middlewares}.{name}-https.redirectscheme.port"] = str(port)
        router(f"{name}-http", app.domains, tr.entry_point, False, [f"{name}-https"])
    return out
