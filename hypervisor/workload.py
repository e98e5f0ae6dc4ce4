"""CPU-demand sources: what fraction of its vCPUs a domain wants at model time t.

Theory of operation
-------------------
A `WorkloadSpec` is a small value (kind, numeric params, optional trace path)
with a one-line text form, so an operator can write `sine:period_s=86400` on a
command line and the spec can travel in a message. `make_demand(spec)` turns
it into a `DemandSource` whose `fraction_at(t_s)` is a pure function of model
time: asking twice, or out of order, gives the same answer. That is what lets
a simulation replay a day of load from a seed, and two nodes agree on what a
migrated domain demands.

Kinds (every param optional, defaults as shown):

- `constant:level=0.5`
- `sine:mean=0.5,amplitude=0.3,period_s=86400,phase_s=0` — crosses the mean
  going up at t = phase_s; period 86400 s gives a diurnal cycle.
- `walk:start=0.5,step=0.05,interval_s=10,seed=1` — bounded random walk: every
  interval_s the level moves by a uniform draw in [-step, step] from one
  `Random(seed)` sequence, reflecting at 0 and 1; linear between samples.
- `flash:base=0.2,peak=0.95,start_s=60,duration_s=30,ramp_s=5` — a flash
  crowd: base, then a linear rise over ramp_s from start_s, peak held for
  duration_s, a linear fall over ramp_s, then base again.
- `trace:interval_s=300,path=/file` — a PlanetLab trace (one CPU percent per
  line, one line per interval_s). Linear between samples, /100, clamped to
  [0, 1]. Past its end the trace wraps, and the last interval interpolates
  back to the first sample so the loop has no jump (CloudSim instead holds the
  last sample; it never runs past one day).

In the text form `path=` must be the last param: it takes the rest of the
string verbatim, because PlanetLab file names contain spaces (and a path may
contain commas).

All values are fractions of the domain's vCPUs in [0, 1]; the domain turns
them into cores.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Protocol


class WorkloadError(ValueError):
    """A workload spec or trace file is invalid; the message names the problem."""


class DemandSource(Protocol):
    def fraction_at(self, t_s: float) -> float:
        """Demanded fraction of the domain's vCPUs at model time t_s, in [0, 1]."""
        ...


@dataclass(frozen=True)
class _Param:
    default: float
    low: float = -math.inf
    high: float = math.inf
    # True when `low` itself is out of range (a period of 0 s means nothing).
    low_exclusive: bool = False
    integral: bool = False


# Every kind and every param it accepts; parse() and validate() read only this.
_KINDS: dict[str, dict[str, _Param]] = {
    "constant": {
        "level": _Param(0.5, 0.0, 1.0),
    },
    "sine": {
        "mean": _Param(0.5, 0.0, 1.0),
        "amplitude": _Param(0.3, 0.0, 1.0),
        "period_s": _Param(86400.0, 0.0, low_exclusive=True),
        "phase_s": _Param(0.0),
    },
    "walk": {
        "start": _Param(0.5, 0.0, 1.0),
        # <= 1 so one reflection always lands back in [0, 1].
        "step": _Param(0.05, 0.0, 1.0),
        "interval_s": _Param(10.0, 0.0, low_exclusive=True),
        # Integers above 2**53 do not survive a float.
        "seed": _Param(1.0, 0.0, float(2**53), integral=True),
    },
    "flash": {
        "base": _Param(0.2, 0.0, 1.0),
        "peak": _Param(0.95, 0.0, 1.0),
        "start_s": _Param(60.0),
        "duration_s": _Param(30.0, 0.0),
        "ramp_s": _Param(5.0, 0.0),
    },
    "trace": {
        "interval_s": _Param(300.0, 0.0, low_exclusive=True),
    },
}

_PATH_KEY = "path"


