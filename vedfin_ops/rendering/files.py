"""config -> {relative path: text}. Pure: no I/O but reading the templates (and the PEM file
`edge.acmeCARoot` names, which the edge gets as it is).

Secret values are substituted only into env files (`env/*.env`) and Netdata's notification
settings (`monitoring/health_alarm_notify.conf`: the Slack webhook), the files
`Rendered.is_secret` names; every other file is safe to print, diff and keep. `docker stack
deploy` substitutes `$VAR` in stack files (not in the env files it reads through env_file), so
every string in a stack file goes through the `dollars` filter: a `$` from the config reaches
the container as written. Without a value for a secret, a placeholder goes in and the name is
listed in `missing_secrets`, so `inv render` works on a laptop that holds no secrets.
`host_script` renders the tool's own scripts and files on the host (the cron scripts,
Netdata's dispatcher) from the package's templates.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from vedfin_ops.cluster import placement
from vedfin_ops.config.model import Application, Config, monitor_seconds, secret_refs
from vedfin_ops.config.names import image, shared_stack_name, stack_name
from vedfin_ops.config.tags import check_tag
from vedfin_ops.config.units import format_cpus, format_mib, format_seconds
from vedfin_ops.errors import ConfigError
from vedfin_ops.remote import commands
from vedfin_ops.remote.quoting import sh, yaml_str
from vedfin_ops.rendering.alarms import PLUGIN_FILE, RESTARTS_CHART, alarms
from vedfin_ops.rendering.traefik import labels as traefik_labels

# inside the package, so an installed wheel renders too; the checkout's top-level
# `templates` is a link to this folder
OWN_TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATES = Path(os.environ.get("VEDFIN_TEMPLATES", OWN_TEMPLATES))
HEADER = "Rendered by vedfin-ops from {source}; edit the config, not this file."


class Rendered(dict[str, str]):
    """The files of one render, plus what a writer or a pusher needs to know about them."""

    missing_secrets: list[str]

    def __init__(self, files: Mapping[str, str], missing_secrets: list[str]) -> None:
        super().__init__(files)
        self.missing_secrets = missing_secrets

    @staticmethod
    def is_secret(path: str) -> bool:
        """Files that may hold secret values: written 0600, never printed."""
        return path.startswith("env/") or path == "monitoring/health_alarm_notify.conf"


def dollars(value: Any) -> Any:
    """`$` -> `$$` in a string (each string of a list): the stack loader reads `$$` as `$`."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list | tuple):
        return [dollars(v) for v in value]
    return value


def yaml_scalar(value: object) -> str:
    """A YAML double-quoted scalar on one line, escaped by YAML's own rules: JSON's rules
    (`tojson`, `json.dumps`) let through characters YAML reads differently (U+0085 is a line
    break to YAML, DEL is refused, `\\ud800\\udc00` is two lone surrogates, not one character)."""
    text = yaml.safe_dump(str(value), default_style='"', allow_unicode=True, width=2**31)
    text = text.removesuffix("\n")
    assert "\n" not in text and text.startswith('"'), text
    return text


def yaml_list(values: Any) -> str:
    """A YAML flow sequence of double-quoted strings: `["CMD", "pg_isready"]`."""
    return "[" + ", ".join(yaml_scalar(v) for v in values) + "]"


def placeholder(name: str) -> str:
    return f"__MISSING_SECRET_{name}__"


