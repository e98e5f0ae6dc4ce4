"""Migration handoff: the two state machines, as data, and the target's rules.

Every legal transition of either side lives in the two tables below; a step
not in its table is a bug (HandoffError), never silently ignored.

Source                                   Target
PREPARING --accepted--> TRANSFERRING     RESERVED --chunk--> RECEIVING
TRANSFERRING --transferred--> COMMITTING RESERVED|RECEIVING --commit--> COMMITTED
COMMITTING --committed--> DONE           RESERVED|RECEIVING --abort--> ABORTED
COMMITTING --failed--> IN_DOUBT          RESERVED|RECEIVING --expire--> EXPIRED
IN_DOUBT --committed|aborted--> DONE|ABORTED

Rules (DESIGN.md "Migration handoff"):
- The target admits a PREPARE against its live state including reservations,
  and holds the reservation under a lease; a reservation never committed
  expires, so a source that died mid-handoff costs the target nothing.
- COMMIT carries the new epoch (source epoch + 1) and the image hash; the
  target activates the domain only if both match.
- Every message is idempotent by migration id: a repeated PREPARE gets the
  same answer, a repeated COMMIT of a committed handoff answers committed.
- The source keeps its (paused) copy until it knows the outcome. If the
  COMMIT answer is lost it asks the target (Query); only COMMITTED lets it
  drop its copy. The epoch fences any copy left behind.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from agent.core.config import AgentConfig
from agent.core.messages import (OUTCOME_ABORTED, OUTCOME_COMMITTED, OUTCOME_RESERVED, OUTCOME_UNKNOWN,
                                 CommitDecision, PrepareDecision, PrepareRequest)
from agent.core.policy import improves
from agent.core.validation import InputRejected
from hypervisor.domain import Domain, DomainSpec, DomainSpecError, DomainState
from hypervisor.host import Host, Reservation
from hypervisor.memory import PAGE_SIZE, MemoryImage


class HandoffError(RuntimeError):
    """A caller drove a handoff machine through an illegal transition (a bug)."""


class SourceState(str, Enum):
    PREPARING = "preparing"
    TRANSFERRING = "transferring"
    COMMITTING = "committing"
    IN_DOUBT = "in-doubt"
    DONE = "done"
    ABORTED = "aborted"


class TargetState(str, Enum):
    RESERVED = "reserved"
    RECEIVING = "receiving"
    COMMITTED = "committed"
    ABORTED = "aborted"
    EXPIRED = "expired"


S, T = SourceState, TargetState
SOURCE_TRANSITIONS: dict[tuple[SourceState, str], SourceState] = {
    (S.PREPARING, "accepted"): S.TRANSFERRING,
    (S.PREPARING, "rejected"): S.ABORTED,
    (S.PREPARING, "failed"): S.ABORTED,  # the lease on the target expires
    (S.TRANSFERRING, "transferred"): S.COMMITTING,
    (S.TRANSFERRING, "failed"): S.ABORTED,
    (S.COMMITTING, "committed"): S.DONE,
    (S.COMMITTING, "refused"): S.ABORTED,
    (S.COMMITTING, "failed"): S.IN_DOUBT,  # the answer may be lost: ask
    (S.IN_DOUBT, "committed"): S.DONE,
    (S.IN_DOUBT, "aborted"): S.ABORTED,
    (S.IN_DOUBT, "failed"): S.IN_DOUBT,
}
TARGET_TRANSITIONS: dict[tuple[TargetState, str], TargetState] = {
    (T.RESERVED, "chunk"): T.RECEIVING,
    (T.RECEIVING, "chunk"): T.RECEIVING,
    (T.RESERVED, "commit"): T.COMMITTED,
    (T.RECEIVING, "commit"): T.COMMITTED,
    (T.RESERVED, "abort"): T.ABORTED,
    (T.RECEIVING, "abort"): T.ABORTED,
    (T.RESERVED, "expire"): T.EXPIRED,
    (T.RECEIVING, "expire"): T.EXPIRED,
}
SOURCE_TERMINAL = frozenset({S.DONE, S.ABORTED})
TARGET_TERMINAL = frozenset({T.COMMITTED, T.ABORTED, T.EXPIRED})
# Terminal target records kept so late or repeated messages get their answer.
TERMINAL_RECORDS_MAX = 4_096


@dataclass
class OutgoingMigration:
    migration_id: str
    domain_id: str
    target_id: str
    target_address: str
    epoch: int  # the domain's epoch on the source when the handoff began
    started_at_s: float
    state: SourceState = SourceState.PREPARING
    bytes_sent: int = 0
    reason: str = ""
    require_improvement: bool = True
    source_demand_cores: float = 0.0  # source demand (net of other moves) when it began
    bandwidth_bytes_s: float = 0.0
    rounds: int = 0  # pre-copy rounds, the stop-and-copy included
    accounted_bytes: int = 0
    stop_reason: str = ""
    paused_at_s: float | None = None
    downtime_s: float = 0.0
    # The transfer phase: round 1 begins (PREPARE accepted) to the stop-and-copy's last page acknowledged.
    transfer_started_at_s: float | None = None
    transfer_ended_at_s: float | None = None

    def step(self, event: str, reason: str = "") -> SourceState:
        nxt = SOURCE_TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise HandoffError(f"source {self.migration_id}: no transition from {self.state.value} on {event!r}")
        self.state = nxt
        if reason:
            self.reason = reason
        return nxt


@dataclass
class IncomingMigration:
    migration_id: str
    source_id: str
    spec: DomainSpec
    epoch: int  # source epoch; commits must carry epoch + 1
    lease_expires_s: float
    image: MemoryImage
    state: TargetState = TargetState.RESERVED
    bytes_received: int = 0
    committed_epoch: int = 0

    def step(self, event: str) -> TargetState:
        nxt = TARGET_TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise HandoffError(f"target {self.migration_id}: no transition from {self.state.value} on {event!r}")
        self.state = nxt
        return nxt


@dataclass
class TargetHandoffs:
    """The target's side of every handoff into this node."""

    node_id: str
    host: Host
    config: AgentConfig
    draining: bool = False
    incoming: "OrderedDict[str, IncomingMigration]" = field(default_factory=OrderedDict)
    # Highest epoch at which each domain left this node: a PREPARE below it is stale.
    departed_epochs: dict[str, int] = field(default_factory=dict)
    # Commits recovered from the journal after a restart: migration id -> epoch.
    recovered_commits: dict[str, int] = field(default_factory=dict)
    # Zeroed bytes for an incoming image (MemoryImage.empty's `allocate`); None: a bytearray.
    allocate_image: "Callable[[int], bytearray] | None" = None

    def active(self) -> list[IncomingMigration]:
        return [m for m in self.incoming.values() if m.state not in TARGET_TERMINAL]

    def reserved_demand_cores(self) -> float:
        return sum(self.host.reservations[m.migration_id].demand_cores
                   for m in self.active() if m.migration_id in self.host.reservations)

    def on_prepare(self, now_s: float, req: PrepareRequest, own_demand_cores: float) -> PrepareDecision:
        known = self.incoming.get(req.migration_id)
        if known is not None:  # idempotent: the same answer again
            if known.state in (T.RESERVED, T.RECEIVING):
                return PrepareDecision(True, "", self.config.reservation_lease_ms)
            return PrepareDecision(False, f"migration {req.migration_id} already {known.state.value}")
        try:
            req.spec.validate()
        except DomainSpecError as exc:
            raise InputRejected("bad_spec", str(exc)) from exc
        dom_id = req.spec.domain_id
        if self.draining:
            return PrepareDecision(False, "target is draining")
        if dom_id in self.host.domains:
            return PrepareDecision(False, f"domain {dom_id} already runs here")
        if any(m.spec.domain_id == dom_id for m in self.active()):
            return PrepareDecision(False, f"domain {dom_id} is already being received")
        if req.epoch < self.departed_epochs.get(dom_id, -1):
            return PrepareDecision(False, f"stale epoch {req.epoch}: domain {dom_id} left this node "
                                          f"at epoch {self.departed_epochs[dom_id]}")
        if len(self.active()) >= self.config.migrations_in_max:
            return PrepareDecision(False, f"busy: {len(self.active())} incoming migrations "
                                          f"(max {self.config.migrations_in_max})")
        if len(self.host.domains) + len(self.active()) >= self.config.domains_max:
            return PrepareDecision(False, f"full: at most {self.config.domains_max} domains")
        live_demand = own_demand_cores + self.reserved_demand_cores()
        if req.require_improvement and not improves(
                req.source_demand_cores, req.source_capacity_cores, live_demand,
                self.host.spec.cpu_cores, req.demand_cores, self.config.improvement_min):
            return PrepareDecision(False, f"no improvement: target at {live_demand / self.host.spec.cpu_cores:.2f} "
                                          f"would not end below source")
        admission = self.host.admit(req.spec)
        if not admission.ok:
            return PrepareDecision(False, admission.reason)
        image = MemoryImage.empty(req.spec.memory_mib, self.config.image_real_bytes_max, self.allocate_image)
        if req.image_bytes != image.real_page_count * PAGE_SIZE:
            return PrepareDecision(False, f"image of {req.image_bytes} bytes, this node takes "
                                          f"{image.real_page_count * PAGE_SIZE} (image_real_bytes_max differs)")
        expires = now_s + self.config.reservation_lease_ms / 1000
        admission = self.host.reserve(Reservation(req.migration_id, dom_id, req.spec.vcpus,
                                                  req.spec.memory_mib, req.demand_cores, expires,
                                                  req.spec.anti_affinity))
        if not admission.ok:
            return PrepareDecision(False, admission.reason)
        self._remember(IncomingMigration(req.migration_id, req.source_id, req.spec, req.epoch, expires, image))
        return PrepareDecision(True, "", self.config.reservation_lease_ms)

    def on_chunk(self, migration_id: str, first_page: int, data: bytes) -> None:
        mig = self._live(migration_id)
        if len(data) % PAGE_SIZE:
            raise InputRejected("bad_chunk", f"chunk of {len(data)} bytes is not whole pages")
        end_page = first_page + len(data) // PAGE_SIZE
        if first_page < 0 or end_page > mig.image.real_page_count:
            raise InputRejected("bad_chunk", f"chunk pages {first_page}..{end_page} past the image's "
                                             f"{mig.image.real_page_count} real pages")
        mig.image.write_pages(first_page, data)
        mig.bytes_received += len(data)
        mig.step("chunk")

    def on_commit(self, now_s: float, migration_id: str, epoch: int,
                  image_hash: str) -> tuple[CommitDecision, Domain | None]:
        """Activates the domain at the new epoch; returns it when newly activated."""
        mig = self.incoming.get(migration_id)
        if mig is None and migration_id in self.recovered_commits:
            return CommitDecision(True, "already committed", self.recovered_commits[migration_id]), None
        if mig is None:
            return CommitDecision(False, f"unknown migration {migration_id}"), None
        if mig.state is T.COMMITTED:
            return CommitDecision(True, "already committed", mig.committed_epoch), None
        if mig.state in TARGET_TERMINAL:
            return CommitDecision(False, f"migration {migration_id} {mig.state.value}"), None
        if epoch != mig.epoch + 1:
            return CommitDecision(False, f"stale epoch {epoch}: expected {mig.epoch + 1}"), None
        if image_hash != mig.image.content_hash():
            return CommitDecision(False, "image hash mismatch: transfer incomplete or corrupt"), None
        self.host.release(migration_id)
        domain = Domain(mig.spec, epoch=epoch, state=DomainState.RUNNING)
        admission = self.host.admit(mig.spec)
        if not admission.ok:  # cannot happen while the reservation held; refuse rather than overcommit
            return CommitDecision(False, admission.reason), None
        self.host.add_domain(domain)
        mig.step("commit")
        mig.committed_epoch = epoch
        return CommitDecision(True, "", epoch), domain

    def on_abort(self, migration_id: str) -> str:
        mig = self.incoming.get(migration_id)
        if mig is None:
            return self.outcome(migration_id)
        if mig.state not in TARGET_TERMINAL:
            mig.step("abort")
            self.host.release(migration_id)
        return self.outcome(migration_id)

    def outcome(self, migration_id: str) -> str:
        mig = self.incoming.get(migration_id)
        if mig is None:
            return OUTCOME_COMMITTED if migration_id in self.recovered_commits else OUTCOME_UNKNOWN
        return {T.RESERVED: OUTCOME_RESERVED, T.RECEIVING: OUTCOME_RESERVED,
                T.COMMITTED: OUTCOME_COMMITTED}.get(mig.state, OUTCOME_ABORTED)

    def tick(self, now_s: float) -> list[IncomingMigration]:
        """Expires reservations whose lease ran out; returns them."""
        expired = [m for m in self.active() if m.lease_expires_s <= now_s]
        for mig in expired:
            mig.step("expire")
            self.host.release(mig.migration_id)
        return expired

    def _live(self, migration_id: str) -> IncomingMigration:
        mig = self.incoming.get(migration_id)
        if mig is None:
            raise InputRejected("unknown_migration", f"no migration {migration_id} here")
        if mig.state in TARGET_TERMINAL:
            raise InputRejected("stale_migration", f"migration {migration_id} is {mig.state.value}")
        return mig

    def _remember(self, mig: IncomingMigration) -> None:
        self.incoming[mig.migration_id] = mig
        while len(self.incoming) > TERMINAL_RECORDS_MAX:
            oldest_id, oldest = next(iter(self.incoming.items()))
            if oldest.state not in TARGET_TERMINAL:
                break
            del self.incoming[oldest_id]
