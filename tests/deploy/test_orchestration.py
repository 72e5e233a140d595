"""Every failure ends on one known release: faults injected at every step of deploy, rollback
and scale, against a scripted engine (tests/fake). The sandbox proves the same on the real
engine (tests/integration/test_failures.py); this covers every step and every kind of fault.

The invariant after any fault: the engine runs the previous live release on every service,
`current` still names it, the new release is marked failed/interrupted with the reason, the
last audit line says so, the lock is gone, and one RunFailed carries a one-line message.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.fake.host import FakeHost, Fault
from vedfin_ops.checks.endpoints import Endpoint
from vedfin_ops.checks.receipt import Probe
from vedfin_ops.config.model import Config
from vedfin_ops.config.names import stack_name
from vedfin_ops.deploy.db_init import DbInitResult
from vedfin_ops.deploy.pipeline import Hooks, deploy
from vedfin_ops.deploy.rollback import rollback
from vedfin_ops.deploy.scale import scale
from vedfin_ops.run.env_run import listing
from vedfin_ops.run.interrupts import HANDLED
from vedfin_ops.run.layout import Layout
from vedfin_ops.run.lock import LockHeld
from vedfin_ops.run.operation import RunFailed
from vedfin_ops.run.polling import Clock

KINDS = ("remote", "exception", "ctrl-c", "sigterm", "sighup")
INTERRUPTS = ("ctrl-c", "sigterm", "sighup")
T = TypeVar("T")
HANDLERS = {sig: signal.getsignal(sig) for sig in HANDLED}  # what a run must put back


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)


@dataclass
class Passed:
    checks: list[Any] = field(default_factory=list)
    passed: bool = True


@dataclass
class World:
    root: Path
    config: Config
    host: FakeHost
    clock: FakeClock
    verify_failures: list[str] = field(default_factory=list)
    verify_raises: BaseException | None = None
    said: list[str] = field(default_factory=list)
    # what the zero-downtime probe's requests meet ("" good, "refused", "HTTP 502", ...):
    # the real Probe, asking a scripted edge (the scripted host has none to ask)
    probe_meets: str = ""

    def __post_init__(self) -> None:
        # no probe of the config's domains (not this machine's to ask) unless a test turns
        # it on with World.hooks' scripted edge (tests/deploy/test_receipt_deploy.py)
        self.config.verify.receipt = False

    @property
    def layout(self) -> Layout:
        return Layout.of(self.config, "production")

    def hooks(self) -> Hooks:
        def db_init(host: Any, config: Any) -> DbInitResult:
            host.run("true", what="db-init")
            return DbInitResult()

        def check(config: Any, env: str, **kwargs: Any) -> list[str]:
            if self.verify_raises is not None:
                raise self.verify_raises
            return list(self.verify_failures)

        def receipt(config: Any, env: str) -> Probe:
            edge = {a.name: Endpoint(f"https://{a.domain}/", a.domain or "")
                    for a in config.apps(env) if a.domain}
            return Probe(edge, lambda endpoint: lambda target: self.probe_meets, rate=100)

        return Hooks(preflight=lambda *a, **k: Passed(), db_init=db_init, verify=check,
                     receipt=receipt)

    def deploy(self, tag: str) -> Any:
        return deploy(self.host, self.config, "production", tag, say=self.said.append,
                      hooks=self.hooks(), clock=self.clock.clock())

    def audit(self) -> list[dict[str, Any]]:
        path = Path(self.layout.audit)
        return [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []

    def env_images(self) -> dict[str, str]:
        return self.host.images(stack_name(self.config, "production"))

    def settle(self) -> None:
        """Let the scripted engine finish whatever it was doing (the real one would)."""
        for _ in range(5):
            self.host.run("docker service inspect $(docker service ls -q)", what="t")


@pytest.fixture(scope="module")
def v1_live(tmp_path_factory: pytest.TempPathFactory, shipped_data: dict[str, Any]
            ) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A host where v1 went live through the real pipeline; each test gets a copy of it."""
    import copy


    root = tmp_path_factory.mktemp("fakehost")
    with pytest.MonkeyPatch.context() as mp:
        world = v1_on_a_new_host(root, shipped_data, mp)
    data = copy.deepcopy(shipped_data)
    data.setdefault("verify", {})["receipt"] = False  # as v1_on_a_new_host's
    data.setdefault("remote", {})["baseDir"] = world.config.remote.base_dir
    saved = root.parent / f"{root.name}-saved"
    shutil.copytree(root, saved, symlinks=True)
    yield saved, data
    shutil.rmtree(saved, ignore_errors=True)


def v1_on_a_new_host(root: Path, shipped_data: dict[str, Any], mp: pytest.MonkeyPatch
                     ) -> World:
    """The shipped config on a new scripted host under `root`, its secrets set, v1 deployed
    through the real pipeline."""
    import copy

    from vedfin_ops.config.loader import config_from_dict

    data = copy.deepcopy(shipped_data)
    data.setdefault("remote", {})["baseDir"] = str(root / "srv")
    # no zero-downtime probe: the shipped domains are not this machine's to ask; the
    # receipt's tests turn it on with a scripted edge (World.hooks, tests/deploy/
    # test_receipt_deploy.py)
    data.setdefault("verify", {})["receipt"] = False
    config = config_from_dict(data, "dokploy.yaml")
    _secrets(mp, config)
    world = World(root, config, FakeHost(root), FakeClock())
    assert world.deploy("v1").result == "ok"
    return world


def _secrets(mp: pytest.MonkeyPatch, config: Config) -> None:
    for name in config.secret_names("production"):
        mp.setenv(name, f"s3cret-value-{name.lower()}")


