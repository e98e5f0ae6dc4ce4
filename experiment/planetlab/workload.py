"""PlanetLab CPU traces as CloudSim's UtilizationModelPlanetLabInMemory reads them.

A day folder holds one file per VM, 288 integer percentages, one per 300 s.
VMs are numbered in *sorted* file-name order (CloudSim used File.listFiles(),
whose order depends on the file system; sorting makes runs reproducible).
Names may contain spaces. Each value is divided by 100, a 289th sample equal
to the 288th is appended, and times between samples interpolate linearly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL_S = 300.0
SAMPLES_PER_DAY = 288
ENV_DIR = "SHOAL_PLANETLAB_DIR"


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    samples: tuple[float, ...]   # 289 fractions of the VM's MIPS

    def utilization_at(self, time_s: float) -> float:
        return utilization_at(self.samples, time_s)


def utilization_at(samples: tuple[float, ...] | list[float], time_s: float,
                   interval_s: float = SAMPLE_INTERVAL_S) -> float:
    """UtilizationModelPlanetLabInMemory.getUtilization(), the same double operations as Java."""
    if math.fmod(time_s, interval_s) == 0:
        return samples[int(time_s) // int(interval_s)]
    i1 = math.floor(time_s / interval_s)
    i2 = math.ceil(time_s / interval_s)
    u1 = samples[i1]
    u2 = samples[i2]
    delta = (u2 - u1) / ((i2 - i1) * interval_s)
    return u1 + delta * (time_s - i1 * interval_s)


def default_workloads_dir() -> Path:
    """``$SHOAL_PLANETLAB_DIR``, else ``../shared/workloads/planetlab`` next to the repository root."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "workloads" / "planetlab"


def day_dir(day: str, workloads_dir: str | os.PathLike[str] | None = None) -> Path:
    base = Path(workloads_dir) if workloads_dir is not None else default_workloads_dir()
    path = base / str(day)
    if not path.is_dir():
        raise FileNotFoundError(f"no PlanetLab day folder {path} (set {ENV_DIR} or pass workloads_dir)")
    return path


def trace_files(path: Path) -> list[Path]:
    """Regular files of a day folder in sorted name order (names may contain spaces)."""
    return sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def parse_trace(name: str, text: str) -> Trace:
    values = [int(line) for line in text.split("\n") if line.strip() != ""]
    if len(values) != SAMPLES_PER_DAY:
        raise ValueError(f"trace {name!r} has {len(values)} samples, expected {SAMPLES_PER_DAY}")
    if any(v < 0 or v > 100 for v in values):
        raise ValueError(f"trace {name!r} has a value outside 0..100 %")
    samples = [v / 100.0 for v in values]
    samples.append(samples[-1])
    return Trace(name, tuple(samples))


def load_day(day: str, workloads_dir: str | os.PathLike[str] | None = None,
             limit: int | None = None) -> list[Trace]:
    """All traces of one day, VM i = i-th file in sorted name order (first ``limit`` only if given)."""
    files = trace_files(day_dir(day, workloads_dir))
    if not files:
        raise FileNotFoundError(f"day folder {day!r} holds no trace files")
    if limit is not None:
        files = files[:limit]
    return [parse_trace(p.name, p.read_text(encoding="ascii")) for p in files]
