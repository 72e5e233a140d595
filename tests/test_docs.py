"""The documentation holds together: the MkDocs site builds in strict mode (every internal link
and anchor resolves), the README stays a short guide whose links lead somewhere, and it keeps
the test command CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 210
TEST_COMMAND = "python3 -m pytest"

# [text](target) and ![alt](target); the target ends at a space (a title) or the bracket
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def relative_links(markdown: str) -> list[str]:
    """Link targets that point into the repository: no scheme, no mail, no bare anchor;
    code blocks are not read."""
    text = _FENCE.sub("", markdown)
    out = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0].split("?", 1)[0])
    return out


def test_the_docs_site_builds_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "index.html").is_file()


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move the topic to "
        f"docs/, measurements to bench/RESULTS.md, history to CHANGELOG.md")


def test_readme_links_point_at_files() -> None:
    links = relative_links(README.read_text(encoding="utf-8"))
    assert links, "README.md links to no page"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_readme_keeps_the_test_command() -> None:
    assert TEST_COMMAND in README.read_text(encoding="utf-8")


def test_relative_links_are_found() -> None:
    text = ("[a](docs/config.md#secrets) ![chart](docs/c.png) [b](https://example.com) "
            "[c](#top) [d](mailto:x@example.com)\n```\n[e](not/read.md)\n```\n")
    assert relative_links(text) == ["docs/config.md", "docs/c.png"]
