"""The typed model of `dokploy.yaml`.

The runbook's own snippets must load as written, so keys stay camelCase like Dokploy's, and
everything the runbook leaves implicit (images, ports, health checks, databases, secrets) has a
default that reproduces what the runbook does by hand.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from vedfin_ops.config.names import env_name
from vedfin_ops.config.tags import TAG_PATTERN, TAG_RE
from vedfin_ops.config.units import parse_mib, parse_seconds, show

MIN_MEMORY_MIB = 6  # Docker refuses a memory limit below 6 MiB.


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"{show(value)} must be greater than 0")
    return value


def _at_least_docker_minimum(value: int) -> int:
    if value <= 0:
        raise ValueError(f"{value}m must be greater than 0")
    if value < MIN_MEMORY_MIB:
        raise ValueError(f"{value}m is below Docker's minimum of {MIN_MEMORY_MIB}m")
    return value


def _image_tag(value: str) -> str:
    """The one tag rule (vedfin_ops.config.tags), matched in full: a tag reaches stack files."""
    if TAG_RE.fullmatch(value) is None:
        raise ValueError(f"{show(value)} is not a valid image tag ({TAG_PATTERN})")
    return value


def _env_value(value: str) -> str:
    """An env file holds one variable per line: a line break would start another variable."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("the value holds a line break (or a NUL): an env value must be one "
                         "line, as the env file has one variable per line")
    return value


# A conservative addr-spec: what any mail system takes, and nothing the Caddyfile would read as
# syntax (no spaces, braces, quotes or line breaks).
_EMAIL_LOCAL = r"[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*"
_EMAIL_DOMAIN = r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_EMAIL = re.compile(f"{_EMAIL_LOCAL}@{_EMAIL_DOMAIN}")


def _email(value: str) -> str:
    if len(value) > 254 or _EMAIL.fullmatch(value) is None:
        raise ValueError(f"{show(value)} is not an email address like ops@example.com")
    return value


# PostgreSQL 16's RESERVED_KEYWORD and TYPE_FUNC_NAME_KEYWORD lists (src/include/parser/
# kwlist.h): neither can name a database unquoted (`CREATE DATABASE user` is a syntax error).
PG_RESERVED = frozenset({
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
    "authorization", "binary", "both", "case", "cast", "check", "collate", "collation",
    "column", "concurrently", "constraint", "create", "cross", "current_catalog",
    "current_date", "current_role", "current_schema", "current_time", "current_timestamp",
    "current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end",
    "except", "false", "fetch", "for", "foreign", "freeze", "from", "full", "grant", "group",
    "having", "ilike", "in", "initially", "inner", "intersect", "into", "is", "isnull",
    "join", "lateral", "leading", "left", "like", "limit", "localtime", "localtimestamp",
    "natural", "not", "notnull", "null", "offset", "on", "only", "or", "order", "outer",
    "overlaps", "placing", "primary", "references", "returning", "right", "select",
    "session_user", "similar", "some", "symmetric", "system_user", "table", "tablesample",
    "then", "to", "trailing", "true", "union", "unique", "user", "using", "variadic",
    "verbose", "when", "where", "window", "with"
})
_DATABASE = re.compile(r"[a-z_][a-z0-9_]*")
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are cut silently


def _database_name(value: str) -> str:
    """init-db.sql names a database unquoted, which PostgreSQL folds to lower case, and looks
    it up quoted in pg_database: only a lower-case, non-reserved name matches on a second run."""
    if _DATABASE.fullmatch(value) is None:
        raise ValueError(f"{show(value)} is not a lower-case identifier ([a-z_][a-z0-9_]*): "
                         f"PostgreSQL would not keep it as written")
    if len(value) > MAX_IDENTIFIER:
        raise ValueError(f"{show(value)} is {len(value)} characters; PostgreSQL keeps at most "
                         f"{MAX_IDENTIFIER}")
    if value in PG_RESERVED:
        raise ValueError(f"{show(value)} is a PostgreSQL reserved word")
    return value


def _ca_root(value: str) -> str:
    if not value or "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{show(value)} is not a path to a PEM file")
    return value


def _one_line_path(value: str) -> str:
    if not value or "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{show(value)} is not a path")
    return value


Mib = Annotated[int, BeforeValidator(parse_mib)]
LimitMib = Annotated[int, BeforeValidator(parse_mib), AfterValidator(_at_least_docker_minimum)]
Seconds = Annotated[float, BeforeValidator(parse_seconds)]
Cpus = Annotated[float, AfterValidator(_positive)]
Count = Annotated[int, Field(strict=True)]

