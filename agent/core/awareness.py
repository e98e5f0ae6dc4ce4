"""Local health awareness (Lifeguard section IV-A; memberlist awareness.go).

A node that is itself slow (CPU-starved, its network queue full) sees its
own probes fail and blames healthy peers. Lifeguard makes it doubt itself
first: a score in [0, score_max - 1] rises when the node misses acks it should
have got (and nacks it was promised), falls with every probe that succeeds,
and multiplies the node's probe interval and probe timeout by (score + 1).
A starved node thus probes less often and waits longer, and stops raising
false suspicions while it is the one at fault.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, score_max: int) -> None:
        if score_max < 1:
            raise ValueError(f"score_max must be at least 1, got {score_max}")
        self.score_max = score_max
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Adds `delta`, clamped to [0, score_max - 1]; returns the new score."""
        self.score = min(self.score_max - 1, max(0, self.score + delta))
        return self.score

    def scale(self, value: float) -> float:
        """`value` (a timeout or interval, any unit) stretched by the current score."""
        return value * (self.score + 1)