@pytest.fixture
def world(v1_live: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> World:
    from vedfin_ops.config.loader import config_from_dict

    saved, data = v1_live
    root = Path(data["remote"]["baseDir"]).parent
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(saved, root, symlinks=True)
    config = config_from_dict(data, "dokploy.yaml")
    _secrets(monkeypatch, config)
    return World(root, config, FakeHost(root), FakeClock())


def assert_back_on_v1(world: World, error: BaseException, outcome: str) -> None:
    world.settle()
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current is not None
    assert world.env_images() == {f"vedfin-production_{a}-production": f"vedfinance/{a}:v1"
                                  for a in ("api", "web")}
    assert state.state(state.current) == "good"
    others = [(r, s) for r, s in state.releases if r != state.current]
    assert all(s in ("failed", "interrupted") for _, s in others), others
    last = world.audit()[-1]
    assert (last["action"], last["result"], last["tag"]) == ("deploy", outcome, "v2"), last
    assert isinstance(error, RunFailed) and "\n" not in str(error)
    assert str(error).startswith(f"deploy production {outcome}:"), str(error)
    assert not Path(world.layout.lock).exists()
    assert not Path(world.layout.base, ".shared.lock").exists()
    assert world.host.engine().get("containers", {}) == {}
    assert {sig: signal.getsignal(sig) for sig in HANDLED} == HANDLERS


def ends_failed(run: Callable[[], Any]) -> RunFailed:
    """The RunFailed a faulted run ends in. A Ctrl-C or signal that escapes `Operation.execute`
    unconverged fails this test, by name; under `pytest.raises(RunFailed)` it would abort the
    whole session instead (pytest stops on a KeyboardInterrupt), and no test would say so."""
    try:
        run()
    except RunFailed as failed:
        return failed
    except BaseException as escaped:  # what escapes is what this reports
        pytest.fail(f"the run did not converge: {escaped!r} escaped it")
    pytest.fail("the run ended without RunFailed")


def ends_ok(run: Callable[[], T]) -> T:
    """What a run returns whose fault came after it recorded its new state (it stands); a
    signal escaping it fails this test rather than the session (see `ends_failed`)."""
    try:
        return run()
    except BaseException as escaped:  # a signal after the commit must not escape either
        pytest.fail(f"the run did not end on its recorded state: {escaped!r} escaped it")


def assert_serving(world: World, action: str, outcome: str, tag: str) -> None:
    """The put-back of a failed rollback or scale: `tag` live and serving, the lock
    released, and the run's audit line."""
    world.settle()
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.meta["tag"] == tag and state.state(state.current or "") == "good"
    assert set(world.env_images().values()) == {f"vedfinance/{a}:{tag}" for a in ("api", "web")}
    assert not Path(world.layout.lock).exists()
    assert (world.audit()[-1]["action"], world.audit()[-1]["result"]) == (action, outcome)
    assert {sig: signal.getsignal(sig) for sig in HANDLED} == HANDLERS


def clean_v2_steps(world: World) -> list[tuple[str, int]]:
    """(what, n) of every command a clean v1 -> v2 deploy sends, after taking the lock."""
    assert world.deploy("v2").result == "ok"
    seen: dict[str, int] = {}
    steps = []
    for what in world.host.commands:
        seen[what] = seen.get(what, 0) + 1
        steps.append((what, seen[what]))
    assert steps[0] == ("lock", 1) and steps[-1][0] == "unlock"
    return steps[1:-1]


@pytest.fixture(scope="module")
def v2_steps(v1_live: tuple[Path, dict[str, Any]]) -> list[tuple[str, int]]:
    from vedfin_ops.config.loader import config_from_dict

    saved, data = v1_live
    root = Path(data["remote"]["baseDir"]).parent
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(saved, root, symlinks=True)
    config = config_from_dict(data, "dokploy.yaml")
    with pytest.MonkeyPatch.context() as mp:
        _secrets(mp, config)
        return clean_v2_steps(World(root, config, FakeHost(root), FakeClock()))


def test_a_first_deploy_on_a_new_host_makes_its_folders(tmp_path: Path,
                                                        shipped_data: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    world = v1_on_a_new_host(tmp_path, shipped_data, monkeypatch)
    assert Path(world.layout.current).is_symlink()


def test_a_clean_deploy_sends_the_steps_in_the_runbooks_order(v2_steps: list[tuple[str, int]]
                                                              ) -> None:
    names = [w for w, _ in v2_steps]
    order = ["list releases", "clean partial uploads", "upload", "db-init", "upload", "rename",
             "migrate (vedfinance/api:v2)", "stack deploy vedfin-production", "promote release"]
    assert [n for n in names if n in order] == order
    # the backup runs beside the upload and db-init; the release is placed only after it
    assert names.index("backup vedfinance_prod") < names.index("rename")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_any_fault_at_any_step_of_a_deploy_ends_on_the_live_release(
        world: World, v2_steps: list[tuple[str, int]], kind: str, after: bool) -> None:
    failures = []
    for what, nth in v2_steps:
        if after and what in ("upload",):
            continue
        local = _fresh(world)
        local.host.inject(Fault(what, nth, kind, after=after))
        threads = set(threading.enumerate())
        try:
            result = local.deploy("v2")
        except BaseException as exc:  # the invariant is what we check
            local.host.inject()  # a fault the run never reached must not fire in the checks
            if _outlived(threads):
                failures.append(f"{what}#{nth}: a thread of the run outlived it")
            outcome = "interrupted" if kind in ("ctrl-c", "sigterm", "sighup") else "failed"
            try:
                assert_back_on_v1(local, exc, outcome)
            except AssertionError as broken:
                failures.append(f"{what}#{nth}: {broken}")
        else:
            local.host.inject()
            if _outlived(threads):
                failures.append(f"{what}#{nth}: a thread of the run outlived it")
            # A fault after the last step that matters (the audit of a promoted release)
            # may end in success: then v2 must be fully live, good and audited ok.
            state = listing(local.host, local.layout)  # type: ignore[arg-type]
            ok = result.result == "ok" and state.state(state.current or "") == "good" and \
                set(local.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}
            if not ok:
                failures.append(f"{what}#{nth}: returned {result.result} but not live")
    assert failures == []


def _outlived(before: set[threading.Thread]) -> bool:
    """A thread the run started still runs (its end was signalled: a moment to return)."""
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=2)
    return any(t.is_alive() for t in set(threading.enumerate()) - before)


_SAVED: dict[str, Path] = {}


def _fresh(world: World) -> World:
    """Reset the world to v1 live (a copy taken at the first call)."""
    key = str(world.root)
    if key not in _SAVED:
        saved = world.root.parent / f"{world.root.name}-pristine"
        shutil.rmtree(saved, ignore_errors=True)
        shutil.copytree(world.root, saved, symlinks=True)
        _SAVED[key] = saved
    shutil.rmtree(world.root)
    shutil.copytree(_SAVED[key], world.root, symlinks=True)
    return World(world.root, world.config, FakeHost(world.root), FakeClock())


def test_a_broken_release_is_rolled_back_by_the_engine_and_reported(world: World) -> None:
    with pytest.raises(RunFailed) as info:
        world.deploy("broken")
    assert "rollout failed, the engine rolled back" in str(info.value)
    assert "production back on" in str(info.value)
    assert_back_on_v1_tagged(world, info.value, "broken")


def assert_back_on_v1_tagged(world: World, error: BaseException, tag: str) -> None:
    world.settle()
    assert set(world.env_images().values()) == {"vedfinance/api:v1", "vedfinance/web:v1"}
    last = world.audit()[-1]
    assert (last["result"], last["tag"]) == ("failed", tag)
    assert not Path(world.layout.lock).exists()


@pytest.mark.parametrize("verdict", ["failures", "crash", "markup"])
def test_a_failed_or_crashing_verify_puts_the_live_release_back(world: World,
                                                                verdict: str) -> None:
    if verdict == "failures":
        world.verify_failures = ["api /api/health: health says database='disconnected'"]
    elif verdict == "crash":
        world.verify_raises = TypeError("'list' object has no attribute 'get'")
    else:
        world.verify_failures = ["web /: [/app/prisma/migrations/001_init] [bold]x"]
    with pytest.raises(RunFailed) as info:
        world.deploy("v2")
    assert_back_on_v1(world, info.value, "failed")
    assert "verify failed" in str(info.value) or "TypeError" in str(info.value)


def test_a_migration_printing_markup_like_text_succeeds(world: World) -> None:
    assert world.deploy("v2").result == "ok"
    assert any("[/app/prisma/migrations/001_init]" in line for line in world.said)


def test_a_failed_migration_changes_no_replica(world: World) -> None:
    before = world.host.engine()["services"]
    with pytest.raises(RunFailed, match="no replica was changed"):
        world.deploy("badmigration")
    assert world.host.engine()["services"] == before
    assert world.audit()[-1]["result"] == "failed"


@pytest.mark.parametrize("kind", ["ctrl-c", "sigterm", "sighup"])
def test_an_interrupted_migration_is_stopped_and_blocks_no_later_deploy(world: World,
                                                                        kind: str) -> None:
    world.host.set_engine(hang_migrations=True)
    world.host.inject(Fault("migrate", 1, kind, after=True))
    failed = ends_failed(lambda: world.deploy("v2"))
    assert failed.interrupted
    assert_back_on_v1(world, failed, "interrupted")  # the migration container stopped too
    world.host.set_engine(hang_migrations=False)
    assert world.deploy("v2").result == "ok"


def test_a_running_migration_container_refuses_a_deploy_before_any_change(world: World
                                                                          ) -> None:
    state = world.host.engine()
    state["containers"] = {"api-production-migrate-v9": {"vedfin.migrate": "production"}}
    world.host.set_engine(**state)
    with pytest.raises(RunFailed, match="a migration of production is still running"):
        world.deploy("v2")
    assert set(world.env_images().values()) == {"vedfinance/api:v1", "vedfinance/web:v1"}


def test_one_failed_poll_is_retried_not_fatal(world: World) -> None:
    world.host.inject(Fault("watch rollout", 2, "remote"))  # 1: inspect, 2: watch
    assert world.deploy("v2").result == "ok"
    assert world.host.faults[0].fired


def test_the_engine_changed_by_hand_is_no_noop(world: World) -> None:
    assert world.deploy("v1").result == "noop"
    state = world.host.engine()
    changed = state["services"]["vedfin-production_api-production"]  # `docker service update`
    changed["image"], changed["template"] = "vedfinance/api:v2", "by-hand"
    world.host.set_engine(**state)
    result = world.deploy("v1")
    assert result.result == "ok"
    assert world.env_images()["vedfin-production_api-production"] == "vedfinance/api:v1"
    assert any("does not run" in line for line in world.said)


def test_a_lock_left_by_a_killed_run_is_named_stale(world: World) -> None:
    lock = Path(world.layout.lock)
    lock.mkdir(parents=True)
    import socket
    (lock / "holder").write_text(json.dumps({"who": "ci@runner", "host": socket.gethostname(),
                                             "pid": 2 ** 22 + 12345, "since": "then",
                                             "action": "deploy production"}))
    (lock / "heartbeat").touch()
    with pytest.raises(LockHeld, match="STALE: that process is gone"):
        world.deploy("v2")
    assert lock.exists()  # not ours to remove


def test_a_corrupt_lock_holder_is_a_message_not_a_traceback(world: World) -> None:
    lock = Path(world.layout.lock)
    lock.mkdir(parents=True)
    (lock / "holder").write_text("{not json")
    with pytest.raises(LockHeld, match="unreadable holder file"):
        world.deploy("v2")


def test_unlock_removes_only_the_lock_this_run_took(world: World) -> None:
    # someone broke our lock (lock.release) and another run took it: we leave theirs alone
    def steal() -> None:
        lock = Path(world.layout.lock)
        shutil.rmtree(lock)
        lock.mkdir()
        (lock / "token").write_text("theirs\n")

    world.verify_raises = None
    original = world.hooks

    def hooks() -> Hooks:
        h = original()
        inner = h.verify

        def verify_then_steal(config: Any, env: str, **kw: Any) -> list[str]:
            steal()
            return inner(config, env, **kw)

        h.verify = verify_then_steal
        return h

    world.hooks = hooks  # type: ignore[method-assign]
    # ... and we do not promote over them: the token is checked right before the release
    # goes live, the run stops, and the env is theirs to drive
    with pytest.raises(RunFailed, match=r"released by someone else.*nothing was put back"):
        world.deploy("v2")
    assert (Path(world.layout.lock) / "token").read_text() == "theirs\n"
    assert listing(world.host, world.layout).meta["tag"] == "v1"  # type: ignore[arg-type]


@pytest.mark.parametrize("beat_first", [True, False], ids=["beat", "way-out"])
def test_a_lock_released_by_hand_and_taken_by_another_run_stays_theirs(tmp_path: Path,
                                                                       beat_first: bool
                                                                       ) -> None:
    """`lock.release` on a run thought stale, then another run takes the lock: the first run
    stops at its next heartbeat (LockLost) and its way out never removes the other's lock.
    The lock's token checks, straight on the scripted host's shell (seconds, not a deploy)."""
    from vedfin_ops.remote import commands
    from vedfin_ops.run.lock import Lock, LockLost

    host, clock = FakeHost(tmp_path), FakeClock()
    path = str(tmp_path / "production" / ".lock")
    Path(path).parent.mkdir()

    def run_lock() -> Lock:
        return Lock(host, path, "production", action="deploy production", clock=clock.clock())

    ours, theirs = run_lock(), run_lock()
    ours.acquire()
    host.run(commands.lock_release(path), what="lock.release")  # what `lock.release` runs
    theirs.acquire()
    if beat_first:
        with pytest.raises(LockLost, match="was released by someone else"):
            ours.beat(force=True)
    assert ours.release() == ""  # the way out of a run: its own lock only
    assert Path(path).is_dir()
    theirs.beat(force=True)  # still theirs: their heartbeat finds their token
    assert theirs.release() == "" and not Path(path).exists()


def test_a_lock_taken_over_after_the_last_heartbeat_is_left_to_its_new_holder(
        world: World) -> None:
    """A run that ends (ok) after its lock was released by hand and taken by another run:
    its unlock leaves the other run's lock in place."""
    from vedfin_ops.remote import commands
    from vedfin_ops.run.lock import Lock

    other = Lock(world.host, world.layout.lock, "production", action="deploy production",
                 clock=world.clock.clock())

    def say(message: str) -> None:
        world.said.append(message)
        if message.startswith("done:"):  # after the last heartbeat, before the unlock
            world.host.run(commands.lock_release(world.layout.lock), what="lock.release")
            other.acquire()

    result = deploy(world.host, world.config, "production", "v2", say=say, hooks=world.hooks(),
                    clock=world.clock.clock())
    assert result.result == "ok" and other.taken
    assert Path(world.layout.lock).is_dir()
    other.beat(force=True)  # theirs still: raises LockLost if the token changed


def test_a_non_production_deploy_may_not_change_the_shared_stack(world: World,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    for name in world.config.secret_names("staging"):
        monkeypatch.setenv(name, f"s3cret-value-{name.lower()}")
    Path(world.layout.shared_hash).write_text("something-else\n")
    with pytest.raises(RunFailed, match="would change the shared stack"):
        deploy(world.host, world.config, "staging", "v2", hooks=world.hooks(),
               say=world.said.append, clock=world.clock.clock())


def _outcome(kind: str) -> str:
    return "interrupted" if kind in INTERRUPTS else "failed"


def _rollback(world: World) -> str:
    return rollback(world.host, world.config, "production", say=world.said.append,
                    clock=world.clock.clock(), verify_fn=world.hooks().verify)


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_during_rollback_leaves_the_current_release_serving(world: World,
                                                                    kind: str) -> None:
    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault("stack deploy", 1, kind, after=True))
    failed = ends_failed(lambda: _rollback(world))
    assert_serving(world, "rollback", _outcome(kind), "v2")
    assert "\n" not in str(failed)
    assert _rollback(world)  # and the next one works
    assert set(world.env_images().values()) == {"vedfinance/api:v1", "vedfinance/web:v1"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_during_scale_restores_the_replica_counts(world: World, kind: str) -> None:
    def replicas() -> dict[str, int]:
        return {n: s["replicas"] for n, s in world.host.engine()["services"].items()
                if s["stack"] == "vedfin-production"}

    before = replicas()
    world.host.inject(Fault("watch rollout", 2, kind))
    ends_failed(lambda: scale(world.host, world.config, "production", 1, action="scale",
                              say=world.said.append, clock=world.clock.clock(),
                              verify_fn=world.hooks().verify))
    assert replicas() == before
    assert_serving(world, "scale", _outcome(kind), "v1")


def test_status_shows_drift_between_the_record_and_the_engine(world: World) -> None:
    from vedfin_ops.reports.status import status

    assert status(world.host, world.config, "production")["drift"] == []
    state = world.host.engine()
    state["services"]["vedfin-production_web-production"]["template"] = "edited"
    world.host.set_engine(**state)
    drift = status(world.host, world.config, "production")["drift"]
    assert drift == ["vedfin-production_web-production: its spec was changed outside the tool"]



def test_status_lists_each_release_with_its_tag_time_author_and_how_it_ended(world: World
                                                                            ) -> None:
    from vedfin_ops.reports.status import status
    from vedfin_ops.run.lock import who

    world.verify_failures = ["api /api/health: HTTP 502 [bold]x[/]"]
    with pytest.raises(RunFailed):
        world.deploy("v2")
    world.host.commands.clear()
    info = status(world.host, world.config, "production")
    v1, v2 = info["releases"]
    assert (v1["tag"], v1["state"], v1["current"], v1["by"], v1["reason"]) == (
        "v1", "good", True, who(), None)
    assert (v2["tag"], v2["state"], v2["current"], v2["by"]) == ("v2", "failed", False, who())
    assert "verify failed: api /api/health: HTTP 502 [bold]x[/]" in v2["reason"]
    assert v1["created"] <= v2["created"] and v2["created"].startswith("20")
    assert world.host.commands.count("list releases") == 1  # every record in one command


def test_status_json_keeps_every_key_it_had(world: World) -> None:
    from vedfin_ops.reports.status import status

    info = json.loads(json.dumps(status(world.host, world.config, "production")))
    assert {"env", "current", "releases", "lock", "drift", "problems", "services"} <= set(info)
    assert {"id", "state", "current"} <= set(info["releases"][0])
    assert info["releases"][0]["id"] == info["current"]


@pytest.mark.parametrize("base", ["elsewhere", "empty"])
def test_status_names_the_base_and_config_when_no_release_exists(world: World, base: str,
                                                                 shipped_data: dict[str, Any]
                                                                 ) -> None:
    """A wrong --config used to show an empty table, silently."""
    import copy
    import io

    from rich.console import Console

    from vedfin_ops.config.loader import config_from_dict
    from vedfin_ops.reports.status import status
    from vedfin_ops.reports.tables import status_tables

    data = copy.deepcopy(shipped_data)
    data["remote"] = {**data.get("remote", {}), "baseDir": str(world.root / base)}
    if base != "elsewhere":
        (world.root / base / "production" / "releases").mkdir(parents=True)
    config = config_from_dict(data, "configs/other.yaml")
    info = status(world.host, config, "production")
    assert info["releases"] == [] and info["config"] == "configs/other.yaml"
    assert info["base"] == str(world.root / base) and info["base_exists"] == (
        base != "elsewhere")
    out = io.StringIO()
    Console(file=out, width=400, soft_wrap=True, markup=False).print(status_tables(info))
    said = out.getvalue()
    assert "production: no release" in said and "configs/other.yaml" in said
    assert str(world.root / base) in said
    assert ("does not exist" in said) == (base == "elsewhere")


def test_status_reports_an_unreadable_release_record_and_still_lists_it(world: World) -> None:
    from vedfin_ops.reports.status import status

    old = Path(world.layout.releases) / "20200101T000000Z-000000000000"
    old.mkdir()
    (old / "state").write_text("good\n")
    (old / "release.json").write_text("{not json")
    info = status(world.host, world.config, "production")
    first = info["releases"][0]
    assert (first["id"], first["state"], first["tag"]) == (old.name, "good", None)
    assert info["problems"] == [f"{old.name}/release.json is not a JSON object"]


def test_the_heartbeat_is_throttled_and_a_silent_holder_is_called_probably_stale() -> None:
    from vedfin_ops.run.lock import STALE_AFTER, Lock, parse_held

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def run(self, command: str, *, what: str, **kwargs: Any) -> str:
            self.sent.append(what)
            return "acquired\n"

    clock = FakeClock()
    runner = Recorder()
    lock = Lock(runner, "/srv/x/.lock", "production", action="deploy production",
                clock=clock.clock())
    lock.acquire()
    for _ in range(100):  # a 100 s rollout polled every second
        clock.sleep(1)
        lock.beat()
    assert runner.sent.count("heartbeat") == 6  # every 15 s, not every poll
    silent, holder = parse_held(f"held\n{int(STALE_AFTER) + 1}\n"
                                '{"who": "ci@runner", "host": "elsewhere", "pid": 7}\n')
    assert "probably stale: no heartbeat for" in holder.describe(silent)
    silent, holder = parse_held('held\n3\n{"who": "ci@runner", "host": "elsewhere", "pid": 7}')
    assert holder.describe(silent).endswith("alive: heartbeat 3s ago")


def test_verify_never_passes_by_checking_nothing(shipped_data: dict[str, Any]) -> None:
    import copy

    from vedfin_ops.config.loader import config_from_dict
    from vedfin_ops.run.env_run import verify

    data = copy.deepcopy(shipped_data)
    for app in data["applications"]:
        app.pop("domain", None)
        app.pop("additionalDomains", None)
    data["verify"] = {"allowNoChecks": True}
    allowed = config_from_dict(data, "dokploy.yaml")
    assert verify(allowed, "production") == []
    object.__setattr__(allowed.verify, "allow_no_checks", False)  # as if the loader let it by
    assert verify(allowed, "production") == [
        "no smoke checks for production (no app has a domain); set verify.allowNoChecks: true "
        "to deploy unverified"]


def test_the_configs_ca_root_is_trusted_by_smoke_and_preflight(shipped_data: dict[str, Any],
                                                               tmp_path: Path) -> None:
    import copy

    from vedfin_ops.checks.smoke import Options, trusting
    from vedfin_ops.config.loader import config_from_dict

    data = copy.deepcopy(shipped_data)
    data["edge"] = {**data.get("edge", {}), "tls": "internal", "caRoot": str(tmp_path / "ca.pem")}
    config = config_from_dict(data, "dokploy.yaml")
    assert trusting(config, Options()).ca_file == str(tmp_path / "ca.pem")
    assert trusting(config, Options(ca_file="/other.pem")).ca_file == "/other.pem"


# -- the way out of a run: output, commit, locks -----------------------------------------------

def test_a_terminal_gone_after_sighup_still_ends_on_the_live_release(world: World) -> None:
    """After SIGHUP every print raises EIO; the put-back, the mark and the audit go on."""
    gone: list[bool] = []

    def say(message: str) -> None:
        if gone:
            raise OSError(5, "Input/output error")
        if message.startswith("rollout:"):
            gone.append(True)

    world.host.inject(Fault("watch rollout", 2, "sighup"))
    failed = ends_failed(lambda: deploy(world.host, world.config, "production", "v2", say=say,
                                        show=lambda lines: say(" ".join(lines)),
                                        hooks=world.hooks(), clock=world.clock.clock()))
    assert_back_on_v1(world, failed, "interrupted")


@pytest.mark.parametrize("what", ["prune releases", "unlock"])
@pytest.mark.parametrize("kind", ["sigterm", "exception", "remote"])
def test_a_fault_after_the_release_went_live_leaves_it_live(
        world: World, v2_steps: list[tuple[str, int]], what: str, kind: str) -> None:
    # the env lock's unlock is the run's last command (after every unlock in the steps)
    last = 1 + sum(1 for name, _ in v2_steps if name == what) if what == "unlock" else 1
    world.host.inject(Fault(what, last, kind))
    result = ends_ok(lambda: world.deploy("v2"))
    assert result.result == "ok"
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current == result.release and state.state(result.release) == "good"
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}
    assert [(a["action"], a["result"]) for a in world.audit()[-1:]] == [("deploy", "ok")]
    # said, not hidden: a warning, or (a signal on the shielded way out) that it was noticed
    assert any(line.startswith("warning:") or "SIGTERM received" in line
               for line in world.said), world.said
    assert not Path(world.layout.lock).exists() or kind != "sigterm"


def test_a_lost_audit_line_after_promote_is_a_warning_not_a_failure(world: World) -> None:
    world.host.inject(Fault("audit", 1, "remote"))
    assert world.deploy("v2").result == "ok"
    assert any("audit line could not be written" in line for line in world.said)


def _shared_change(world: World, shipped_data: dict[str, Any]) -> World:
    import copy

    from vedfin_ops.config.loader import config_from_dict

    data = copy.deepcopy(shipped_data)
    data["remote"] = {**data.get("remote", {}), "baseDir": world.config.remote.base_dir}
    data["redis"]["image"] = "redis:7.4-alpine"
    return World(world.root, config_from_dict(data, "dokploy.yaml"), world.host, world.clock)


def test_a_failed_deploy_puts_a_changed_shared_stack_back_too(world: World,
                                                             shipped_data: dict[str, Any]
                                                             ) -> None:
    shared = Path(world.layout.shared_hash).read_text()
    changed = _shared_change(world, shipped_data)
    changed.verify_failures = ["api health: 502"]
    with pytest.raises(RunFailed) as info:
        changed.deploy("v2")
    assert "shared stack back on" in str(info.value)
    assert_back_on_v1(changed, info.value, "failed")
    assert changed.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7-alpine"
    assert Path(world.layout.shared_hash).read_text() == shared
    changed.verify_failures = []
    assert changed.deploy("v2").result == "ok"  # and the shared change goes in next time
    assert changed.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7.4-alpine"
    assert Path(world.layout.shared_hash).read_text() != shared


def test_a_failed_unlock_still_releases_the_shared_lock(world: World,
                                                       shipped_data: dict[str, Any]) -> None:
    changed = _shared_change(world, shipped_data)
    changed.host.inject(Fault("unlock", 1, "exception"))
    assert changed.deploy("v2").result == "ok"
    assert not Path(world.layout.shared_lock).exists()
    assert any("could not be released" in line and "lock.release" in line
               for line in changed.said)


@pytest.mark.parametrize("change", ["replicas", "shared", "records"])
def test_no_noop_unless_the_engine_runs_the_release_as_recorded(world: World,
                                                                change: str) -> None:
    if change == "replicas":  # `fab scale production 1` since the deploy
        scale(world.host, world.config, "production", 1, action="scale", say=world.said.append,
              clock=world.clock.clock(), verify_fn=world.hooks().verify)
    elif change == "shared":  # another env deployed other shared files (--allow-shared)
        Path(world.layout.shared_hash).write_text("0123456789ab\n")
    else:
        current = Path(world.layout.current).resolve()
        (current / "engine.json").unlink()
        (current / "release.json").write_text("{not json")
    result = world.deploy("v1")
    assert result.result == "ok", world.said
    assert world.deploy("v1").result == "noop"
    replicas = {n: s["replicas"] for n, s in world.host.engine()["services"].items()
                if s["stack"] == "vedfin-production"}
    assert replicas == {f"vedfin-production_{a.name}": a.replicas
                        for a in world.config.apps("production")}


def test_a_lock_released_by_someone_else_stops_the_run_and_moves_nothing(world: World) -> None:
    """`lock.release` then another run took it: this one must not fight that run."""

    def say(message: str) -> None:
        world.said.append(message)
        if message.startswith("rollout:"):
            (Path(world.layout.lock) / "token").write_text("another-run\n")
            world.clock.t += 60  # the next heartbeat is due

    with pytest.raises(RunFailed) as info:
        deploy(world.host, world.config, "production", "v2", say=say, hooks=world.hooks(),
               clock=world.clock.clock())
    assert "was released by someone else" in str(info.value)
    assert "nothing was put back" in str(info.value)
    assert (Path(world.layout.lock) / "token").read_text() == "another-run\n"  # left alone
    assert set(world.env_images().values()) == {"vedfinance/api:v1", "vedfinance/web:v1"}
    assert world.audit()[-1]["result"] == "failed"


def test_the_shared_lock_can_be_released_by_hand(world: World) -> None:
    from vedfin_ops.reports.status import release_lock

    Path(world.layout.shared_lock).mkdir()
    (Path(world.layout.shared_lock) / "holder").write_text('{"who": "gone@box"}\n')
    holder = release_lock(world.host, world.config, "production",
                          shared=True)
    assert "gone@box" in holder and not Path(world.layout.shared_lock).exists()
    assert "shared lock was" in world.audit()[-1]["detail"]


def test_bad_input_found_after_the_host_changed_exits_1(world: World) -> None:
    from vedfin_ops.errors import UsageError

    world.verify_raises = UsageError("verify: a bad flag")
    with pytest.raises(RunFailed) as info:
        world.deploy("v2")
    assert info.value.exit_code == 1
    assert_back_on_v1(world, info.value, "failed")


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_as_rollback_records_its_result_ends_on_one_release(world: World,
                                                                   kind: str) -> None:
    """Errors fail it (and the engine goes back to v2); a signal waits for the shielded
    commit (and v1 stands). Either way `current` names what the engine runs."""
    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault("make current", 1, kind))
    if kind in ("sigterm", "sighup"):  # the signal waits for the shielded commit
        ends_ok(lambda: _rollback(world))
        assert_serving(world, "rollback", "ok", "v1")
    else:
        ends_failed(lambda: _rollback(world))
        assert_serving(world, "rollback", _outcome(kind), "v2")


