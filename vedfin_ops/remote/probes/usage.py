"""What the host really uses: each container's memory from its cgroup files (as `docker stats`
computes it; `docker stats` only where the files cannot be read), /proc for the host.

Parsing is pure (text in, numbers out) so it is tested on output recorded from the real
engine; `measure` asks the host for all of it in one command.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vedfin_ops.config.units import size_mib

if TYPE_CHECKING:  # the parsing needs no SSH: keep `inv capacity-report` light
    from vedfin_ops.remote.host import RemoteHost


# Container memory straight from the cgroup files (v2 systemd/cgroupfs, v1), computed as
# `docker stats` does (usage minus inactive file cache): milliseconds, where `docker stats
# --no-stream` takes ~2 s to sample. Any container without readable files: docker stats.
CGROUP_STATS = r"""
total=$(awk '/^MemTotal:/{printf "%.0f\n", $2*1024}' /proc/meminfo)
out=$(docker ps --no-trunc --format '{{.ID}} {{.Names}}' | while read -r id name; do
  u=; i=0; l=
  for d in /sys/fs/cgroup/system.slice/docker-$id.scope /sys/fs/cgroup/docker/$id \
           /sys/fs/cgroup/memory/docker/$id /sys/fs/cgroup/memory/system.slice/docker-$id.scope
  do
    if [ -r "$d/memory.current" ]; then
      u=$(cat "$d/memory.current"); l=$(cat "$d/memory.max")
      i=$(awk '$1=="inactive_file"{print $2}' "$d/memory.stat"); break
    elif [ -r "$d/memory.usage_in_bytes" ]; then
      u=$(cat "$d/memory.usage_in_bytes"); l=$(cat "$d/memory.limit_in_bytes")
      i=$(awk '$1=="total_inactive_file"{print $2}' "$d/memory.stat"); break
    fi
  done
  [ -n "$u" ] || { echo SLOW; break; }
  case "$l" in max|'') l=$total;; esac
  [ "$l" -gt "$total" ] 2>/dev/null && l=$total
  printf '{"Name":"%s","MemUsage":"%sB / %sB","CPUPerc":"--"}
' "$name" "$((u - ${i:-0}))" "$l"
done)
case "$out" in *SLOW*) docker stats --no-stream --format '{{json .}}';; *) printf '%s
' "$out";; esac
"""

# CPU: two snapshots a second apart of /proc/stat's `cpu` line and each container's CPU time
# (cgroup v2 cpu.stat usage_usec, v1 cpuacct.usage in ns), as `docker stats` samples; only the
# capacity report asks (a deploy's probe must not wait the second).
CPU_SAMPLE = r"""
snap() {
  date +%s%N; head -n 1 /proc/stat
  docker ps --no-trunc --format '{{.ID}} {{.Names}}' | while read -r id name; do
    for d in /sys/fs/cgroup/system.slice/docker-$id.scope /sys/fs/cgroup/docker/$id; do
      [ -r "$d/cpu.stat" ] &&
        { echo "C $name $(awk '$1=="usage_usec"{print $2}' "$d/cpu.stat")"; break; }
    done
    for d in /sys/fs/cgroup/cpuacct/docker/$id /sys/fs/cgroup/cpu,cpuacct/docker/$id \
             /sys/fs/cgroup/cpuacct/system.slice/docker-$id.scope; do
      [ -r "$d/cpuacct.usage" ] &&
        { echo "C $name $(( $(cat "$d/cpuacct.usage") / 1000 ))"; break; }
    done
  done
}
snap; echo '--AGAIN--'; sleep 1; snap
"""
CPU_MARK = "--CPUSAMPLE--"


def disk_command(base_dir: str) -> str:
    """The filesystem holding `base_dir` (its nearest existing parent on a new host): total,
    used and free KiB; then the KiB the backups take."""
    from vedfin_ops.remote.quoting import sh

    return (f"d={sh(base_dir)}; while [ ! -e \"$d\" ]; do d=$(dirname \"$d\"); done; "
            f"df -kP \"$d\" | awk 'NR==2{{print $2, $3, $4}}'; "
            f"du -sk {sh(base_dir.rstrip('/') + '/backups')} 2>/dev/null | cut -f1; true")


def probe(base_dir: str | None = None, cpu: bool = False) -> str:
    """One command for everything; with `base_dir`, the disk it is on too; with `cpu`, CPU
    use sampled over a second."""
    disk = f"echo '--DISK--'; {disk_command(base_dir)}; " if base_dir else ""
    sample = f"echo '{CPU_MARK}';{CPU_SAMPLE}" if cpu else ""  # it ends with a newline
    return ("cat /proc/meminfo; echo '--LOAD--'; cat /proc/loadavg; echo '--CPUS--'; nproc; "
            + disk + sample + "echo '--STATS--';" + CGROUP_STATS)


PROBE = probe()


def parse_size_mib(text: str) -> float | None:
    """Docker's `472KiB`, `58.12MiB`, `1.5GiB`, `0B`, `12kB` -> MiB; `--` (unreadable) -> None."""
    text = text.strip()
    if text in ("--", "", "N/A"):
        return None
    try:
        return size_mib(text, decimal=True)
    except ValueError:
        raise ValueError(f"not a docker size: {text!r}") from None


@dataclass(frozen=True)
class ContainerStat:
    name: str
    service: str  # the swarm service (`vedfin-production_api-production`), else the name
    used_mb: float | None
    limit_mb: float | None
    cpu_percent: float | None


