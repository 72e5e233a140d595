"""The deploy user's crontab: a config's block replaced whole (the user's other lines kept),
the scripts its lines run written beside it, and what `status` reads back. The scripts
themselves are templates (`rendering/templates/*.sh.j2`); the block's text is
`schedule/crontab.py`'s."""

from __future__ import annotations

from collections.abc import Sequence

from vedfin_ops.remote.commands.files import all_of, mkdir_p, remove_files
from vedfin_ops.remote.quoting import sh

NO_CRONTAB = "__vedfin_no_crontab__"
TORN = "__vedfin_torn_block__"

# The crontab less this config's block, and less the legacy (unnamed) block when it runs this
# config's scripts (a command under its bin folder, quotes aside): the upgrade takes over its
# own old block and leaves another config's to that config. A legacy block without its END is
# kept whole.
_KEEP_OTHERS = r"""
index($0, ENVIRON["M"]) == 1 { skip = 1; next }
skip { if ($0 == ENVIRON["E"]) skip = 0; next }
$0 == ENVIRON["OB"] { old = 1; mine = 0; held = $0 "\n"; next }
old {
  held = held $0 "\n"; line = $0; gsub("\047", "", line)
  if (index(line, " " ENVIRON["B"]) > 0) mine = 1
  if ($0 == ENVIRON["OE"]) { if (!mine) printf "%s", held; old = 0; held = "" }
  next
}
{ print }
END { if (old) printf "%s", held }
"""


def install_script(path: str, text: str) -> str:
    """`text` as an executable script of the deploy user's (0700), renamed into place."""
    tmp = sh(path + ".tmp")
    return f"printf '%s' {sh(text)} > {tmp} && chmod 700 -- {tmp} && mv -f -- {tmp} {sh(path)}"


def install_block(block: str, *, mark: str, end: str, legacy: tuple[str, str], bin_dir: str,
                  scripts: Sequence[tuple[str, str | None]]) -> str:
    """One command: each script written (or removed, where its text is None) in `bin_dir`,
    the block that begins with `mark` and ends at `end` replaced by `block` (removed when it
    is empty), the user's other lines kept, then the crontab as installed read back. Prints
    NO_CRONTAB (exit 3) when the host has no cron, TORN (exit 4) and changes nothing when
    the block has no end (a hand edit: the range would eat the user's lines)."""
    begin_legacy, end_legacy = legacy
    keep_others = (f"crontab -l 2>/dev/null | M={sh(mark)} E={sh(end)} "
                   f"OB={sh(begin_legacy)} OE={sh(end_legacy)} "
                   f"B={sh(bin_dir + '/')} awk {sh(_KEEP_OTHERS)}")
    torn = (f"tab=$(crontab -l 2>/dev/null); if printf '%s\\n' \"$tab\" | grep -qF -- "
            f"{sh(mark)} && ! printf '%s\\n' \"$tab\" | grep -qxF -- {sh(end)}; "
            f"then echo {TORN}; exit 4; fi")
    parts = [f"command -v crontab >/dev/null || {{ echo {NO_CRONTAB}; exit 3; }}", torn,
             mkdir_p(bin_dir)]
    for path, text in scripts:
        parts.append(install_script(path, text) if text is not None else remove_files([path]))
    parts.append(f"{{ {keep_others}; printf '%s' {sh(block)}; }} | crontab -")
    parts.append("{ crontab -l 2>/dev/null || true; }")  # what is installed now
    return all_of(*parts)


def host_clock() -> str:
    """The host's wall clock as cron reads it (local time): `HH:MM`."""
    return "date +%H:%M"


def cron_state(log: str, pending: Sequence[tuple[str, str]] = ()) -> str:
    """The crontab (after `CRON`), the log's last 200 lines (after `LOG`), then each
    `(name, path)` of `pending` as `PENDING <name>` and the file's text."""
    return " ".join([f"echo CRON; crontab -l 2>/dev/null; echo LOG; tail -n 200 {sh(log)} "
                     f"2>/dev/null;",
                     *(f"echo PENDING {name}; cat {sh(path)} 2>/dev/null;"
                       for name, path in pending), "true"])