@pytest.mark.parametrize("kind", ["remote", "sigterm"])
def test_a_rollback_whose_audit_line_is_lost_still_stands(world: World, kind: str) -> None:
    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault("audit", 1, kind))
    target = ends_ok(lambda: _rollback(world))
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.current == target and state.meta["tag"] == "v1"
    assert set(world.env_images().values()) == {"vedfinance/api:v1", "vedfinance/web:v1"}
    assert not Path(world.layout.lock).exists()


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_right_after_the_scale_command_restores_the_counts(world: World,
                                                                   kind: str) -> None:
    before = {n: s["replicas"] for n, s in world.host.engine()["services"].items()}
    world.host.inject(Fault("scale production", 1, kind, after=True))
    ends_failed(lambda: scale(world.host, world.config, "production", 1, action="scale",
                              say=world.said.append, clock=world.clock.clock(),
                              verify_fn=world.hooks().verify))
    world.settle()
    assert {n: s["replicas"] for n, s in world.host.engine()["services"].items()} == before
    assert_serving(world, "scale", _outcome(kind), "v1")


# -- half-done commits and the shared stack (found by review) ---------------------------------

@pytest.mark.parametrize(("what", "after"), [("db-init", False), ("stack deploy vedfin-shared",
                                                                  True)])
