"""Both handoff machines against a simple ownership model (hypothesis).

The source follows OutgoingMigration's table and the agent's rules (drop the
copy only on COMMITTED; resume on refusal, abort or UNKNOWN; stay paused while
in doubt); the target is the real TargetHandoffs. The network may lose,
duplicate and delay answers, and time may pass (leases expire). After every
step at most one copy is active; once the source resolves, exactly one is.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.config import AgentConfig
from agent.core.handoff import OutgoingMigration, SourceState, TargetHandoffs
from agent.core.messages import OUTCOME_ABORTED, OUTCOME_COMMITTED, OUTCOME_RESERVED, OUTCOME_UNKNOWN, PrepareRequest
from agent.core.validation import InputRejected
from hypervisor.domain import DomainSpec
from hypervisor.host import Host, HostSpec
from hypervisor.memory import PAGE_SIZE, MemoryImage

CFG = AgentConfig(image_real_bytes_max=16 * 1024)
SPEC = DomainSpec(domain_id="d", vcpus=1, memory_mib=8, image_seed=1)


class Source:
    """The agent's source-side rules, without the I/O."""

    def __init__(self) -> None:
        self.copy = "running"  # running | migrating-out | paused | gone
        self.image = MemoryImage(SPEC.memory_mib, CFG.image_real_bytes_max, seed=1)
        self.mig = OutgoingMigration("m", "d", "t", "addr", 1, 0.0)

    @property
    def active(self) -> bool:
        return self.copy in ("running", "migrating-out")

    def outcome(self, outcome: str) -> None:
        """What the source does with a (queried or abort) outcome while in doubt."""
        if outcome == OUTCOME_COMMITTED:
            self.mig.step("committed")
            self.copy = "gone"
        elif outcome in (OUTCOME_ABORTED, OUTCOME_UNKNOWN):
            self.mig.step("aborted")
            self.copy = "running"


def target_active(t: TargetHandoffs) -> bool:
    return "d" in t.host.domains


OPS = st.lists(st.sampled_from(["prepare", "prepare_lost", "chunks", "commit", "commit_lost_answer",
                                "commit_dup", "abort_dup", "time", "query"]), max_size=30)


@settings(max_examples=400, deadline=None)
@given(ops=OPS)
def test_any_message_sequence_leaves_at_most_one_owner(ops):
    tgt = TargetHandoffs("t", Host(HostSpec(4.0, 1024)), CFG)
    src = Source()
    now = 0.0
    image_bytes = src.image.real_page_count * PAGE_SIZE
    req = PrepareRequest("m", "s", SPEC, 1, 0.5, 3.0, 4.0, image_bytes, False)
    for op in ops:
        s = src.mig.state
        try:
            if op in ("prepare", "prepare_lost") and s is SourceState.PREPARING:
                decision = tgt.on_prepare(now, req, 0.0)
                if op == "prepare_lost":  # no answer: the source gives up, the lease will expire
                    src.mig.step("failed")
                elif decision.accepted:
                    src.mig.step("accepted")
                    src.copy = "migrating-out"
                else:
                    src.mig.step("rejected")
            elif op == "chunks" and s is SourceState.TRANSFERRING:
                for first, data in src.image.iter_chunks(8192):
                    tgt.on_chunk("m", first, data)
                src.mig.step("transferred")
                src.copy = "paused"  # stop-and-copy
            elif op in ("commit", "commit_lost_answer") and s is SourceState.COMMITTING:
                decision, _ = tgt.on_commit(now, "m", 2, src.image.content_hash())
                if op == "commit_lost_answer":
                    src.mig.step("failed")  # in doubt
                elif decision.committed:
                    src.outcome(OUTCOME_COMMITTED)
                else:
                    src.mig.step("refused")
                    src.copy = "running"
            elif op == "commit_dup":  # a late duplicate of the commit reaches the target
                tgt.on_commit(now, "m", 2, src.image.content_hash())
            elif op == "abort_dup":  # a late abort reaches the target
                tgt.on_abort("m")
            elif op == "time":
                now += CFG.reservation_lease_ms / 1000 / 2
                tgt.tick(now)
            elif op == "query" and s is SourceState.IN_DOUBT:
                outcome = tgt.outcome("m")
                if outcome == OUTCOME_RESERVED:
                    outcome = tgt.on_abort("m")
                src.outcome(outcome)
        except InputRejected:
            pass  # a late chunk for an expired reservation: refused, nothing changes
        if src.mig.state is SourceState.ABORTED and src.copy != "running":
            src.copy = "running"  # every abort path resumes the source copy
        assert src.active + target_active(tgt) <= 1, (ops, src.copy, tgt.host.domains)
        assert tgt.host.committed_memory_mib <= 1024
    # resolution: the source asks until it knows (the agent's _resolve_in_doubt)
    if src.mig.state is SourceState.IN_DOUBT:
        outcome = tgt.outcome("m")
        if outcome == OUTCOME_RESERVED:
            outcome = tgt.on_abort("m")
        src.outcome(outcome)
    if src.mig.state in (SourceState.DONE, SourceState.ABORTED, SourceState.PREPARING):
        assert src.active + target_active(tgt) == 1
        if target_active(tgt):
            assert tgt.host.domains["d"].epoch == 2
