"""The bounded partial view: a random sample of members (Cyclon peer sampling).

Voulgaris, Gavidia, van Steen, "CYCLON: Inexpensive Membership Management for
Unstructured P2P Overlays" (2005). Each node keeps at most `size_max` neighbour
ids with an age. Periodically it ages every entry, picks the oldest as its
shuffle partner and swaps `shuffle_length` entries with it; both sides keep
what they receive in place of what they gave away. Entries move rather than
multiply, so every member stays in roughly `size_max` views (in-degree is
balanced), and the view keeps being a fresh random sample.

Departures from the paper, because SWIM runs on top:
- The partner is not removed when the shuffle is sent. Failure detection is
  SWIM's job: a dead member leaves a view only when membership declares it
  dead or left, so a killed node is still probed by those that have it.
- Entries the caller marks as pinned (suspects) are never given away or
  replaced, so the nodes probing a suspect keep probing it to a verdict.
- Free slots are refilled from the full member table by the caller.

Holds ids only; addresses and status live in the member table.
"""

from __future__ import annotations

from collections.abc import Iterable
from random import Random


class PeerView:
    def __init__(self, size_max: int, rng: Random) -> None:
        self.size_max = size_max
        self.rng = rng
        self._ages: dict[str, int] = {}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._ages

    def __len__(self) -> int:
        return len(self._ages)

    def ids(self) -> list[str]:
        return sorted(self._ages)

    def has_room(self) -> bool:
        return len(self._ages) < self.size_max

    def add(self, node_id: str) -> bool:
        """Adds with age 0 if there is room; True if it is (now) in the view."""
        if node_id in self._ages:
            return True
        if not self.has_room():
            return False
        self._ages[node_id] = 0
        return True

    def replace_random(self, node_id: str, pinned: frozenset[str] = frozenset()) -> str | None:
        """Adds `node_id`, evicting a random unpinned entry if full; returns the evicted id."""
        if self.add(node_id):
            return None
        candidates = sorted(i for i in self._ages if i not in pinned)
        if not candidates:
            return None
        evicted = self.rng.choice(candidates)
        del self._ages[evicted]
        self._ages[node_id] = 0
        return evicted

    def remove(self, node_id: str) -> bool:
        return self._ages.pop(node_id, None) is not None

    def age_all(self) -> None:
        for node_id in self._ages:
            self._ages[node_id] += 1

    def oldest(self, eligible: Iterable[str]) -> str | None:
        """The oldest eligible entry (ties broken by id, so runs are reproducible)."""
        allowed = set(eligible)
        best = sorted((-age, i) for i, age in self._ages.items() if i in allowed)
        return best[0][1] if best else None

    def touch(self, node_id: str) -> None:
        if node_id in self._ages:
            self._ages[node_id] = 0

    def sample(self, count: int, exclude: Iterable[str] = ()) -> list[str]:
        excluded = set(exclude)
        candidates = sorted(i for i in self._ages if i not in excluded)
        return self.rng.sample(candidates, min(count, len(candidates)))

    def integrate(self, received: Iterable[str], given: Iterable[str], pinned: frozenset[str]) -> list[str]:
        """Cyclon's merge: keep received ids, in free slots first, then in place of given ones.

        The caller has already dropped self and ids that are not live members.
        Returns the ids added.
        """
        replaceable = [i for i in given if i in self._ages and i not in pinned]
        added = []
        for node_id in received:
            if node_id in self._ages:
                continue
            if not self.has_room():
                if not replaceable:
                    break
                del self._ages[replaceable.pop()]
            self._ages[node_id] = 0
            added.append(node_id)
        return added
