"""How the tool reads the engine: every UpdateStatus case, from snapshots shaped like docker's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vedfin_ops.deploy.rollout import Before, evaluate
from vedfin_ops.remote.probes.engine import parse_snapshot

API = "vedfin-production_api-production"


def _svc(image: str, *, replicas: int = 2, version: int = 10, state: str = "",
         started: str = "", message: str = "", env: str = "A") -> dict[str, Any]:
    svc: dict[str, Any] = {"ID": "x", "Version": {"Index": version}, "Spec": {
        "Name": API, "Mode": {"Replicated": {"Replicas": replicas}},
        "TaskTemplate": {"ContainerSpec": {"Image": image, "Env": [env]}}}}
    if state:
        svc["UpdateStatus"] = {"State": state, "StartedAt": started, "Message": message}
    return svc


def _snap(svc: dict[str, Any], *tasks: str) -> str:
    return json.dumps([svc]) + "\n--TASKS--\n" + "\n".join(f"{API} {t}" for t in tasks)


def _before(text: str) -> dict[str, Before]:
    view = parse_snapshot(text)[API]
    return {API: Before(view.version, view.update_started, view.image, view.template)}


OLD = _snap(_svc("api:v1", state="completed", started="t0"),
            "api:v1 running Up 5 minutes (healthy)", "api:v1 running Up 5 minutes (healthy)")
EXPECT = {API: "api:v2"}


def test_update_not_started_yet_is_converging_even_with_old_tasks_healthy() -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="completed", started="t0"),
                               "api:v1 running Up (healthy)", "api:v1 running Up (healthy)"))
    assert evaluate(_before(OLD), now, EXPECT, {API}).state == "converging"


def test_updating_with_one_new_task_starting_is_converging() -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="updating", started="t1"),
                               "api:v1 running Up (healthy)", "api:v1 running Up (healthy)",
                               "api:v2 running Up 1 second (health: starting)"))
    verdict = evaluate(_before(OLD), now, EXPECT, {API})
    assert verdict.state == "converging" and "0/2 on api:v2 (updating)" in verdict.lines[0]


def test_completed_with_every_replica_new_and_healthy_is_done() -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="completed", started="t1"),
                               "api:v2 running Up (healthy)", "api:v2 running Up (healthy)"))
    assert evaluate(_before(OLD), now, EXPECT, {API}).state == "done"


def test_every_new_task_healthy_in_the_monitor_window_serves_but_is_not_done() -> None:
    """What a deploy verifies on: the new tasks alone serve; the engine may still roll back."""
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="updating", started="t1"),
                               "api:v2 running Up (healthy)", "api:v2 running Up (healthy)"))
    verdict = evaluate(_before(OLD), now, EXPECT, {API})
    assert (verdict.state, verdict.serving) == ("converging", True)
    assert "monitor window" in verdict.lines[0]


@pytest.mark.parametrize("tasks", [
    ("api:v2 running Up (healthy)", "api:v2 running Up (healthy)", "api:v1 running Up (healthy)"),
    ("api:v2 running Up (healthy)", "api:v2 running Up 1 second (health: starting)"),
    ("api:v2 running Up (healthy)",),
])
def test_an_old_task_left_or_a_new_one_not_healthy_does_not_serve(tasks: tuple[str, ...]
                                                                   ) -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="updating", started="t1"),
                               *tasks))
    assert evaluate(_before(OLD), now, EXPECT, {API}).serving is False


def test_a_change_that_keeps_the_image_never_serves_early() -> None:
    """New env values, same image: the old tasks look like new ones until `completed`."""
    old = _snap(_svc("api:v2", state="completed", started="t0"),
                "api:v2 running Up (healthy)", "api:v2 running Up (healthy)")
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="updating", started="t1",
                                    env="B"),
                               "api:v2 running Up (healthy)", "api:v2 running Up (healthy)"))
    verdict = evaluate(_before(old), now, {API: "api:v2"}, {API})
    assert (verdict.state, verdict.serving) == ("converging", False)


def test_a_rollback_never_serves() -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="rollback_started",
                                    started="t1"),
                               "api:v2 running Up (healthy)", "api:v2 running Up (healthy)"))
    assert evaluate(_before(OLD), now, EXPECT, {API}).serving is False


def test_completed_but_an_old_task_still_running_is_not_done() -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="completed", started="t1"),
                               "api:v2 running Up (healthy)", "api:v2 running Up (healthy)",
                               "api:v1 running Up (healthy)"))
    assert evaluate(_before(OLD), now, EXPECT, {API}).state == "converging"


def test_rollback_started_keeps_watching_until_the_engine_is_done() -> None:
    now = parse_snapshot(_snap(_svc("api:v1", version=12, state="rollback_started",
                                    started="t1", message="update rolled back due to failure"),
                               "api:v1 running Up (healthy)"))
    verdict = evaluate(_before(OLD), now, EXPECT, {API})
    assert verdict.state == "converging" and "rolling back" in verdict.lines[0]


def test_rolled_back_with_every_old_replica_healthy_fails_without_waiting_for_the_monitor(
        ) -> None:
    now = parse_snapshot(_snap(_svc("api:v1", version=12, state="rollback_started",
                                    started="t1", message="update rolled back due to failure"),
                               "api:v1 running Up (healthy)", "api:v1 running Up (healthy)"))
    verdict = evaluate(_before(OLD), now, EXPECT, {API})
    assert verdict.state == "failed" and "rolled back" in verdict.failures[0]


def test_rollback_completed_is_a_failure() -> None:
    now = parse_snapshot(_snap(_svc("api:v1", version=12, state="rollback_completed",
                                    started="t1", message="rollback completed"),
                               "api:v1 running Up (healthy)", "api:v1 running Up (healthy)"))
    verdict = evaluate(_before(OLD), now, EXPECT, {API})
    assert verdict.state == "failed" and "rollback_completed" in verdict.failures[0]


def test_paused_is_a_failure() -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=11, state="paused", started="t1",
                                    message="update paused due to failure")))
    assert evaluate(_before(OLD), now, EXPECT, {API}).state == "failed"


def test_spec_back_on_the_old_image_without_status_is_a_failure() -> None:
    now = parse_snapshot(_snap(_svc("api:v1", version=13, state="completed", started="t0"),
                               "api:v1 running Up (healthy)", "api:v1 running Up (healthy)"))
    verdict = evaluate(_before(OLD), now, EXPECT, {API})
    assert verdict.state == "failed" and "runs api:v1, not api:v2" in verdict.failures[0]


def test_a_new_service_is_done_when_its_tasks_run() -> None:
    now = parse_snapshot(_snap(_svc("api:v2", version=3), "api:v2 running Up (healthy)",
                               "api:v2 running Up (healthy)"))
    assert evaluate({}, now, EXPECT, {API}).state == "done"


def test_an_untouched_service_is_done_at_once() -> None:
    now = parse_snapshot(OLD)
    assert evaluate(_before(OLD), now, {API: "api:v1"}, {API}).state == "done"


def test_one_service_failing_waits_for_the_other_to_settle() -> None:
    web = "vedfin-production_web-production"
    api_failed = _svc("api:v1", version=12, state="rollback_completed", started="t1")
    web_svc = _svc("web:v2", version=7, state="updating", started="t1")
    web_svc["Spec"]["Name"] = web
    text = json.dumps([api_failed, web_svc]) + "\n--TASKS--\n" + f"{web} web:v1 running Up"
    verdict = evaluate(_before(OLD), parse_snapshot(text), {API: "api:v2", web: "web:v2"},
                       {API, web})
    assert verdict.state == "converging" and verdict.failures


def test_unhealthy_tasks_do_not_count() -> None:
    view = parse_snapshot(_snap(_svc("api:v2"), "api:v2 running Up (unhealthy)",
                                "api:v2 running Up (health: starting)", "api:v2 running Up"))
    assert view[API].running == 1


@pytest.mark.parametrize(("running", "spec", "same"), [
    ("api:v1@sha256:aa", "api:v1@sha256:aa", True),
    ("api:v1@sha256:bb", "api:v1@sha256:aa", False),  # another image under the same tag
    ("api:v1", "api:v1@sha256:aa", True),  # a listing that shows no digest
    ("api:v1@sha256:aa", "api:v1", True),  # an unpinned spec the CLI resolved
    ("api:v2@sha256:aa", "api:v1", False),
])
def test_a_pinned_digest_decides_whether_two_images_are_the_same(running: str, spec: str,
                                                                  same: bool) -> None:
    from vedfin_ops.remote.probes.engine import same_image

    assert same_image(running, spec) is same