def parse_stats(text: str) -> list[ContainerStat]:
    out = []
    for line in text.strip().splitlines():
        if not line.strip().startswith("{"):
            continue
        row = json.loads(line)
        used, _, limit = row.get("MemUsage", "--").partition("/")
        cpu = row.get("CPUPerc", "--").strip().rstrip("%")
        name = row["Name"]
        used_mb, limit_mb = parse_size_mib(used), parse_size_mib(limit) if limit else None
        if limit_mb == 0:  # `0B / 0B`: a stopped container (`--all`), nothing measured
            used_mb = limit_mb = None
        out.append(ContainerStat(
            name=name,
            service=name.split(".", 1)[0] if re.search(r"\.\d+\.[a-z0-9]{25}$", name) else name,
            used_mb=used_mb,
            limit_mb=limit_mb,
            cpu_percent=float(cpu) if cpu not in ("--", "") else None,
        ))
    return out


@dataclass(frozen=True)
class Disk:
    total_mb: float
    used_mb: float
    free_mb: float
    backups_mb: float  # what `<base>/backups` holds (0 when there is none yet)

    @property
    def used_percent(self) -> float:
        """As `df` counts it (used of what users may use: root's reserve left out)."""
        room = self.used_mb + self.free_mb
        return round(self.used_mb / room * 100, 1) if room else 0.0


def parse_disk(text: str) -> Disk | None:
    """`total used free` KiB (df), then the backups' KiB (du; absent before the first)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or len(lines[0]) != 3 or not all(w.isdigit() for w in lines[0]):
        return None
    total, used, free = (int(w) / 1024 for w in lines[0])
    backups = int(lines[1][0]) / 1024 if len(lines) > 1 and lines[1][0].isdigit() else 0.0
    return Disk(round(total, 1), round(used, 1), round(free, 1), round(backups, 1))


@dataclass
class Usage:
    memory_total_mb: float
    memory_used_mb: float
    swap_total_mb: float
    swap_used_mb: float
    cpu_load: float  # 1-minute load average
    cpus: int
    containers: list[ContainerStat] = field(default_factory=list)
    disk: Disk | None = None
    cpu_percent: float | None = None  # the host's, of all its CPUs, over the sampled second

    def service_cpu(self, service: str) -> float | None:
        """% of one CPU its running containers used (docker stats' scale), None unmeasured."""
        stats = [c.cpu_percent for c in self.containers
                 if c.service == service and c.cpu_percent is not None]
        return round(sum(stats), 1) if stats else None

    def service_used(self, service: str) -> tuple[float, int] | None:
        """(MiB used by all its running containers, how many) or None if none measured."""
        stats = [c for c in self.containers if c.service == service and c.used_mb is not None]
        if not stats:
            return None
        return sum(c.used_mb or 0.0 for c in stats), len(stats)


def parse_meminfo(text: str) -> dict[str, float]:
    """/proc/meminfo in MiB."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+):\s+(\d+)\s*kB", line)
        if match:
            out[match.group(1)] = int(match.group(2)) / 1024
    return out


def _snapshot(text: str) -> tuple[int, list[int], dict[str, int]] | None:
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0][0].isdigit() or lines[1][0] != "cpu":
        return None
    containers = {words[1]: int(words[2]) for words in lines[2:]
                  if len(words) == 3 and words[0] == "C" and words[2].isdigit()}
    return int(lines[0][0]), [int(w) for w in lines[1][1:9]], containers


def parse_cpu(text: str) -> tuple[float | None, dict[str, float]]:
    """(host %, container name -> % of one CPU) from the two snapshots; (None, {}) when
    the sample is missing or cut short."""
    first, _, second = text.partition("--AGAIN--")
    a, b = _snapshot(first), _snapshot(second)
    if a is None or b is None or b[0] <= a[0]:
        return None, {}
    total = sum(b[1]) - sum(a[1])
    idle = (b[1][3] + b[1][4]) - (a[1][3] + a[1][4])
    host = round((total - idle) / total * 100, 1) if total > 0 else None
    elapsed_us = (b[0] - a[0]) / 1000
    containers = {name: round(max(0, b[2][name] - used) / elapsed_us * 100, 1)
                  for name, used in a[2].items() if name in b[2]}
    return host, containers


def parse_probe(text: str) -> Usage:
    mem_text, _, rest = text.partition("--LOAD--")
    load_text, _, rest = rest.partition("--CPUS--")
    cpus_text, _, stats_text = rest.partition("--STATS--")
    cpus_text, _, cpu_text = cpus_text.partition(CPU_MARK)
    cpus_text, _, disk_text = cpus_text.partition("--DISK--")
    host_cpu, container_cpu = parse_cpu(cpu_text)
    containers = [c if c.name not in container_cpu else
                  ContainerStat(c.name, c.service, c.used_mb, c.limit_mb, container_cpu[c.name])
                  for c in parse_stats(stats_text)]
    mem = parse_meminfo(mem_text)
    total = mem.get("MemTotal", 0.0)
    available = mem.get("MemAvailable", mem.get("MemFree", 0.0))
    swap_total = mem.get("SwapTotal", 0.0)
    return Usage(
        memory_total_mb=round(total, 1),
        memory_used_mb=round(total - available, 1),
        swap_total_mb=round(swap_total, 1),
        swap_used_mb=round(swap_total - mem.get("SwapFree", swap_total), 1),
        cpu_load=float(load_text.split()[0]) if load_text.split() else 0.0,
        cpus=int(cpus_text.strip() or 1),
        containers=containers,
        disk=parse_disk(disk_text),
        cpu_percent=host_cpu,
    )


def measure(host: RemoteHost, base_dir: str | None = None, cpu: bool = False) -> Usage:
    return parse_probe(host.run(probe(base_dir, cpu), what="measure usage"))
