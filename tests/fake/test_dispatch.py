"""The scripted programs' dispatcher: what the fault matrix leans on (a killed program, stdin,
many at once) answered as a real program would."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.fake.dispatch import dispatcher
from tests.fake.host import FakeHost


def test_the_engine_reads_stdin_only_when_the_call_says_so(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.run("printf 'CREATE DATABASE \"x y\";\\n' | docker exec -i pg0 psql -U postgres",
             what="sql")
    assert host.engine()["sql"] == ['CREATE DATABASE "x y";\n']
    # without -i the shell's stdin is never read: a pipe held open would not end the call
    shell = subprocess.Popen(["sh", "-c", "docker service ls --format x"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env={"PATH": host.path,
                                                          "FAKE_ENGINE": str(host.engine_file)})
    try:
        assert shell.wait(timeout=20) == 0
    finally:
        assert shell.stdin is not None
        shell.stdin.close()


def test_a_program_killed_while_it_waits_gives_its_slot_back(tmp_path: Path) -> None:
    held, answering = threading.Event(), threading.Event()

    def slow(words: list[str], stdin: str) -> tuple[str, str, str]:
        answering.set()
        held.wait(30)
        return "0", "late\n", ""

    program = tmp_path / "slow"
    program.write_text(dispatcher().client("slow", slow, name="slow"))
    program.chmod(0o755)
    folder = dispatcher().folder
    first = subprocess.Popen([str(program)], stdout=subprocess.PIPE)
    assert answering.wait(20)  # the dispatcher is inside the first call: the rest wait
    waiting = [subprocess.Popen([str(program)], stdout=subprocess.DEVNULL) for _ in range(8)]
    deadline = time.monotonic() + 20
    while len(list(folder.glob("*.busy"))) < 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(folder.glob("*.busy"))) == 9
    time.sleep(0.5)  # each has sent its call (a few of the shell's builtins after its slot)
    for killed in [first, *waiting]:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    held.set()
    host = FakeHost(tmp_path / "host")
    host.run("docker service ls", what="ls")  # answered after the killed ones
    # its own slot is given back when the dispatcher reads its `done`, a moment later
    deadline = time.monotonic() + 20
    while list(folder.glob("*.busy")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(folder.glob("*.busy")) == []


def test_many_calls_at_once_each_get_their_own_answer(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.set_engine(images={f"sha256:{i:064x}": f"r{i}" for i in range(20)})
    script = " & ".join(f"docker pull r{i}@sha256:{i:064x} > {tmp_path}/{i}.out 2>&1"
                        for i in range(20)) + " & wait"
    host.run(script, what="pulls")
    assert sorted(host.engine()["pulls"]) == sorted(f"r{i}@sha256:{i:064x}" for i in range(20))
