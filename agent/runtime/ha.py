"""High availability in the agent: the asyncio shell around agent/core/replicas.py.

Every `ha_push_interval_ms` (and at once when membership declares a member
dead) the shell:
- asks the owner core what each buddy should hold and pushes it (Replicate);
  the answers may name copies that outrank ours: one the buddy runs itself is
  fenced at once, one it only heard of is first confirmed with its holder
  (Locate), so a copy is destroyed only when a winning copy is known to run;
- asks the buddy core which domains of confirmed-dead owners this node may
  coordinate; asks the live members ranked ahead of it whether one of them
  holds the replica (Holds: then it is theirs); and restarts the rest: here
  if they fit, else on a peer with room (Adopt), else they are `unplaced`
  (reported once, listed in status) and decided again next round.

Before a restart it asks the reachable live members whether one already runs
the domain at the record's epoch or later (it migrated just before its owner
died): then the record is stale and dropped. It asks the dead owner too: one
that answers is not dead (a wrong verdict), so nothing restarts. Unreachable
members are not waited for beyond one RPC deadline: that is the partition
case, which fencing settles when it heals.
A restart is journaled (`restarted`) before the domain runs; a fenced copy is
journaled (`fenced`) before it is destroyed, so neither comes back wrong
after a crash. Both are logged, counted and published as telemetry events.

Checkpoints (`ha_checkpoints`, every `ha_checkpoint_interval_ms`): the owner
snapshots each running domain (a `shoal domain save` document: spec, epoch,
memory image and its hash) and streams it to the domain's buddies
(PutCheckpoint); a buddy keeps the latest one per domain it holds a replica
record of, from that record's owner and at its epoch, verified on arrival.
Once a buddy has it, the replica record names it (epoch, model time, hash,
size). A restart here from a record whose checkpoint this node holds runs
the domain on the checkpoint's memory: only what was written since is lost.
Checkpoints live in memory (a buddy that restarts gets the next one).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc

from agent.core import encapsulation
from agent.core.membership import MemberEvent, MemberStatus
from agent.core.ownership import spec_to_record
from agent.core.validation import InputRejected
from agent.core.replicas import (Checkpoint, Copy, FenceLocal, OwnedDomain, OwnerReplication, PeerRoom, ReplicaPush,
                                 ReplicaTable, Replica, ReplicateOutcome, Restart, Room, Unplaced, newer_copy_known)
from hypervisor.domain import DomainState

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

log = logging.getLogger("shoal.ha")

LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
# Checkpoints forwarded for an Adopt held at once (each is dropped when its Adopt comes or after a lease).
FORWARDED_MAX = 8


class HighAvailability:
    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        cfg = agent.config
        self.owner = OwnerReplication(agent.node_id, cfg.ha_replicas, cfg.ha_refresh_ms / 1000)
        # A buddy holds at most as many replicas as it may hold domains, times the replica factor.
        self.table = ReplicaTable(agent.node_id, entries_max=cfg.domains_max * cfg.ha_replicas)
        # Confirmed dead by membership -> local time of the verdict (kept after the tombstone is reaped).
        self.dead_since: dict[str, float] = {}
        self.restarts = 0
        self.fenced = 0
        self._wake = asyncio.Event()
        self._busy: set[str] = set()  # domains with a restart or a verification in flight
        # Checkpoints. Buddy side: domain -> the latest one received (owner, epoch, metadata, document).
        self.checkpoints: dict[str, tuple[str, Checkpoint, encapsulation.SavedDomain]] = {}
        # Owner side: domain -> the latest checkpoint at least one buddy stored; when the last round began.
        self.checkpointed: dict[str, Checkpoint] = {}
        self._checkpoint_round_s: float | None = None
        self._checkpoints_in_flight: set[str] = set()
        # Adopter side: (domain, coordinator) -> a dead owner's checkpoint forwarded for the Adopt that follows.
        self.forwarded: dict[tuple[str, str], tuple[str, Checkpoint, encapsulation.SavedDomain, float]] = {}

    # -- membership -----------------------------------------------------------------
    def on_member_event(self, ev: MemberEvent) -> None:
        m = ev.member
        if m.status is MemberStatus.DEAD:
            self.dead_since.setdefault(m.node_id, self.agent.now_s())
            self._wake.set()
        elif m.status in LIVE or m.status is MemberStatus.LEFT:
            self.dead_since.pop(m.node_id, None)
            if m.status is MemberStatus.ALIVE:
                self._wake.set()  # a new or returning member: buddies may change, copies may meet

    def _live_ids(self) -> set[str]:
        assert self.agent.membership is not None
        return {m.node_id for m in self.agent.membership.members() if m.status in LIVE}

    def _address(self, node_id: str) -> str | None:
        assert self.agent.membership is not None
        m = self.agent.membership.member(node_id)
        return m.address if m is not None and m.status in LIVE else None

    # -- the loop ---------------------------------------------------------------------
    async def run(self) -> None:
        interval_s = self.agent.config.ha_push_interval_ms / 1000
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a bug here must not end failover for good
                self.agent.metrics.inc("ha_tick_errors")
                log.exception("%s: high-availability round failed", self.agent.node_id)

    def running(self) -> dict[str, int]:
        """My active copies: domain id -> epoch (a copy paused mid-handoff still counts)."""
        return {d.domain_id: d.epoch for d in self.agent.host.domains.values()}

    def tick(self) -> None:
        agent = self.agent
        if agent.membership is None or not agent.membership.joined:
            return
        now = agent.now_s()
        live = self._live_ids()
        # Paused (mid-handoff, or in doubt after a crash) is still ours: its record must stay.
        owned = [OwnedDomain(d.spec, d.epoch, self._checkpoint_of(d.domain_id, d.epoch))
                 for d in agent.host.domains.values()]
        for push in self.owner.tick(now, owned, live):
            agent.spawn(self._push(push))
        if agent.config.ha_checkpoints:
            self._checkpoint_round(now, owned, live)
        self._forget_checkpoints()
        known = {m.node_id for m in agent.membership.members()}
        decisions = self.table.failover(self.dead_since, self._room(), self._peer_rooms(live), live_ids=live,
                                        known_ids=known)
        for dec in decisions:
            if isinstance(dec, Unplaced) and not dec.ahead:
                self._report_unplaced(dec)
            else:
                self._busy.add(dec.domain_id)
                agent.spawn(self._act(dec))

    # -- checkpoints -------------------------------------------------------------------
    def _checkpoint_of(self, domain_id: str, epoch: int) -> Checkpoint | None:
        cp = self.checkpointed.get(domain_id)
        return cp if cp is not None and cp.epoch == epoch else None

    def _checkpoint_round(self, now: float, owned: list[OwnedDomain], live: set[str]) -> None:
        """Every ha_checkpoint_interval_ms: a checkpoint of each running domain to its buddies."""
        agent = self.agent
        interval_s = agent.config.ha_checkpoint_interval_ms / 1000
        if self._checkpoint_round_s is not None and now - self._checkpoint_round_s < interval_s:
            return
        self._checkpoint_round_s = now
        placement = self.owner.placement(owned, live)
        for d in owned:
            domain = agent.host.domains[d.domain_id]
            buddies = placement.get(d.domain_id, ())
            if domain.state is not DomainState.RUNNING or not buddies or d.domain_id in self._checkpoints_in_flight:
                continue  # mid-handoff, none to send to, or the last one still on its way
            document = encapsulation.encode(domain.spec, domain.epoch, domain.state.value, agent.images[d.domain_id])
            cp = Checkpoint(d.epoch, agent.model_time_s(), agent.images[d.domain_id].content_hash(), len(document))
            agent.metrics.inc("ha_checkpoints_taken")
            self._checkpoints_in_flight.add(d.domain_id)
            agent.spawn(self._send_checkpoint(d.domain_id, cp, document, buddies))

    async def _send_checkpoint(self, domain_id: str, cp: Checkpoint, document: bytes,
                               buddies: tuple[str, ...]) -> None:
        agent = self.agent
        try:
            stored = 0
            for buddy in buddies:
                address = self._address(buddy)
                if address is None:
                    continue
                try:
                    ok, reason = await agent.clients.put_checkpoint(address, agent.node_id, domain_id, cp.epoch,
                                                                    cp.taken_model_s, document)
                except grpc.aio.AioRpcError as exc:
                    ok, reason = False, f"{exc.code().name} {exc.details()}"
                agent.metrics.inc("messages_sent", type="checkpoint")
                agent.metrics.inc("bytes_sent", len(document), type="checkpoint")
                if ok:
                    stored += 1
                else:
                    agent.metrics.inc("ha_checkpoints_refused")
                    log.info("%s: %s did not store the checkpoint of %s: %s", agent.node_id, buddy, domain_id,
                             reason)
            domain = agent.host.domains.get(domain_id)
            if stored and domain is not None and domain.epoch == cp.epoch:
                self.checkpointed[domain_id] = cp
                self._wake.set()  # the records name it at the next push
        finally:
            self._checkpoints_in_flight.discard(domain_id)

    def on_put_checkpoint(self, sender_id: str, domain_id: str, epoch: int, taken_model_s: float,
                          document: bytes, dead_owner_id: str = "") -> str:
        """A checkpoint from its owner (`sender_id`), or forwarded by a coordinator for the Adopt
        it sends next (`dead_owner_id`: whose domain it is); "" when stored, else why not."""
        agent = self.agent
        rep = None
        if not dead_owner_id:
            rep = self.table.replicas.get(domain_id)
            if rep is None or rep.owner_id != sender_id or rep.epoch != epoch:
                agent.metrics.inc("ha_checkpoints_refused")
                return (f"holds no replica record of {domain_id} from {sender_id} at epoch {epoch}"
                        + (f" (holds one from {rep.owner_id} at epoch {rep.epoch})" if rep is not None else ""))
        try:
            saved = encapsulation.decode(document, agent.config.image_real_bytes_max)
        except InputRejected as exc:
            agent.metrics.inc("rejected_inputs", reason=exc.reason)
            log.warning("%s: refused a checkpoint of %s from %s: %s", agent.node_id, domain_id, sender_id, exc)
            return str(exc)
        if saved.spec.domain_id != domain_id or saved.epoch != epoch or (rep is not None and saved.spec != rep.spec):
            agent.metrics.inc("rejected_inputs", reason="bad_checkpoint")
            log.warning("%s: refused a checkpoint of %s from %s: not the replica's spec and epoch", agent.node_id,
                        domain_id, sender_id)
            return f"the checkpoint holds {saved.spec.domain_id} at epoch {saved.epoch}, not the replica's"
        cp = Checkpoint(epoch, taken_model_s, saved.image.content_hash(), len(document))
        if dead_owner_id:
            # Checked against the Adopt's record when it comes; a few at most, briefly.
            while len(self.forwarded) >= FORWARDED_MAX:
                del self.forwarded[next(iter(self.forwarded))]
            self.forwarded[(domain_id, sender_id)] = (dead_owner_id, cp, saved, agent.now_s())
            agent.metrics.inc("ha_checkpoints_stored")
            return ""
        held = self.checkpoints.get(domain_id)
        if held is not None and held[1].epoch == epoch and held[1].taken_model_s > taken_model_s:
            return f"holds a later checkpoint of {domain_id}"
        self.checkpoints[domain_id] = (sender_id, cp, saved)
        agent.metrics.inc("ha_checkpoints_stored")
        return ""

    def _forget_checkpoints(self) -> None:
        """Keeps what still matches: buddy side, a replica record I hold; owner side, a domain I run."""
        for dom, (owner_id, cp, _) in list(self.checkpoints.items()):
            rep = self.table.replicas.get(dom)
            if rep is None or rep.owner_id != owner_id or rep.epoch != cp.epoch:
                del self.checkpoints[dom]
        for dom, cp in list(self.checkpointed.items()):
            domain = self.agent.host.domains.get(dom)
            if domain is None or domain.epoch != cp.epoch:
                del self.checkpointed[dom]
        horizon = self.agent.now_s() - self.agent.config.reservation_lease_ms / 1000
        for key, (*_, received_s) in list(self.forwarded.items()):
            if received_s < horizon:  # its Adopt never came
                del self.forwarded[key]

    def _report_unplaced(self, dec: Unplaced) -> None:
        if not self.table.report_unplaced(dec):
            return  # reported once per record; `status` lists it while it stays unplaced
        self.agent.metrics.inc("ha_unplaced_reports")
        log.warning("%s: cannot place %s of dead %s: %s (retried as capacity appears)", self.agent.node_id,
                    dec.domain_id, dec.replica.owner_id, dec.reason)
        self.agent.event("unplaced", domain=dec.domain_id, owner=dec.replica.owner_id, reason=dec.reason)

    async def _act(self, dec: Restart | Unplaced) -> None:
        """Confirms nobody ranked ahead holds the domain, then restarts it or reports it."""
        dom = dec.domain_id
        try:
            ahead_holds = await self._someone_ahead_holds(dom, dec.ahead)
        except BaseException:
            self.table.abandon(dom, drop=False)
            self._busy.discard(dom)
            raise
        if ahead_holds is not False:
            # True: it is theirs to act on; None: one of them did not answer (ask again next round).
            self.table.abandon(dom, drop=False, defer=ahead_holds is True)
            self._busy.discard(dom)
            return
        if isinstance(dec, Unplaced):
            self._report_unplaced(dec)
            self._busy.discard(dom)
            return
        await self._restart(dec)

    async def _someone_ahead_holds(self, domain_id: str, ahead: tuple[str, ...]) -> bool | None:
        addresses = [a for a in (self._address(n) for n in ahead) if a is not None]
        if not addresses:
            return False
        answers = await asyncio.gather(*(self.agent.clients.holds(a, domain_id) for a in addresses),
                                       return_exceptions=True)
        if any(a is True for a in answers):
            return True
        return None if any(isinstance(a, BaseException) for a in answers) else False

    def _room(self) -> Room:
        host = self.agent.host
        return Room(host.spec.memory_mib - host.committed_memory_mib, host.spec.vcpus_max - host.committed_vcpus)

    def _peer_rooms(self, live: set[str]) -> list[PeerRoom]:
        d = self.agent.dissemination
        if d is None:
            return []
        return [PeerRoom(load.node_id, Room(int(load.memory_capacity_mib - load.memory_used_mib),
                                            load.vcpus_capacity - load.vcpus_committed))
                for load in d.fresh_peers(self.agent.now_s()) if load.node_id in live]

    # -- owner side -----------------------------------------------------------------
    async def _push(self, push: ReplicaPush) -> None:
        agent = self.agent
        address = self._address(push.to_id)
        acked = False
        try:
            if address is None:
                return
            try:
                conflicts, sent_bytes, received_bytes = await agent.clients.replicate(address, push)
            except grpc.aio.AioRpcError as exc:
                agent.metrics.inc("ha_push_failed", code=exc.code().name)
                log.debug("%s: replica push to %s failed: %s", agent.node_id, push.to_id, exc.code().name)
                return
            except InputRejected as exc:  # the buddy answered nonsense
                agent.metrics.inc("rejected_inputs", reason=exc.reason)
                log.warning("%s: rejected the answer of %s to a replica push: %s", agent.node_id, push.to_id, exc)
                return
            acked = True
        finally:
            # Whatever ended the push (an error, or the channel closed under it when the buddy
            # was declared dead, which cancels the call), the owner core must hear of it, or
            # it would wait for this push forever and never push to that buddy again.
            if not acked:
                self.owner.on_failed(push)
        self.owner.on_acked(agent.now_s(), push)
        agent.metrics.inc("ha_pushes")
        # Counted with the protocol traffic, so per-node message rates include high availability.
        agent.metrics.inc("messages_sent", type="replicate")
        agent.metrics.inc("bytes_sent", sent_bytes, type="replicate")
        agent.metrics.inc("messages_received", type="replicate_reply")
        agent.metrics.inc("bytes_received", received_bytes, type="replicate_reply")
        fence, verify = self.owner.on_conflicts(self.running(), push.to_id, conflicts)
        for f in fence:
            self.fence_local(f, f"{push.to_id} runs it")
        for c in verify:
            if c.domain_id not in self._busy:
                self._busy.add(c.domain_id)
                agent.spawn(self._verify(c.domain_id, c.holder_id))

    async def _verify(self, domain_id: str, holder_id: str) -> None:
        """A buddy heard of a newer copy: fence mine only if its holder confirms it runs it."""
        try:
            address = self._address(holder_id)
            if address is None:
                return
            try:
                held, epoch = await self.agent.clients.locate(address, domain_id)
            except grpc.aio.AioRpcError:
                return  # asked again at the next push
            if held:
                f = self.owner.verified(self.running(), domain_id, holder_id, epoch)
                if f is not None:
                    self.fence_local(f, f"{holder_id} confirmed it runs it")
        finally:
            self._busy.discard(domain_id)

    def fence_local(self, f: FenceLocal, why: str) -> bool:
        """Destroys my copy of a domain that a newer copy outranks: journaled first."""
        agent = self.agent
        domain = agent.host.domains.get(f.domain_id)
        if domain is None or domain.epoch != f.epoch:
            return False
        if domain.state is not DomainState.RUNNING:
            return False  # mid-handoff: the handoff settles first, the next push meets it again
        agent._journal({"t": "fenced", "id": f.domain_id, "epoch": f.epoch, "winner": f.winner.node_id,
                        "winner_epoch": f.winner.epoch})
        agent.host.remove_domain(f.domain_id)
        agent.images.pop(f.domain_id, None)
        agent.cooldown_until_s.pop(f.domain_id, None)
        agent.tombstones[f.domain_id] = (f.winner.epoch, f.winner.node_id)
        agent.target.departed_epochs[f.domain_id] = f.winner.epoch
        self.fenced += 1
        agent.metrics.inc("ha_fenced")
        log.warning("%s: fenced my copy of %s at epoch %d: %s at epoch %d wins (%s)", agent.node_id, f.domain_id,
                    f.epoch, f.winner.node_id, f.winner.epoch, why)
        agent.event("fenced", domain=f.domain_id, epoch=f.epoch, winner=f.winner.node_id,
                    winner_epoch=f.winner.epoch, reason=why)
        agent.publish()
        return True

    # -- buddy side -------------------------------------------------------------------
    def on_replicate(self, owner_id: str, replicas: list[Replica]) -> ReplicateOutcome:
        agent = self.agent
        out = self.table.on_replicate(agent.now_s(), owner_id, replicas, self.running())
        for f in out.fence:
            self.fence_local(f, f"{owner_id} pushed a newer copy")
        agent.metrics.inc("ha_pushes_received")
        if out.conflicts:
            log.info("%s: push from %s conflicts: %s", agent.node_id, owner_id,
                     ", ".join(f"{c.domain_id} at {c.holder_id}@{c.epoch}" for c in out.conflicts))
        return out

    async def _restart(self, dec: Restart) -> None:
        agent = self.agent
        dom = dec.domain_id
        settled = False
        try:
            newer = await self._newer_copy_elsewhere(dec)
            if newer is not None:
                if newer.node_id == dec.dead_owner_id:
                    # The owner answers: the verdict was wrong or is being refuted. Keep the record.
                    agent.metrics.inc("ha_restarts_refused_owner_alive")
                    log.warning("%s: not restarting %s: its owner %s, declared dead, still runs it at epoch %d",
                                agent.node_id, dom, dec.dead_owner_id, newer.epoch)
                    return
                self.table.abandon(dom, drop=True)
                settled = True
                log.info("%s: not restarting %s of dead %s: %s runs it at epoch %d", agent.node_id, dom,
                         dec.dead_owner_id, newer.node_id, newer.epoch)
                return
            if dec.target_id == agent.node_id:
                reason = self.restart_here(dec.replica, dec.epoch, dec.dead_owner_id)
            else:
                reason = await self._adopt_remote(dec)
            if not reason:
                self.table.on_restarted(dom)
                settled = True
            else:
                log.warning("%s: restart of %s on %s failed: %s (retried)", agent.node_id, dom, dec.target_id, reason)
        finally:
            if not settled and dom in self.table.claimed:
                self.table.abandon(dom, drop=False)  # decided again next round
            self._busy.discard(dom)

    def _newer_copy_here(self, dec: Restart) -> Copy | None:
        agent = self.agent
        mine = agent.host.domains.get(dec.domain_id)
        return newer_copy_known(agent.node_id, None if mine is None else mine.epoch,
                                agent.tombstones.get(dec.domain_id), dec)

    async def _newer_copy_elsewhere(self, dec: Restart) -> Copy | None:
        agent = self.agent
        here = self._newer_copy_here(dec)
        if here is not None:
            return here
        assert agent.membership is not None
        peers = [m for m in agent.membership.members()
                 if m.status is MemberStatus.ALIVE and m.node_id not in (agent.node_id, dec.dead_owner_id)]
        # The "dead" owner too, at its last address: a wrong verdict (it answers and runs the
        # domain) must not start a second copy. A crashed owner refuses at once; one cut off
        # by a partition costs one RPC deadline.
        owner = agent.membership.member(dec.dead_owner_id)
        if owner is not None:
            peers.append(owner)
        answers = await asyncio.gather(*(agent.clients.locate(m.address, dec.domain_id) for m in peers),
                                       return_exceptions=True)
        for m, a in zip(peers, answers):
            if not isinstance(a, BaseException) and a[0] and a[1] >= dec.replica.epoch:
                return Copy(a[1], m.node_id, dec.domain_id)
        # Asked again: while the calls were out a push may have fenced my copy, or a handoff moved
        # the domain here or away, and a restart must not run below what this node now knows.
        return self._newer_copy_here(dec)

    async def _adopt_remote(self, dec: Restart) -> str:
        address = self._address(dec.target_id)
        if address is None:
            return f"{dec.target_id} is no longer live"
        await self._forward_checkpoint(dec, address)
        try:
            adopted, reason = await self.agent.clients.adopt(address, dec.replica, dec.epoch, self.agent.node_id)
        except grpc.aio.AioRpcError as exc:
            return f"adopt failed: {exc.code().name}"
        if adopted:
            # Counted as a restart where it runs (the adopter); here only as a placement.
            self.agent.metrics.inc("ha_placed_on_peer")
            log.warning("%s: %s of dead %s restarted on %s at epoch %d (cold)", self.agent.node_id, dec.domain_id,
                        dec.dead_owner_id, dec.target_id, dec.epoch)
        return "" if adopted else reason

    async def _forward_checkpoint(self, dec: Restart, address: str) -> None:
        """Sends the peer about to adopt `dec`'s domain the dead owner's checkpoint, if I hold it."""
        agent = self.agent
        held = self.checkpoints.get(dec.domain_id)
        rep = dec.replica
        if held is None or held[0] != rep.owner_id or held[1].epoch != rep.epoch:
            return
        _, cp, saved = held
        document = encapsulation.encode(saved.spec, saved.epoch, saved.state, saved.image)
        try:
            ok, reason = await agent.clients.put_checkpoint(address, agent.node_id, dec.domain_id, cp.epoch,
                                                            cp.taken_model_s, document, dead_owner_id=rep.owner_id)
        except grpc.aio.AioRpcError as exc:
            ok, reason = False, f"{exc.code().name} {exc.details()}"
        agent.metrics.inc("messages_sent", type="checkpoint")
        agent.metrics.inc("bytes_sent", len(document), type="checkpoint")
        if not ok:
            log.info("%s: %s did not take the checkpoint of %s (it restarts cold): %s", agent.node_id,
                     dec.target_id, dec.domain_id, reason)

    def restart_here(self, rep: Replica, epoch: int, dead_owner_id: str, coordinator_id: str = "") -> str:
        """Runs a dead owner's domain here at `epoch` (cold); "" or why not. Journaled first."""
        from agent.runtime.agent import Refused  # the runtime imports this module
        agent = self.agent
        record = {"t": "restarted", "spec": spec_to_record(rep.spec), "epoch": epoch, "from": dead_owner_id}
        try:
            agent.create_domain(rep.spec, epoch=epoch, record=record, anti_affinity=False)
        except Refused as exc:
            return exc.reason
        agent.tombstones.pop(rep.domain_id, None)
        self.owner.inherit(rep.domain_id, rep.buddies)
        self.table.on_restarted(rep.domain_id)
        held = self.checkpoints.pop(rep.domain_id, None)
        forwarded = self.forwarded.pop((rep.domain_id, coordinator_id), None) if coordinator_id else None
        if (held is None or held[0] != rep.owner_id) and forwarded is not None:
            held = forwarded[:3]  # a coordinator without room forwarded the dead owner's
        cp = None
        if held is not None and held[0] == rep.owner_id and held[1].epoch == rep.epoch and held[2].spec == rep.spec:
            cp = held[1]
            image = held[2].image
            image.warm_hash()
            agent.images[rep.domain_id] = image  # the checkpoint's memory, verified when it arrived
            agent.metrics.inc("ha_restarts_from_checkpoint")
        if cp is not None:
            lost = f"memory written since the checkpoint at model time {cp.taken_model_s:.3f} s"
        elif rep.checkpoint is not None:
            lost = (f"all memory (the checkpoint at model time {rep.checkpoint.taken_model_s:.3f} s "
                    "is not held here)")
        else:
            lost = "all memory (no checkpoint)"
        self.restarts += 1
        agent.metrics.inc("ha_restarts")
        log.warning("%s: restarted %s of dead %s at epoch %d (%s: %s lost)", agent.node_id, rep.domain_id,
                    dead_owner_id, epoch, "from its checkpoint" if cp else "cold restart", lost)
        agent.event("domain_restarted", domain=rep.domain_id, epoch=epoch, dead_owner=dead_owner_id,
                    cold=cp is None, memory_lost=lost, coordinator=coordinator_id or agent.node_id,
                    **({"checkpoint_model_s": cp.taken_model_s, "image_hash": cp.image_hash} if cp else {}))
        self._wake.set()  # push the new replica to my buddies now
        return ""

    def on_adopt(self, rep: Replica, epoch: int, coordinator_id: str) -> str:
        """A coordinator asks me to run a dead owner's domain; "" or why not."""
        if rep.domain_id in self.agent.host.domains:
            return f"{rep.domain_id} already runs here"
        tomb = self.agent.tombstones.get(rep.domain_id)
        if tomb is not None and tomb[0] >= epoch:
            return f"{rep.domain_id} moved on at epoch {tomb[0]}"
        return self.restart_here(rep, epoch, rep.owner_id, coordinator_id)

    # -- status -------------------------------------------------------------------------
    def status(self) -> dict:
        return {"replicas": len(self.table), "restarts": self.restarts, "fenced": self.fenced,
                "checkpoints_held": len(self.checkpoints), "checkpointed": len(self.checkpointed),
                "replicas_factor": self.agent.config.ha_replicas,
                "unplaced": [{"id": d, "owner": self.table.replicas[d].owner_id, "reason": why}
                             for d, why in sorted(self.table.unplaced.items()) if d in self.table.replicas]}
