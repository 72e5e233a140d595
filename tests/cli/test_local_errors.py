"""Local files the tasks write (`render --out`, `capacity-report --chart`): a path that cannot be
written is one line naming it and the system's reason (exit 2), never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHIPPED
from vedfin_ops.config.loader import load_config
from vedfin_ops.errors import UsageError
from vedfin_ops.rendering.files import Rendered
from vedfin_ops.rendering.local_files import write_tree
from vedfin_ops.reports.capacity import CapacityReport, capacity_report
from vedfin_ops.reports.chart import write_chart

FILES = {"env/api-production.env": "A=1\n", "stack.yml": "services: {}\n"}


@pytest.fixture(scope="module")
def report() -> CapacityReport:
    return capacity_report(load_config(str(SHIPPED)))


def test_out_under_a_file_names_the_path_and_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "build"
    blocker.write_text("a file, not a folder")
    with pytest.raises(UsageError) as info:
        write_tree(Rendered(FILES, []), blocker)
    message = str(info.value)
    assert message.startswith(f"--out {blocker}: cannot write {blocker}/")
    assert "Not a directory" in message or "File exists" in message


def test_env_files_git_could_commit_are_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    """Every writer of a render (the task, the benchmarks, the sandbox's tests) goes through
    write_tree: inside a git work tree its env files must be git-ignored."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(UsageError) as info:
        write_tree(Rendered(FILES, []), tmp_path / "out")
    assert str(info.value).startswith(f"--out {tmp_path / 'out'}: {tmp_path}/out/env/api-"
                                      f"production.env would hold secrets in the git work tree")
    assert not (tmp_path / "out").exists()
    (tmp_path / ".gitignore").write_text("*.env\n")  # ignored by any rule will do
    write_tree(Rendered(FILES, []), tmp_path / "out")
    assert (tmp_path / "out/env/api-production.env").read_text() == "A=1\n"


@pytest.mark.parametrize("name", ["chart.png", "chart.svg", "chart.html"])
def test_chart_in_a_missing_folder_names_the_path(tmp_path: Path, report: CapacityReport,
                                                  name: str) -> None:
    target = tmp_path / "missing" / name
    with pytest.raises(UsageError) as info:
        write_chart(report, target)
    assert str(info.value) == f"--chart {target}: cannot write it: No such file or directory"


@pytest.mark.parametrize("name", ["chart.png", "chart.svg"])
def test_chart_onto_a_folder_names_the_path(tmp_path: Path, report: CapacityReport,
                                            name: str) -> None:
    target = tmp_path / name
    target.mkdir()
    with pytest.raises(UsageError) as info:
        write_chart(report, target)
    assert str(info.value) == f"--chart {target}: cannot write it: Is a directory"


def test_a_chart_suffix_message_has_no_prefix(report: CapacityReport) -> None:
    with pytest.raises(UsageError) as info:
        write_chart(report, "chart.gif")
    assert str(info.value) == "--chart: chart.gif: use a .png, .svg or .html file"


# --- permission denied, for real: the writer may not override file permissions -----------
# It runs as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv drops them from the
# bounding set) in a folder that belongs to `nobody`: the kernel refuses the write as it would
# for any user, while the interpreter stays reachable wherever it is installed (a pyenv under a
# 0700 /root included), so nothing outside the test's own folder is opened up for it.

@pytest.fixture
def someone_elses_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="vedfin-test-not-ours-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(folder, 65534, 65534)
    folder.chmod(0o755)  # others may look in, not write
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_unprivileged(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to nobody and drop the override capabilities")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs util-linux's setpriv to drop the override capabilities")
    return subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "--",
                           sys.executable, "-c", code, *args], cwd="/tmp",
                          capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(ROOT), "HOME": "/tmp",
                               "PATH": os.environ.get("PATH", "")})


WRITE = """
import sys
from pathlib import Path
from vedfin_ops.errors import UsageError
try:
    if sys.argv[1] == "tree":
        from vedfin_ops.rendering.local_files import write_tree
        from vedfin_ops.rendering.files import Rendered
        write_tree(Rendered({"env/a.env": "A=1", "stack.yml": "x"}, []), Path(sys.argv[2]))
    else:
        from vedfin_ops.reports.capacity import capacity_report
        from vedfin_ops.reports.chart import write_chart
        from vedfin_ops.config.loader import load_config
        write_chart(capacity_report(load_config(sys.argv[3])), sys.argv[2])
except UsageError as exc:
    print(exc)
    sys.exit(exc.exit_code)
"""


def test_out_where_the_user_may_not_write(someone_elses_folder: Path) -> None:
    out = someone_elses_folder / "build"
    result = as_unprivileged(WRITE, "tree", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip().startswith(f"--out {out}: cannot write {out}")
    assert result.stdout.strip().endswith(": Permission denied")


@pytest.mark.parametrize("name", ["chart.png", "chart.html"])
def test_chart_where_the_user_may_not_write(someone_elses_folder: Path, name: str) -> None:
    target = someone_elses_folder / name
    result = as_unprivileged(WRITE, "chart", str(target), str(SHIPPED))
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == f"--chart {target}: cannot write it: Permission denied"
