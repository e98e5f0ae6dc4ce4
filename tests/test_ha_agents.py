"""High availability between agents in this process over gRPC (mutual TLS): replica
pushes reach the buddies, two running copies that meet leave one, bad pushes are refused."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters import replica_codec
from agent.core.ownership import fold
from agent.core.replicas import Replica, buddies_for
from agent.core.validation import InputRejected
from hypervisor.domain import DomainSpec
from hypervisor.memory import PAGE_SIZE
from shoal.v1 import replica_pb2, replica_pb2_grpc
from tests.conftest import FAST, wait_until

# No balancing moves (only HA changes ownership); quick replica rounds.
HA = FAST.replace(high_watermark=1.0, mean_margin=0.99, ha_push_interval_ms=100, ha_refresh_ms=500)
SPEC = DomainSpec(domain_id="web", vcpus=1, memory_mib=256)


class Recorder:
    """Stands in for the MQTT publisher: keeps the events."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def publish_event(self, event: dict) -> None:
        self.events.append(event)

    def publish_state(self, state: dict) -> None:
        pass


def copies(cluster, dom: str) -> list[tuple[str, int]]:
    return [(a.node_id, a.host.domains[dom].epoch) for a in cluster.agents if dom in a.host.domains]


async def test_replicas_reach_the_ranked_buddies(local_cluster):
    agents = [await local_cluster.add(f"n{i}", config=HA) for i in range(4)]
    owner = agents[0]
    owner.create_domain(SPEC)
    buddies = set(buddies_for("web", owner.node_id, [a.node_id for a in agents], 2))

    def placed() -> bool:
        held = {a.node_id: a.ha.table.replicas["web"] for a in agents if "web" in a.ha.table.replicas}
        # Pushes made while membership was still filling in named fewer buddies; they are replaced.
        return set(held) == buddies and all((r.owner_id, r.epoch, set(r.buddies)) == (owner.node_id, 1, buddies)
                                            for r in held.values())
    await wait_until(placed, 15, "the two ranked buddies to hold the replica naming each other")
    assert owner.status()["ha"]["replicas"] == 0 and sum(a.status()["ha"]["replicas"] for a in agents) == 2


async def test_two_running_copies_meet_and_the_lower_epoch_is_fenced(local_cluster):
    agents = [await local_cluster.add(f"n{i}", config=HA) for i in range(3)]
    owner = agents[0]
    owner.create_domain(SPEC)
    await wait_until(lambda: sum("web" in a.ha.table.replicas for a in agents) == 2, 15, "replicas")
    events = owner.telemetry = Recorder()
    # A second copy at a higher epoch, as a buddy that restarted it across a partition would run.
    other = agents[1]
    other.create_domain(SPEC, epoch=4)
    await wait_until(lambda: copies(local_cluster, "web") == [(other.node_id, 4)], 15, "the old copy to be fenced")
    assert owner.ha.fenced == 1 and owner.status()["ha"]["fenced"] == 1
    assert owner.tombstones["web"] == (4, other.node_id)
    assert owner.metrics.snapshot().get("ha_fenced") == 1
    (fenced,) = [e for e in events.events if e["event"] == "fenced"]
    assert (fenced["domain"], fenced["epoch"], fenced["winner"], fenced["winner_epoch"]) == ("web", 1, "n1", 4)


