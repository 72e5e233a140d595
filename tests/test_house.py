"""The package's shape holds (`scripts/house.py`, read as text): every shell command is built in
`vedfin_ops/remote/` or a template, and no two modules import each other, in a circle of any
size."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _house() -> ModuleType:
    spec = importlib.util.spec_from_file_location("house", ROOT / "scripts" / "house.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


house = _house()


def test_every_shell_command_is_built_in_remote_or_a_template() -> None:
    found = house.shell_literals()
    assert found == [], ("shell spelled outside vedfin_ops/remote/ and the templates (build "
                         "it in remote/commands/: commands.all_of(...) for an && join, "
                         "commands.host_clock() for `date +%H:%M`, ...):\n" + "\n".join(found))


def test_no_import_circles() -> None:
    assert house.circles(house.import_graph()) == []


def _package(tmp_path: Path, code: str) -> Path:
    root = tmp_path / "vedfin_ops"
    (root / "remote").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "remote" / "commands.py").write_text('def ps() -> str:\n    return "docker ps"\n')
    (root / "step.py").write_text(code)
    return root


@pytest.mark.parametrize("code", [
    'host.run("docker ps -q", what="containers")',
    'host.run(f"sudo -n rm -f {path}", what="remove")',
    'command = f"mkdir -p {a} && {b}"',
    'host.run(" && ".join([commands.a(), commands.b()]), what="both")',
    'host.run(commands.a() + " && " + commands.b(), what="both")',
    'host.run(" ; ".join(commands.task(s) for s in names), what="each")',
    'host.run(commands.psql(c, u) + " -At", what="rows")',
    'script = "set -e\\nif ! docker info >/dev/null; then exit 1; fi\\n"',
])
def test_a_command_spelled_outside_remote_is_found(tmp_path: Path, code: str) -> None:
    assert [line.split(":")[0] for line in house.shell_literals(_package(tmp_path, code))] == [
        "step.py"]


@pytest.mark.parametrize("code", [
    'raise CheckFailed("pg_restore could not read the dump through to its end")',
    'problems.append(f"{name} is drained ({first}docker node update --availability active '
    '{name})")',
    'host.run(command, what=f"docker push {image}")',
    'rule = " || ".join(f"Host(`{d}`)" for d in domains)',
    'hint = " && ".join(f"fab -H vps pause --env {e}" for e in envs)',
    'say("; ".join(problems))',
    'text = f"cannot read the firewall: `ufw status verbose` needs root ({why})"',
    'def f() -> None:\n    """Runs `docker stack deploy`; then docker service ls."""\n',
])
def test_a_message_is_no_command(tmp_path: Path, code: str) -> None:
    assert house.shell_literals(_package(tmp_path, code)) == []


def test_a_circle_through_a_package_that_re_exports_its_children_is_found() -> None:
    graph = {"p": {"p.a"}, "p.a": {"q"}, "q": {"p"}, "r": {"p.a"}}
    assert house.circles(graph) == [["p", "p.a", "q"]]
    assert house.circles({"p": {"p.a"}, "p.a": {"p"}}) == []  # a package and its child