@dataclass(frozen=True)
class WorkloadSpec:
    kind: str
    params: tuple[tuple[str, float], ...] = ()
    path: str = ""

    def param(self, name: str, default: float) -> float:
        """The value of param `name`, or `default` when the spec leaves it out."""
        for key, value in self.params:
            if key == name:
                return float(value)
        return default

    def validate(self) -> None:
        """Raise WorkloadError unless make_demand() would accept this spec.

        For a trace this checks that the file exists; its content is checked
        when make_demand() reads it.
        """
        rules = _KINDS.get(self.kind)
        if rules is None:
            raise WorkloadError(
                f"unknown workload kind {self.kind!r} (expected one of: {', '.join(sorted(_KINDS))})"
            )
        seen: set[str] = set()
        for key, value in self.params:
            rule = rules.get(key)
            if rule is None:
                known = ", ".join(list(rules) + ([_PATH_KEY] if self.kind == "trace" else []))
                raise WorkloadError(f"{self.kind}: unknown param {key!r} (expected one of: {known})")
            if key in seen:
                raise WorkloadError(f"{self.kind}: param {key!r} given twice")
            seen.add(key)
            _check_value(self.kind, key, value, rule)
        if self.kind == "trace":
            if not self.path:
                raise WorkloadError("trace: path= is required (the trace file)")
            if not Path(self.path).is_file():
                raise WorkloadError(
                    f"trace: file not found: {self.path!r} "
                    "(path= must be the last param; it takes the rest of the text)"
                )
        elif self.path:
            raise WorkloadError(f"{self.kind}: takes no path (only trace does)")

    def to_text(self) -> str:
        items = [f"{key}={_format_number(float(value))}" for key, value in self.params]
        if self.path:
            items.append(f"{_PATH_KEY}={self.path}")
        return f"{self.kind}:{','.join(items)}" if items else self.kind

    @staticmethod
    def parse(text: str) -> WorkloadSpec:
        """Parse `kind:k=v,k=v[,path=...]`; raise WorkloadError naming the problem."""
        if not isinstance(text, str):
            raise WorkloadError(f"workload spec must be text, got {type(text).__name__}")
        kind, _, rest = text.partition(":")
        kind = kind.strip()
        if not kind:
            raise WorkloadError(f"workload spec {text!r} has no kind (e.g. 'constant:level=0.5')")
        if kind not in _KINDS:
            raise WorkloadError(
                f"unknown workload kind {kind!r} (expected one of: {', '.join(sorted(_KINDS))})"
            )
        path = ""
        path_at = _find_path_param(rest)
        if path_at is not None:
            path = rest[path_at + len(_PATH_KEY) + 1 :]
            if not path:
                raise WorkloadError(f"{kind}: path= is empty")
            rest = rest[:path_at].removesuffix(",")
        params: list[tuple[str, float]] = []
        if rest.strip():
            for item in rest.split(","):
                key, eq, raw = item.partition("=")
                key = key.strip()
                if not key or not eq:
                    raise WorkloadError(f"{kind}: expected 'name=value', got {item!r}")
                try:
                    value = float(raw.strip())
                except ValueError:
                    raise WorkloadError(f"{kind}: {key} is not a number: {raw.strip()!r}") from None
                params.append((key, value))
        spec = WorkloadSpec(kind, tuple(params), path)
        spec.validate()
        return spec


def _find_path_param(rest: str) -> int | None:
    """Index where the `path=` param starts in the param text, or None."""
    if rest.startswith(_PATH_KEY + "="):
        return 0
    at = rest.find("," + _PATH_KEY + "=")
    return None if at < 0 else at + 1


