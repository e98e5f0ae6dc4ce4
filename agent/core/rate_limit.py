"""Per-peer token buckets: how many calls one peer may make, and how fast.

Theory of operation. Each peer (keyed by its certificate identity, never by
an address it could change) owns a bucket of `burst` tokens that refills at
`rate_per_s`. A call takes one token; a call that finds the bucket empty is
refused, and the caller learns how long until a token is back. A burst
absorbs the bunching of honest traffic (a node that just joined, a launcher
creating many domains); the rate caps what a flooding peer can make the
agent do. The table of buckets is bounded: past `peers_max` the peer heard
from least recently is dropped (a dropped peer starts again with a full
bucket, the mildest possible error).

Pure: time is the `now_s` the caller passes in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

PEERS_MAX_DEFAULT = 4_096


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated_s: float

    def refill(self, now_s: float) -> None:
        elapsed_s = max(0.0, now_s - self.updated_s)  # a clock that steps back never adds tokens
        self.tokens = min(self.burst, self.tokens + elapsed_s * self.rate_per_s)
        self.updated_s = max(self.updated_s, now_s)

    def maybe_take(self, now_s: float, cost: float = 1.0) -> bool:
        self.refill(now_s)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait_s(self, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are back (after a refill)."""
        return max(0.0, (cost - self.tokens) / self.rate_per_s)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0


class RateLimiter:
    """Token buckets keyed by peer, bounded in number."""

    def __init__(self, rate_per_s: float, burst: float, peers_max: int = PEERS_MAX_DEFAULT) -> None:
        if not rate_per_s > 0 or not burst >= 1 or peers_max < 1:
            raise ValueError(f"rate_per_s > 0, burst >= 1 and peers_max >= 1 needed "
                             f"(got {rate_per_s}, {burst}, {peers_max})")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.peers_max = peers_max
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def on_call(self, peer: str, now_s: float) -> Verdict:
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst, self.burst, now_s)
            self._buckets[peer] = bucket
            while len(self._buckets) > self.peers_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(peer)
        if bucket.maybe_take(now_s):
            return Verdict(True)
        return Verdict(False, bucket.wait_s())
