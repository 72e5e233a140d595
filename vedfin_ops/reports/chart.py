"""`capacity-report --chart FILE`: committed vs limit vs actual per service, and the VPS line.

`.png` through matplotlib (the `chart` extra); `.html` / `.svg` written by hand, no
dependency. Each service gets three bars: its limit per replica, its committed total (limit x
replicas) and what it uses now (when measured); two horizontal lines mark the VPS's RAM and
RAM + swap, so over-commitment reads at a glance.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from vedfin_ops.errors import UsageError
from vedfin_ops.reports.capacity import CapacityReport

COLORS = {"limit": "#9ecae1", "committed": "#3182bd", "used": "#e6550d",
          "ram": "#31a354", "swap": "#a1d99b"}


def _series(report: CapacityReport) -> tuple[list[str], list[float | None], list[float],
                                             list[float | None]]:
    """Per service, then the sums that tell the story: everything committed (and used), and
    the peak of a rolling deploy, against the VPS lines."""
    rows = report.lines
    measured = [line.used_mb for line in rows if line.used_mb is not None]
    return ([*(line.name for line in rows), "TOTAL", "deploy peak"],
            [*(float(line.memory_mb) for line in rows), None, None],
            [*(float(line.total_memory_mb) for line in rows), float(report.committed_memory_mb),
             float(report.surge_peak_memory_mb)],
            [*(line.used_mb for line in rows), sum(measured) if measured else None, None])


def write_chart(report: CapacityReport, path: str | Path) -> Path:
    """Write the chart; a path that cannot be written is bad input (exit 2), named with the
    system's reason."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".svg", ".html"):
        raise UsageError(f"--chart: {target.name}: use a .png, .svg or .html file")
    try:
        if suffix == ".png":
            _png(report, target)
        else:
            drawn = svg(report)
            text = drawn if suffix == ".svg" else (
                "<!doctype html><meta charset='utf-8'><title>vedfin-ops capacity</title>"
                f"<body style='font-family:sans-serif'>{drawn}</body>\n")
            target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--chart {target}: cannot write it: {exc.strerror or exc}") from None
    return target


def _title(report: CapacityReport) -> str:
    title = (f"vedfin-ops capacity ({report.scope}): {report.committed_memory_mb} MiB of limits "
             f"on a {report.vps_memory_mb} MiB RAM + {report.vps_swap_mb} MiB swap VPS; "
             f"status {report.status}")
    if report.host:
        title += (f"\nmeasured on the host: {report.host['memory_used_mb']:.0f} of "
                  f"{report.host['memory_total_mb']:.0f} MiB RAM used")
    return title


def _png(report: CapacityReport, target: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--chart .png needs matplotlib (pip install 'vedfin-ops[chart]'"
                         "), or write .html / .svg") from None
    names, limits, committed, used = _series(report)
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 1.3), 5), dpi=110)
    width = 0.27
    ax.bar([x - width for x in xs], [v or 0 for v in limits], width, label="limit / replica",
           color=COLORS["limit"])
    ax.bar(list(xs), committed, width, label="committed (x replicas)",
           color=COLORS["committed"])
    ax.bar([x + width for x in xs], [u or 0 for u in used], width, label="used now",
           color=COLORS["used"])
    ram = float(report.vps_memory_mb)  # the VPS the config plans for
    ax.axhline(ram, color=COLORS["ram"], linewidth=2, label=f"RAM {ram:.0f} MiB")
    ax.axhline(ram + report.vps_swap_mb, color=COLORS["swap"], linestyle="--",
               label=f"RAM + swap {ram + report.vps_swap_mb:.0f} MiB")
    ax.set_xticks(list(xs), names, rotation=20, ha="right")
    ax.set_ylabel("MiB")
    ax.set_title(_title(report), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(target)
    finally:
        plt.close(fig)


def svg(report: CapacityReport) -> str:
    names, limits, committed, used = _series(report)
    ram = float(report.vps_memory_mb)
    top = max([*committed, ram + report.vps_swap_mb, 1.0]) * 1.1
    width, height, left, bottom = 120 + 110 * len(names), 420, 70, 340
    scale = (bottom - 40) / top

    def y(value: float) -> float:
        return bottom - value * scale

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"font-size='11' font-family='sans-serif'>",
             f"<text x='10' y='18' font-size='13'>"
             f"{escape(_title(report).replace(chr(10), ' - '))}</text>"]
    for tick in range(0, int(top) + 1, max(512, int(top / 8) // 512 * 512 or 512)):
        parts.append(f"<line x1='{left}' x2='{width - 10}' y1='{y(tick):.1f}' "
                     f"y2='{y(tick):.1f}' stroke='#eee'/><text x='8' y='{y(tick) + 4:.1f}'>"
                     f"{tick}</text>")
    for i, name in enumerate(names):
        x0 = left + 20 + i * 110
        bars = [("limit", limits[i]), ("committed", committed[i]), ("used", used[i])]
        for j, (kind, value) in enumerate(bars):
            if value is None:
                continue
            parts.append(f"<rect x='{x0 + j * 28}' y='{y(value):.1f}' width='26' "
                         f"height='{value * scale:.1f}' fill='{COLORS[kind]}'>"
                         f"<title>{escape(name)} {kind}: {value:.0f} MiB</title></rect>")
        parts.append(f"<text x='{x0}' y='{bottom + 16}'>{escape(name)}</text>")
    for label, value, dash in (("RAM", ram, ""),
                               ("RAM + swap", ram + report.vps_swap_mb, " stroke-dasharray='6'")):
        parts.append(f"<line x1='{left}' x2='{width - 10}' y1='{y(value):.1f}' "
                     f"y2='{y(value):.1f}' stroke='{COLORS['ram']}' stroke-width='2'{dash}/>"
                     f"<text x='{width - 150}' y='{y(value) - 4:.1f}'>{label} {value:.0f} MiB"
                     f"</text>")
    legend = [("limit", "limit / replica"), ("committed", "committed"), ("used", "used now")]
    for k, (kind, label) in enumerate(legend):
        parts.append(f"<rect x='{left + k * 150}' y='{height - 30}' width='12' height='12' "
                     f"fill='{COLORS[kind]}'/><text x='{left + k * 150 + 16}' "
                     f"y='{height - 20}'>{label}</text>")
    parts.append("</svg>")
    return "\n".join(parts)
