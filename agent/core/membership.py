"""SWIM membership with Lifeguard, over a bounded partial view: the pure core.

Theory of operation
-------------------
`Membership` is a state machine in the sans-I/O style of swift-cluster-
membership: the runtime feeds it the time (`tick`, called often), messages
(`on_message`) and send failures (`on_send_failed`); every call returns
directives (`Send`, `MemberEvent`, `JoinFailed`) that the runtime carries
out in order. It never reads a clock or a socket, and all randomness comes
from the `Random` it is given, so a seed replays a run exactly.

Rules, with where they come from:
- Probing (SWIM section 4, "randomized round-robin"): every probe interval
  the node pings the next member of its partial view, in an order reshuffled
  each round; new view members are inserted at random positions. No ack
  within the probe timeout: `indirect_checks` view members are asked to ping
  it (PingReq). No ack by the end of the interval: the target is suspected.
- Incarnations (SWIM section 4.2; memberlist state.go): alive at incarnation
  i overrides suspect or dead only with i greater; suspect overrides alive at
  equal or higher incarnation; dead and left override both. Only a member
  raises its own incarnation, to refute a suspicion or a death about itself
  (also one forged, or left over from its previous life).
- Suspicion (Lifeguard section IV-B; suspicion.py): a suspect is declared
  dead when its timer ends; the timer shrinks as independent accusers confirm.
- Local health (Lifeguard section IV-A; awareness.py): missed acks and
  missing nacks raise the node's awareness score, which stretches its probe
  interval and timeout; successful probes and refutations move it back.
  Relays answer Nack when the target stays silent, so a node can tell "the
  target is down" (nacks arrive) from "I am the slow one" (nothing arrives).
- Buddy system (Lifeguard section IV-C): a ping to a suspect (ours or one
  relayed) carries the suspicion first, so the suspect learns of it and
  refutes at once. Any answer to a member we hold as suspect, dead or left
  carries our verdict likewise; a verdict about ourselves older than our
  incarnation makes us spread our alive again (the accuser missed it).
- Dissemination (SWIM section 4.4; broadcasts.py): every state change is
  queued and piggy-backed on pings, acks and the other messages, and pushed
  to `gossip_fanout` view members every gossip interval while the queue is
  not empty; each update is sent about retransmit_mult x log10(N) times.
- Partial view (peer_view.py): probes and gossip go only to the view, so
  per-node traffic does not grow with N. The member table holds every member
  learned of (by dissemination, joins and shuffles) and refills the view when
  a member in it dies. A suspect is never swapped out of a view, so the nodes
  probing it keep probing it until the verdict, and the verdict then spreads
  by gossip to everyone.
- Anti-entropy (memberlist push-pull): every `sync_interval_ms` a node
  swaps a bounded sample of its member table with one view member (Sync /
  SyncReply), which repairs whatever dissemination missed (a mass start, a
  lost update). A remote "dead" is taken as "suspect", so a member that is
  in fact alive gets its suspicion timeout to refute (memberlist mergeState).
- Join: a Sync with `join` to each seed address, retried with exponential
  backoff until any member answers; after `join_attempts_max` silent rounds
  a JoinFailed directive tells the runtime (retries go on). Every
  `reconnect_interval_ms` one dead member is sent a Sync carrying its death,
  so a member wrongly declared dead across a healed partition refutes and
  returns (Serf's reconnect).
- Leave: a `left` update at the current incarnation, sent to every view
  member at once and gossiped while the runtime keeps ticking. A left member
  is not a failure and no alive at the same or lower incarnation revives it.

Bad input: `on_message` raises InputRejected (validation.py) for a malformed
message; updates past `updates_per_message_max` in one message are ignored
and counted, as are stale updates and members past `members_max`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from random import Random
from typing import Mapping, Sequence, Union

from agent.core.awareness import Awareness
from agent.core.broadcasts import BroadcastQueue, retransmit_limit
from agent.core.membership_codec import (INCARNATION_MAX, SEQ_MAX, Ack, Entry, Gossip, MemberStatus, Message, Nack,
                                         Ping, PingReq, Shuffle, ShuffleReply, Sync, SyncReply, Update, check_message)
from agent.core.membership_config import MembershipConfig, detection_bound_s
from agent.core.peer_view import PeerView
from agent.core.suspicion import Suspicion, confirmations_expected, suspicion_timeout_min_s
from agent.core.validation import InputRejected, check_address, check_id

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
LIVE = frozenset({ALIVE, SUSPECT})
# memberlist: a relay nacks at 80 % of the probe timeout, so the nack is back before the prober gives up.
NACK_TIMEOUT_FRACTION = 0.8

COUNTER_NAMES = (
    "probes_sent", "acks_received", "indirect_probes_sent", "nacks", "suspicions_raised", "refutations",
    "false_suspicions", "members_dead", "members_left", "updates_ignored", "updates_stale", "entries_ignored",
    "members_rejected", "relays_rejected", "address_conflicts", "misdirected_pings", "send_failures",
    "join_attempts", "shuffles_sent", "syncs_sent",
)

__all__ = ["Membership", "Member", "MemberStatus", "Send", "MemberEvent", "JoinFailed", "Directive",
           "MembershipConfig", "detection_bound_s", "COUNTER_NAMES"]


@dataclass(frozen=True)
class Member:
    node_id: str
    address: str
    incarnation: int
    status: MemberStatus
    last_change_s: float  # local time of the last status or address change


@dataclass(frozen=True)
class Send:
    to_address: str
    message: Message


@dataclass(frozen=True)
class MemberEvent:
    """A member appeared, changed status or moved to another address."""

    member: Member
    previous: MemberStatus | None  # None: first heard of


@dataclass(frozen=True)
class JoinFailed:
    """No seed answered `attempts` join rounds; the core keeps retrying at the maximum backoff."""

    seeds: tuple[str, ...]
    attempts: int


Directive = Union[Send, MemberEvent, JoinFailed]


@dataclass
class _Probe:
    target_id: str
    seq: int
    timeout_s: float  # direct ack expected by then, else indirect probes
    deadline_s: float  # end of the probe: no ack by then, the target is suspected
    indirect_sent: bool = False
    relays: set[str] = field(default_factory=set)
    nacks_expected: int = 0
    nacked: set[str] = field(default_factory=set)


@dataclass
class _Relay:
    origin_address: str
    origin_seq: int
    target_id: str
    nack_at_s: float | None
    expires_s: float


@dataclass
class _PendingShuffle:
    peer_id: str
    given: list[str]
    expires_s: float


class Membership:
    def __init__(self, node_id: str, address: str, config: MembershipConfig, rng: Random, now_s: float,
                 incarnation: int = 0) -> None:
        _check_local("node_id", check_id, "node id", node_id)
        _check_local("address", check_address, address)
        if isinstance(incarnation, bool) or not isinstance(incarnation, int) or not 0 <= incarnation < INCARNATION_MAX:
            raise ValueError(f"incarnation must be an integer in [0, {INCARNATION_MAX}), got {incarnation!r}")
        self.node_id = node_id
        self.address = address
        self.config = config.validate()
        self.rng = rng
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.awareness = Awareness(config.awareness_max)
        self._incarnation = incarnation
        self._members: dict[str, Member] = {node_id: Member(node_id, address, incarnation, ALIVE, now_s)}
        self._live_count = 1
        self._not_live: set[str] = set()  # ids of dead and left members but me: reaped, reconnected to
        self._view = PeerView(config.view_size_max, rng)
        self._broadcasts: BroadcastQueue[Update] = BroadcastQueue(config.broadcasts_queued_max)
        self._suspicions: dict[str, Suspicion] = {}
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._relays: dict[int, _Relay] = {}
        self._shuffles: dict[int, _PendingShuffle] = {}
        self._seq = 0
        self._left = False
        self._joined = False
        self._seeds: tuple[str, ...] = ()
        self._join_attempts = 0
        self._next_join_s = now_s
        # Random phases, so nodes started together do not probe and gossip in lockstep.
        self._next_probe_s = now_s + rng.uniform(0, self._probe_interval_s)
        self._next_gossip_s = now_s + rng.uniform(0, config.gossip_interval_ms / 1000)
        self._next_shuffle_s = now_s + rng.uniform(0, config.shuffle_interval_ms / 1000)
        self._next_sync_s = now_s + rng.uniform(0, config.sync_interval_ms / 1000)
        self._next_reconnect_s = now_s + rng.uniform(0, config.reconnect_interval_ms / 1000)
        self._out: list[Directive] = []
        # Announce ourselves: the first messages we send carry our alive update.
        self._broadcasts.enqueue(node_id, self._self_update(ALIVE))

    # -- inputs -----------------------------------------------------------------------
    def join(self, now_s: float, seeds: Sequence[str]) -> list[Directive]:
        """Contacts the seeds (addresses; any live member will do). No seeds: a new cluster."""
        for seed in seeds:
            _check_local("seeds", check_address, seed)
        self._out = []
        self._seeds = tuple(dict.fromkeys(s for s in seeds if s != self.address))
        self._join_attempts = 0
        self._joined = not self._seeds
        if self._seeds and not self._left:
            self._send_joins(now_s)
        return self._flush()

    def bootstrap(self, members: Mapping[str, Member]) -> None:
        """Starts as a member of a cluster that formed long ago: `members` (id -> Member, all
        alive) are known, the view is a random sample of them, and nothing is announced but
        our own alive update. For a simulator that starts N nodes as if converged: a
        simultaneous join of N nodes is O(N^2) updates in all, which one process cannot
        afford at 10 000 nodes. Members may be shared between nodes (they are frozen); the
        agent joins instead. Returns no events: the caller knows whom it gave."""
        if any(m.status not in LIVE for m in members.values()):
            raise ValueError("bootstrap takes live members only")
        me = self._members[self.node_id]
        table = dict(members)
        table[self.node_id] = me
        self._members = table
        self._not_live = set()
        self._live_count = len(table)
        self._joined = True
        self._seeds = ()
        ids = list(table)
        want = min(self.config.view_size_max + 1, len(ids))
        for i in self.rng.sample(range(len(ids)), want):
            if ids[i] != self.node_id:
                self._view_offer(ids[i])

    def tick(self, now_s: float) -> list[Directive]:
        """Does whatever is due at `now_s`; call it often (every 50 ms or so)."""
        self._out = []
        if not self._left:
            self._tick_join(now_s)
            self._tick_relays(now_s)
            self._tick_probe(now_s)
            self._tick_suspicions(now_s)
            self._tick_shuffle(now_s)
            self._tick_sync(now_s)
            self._tick_reconnect(now_s)
        self._tick_gossip(now_s)  # a leaving node keeps spreading its departure
        return self._flush()

    def on_message(self, now_s: float, msg: Message) -> list[Directive]:
        """Handles a message from a peer. Raises InputRejected if it is malformed."""
        check_message(msg)
        if msg.sender_id == self.node_id:
            raise InputRejected("own_id", f"a message from {msg.sender_address} claims this node's id "
                                          f"{self.node_id!r}")
        self._out = []
        if self._left:
            if isinstance(msg, Ping) and msg.target_id == self.node_id:
                self._reply(msg, Ack(sender_id=self.node_id, sender_address=self.address, seq=msg.seq,
                                     updates=(self._self_update(LEFT),)))
            return self._flush()
        updates = msg.updates
        budget = self.config.updates_per_message_max
        if len(updates) > budget:
            self.counters["updates_ignored"] += len(updates) - budget
            updates = updates[:budget]
        for update in updates:
            self._apply(update, now_s)
        handler = _HANDLERS[type(msg)]
        handler(self, now_s, msg)
        if not self._joined and self._live_count > 1:
            self._joined = True
        return self._flush()

    def on_send_failed(self, now_s: float, to_address: str, msg: Message) -> list[Directive]:
        """The runtime could not deliver `msg` (connection refused, deadline, ...)."""
        self._out = []
        self.counters["send_failures"] += 1
        probe = self._probe
        if isinstance(msg, Ping):
            if probe is not None and msg.seq == probe.seq and not probe.indirect_sent:
                self._send_indirect(probe)  # no need to wait out the timeout
            elif msg.seq in self._relays:
                relay = self._relays.pop(msg.seq)
                if relay.nack_at_s is not None:
                    self._send(relay.origin_address, Nack(sender_id=self.node_id, sender_address=self.address,
                                                         seq=relay.origin_seq, updates=self._updates()))
        elif isinstance(msg, PingReq) and probe is not None and msg.seq == probe.seq:
            # An unreachable relay says nothing about our own health: expect no nack from it.
            for relay_id in list(probe.relays):
                member = self._members.get(relay_id)
                if member is not None and member.address == to_address and relay_id not in probe.nacked:
                    probe.relays.discard(relay_id)
                    probe.nacks_expected -= 1
        elif isinstance(msg, Shuffle):
            self._shuffles.pop(msg.seq, None)
        return self._flush()

    def leave(self, now_s: float) -> list[Directive]:
        """Announces a graceful departure to the whole view; keep ticking a while to spread it."""
        self._out = []
        if self._left:
            return []
        self._left = True
        self._probe = None
        self._members[self.node_id] = Member(self.node_id, self.address, self._incarnation, LEFT, now_s)
        self._live_count -= 1
        update = self._self_update(LEFT)
        self._broadcasts.enqueue(self.node_id, update)
        for node_id in self._view.ids():
            member = self._members[node_id]
            if member.status in LIVE:
                self._send(member.address, Gossip(sender_id=self.node_id, sender_address=self.address,
                                                  updates=self._updates((update,))))
        return self._flush()

    # -- queries ----------------------------------------------------------------------
    def members(self) -> list[Member]:
        """Every known member, self and tombstones included, by id."""
        return [self._members[i] for i in sorted(self._members)]

    def view(self) -> list[Member]:
        """The bounded partial view: the members probed and gossiped to (migration targets), by id."""
        return [self._members[i] for i in self._view.ids()]

    def member(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def status_of(self, node_id: str) -> MemberStatus | None:
        member = self._members.get(node_id)
        return member.status if member is not None else None

    def is_alive(self, node_id: str) -> bool:
        """True while the member is not confirmed dead or left (a suspect is still a member, as in SWIM)."""
        return self.status_of(node_id) in LIVE

    def suspicion_deadline_s(self, node_id: str) -> float | None:
        """When a suspect will be declared dead unless it refutes; None if not suspected."""
        suspicion = self._suspicions.get(node_id)
        return suspicion.deadline_s if suspicion is not None else None

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def joined(self) -> bool:
        return self._joined

    @property
    def has_left(self) -> bool:
        return self._left

    def live_count(self) -> int:
        """Members (self included) not known dead or left: the N of every log N."""
        return self._live_count

    def pending_updates(self) -> list[Update]:
        """Updates still to be piggy-backed, newest first."""
        return self._broadcasts.pending()

    def next_due_s(self) -> float:
        """The earliest time `tick` has work to do if no input arrives meanwhile.

        A shell that does not tick on a fixed period (the simulator, which
        drives thousands of cores) sleeps until then. Any other call may make
        it earlier (a message queues an update to gossip), so ask again after
        each one. Infinite when nothing is scheduled.
        """
        due = [self._next_gossip_s] if len(self._broadcasts) else []
        if not self._left:
            if not self._joined and self._seeds:
                due.append(self._next_join_s)
            probe = self._probe
            if probe is None:
                due.append(self._next_probe_s)
            else:
                due.append(probe.deadline_s if probe.indirect_sent else probe.timeout_s)
            for relay in self._relays.values():
                due.append(relay.expires_s if relay.nack_at_s is None else relay.nack_at_s)
            for suspicion in self._suspicions.values():
                due.append(suspicion.deadline_s)
            due += (self._next_shuffle_s, self._next_sync_s, self._next_reconnect_s)
        return min(due) if due else float("inf")

    # -- periodic work ----------------------------------------------------------------
    def _tick_join(self, now_s: float) -> None:
        if not self._joined and self._seeds and now_s >= self._next_join_s:
            self._send_joins(now_s)

    def _tick_relays(self, now_s: float) -> None:
        for seq, relay in list(self._relays.items()):
            if relay.nack_at_s is not None and now_s >= relay.nack_at_s:
                relay.nack_at_s = None
                self._send(relay.origin_address, Nack(sender_id=self.node_id, sender_address=self.address,
                                                     seq=relay.origin_seq, updates=self._updates()))
            if now_s >= relay.expires_s:
                del self._relays[seq]

    def _tick_probe(self, now_s: float) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now_s >= probe.timeout_s:
                self._send_indirect(probe)
            if now_s >= probe.deadline_s:
                self._probe = None
                self._probe_failed(probe, now_s)
        if self._probe is None and now_s >= self._next_probe_s:
            self._start_probe(now_s)

    def _tick_suspicions(self, now_s: float) -> None:
        for node_id, suspicion in list(self._suspicions.items()):
            if not suspicion.expired(now_s):
                continue
            del self._suspicions[node_id]
            member = self._members.get(node_id)
            if member is not None and member.status == SUSPECT:
                self._apply(Update(node_id, member.address, member.incarnation, DEAD, self.node_id), now_s)

    def _tick_gossip(self, now_s: float) -> None:
        if now_s < self._next_gossip_s:
            return
        self._next_gossip_s = now_s + self.config.gossip_interval_ms / 1000
        if not len(self._broadcasts):
            return
        targets = [i for i in self._view.ids() if self._members[i].status in LIVE]
        for node_id in self.rng.sample(targets, min(self.config.gossip_fanout, len(targets))):
            updates = self._updates()
            if not updates:
                break
            self._send(self._members[node_id].address,
                       Gossip(sender_id=self.node_id, sender_address=self.address, updates=updates))

    def _tick_shuffle(self, now_s: float) -> None:
        if now_s < self._next_shuffle_s:
            return
        self._next_shuffle_s = now_s + self.config.shuffle_interval_ms / 1000
        self._reap_tombstones(now_s)
        for seq, pending in list(self._shuffles.items()):
            if now_s >= pending.expires_s:
                del self._shuffles[seq]
        self._view.age_all()
        alive = [i for i in self._view.ids() if self._members[i].status == ALIVE]
        partner = self._view.oldest(alive)
        if partner is None:
            return
        self._view.touch(partner)
        given = self._view.sample(self.config.shuffle_length - 1, exclude=self._pinned() | {partner})
        entries = (self._self_entry(),) + tuple(self._entry(i) for i in given)
        seq = self._next_seq()
        self._shuffles[seq] = _PendingShuffle(partner, given, now_s + self.config.shuffle_interval_ms / 1000)
        self.counters["shuffles_sent"] += 1
        self._send(self._members[partner].address,
                   Shuffle(sender_id=self.node_id, sender_address=self.address, seq=seq, entries=entries,
                           updates=self._updates()))

    def _tick_sync(self, now_s: float) -> None:
        if now_s < self._next_sync_s:
            return
        self._next_sync_s = now_s + self.config.sync_interval_ms / 1000
        alive = [i for i in self._view.ids() if self._members[i].status == ALIVE]
        if alive:
            self._send_sync(self._members[self.rng.choice(alive)].address)

    def _tick_reconnect(self, now_s: float) -> None:
        if now_s < self._next_reconnect_s:
            return
        self._next_reconnect_s = now_s + self.config.reconnect_interval_ms / 1000
        dead = sorted(i for i in self._not_live if self._members[i].status == DEAD)
        if dead:
            member = self._members[self.rng.choice(dead)]
            self._send_sync(member.address, first=(self._verdict_about(member),))

    # -- probing ----------------------------------------------------------------------
    @property
    def _probe_interval_s(self) -> float:
        return self.config.probe_interval_ms / 1000

    def _start_probe(self, now_s: float) -> None:
        interval_s = self.awareness.scale(self._probe_interval_s)
        self._next_probe_s = now_s + interval_s
        target_id = self._next_probe_target()
        if target_id is None:
            return
        target = self._members[target_id]
        first = (self._verdict_about(target),) if target.status == SUSPECT else ()  # buddy system
        seq = self._next_seq()
        self._probe = _Probe(target_id, seq, now_s + self.awareness.scale(self.config.probe_timeout_ms / 1000),
                             now_s + interval_s)
        self.counters["probes_sent"] += 1
        self._send(target.address, Ping(sender_id=self.node_id, sender_address=self.address, seq=seq,
                                        updates=self._updates(first), target_id=target_id))

    def _next_probe_target(self) -> str | None:
        for _ in range(2):
            while self._probe_order:
                candidate = self._probe_order.pop()
                if candidate in self._view and self._members[candidate].status in LIVE:
                    return candidate
            self._probe_order = self._view.ids()
            self.rng.shuffle(self._probe_order)
        return None

    def _send_indirect(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target_id)
        if target is None or target.status not in LIVE:
            return
        candidates = [i for i in self._view.ids() if i != target.node_id and self._members[i].status == ALIVE]
        relays = self.rng.sample(candidates, min(self.config.indirect_checks, len(candidates)))
        probe.relays = set(relays)
        probe.nacks_expected = len(relays)
        self.counters["indirect_probes_sent"] += len(relays)
        for relay_id in relays:
            self._send(self._members[relay_id].address,
                       PingReq(sender_id=self.node_id, sender_address=self.address, seq=probe.seq,
                               updates=self._updates(), target_id=target.node_id, target_address=target.address))

    def _probe_failed(self, probe: _Probe, now_s: float) -> None:
        # Lifeguard: missing nacks from relays we trust point at ourselves; with none to ask, any failure does.
        if probe.nacks_expected > 0:
            self.awareness.apply_delta(probe.nacks_expected - len(probe.nacked))
        else:
            self.awareness.apply_delta(1)
        target = self._members.get(probe.target_id)
        if target is None or target.status not in LIVE:
            return
        self.counters["suspicions_raised"] += 1
        self._apply(Update(target.node_id, target.address, target.incarnation, SUSPECT, self.node_id), now_s)

    # -- message handlers --------------------------------------------------------------
    def _on_ping(self, now_s: float, msg: Ping) -> None:
        if msg.target_id != self.node_id:
            self.counters["misdirected_pings"] += 1  # meant for a node that was at this address before
            return
        self._reply(msg, Ack(sender_id=self.node_id, sender_address=self.address, seq=msg.seq))

    def _on_ping_req(self, now_s: float, msg: PingReq) -> None:
        if msg.target_id == self.node_id:
            self._reply(msg, Ack(sender_id=self.node_id, sender_address=self.address, seq=msg.seq))
            return
        if len(self._relays) >= self.config.relays_inflight_max:
            self.counters["relays_rejected"] += 1
            return
        seq = self._next_seq()
        nack_at_s = now_s + NACK_TIMEOUT_FRACTION * self.config.probe_timeout_ms / 1000 if msg.nack else None
        self._relays[seq] = _Relay(msg.sender_address, msg.seq, msg.target_id, nack_at_s,
                                   now_s + self._probe_interval_s)
        target = self._members.get(msg.target_id)
        first = (self._verdict_about(target),) if target is not None and target.status == SUSPECT else ()
        self._send(msg.target_address, Ping(sender_id=self.node_id, sender_address=self.address, seq=seq,
                                            updates=self._updates(first), target_id=msg.target_id))

    def _on_ack(self, now_s: float, msg: Ack) -> None:
        probe = self._probe
        if (probe is not None and msg.seq == probe.seq and now_s <= probe.deadline_s
                and (msg.sender_id == probe.target_id or msg.sender_id in probe.relays)):
            self._probe = None
            self.counters["acks_received"] += 1
            if msg.sender_id == probe.target_id and now_s <= probe.timeout_s:
                self.awareness.apply_delta(-1)
            return
        relay = self._relays.get(msg.seq)
        if relay is not None and msg.sender_id == relay.target_id:
            del self._relays[msg.seq]
            self._send(relay.origin_address, Ack(sender_id=self.node_id, sender_address=self.address,
                                                 seq=relay.origin_seq, updates=self._updates()))

    def _on_nack(self, now_s: float, msg: Nack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and msg.sender_id in probe.relays \
                and msg.sender_id not in probe.nacked:
            probe.nacked.add(msg.sender_id)
            self.counters["nacks"] += 1

    def _on_gossip(self, now_s: float, msg: Gossip) -> None:
        pass  # its updates were all it had

    def _on_shuffle(self, now_s: float, msg: Shuffle) -> None:
        given = self._view.sample(self.config.shuffle_length, exclude=self._pinned() | {msg.sender_id})
        self._reply(msg, ShuffleReply(sender_id=self.node_id, sender_address=self.address, seq=msg.seq,
                                      entries=tuple(self._entry(i) for i in given)))
        self._integrate(msg.entries, given, now_s)

    def _on_shuffle_reply(self, now_s: float, msg: ShuffleReply) -> None:
        pending = self._shuffles.get(msg.seq)
        if pending is None or pending.peer_id != msg.sender_id:
            return
        del self._shuffles[msg.seq]
        self._integrate(msg.entries, pending.given, now_s)

    def _on_sync(self, now_s: float, msg: Sync) -> None:
        self._merge_state(msg.entries, now_s)
        self._reply(msg, SyncReply(sender_id=self.node_id, sender_address=self.address, seq=msg.seq,
                                   entries=self._state_sample()))
        joiner = self._members.get(msg.sender_id)
        if msg.join and joiner is not None and joiner.status == ALIVE and msg.sender_id not in self._view:
            # Cyclon's introduction: the joiner gets an in-link at once, not only after its own shuffles.
            self._view.replace_random(msg.sender_id, self._pinned())
            self._probe_order_insert(msg.sender_id)

    def _on_sync_reply(self, now_s: float, msg: SyncReply) -> None:
        self._joined = True
        self._merge_state(msg.entries, now_s)

    def _merge_state(self, entries: tuple[Update, ...], now_s: float) -> None:
        """Applies a peer's table sample; its "dead" becomes our "suspect" (memberlist mergeState)."""
        if len(entries) > self.config.sync_entries_max:
            self.counters["entries_ignored"] += len(entries) - self.config.sync_entries_max
            entries = entries[:self.config.sync_entries_max]
        for entry in entries:
            if entry.status == DEAD:
                entry = dataclasses.replace(entry, status=SUSPECT)
            self._apply(entry, now_s)

    # -- state changes ------------------------------------------------------------------
    def _apply(self, update: Update, now_s: float) -> None:
        if update.status == ALIVE:
            self._apply_alive(update, now_s)
        elif update.status == SUSPECT:
            self._apply_suspect(update, now_s)
        else:
            self._apply_dead(update, now_s)

    def _apply_alive(self, update: Update, now_s: float) -> None:
        if update.node_id == self.node_id:
            # Our alive from elsewhere: newer than ours (our previous life) or with another address
            # (someone claims our id) must be overridden.
            if not self._left and (update.incarnation > self._incarnation or (
                    update.incarnation == self._incarnation and update.address != self.address)):
                self._refute(update.incarnation)
            return
        known = self._members.get(update.node_id)
        if known is None:
            if len(self._members) >= self.config.members_max:
                self.counters["members_rejected"] += 1
                return
            self._set(Member(update.node_id, update.address, update.incarnation, ALIVE, now_s), None)
            self._broadcasts.enqueue(update.node_id, update)
            self._view_offer(update.node_id)
            return
        if update.incarnation <= known.incarnation:
            if update.incarnation < known.incarnation:
                self.counters["updates_stale"] += 1
            elif update.address != known.address and known.status == ALIVE:
                self.counters["address_conflicts"] += 1
            return
        if known.status == SUSPECT:
            self.counters["false_suspicions"] += 1
        self._suspicions.pop(update.node_id, None)
        self._set(Member(update.node_id, update.address, update.incarnation, ALIVE, now_s), known.status)
        self._broadcasts.enqueue(update.node_id, update)
        if known.status not in LIVE:
            self._view_offer(update.node_id)

    def _apply_suspect(self, update: Update, now_s: float) -> None:
        if update.node_id == self.node_id:
            self._answer_verdict_about_self(update)
            return
        known = self._members.get(update.node_id)
        if known is None or known.status not in LIVE:
            return  # memberlist ignores suspicion of members it does not know
        if update.incarnation < known.incarnation:
            self.counters["updates_stale"] += 1
            return
        if known.status == SUSPECT and update.incarnation == known.incarnation:
            suspicion = self._suspicions.get(update.node_id)
            if suspicion is not None and suspicion.confirm(update.source_id):
                self._broadcasts.enqueue(update.node_id, update)  # spread the confirmation
            return
        n = self._live_count
        min_s = suspicion_timeout_min_s(self.config.suspicion_mult, n, self._probe_interval_s)
        self._suspicions[update.node_id] = Suspicion(
            update.source_id, confirmations_expected(self.config.suspicion_mult, n), min_s,
            self.config.suspicion_max_timeout_mult * min_s, now_s)
        self._set(Member(known.node_id, known.address, update.incarnation, SUSPECT, now_s), known.status)
        self._broadcasts.enqueue(update.node_id, update)

    def _apply_dead(self, update: Update, now_s: float) -> None:
        if update.node_id == self.node_id:
            self._answer_verdict_about_self(update)
            return
        known = self._members.get(update.node_id)
        if known is None or known.status not in LIVE:
            return
        if update.incarnation < known.incarnation:
            self.counters["updates_stale"] += 1
            return
        self._suspicions.pop(update.node_id, None)
        self._set(Member(known.node_id, known.address, update.incarnation, update.status, now_s), known.status)
        self._broadcasts.enqueue(update.node_id, update)
        self.counters["members_dead" if update.status == DEAD else "members_left"] += 1
        self._view_drop(update.node_id)

    def _answer_verdict_about_self(self, update: Update) -> None:
        if self._left:
            return
        if update.incarnation >= self._incarnation:
            self._refute(update.incarnation)
        else:
            # Already refuted, but this sender has not heard: spread our alive again (no new incarnation),
            # so an accuser whose copy of the refutation died out learns it before its timer ends.
            self._broadcasts.enqueue(self.node_id, self._self_update(ALIVE))

    def _refute(self, incarnation_seen: int) -> None:
        self._incarnation = min(INCARNATION_MAX, max(self._incarnation, incarnation_seen) + 1)
        me = self._members[self.node_id]
        self._members[self.node_id] = Member(self.node_id, self.address, self._incarnation, ALIVE, me.last_change_s)
        self._broadcasts.enqueue(self.node_id, self._self_update(ALIVE))
        self.counters["refutations"] += 1
        self.awareness.apply_delta(1)  # Lifeguard: being suspected hints that we are the slow one

    def _set(self, member: Member, previous: MemberStatus | None) -> None:
        old = self._members.get(member.node_id)
        self._members[member.node_id] = member
        self._live_count += (member.status in LIVE) - (previous in LIVE)
        if member.status in LIVE:
            self._not_live.discard(member.node_id)
        elif member.node_id != self.node_id:
            self._not_live.add(member.node_id)
        if old is None or old.status != member.status or old.address != member.address:
            self._out.append(MemberEvent(member, previous))
        else:
            self._members[member.node_id] = Member(member.node_id, member.address, member.incarnation,
                                                   member.status, old.last_change_s)

    def _reap_tombstones(self, now_s: float) -> None:
        retention_s = self.config.tombstone_retention_ms / 1000
        for node_id in sorted(i for i in self._not_live if now_s - self._members[i].last_change_s >= retention_s):
            del self._members[node_id]
            self._not_live.discard(node_id)

    # -- partial view ---------------------------------------------------------------------
    def _pinned(self) -> frozenset[str]:
        return frozenset(self._suspicions)

    def _view_offer(self, node_id: str) -> None:
        if node_id not in self._view and self._view.add(node_id):
            self._probe_order_insert(node_id)

    def _view_drop(self, node_id: str) -> None:
        if not self._view.remove(node_id):
            return
        spares = sorted(i for i, m in self._members.items()
                        if m.status == ALIVE and i != self.node_id and i not in self._view)
        for spare in self.rng.sample(spares, min(self._view.size_max - len(self._view), len(spares))):
            self._view_offer(spare)

    def _probe_order_insert(self, node_id: str) -> None:
        if node_id not in self._probe_order:
            self._probe_order.insert(self.rng.randint(0, len(self._probe_order)), node_id)

    def _integrate(self, entries: tuple[Entry, ...], given: list[str], now_s: float) -> None:
        """Cyclon's merge of shuffled view entries; an unknown member in them is an introduction."""
        if len(entries) > self.config.shuffle_length:
            self.counters["entries_ignored"] += len(entries) - self.config.shuffle_length
            entries = entries[:self.config.shuffle_length]
        received = []
        for entry in entries:
            if entry.node_id == self.node_id:
                continue
            member = self._members.get(entry.node_id)
            if member is None:
                if len(self._members) >= self.config.members_max:
                    self.counters["members_rejected"] += 1
                    continue
                # An introduction, not news: no broadcast (its own alive update spread when it joined).
                member = Member(entry.node_id, entry.address, entry.incarnation, ALIVE, now_s)
                self._set(member, None)
            if member.status == ALIVE:
                received.append(entry.node_id)
        for node_id in self._view.integrate(received, given, self._pinned()):
            self._probe_order_insert(node_id)

    # -- message building -----------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < SEQ_MAX else 1
        return self._seq

    def _send(self, address: str, msg: Message) -> None:
        self._out.append(Send(address, msg))

    def _reply(self, to: Message, msg: Message) -> None:
        """Answers `to`, our verdict on its sender first if we hold it as not alive (buddy system)."""
        sender = self._members.get(to.sender_id)
        first = (self._verdict_about(sender),) if sender is not None and sender.status != ALIVE else ()
        self._send(to.sender_address, _with_updates(msg, self._updates(first)))

    def _updates(self, first: tuple[Update, ...] = ()) -> tuple[Update, ...]:
        limit = retransmit_limit(self.config.retransmit_mult, self._live_count)
        room = self.config.updates_per_message_max - len(first)
        taken = self._broadcasts.take(room, limit, frozenset(u.node_id for u in first))
        return first + tuple(taken)

    def _verdict_about(self, member: Member) -> Update:
        return Update(member.node_id, member.address, member.incarnation, member.status, self.node_id)

    def _self_update(self, status: MemberStatus) -> Update:
        return Update(self.node_id, self.address, self._incarnation, status, self.node_id)

    def _self_entry(self) -> Entry:
        return Entry(self.node_id, self.address, self._incarnation)

    def _entry(self, node_id: str) -> Entry:
        member = self._members[node_id]
        return Entry(member.node_id, member.address, member.incarnation)

    def _state_sample(self) -> tuple[Update, ...]:
        """Ourselves, then a random sample of the table (tombstones too), as state for a sync."""
        # O(sample), not O(N log N): the table's own order (insertion, so a seed replays) and
        # sampled positions; at 10 000 members a sorted copy per sync cost more than the sync.
        ids = list(self._members)
        k = min(self.config.sync_entries_max, len(ids))
        sample = (ids[p] for p in self.rng.sample(range(len(ids)), k))
        return (self._self_update(self._members[self.node_id].status),) + tuple(
            self._verdict_about(self._members[i]) for i in sample if i != self.node_id)[:k - 1]

    def _send_sync(self, address: str, first: tuple[Update, ...] = (), join: bool = False) -> None:
        self.counters["syncs_sent"] += 1
        self._send(address, Sync(sender_id=self.node_id, sender_address=self.address, seq=self._next_seq(),
                                 updates=self._updates(first), entries=self._state_sample(), join=join))

    def _send_joins(self, now_s: float) -> None:
        self._join_attempts += 1
        self.counters["join_attempts"] += 1
        seeds = self._seeds
        if len(seeds) > self.config.join_seeds_max:
            seeds = tuple(self.rng.sample(seeds, self.config.join_seeds_max))
        for seed in seeds:
            self._send_sync(seed, join=True)
        if self._join_attempts == self.config.join_attempts_max:
            self._out.append(JoinFailed(self._seeds, self._join_attempts))
        backoff_ms = min(self.config.join_backoff_ms_max, self.config.join_backoff_ms * 2 ** (self._join_attempts - 1))
        # Up to 25 % jitter, so nodes restarted together do not retry in lockstep.
        self._next_join_s = now_s + backoff_ms / 1000 * self.rng.uniform(1.0, 1.25)

    def _flush(self) -> list[Directive]:
        out, self._out = self._out, []
        return out


def _with_updates(msg: Message, updates: tuple[Update, ...]) -> Message:
    return dataclasses.replace(msg, updates=updates)


def _check_local(what: str, check, *args) -> None:
    """Validation of the caller's own arguments: a misuse is a ValueError, not a peer's fault."""
    try:
        check(*args)
    except InputRejected as exc:
        raise ValueError(f"{what}: {exc.detail}") from None


_HANDLERS = {
    Ping: Membership._on_ping, PingReq: Membership._on_ping_req, Ack: Membership._on_ack, Nack: Membership._on_nack,
    Gossip: Membership._on_gossip, Shuffle: Membership._on_shuffle, ShuffleReply: Membership._on_shuffle_reply,
    Sync: Membership._on_sync, SyncReply: Membership._on_sync_reply,
}
