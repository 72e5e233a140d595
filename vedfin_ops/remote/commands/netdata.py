"""Files in Netdata's config folder: written beside the live one and swapped in (the previous
one kept until the new one is seen loaded), put back, settled; and Netdata's alarms API read
from the host itself. Each write goes as the deploy user when it may, else through
passwordless sudo (Debian's health.d is root's)."""

from __future__ import annotations

from collections.abc import Sequence

from vedfin_ops.remote.quoting import sh

UNCHANGED = "VEDFIN-UNCHANGED"
SWAPPED = "VEDFIN-SWAPPED"  # the new file is live: from here a failure puts the old one back
MARK = "Rendered by vedfin-ops"
RELOAD_TIMEOUT = 20
PREV = ".prev"  # the file before this apply, kept until Netdata is seen to load the new one


def _prelude(root: str, rel: str) -> str:
    """Where the file goes, and how to write there: as the deploy user when it may, else
    through passwordless sudo; netdatacli is in /usr/sbin, off a deploy user's PATH, and
    bounded by a timeout (a hung Netdata must not hang a deploy)."""
    path = f"{root}/{rel}"
    folder = path.rsplit("/", 1)[0]
    return (
        f"PATH=\"$PATH:/usr/sbin:/sbin\"; r={sh(root)}; d={sh(folder)}; f={sh(path)}; "
        '[ -d "$r/health.d" ] || { echo "no folder $r/health.d (is Netdata installed? '
        'monitoring.netdataConfig)" >&2; exit 3; }; '
        'command -v netdatacli >/dev/null || { echo "netdatacli not found (is Netdata '
        'installed?)" >&2; exit 3; }; '
        'w="$d"; [ -d "$d" ] || w="$r"; '
        "S=; if [ ! -w \"$w\" ]; then if sudo -n true 2>/dev/null; then S='sudo -n'; else "
        'echo "cannot write $w as $(id -un) and no passwordless sudo (let the deploy user write '
        'there, or monitoring.apply: false)" >&2; exit 3; fi; fi; '
        '[ -d "$d" ] || $S mkdir -p "$d" || exit 3; '
        f'reload() {{ $S timeout {RELOAD_TIMEOUT} netdatacli reload-health; }}; ')


