"""An in-memory network for the simulator: messages as values, faults from one seed.

Theory of operation
-------------------
Endpoints register under an address (HOST:PORT, as on the real network) and
are reached by it; a node that restarts registers again under a new address,
so packets to its previous life find nobody, as with a real port change.
`send` never delivers at once: it asks the caller's scheduler to call
`deliver(endpoint, generation, packet)` at a virtual time after a latency,
and the receiver drops a packet addressed to a generation that is gone.

Every fault is a knob the simulator turns, and every random choice (loss,
latency, duplication, reordering) comes from the `Random` it is given:

- loss_p          a packet vanishes (silently: a datagram)
- duplicate_p     a packet arrives twice, each copy with its own latency
- reorder_p       a packet is held back up to reorder_s_max (overtaken)
- delay_s_max     extra latency, uniform in [0, delay_s_max], on every packet
- side[i]         partition: packets cross only between equal sides
- deaf / mute     asymmetric partition: a node that cannot receive / send
- slow_s[i]       a slow node: everything it receives is processed this late

A packet to an unknown address or across a partition is "unroutable": `send`
returns False so the shell can report a failed send (a gRPC deadline) the way
the real transport does; a lost packet returns True (nobody can tell).
Payloads are never copied or encoded here (they are frozen values), which is
what keeps thousands of nodes cheap; the simulator encodes a sample with the
real codec to check sizes.
"""

from __future__ import annotations

from collections import Counter
from random import Random
from typing import Any, Callable

Scheduler = Callable[..., None]  # scheduler(at_s, fn, *args)
# Latency of a healthy link: a LAN round trip is well under a millisecond each way.
LATENCY_S = (0.0002, 0.001)


class MemoryNetwork:
    def __init__(self, rng: Random, schedule: Scheduler, deliver: Callable[..., None],
                 latency_s: tuple[float, float] = LATENCY_S) -> None:
        self.rng = rng
        self.schedule = schedule
        self.deliver = deliver
        self.latency_s = latency_s
        self.endpoints: dict[str, Any] = {}  # address -> endpoint (has .index and .gen)
        self.loss_p = 0.0
        self.duplicate_p = 0.0
        self.reorder_p = 0.0
        self.reorder_s_max = 0.05
        self.delay_s_max = 0.0
        self.side: dict[int, int] = {}
        self.deaf: set[int] = set()
        self.mute: set[int] = set()
        self.slow_s: dict[int, float] = {}
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.duplicated = 0

    # -- endpoints ----------------------------------------------------------------------
    def register(self, address: str, endpoint: Any) -> None:
        self.endpoints[address] = endpoint

    def unregister(self, address: str) -> None:
        self.endpoints.pop(address, None)

    # -- faults ---------------------------------------------------------------------------
    def healthy(self) -> bool:
        return not (self.loss_p or self.duplicate_p or self.reorder_p or self.delay_s_max or self.side
                    or self.deaf or self.mute or self.slow_s)

    def heal(self) -> None:
        """Every fault off: the liveness phase starts from a clean network."""
        self.loss_p = self.duplicate_p = self.reorder_p = self.delay_s_max = 0.0
        self.side.clear()
        self.deaf.clear()
        self.mute.clear()
        self.slow_s.clear()

    def reachable(self, src_index: int, dst_index: int) -> bool:
        side = self.side
        if side and side.get(src_index, 0) != side.get(dst_index, 0):
            return False
        return src_index not in self.mute and dst_index not in self.deaf

    # -- sending ----------------------------------------------------------------------------
    def send(self, now_s: float, src_index: int, to_address: str, kind: str, packet: tuple) -> bool:
        """Schedules delivery; False when nobody can be reached at that address."""
        self.sent[kind] += 1
        dst = self.endpoints.get(to_address)
        if dst is None or not self.reachable(src_index, dst.index):
            self.dropped[kind] += 1
            return False
        rng = self.rng
        if self.loss_p and rng.random() < self.loss_p:
            self.dropped[kind] += 1
            return True
        copies = 2 if self.duplicate_p and rng.random() < self.duplicate_p else 1
        self.duplicated += copies - 1
        low, high = self.latency_s
        for _ in range(copies):
            at_s = now_s + low + (high - low) * rng.random()
            if self.delay_s_max:
                at_s += self.delay_s_max * rng.random()
            if self.reorder_p and rng.random() < self.reorder_p:
                at_s += self.reorder_s_max * rng.random()
            if self.slow_s:
                at_s += self.slow_s.get(dst.index, 0.0)
            self.schedule(at_s, self.deliver, dst, dst.gen, packet)
        return True
