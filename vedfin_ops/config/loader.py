"""Read `dokploy.yaml` and turn every mistake into one `error: FILE: KEY: what` line.

Pydantic finds type errors; the checks here are the ones that need the whole file at once
(duplicate names, which env an app is in, secrets referred to but not declared, a strategy that
would leave an app with no replica).
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vedfin_ops.config.model import Application, Config, monitor_seconds, secret_refs
from vedfin_ops.config.units import show
from vedfin_ops.errors import ConfigError

DEFAULT_CONFIG = "dokploy.yaml"


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """`--config`, else `VEDFIN_CONFIG`, else `dokploy.yaml` in the working directory."""
    return Path(path or os.environ.get("VEDFIN_CONFIG") or DEFAULT_CONFIG)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a deploy config must not."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {show(key)}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def parse_yaml(text: str, file: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join((exc.problem or exc.context or "").split())
        raise ConfigError(file, "", f"{where}malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, "", f"malformed YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        raise ConfigError(file, "", "the file is empty; see the README's config reference")
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"the top level must be a mapping, not a {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate a config file; raises ConfigError (exit 2) naming file and key."""
    file = config_path(path)
    name = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, "", "no such file (pass --config or set VEDFIN_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"cannot read: {exc}") from None
    return config_from_dict(parse_yaml(text, name), name)


def config_from_dict(data: dict[str, Any], file: str = DEFAULT_CONFIG) -> Config:
    _check_raw_nodes(data, file)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, file) from None
    config._source = file
    _assign_envs(config, file)
    _check_nodes(config, file)
    _check(config, file)
    _resolve_paths(config, file)
    return config


def _resolve_paths(config: Config, file: str) -> None:
    """`edge.caRoot`, `edge.acmeCARoot`, `registry.caRoot`, `backups.s3.caRoot` and each
    `build.context` are relative to the config file's folder, so any working directory
    works."""
    def resolved(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else Path(file).resolve().parent / path)

    if config.edge.ca_root is not None:
        config.edge.ca_root = resolved(config.edge.ca_root)
    if config.edge.acme_ca_root is not None:
        config.edge.acme_ca_root = resolved(config.edge.acme_ca_root)
    if config.registry is not None and config.registry.ca_root is not None:
        config.registry.ca_root = resolved(config.registry.ca_root)
    if config.backups.s3 is not None and config.backups.s3.ca_root is not None:
        config.backups.s3.ca_root = resolved(config.backups.s3.ca_root)
    for app in config.applications:
        if app.build is not None:
            app.build.context = resolved(app.build.context)


