"""The wheel as a user installs it: built from this checkout, installed into a fresh virtualenv
in a temporary folder outside the repository (its dependencies from this Python's
site-packages, so no network), and run from a folder that holds no checkout."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Installed:
    venv: Path
    workdir: Path  # a folder outside the repository to run in
    wheel: Path

    @property
    def vedfin(self) -> Path:
        return self.venv / "bin" / "vedfin"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("VEDFIN_CONFIG", "PYTHONPATH", "VIRTUAL_ENV")}
        clean["PATH"] = f"{self.venv / 'bin'}:{clean.get('PATH', '')}"
        return subprocess.run([str(a) for a in args], cwd=self.workdir,
                              env={**clean, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, check=False)


def install(folder: Path) -> Installed:
    wheels = folder / "wheels"
    # pip builds in the checkout (build/, *.egg-info): the unit and the sandbox worker of
    # one run (pytest-xdist) each build once, one at a time
    (ROOT / "build").mkdir(exist_ok=True)
    with open(ROOT / "build" / ".wheel-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # setuptools copies into build/lib and never removes what a move left there: a module
        # that moved would ship twice
        shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                                "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
                               capture_output=True, text=True, timeout=300, check=False)
    if build.returncode != 0:
        raise AssertionError(f"pip wheel failed: {build.stderr[-2000:]}")
    wheel = next(wheels.glob("vedfin_ops-*.whl"))
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--no-deps", "--no-index", str(wheel)],
                         capture_output=True, text=True, timeout=300, check=False)
    if pip.returncode != 0:
        raise AssertionError(f"installing the wheel failed: {pip.stderr[-2000:]}")
    workdir = folder / "work"
    workdir.mkdir()
    return Installed(venv, workdir, wheel)