def test_a_shared_change_is_put_back_when_the_run_fails_before_the_env_moves(
        world: World, shipped_data: dict[str, Any], what: str, after: bool) -> None:
    shared = Path(world.layout.shared_hash).read_text()
    changed = _shared_change(world, shipped_data)
    changed.host.inject(Fault(what, 1, "sigterm", after=after))
    failed = ends_failed(lambda: changed.deploy("v2"))
    assert "shared stack back on its earlier files" in str(failed)
    assert_back_on_v1(changed, failed, "interrupted")
    assert changed.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7-alpine"
    assert Path(world.layout.shared_hash).read_text() == shared
    assert not Path(world.layout.shared_lock).exists()


def test_a_promote_that_ran_before_the_link_dropped_leaves_the_shared_record_true(
        world: World, shipped_data: dict[str, Any]) -> None:
    shared = Path(world.layout.shared_hash).read_text()
    changed = _shared_change(world, shipped_data)
    changed.host.inject(Fault("promote release", 1, "remote", after=True))
    with pytest.raises(RunFailed):
        changed.deploy("v2")
    changed.settle()
    assert changed.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7-alpine"
    assert Path(world.layout.shared_hash).read_text() == shared
    assert changed.deploy("v2").result == "ok"  # and the shared change still ships
    assert changed.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7.4-alpine"


