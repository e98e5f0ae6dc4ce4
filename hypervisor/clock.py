"""Model time from wall time: a 24 h trace can replay in minutes.

The model never reads a clock; the runtime reads the wall clock and converts
with a `ScaledClock`. With scale 288, one wall second is 288 model seconds, so
a day-long PlanetLab trace plays in 5 minutes. The mapping is affine and
anchored at (origin_wall_s, origin_model_s), so changing the scale mid-run
means a new clock anchored at the current instant, and time never jumps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScaledClock:
    origin_wall_s: float
    scale: float = 1.0  # model seconds per wall second
    origin_model_s: float = 0.0

    def __post_init__(self) -> None:
        # Checked at construction: a clock that maps time backwards or to NaN
        # would corrupt every sample taken with it.
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {self.scale!r}")
        if not math.isfinite(self.origin_wall_s):
            raise ValueError(f"origin_wall_s must be finite, got {self.origin_wall_s!r}")
        if not math.isfinite(self.origin_model_s):
            raise ValueError(f"origin_model_s must be finite, got {self.origin_model_s!r}")

    def model_time(self, wall_s: float) -> float:
        return self.origin_model_s + (wall_s - self.origin_wall_s) * self.scale

    def wall_time(self, model_s: float) -> float:
        return self.origin_wall_s + (model_s - self.origin_model_s) / self.scale