def key_path(loc: tuple[int | str, ...]) -> str:
    """`('applications', 1, 'resources', 'memory')` -> `applications[1].resources.memory`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _first_error(exc: ValidationError, file: str,
                 prefix: tuple[int | str, ...] = ()) -> ConfigError:
    """`prefix`: where in the file the validated part sits (a node checked on its own)."""
    err = exc.errors(include_url=False)[0]
    raw = (*prefix, *err["loc"])
    # A key of a user's mapping (an env variable called `str`) is never a validator's tag.
    loc = tuple(p for i, p in enumerate(raw)
                if not _is_validator_tag(p) or (i and raw[i - 1] in _USER_KEYED)
                or (i > 1 and raw[i - 2] == "secrets"))
    kind, msg, given = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return ConfigError(file, key_path(loc), _unknown_key(str(loc[-1]), loc[:-1]))
    if kind == "missing":
        return ConfigError(file, key_path(loc), "required key is missing")
    if kind == "value_error":
        return ConfigError(file, key_path(loc), msg.removeprefix("Value error, "))
    if kind == "string_pattern_mismatch" and raw[-1] == "[key]":  # a key of a user's mapping
        return ConfigError(file, key_path(loc), f"{show(given)} is not a valid key of "
                           f"{key_path(loc[:-1])} ({err.get('ctx', {}).get('pattern', '')})")
    if kind == "string_pattern_mismatch":
        return ConfigError(file, key_path(loc), f"{show(given)} is not a valid {loc[-1]}")
    text = re.sub(r"a valid dictionary or instance of \w+", "a mapping", msg)
    text = text[0].lower() + text[1:]
    return ConfigError(file, key_path(loc), f"{show(given)}: {text}")


_USER_KEYED = {"environment", "environments", "overhead"}


def _is_validator_tag(part: int | str) -> bool:
    """Pydantic puts names like `function-before[...]` or `str` into loc for unions/validators."""
    return isinstance(part, str) and (
        "[" in part or part in {"str", "int", "float", "list", "dict", "bool"}
    )


def _unknown_key(key: str, parent: tuple[int | str, ...]) -> str:
    names = _known_keys(parent)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown key {show(key)}{hint}"


def _known_keys(parent: tuple[int | str, ...]) -> list[str]:
    """Walk the model along `parent` to list the keys that are allowed there."""
    model: Any = Config
    for part in parent:
        if isinstance(part, int) or model is None:
            continue
        field = _field_by_alias(model, part)
        model = _inner_model(field.annotation) if field else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _field_by_alias(model: type[BaseModel], alias: str) -> Any:
    for name, field in model.model_fields.items():
        if (field.alias or name) == alias:
            return field
    return None


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(typing.get_args(annotation)):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _assign_envs(config: Config, file: str) -> None:
    """`api-production` is the `api` app of env `production`; longest env name wins."""
    envs = sorted(config.environments, key=len, reverse=True)
    for index, app in enumerate(config.applications):
        env = next((e for e in envs if app.name.endswith(f"-{e}")), None)
        if env is None or app.name == f"-{env}":
            known = ", ".join(config.environments)
            raise ConfigError(
                file,
                f"applications[{index}].name",
                f"cannot tell the environment of {show(app.name)}: "
                f"name apps <app>-<env> with env one of {known}",
            )
        app._env = env
        app._app = app.name.removesuffix(f"-{env}")


def _check_raw_nodes(data: Any, file: str) -> None:
    """Before the model: `vps` is derived from the nodes' manager, so a cluster without one
    must be named as such, not as a missing `vps`."""
    if not isinstance(data, dict) or "nodes" not in data:
        return
    from vedfin_ops.config.model import Node

    nodes = data["nodes"]
    if "vps" in data:
        raise ConfigError(file, "nodes", "give vps (one machine) or nodes (the swarm's "
                          "machines), not both")
    if not isinstance(nodes, list):
        raise ConfigError(file, "nodes", f"{show(nodes)}: a list of the swarm's machines")
    if not nodes:
        raise ConfigError(file, "nodes", "empty: list the swarm's machines, or use vps for "
                          "one machine")
    for i, node in enumerate(nodes):  # each node's own errors under its own key
        try:
            Node.model_validate(node)
        except ValidationError as exc:
            raise _first_error(exc, file, ("nodes", i)) from None
    if not any(n.get("role") == "manager" for n in nodes):
        raise ConfigError(file, "nodes", "no manager: the tool talks to the engine through "
                          "a node with role: manager")


def _check_nodes(config: Config, file: str) -> None:
    """A swarm the tool can place on: one manager to talk to, one node for postgres's
    volume, one public node for the edge, each node named once."""
    from vedfin_ops.config.model import RESERVED_LABEL_PREFIX

    def fail(key: str, message: str) -> None:
        raise ConfigError(file, key, message)

    seen: dict[str, str] = {}
    for i, node in enumerate(config.nodes):
        for key, value in (("name", node.name), ("host", node.host)):
            if f"{key}:{value}" in seen:
                fail(f"nodes[{i}].{key}", f"{show(value)} is already the {key} of "
                     f"{seen[f'{key}:{value}']}")
            seen[f"{key}:{value}"] = f"nodes[{i}]"
        for label in node.labels:
            if label.startswith(RESERVED_LABEL_PREFIX):
                fail(f"nodes[{i}].labels", f"{show(label)}: {RESERVED_LABEL_PREFIX}* labels "
                     f"are the tool's own (postgres: true, public: true set them)")
    if not config.nodes:
        return
    holders = [n.name for n in config.nodes if n.postgres]
    if len(holders) != 1:
        fail("nodes", f"{len(holders)} nodes hold postgres's volume "
             f"({', '.join(holders) or 'none'}): mark exactly one with postgres: true")
    first_manager = next(n for n in config.nodes if n.role == "manager")
    if not first_manager.postgres:
        # db-init, migrations and backups `docker exec` into postgres on the host -H names
        fail("nodes", f"postgres's node ({holders[0]}) must be the first manager listed "
             f"(now {first_manager.name}): the tool runs db-init, migrations and backups "
             f"beside postgres on the host it talks to")
    public = [n.name for n in config.nodes if n.public]
    if len(public) != 1:
        # one edge, its ports on the host's own interface and its certificates in a volume
        # of that node: a second public node would answer nothing
        fail("nodes", f"{len(public)} public nodes ({', '.join(public) or 'none'}): mark "
             f"exactly one public: true (the edge runs there, where DNS points)")
    if config.multi_node and config.registry is None:
        fail("nodes", "a cluster needs registry: the other nodes pull the images from it "
             "(images built or pulled on one node are not on the others)")


def _check(config: Config, file: str) -> None:
    def fail(key: str, message: str) -> None:
        raise ConfigError(file, key, message)

    if not config.applications:
        fail("applications", "no applications: nothing to deploy")
    databases: dict[str, str] = {}
    for env, spec in config.environments.items():  # env names: config.names.env_name
        if spec.database in databases:
            fail(f"environments.{env}.database", f"{show(spec.database)} is already the "
                 f"database of {databases[spec.database]}: each env needs its own (locks, "
                 f"backups and restores are per env)")
        databases[spec.database] = env
    for scope in config.secrets:
        if scope != "shared" and scope not in config.environments:
            fail(f"secrets.{scope}", f"unknown scope (use shared or one of "
                 f"{', '.join(config.environments)})")
    names: dict[str, int] = {}
    domains: dict[str, str] = {}
    largest = max(node.cpus for node in config.cluster())
    for index, app in enumerate(config.applications):
        at = f"applications[{index}]"
        if app.name in names:
            fail(f"{at}.name", f"{show(app.name)} is already the name of "
                 f"applications[{names[app.name]}]")
        names[app.name] = index
        for domain in app.domains:
            if domain in domains:
                fail(f"{at}.domain", f"{domain} is already served by {domains[domain]}")
            domains[domain] = app.name
        if app.additional_domains and not app.domain:
            fail(f"{at}.additionalDomains", "needs a domain to redirect to")
        if app.resources.cpus > largest:
            where = "the largest node's" if config.multi_node else "the VPS's"
            fail(f"{at}.resources.cpus", f"{app.resources.cpus:g} exceeds {where} "
                 f"{largest:g} CPUs; Docker refuses such a limit")
        _check_secret_refs(config, app, at, fail)
    _check_strategy(config, fail)
    for name, res in [("postgres", config.postgres.resources), ("redis", config.redis.resources),
                      *config.overhead.items()]:
        key = f"overhead.{name}" if name in config.overhead else name
        if res.cpus > config.vps.cpus:  # the single host; on a cluster, postgres's node
            fail(f"{key}.resources.cpus" if key in ("postgres", "redis") else f"{key}.cpus",
                 f"{res.cpus:g} exceeds the VPS's {config.vps.cpus:g} CPUs")
    if config.edge.counted_in not in config.overhead and config.overhead:
        fail("edge.countedIn", f"{show(config.edge.counted_in)} is not an overhead entry "
             f"({', '.join(config.overhead)})")
    if config.edge.tls == "internal" and config.edge.ca_root is None:
        fail("edge.caRoot", "tls: internal needs the CA root that signs the edge's "
             "certificates (a PEM file, e.g. the edge's /data/caddy/pki/authorities/local/"
             "root.crt); without it verify could never trust the edge")
    _check_traefik(config, fail)
    _check_pg_settings(config, fail)
    _check_verifiable(config, fail)
    _check_envs(config, "offHours.envs", config.off_hours.envs if config.off_hours else [],
                fail)
    refs = [(f"alerts.{key}", name) for key, name in config.alerts.secret_refs().items()]
    if config.backups.s3 is not None:
        refs += [(f"backups.s3.{key.split()[0]}", name)
                 for key, name in config.backups.s3.secret_refs().items()]
        _check_envs(config, "backups.s3.envs", config.backups.s3.envs, fail)
    kuma = config.monitoring.uptime_kuma
    if kuma is not None:
        refs += [(f"monitoring.uptimeKuma.{key}", name)
                 for key, name in kuma.secret_refs().items()]
        if config.monitoring.uptime_kuma_port is None:
            fail("monitoring.uptimeKuma", "set monitoring.uptimeKumaPort (where Uptime Kuma "
                 "listens on the host) or remove uptimeKuma")
        _check_envs(config, "monitoring.uptimeKuma.envs", kuma.envs, fail)
    for at, name in refs:
        if name not in config.secrets.get("shared", {}):
            fail(at, f"${{{name}}} is not a shared secret (add {name}: manual under "
                 f"secrets.shared)")
    if config.registry is not None:
        registry = config.registry
        if registry.password_secret not in config.secrets.get("shared", {}):
            fail("registry.password", f"{registry.password} is not a shared secret "
                 f"(add {registry.password_secret}: manual under secrets.shared)")
        for i, app in enumerate(config.applications):
            if not app.image_repo.startswith(registry.server + "/"):
                fail(f"applications[{i}].image", f"{show(app.image_repo)} is not in the "
                     f"registry {registry.server} (name it {registry.server}/...)")


def _check_pg_settings(config: Config, fail: Callable[[str, str], None]) -> None:
    """What the settings let PostgreSQL hold at once must fit the container's memory limit,
    or the kernel kills it mid-query."""
    from vedfin_ops.config.pg_settings import budget_mib

    settings = config.postgres.settings
    if not settings:
        return
    if "max_connections" in settings and not settings["max_connections"].isdigit():
        fail("postgres.settings.max_connections", f"{show(settings['max_connections'])} is "
             f"not a whole number")
        return
    need, limit = budget_mib(settings), config.postgres.resources.memory
    if need > limit:
        fail("postgres.settings", f"shared_buffers + maintenance_work_mem + max_connections "
             f"x work_mem = {need:g} MiB, more than postgres.resources.memory ({limit} MiB): "
             f"the kernel would kill PostgreSQL under load")


def _check_traefik(config: Config, fail: Callable[[str, str], None]) -> None:
    """Traefik mode: the apps' own network is not Traefik's (a name would resolve on both),
    and every old task's drain fits inside the rollout timeout."""
    edge = config.edge
    if edge.mode != "traefik":
        return
    if edge.traefik.network == config.remote.network:
        fail("edge.traefik.network", f"{show(edge.traefik.network)} is also remote.network: "
             f"postgres, redis and the apps would be reachable by name from Traefik's network")
    if edge.email is not None:
        fail("edge.email", "the ACME account is Traefik's own (its certResolver's email) in "
             "mode: traefik")
    strategy = config.deployment_strategy
    for index, app in enumerate(config.applications):
        if not app.domain:
            continue
        batches = -(-app.replicas // max(1, strategy.parallelism))
        # stop-first waits for each old task to drain; start-first overlaps them, but the
        # last one still drains after the last batch's monitor
        worst = (batches * edge.traefik.drain if strategy.order == "stop-first"
                 else batches * monitor_seconds(app.health) + edge.traefik.drain)
        if worst >= config.remote.rollout_timeout:
            fail("edge.traefik.drain", f"{show(edge.traefik.drain)}s of drain makes a rollout "
                 f"of applications[{index}] take about {worst:g}s, not under "
                 f"remote.rolloutTimeout ({config.remote.rollout_timeout:g}s)")
            return


def _check_verifiable(config: Config, fail: Any) -> None:
    """Verify must never pass by checking nothing: smoke checks go through app domains."""
    if config.verify.allow_no_checks:
        return
    for env in config.environments:
        apps = config.apps(env)
        if apps and not any(app.domain for app in apps):
            fail(f"environments.{env}", f"no application of {env} has a domain, so verify "
                 f"would have no smoke check to run; give one a domain or set "
                 f"verify.allowNoChecks: true to deploy {env} unverified")


def _check_envs(config: Config, at: str, envs: list[str],
                fail: Callable[[str, str], None]) -> None:
    """A list of env names (`offHours.envs`, ...) names only the config's envs."""
    for i, env in enumerate(envs):
        if env not in config.environments:
            fail(f"{at}[{i}]", f"{show(env)} is not an environment "
                 f"({', '.join(config.environments)})")


def _check_secret_refs(config: Config, app: Application, at: str, fail: Any) -> None:
    declared = config.secret_names(app.env)
    for key, value in app.environment.items():
        for ref in secret_refs(value):
            if ref not in declared:
                fail(f"{at}.environment.{key}",
                     f"${{{ref}}} is not a declared secret of {app.env} "
                     f"(declare it under secrets.{app.env} or secrets.shared)")


def _check_strategy(config: Config, fail: Any) -> None:
    strategy = config.deployment_strategy
    if strategy.max_surge == 0 and strategy.max_unavailable == 0:
        fail("deploymentStrategy", "maxSurge and maxUnavailable are both 0: no update could "
             "ever make progress")
    for app in config.applications:
        if strategy.max_unavailable >= app.replicas:
            fail("deploymentStrategy.maxUnavailable",
                 f"{strategy.max_unavailable} would leave {app.name} ({app.replicas} "
                 f"replica{'s' if app.replicas > 1 else ''}) with none running during an update")
