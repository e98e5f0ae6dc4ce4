"""The suspicion timer of one member (Lifeguard section IV-B; memberlist suspicion.go).

A suspected member is declared dead when its timer runs out unless it refutes
first. The timeout starts at `max_s` and falls towards `min_s` as independent
accusers confirm the suspicion, log-scaled so the first confirmations count
most:

    timeout = max(min_s, max_s - (log(n + 1) / log(k + 1)) * (max_s - min_s))

with n confirmations so far out of k expected. One slow node alone cannot
condemn a healthy peer quickly (it must wait max_s, time enough for a
refutation), while a real failure, noticed by many, is confirmed in min_s.
This is what makes the timeout resistant to dogpiling: repeated accusations
by the same accuser do not count.

min_s itself scales with log10 of the cluster size (`suspicion_timeout_min_s`)
because a refutation needs about log N gossip rounds to reach everyone.
"""

from __future__ import annotations

import math


def suspicion_timeout_min_s(suspicion_mult: int, n: int, probe_interval_s: float) -> float:
    """memberlist's suspicionTimeout: mult x max(1, log10 N) probe intervals."""
    node_scale = max(1.0, math.log10(max(1, n)))
    return suspicion_mult * node_scale * probe_interval_s


def confirmations_expected(suspicion_mult: int, n: int) -> int:
    """memberlist: k = mult - 2 independent accusers, none in a cluster too small to have them."""
    k = suspicion_mult - 2
    return 0 if n - 2 < k else max(0, k)


def suspicion_timeout_s(confirmations: int, k: int, min_s: float, max_s: float) -> float:
    """The full timeout after `confirmations` of `k` expected confirmations."""
    if k < 1:
        return min_s
    fraction = math.log(confirmations + 1) / math.log(k + 1)
    return max(min_s, max_s - fraction * (max_s - min_s))


class Suspicion:
    """Timer for one suspected member; the first accuser does not count as a confirmation."""

    def __init__(self, accuser_id: str, k: int, min_s: float, max_s: float, started_s: float) -> None:
        self.k = k
        self.min_s = min_s
        self.max_s = max_s
        self.started_s = started_s
        self.accusers: set[str] = {accuser_id}
        self.confirmations = 0
        self.deadline_s = started_s + suspicion_timeout_s(0, k, min_s, max_s)

    def confirm(self, accuser_id: str) -> bool:
        """Records an independent accuser; True if it shortened the timeout.

        Stops listening after k confirmations, so the accuser set stays bounded.
        """
        if self.confirmations >= self.k or accuser_id in self.accusers:
            return False
        self.accusers.add(accuser_id)
        self.confirmations += 1
        self.deadline_s = self.started_s + suspicion_timeout_s(self.confirmations, self.k, self.min_s, self.max_s)
        return True

    def expired(self, now_s: float) -> bool:
        return now_s >= self.deadline_s
