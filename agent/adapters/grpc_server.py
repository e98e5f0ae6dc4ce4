"""gRPC servicers: thin adapters from protobuf to the agent's handlers.

Each servicer validates and translates, calls one agent handler, translates
back. Bad input becomes a gRPC status with a reason, a log line and a
`rejected_inputs{reason=...}` count; it never reaches the model unvalidated
and never takes the agent down.
"""

from __future__ import annotations

import asyncio
import logging
import math

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE_NAME
from grpc_health.v1.health import aio as health
from grpc_reflection.v1alpha import reflection

from agent.adapters import grpc_codec as codec
from agent.adapters.limits import SEEN_FACTOR, MessageSizeInterceptor, RateLimitInterceptor
from agent.adapters.certs import CertError
from agent.adapters.tls import AuthorizationInterceptor, ReloadableServerCredentials, TlsFiles, peer_identity
from agent.core import membership_codec
from agent.core.rate_limit import RateLimiter
from agent.core.handoff import OutgoingMigration
from agent.core.validation import InputRejected, check_id
from agent.runtime.agent import Agent, Refused
from agent.adapters import replica_codec
from shoal.v1 import (control_pb2, control_pb2_grpc, gossip_pb2_grpc, membership_pb2, membership_pb2_grpc,
                      migration_pb2, migration_pb2_grpc, replica_pb2, replica_pb2_grpc)

log = logging.getLogger("shoal.grpc")

FILE_PIECE_BYTES = 1024 * 1024
# A saved domain is its real image bytes plus a few KiB of spec and framing.
RESTORE_OVERHEAD_BYTES = 1024 * 1024
_REJECT_CODES = {"unknown_migration": grpc.StatusCode.NOT_FOUND,
                 "stale_migration": grpc.StatusCode.FAILED_PRECONDITION,
                 "identity_mismatch": grpc.StatusCode.PERMISSION_DENIED}


async def _reject(agent: Agent, context: grpc.aio.ServicerContext, exc: InputRejected, what: str) -> None:
    agent.metrics.inc("rejected_inputs", reason=exc.reason)
    log.warning("%s: rejected %s from %s: %s", agent.node_id, what, context.peer(), exc)
    await context.abort(_REJECT_CODES.get(exc.reason, grpc.StatusCode.INVALID_ARGUMENT), str(exc))


async def check_claimed_node(agent: Agent, context: grpc.aio.ServicerContext, claimed_id: str, what: str) -> None:
    """The node id a peer claims in a message must be the one its certificate names.

    Without mutual TLS (--insecure) there is no certificate and nothing to bind.
    Under TLS the authorization interceptor has already refused calls without a
    node certificate, so a missing identity here is refused too.
    """
    identity = peer_identity(context)
    if identity is None and agent.server_tls is None:
        return
    if identity is not None and identity.kind == "node" and identity.name == claimed_id:
        return
    who = f"{identity.kind} {identity.name!r}" if identity is not None else "no shoal identity"
    await _reject(agent, context, InputRejected(
        "identity_mismatch", f"{what} claims node id {claimed_id!r} but the peer's certificate names {who}"), what)


class GossipServicer(gossip_pb2_grpc.GossipServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Exchange(self, request, context):
        metrics = self.agent.metrics
        metrics.inc("messages_received", type="exchange")
        metrics.inc("bytes_received", request.ByteSize(), type="exchange")
        try:
            exchange = codec.exchange_request_from_pb(request)
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "gossip")
        await check_claimed_node(self.agent, context, exchange.sender_id, "gossip")
        try:
            reply = self.agent.on_exchange(exchange)
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
            if peer_identity(context) is not None or self.agent.server_tls is not None:
                # Decoded here only to read the sender (the agent decodes again): cheap, < 1 KiB.
                claimed = membership_codec.decode(request.payload, self.agent.membership_config.message_bytes_max)
                await check_claimed_node(self.agent, context, claimed.sender_id, "membership message")
            self.agent.on_membership_packet(request.payload)
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "membership message")
        return membership_pb2.MembershipReceipt()