_NAME = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
_DOMAIN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$"
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_REF = re.compile(r"\$\{([^}]*)\}")
_PATH = r"^/[^\s]*$"

DEFAULT_MIGRATE = "npx prisma migrate deploy --schema=/app/apps/api/prisma/schema.prisma"
DEFAULT_MIGRATE_STATUS = "npx prisma migrate status --schema=/app/apps/api/prisma/schema.prisma"


class Model(BaseModel):
    """camelCase keys in YAML, unknown keys refused, types not silently coerced."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
        strict=True,
        validate_default=True,
    )


class Resources(Model):
    memory: LimitMib
    cpus: Cpus


class Healthcheck(Model):
    """An HTTP probe inside the container; without one Swarm routes to tasks still booting."""

    path: Annotated[str, Field(pattern=_PATH)] = "/"
    command: list[str] | None = None
    interval: Seconds = 5.0
    timeout: Seconds = 3.0
    retries: Annotated[Count, Field(ge=1)] = 3
    start_period: Seconds = 10.0


MONITOR_MARGIN_S = 2.0


def monitor_seconds(health: Healthcheck) -> float:
    """How long Swarm watches a new task after it counts as running: long enough for the
    task's own checks to fail it (`retries` failures in a row, each up to `timeout` and
    `interval` apart), plus 2 s for the task's end to reach the updater. A task with a
    health check counts as running only once healthy, so its start period is behind it;
    one that never gets there is rolled back whatever this window (docs/deploying.md says
    what the engine's automatic rollback covers and what the tool's verify does)."""
    return health.retries * (health.interval + health.timeout) + MONITOR_MARGIN_S


class Build(Model):
    """How `build` makes an app's image where the tool runs (`docker build`): `context` is
    relative to the config file; `{tag}` in an arg's value becomes the tag being built, so
    the image can say which version it is."""

    context: Annotated[str, AfterValidator(_one_line_path)] = "."
    dockerfile: Annotated[str, AfterValidator(_one_line_path)] = "Dockerfile"
    args: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
               Annotated[str, AfterValidator(_env_value)]] = {}

    def args_for(self, tag: str) -> dict[str, str]:
        return {k: v.replace("{tag}", tag) for k, v in self.args.items()}


class Application(Model):
    name: Annotated[str, Field(pattern=_NAME, max_length=48)]
    branch: str = "main"
    domain: Annotated[str, Field(pattern=_DOMAIN)] | None = None
    additional_domains: list[Annotated[str, Field(pattern=_DOMAIN)]] = []
    resources: Resources
    replicas: Annotated[Count, Field(ge=1)] = 1
    environment: Annotated[dict[str, Annotated[str, AfterValidator(_env_value)]],
                           BeforeValidator(lambda v: _env_items(v))] = {}
    image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:-]*$")] | None = None
    port: Annotated[Count, Field(ge=1, le=65535)] = 3000
    healthcheck: Healthcheck | None = None
    migrate: str | None = None
    # verify's "migrations applied": run in a one-off container of the live image, exit 0
    # when nothing is pending ("" turns it off)
    migrate_status: str | None = None
    build: Build | None = None
    # how long a stopping task (SIGTERM) may finish what is in flight before it is killed:
    # the edge's lag (1 s for Caddy) + the longest request + the app's keep-alive timeout
    stop_grace_period: Annotated[Seconds, Field(ge=1, le=600)] = 10.0

    _app: str = PrivateAttr(default="")
    _env: str = PrivateAttr(default="")

    @property
    def app(self) -> str:
        """The application kind (`api`), the name without its environment suffix."""
        return self._app

    @property
    def env(self) -> str:
        return self._env

    @property
    def domains(self) -> list[str]:
        return ([self.domain] if self.domain else []) + list(self.additional_domains)

    @property
    def image_repo(self) -> str:
        return self.image or f"vedfinance/{self._app}"

    @property
    def health(self) -> Healthcheck:
        if self.healthcheck is not None:
            return self.healthcheck
        return Healthcheck.model_validate({"path": "/api/health" if self._app == "api" else "/"})

    @property
    def migrate_command(self) -> str | None:
        """Only the api migrates by default; the runbook's Step 5 runs Prisma there."""
        if self.migrate is not None:
            return self.migrate or None
        return DEFAULT_MIGRATE if self._app == "api" else None

    @property
    def migrate_status_command(self) -> str | None:
        """Prisma's `migrate status` where Prisma migrates (exit 1 while one is pending)."""
        if self.migrate_status is not None:
            return self.migrate_status or None
        return DEFAULT_MIGRATE_STATUS if self.migrate is None and self._app == "api" else None

    @property
    def total_memory_mb(self) -> int:
        return self.resources.memory * self.replicas

    @property
    def total_cpus(self) -> float:
        return self.resources.cpus * self.replicas


