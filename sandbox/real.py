"""The sandbox's real workload: examples/v-edfinance's NestJS + Prisma api and Next.js web.

Built by the tool's own `build --push` from the example's Dockerfiles on a node:20 base made
of this machine's Node (no registry of base images is reachable). Its config,
.sandbox/dokploy-real.yaml, is the sandbox's own with production's apps as the real ones and
PostgreSQL and Redis at the shipped sizes: deploying it switches the sandbox's production from
the stand-ins to the real apps (as the HTTPS and Traefik configs switch its edge), on the same
host, folder, edge and registry; deploying dokploy.yaml switches back.

Each tag is a revision of the example: v1 is the example as committed, the others are v1 with
the overlays of sandbox/real/<tag> copied over it in order (TAGS: tag -> the tag it extends),
staged under .sandbox/real/<tag>/ so the build context is what a checkout of that commit holds.
Docker's layer cache is keyed by each app's lock file, so a second `up` rebuilds nothing.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sandbox import images, overlay
from sandbox.local import SandboxError, run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "v-edfinance"
REVISIONS = Path(__file__).resolve().parent / "real"
ENGINE_DIR = Path(__file__).resolve().parent / "prisma-engine"
ENGINE_IN_IMAGE = "/opt/prisma-engine"
TAGS: dict[str, str | None] = {"v1": None, "v2": "v1", "badmigration": "v2", "dropcolumn": "v2"}
CONFIG = "dokploy-real.yaml"
TRAEFIK_CONFIG = "dokploy-real-traefik.yaml"  # the same, with edge.mode: traefik
ENV = "production"
_SKIP = shutil.ignore_patterns("node_modules", ".next", "dist", "*.tsbuildinfo")


def lineage(tag: str) -> list[str]:
    """The overlays of `tag`, oldest first: dropcolumn -> [v2, dropcolumn]."""
    if tag not in TAGS:
        raise SandboxError(f"{tag}: not a real-app tag ({', '.join(TAGS)})")
    chain: list[str] = []
    at: str | None = tag
    while at is not None and at != "v1":
        chain.insert(0, at)
        at = TAGS[at]
    return chain


def stage(tag: str, root: Path) -> Path:
    """The example as of `tag` under root/tag (v1: the example itself, never copied)."""
    chain = lineage(tag)
    if not chain:
        return EXAMPLE
    dest = root / tag
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(EXAMPLE, dest, ignore=_SKIP)
    for name in chain:
        overlay_dir = REVISIONS / name
        if not overlay_dir.is_dir():
            raise SandboxError(f"{overlay_dir}: missing (the {name} revision's files)")
        shutil.copytree(overlay_dir, dest, dirs_exist_ok=True, ignore=_SKIP)
    return dest


def engine_modules(progress: Callable[[str], None] = print) -> None:
    """The schema-engine stand-in's node_modules, installed once per lock file."""
    lock = ENGINE_DIR / "package-lock.json"
    if not lock.is_file():
        raise SandboxError(f"{lock}: missing")
    stamp = ENGINE_DIR / "node_modules" / ".vedfin-lock-hash"
    wanted = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return
    progress("real apps: npm ci of the Prisma schema-engine stand-in")
    run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=ENGINE_DIR, timeout=600)
    stamp.write_text(wanted + "\n")


def base_spec() -> images.ImageSpec:
    """node:20 with the stand-in for Prisma's native schema engine, which the CLI would
    download from a host this machine cannot reach (a real build fetches it instead)."""
    return images.node_spec(
        extra={ENGINE_IN_IMAGE.lstrip("/"): ENGINE_DIR},
        env=(f"PRISMA_SCHEMA_ENGINE_BINARY={ENGINE_IN_IMAGE}/schema-engine",))