class MigrationServicer(migration_pb2_grpc.MigrationServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Prepare(self, request, context):
        try:
            prepare = codec.prepare_from_pb(request)
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "prepare")
        await check_claimed_node(self.agent, context, prepare.source_id, "prepare")
        try:
            decision = self.agent.on_prepare(prepare)
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "prepare")
        if decision.accepted:
            # Half the time the caller still gives us: the other half carries the answer back.
            remaining_s = context.time_remaining()
            await self.agent.populate_reserved_image(
                prepare.migration_id, (remaining_s if remaining_s is not None else self.agent.clients.timeout_s) / 2)
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


# A saved-domain document's header (format, spec record, hash) beside its image bytes.
CHECKPOINT_HEADER_BYTES_MAX = 64 * 1024


class ReplicaServicer(replica_pb2_grpc.ReplicaServicer):
    """High availability (agent/runtime/ha.py): replica pushes and adoption requests."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Replicate(self, request, context):
        try:
            check_id("owner_id", request.owner_id)
            if request.owner_id == self.agent.node_id:
                raise InputRejected("bad_replica", "a replica push from this node's own id")
            if len(request.replicas) > self.agent.config.domains_max:
                raise InputRejected("bad_replica", f"{len(request.replicas)} replicas in one push "
                                                   f"(domains_max {self.agent.config.domains_max})")
            replicas = [replica_codec.replica_from_pb(r) for r in request.replicas]
            if any(r.owner_id != request.owner_id for r in replicas):
                raise InputRejected("bad_replica", "a replica owned by another node than the pusher")
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "replica push")
        # Only the owner itself may say what its buddies hold (and claim a running copy).
        await check_claimed_node(self.agent, context, request.owner_id, "replica push")
        out = self.agent.ha.on_replicate(request.owner_id, replicas)
        answer = replica_pb2.ReplicateResponse(conflicts=[replica_codec.conflict_to_pb(c) for c in out.conflicts],
                                               stored=out.stored)
        metrics = self.agent.metrics
        metrics.inc("messages_received", type="replicate")
        metrics.inc("bytes_received", request.ByteSize(), type="replicate")
        metrics.inc("messages_sent", type="replicate_reply")
        metrics.inc("bytes_sent", answer.ByteSize(), type="replicate_reply")
        return answer

    async def Adopt(self, request, context):
        try:
            replica = replica_codec.replica_from_pb(request.replica)
            check_id("coordinator_id", request.coordinator_id)
            if request.epoch <= replica.epoch:
                raise InputRejected("bad_replica", f"adopt at epoch {request.epoch}, not above the replica's "
                                                   f"{replica.epoch}")
        except InputRejected as exc:
            await _reject(self.agent, context, exc, "adopt request")
        await check_claimed_node(self.agent, context, request.coordinator_id, "adopt request")
        reason = self.agent.ha.on_adopt(replica, request.epoch, request.coordinator_id)
        return replica_pb2.AdoptResponse(adopted=not reason, reason=reason)

    async def PutCheckpoint(self, request_iterator, context):
        agent = self.agent
        # A saved-domain document: the real image bytes plus a small header (spec, hashes).
        limit = agent.config.image_real_bytes_max + CHECKPOINT_HEADER_BYTES_MAX
        first = None
        parts: list[bytes] = []
        size = 0
        async for piece in request_iterator:
            if first is None:
                first = piece
                try:
                    check_id("owner_id", piece.owner_id)
                    check_id("domain_id", piece.domain_id)
                    if piece.dead_owner_id:
                        check_id("dead_owner_id", piece.dead_owner_id)
                    if not math.isfinite(piece.taken_model_s):
                        raise InputRejected("bad_checkpoint", "checkpoint time is not finite")
                except InputRejected as exc:
                    await _reject(agent, context, exc, "checkpoint")
                await check_claimed_node(agent, context, piece.owner_id, "checkpoint")
            size += len(piece.data)
            if size > limit:
                await _reject(agent, context, InputRejected(
                    "bad_checkpoint", f"checkpoint over {limit} bytes (image_real_bytes_max "
                                      f"{agent.config.image_real_bytes_max} plus its header)"), "checkpoint")
            parts.append(piece.data)
        if first is None:
            await _reject(agent, context, InputRejected("bad_checkpoint", "an empty checkpoint stream"), "checkpoint")
        agent.metrics.inc("messages_received", type="checkpoint")
        agent.metrics.inc("bytes_received", size, type="checkpoint")
        reason = agent.ha.on_put_checkpoint(first.owner_id, first.domain_id, first.epoch, first.taken_model_s,
                                            b"".join(parts), dead_owner_id=first.dead_owner_id)
        return replica_pb2.PutCheckpointResponse(stored=not reason, reason=reason)

    async def Holds(self, request, context):
        rep = self.agent.ha.table.replicas.get(request.domain_id)
        dom = self.agent.host.domains.get(request.domain_id)
        return replica_pb2.HoldsResponse(replica=rep is not None, replica_epoch=rep.epoch if rep else 0,
                                         replica_owner=rep.owner_id if rep else "", running=dom is not None,
                                         running_epoch=dom.epoch if dom else 0)


class _HandlerCapture:
    """Stands in for a server to catch the handlers a generated add_*_to_server registers."""

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.handlers = dict(handlers)


def add_migration_servicer(servicer: MigrationServicer, server: grpc.aio.Server) -> None:
    """add_MigrationServicer_to_server, with Transfer's chunks decoded without
    copying their pages (grpc_codec.decode_transfer_chunk: `data` is a view)."""
    capture = _HandlerCapture()
    migration_pb2_grpc.add_MigrationServicer_to_server(servicer, capture)
    handlers = capture.handlers
    handlers["Transfer"] = handlers["Transfer"]._replace(request_deserializer=codec.decode_transfer_chunk)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("shoal.v1.Migration", handlers),))
    server.add_registered_method_handlers("shoal.v1.Migration", handlers)


def _domain_status(d: dict) -> control_pb2.DomainStatus:
    return control_pb2.DomainStatus(domain_id=d["id"], epoch=d["epoch"], state=d["state"],
                                    cpu_demand_cores=d["cpu_demand_cores"],
                                    cpu_allocated_cores=d["cpu_allocated_cores"], memory_mib=d["memory_mib"],
                                    vcpus=d["vcpus"], workload=d["workload"],
                                    dirty_rate_mib_s=d["dirty_rate_mib_s"], wws_mib=d["wws_mib"],
                                    labels=d["labels"])


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
                        for m in s["migrations"]],
            ha=control_pb2.HaStatus(replicas=s["ha"]["replicas"], restarts=s["ha"]["restarts"],
                                    fenced=s["ha"]["fenced"], replicas_factor=s["ha"]["replicas_factor"],
                                    checkpoints_held=s["ha"]["checkpoints_held"],
                                    checkpointed=s["ha"]["checkpointed"],
                                    unplaced=[control_pb2.UnplacedDomain(domain_id=u["id"], owner_id=u["owner"],
                                                                         reason=u["reason"])
                                              for u in s["ha"]["unplaced"]]))

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
                                                 hash_equal=result.migrated, transfer_s=result.transfer_s,
                                                 prepare_s=result.prepare_s)

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


SHOAL_SERVICES = ("shoal.v1.Gossip", "shoal.v1.Membership", "shoal.v1.Migration", "shoal.v1.Control",
                  "shoal.v1.Replica")


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


# Who may call what, by method prefix (the longest match wins; no match: refused).
# Every shoal.v1 service is between agents unless named here, so a new peer
# service is node-only from its first line.
AUTHORIZATION_RULES = {
    "/shoal.v1.": ("node",),
    "/shoal.v1.Control/": ("operator",),
    "/grpc.health.v1.": ("node", "operator"),
    "/grpc.reflection.": ("node", "operator"),
}


def rate_limits(config) -> dict[str, tuple[str, RateLimiter]]:
    """Per-peer buckets: gossip and membership share one, the control API has its own."""
    gossip = RateLimiter(config.gossip_rate_limit_per_s, config.gossip_rate_burst)
    control = RateLimiter(config.control_rate_limit_per_s, config.control_rate_burst)
    return {"/shoal.v1.Gossip/": ("gossip", gossip), "/shoal.v1.Membership/": ("gossip", gossip),
            "/shoal.v1.Control/": ("control", control)}


def _interceptors(agent: Agent, secure: bool) -> list[grpc.aio.ServerInterceptor]:
    def refused(method: str, identity, code: grpc.StatusCode) -> None:
        agent.metrics.inc("rejected_inputs", reason="unauthorized")

    def limited(name: str, peer: str) -> None:
        agent.metrics.inc("rejected_inputs", reason="rate_limited")
        agent.metrics.inc("rate_limited", limit=name)

    def oversized(method: str, peer: str, size: int) -> None:
        agent.metrics.inc("rejected_inputs", reason="oversized")

    limits = RateLimitInterceptor(rate_limits(agent.config), on_refused=limited)
    sizes = MessageSizeInterceptor(agent.config.message_bytes_max, on_refused=oversized)
    if not secure:
        return [limits, sizes]
    # Authorization first: a caller without the right certificate never spends a token.
    return [AuthorizationInterceptor(AUTHORIZATION_RULES, on_denied=refused), limits, sizes]


def server_options(config) -> list[tuple[str, int]]:
    """The core reads messages up to SEEN_FACTOR x message_bytes_max, so that MessageSizeInterceptor
    sees, counts and logs those over the limit; it sends at most message_bytes_max."""
    return [("grpc.max_send_message_length", config.message_bytes_max),
            ("grpc.max_receive_message_length", SEEN_FACTOR * config.message_bytes_max)]


def reload_tls(agent: Agent) -> int:
    """Re-reads the CA bundle(s), certificate and key (SIGHUP): new handshakes, both ways, use them.

    Raises CertError, and keeps what runs, if a file is unreadable or the pair
    does not match. Returns the reload's generation.
    """
    if agent.server_tls is None:
        raise ValueError("this agent runs without TLS (--insecure): nothing to reload")
    creds: ReloadableServerCredentials = agent.server_tls
    files = TlsFiles(tuple(creds.ca_paths), creds.cert, creds.key)
    files.check()
    generation = creds.reload()
    agent.clients.use_tls(files)
    agent.metrics.inc("tls_reloads")
    log.info("%s: reloaded TLS (generation %d): trust %s, certificate %s", agent.node_id, generation,
             ", ".join(files.ca), files.cert)
    return generation


async def start_server(agent: Agent, listen: str, tls: TlsFiles | None = None) -> tuple[grpc.aio.Server, str]:
    """Binds and starts the server; returns it and the bound HOST:PORT (port 0 picks one).

    With `tls` (the agent's CA bundle(s), node certificate and key) the port
    speaks mutual TLS only: every caller must present a certificate from a
    trusted CA, peers need a node certificate, the control API an operator
    one (AUTHORIZATION_RULES); the agent also dials its peers with that
    certificate. Without it (--insecure) everything is plaintext.
    Per-peer rate limits apply either way.

    Besides Shoal's services it serves grpc.health.v1 (tracking joining /
    serving / draining) and server reflection, so stock gRPC tools work.
    """
    if tls is not None:
        identity = tls.check()
        if identity != ("node", agent.node_id):
            raise CertError(f"{tls.cert} names {identity.kind} {identity.name!r}, not node {agent.node_id!r}: "
                            "peers would refuse this agent (issue one with `shoal certs issue --node ID`)")
        agent.server_tls = ReloadableServerCredentials(tls.ca, tls.cert, tls.key)
        agent.clients.use_tls(tls)
    server = grpc.aio.server(options=server_options(agent.config),
                             interceptors=_interceptors(agent, secure=tls is not None))
    gossip_pb2_grpc.add_GossipServicer_to_server(GossipServicer(agent), server)
    membership_pb2_grpc.add_MembershipServicer_to_server(MembershipServicer(agent), server)
    add_migration_servicer(MigrationServicer(agent), server)
    control_pb2_grpc.add_ControlServicer_to_server(ControlServicer(agent), server)
    replica_pb2_grpc.add_ReplicaServicer_to_server(ReplicaServicer(agent), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SHOAL_SERVICES, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
    agent.health = HealthReporter(agent, health_servicer)
    host = listen.rsplit(":", 1)[0]
    if agent.server_tls is not None:
        port = server.add_secure_port(listen, agent.server_tls.credentials)
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return server, f"{host}:{port}"