def _env_items(value: Any) -> Any:
    """Accept Dokploy's `- KEY=value` list as well as a mapping; keep the user's order."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or _VARIABLE.fullmatch(key) is None:
                raise ValueError(f"{show(key)} is not a valid variable name "
                                 f"({_VARIABLE.pattern})")
        return {k: v if isinstance(v, str) else _scalar(v) for k, v in value.items()}
    if not isinstance(value, list):
        return value  # let the type check say what is wrong
    out: dict[str, str] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"item {index} {show(item)} is not KEY=value")
        key, _, val = item.partition("=")
        if _VARIABLE.fullmatch(key) is None:
            raise ValueError(f"item {index}: {show(key)} is not a valid variable name "
                             f"({_VARIABLE.pattern})")
        if key in out:
            raise ValueError(f"item {index}: {key} is set twice")
        out[key] = val
    return out


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class DeploymentStrategy(Model):
    type: Literal["rolling"] = "rolling"
    max_surge: Annotated[Count, Field(ge=0)] = 1
    max_unavailable: Annotated[Count, Field(ge=0)] = 0

    @property
    def order(self) -> Literal["start-first", "stop-first"]:
        return "start-first" if self.max_surge > 0 else "stop-first"

    @property
    def parallelism(self) -> int:
        return self.max_surge if self.max_surge > 0 else self.max_unavailable


class PgVolume(Model):
    """The data volume. Made by the shared stack (named `<stack>_<name>`), or, `external`,
    an existing volume adopted by its own name (e.g. the one Dokploy's postgres used),
    checked before any change to exist, to be in no other container's use and to hold data
    of the image's major version."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)]
    external: bool = False


class Postgres(Model):
    image: str = "pgvector/pgvector:pg17"
    resources: Resources = Resources.model_validate({"memory": "1024m", "cpus": 1.0})
    user: Annotated[str, Field(pattern=_IDENT)] = "postgres"
    extensions: list[Annotated[str, Field(pattern=_IDENT)]] = ["vector", "pg_stat_statements"]
    healthcheck: Healthcheck = Healthcheck.model_validate(
        {"command": ["pg_isready", "-U", "postgres"], "interval": "5s", "retries": 5,
         "startPeriod": "30s"}
    )
    stop_grace_period: Seconds = 30.0
    volume: Annotated[PgVolume, BeforeValidator(
        lambda v: {"name": v} if isinstance(v, str) else v)] = PgVolume(name="pgdata")
    # server options (`-c name=value`), PostgreSQL's names and units: the runbook's tuning is
    # shared_buffers 256MB, work_mem 4MB, max_connections 20, maintenance_work_mem 64MB
    settings: Annotated[dict[str, str], BeforeValidator(lambda v: _pg_settings(v))] = {}


def _pg_settings(value: Any) -> Any:
    from vedfin_ops.config.pg_settings import check_value

    if not isinstance(value, dict):
        return value
    out = {}
    for name, raw in value.items():
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ValueError(f"{name}: {show(raw)} is not a value (a number with a unit, or "
                             f"a word)")
        out[str(name)] = check_value(str(name), str(raw))
    return out


class Redis(Model):
    image: str = "redis:7-alpine"
    resources: Resources = Resources.model_validate({"memory": "256m", "cpus": 0.25})


class Vps(Model):
    memory: LimitMib
    cpus: Cpus
    swap: Mib = "0m"  # type: ignore[assignment]
    address: str | None = None
    plan: str = "CPX21"


NodeRole = Literal["manager", "worker"]
# labels the tool sets itself (placement): a config never names them
RESERVED_LABEL_PREFIX = "vedfin."


class Node(Model):
    """One machine of the swarm. `name` is the engine's node name (its hostname, as `docker
    node ls` shows it); `host` is how SSH reaches it (an alias of ~/.ssh/config, or
    user@address). `postgres` marks the one node that holds postgres's volume (postgres is
    pinned there, never moved by the engine); `public` the nodes with the public address
    (the edge runs there)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
                               max_length=63)]
    # never a leading "-": it reaches ssh's command line
    host: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@\[][A-Za-z0-9_.@:\[\]-]*$",
                               max_length=255)]
    role: NodeRole = "worker"
    memory: LimitMib
    cpus: Cpus
    swap: Mib = "0m"  # type: ignore[assignment]
    address: str | None = None
    public: bool = False
    postgres: bool = False
    labels: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                      max_length=100)],
                 Annotated[str, Field(pattern=r"^[A-Za-z0-9._:/-]*$", max_length=100)]] = {}


def _vps_from_nodes(data: Any) -> Any:
    """`nodes:` without `vps:`: the single-host figures the rest of the tool reads (the
    plan, preflight's swap) come from the manager the tool talks to (the first one)."""
    if not isinstance(data, dict) or "vps" in data or not isinstance(data.get("nodes"), list):
        return data
    managers = [n for n in data["nodes"] if isinstance(n, dict) and n.get("role") == "manager"]
    if not managers:
        return data  # the loader names the missing manager
    first = managers[0]  # postgres's node (the loader insists)
    vps = {k: first[k] for k in ("memory", "cpus", "swap") if k in first}
    public = [n for n in data["nodes"] if isinstance(n, dict) and n.get("public")]
    address = (public[0] if public else first).get("address")
    if address is not None:
        vps["address"] = address  # what DNS must name: the public node's
    return {**data, "vps": vps}


class NextPlan(Model):
    """The upgrade the runbook names (Option 3); capacity's recommendation quotes it."""

    name: str = "CPX31"
    memory: LimitMib = "8g"  # type: ignore[assignment]
    cpus: Cpus = 4.0
    price: str = "€10-15/month"


class Environment(Model):
    database: Annotated[str, AfterValidator(_database_name)]
    # the env whose deploys own the shared stack (postgres, redis, the edge) and the host's
    # alarms; a deploy of another env changes it only with --allow-shared (one owner at
    # most). Unset: true for the env named production (config.roles)
    owns_shared: bool | None = None
    # production's guards: db.restore over its database needs --yes, pause or scale below
    # one replica needs --force, capacity-report never offers to pause it. Unset: true for
    # the env named production (config.roles)
    protected: bool | None = None


_SERVER = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
_WHOLE_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def _secret_reference(value: str) -> str:
    """A password in the file itself is refused without being echoed in the error."""
    if not _WHOLE_REF.match(value):
        raise ValueError("must be a ${SECRET} reference to a shared secret, never the "
                         "password itself (the value is not shown)")
    return value


class Registry(Model):
    """Where the engine pulls the apps' images: every image of a release is resolved to its
    digest here before anything changes on the host, and the host logs in with the password
    on stdin. `password` is always a `${SECRET}` reference (never a literal in the file)."""

    server: Annotated[str, Field(pattern=_SERVER)]
    username: Annotated[str, Field(min_length=1, pattern=r"^[^\s:]+$")]
    password: Annotated[str, AfterValidator(_secret_reference)]
    ca_root: Annotated[str, AfterValidator(_ca_root)] | None = None

    @property
    def password_secret(self) -> str:
        return self.password[2:-1]


# Traefik names routers, middlewares, resolvers and entry points in its labels: keep them to
# characters that need no quoting there (a dot would start another label segment).
_TRAEFIK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_DOCKER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Traefik(Model):
    """An existing Traefik v3 (Dokploy's) that routes to the apps instead of our Caddy: what
    its static configuration names. The defaults are Dokploy's."""

    # the container or swarm service that holds the public ports (preflight looks for it;
    # no dot: task containers are named `<service>.<slot>.<id>`)
    service: Annotated[str, Field(pattern=_TRAEFIK_NAME)] = "dokploy-traefik"
    # the overlay network Traefik is attached to; the apps join it
    network: Annotated[str, Field(pattern=_DOCKER_NAME)] = "dokploy-network"
    cert_resolver: Annotated[str, Field(pattern=_TRAEFIK_NAME)] = "letsencrypt"
    entry_point: Annotated[str, Field(pattern=_TRAEFIK_NAME)] = "web"
    secure_entry_point: Annotated[str, Field(pattern=_TRAEFIK_NAME)] = "websecure"
    # a request that reached a replica being replaced is sent again, to another replica
    retry_attempts: Annotated[Count, Field(ge=0, le=20)] = 4
    # Traefik's swarm provider polls the engine (refreshSeconds, 15 s unless its static
    # config says otherwise): a stopping task keeps serving this long before it is killed,
    # so that no request is sent to a task that is gone. 0: stopped at once (SIGTERM).
    drain: Annotated[Seconds, Field(ge=0, le=600)] = 20.0


class Edge(Model):
    """The reverse proxy in front of every app; counted inside the `system` overhead.
    `mode: caddy` deploys ours; `mode: traefik` labels the apps for an existing Traefik."""

    mode: Literal["caddy", "traefik"] = "caddy"
    traefik: Traefik = Traefik()
    image: str = "caddy:2-alpine"
    resources: Resources = Resources.model_validate({"memory": "64m", "cpus": 0.1})
    http_port: Annotated[Count, Field(ge=1, le=65535)] = 80
    https_port: Annotated[Count, Field(ge=1, le=65535)] = 443
    tls: Literal["auto", "internal", "off"] = "auto"
    email: Annotated[str, AfterValidator(_email)] | None = None
    # The PEM CA bundle that signs the edge's certificates (`tls: internal` needs one, or
    # verify could never trust the edge). Relative to the config file's folder; the loader
    # stores the resolved path.
    ca_root: Annotated[str, AfterValidator(_ca_root)] | None = None
    # `tls: auto` asks Let's Encrypt unless `acmeCA` names another ACME directory (a
    # staging CA, a company CA, the sandbox's pebble); `acmeCARoot` is the PEM the edge
    # trusts for talking to it (shipped to the edge as a swarm config).
    acme_ca: Annotated[str | None, Field(alias="acmeCA", pattern=r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~%/-]*)?$")
                       ] = None
    acme_ca_root: Annotated[Annotated[str, AfterValidator(_ca_root)] | None,
                            Field(alias="acmeCARoot")] = None
    counted_in: str = "system"

    @model_validator(mode="after")
    def _acme_with_auto(self) -> Edge:
        if self.mode == "traefik" and self.tls == "internal":
            raise ValueError("tls: internal is Caddy's own CA; with mode: traefik the "
                             "certificates come from Traefik's certResolver (tls: auto)")
        if self.mode == "traefik" and self.acme_ca is not None:
            raise ValueError("acmeCA is for our Caddy; Traefik's ACME server is its own "
                             "static configuration (certificatesResolvers.*.acme.caServer)")
        if self.acme_ca is not None and self.tls != "auto":
            raise ValueError(f"acmeCA needs tls: auto (tls is {self.tls})")
        if self.acme_ca_root is not None and self.acme_ca is None:
            raise ValueError("acmeCARoot without acmeCA: nothing would use it")
        return self


class Alert(Model):
    above: Annotated[float, Field(gt=0, le=100)]
    for_: Annotated[Seconds, Field(alias="for")] = 0.0


def _endpoint(value: str) -> str:
    """An http(s) URL; `${SECRET}` references may stand for parts (R2's account id)."""
    if not re.fullmatch(r"https?://[A-Za-z0-9.${}_:-]+(/[A-Za-z0-9._/-]*)?", value):
        raise ValueError(f"{show(value)} is not an http(s):// endpoint URL")
    return value


def _emails(value: str) -> str:
    for one in value.split() or [value]:
        _email(one)
    return " ".join(value.split())


class RestartAlert(Model):
    """Task containers that died without being told to (a crash, the OOM killer) within the
    last `within`: more than `above` is critical. A rolling update's stops are not counted."""

    above: Annotated[Count, Field(ge=0)] = 0
    within: Annotated[Seconds, Field(ge=60, le=3600)] = 600.0


class Alerts(Model):
    """The runbook's Netdata alerts: CPU > 85% / 5 min, RAM > 90% / 5 min, disk > 85%,
    container restarts; sent by email and, when `slack` names a secret, to Slack (Uptime
    Kuma's down alerts use the same webhook; `pagerDuty` its integration key)."""

    cpu: Alert = Alert.model_validate({"above": 85, "for": "5m"})
    ram: Alert = Alert.model_validate({"above": 90, "for": "5m"})
    disk: Alert = Alert.model_validate({"above": 85})
    ram_warn: Annotated[float, Field(gt=0, le=100)] = 85
    restarts: RestartAlert = RestartAlert()
    # one address, or several separated by spaces (Netdata's recipient list)
    email: Annotated[str, AfterValidator(_emails)] | None = None
    slack: Annotated[str, AfterValidator(_secret_reference)] | None = None
    pager_duty: Annotated[str, AfterValidator(_secret_reference)] | None = None
    # PagerDuty's Events API v2 (its EU accounts: https://events.eu.pagerduty.com/v2/enqueue)
    pager_duty_url: Annotated[str, AfterValidator(_endpoint)] = \
        "https://events.pagerduty.com/v2/enqueue"

    def secret_refs(self) -> dict[str, str]:
        return {key: value[2:-1] for key, value in (("slack", self.slack),
                                                    ("pagerDuty", self.pager_duty)) if value}

    @model_validator(mode="after")
    def _warn_below_critical(self) -> Alerts:
        if self.ram_warn >= self.ram.above:
            raise ValueError(f"ramWarn ({self.ram_warn:g}) must be below ram.above "
                             f"({self.ram.above:g}): the warning comes before the alert")
        return self


class Firewall(Model):
    allow: list[Annotated[Count, Field(ge=1, le=65535)]] = [22, 80, 443]
    deny: list[Annotated[Count, Field(ge=1, le=65535)]] = [3000]
    check: Literal["ufw", "none"] = "ufw"  # "none" where the host has no ufw (the sandbox)


class UptimeKuma(Model):
    """Uptime Kuma's monitors for each env's public health URLs (the runbook's Step 7),
    applied through its API over an SSH tunnel to `monitoring.uptimeKumaPort` on the host (the
    port is never public). Down for longer than `downAfter` notifies Slack (`alerts.slack`);
    `pagerDutyAfter` failed checks in a row notify PagerDuty (`alerts.pagerDuty`, when set)."""

    username: Annotated[str, AfterValidator(_secret_reference)]
    password: Annotated[str, AfterValidator(_secret_reference)]
    envs: list[str] = ["production"]
    every: Annotated[Seconds, Field(ge=20, le=86400)] = 60.0
    down_after: Annotated[Seconds, Field(ge=20, le=86400)] = 30.0
    pager_duty_after: Annotated[Count, Field(ge=1, le=20)] = 3
    timeout: Annotated[Seconds, Field(ge=1, le=300)] = 20.0

    def secret_refs(self) -> dict[str, str]:
        return {"username": self.username[2:-1], "password": self.password[2:-1]}


class Monitoring(Model):
    netdata_port: Annotated[Count, Field(ge=1, le=65535)] = 19999
    # null where no Uptime Kuma runs (preflight then asks only for Netdata)
    uptime_kuma_port: Annotated[Count, Field(ge=1, le=65535)] | None = 3002
    check: bool = True  # false where nothing monitors the host (the sandbox)
    # Netdata's config folder on the host (its health.d gets the tool's alarms; the deploy
    # user must be able to write there) and how often the alarms are evaluated
    netdata_config: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]*$")] = "/etc/netdata"
    alarm_every: Annotated[Seconds, Field(ge=1)] = 60.0
    # false: deploys leave Netdata's health configuration alone (`fab monitoring.apply` still
    # installs it)
    apply: bool = True
    uptime_kuma: UptimeKuma | None = None
    # the image `host.prepare` runs Uptime Kuma from (as Dokploy runs it): a mirror's copy
    # where Docker Hub is out of reach
    uptime_kuma_image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")] = \
        "louislam/uptime-kuma:1"