def _check_value(kind: str, key: str, value: float, rule: _Param) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkloadError(f"{kind}: {key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise WorkloadError(f"{kind}: {key} must be finite, got {value!r}")
    if rule.low_exclusive and value <= rule.low:
        raise WorkloadError(f"{kind}: {key} must be > {_format_number(rule.low)}, got {_format_number(value)}")
    if value < rule.low:
        raise WorkloadError(f"{kind}: {key} must be >= {_format_number(rule.low)}, got {_format_number(value)}")
    if value > rule.high:
        raise WorkloadError(f"{kind}: {key} must be <= {_format_number(rule.high)}, got {_format_number(value)}")
    if rule.integral and value != int(value):
        raise WorkloadError(f"{kind}: {key} must be an integer, got {value!r}")


def _format_number(value: float) -> str:
    # Whole numbers print without ".0" so texts stay as people write them;
    # everything else uses repr, which round-trips through float() exactly.
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _clamp01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


# -- demand sources -----------------------------------------------------------


@dataclass(frozen=True)
class ConstantDemand:
    level: float

    def fraction_at(self, t_s: float) -> float:
        return self.level


@dataclass(frozen=True)
class SineDemand:
    mean: float
    amplitude: float
    period_s: float
    phase_s: float

    def fraction_at(self, t_s: float) -> float:
        angle = 2.0 * math.pi * ((t_s - self.phase_s) / self.period_s)
        return _clamp01(self.mean + self.amplitude * math.sin(angle))


@dataclass(frozen=True)
class FlashDemand:
    base: float
    peak: float
    start_s: float
    duration_s: float
    ramp_s: float

    def fraction_at(self, t_s: float) -> float:
        rise_end_s = self.start_s + self.ramp_s
        fall_start_s = rise_end_s + self.duration_s
        fall_end_s = fall_start_s + self.ramp_s
        if t_s < self.start_s or t_s >= fall_end_s:
            return self.base
        if t_s < rise_end_s:
            return self.base + (self.peak - self.base) * (t_s - self.start_s) / self.ramp_s
        if t_s < fall_start_s:
            return self.peak
        return self.peak + (self.base - self.peak) * (t_s - fall_start_s) / self.ramp_s


class WalkDemand:
    """Bounded random walk; sample k is the k-th step of one Random(seed) sequence.

    Samples are generated in order and cached, so the value at t does not
    depend on which times were asked before. The cache costs 8 bytes per
    interval reached (a day at 10 s is 70 KB).
    """

    def __init__(self, start: float, step: float, interval_s: float, seed: int) -> None:
        self.step = step
        self.interval_s = interval_s
        self.seed = seed
        self._rng = Random(seed)
        self._levels = array("d", [start])

    def fraction_at(self, t_s: float) -> float:
        if t_s <= 0.0:
            return self._levels[0]
        position = t_s / self.interval_s
        k = math.floor(position)
        self._extend_to(k + 1)
        frac = position - k
        return self._levels[k] * (1.0 - frac) + self._levels[k + 1] * frac

    def _extend_to(self, k: int) -> None:
        levels, rng, step = self._levels, self._rng, self.step
        while len(levels) <= k:
            level = levels[-1] + (2.0 * rng.random() - 1.0) * step
            # Reflect rather than clamp: clamping would park the guest at
            # exactly 0 % or 100 % for long stretches.
            if level < 0.0:
                level = -level
            elif level > 1.0:
                level = 2.0 - level
            levels.append(level)


@dataclass(frozen=True)
class TraceDemand:
    samples_pct: tuple[float, ...]
    interval_s: float

    def fraction_at(self, t_s: float) -> float:
        n = len(self.samples_pct)
        position = (t_s / self.interval_s) % n
        k = math.floor(position)
        frac = position - k
        k %= n  # floating-point modulo can return exactly n
        lo, hi = self.samples_pct[k], self.samples_pct[(k + 1) % n]
        return _clamp01((lo * (1.0 - frac) + hi * frac) / 100.0)


def load_trace(path: str) -> tuple[float, ...]:
    """Read a PlanetLab-style trace: one non-negative CPU percent per line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"trace: cannot read {path!r}: {exc}") from exc
    samples: list[float] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        raw = line.strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            raise WorkloadError(f"trace: {path!r} line {line_no}: not a number: {raw!r}") from None
        if not math.isfinite(value) or value < 0.0:
            raise WorkloadError(f"trace: {path!r} line {line_no}: expected a percent >= 0, got {raw!r}")
        samples.append(value)
    if not samples:
        raise WorkloadError(f"trace: {path!r} has no samples")
    return tuple(samples)


def make_demand(spec: WorkloadSpec) -> DemandSource:
    """Build the demand source a spec describes; raise WorkloadError if it is invalid."""
    spec.validate()
    rules = _KINDS[spec.kind]

    def get(name: str) -> float:
        return spec.param(name, rules[name].default)

    if spec.kind == "constant":
        return ConstantDemand(get("level"))
    if spec.kind == "sine":
        return SineDemand(get("mean"), get("amplitude"), get("period_s"), get("phase_s"))
    if spec.kind == "walk":
        return WalkDemand(get("start"), get("step"), get("interval_s"), int(get("seed")))
    if spec.kind == "flash":
        return FlashDemand(get("base"), get("peak"), get("start_s"), get("duration_s"), get("ramp_s"))
    if spec.kind == "trace":
        return TraceDemand(load_trace(spec.path), get("interval_s"))
    raise AssertionError(f"kind {spec.kind!r} is in _KINDS but has no source")