@pytest.mark.parametrize("kind", ["remote", "exception"])
def test_a_rollback_whose_make_current_ran_before_the_link_dropped_ends_consistent(
        world: World, kind: str) -> None:
    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault("make current", 1, kind, after=True))
    with pytest.raises(RunFailed):
        _rollback(world)
    world.settle()
    state = listing(world.host, world.layout)  # type: ignore[arg-type]
    assert state.meta["tag"] == "v2" and state.state(state.current or "") == "good"
    assert set(world.env_images().values()) == {"vedfinance/api:v2", "vedfinance/web:v2"}


def test_a_deploy_that_did_not_change_the_shared_stack_never_rewrites_its_record(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """staging deploys while production changes the shared stack: staging's promote must not
    write its older hash over production's."""
    for name in world.config.secret_names("staging"):
        monkeypatch.setenv(name, f"s3cret-value-{name.lower()}")

    def say(message: str) -> None:
        if message.startswith("rollout:"):
            Path(world.layout.shared_hash).write_text("fromproduction\n")

    deploy(world.host, world.config, "staging", "v1", hooks=world.hooks(), say=say,
           clock=world.clock.clock())
    assert Path(world.layout.shared_hash).read_text() == "fromproduction\n"


def test_a_lock_removed_by_hand_and_left_free_is_taken_again_to_put_the_env_back(
        world: World) -> None:
    def say(message: str) -> None:
        world.said.append(message)
        if message.startswith("verify:"):
            shutil.rmtree(world.layout.lock)  # `lock.release` on a lock it thought stale
            world.clock.t += 60

    with pytest.raises(RunFailed) as info:
        deploy(world.host, world.config, "production", "v2", say=say, hooks=world.hooks(),
               clock=world.clock.clock())
    assert "released by someone else" in str(info.value)
    assert "production back on" in str(info.value)
    assert_back_on_v1(world, info.value, "failed")


def _edge_and_redis_change(world: World, shipped_data: dict[str, Any]) -> World:
    """A production deploy whose config also changes the Caddyfile (a new domain) and
    redis: the shared stack moves, its edge onto a new swarm config."""
    import copy

    from vedfin_ops.config.loader import config_from_dict

    data = copy.deepcopy(shipped_data)
    data["remote"] = {**data.get("remote", {}), "baseDir": world.config.remote.base_dir}
    data["redis"]["image"] = "redis:7.4-alpine"
    web = next(a for a in data["applications"] if a["name"] == "web-production")
    web["domain"] = "app.v-edfinance.com"
    return World(world.root, config_from_dict(data, "dokploy.yaml"), world.host, world.clock)


def test_a_failed_deploy_puts_the_edge_and_redis_back_on_their_own_files(
        world: World, shipped_data: dict[str, Any]) -> None:
    before = {n: (s["image"], s["template"]) for n, s in world.host.engine()["services"].items()
              if n.startswith("vedfin-shared_")}
    shared = Path(world.layout.shared_hash).read_text()
    changed = _edge_and_redis_change(world, shipped_data)
    changed.verify_failures = ["web health: 502"]
    with pytest.raises(RunFailed) as info:
        changed.deploy("v2")
    assert "shared stack back on its earlier files" in str(info.value), str(info.value)
    assert_back_on_v1(changed, info.value, "failed")
    changed.settle()
    after = {n: (s["image"], s["template"]) for n, s in world.host.engine()["services"].items()
             if n.startswith("vedfin-shared_")}
    assert after == before  # redis's image and the edge's config both the earlier ones
    assert Path(world.layout.shared_hash).read_text() == shared
    assert world.deploy("v1").result == "noop"  # the engine runs the record again
    changed.verify_failures = []
    assert changed.deploy("v2").result == "ok"  # and the change goes in the next time
    assert world.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7.4-alpine"
    kept = Path(world.layout.shared_dir).readlink()
    assert kept.name == Path(world.layout.shared_hash).read_text().strip()
    assert kept.stat().st_mode & 0o777 == 0o700  # it holds postgres's password
    assert (kept / "env" / "postgres.env").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]  # older ones pruned