class Capacity(Model):
    """The gate refuses when used + surge exceeds RAM + swap less this margin (0: the room is
    all of RAM + swap); past the RAM alert it only warns."""

    hard_margin_mb: Annotated[float, Field(ge=0)] = 0.0  # MiB


def _url_path(value: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", value):
        raise ValueError(f"{show(value)} is not a URL path starting with /")
    return value


def _regex(value: str) -> str:
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise ValueError(f"{show(value)} is not a regular expression ({exc})") from None
    if compiled.search(""):
        raise ValueError(f"{show(value)} matches an empty line, so every log line would count "
                         f"as an error")
    return value


class Verify(Model):
    """Verify never passes by checking nothing: an env whose apps have no domain has no smoke
    checks, and is refused unless this says so."""

    allow_no_checks: bool = False
    # where the api answers the web's CORS preflight (null: not checked); NestJS's
    # enableCors answers it on every path
    cors_path: Annotated[str, AfterValidator(_url_path)] | None = "/api/health"
    # the new tasks' log lines that count as errors (Python regexes, searched per line),
    # and whether they fail the deploy or only warn
    log_errors: list[Annotated[str, AfterValidator(_regex)]] = [
        r"\bERROR\b", r"\bFATAL\b", r"Unhandled"]
    log_errors_fail: bool = False
    # the zero-downtime receipt: during each rollout, each app's health path asked through the
    # edge 10 times a second from the operator's machine (checks/receipt.py)
    receipt: bool = True
    # a request that probe saw fail fails the deploy (as --require-zero-downtime does)
    require_zero_downtime: bool = False


class BackupS3(Model):
    """Off-host copies of every backup in an S3 bucket (Cloudflare R2 speaks the S3 API:
    endpoint `https://${R2_ACCOUNT_ID}.r2.cloudflarestorage.com`, region `auto`). Keys are
    always `${SECRET}` references to shared secrets."""

    # plain http:// carries the dumps and the signed requests in clear: refused unless this
    # says so (a test server on this machine); before `endpoint`, which is checked against it
    allow_http: bool = False
    endpoint: Annotated[str, AfterValidator(_endpoint)]
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "auto"
    # objects are `<prefix><stackPrefix>/<database>/<id>.dump` and `.json`
    prefix: Annotated[str, Field(pattern=r"^([A-Za-z0-9._-]+/)*$")] = ""
    # server-side encryption asked of each object: AES256 (SSE-S3), or none for a store that
    # refuses the header (a MinIO without a KMS); R2 encrypts everything and is never asked
    server_side_encryption: Literal["AES256", "none"] = "AES256"
    access_key_id: Annotated[str, AfterValidator(_secret_reference)]
    secret_access_key: Annotated[str, AfterValidator(_secret_reference)]
    ca_root: Annotated[str, AfterValidator(_ca_root)] | None = None
    # the newest this many copies of each database are kept in the bucket
    keep: Annotated[Count, Field(ge=1, le=10000)] = 30
    # the envs whose backups are copied here: production's by default (the runbook keeps
    # production's backups in R2; dev's and staging's are test data), so only their deploys
    # and backups need the bucket's token; [] copies none
    envs: list[str] = ["production"]

    @field_validator("endpoint")
    @classmethod
    def _https_unless_allowed(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith("http://") and not info.data.get("allow_http"):
            raise ValueError(f"{show(value)} is plain http: the dumps would cross the network "
                             f"unencrypted; use https://, or set backups.s3.allowHttp: true "
                             f"(a test server on this machine)")
        return value

    def secret_refs(self) -> dict[str, str]:
        """key -> secret name, for every reference this section makes."""
        refs = {"accessKeyId": self.access_key_id[2:-1],
                "secretAccessKey": self.secret_access_key[2:-1]}
        for name in _SECRET_REF.findall(self.endpoint):
            refs[f"endpoint ${{{name}}}"] = name
        return refs


class Backups(Model):
    """Database backups on the host (`<remote.baseDir>/backups/<database>/`)."""

    # the newest this many complete backups of each database are kept
    keep: Annotated[Count, Field(ge=1, le=1000)] = 7
    # deploy backs up the env's database before anything changes (`--no-backup` skips it)
    before_deploy: bool = True
    # every backup of `s3.envs` also uploaded here (`db.restore --from s3:ID` restores it)
    s3: BackupS3 | None = None
    # a backup of every env's database each night at this time of the host's clock (cron;
    # envs 10 minutes apart in the order of `environments`); null: none
    nightly: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] | None = "03:00"

    def offsite(self, env: str) -> bool:
        """Whether `env`'s backups are copied off-host (`s3` set and `env` in `s3.envs`)."""
        return self.s3 is not None and env in self.s3.envs


_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class OffHours(Model):
    """The runbook's mitigation 2: `replicas` of each app of `envs` from `start` to `end`
    (the host's clock), scaled by the host's cron; a deploy inside the window keeps them."""

    start: Annotated[str, Field(pattern=_HHMM)] = "00:00"
    end: Annotated[str, Field(pattern=_HHMM)] = "06:00"
    replicas: Annotated[Count, Field(ge=1)] = 1
    envs: list[str] = ["production"]

    @model_validator(mode="after")
    def _a_window(self) -> OffHours:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: no window")
        return self


_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _user_name(value: str) -> str:
    """A POSIX user name (what useradd takes by default): it reaches the host's shell, its
    sudoers line and its files' owners."""
    if _USER_NAME.fullmatch(value) is None:
        raise ValueError(f"{show(value)} is not a user name (^[a-z_][a-z0-9_-]{{0,31}}$: "
                         f"lower-case letters, digits, _ and -, at most 32)")
    return value


class Remote(Model):
    base_dir: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]*$")] = "/opt/vedfin"
    keep_releases: Annotated[Count, Field(ge=1)] = 5
    user: Annotated[str, AfterValidator(_user_name)] = "deployer"
    stack_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")] = "vedfin"
    network: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")] = "vedfin"
    rollout_timeout: Seconds = 600.0