def netdata_install(root: str, rel: str, *, mode: str, owned: bool, reload: bool,
                    legacy: str | None, reload_same: bool = False) -> str:
    """The file on stdin: written beside the live one (`<root>/<rel>`), swapped in (the
    previous one kept as `<name>.prev`), reloaded when Netdata's health reads it (`reload`).
    An identical file is not swapped: it is reloaded only when asked (`reload_same`, when
    Netdata does not have it loaded). A file the tool owns only by name (`owned`) must carry
    its mark to be replaced; `legacy`, the file's earlier name, is taken over."""
    reload_it = 'reload || { echo "netdatacli reload-health failed" >&2; exit 4; }'
    # read as the writer reads: a 0640 file of root's is unreadable to the deploy user
    foreign = (f'if [ -e "$f" ] && ! $S grep -q {sh(MARK)} "$f"; then echo "$f was not '
               'written by vedfin-ops: move it aside (its settings into the config) and apply '
               'again" >&2; exit 3; fi; ' if owned else "")
    # the file's group is the one Netdata runs as (else its own group), so a 0640 file stays
    # readable to Netdata; a group that cannot be set is a failure, not a silent mute. `ps`
    # also lists the Netdatas of containers and machines on the host (their numeric groups
    # are other names here): the first of their groups the writer may give the file wins
    group = ('gs=$(ps -o group= -C netdata 2>/dev/null | tr -d " " | awk \'!seen[$0]++\'); '
             '[ -n "$gs" ] || { getent group netdata >/dev/null && gs=netdata; }; '
             'g=; for c in $gs; do if $S chgrp "$c" "$tmp" 2>/dev/null; then g=$c; break; fi; '
             'done; if [ -n "$gs" ] && [ -z "$g" ]; then $S rm -f "$tmp"; '
             'echo "cannot give $f to the group Netdata runs as ($(echo $gs)): Netdata could '
             'not read it" >&2; exit 3; fi; '
             if mode == "640" else "")
    # the old name's file becomes this one's, so it is what a failure puts back and it is
    # never loaded beside the new one (the same alarms twice)
    takeover = (f'o={sh(root + "/" + legacy)}; '
                'if [ ! -e "$f" ] && [ -e "$o" ] && $S grep -q ' + sh(MARK) +
                ' "$o"; then $S mv -f "$o" "$f" || exit 3; fi; ' if legacy else "")
    return ("VEDFIN_RELOAD_SAME=1; " if reload_same else "") + _prelude(root, rel) + takeover \
        + foreign + (
            'base=$(basename "$f"); tmp=$($S mktemp "$d/.$base.XXXXXX") || exit 3; '
            # whatever stops this command, its temp file (perhaps a secret) goes with it
            """trap '$S rm -f "$tmp" 2>/dev/null' EXIT; trap 'exit 1' HUP INT TERM PIPE; """
            f'if ! {{ $S tee "$tmp" >/dev/null && $S chmod {mode} "$tmp"; }}; then '
            '$S rm -f "$tmp"; exit 3; fi; ' + group +
            f'if $S cmp -s "$tmp" "$f"; then $S rm -f "$tmp"; echo {UNCHANGED}; '
            + (f'[ "${{VEDFIN_RELOAD_SAME:-}}" = 1 ] && {{ {reload_it}; }}; ' if reload else "")
            + 'exit 0; fi; '
            # a .prev left by an apply that never settled is the last file known good: kept
            f'if [ -e "$f" ] && [ ! -e "$f{PREV}" ] && ! $S cp -p "$f" "$f{PREV}"; then '
            '$S rm -f "$tmp"; exit 3; fi; '
            '$S mv -f "$tmp" "$f" || { $S rm -f "$tmp"; exit 3; }; '
            f'echo {SWAPPED}; ' + (reload_it if reload else "true"))


def netdata_restore(root: str, rel: str, *, reload: bool) -> str:
    """Back to the file before this apply (none: no file), reloaded; says whether it is."""
    return _prelude(root, rel) + (
        f'if [ -e "$f{PREV}" ]; then $S mv -f "$f{PREV}" "$f" || exit 5; '
        'else $S rm -f "$f" || exit 5; fi; ' +
        ("reload >/dev/null 2>&1 || echo not-reloaded" if reload else "true"))


def netdata_settle(root: str, rel: str, files: Sequence[tuple[str, str | None]]) -> str:
    """Each of `files`' (relative path, earlier name) `.prev` removed: a stale one (an apply
    stopped before it settled) must never become a later rollback's target once the live
    file is proven. A file of the earlier name that is the tool's (an earlier version wrote
    it after the takeover) goes too: Netdata must not load the same alarms twice. `rel`: the
    file whose folder the prelude checks (the alarms file)."""
    paths = " ".join(sh(f"{root}/{path}{PREV}") for path, _ in files)
    old = "".join(f"o={sh(f'{root}/{legacy}')}; if [ -e \"$o\" ] && $S grep -q {sh(MARK)} "
                  f'"$o"; then $S rm -f "$o"; fi; ' for _, legacy in files if legacy)
    return _prelude(root, rel) + old + f"$S rm -f {paths}"


def netdata_alarms(url: str, port: int) -> str:
    """Netdata's API from the host itself (its port is not public): curl, else wget."""
    at = sh(url)
    return (f"if command -v curl >/dev/null; then curl -fsS --max-time 10 {at}; "
            f"else wget -qO- -T 10 {at}; fi || {{ echo 'Netdata did not answer on "
            f"{port}' >&2; exit 7; }}")