def test_a_shared_service_the_engine_runs_otherwise_is_no_noop_and_shows_in_status(
        world: World) -> None:
    """A put-back that could not finish (or a `docker service update` by hand) leaves redis on
    another spec under the same recorded files: the deploy of the same release is no no-op,
    and status names it."""
    from vedfin_ops.reports.status import status

    assert world.deploy("v1").result == "noop"
    state = world.host.engine()
    redis = state["services"]["vedfin-shared_redis"]
    redis["image"], redis["template"] = "redis:7.4-alpine", "by-hand"
    world.host.set_engine(**state)
    drift = status(world.host, world.config, "production")["drift"]  # type: ignore[arg-type]
    assert any(line.startswith("shared stack: vedfin-shared_redis") for line in drift), drift
    assert world.deploy("v1").result == "ok"
    assert world.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7-alpine"
    assert status(world.host, world.config, "production")["drift"] == []  # type: ignore[arg-type]


def test_a_promote_cut_after_it_ran_leaves_the_shared_link_on_the_earlier_files(
        world: World, shipped_data: dict[str, Any]) -> None:
    """The promote command ran on the host, then the link went: `current`, `shared.hash`
    and the `shared` link all name the earlier release and files again."""
    shared = Path(world.layout.shared_hash).read_text().strip()
    changed = _edge_and_redis_change(world, shipped_data)
    changed.host.inject(Fault("promote release", 1, "remote", after=True))
    with pytest.raises(RunFailed) as info:
        changed.deploy("v2")
    assert_back_on_v1(changed, info.value, "failed")
    assert Path(world.layout.shared_hash).read_text().strip() == shared
    assert Path(world.layout.shared_dir).readlink().name == shared
    assert world.deploy("v1").result == "noop"