# optional: set by hand where it is used (the alerts' webhook, Uptime Kuma's admin); a deploy
# never waits for it, the step that needs it warns and stands down
SecretSource = Literal["generate", "manual", "optional"]

_TASK_24_SECRETS: dict[str, SecretSource] = {
    "JWT_SECRET_{S}": "generate",
    "JWT_REFRESH_SECRET_{S}": "generate",
    "ENCRYPTION_KEY_{S}": "generate",
    "R2_ACCOUNT_ID": "manual",
    "R2_ACCESS_KEY_ID": "manual",
    "R2_SECRET_ACCESS_KEY": "manual",
    "GEMINI_API_KEY": "manual",
}
_ENV_SUFFIX = {"production": "PROD", "staging": "STAGING", "dev": "DEV"}


def _default_environments() -> dict[str, Environment]:
    return {
        "dev": Environment(database="vedfinance_dev"),
        "staging": Environment(database="vedfinance_staging"),
        "production": Environment(database="vedfinance_prod"),
    }


def _default_secrets() -> dict[str, dict[str, SecretSource]]:
    out: dict[str, dict[str, SecretSource]] = {"shared": {"POSTGRES_PASSWORD": "generate"}}
    for env, suffix in _ENV_SUFFIX.items():
        out[env] = {name.format(S=suffix): src for name, src in _TASK_24_SECRETS.items()}
    return out