@cache
def _jinja(root: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(
        q=yaml_scalar,
        yamllist=yaml_list,
        dollars=dollars,
        shq=sh,
        mib=lambda v: yaml_str(format_mib(v)),
        cpus=lambda v: yaml_str(format_cpus(v)),
        dur=lambda v: yaml_str(format_seconds(v)),
        minutes=lambda v: max(1, round(v / 60)),
        num=lambda v: f"{v:g}",
    )
    return env


def netdata_health(config: Config) -> str:
    """The alarms file `monitoring.apply` installs (the same bytes `render` writes). Its
    header names no config file: two checkouts of one config must write the same bytes (an
    identical file is not reloaded)."""
    return _template("netdata-health.conf.j2").render(
        header=NETDATA_HEADER, alarms=alarms(config),
        every=f"{max(1, round(config.monitoring.alarm_every))}s")


NETDATA_HEADER = "Rendered by vedfin-ops; edit the config, not this file."


def netdata_plugin(config: Config) -> str:
    """The restarts chart's plugin (`monitoring.apply` installs it beside the alarms)."""
    every = max(5, round(config.monitoring.alarm_every))
    return _template("netdata-restarts.plugin.j2").render(
        header=NETDATA_HEADER, plugin_file=PLUGIN_FILE, chart=RESTARTS_CHART, every=every,
        seconds=round(config.alerts.restarts.within),
        window=f"{max(1, round(config.alerts.restarts.within / 60))}m")


def netdata_notify(config: Config, secrets: Mapping[str, str],
                   missing: set[str] | None = None) -> str:
    """Netdata's notification settings; the Slack webhook is a secret (an optional one:
    without a value Slack is off, and its name goes into `missing`)."""
    slack = config.alerts.slack
    if slack is not None and not secrets.get(slack[2:-1]):
        if missing is not None:
            missing.add(slack[2:-1])
        slack = None
    elif slack is not None:
        slack = secrets[slack[2:-1]]
    return _template("netdata-notify.conf.j2").render(header=NETDATA_HEADER,
                                                      alerts=config.alerts, slack=slack)


def _template(name: str) -> jinja2.Template:
    return _jinja(str(TEMPLATES)).get_template(name)


def host_script(name: str, **values: Any) -> str:
    """A script or file of the tool's own on the host (the cron scripts, Netdata's
    dispatcher), from the package's templates whatever `VEDFIN_TEMPLATES` names: those are
    the rendered files' templates."""
    return _jinja(str(OWN_TEMPLATES)).get_template(name).render(**values)


def health_test(app: Application) -> list[str]:
    if app.health.command:
        return ["CMD", *app.health.command]
    url = f"http://127.0.0.1:{app.port}{app.health.path}"
    return ["CMD-SHELL", commands.health_probe(url)]


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _postgres_command(config: Config) -> list[str] | None:
    """pg_stat_statements only works when preloaded, and `postgres.settings` are server
    options: the official image takes them as `postgres -c name=value`."""
    options = []
    if "pg_stat_statements" in config.postgres.extensions:
        options.append("shared_preload_libraries=pg_stat_statements")
    options += [f"{name}={value}" for name, value in config.postgres.settings.items()]
    if not options:
        return None
    return ["postgres", *(word for option in options for word in ("-c", option))]


def _substitute(value: str, secrets: Mapping[str, str], missing: set[str]) -> str:
    for name in secret_refs(value):
        if name in secrets:
            value = value.replace(f"${{{name}}}", secrets[name])
        else:
            missing.add(name)
            value = value.replace(f"${{{name}}}", placeholder(name))
    return value


def render(config: Config, env: str | None = None, tag: str | None = None,
           secrets: Mapping[str, str] | None = None,
           pins: Mapping[str, str] | None = None) -> Rendered:
    """Everything a release of `env` needs (every env when None): stacks, env files, SQL, edge,
    and Netdata's alarms, plugin and notification settings."""
    envs = [config.require_env(env)] if env else list(config.environments)
    tag = config.tag if tag is None else check_tag(tag)
    secrets = secrets or {}
    missing: set[str] = set()
    # The header is a comment line in every file: a line break in the file name would end it.
    header = HEADER.format(source=" ".join(Path(config.source).name.split()))
    files: dict[str, str] = {}

    files["db/init-db.sql"] = _template("init-db.sql.j2").render(
        header=header,
        databases=[e.database for e in config.environments.values()],
        extensions=config.postgres.extensions,
    )
    caddy = config.edge.mode == "caddy"  # else an existing Traefik routes, from app labels
    if caddy:
        files["edge/Caddyfile"] = _caddyfile(config, header)
    if caddy and config.edge.acme_ca_root:
        files["edge/acme-ca-root.pem"] = _read_pem(config, config.edge.acme_ca_root)
    files["monitoring/netdata-health.conf"] = netdata_health(config)
    files["monitoring/health_alarm_notify.conf"] = netdata_notify(config, secrets, missing)
    files[f"monitoring/{PLUGIN_FILE}"] = netdata_plugin(config)
    files["stacks/shared.yml"] = _template("stack-shared.yml.j2").render(
        header=header,
        stack=shared_stack_name(config),
        postgres=config.postgres,
        postgres_command=_postgres_command(config),
        # an adopted volume keeps its own name under a key of ours (the stack prefixes keys)
        postgres_volume_key=("pgdata_adopted" if config.postgres.volume.external
                             else config.postgres.volume.name),
        postgres_test=["CMD", *(config.postgres.healthcheck.command or ["pg_isready"])],
        postgres_monitor=monitor_seconds(config.postgres.healthcheck),
        redis=config.redis,
        edge=config.edge,
        network=config.remote.network,
        init_db_name=f"{config.remote.stack_prefix}_init_db_{_hash(files['db/init-db.sql'])}",
        caddyfile_name=(f"{config.remote.stack_prefix}_caddyfile_"
                        f"{_hash(files['edge/Caddyfile'])}" if caddy else None),
        acme_root_name=(f"{config.remote.stack_prefix}_acme_root_"
                        f"{_hash(files['edge/acme-ca-root.pem'])}"
                        if "edge/acme-ca-root.pem" in files else None),
        acme_root_target=ACME_ROOT_IN_EDGE,
        postgres_constraints=placement.constraints(config, "postgres"),
        edge_constraints=placement.constraints(config, "edge"),
    )
    files["env/postgres.env"] = _env_file(header, "postgres", {
        "POSTGRES_USER": config.postgres.user,
        "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
        "POSTGRES_DB": "postgres",
    }, secrets, missing)
    for name in envs:
        apps = config.apps(name)
        files[f"stacks/{name}.yml"] = _template("stack-env.yml.j2").render(
            header=header,
            stack=stack_name(config, name),
            env=name,
            apps=[_app_view(config, app, tag, pins) for app in apps],
            strategy=config.deployment_strategy,
            network=config.remote.network,
            edge_network=None if caddy else config.edge.traefik.network,
            drain=config.edge.traefik.drain,
        )
        for app in apps:
            files[f"env/{app.name}.env"] = _env_file(header, app.name, app.environment,
                                                     secrets, missing)
    return Rendered(files, sorted(missing))


def _app_view(config: Config, app: Application, tag: str,
              pins: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "labels": traefik_labels(config, app) if config.edge.mode == "traefik" else {},
        "name": app.name, "app": app.app, "image": image(app, tag, pins), "port": app.port,
        "replicas": app.replicas, "resources": app.resources, "health": app.health,
        "health_test": health_test(app), "monitor": monitor_seconds(app.health),
        "stop_grace": app.stop_grace_period,
        # a cluster spreads each app over its nodes; one node renders no placement at all
        "spread": config.multi_node,
        "max_per_node": placement.max_replicas_per_node(app.replicas, len(config.nodes)),
    }


def _env_file(header: str, name: str, variables: Mapping[str, str],
              secrets: Mapping[str, str], missing: set[str]) -> str:
    values = {k: _substitute(v, secrets, missing) for k, v in variables.items()}
    return _template("app.env.j2").render(header=header, name=name, variables=values)


def _caddyfile(config: Config, header: str) -> str:
    edge = config.edge
    scheme = "http" if edge.tls == "off" else "https"
    public_port = edge.http_port if edge.tls == "off" else edge.https_port
    default_port = 80 if edge.tls == "off" else 443
    return _template("Caddyfile.j2").render(
        header=header,
        edge=edge,
        apps=[a for a in config.applications if a.domain],
        scheme=scheme,
        scheme_prefix="http://" if edge.tls == "off" else "",
        port_suffix="" if public_port == default_port else f":{public_port}",
        acme=_acme_issuer(config),
    )


ACME_ROOT_IN_EDGE = "/etc/caddy/acme-ca-root.pem"


def _read_pem(config: Config, path: str) -> str:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(config.source, "edge.acmeCARoot",
                          f"{path} cannot be read ({type(exc).__name__})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(config.source, "edge.acmeCARoot", f"{path} holds no PEM certificate")
    return text


def _acme_issuer(config: Config) -> str:
    """`tls auto` with another ACME directory than Let's Encrypt's: an explicit issuer per
    site (an explicit issuer is also what makes Caddy ask ACME for `.localhost` names)."""
    edge = config.edge
    if edge.tls != "auto" or edge.acme_ca is None:
        return ""
    roots = f"\n\t\t\ttrusted_roots {ACME_ROOT_IN_EDGE}" if edge.acme_ca_root else ""
    return f"\ttls {{\n\t\tissuer acme {{\n\t\t\tdir {edge.acme_ca}{roots}\n\t\t}}\n\t}}"
