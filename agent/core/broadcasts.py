"""Updates waiting to be piggy-backed (memberlist queue.go, TransmitLimitedQueue).

Each queued update is sent a limited number of times, retransmit_mult x
ceil(log10(N + 1)), enough for an epidemic to reach every member with high
probability (SWIM section 4.4), and then dropped. Rules:

- Fewest transmissions first, newest first among equals: a fresh update
  overtakes one that has already been spread.
- One update per key (node id): a newer update about a node replaces the
  queued one, whose news it supersedes, and starts again at zero sends.
- Bounded: beyond `queued_max` the most-sent (then oldest) updates are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """memberlist's retransmitLimit: mult x ceil(log10(N + 1))."""
    return retransmit_mult * max(1, math.ceil(math.log10(n + 1)))


@dataclass
class _Queued(Generic[T]):
    item: T
    transmits: int
    order: int  # larger is newer


class BroadcastQueue(Generic[T]):
    def __init__(self, queued_max: int) -> None:
        self.queued_max = queued_max
        self._items: dict[str, _Queued[T]] = {}
        self._order = 0
        self.dropped = 0  # updates pushed out by the bound before their last send

    def __len__(self) -> int:
        return len(self._items)

    def enqueue(self, key: str, item: T) -> None:
        self._order += 1
        self._items[key] = _Queued(item, 0, self._order)
        if len(self._items) > self.queued_max:
            worst = max(self._items, key=lambda k: (self._items[k].transmits, -self._items[k].order))
            del self._items[worst]
            self.dropped += 1

    def take(self, count_max: int, transmit_limit: int, skip_keys: frozenset[str] = frozenset()) -> list[T]:
        """Up to `count_max` items for one message, counting one send of each."""
        if count_max <= 0 or not self._items:
            return []
        ranked = sorted((q.transmits, -q.order, key) for key, q in self._items.items() if key not in skip_keys)
        taken = []
        for _, _, key in ranked[:count_max]:
            queued = self._items[key]
            queued.transmits += 1
            taken.append(queued.item)
            if queued.transmits >= transmit_limit:
                del self._items[key]
        return taken

    def pending(self) -> list[T]:
        """Queued items, newest first (for tests and introspection)."""
        return [q.item for q in sorted(self._items.values(), key=lambda q: -q.order)]
