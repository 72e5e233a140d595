"""A `Command` renders exactly the quoted line the host runs, shows its secrets as `***`
wherever it is shown, and a host masks them in whatever it returns or raises."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fake.host import FakeHost
from vedfin_ops.remote import commands
from vedfin_ops.remote.command import MASK, Command, Raw, Secret
from vedfin_ops.remote.host import RemoteError


def test_a_command_renders_its_words_quoted_and_its_fragments_as_they_are() -> None:
    command = Command("docker", "login", "--username", "o'neil", "--password-stdin",
                      "reg.example:5000", Raw(">/dev/null"))
    assert command.render() == ("docker login --username 'o'\"'\"'neil' --password-stdin "
                                "reg.example:5000 >/dev/null")
    assert command.masked() == command.render() == str(command)  # no secret: shown as run


def test_a_secret_is_one_quoted_word_when_run_and_stars_when_shown() -> None:
    command = Command("psql", "-c", Secret("it's s3cret"), Raw("| tail -n 1"))
    assert command.render() == "psql -c 'it'\"'\"'s s3cret' | tail -n 1"
    assert command.masked() == f"psql -c {MASK} | tail -n 1" == str(command)
    assert "s3cret" not in repr(command) and command.secrets == ("it's s3cret",)
    nested = Command(Raw("timeout 5"), command)
    assert nested.render() == f"timeout 5 {command.render()}"
    assert nested.masked() == f"timeout 5 {command.masked()}"
    assert Command("x", Secret("ab")).masked() == f"x {MASK}"  # marked: masked at any length


def test_a_word_that_holds_a_secret_is_masked_too() -> None:
    command = Command("echo", "token=hunter22", Secret("hunter22"))
    assert command.render() == "echo token=hunter22 hunter22"
    assert command.masked() == f"echo 'token={MASK}' {MASK}"


def test_a_word_that_holds_a_secret_with_a_quote_is_masked_before_it_is_quoted() -> None:
    command = Command("echo", "x=it's-hunter22", Secret("it's-hunter22"))
    assert command.masked() == f"echo 'x={MASK}' {MASK}"


def test_a_nested_command_cannot_carry_the_secret_stdin_the_outer_one_would_drop() -> None:
    with pytest.raises(ValueError, match="nested command"):
        Command(Raw("sudo"), Command("cat", secret_stdin=Secret("hunter22")))


def test_a_secret_for_stdin_is_in_no_command_line() -> None:
    login = commands.registry_login("reg.example", "ci", "pa55word")
    assert login.render() == ("docker login --username ci --password-stdin reg.example "
                              ">/dev/null")
    assert login.secret_stdin == Secret("pa55word\n") and "pa55word" in login.secrets
    join = commands.swarm_join("10.0.0.1", "SWMTKN-1-abc")
    assert "SWMTKN" not in join.render() and join.render().endswith(" 10.0.0.1:2377")
    assert join.secret_stdin == Secret("SWMTKN-1-abc\n")


def test_argv_is_for_a_process_without_a_shell() -> None:
    assert Command("docker", "push", "a b", Secret("x")).argv() == ["docker", "push", "a b",
                                                                      "x"]
    with pytest.raises(TypeError, match="no argv"):
        Command("a", Raw("&& b")).argv()


def test_a_host_masks_a_command_s_secrets_in_its_output_and_errors(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    shown: list[str] = []
    out = host.run(Command("echo", Secret("tok-123456"), Raw("; echo ok")), what="say",
                   stream=shown.append)
    assert out == "tok-123456\nok\n"  # the caller's own output: as the host printed it
    assert shown == [MASK, "ok"]
    with pytest.raises(RemoteError) as caught:
        host.run(Command(Raw("echo"), Secret("tok-123456"), Raw(">&2; exit 3")), what="fail")
    assert "tok-123456" not in str(caught.value) and MASK in str(caught.value)
    said = host.run(Command(Raw("cat"), secret_stdin=Secret("from-stdin-789")), what="stdin",
                    stream=shown.append)
    assert said == "from-stdin-789" and shown[-1] == MASK
    assert "from-stdin-789" not in "\n".join(host.command_lines)
    with pytest.raises(ValueError, match="secret stdin"):
        host.run(Command("cat", secret_stdin=Secret("a")), what="x", secret_stdin="b")


_parts = st.lists(st.one_of(st.text(), st.text().map(Secret)), min_size=1, max_size=6)


@given(_parts)
def test_any_words_and_secrets_come_back_whole_from_the_shell(parts: list[str | Secret]
                                                              ) -> None:
    command = Command(*parts)
    assert shlex.split(command.render()) == [p.value if isinstance(p, Secret) else p
                                             for p in parts]


@given(_parts)
def test_no_secret_is_ever_shown(parts: list[str | Secret]) -> None:
    shown = Command(*parts).masked()
    words = shlex.split(shown)  # as a shell reads it: quoting must not hide a secret's letters
    for part in parts:
        if isinstance(part, Secret) and len(part.value) >= 4:
            assert part.value not in shown
            assert not [w for w in words if part.value in w], (shown, part.value)