def test_a_failed_put_back_of_the_env_still_puts_the_shared_stack_back(
        world: World, shipped_data: dict[str, Any]) -> None:
    """Each part of the way back on its own: the env's redeploy fails (the link drops), the
    shared stack is put back all the same, and the line says what stayed and what puts it
    back."""
    before = world.host.images("vedfin-shared")
    changed = _edge_and_redis_change(world, shipped_data)
    changed.verify_failures = ["web health: 502"]
    changed.host.inject(Fault("stack deploy vedfin-production", 2, "remote"))
    with pytest.raises(RunFailed) as info:
        changed.deploy("v2")
    message = str(info.value)
    assert "could not put production back" in message and "\n" not in message, message
    assert "shared stack back on its earlier files" in message, message
    changed.settle()
    assert world.host.images("vedfin-shared") == before
    assert not Path(world.layout.lock).exists()
    assert not Path(world.layout.shared_lock).exists()


def test_a_shared_stack_that_cannot_be_put_back_is_deployed_again_by_production(
        world: World, shipped_data: dict[str, Any]) -> None:
    """A host from before the shared files were kept (no `shared` link), whose live release
    did not deploy the shared stack: nothing to put it back on. The record must then stop
    naming the earlier files, so the next production deploy of them is no no-op."""
    shutil.rmtree(Path(world.layout.shared_dir).readlink().parent)
    Path(world.layout.shared_dir).unlink()
    current = Path(world.layout.current).resolve() / "release.json"
    meta = json.loads(current.read_text())
    current.write_text(json.dumps({**meta, "shared_hash": "another0hash"}))
    changed = _edge_and_redis_change(world, shipped_data)
    changed.verify_failures = ["web health: 502"]
    with pytest.raises(RunFailed) as info:
        changed.deploy("v2")
    assert "stays on the new files" in str(info.value), str(info.value)
    assert world.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7.4-alpine"
    assert world.deploy("v1").result == "ok"  # not a no-op: the shared files go in again
    assert world.host.images("vedfin-shared")["vedfin-shared_redis"] == "redis:7-alpine"