class Config(Model):
    applications: list[Application]
    deployment_strategy: DeploymentStrategy = DeploymentStrategy()
    postgres: Postgres = Postgres()
    redis: Redis = Redis()
    vps: Vps
    # the swarm's machines; empty: `vps` is the one node (manager, public, postgres's)
    nodes: list[Node] = []
    overhead: dict[Annotated[str, Field(pattern=_NAME)], Resources] = {}
    environments: dict[Annotated[str, AfterValidator(env_name)], Environment] = Field(
        default_factory=_default_environments
    )
    secrets: dict[str, dict[Annotated[str, Field(pattern=_IDENT)], SecretSource]] = Field(
        default_factory=_default_secrets
    )
    tag: Annotated[str, AfterValidator(_image_tag)] = "latest"
    edge: Edge = Edge()
    backups: Backups = Backups()
    off_hours: OffHours | None = None
    alerts: Alerts = Alerts()
    firewall: Firewall = Firewall()
    monitoring: Monitoring = Monitoring()
    remote: Remote = Remote()
    next_plan: NextPlan = NextPlan()
    verify: Verify = Verify()
    capacity: Capacity = Capacity()
    registry: Registry | None = None
    secrets_file: str = ".vedfin/secrets.env"

    _source: str = PrivateAttr(default="dokploy.yaml")

    @model_validator(mode="before")
    @classmethod
    def _one_node_or_nodes(cls, data: Any) -> Any:
        return _vps_from_nodes(data)

    def cluster(self) -> list[Node]:
        """The swarm's nodes: `nodes`, or `vps` as a one-node cluster."""
        if self.nodes:
            return list(self.nodes)
        vps = self.vps
        return [Node.model_validate({"name": "vps", "host": "vps", "role": "manager",
                                     "memory": f"{vps.memory}m", "cpus": vps.cpus,
                                     "swap": f"{vps.swap}m", "address": vps.address,
                                     "public": True, "postgres": True})]

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    @property
    def source(self) -> str:
        """The file this came from, for error lines and relative paths."""
        return self._source

    def apps(self, env: str | None = None) -> list[Application]:
        return [a for a in self.applications if env is None or a.env == env]

    def secret_names(self, env: str | None = None) -> dict[str, SecretSource]:
        """Secrets a deploy of `env` needs: the shared ones plus the env's own, less the
        off-host copies' token where `env`'s backups are not copied (`backups.s3.envs`): a
        dev deploy never waits for a bucket token it does not use."""
        scopes = ["shared", *(self.environments if env is None else [env])]
        out: dict[str, SecretSource] = {}
        for scope in scopes:
            out.update(self.secrets.get(scope, {}))
        if env is not None and not self.backups.offsite(env):
            for name in self.offsite_only_secrets(env):
                out.pop(name, None)
        return out

    def offsite_only_secrets(self, env: str) -> set[str]:
        """The shared secrets that only `backups.s3` refers to, from `env`'s point of view:
        none of its apps, the alerts, Uptime Kuma or the registry use them."""
        s3 = self.backups.s3
        if s3 is None:
            return set()
        used = {ref for app in self.apps(env) for value in app.environment.values()
                for ref in secret_refs(value)}
        used |= set(self.alerts.secret_refs().values()) | set(self.secrets.get(env, {}))
        if self.monitoring.uptime_kuma is not None:
            used |= set(self.monitoring.uptime_kuma.secret_refs().values())
        if self.registry is not None:
            used.add(self.registry.password_secret)
        return set(s3.secret_refs().values()) - used

    def require_env(self, env: str) -> str:
        from vedfin_ops.errors import UsageError

        if env not in self.environments:
            known = ", ".join(self.environments)
            raise UsageError(f"{self._source}: environments: unknown env {show(env)} "
                             f"(known: {known})")
        return env


def secret_refs(value: str) -> list[str]:
    """Names referred to as `${NAME}` in a value."""
    return _SECRET_REF.findall(value)
