"""vedfin-ops as a package: the wheel carries the templates and the task tree, and the
`vedfin` command works from any folder; the checkout's `inv`/`fab` read the same tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, SHIPPED
from vedfin_ops.cli.main import FABRIC_LONG, FABRIC_SHORT, needs_fabric


def test_the_fabric_flags_the_program_knows_are_fabrics_own() -> None:
    """`vedfin` switches to Fabric on these; a Fabric upgrade that adds one must show here."""
    from fabric import Config, Executor
    from fabric.main import Fab
    from invoke.program import Program

    from vedfin_ops.cli.tasks import ns

    fab = Fab(name="vedfin", version="0", namespace=ns, executor_class=Executor,
              config_class=Config)
    plain = Program(name="vedfin", version="0", namespace=ns)
    extra = ({n for a in fab.core_args() + fab.task_args() for n in a.names}
             - {n for a in plain.core_args() + plain.task_args() for n in a.names})
    assert extra == set(FABRIC_LONG) | set(FABRIC_SHORT)


def test_fabric_is_loaded_only_for_hosts_and_help() -> None:
    names = {"deploy.production", "check-config", "status"}
    assert needs_fabric(["-H", "vps", "deploy.production"], names)
    assert needs_fabric(["--hosts=vps", "status"], names)
    assert needs_fabric(["-S", "ssh_config", "-H", "sandbox", "status"], names)
    assert needs_fabric(["--help"], names)
    assert not needs_fabric(["--list"], names)
    assert needs_fabric(["-eH", "vps", "status"], names)  # combined short flags
    assert not needs_fabric(["check-config", "--config", "x.yaml"], names)
    # after the task name, `-t` is the task's own (`deploy.production -t v2`)
    assert not needs_fabric(["deploy.production", "-t", "v2"], names)


def test_listing_the_tasks_imports_no_heavy_library() -> None:
    """Cold start: `vedfin --list` must not pay for what no listed task runs yet."""
    code = ("import sys; from vedfin_ops.cli.main import program\n"
            "import contextlib\n"
            "with contextlib.suppress(SystemExit):\n"
            "    program(['vedfin', '--list']).run(['vedfin', '--list'])\n"
            "heavy = {'fabric', 'paramiko', 'pydantic', 'rich', 'requests', 'psycopg', "
            "'jinja2', 'matplotlib'} & set(sys.modules); "
            "print('HEAVY', sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_the_installed_command_lists_validates_and_renders_outside_the_checkout(
        installed: Any, tmp_path: Path) -> None:
    where = installed.run(installed.python, "-c",
                          "import vedfin_ops, vedfin_ops.rendering.files as f; "
                          "print(vedfin_ops.__file__); print(f.TEMPLATES)")
    module, templates = where.stdout.split()
    assert module.startswith(str(installed.venv)), "the checkout was imported, not the wheel"
    assert Path(templates, "stack-env.yml.j2").is_file()

    listing = installed.run(installed.vedfin, "--list")
    assert listing.returncode == 0, listing.stderr
    for name in ("deploy.production", "check-config", "render", "lock.release"):
        assert name in listing.stdout
    assert "sandbox." not in listing.stdout, "the sandbox's tasks belong to the checkout only"
    shipped = zipfile.ZipFile(installed.wheel).namelist()
    assert not [n for n in shipped if not n.startswith(("vedfin_ops/", "vedfin_ops-"))], shipped
    assert not [n for n in shipped if "sandbox" in n], "the sandbox ships in the wheel"
    assert "vedfin_ops/rendering/templates/github-deploy.yml.j2" in shipped  # init --ci github
    same = installed.run(installed.python, "-m", "vedfin_ops", "--list")
    assert same.stdout == listing.stdout

    shutil.copy(SHIPPED, installed.workdir / "dokploy.yaml")
    check = installed.run(installed.vedfin, "check-config")
    assert check.returncode == 0, check.stderr
    assert "dokploy.yaml: valid" in check.stdout
    out = tmp_path / "build"
    rendered = installed.run(installed.vedfin, "render", "--config",
                             installed.workdir / "dokploy.yaml", "--out", out)
    assert rendered.returncode == 0, rendered.stderr
    assert (out / "production" / "stacks" / "production.yml").is_file() or \
        any(out.rglob("production.yml")), rendered.stdout

    api = installed.run(installed.python, "-c",
                        "import vedfin_ops; cfg = vedfin_ops.load_config('dokploy.yaml'); "
                        "files = vedfin_ops.render(cfg, 'production', tag='v9'); "
                        "print(sorted(files)[:3]); print(len(files))")
    assert api.returncode == 0, api.stderr
    assert int(api.stdout.split()[-1]) > 3

    bad = installed.run(installed.vedfin, "check-config", "--config", "missing.yaml")
    assert bad.returncode == 2 and bad.stderr.startswith("error: missing.yaml"), bad.stderr
    remote = installed.run(installed.vedfin, "status")
    assert remote.returncode == 2
    assert remote.stderr.strip().startswith("error: this task runs on a host: vedfin -H HOST")
