"""Per-agent counters, exposed through `status` (and later Prometheus)."""

from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def inc(self, name: str, by: int = 1, **labels: str) -> None:
        key = name if not labels else name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
        self.counters[key] += by

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counters.items()))
