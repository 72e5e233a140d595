"""Where an app answers over HTTP(S), as a client outside the VPS reaches it.

Domains under `.localhost` (the sandbox) are reached on 127.0.0.1 with the name in the Host
header, since the system resolver does not map `*.localhost`; every other domain is used as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from vedfin_ops.checks.cloudflare import Resolver, origin_address
from vedfin_ops.config.model import Application, Config


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str  # the Host header to send

    @property
    def headers(self) -> dict[str, str]:
        return {"Host": self.host}


def base(config: Config, domain: str) -> Endpoint:
    edge = config.edge
    scheme = "http" if edge.tls == "off" else "https"
    port = edge.http_port if scheme == "http" else edge.https_port
    default = 80 if scheme == "http" else 443
    suffix = "" if port == default else f":{port}"
    target = "127.0.0.1" if domain == "localhost" or domain.endswith(".localhost") else domain
    return Endpoint(f"{scheme}://{target}{suffix}", f"{domain}{suffix}")


def tls_address(config: Config, domain: str, resolve: Resolver) -> str:
    """Where preflight and verify ask for `domain`'s certificate (the domain as SNI): the
    edge `base` names, or the VPS itself when Cloudflare proxies the domain."""
    default = urlsplit(base(config, domain).url).hostname or domain
    return origin_address(domain, config.vps.address, default, resolve)


def app_endpoint(config: Config, app: Application, path: str = "/") -> Endpoint | None:
    if not app.domain:
        return None
    root = base(config, app.domain)
    return Endpoint(root.url + path, root.host)


def routes(config: Config, env: str) -> list[str]:
    """What the edge routes for `env`, recorded in each release: in Traefik mode a change of
    it (a new domain, TLS turned on, another port) means Traefik starts routing a name, so
    its certificate may only be issued after the rollout."""
    edge = config.edge
    return sorted(f"{edge.mode} {base(config, d).url} {d}" for app in config.apps(env)
                  for d in app.domains)
