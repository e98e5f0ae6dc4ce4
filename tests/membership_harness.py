"""A tiny deterministic in-memory network for the membership core.

Many `Membership` objects, one virtual clock, one message queue. Every random
choice (delays, losses, the cores' own randomness) derives from one seed, so a
failing run is replayed exactly with the seed it prints.

    net = Net(MembershipConfig.profile("local"), seed=7)
    net.start(16)                       # n01..n16, all joining through n01
    net.run_until(net.converged, 30)    # virtual seconds
    net.kill("n05")
    net.run_until(lambda: net.all_see("n05", DEAD), 20)

Time advances in steps of `tick_s`. Within a step, messages are delivered in
delivery-time order, each at its own delivery time (answers produced on the
way are queued and may be delivered in the same step); then every running
node is ticked at the step's end. A node's clock never goes backwards.

Faults: `loss` (probability a message is dropped), `delay_s` (uniform range),
`extra_delay_s[node_id]` (added to every message *to* that node: a starved
node whose acks arrive late), `kill` / `restart`, `partition` / `heal`.
`wire=True` sends every message through the msgpack codec.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from random import Random
from typing import Callable

from agent.core.membership import JoinFailed, Member, MemberEvent, Membership, MemberStatus, Send
from agent.core.membership_codec import Message, decode, encode
from agent.core.membership_config import MembershipConfig

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT


def node_id(i: int) -> str:
    return f"n{i:02d}"


def address_of(i: int, generation: int = 0) -> str:
    return f"10.0.{generation}.{i}:7946"


@dataclass(frozen=True)
class Observed:
    time_s: float
    observer_id: str
    event: MemberEvent


class Net:
    def __init__(self, config: MembershipConfig, seed: int, *, tick_s: float = 0.05,
                 delay_s: tuple[float, float] = (0.001, 0.005), loss: float = 0.0, wire: bool = False,
                 refuse_dead: bool = False) -> None:
        self.config = config
        self.seed = seed
        self.rng = Random(seed)
        self.tick_s = tick_s
        self.delay_s = delay_s
        self.loss = loss
        self.wire = wire
        self.refuse_dead = refuse_dead  # a send to a dead address fails at once (a TCP-like transport)
        self.now_s = 0.0
        self.nodes: dict[str, Membership] = {}  # running nodes
        self.configs: dict[str, MembershipConfig] = {}
        self.at_address: dict[str, str] = {}  # address -> id of the node running there
        self.extra_delay_s: dict[str, float] = {}
        self.cut: set[frozenset[str]] = set()  # pairs of ids that cannot talk
        self.drop: Callable[[str, str, Message], bool] | None = None  # (from id, to id, msg) -> lose it
        self._queue: list[tuple[float, int, str, str, object]] = []
        self._order = 0
        self.observed: list[Observed] = []
        self.join_failures: list[tuple[str, JoinFailed]] = []
        self.sent: Counter[str] = Counter()
        self.sent_by_kind: Counter[str] = Counter()
        self.rejected: list[tuple[str, Exception]] = []
        self._at_s = 0.0  # time of the core call being handled: stamps its events and sends

    # -- cluster control --------------------------------------------------------------
    def add(self, nid: str, address: str, seeds: list[str], incarnation: int = 0,
            config: MembershipConfig | None = None) -> Membership:
        config = config or self.config
        self._at_s = self.now_s
        node = Membership(nid, address, config, Random(self.rng.getrandbits(64)), self.now_s, incarnation)
        self.nodes[nid] = node
        self.configs[nid] = config
        self.at_address[address] = nid
        self._dispatch(nid, node.join(self.now_s, seeds))
        return node

    def start(self, n: int, seeds: int = 1, stagger_s: float = 0.0) -> None:
        """Nodes n01..n{n}; each joins through the first `seeds` nodes (n01 starts the cluster)."""
        seed_addresses = [address_of(i) for i in range(1, seeds + 1)]
        for i in range(1, n + 1):
            self.add(node_id(i), address_of(i), [a for a in seed_addresses if a != address_of(i)] if i > 1 else [])
            if stagger_s:
                self.run_for(stagger_s)

    def kill(self, nid: str) -> None:
        node = self.nodes.pop(nid)
        del self.at_address[node.address]

    def restart(self, nid: str, address: str, incarnation: int, seeds: list[str]) -> Membership:
        if nid in self.nodes:
            self.kill(nid)
        return self.add(nid, address, seeds, incarnation, self.configs.get(nid))

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        self.cut |= {frozenset((a, b)) for a in side_a for b in side_b}

    def heal(self) -> None:
        self.cut.clear()

    # -- time -------------------------------------------------------------------------
    def step(self) -> None:
        end_s = self.now_s + self.tick_s
        while self._queue and self._queue[0][0] <= end_s:
            at_s, _, from_id, to_address, payload = heapq.heappop(self._queue)
            self._deliver(at_s, from_id, to_address, payload)
        self.now_s = self._at_s = end_s
        for nid in sorted(self.nodes):
            self._dispatch(nid, self.nodes[nid].tick(end_s))

    def run_for(self, seconds: float) -> None:
        end_s = self.now_s + seconds
        while self.now_s < end_s - 1e-9:
            self.step()

    def run_until(self, condition: Callable[[], bool], timeout_s: float, what: str = "condition") -> float:
        """Runs until `condition()`; returns the virtual seconds it took. Fails after `timeout_s`."""
        start_s = self.now_s
        while not condition():
            if self.now_s - start_s > timeout_s:
                raise AssertionError(f"{what} not reached in {timeout_s} virtual s (reproduce with seed={self.seed})")
            self.step()
        return self.now_s - start_s

    def inject(self, to_id: str, msg: Message) -> list:
        """Hands `msg` to a node now, as if it had just arrived (forged or hand-made input)."""
        self._at_s = self.now_s
        out = self.nodes[to_id].on_message(self.now_s, msg)
        self._dispatch(to_id, out)
        return out

    # -- observations -----------------------------------------------------------------
    def converged(self) -> bool:
        """Every running node knows every running node as alive."""
        ids = set(self.nodes)
        return all({m.node_id for m in node.members() if m.status == ALIVE} >= ids for node in self.nodes.values())

    def all_see(self, target: str, status: MemberStatus, observers: list[str] | None = None) -> bool:
        return all(self.nodes[o].status_of(target) == status for o in (observers or self.nodes) if o != target)

    def first_seen(self, target: str, status: MemberStatus, since_s: float = 0.0) -> dict[str, float]:
        """observer -> first time (>= since_s) it saw `target` enter `status`."""
        seen: dict[str, float] = {}
        for o in self.observed:
            if o.time_s >= since_s and o.event.member.node_id == target and o.event.member.status == status:
                seen.setdefault(o.observer_id, o.time_s)
        return seen

    def verdicts(self, status: MemberStatus, since_s: float = 0.0) -> list[Observed]:
        return [o for o in self.observed if o.time_s >= since_s and o.event.member.status == status]

    def member(self, observer: str, target: str) -> Member | None:
        return self.nodes[observer].member(target)

    # -- internals --------------------------------------------------------------------
    def _dispatch(self, from_id: str, directives: list) -> None:
        for d in directives:
            if isinstance(d, Send):
                self.sent[from_id] += 1
                self.sent_by_kind[type(d.message).__name__] += 1
                self._enqueue(from_id, d.to_address, d.message)
            elif isinstance(d, MemberEvent):
                self.observed.append(Observed(self._at_s, from_id, d))
            elif isinstance(d, JoinFailed):
                self.join_failures.append((from_id, d))

    def _enqueue(self, from_id: str, to_address: str, msg: Message) -> None:
        to_id = self.at_address.get(to_address)
        if to_id is None or frozenset((from_id, to_id)) in self.cut:
            if self.refuse_dead and to_id is None and from_id in self.nodes:
                self._dispatch(from_id, self.nodes[from_id].on_send_failed(self._at_s, to_address, msg))
            return
        if (self.loss and self.rng.random() < self.loss) or (self.drop is not None and self.drop(from_id, to_id, msg)):
            return
        payload: object = encode(msg, self.configs[from_id].message_bytes_max) if self.wire else msg
        delay_s = self.rng.uniform(*self.delay_s) + self.extra_delay_s.get(to_id, 0.0)
        self._order += 1
        heapq.heappush(self._queue, (self._at_s + delay_s, self._order, from_id, to_address, payload))

    def _deliver(self, at_s: float, from_id: str, to_address: str, payload: object) -> None:
        to_id = self.at_address.get(to_address)
        if to_id is None:
            return
        msg: Message = decode(payload, self.configs[to_id].message_bytes_max) if self.wire else payload
        self._at_s = at_s
        try:
            out = self.nodes[to_id].on_message(at_s, msg)
        except ValueError as exc:  # InputRejected: record, as a runtime would log and count it
            self.rejected.append((to_id, exc))
            out = []
        self._dispatch(to_id, out)

