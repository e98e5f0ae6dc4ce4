"""gRPC servicers: thin adapters from protobuf to the agent's handlers.

Each servicer validates and translates, calls one agent handler, translates
back. Bad input becomes a gRPC status with a reason, a log line and a
`rejected_inputs{reason=...}` count; it never reaches the model unvalidated
and never takes the agent down.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE_NAME
from grpc_health.v1.health import aio as health
from grpc_reflection.v1alpha import reflection

from agent.adapters import grpc_codec as codec
from agent.adapters.grpc_client import channel_options
from agent.core.handoff import OutgoingMigration
from agent.core.validation import InputRejected
from agent.runtime.agent import Agent, Refused
from shoal.v1 import (control_pb2, control_pb2_grpc, gossip_pb2_grpc, membership_pb2, membership_pb2_grpc,
                      migration_pb2, migration_pb2_grpc)

log = logging.getLogger("shoal.grpc")

FILE_PIECE_BYTES = 1024 * 1024
# A saved domain is its real image bytes plus a few KiB of spec and framing.
RESTORE_OVERHEAD_BYTES = 1024 * 1024
_REJECT_CODES = {"unknown_migration": grpc.StatusCode.NOT_FOUND,
                 "stale_migration": grpc.StatusCode.FAILED_PRECONDITION}


async def _reject(agent: Agent, context: grpc.aio.ServicerContext, exc: InputRejected, what: str) -> None:
    agent.metrics.inc("rejected_inputs", reason=exc.reason)
    log.warning("%s: rejected %s from %s: %s", agent.node_id, what, context.peer(), exc)
    await context.abort(_REJECT_CODES.get(exc.reason, grpc.StatusCode.INVALID_ARGUMENT), str(exc))


class GossipServicer(gossip_pb2_grpc.GossipServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Exchange(self, request, context):
        metrics = self.agent.metrics
        metrics.inc("messages_received", type="exchange")
        metrics.inc("bytes_received", request.ByteSize(), type="exchange")
        try:
            reply = self.agent.on_exchange(codec.exchange_request_from_pb(request))
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "gossip")
        answer = codec.exchange_response_to_pb(reply)
        metrics.inc("messages_sent", type="exchange_reply")
        metrics.inc("bytes_sent", answer.ByteSize(), type="exchange_reply")
        return answer


class MembershipServicer(membership_pb2_grpc.MembershipServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Deliver(self, request, context):
        try:
            self.agent.on_membership_packet(request.payload)
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "membership message")
        return membership_pb2.MembershipReceipt()


class MigrationServicer(migration_pb2_grpc.MigrationServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Prepare(self, request, context):
        try:
            decision = self.agent.on_prepare(codec.prepare_from_pb(request))
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "prepare")
        return migration_pb2.PrepareResponse(accepted=decision.accepted, reason=decision.reason,
                                             lease_ms=decision.lease_ms)

    async def Transfer(self, request_iterator, context):
        migration_id = ""
        try:
            async for chunk in request_iterator:
                if migration_id and chunk.migration_id != migration_id:
                    raise InputRejected("bad_chunk", "one transfer stream carries one migration id")
                migration_id = chunk.migration_id
                self.agent.on_chunk(chunk.migration_id, chunk.first_page, chunk.data)
            if not migration_id:
                raise InputRejected("bad_chunk", "empty transfer stream")
            received = self.agent.bytes_received(migration_id)
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "transfer chunk")
        return migration_pb2.TransferResponse(bytes_received=received)

    async def Commit(self, request, context):
        decision = self.agent.on_commit(request.migration_id, request.epoch, request.image_hash)
        return migration_pb2.CommitResponse(committed=decision.committed, reason=decision.reason,
                                            epoch=decision.epoch)

    async def Abort(self, request, context):
        outcome = self.agent.on_abort(request.migration_id)
        return migration_pb2.AbortResponse(known=outcome != "unknown", outcome=codec.outcome_to_pb(outcome))

    async def Locate(self, request, context):
        held, epoch, state = self.agent.on_locate(request.domain_id)
        return migration_pb2.LocateResponse(held=held, epoch=epoch, state=state)

    async def Query(self, request, context):
        outcome, epoch = self.agent.on_query(request.migration_id)
        return migration_pb2.QueryResponse(outcome=codec.outcome_to_pb(outcome), epoch=epoch)


def _domain_status(d: dict) -> control_pb2.DomainStatus:
    return control_pb2.DomainStatus(domain_id=d["id"], epoch=d["epoch"], state=d["state"],
                                    cpu_demand_cores=d["cpu_demand_cores"],
                                    cpu_allocated_cores=d["cpu_allocated_cores"], memory_mib=d["memory_mib"],
                                    vcpus=d["vcpus"], workload=d["workload"],
                                    dirty_rate_mib_s=d["dirty_rate_mib_s"], wws_mib=d["wws_mib"])


class ControlServicer(control_pb2_grpc.ControlServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Status(self, request, context):
        s = self.agent.status()
        return control_pb2.StatusResponse(
            node_id=s["id"], address=s["address"], cpu_utilization=s["cpu_utilization"],
            memory_utilization=s["memory_utilization"], cpu_capacity_cores=s["cpu_capacity_cores"],
            cpu_demand_cores=s["cpu_demand_cores"], cpu_unserved_cores=s["cpu_unserved_cores"],
            memory_capacity_mib=s["memory_capacity_mib"], memory_used_mib=s["memory_used_mib"],
            domains=[_domain_status(d) for d in s["domains"]],
            peers=[control_pb2.PeerStatus(node_id=p["id"], address=p["address"], cpu_utilization=p["cpu_utilization"],
                                          memory_utilization=p["memory_utilization"], age_s=p["age_s"],
                                          domains=p["domains"]) for p in s["peers"]],
            counters=s["counters"], mean_utilization_estimate=s["mean_utilization_estimate"],
            balancing=s["balancing"], draining=s["draining"], model_time_s=s["model_time_s"],
            incarnation=s["incarnation"], rates=s["rates"],
            members=[control_pb2.MemberInfo(node_id=m["id"], address=m["address"], status=m["status"],
                                            incarnation=m["incarnation"], last_change_s=m["last_change_s"],
                                            in_view=m["in_view"]) for m in s["members"]],
            migrations=[control_pb2.MigrationStatus(migration_id=m["id"], domain_id=m["domain_id"],
                                                    direction=m["direction"], peer_id=m["peer_id"], state=m["state"])
                        for m in s["migrations"]])

    async def ListDomains(self, request, context):
        return control_pb2.ListDomainsResponse(domains=[_domain_status(d) for d in self.agent.status()["domains"]])

    async def CreateDomain(self, request, context):
        try:
            spec = codec.spec_from_pb(request.spec)
            self.agent.create_domain(spec)
        except Refused as exc:
            self.agent.metrics.inc("control_refused", code=exc.code.name)
            log.info("%s: refused to create %r: %s", self.agent.node_id, request.spec.domain_id, exc.reason)
            await context.abort(exc.code, exc.reason)
        status = next(d for d in self.agent.status()["domains"] if d["id"] == spec.domain_id)
        return control_pb2.CreateDomainResponse(domain=_domain_status(status))

    async def MigrateDomain(self, request, context):
        if request.bandwidth_mib_s < 0 or request.bandwidth_mib_s != request.bandwidth_mib_s:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bandwidth_mib_s must be >= 0")
        if request.no_wait:
            began = self.agent.begin_migration(request.domain_id, request.target_node_id, require_improvement=False,
                                               bandwidth_mib_s=request.bandwidth_mib_s or None)
            if not isinstance(began, OutgoingMigration):
                return control_pb2.MigrateDomainResponse(migrated=False, reason=began.reason)
            self.agent.spawn(self.agent.run_migration(began))
            return control_pb2.MigrateDomainResponse(migrated=False, reason="started",
                                                     migration_id=began.migration_id, epoch=began.epoch)
        result = await self.agent.migrate(request.domain_id, request.target_node_id, require_improvement=False,
                                          bandwidth_mib_s=request.bandwidth_mib_s or None)
        return control_pb2.MigrateDomainResponse(migrated=result.migrated, reason=result.reason,
                                                 migration_id=result.migration_id, epoch=result.epoch,
                                                 bytes_sent=result.bytes_sent, duration_s=result.duration_s,
                                                 rounds=result.rounds, downtime_ms=result.downtime_s * 1000,
                                                 stop_reason=result.stop_reason,
                                                 accounted_bytes=result.accounted_bytes,
                                                 hash_equal=result.migrated)

    async def Drain(self, request, context):
        remaining = await self.agent.drain()
        return control_pb2.DrainResponse(domains_remaining=remaining)

    async def SaveDomain(self, request, context):
        try:
            blob = self.agent.save_domain(request.domain_id)
        except Refused as exc:
            await context.abort(exc.code, exc.reason)
        for start in range(0, len(blob), FILE_PIECE_BYTES):
            yield control_pb2.FilePiece(data=blob[start:start + FILE_PIECE_BYTES])

    async def RestoreDomain(self, request_iterator, context):
        limit = self.agent.config.image_real_bytes_max + RESTORE_OVERHEAD_BYTES
        parts, size = [], 0
        async for piece in request_iterator:
            size += len(piece.data)
            if size > limit:
                self.agent.metrics.inc("rejected_inputs", reason="oversized")
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"saved domain larger than {limit} bytes (image_real_bytes_max + overhead)")
            parts.append(piece.data)
        try:
            domain = await self.agent.restore_domain(b"".join(parts))
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "saved domain")
        except Refused as exc:
            await context.abort(exc.code, exc.reason)
        status = next(d for d in self.agent.status()["domains"] if d["id"] == domain.domain_id)
        return control_pb2.RestoreDomainResponse(domain=_domain_status(status))

    async def SetBalancing(self, request, context):
        self.agent.balancing = request.enabled
        log.info("%s: balancing %s", self.agent.node_id, "enabled" if request.enabled else "paused")
        inflight = len(self.agent.status()["migrations"])
        return control_pb2.SetBalancingResponse(enabled=self.agent.balancing, migrations_inflight=inflight)


SHOAL_SERVICES = ("shoal.v1.Gossip", "shoal.v1.Membership", "shoal.v1.Migration", "shoal.v1.Control")


class HealthReporter:
    """Keeps grpc.health.v1 in step with the agent: joining, serving, draining."""

    def __init__(self, agent: Agent, servicer: health.HealthServicer) -> None:
        self.agent = agent
        self.servicer = servicer
        self.state = ""

    def agent_state(self) -> str:
        if self.agent.target.draining:
            return "draining"
        if self.agent.membership is None or not self.agent.membership.joined:
            return "joining"
        return "serving"

    async def update(self) -> None:
        state = self.agent_state()
        if state == self.state:
            return
        self.state = state
        code = (health_pb2.HealthCheckResponse.SERVING if state == "serving"
                else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *SHOAL_SERVICES):
            await self.servicer.set(name, code)
        log.info("%s: health %s", self.agent.node_id, state)

    async def run(self, interval_s: float = 0.2) -> None:
        while True:
            await self.update()
            await asyncio.sleep(interval_s)


async def start_server(agent: Agent, listen: str) -> tuple[grpc.aio.Server, str]:
    """Binds and starts the server; returns it and the bound HOST:PORT (port 0 picks one).

    Besides Shoal's services it serves grpc.health.v1 (tracking joining /
    serving / draining) and server reflection, so stock gRPC tools work.
    """
    server = grpc.aio.server(options=channel_options(agent.config))
    gossip_pb2_grpc.add_GossipServicer_to_server(GossipServicer(agent), server)
    membership_pb2_grpc.add_MembershipServicer_to_server(MembershipServicer(agent), server)
    migration_pb2_grpc.add_MigrationServicer_to_server(MigrationServicer(agent), server)
    control_pb2_grpc.add_ControlServicer_to_server(ControlServicer(agent), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SHOAL_SERVICES, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
    agent.health = HealthReporter(agent, health_servicer)
    host = listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return server, f"{host}:{port}"
