"""`fab report --html`: one self-contained page, checked in a real browser (headless
Chromium): what it shows, outside text shown as text (a release reason carrying a script stays
text and never runs), a section the host cannot answer saying so in its place, the file
written whole. The page of a live sandbox: tests/integration/test_monitoring_sandbox.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import dom, screenshot
from tests.deploy import test_orchestration as orchestration
from tests.deploy.test_orchestration import World
from tests.fake.host import Fault
from tests.monitoring.test_checklist import _Smoke
from vedfin_ops.errors import UsageError
from vedfin_ops.monitoring.checklist import checklist
from vedfin_ops.reports.html import gather, page, write_page

v1_live, world = orchestration.v1_live, orchestration.world
HOSTILE = "<script>document.title='pwned'</script>[bold]x[/bold]"


def _gather(world: World) -> dict[str, Any]:
    world.config.monitoring.check = False
    return gather(world.host, world.config, "production",  # type: ignore[arg-type]
                  run_checklist=lambda host, config, env: checklist(
                      host, config, env, run_smoke=lambda *a: _Smoke()))


def test_the_page_shows_releases_services_capacity_verification_and_audit(
        world: World, tmp_path: Path) -> None:
    assert world.deploy("v2").result == "ok"
    data = _gather(world)
    assert data["errors"] == {"alarms": "skipped: monitoring.check is false"}
    target = write_page(tmp_path / "report.html", page(data))
    shown = dom(target)
    screenshot(target, "report-scripted-host")
    assert "<title>vedfin-ops: production</title>" in shown
    assert re.search(r'<b id="current">[0-9T]+Z(\.[0-9]+)?-[0-9a-f]+</b>', shown)
    assert '<b id="verdict" class="ok">passed</b>' in shown
    assert shown.count("(live)") == 1 and ">v2<" in shown and ">v1<" in shown
    assert "vedfin-production_api-production" in shown and "2/2" in shown
    assert "<svg" in shown and "Resource" not in data["errors"]
    for item in ("live release", "migrations applied", "zero-downtime deploy"):
        assert f"<td>{item}</td>" in shown
    assert "alarms not read: skipped: monitoring.check is false" in shown
    assert "<script" not in page(data)  # self-contained, nothing runs


def test_outside_text_is_shown_as_text_and_never_runs(world: World, tmp_path: Path) -> None:
    assert world.deploy("v2").result == "ok"
    data = _gather(world)
    data["releases"][0]["reason"] = HOSTILE
    data["verification"].append({"name": "no errors in logs", "detail": HOSTILE,
                                 "mark": "warn"})
    target = write_page(tmp_path / "report.html", page(data))
    shown = dom(target)
    assert "<title>vedfin-ops: production</title>" in shown  # the script did not run
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;[bold]x[/bold]" in shown
    assert "<script>" not in shown


def test_a_section_the_host_cannot_answer_says_why_in_its_place(world: World,
                                                                tmp_path: Path) -> None:
    assert world.deploy("v2").result == "ok"
    world.host.inject(Fault("measure usage", 1, "remote"))
    data = _gather(world)
    assert data["errors"]["capacity"] == "measure usage: Socket is closed (injected)"
    shown = dom(write_page(tmp_path / "report.html", page(data)))
    assert 'id="capacity-error">capacity not read: measure usage: Socket is closed' in shown
    assert '<b id="verdict" class="ok">passed</b>' in shown  # the rest is there


def test_ctrl_c_while_gathering_is_not_a_section_error(world: World) -> None:
    """A section's trouble is shown in its place; the user's Ctrl-C stops the report."""
    world.host.inject(Fault("measure usage", 1, "ctrl-c"))
    with pytest.raises(KeyboardInterrupt):
        _gather(world)


def test_a_page_that_cannot_be_written_is_bad_input_and_nothing_half_written(
        tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"report --html: report.txt: use a .html file"):
        write_page(tmp_path / "report.txt", "<p>x</p>")
    with pytest.raises(UsageError, match=r"report --html: .*/missing/report.html: No such file"):
        write_page(tmp_path / "missing" / "report.html", "<p>x</p>")
    (tmp_path / "taken.html").mkdir()  # a folder where the page would go
    with pytest.raises(UsageError, match=r"report --html: .*/taken.html: Is a directory"):
        write_page(tmp_path / "taken.html", "<p>x</p>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report-")] == []