def real_config(sandbox: dict[str, Any], shipped: dict[str, Any],
                api_url: str | None = None) -> dict[str, Any]:
    """The sandbox's config with production's apps as the real ones at the shipped sizes and
    replicas; the other envs left out (each env's web needs its own image:
    NEXT_PUBLIC_API_URL is fixed when it is built). `api_url`: the api's URL the web is built
    with (default: through this config's edge)."""
    data = copy.deepcopy(sandbox)
    edge_port = data["edge"]["httpPort"]
    sizes = {app["name"]: app for app in shipped["applications"]}
    server = data["registry"]["server"]
    apps = []
    api_domain = ""
    for app in data["applications"]:
        if not app["name"].endswith(f"-{ENV}"):
            continue
        kind = app["name"].split("-")[0]
        if kind == "api":
            api_domain = app["domain"]
        app["resources"] = dict(sizes[app["name"]]["resources"])
        app["replicas"] = sizes[app["name"]].get("replicas", 1)
        app["image"] = f"{server}/{images.REPO}/real-{kind}"
        app.pop("migrate", None)  # the defaults: the runbook's `npx prisma migrate ...`
        app.pop("migrateStatus", None)
        # Node starts in 1-2 s (Nest, Prisma) on an idle machine; the probe is node's own
        # fetch (the image has no wget)
        app["healthcheck"] = {"path": "/api/health" if kind == "api" else "/",
                              "interval": "1s", "timeout": "3s", "retries": 3,
                              "startPeriod": "10s"}
        apps.append(app)
    for app in apps:
        kind = app["name"].split("-")[0]
        args = {"NODE_IMAGE": images.NODE, "APP_VERSION": "{tag}"}
        if kind == "web":
            args["NEXT_PUBLIC_API_URL"] = api_url or f"http://{api_domain}:{edge_port}"
            app["environment"] = [f"NEXT_PUBLIC_API_URL={args['NEXT_PUBLIC_API_URL']}"
                                  if str(item).startswith("NEXT_PUBLIC_API_URL=") else item
                                  for item in app["environment"]]
        app["build"] = {"context": str(EXAMPLE / "apps" / kind), "dockerfile": "Dockerfile",
                        "args": args}
        # the drain tests' slow routes; the web's origin for the api's CORS (with credentials)
        extra = ["ENABLE_TEST_ENDPOINTS=1"]
        if kind == "api":
            web = next(a for a in apps if a["name"].startswith("web-"))
            edge = data["edge"]
            origin = (f"https://{web['domain']}:{edge['httpsPort']}" if edge.get("tls") != "off"
                      else f"http://{web['domain']}:{edge_port}")
            extra.append(f"CORS_ORIGINS={origin}")
        app["environment"] = [*app["environment"], *extra]
    data["applications"] = apps
    data["environments"] = {ENV: data["environments"][ENV]}
    data["secrets"] = {k: v for k, v in data["secrets"].items() if k in ("shared", ENV)}
    data["verify"] = {k: v for k, v in data.get("verify", {}).items() if k != "corsPath"}
    # the sandbox's PostgreSQL 17 + pgvector at the shipped size, settings and extensions
    data["postgres"] = {**shipped["postgres"], "image": data["postgres"]["image"],
                        "healthcheck": data["postgres"]["healthcheck"]}
    data["redis"] = {**data["redis"], "resources": shipped["redis"]["resources"]}
    data["tag"] = "v1"
    return data


def write_config(workdir: Path) -> Path:
    from vedfin_ops.config.loader import load_config

    sandbox = yaml.safe_load((workdir / "dokploy.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "dokploy.yaml").read_text())
    path = workdir / CONFIG
    port = sandbox["edge"]["httpPort"]
    data = real_config(sandbox, shipped)
    path.write_text(overlay.dump(data, str(ROOT / "dokploy.yaml"), port))
    load_config(path)
    traefik = workdir / "dokploy-traefik.yaml"
    if traefik.exists():  # the same apps (the same images) routed by Dokploy's Traefik
        web = next(a for a in data["applications"] if a["name"].startswith("web-"))
        routed = yaml.safe_load(traefik.read_text())
        variant = workdir / TRAEFIK_CONFIG
        variant.write_text(overlay.dump(
            real_config(routed, shipped, web["build"]["args"]["NEXT_PUBLIC_API_URL"]),
            str(ROOT / "dokploy.yaml"), routed["edge"]["httpsPort"]))
        load_config(variant)
    return path


def build_tags(config_path: Path, tags: tuple[str, ...] = tuple(TAGS),
               progress: Callable[[str], None] = print) -> None:
    """Each tag built from its staged revision and pushed with the tool's `build --push`."""
    from vedfin_ops.config import secret_store
    from vedfin_ops.config.loader import load_config
    from vedfin_ops.deploy.build import build_images

    config = load_config(config_path)
    values = secret_store.resolve(config)
    staged_root = config_path.parent / "real"
    for tag in tags:
        context = stage(tag, staged_root)
        apps = [app.model_copy(update={"build": app.build.model_copy(update={
            "context": str(context / "apps" / app.name.split("-")[0])})})
            if app.build is not None else app for app in config.applications]
        progress(f"real apps: build and push {tag}")
        build_images(config.model_copy(update={"applications": apps}), tag, values,
                     push=True, say=lambda _m: None)


def up(workdir: Path, progress: Callable[[str], None] = print,
       tags: tuple[str, ...] = tuple(TAGS)) -> Path:
    """The real apps' base image, config and tags; needs the sandbox up."""
    if not (workdir / "dokploy.yaml").exists():
        raise SandboxError("the sandbox is not up (inv sandbox.up)")
    engine_modules(progress)
    progress("real apps: the node:20 base (with the schema-engine stand-in)")
    images.build(base_spec())
    path = write_config(workdir)
    build_tags(path, tags, progress)
    return path