async def test_a_push_that_claims_another_owner_is_refused(local_cluster):
    agents = [await local_cluster.add(f"n{i}", config=HA) for i in range(2)]
    target = agents[0]
    channel = local_cluster.peer_channel(target.address, "n1")
    stub = replica_pb2_grpc.ReplicaStub(channel)
    try:
        # n1's certificate, n7's name: a node may only speak for its own domains.
        forged = Replica(SPEC, 3, "n7", ("n0",))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Replicate(replica_pb2.ReplicateRequest(owner_id="n7",
                                                              replicas=[replica_codec.replica_to_pb(forged)]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "n7" in err.value.details()
        # Its own name, but a record owned by someone else.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Replicate(replica_pb2.ReplicateRequest(owner_id="n1",
                                                              replicas=[replica_codec.replica_to_pb(forged)]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A spec that is not one.
        bad = replica_codec.replica_to_pb(Replica(SPEC, 3, "n1", ("n0",)))
        bad.spec.vcpus = 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Replicate(replica_pb2.ReplicateRequest(owner_id="n1", replicas=[bad]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(target.ha.table) == 0
        assert target.metrics.snapshot().get("rejected_inputs{reason=bad_replica}", 0) >= 2
    finally:
        await channel.close()


def test_journal_records_of_a_restart_and_a_fence_fold_back():
    spec = {"id": "web", "vcpus": 1, "memory_mib": 256, "workload": "constant:level=0.5"}
    r = fold([{"t": "restarted", "spec": spec, "epoch": 3, "from": "dead-node"}])
    assert r.domains["web"][1] == 3
    r = fold([{"t": "domain", "spec": spec, "epoch": 1},
              {"t": "fenced", "id": "web", "epoch": 1, "winner": "n2", "winner_epoch": 3}])
    assert "web" not in r.domains and r.departed["web"] == (3, "n2")
    # A fenced copy never comes back from the journal, and a later restart here at a higher epoch does.
    r = fold([{"t": "domain", "spec": spec, "epoch": 1},
              {"t": "fenced", "id": "web", "epoch": 1, "winner": "n2", "winner_epoch": 3},
              {"t": "restarted", "spec": spec, "epoch": 5, "from": "n2"}])
    assert r.domains["web"][1] == 5 and "web" not in r.departed
    assert fold(r.snapshot()).domains == r.domains


def crash(cluster, agent) -> None:
    """Stops an agent as SIGKILL would: no `left` announcement, its server gone at once."""
    agent._stopping = True  # noqa: SLF001 - no leave on the later cleanup either
    for task in list(agent._tasks):  # noqa: SLF001
        task.cancel()
    return cluster.servers[cluster.agents.index(agent)].stop(None)


async def test_failover_places_what_fits_reports_the_rest_and_places_it_when_room_appears(local_cluster):
    owner = await local_cluster.add("n0", config=HA, memory_mib=16_384)
    small = [await local_cluster.add(f"n{i}", config=HA, memory_mib=1024) for i in (1, 2)]
    doms = [DomainSpec(domain_id=f"big-{i}", vcpus=1, memory_mib=700) for i in range(3)]
    for d in doms:
        owner.create_domain(d)
    await wait_until(lambda: all(len(a.ha.table) == 3 for a in small), 15, "both small nodes to hold 3 replicas")
    await crash(local_cluster, owner)
    for a in small:
        a.telemetry = Recorder()

    def placed() -> dict[str, list[str]]:
        return {d.domain_id: [a.node_id for a in small + extra if d.domain_id in a.host.domains] for d in doms}
    extra: list = []
    # Two fit (one per small node); the third fits nowhere and is reported, not dropped.
    await wait_until(lambda: sum(len(v) == 1 for v in placed().values()) == 2
                     and sum(len(a.status()["ha"]["unplaced"]) for a in small) == 1, 40,
                     "two restarts and one unplaced domain")
    (unplaced,) = [u for a in small for u in a.status()["ha"]["unplaced"]]
    assert unplaced["owner"] == "n0" and "700 MiB" in unplaced["reason"]
    assert [d for d, v in placed().items() if not v] == [unplaced["id"]]
    # Room appears (a new node joins): the coordinator places it there.
    extra.append(await local_cluster.add("n3", config=HA, memory_mib=8192, seeds=(small[0].address,)))
    await wait_until(lambda: all(len(v) == 1 for v in placed().values()), 40, "the unplaced domain to be placed")
    assert placed()[unplaced["id"]] == ["n3"]
    restarted = [e for a in small + extra if a.telemetry for e in a.telemetry.events if e["event"] == "domain_restarted"]
    assert {e["domain"] for e in restarted} >= {d for d, v in placed().items() if v[0] != "n3"}
    assert all(e["cold"] and "no checkpoint" in e["memory_lost"] and e["dead_owner"] == "n0" for e in restarted)
    assert [e["domain"] for a in small for e in a.telemetry.events if e["event"] == "unplaced"] == [unplaced["id"]]
    assert all(not a.status()["ha"]["unplaced"] for a in small)
    assert sum(a.ha.restarts for a in small + extra) == 3  # counted where each runs
    assert sum(a.metrics.snapshot().get("ha_placed_on_peer", 0) for a in small) >= 1  # n3's was arranged
    assert all(a.host.domains[d.domain_id].epoch >= 2 for a in small + extra for d in doms
               if d.domain_id in a.host.domains)


async def test_status_and_prometheus_show_high_availability(local_cluster):
    from agent.adapters.prom import AgentMetrics
    agents = [await local_cluster.add(f"n{i}", config=HA) for i in range(3)]
    agents[0].create_domain(SPEC)
    await wait_until(lambda: sum(a.status()["ha"]["replicas"] for a in agents) == 2, 15, "replicas")
    holder = next(a for a in agents if a.status()["ha"]["replicas"])
    prom = AgentMetrics()
    prom.update_from_status(holder.status())
    text = prom.exposition().decode()
    assert "shoal_ha_replicas 1.0" in text and "shoal_ha_unplaced 0.0" in text
    assert "shoal_ha_restarts_total 0.0" in text and "shoal_ha_fenced_total 0.0" in text
    assert holder.status()["ha"] == {"replicas": 1, "restarts": 0, "fenced": 0, "replicas_factor": 2,
                                     "checkpoints_held": 0, "checkpointed": 0, "unplaced": []}
    assert "shoal_ha_checkpoints_held 0.0" in text


async def test_a_restart_is_refused_while_the_owner_declared_dead_still_answers(local_cluster):
    from agent.core.replicas import Restart
    agents = [await local_cluster.add(f"n{i}", config=HA) for i in range(3)]
    owner = agents[0]
    owner.create_domain(SPEC)
    await wait_until(lambda: sum("web" in a.ha.table.replicas for a in agents) == 2, 15, "replicas")
    buddy = next(a for a in agents if "web" in a.ha.table.replicas)
    rep = buddy.ha.table.replicas["web"]
    # As if a wrong dead verdict had made this buddy the coordinator: the owner still answers Locate.
    buddy.ha.table.claimed.add("web")
    await buddy.ha._act(Restart(rep, rep.epoch + 1, buddy.node_id, owner.node_id))  # noqa: SLF001
    assert "web" not in buddy.host.domains and copies(local_cluster, "web") == [(owner.node_id, 1)]
    assert buddy.metrics.snapshot().get("ha_restarts_refused_owner_alive") == 1
    assert "web" in buddy.ha.table.replicas and "web" not in buddy.ha.table.claimed  # kept, decided again later


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20), st.integers(0, 2**32 - 1), st.integers(0, 2**40), st.integers(0, 2**64 - 1),
       st.text(max_size=20), st.lists(st.text(max_size=10), max_size=20), st.floats(allow_nan=True),
       st.text(max_size=12))
def test_any_replica_record_decodes_or_is_rejected(dom, vcpus, memory, epoch, owner, buddies, taken, kind):
    msg = replica_pb2.ReplicaRecord(epoch=epoch, owner_id=owner, buddies=buddies)
    msg.spec.domain_id, msg.spec.vcpus, msg.spec.memory_mib = dom, vcpus, memory
    msg.spec.workload.kind = kind
    msg.checkpoint.taken_model_s = taken
    try:
        rep = replica_codec.replica_from_pb(replica_pb2.ReplicaRecord.FromString(msg.SerializeToString()))
    except InputRejected:
        return
    assert rep.epoch >= 1 and rep.spec.domain_id == dom and len(rep.buddies) <= replica_codec.BUDDIES_MAX


async def test_only_a_dead_verdict_counts_not_suspicion_or_leaving(local_cluster):
    from agent.core.membership import Member, MemberEvent, MemberStatus
    agent = await local_cluster.add("n0", config=HA, loops=False)

    def event(status, previous=MemberStatus.ALIVE):
        return MemberEvent(Member("n9", "127.0.0.1:1", 1, status, 0.0), previous)
    agent.ha.on_member_event(event(MemberStatus.SUSPECT))
    agent.ha.on_member_event(event(MemberStatus.LEFT, MemberStatus.SUSPECT))  # a graceful stop keeps its journal
    assert agent.ha.dead_since == {}
    agent.ha.on_member_event(event(MemberStatus.DEAD, MemberStatus.SUSPECT))
    assert set(agent.ha.dead_since) == {"n9"}
    agent.ha.on_member_event(event(MemberStatus.ALIVE, MemberStatus.DEAD))  # refuted: not dead any more
    assert agent.ha.dead_since == {}


# -- checkpoints ------------------------------------------------------------------------
CKPT = HA.replace(ha_checkpoints=True, ha_checkpoint_interval_ms=300)


async def test_a_buddy_restarts_a_dead_owners_domain_on_its_last_checkpoint(local_cluster):
    agents = [await local_cluster.add(f"n{i}", config=CKPT) for i in range(3)]
    owner, buddies = agents[0], agents[1:]
    owner.create_domain(SPEC)
    fresh = owner.images["web"].content_hash()
    # The guest writes memory: a restart from the spec alone would lose it.
    owner.images["web"].write_pages(3, b"\x5a" * 4 * PAGE_SIZE)
    written = owner.images["web"].content_hash()
    assert written != fresh

    def checkpointed() -> bool:
        return all(a.ha.checkpoints.get("web", ("", None))[1] is not None
                   and a.ha.checkpoints["web"][1].image_hash == written
                   and a.ha.table.replicas["web"].checkpoint is not None
                   and a.ha.table.replicas["web"].checkpoint.image_hash == written for a in buddies)
    await wait_until(checkpointed, 20, "both buddies to hold the checkpoint and records naming it")
    assert owner.status()["ha"]["checkpointed"] == 1
    assert all(a.status()["ha"]["checkpoints_held"] == 1 for a in buddies)
    image_bytes = owner.images["web"].real_page_count * PAGE_SIZE
    assert owner.metrics.snapshot()["bytes_sent{type=checkpoint}"] >= 2 * image_bytes
    for a in buddies:
        a.telemetry = Recorder()
    await crash(local_cluster, owner)
    await wait_until(lambda: sum("web" in a.host.domains for a in buddies) == 1, 40, "a buddy to restart web")
    (runner,) = [a for a in buddies if "web" in a.host.domains]
    assert runner.images["web"].content_hash() == written  # the checkpoint's memory, not a fresh image
    (event,) = [e for a in buddies for e in a.telemetry.events if e["event"] == "domain_restarted"]
    assert event["cold"] is False and event["image_hash"] == written
    assert "since the checkpoint" in event["memory_lost"]
    assert runner.metrics.snapshot()["ha_restarts_from_checkpoint"] == 1
    assert runner.host.domains["web"].epoch >= 2


async def test_checkpoints_from_a_non_owner_or_tampered_are_refused(local_cluster):
    agents = [await local_cluster.add(f"n{i}", config=HA) for i in range(3)]
    owner = agents[0]
    owner.create_domain(SPEC)
    await wait_until(lambda: all("web" in a.ha.table.replicas for a in agents[1:]), 15, "replicas")
    buddy = agents[1]
    document = owner.save_domain("web")

    async def put(as_node: str, claimed: str, doc: bytes, epoch: int = 1, domain_id: str = "web", dead_owner: str = ""):
        channel = local_cluster.peer_channel(buddy.address, as_node)
        try:
            piece = replica_pb2.CheckpointPiece(owner_id=claimed, domain_id=domain_id, epoch=epoch, taken_model_s=1.0,
                                                data=doc, dead_owner_id=dead_owner)
            return await replica_pb2_grpc.ReplicaStub(channel).PutCheckpoint(iter([piece]), timeout=5)
        finally:
            await channel.close()
    # Another node's certificate claiming the owner's id: refused before anything is stored.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await put("n2", "n0", document)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A node that is not the record's owner, speaking for itself.
    resp = await put("n2", "n2", document)
    assert not resp.stored and "holds no replica record of web from n2" in resp.reason
    # The owner, but the image was altered on the way (its hash no longer matches), or a wrong epoch.
    tampered = bytearray(document)
    tampered[len(tampered) // 2] ^= 0xFF
    resp = await put("n0", "n0", bytes(tampered))
    assert not resp.stored and resp.reason
    resp = await put("n0", "n0", document, epoch=5)
    assert not resp.stored and "at epoch 5" in resp.reason
    # Forwarded for an adoption: the document must be of the domain and epoch it is sent as.
    resp = await put("n2", "n2", document, domain_id="other", dead_owner="n0")
    assert not resp.stored and "holds web at epoch 1" in resp.reason
    assert buddy.ha.checkpoints == {} and buddy.ha.forwarded == {}
    rejected = buddy.metrics.snapshot()
    assert rejected.get("rejected_inputs{reason=identity_mismatch}") == 1
    assert sum(v for k, v in rejected.items() if k.startswith("rejected_inputs")) >= 3
    # The real thing is stored.
    resp = await put("n0", "n0", document)
    assert resp.stored and buddy.ha.checkpoints["web"][1].image_hash == owner.images["web"].content_hash()
    # Oversized: more than an image and its header.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        channel = local_cluster.peer_channel(buddy.address, "n0")
        try:
            big = b"\0" * (1024 * 1024)
            pieces = [replica_pb2.CheckpointPiece(owner_id="n0", domain_id="web", epoch=1, data=big)] + \
                [replica_pb2.CheckpointPiece(data=big) for _ in range(buddy.config.image_real_bytes_max // len(big) + 1)]
            await replica_pb2_grpc.ReplicaStub(channel).PutCheckpoint(iter(pieces), timeout=5)
        finally:
            await channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "checkpoint over" in info.value.details()


async def test_a_coordinator_without_room_forwards_the_checkpoint_to_the_peer_that_adopts(local_cluster):
    ids = ["n0", "n1", "n2", "n3"]
    # A domain whose buddies are n1 and n2 (both full below); n3 has room but is not a buddy.
    dom = next(f"big-{i}" for i in range(1000) if set(buddies_for(f"big-{i}", "n0", ids, 2)) == {"n1", "n2"})
    owner = await local_cluster.add("n0", config=CKPT, memory_mib=16_384)
    small = [await local_cluster.add(n, config=CKPT, memory_mib=1024) for n in ("n1", "n2")]
    roomy = await local_cluster.add("n3", config=CKPT, memory_mib=8192)
    for a in small:
        a.create_domain(DomainSpec(domain_id=f"filler-{a.node_id}", vcpus=1, memory_mib=600))
    owner.create_domain(DomainSpec(domain_id=dom, vcpus=1, memory_mib=700))
    owner.images[dom].write_pages(0, b"\xa5" * 8 * PAGE_SIZE)
    written = owner.images[dom].content_hash()
    await wait_until(lambda: all(a.ha.checkpoints.get(dom, ("", None))[1] is not None
                                 and a.ha.checkpoints[dom][1].image_hash == written for a in small), 20,
                     "both buddies to hold the checkpoint")
    assert dom not in roomy.ha.checkpoints
    roomy.telemetry = Recorder()
    await crash(local_cluster, owner)
    await wait_until(lambda: dom in roomy.host.domains, 40, f"n3 to adopt {dom}")
    assert roomy.images[dom].content_hash() == written
    (event,) = [e for e in roomy.telemetry.events if e["event"] == "domain_restarted"]
    assert event["cold"] is False and event["image_hash"] == written and event["coordinator"] in ("n1", "n2")
    assert roomy.ha.forwarded == {}
