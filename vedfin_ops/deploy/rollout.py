"""Knowing whether `docker stack deploy` worked.

`docker stack deploy` returns at once. Before it, each service's `Version.Index` and
`UpdateStatus.StartedAt` are recorded; after it, the engine is polled until every changed
service reports `completed` and runs its desired replicas of the NEW image, healthy. A deploy
may stop watching earlier, once every service *serves* the new image (all replicas healthy,
no old task, the engine still in its monitor window), to verify through the edge while the
engine's window runs out, and then watch again until `completed`. A rollback
or a pause by the engine is a failure, and so is a spec that after a rollback is the old one
again. `evaluate` is pure (snapshot in, verdict out) so each case is unit-tested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from vedfin_ops.errors import CheckFailed
from vedfin_ops.remote.probes.engine import ServiceView, same_image
from vedfin_ops.run.polling import REAL, Clock, TimedOut, until

POLL_INTERVAL = 0.5  # one `docker service inspect` + `docker ps` over the open link: cheap
FAILED_STATES = {"rollback_started", "rollback_completed", "paused", "rollback_paused"}


class RolloutFailed(CheckFailed):
    """The engine rolled back, paused, or did not converge in time."""

    def __init__(self, message: str, services: list[str] | None = None) -> None:
        super().__init__(message)
        self.services = services or []


@dataclass(frozen=True)
class Before:
    """What a service looked like before the deploy: to tell whether the deploy touched it."""

    version: int
    update_started: str
    image: str
    template: str = ""


@dataclass
class Verdict:
    state: Literal["converging", "done", "failed"]
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    views: dict[str, ServiceView] = field(default_factory=dict)  # the snapshot it judged
    serving: bool = False  # every service runs only the new image, healthy (maybe not done)


def hidden_from_stack_deploy(views: dict[str, ServiceView], expected: dict[str, str]
                             ) -> list[str]:
    """Services whose image was changed outside `docker stack deploy` (`docker service update
    --image`): the CLI keeps the running image whenever the file's image equals its label, so
    deploying the release again would silently leave them as they are."""
    return sorted(n for n, want in expected.items() if n in views and
                  views[n].stack_image == want and not same_image(views[n].image, want))


def before_of(views: dict[str, ServiceView]) -> dict[str, Before]:
    return {n: Before(v.version, v.update_started, v.image, v.template)
            for n, v in views.items()}


def evaluate(before: dict[str, Before], now: dict[str, ServiceView],
             expected: dict[str, str], deployed: set[str]) -> Verdict:
    """Has the deploy converged? `expected`: service -> the image the deploy asked for.

    A service is done, moving, or failed. The verdict is failed only once nothing moves any
    more, so that the engine's own rollbacks finish before the tool reports (and the old
    version serves throughout); it is done when every service is done.
    """
    moving = False
    verdict = Verdict("done", serving=True)
    for name in sorted(deployed):
        view = now.get(name)
        if view is None:
            moving, verdict.serving = True, False
            verdict.lines.append(f"{name}: not created yet")
            continue
        prior = before.get(name)
        started = prior is None or view.update_started != prior.update_started
        state = view.update_state if started else ""
        # A new task template means a rolling update that must start and complete; a
        # replicas-only change (or a new service) is done when the tasks run.
        rolling = prior is not None and prior.template != view.template
        want = expected.get(name, view.image)
        progress = f"{view.running}/{view.replicas} on {want.rsplit('/', 1)[-1]}"
        if state == "rollback_started" and not same_image(view.image, want) and \
                view.running == view.replicas and view.others == 0:
            # The engine is back on the old spec with every replica healthy; it only waits
            # out its rollback monitor window before saying `rollback_completed`. Nothing
            # is left to wait for: report now (the old version serves either way).
            verdict.failures.append(f"{name}: rolled back ({view.update_message or state})")
            verdict.lines.append(f"{name}: rolled back to {view.image.rsplit('/', 1)[-1]}")
        elif state == "rollback_started":
            moving = True
            verdict.lines.append(f"{name}: rolling back ({view.update_message or state})")
        elif state in FAILED_STATES:
            verdict.failures.append(f"{name}: {state} ({view.update_message or state})")
            verdict.lines.append(f"{name}: {state}")
        elif not same_image(view.image, want):
            # the spec is not what we deployed: after an engine rollback it is the old one
            verdict.failures.append(f"{name}: runs {view.image}, not {want}")
            verdict.lines.append(f"{name}: rolled back to {view.image.rsplit('/', 1)[-1]}")
        elif view.running == view.replicas and view.others == 0 and (
                state == "completed" if rolling else state in ("", "completed")):
            verdict.lines.append(f"{name}: {progress} done")
            continue
        elif view.running == view.replicas and view.others == 0 and state == "updating" \
                and (prior is None or not same_image(prior.image, want)):
            # the engine's monitor window: it may still roll back. Only where the new tasks
            # differ from the old by image: a change of env, configs or resources keeps the
            # image, and the old tasks would count as the new ones (wait for `completed`)
            moving = True
            verdict.lines.append(f"{name}: {progress} (updating: the engine's monitor window)")
            continue
        else:
            moving = True
            verdict.lines.append(f"{name}: {progress} ({state or 'starting'})")
        verdict.serving = False
    if moving:
        verdict.state = "converging"
    elif verdict.failures:
        verdict.state = "failed"
    return verdict


def watch(poll: Callable[[], dict[str, ServiceView]], before: dict[str, Before],
          expected: dict[str, str], deployed: set[str], timeout: float,
          show: Callable[[list[str]], None], interval: float = POLL_INTERVAL,
          clock: Clock = REAL, serving: bool = False) -> Verdict:
    """Poll until done, failed or out of time; raise RolloutFailed unless done. With
    `serving`, a verdict that is still converging but serving ends the watch too (the
    caller watches again for `done`).

    A poll that fails (an SSH hiccup, the engine busy, output cut short) is retried until the
    deadline: one lost answer must not end the watch while the engine is mid-update.
    """
    reasons: dict[str, str] = {}  # why the engine rolled back, as it said while doing it
    state = {"verdict": Verdict("converging")}

    def probe() -> Verdict | None:
        views = poll()
        for name, view in views.items():
            if view.update_state == "rollback_started" and view.update_message:
                reasons.setdefault(name, view.update_message)
        verdict = evaluate(before, views, expected, deployed)
        verdict.views = views
        state["verdict"] = verdict
        show(verdict.lines)
        if verdict.state == "converging" and not (serving and verdict.serving):
            return None
        return verdict

    def poll_failed(exc: Exception) -> None:
        show([*state["verdict"].lines, f"poll failed, retrying: {exc}"])

    try:
        verdict = until(probe, timeout=timeout, interval=interval, clock=clock,
                        transient=(CheckFailed, ValueError, KeyError), on_transient=poll_failed,
                        describe=lambda: "; ".join(state["verdict"].lines))
    except TimedOut as exc:
        raise RolloutFailed(f"rollout did not converge in {timeout:g}s: {exc.last}",
                            sorted(deployed)) from None
    if verdict.state == "failed":
        why = [f"{f} - {reasons[f.split(':')[0]]}" if f.split(":")[0] in reasons else f
               for f in verdict.failures]
        raise RolloutFailed("rollout failed, the engine rolled back: " + "; ".join(why),
                            [f.split(":")[0] for f in verdict.failures])
    return verdict
