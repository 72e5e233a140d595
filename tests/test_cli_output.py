"""What the CLI prints: outside text literally, and exactly one `error:` line for any failure."""

from __future__ import annotations

import io
from typing import Any

import pytest
from invoke.exceptions import Exit
from rich.console import Console

from vedfin_ops.checks.runner import Check
from vedfin_ops.checks.smoke import SmokeReport
from vedfin_ops.cli import output as cli
from vedfin_ops.errors import CheckFailed, UsageError
from vedfin_ops.reports.tables import smoke_table, status_tables

MARKUP = "Applying migration [/app/prisma/migrations/001_init] [bold red]x[/] [link=y]"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=buffer, width=300, markup=False))
    return buffer


def test_progress_and_rollout_lines_print_brackets_literally(captured: io.StringIO) -> None:
    cli.say(MARKUP)
    cli.LiveLines()([MARKUP])
    cli.warn(MARKUP)
    assert captured.getvalue().count(MARKUP) == 3


def test_the_smoke_and_status_tables_print_details_literally() -> None:
    report = SmokeReport("production", [Check("api /api/health", False, MARKUP, 0.1)])
    status = {"env": "production", "current": "r1", "releases": [],
              "services": [{"name": "s", "image": "[i]", "running": 1, "replicas": 1,
                            "update_state": "[/x]"}], "lock": None, "drift": [MARKUP]}
    out = io.StringIO()
    console = Console(file=out, width=400)  # markup on, as a library caller's might be
    console.print(smoke_table(report))
    console.print(status_tables(status))
    assert MARKUP in out.getvalue() and "[/x]" in out.getvalue()


@pytest.mark.parametrize(("exc", "code"), [
    (CheckFailed("deploy production failed: verify failed: x\nsecond line"), 1),
    (UsageError("--tag: 'v 1' is not a valid image tag"), 2),
    (CheckFailed("error: already prefixed"), 1),
    (KeyError("images"), 1),
    (KeyboardInterrupt(), 1),
])
def test_every_failure_is_one_error_line(exc: BaseException, code: int) -> None:
    @cli.guarded
    def task(c: Any) -> None:
        raise exc

    with pytest.raises(Exit) as info:
        task(None)
    message = str(info.value.message)
    assert info.value.code == code
    assert message.startswith("error: ") and not message.startswith("error: error:")
    assert "\n" not in message
