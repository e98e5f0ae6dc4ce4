"""Operator-side client of the Control service, used by the CLI and launcher."""

from __future__ import annotations

import grpc

from agent.adapters import grpc_codec as codec
from agent.adapters.client_config import describe_rpc_error, resolve_client_tls
from agent.adapters.tls import TlsFiles, channel_credentials, secure_channel_options
from hypervisor.domain import DomainSpec
from shoal.v1 import control_pb2, control_pb2_grpc

STATUS_TIMEOUT_S = 5.0


def status_to_dict(s: control_pb2.StatusResponse) -> dict:
    """The JSON shape of `shoal status --json` (same keys as Agent.status())."""
    return {
        "id": s.node_id, "address": s.address, "model_time_s": s.model_time_s,
        "cpu_utilization": s.cpu_utilization, "memory_utilization": s.memory_utilization,
        "cpu_capacity_cores": s.cpu_capacity_cores, "cpu_demand_cores": s.cpu_demand_cores,
        "cpu_unserved_cores": s.cpu_unserved_cores, "memory_capacity_mib": s.memory_capacity_mib,
        "memory_used_mib": s.memory_used_mib,
        "domains": [{"id": d.domain_id, "epoch": d.epoch, "state": d.state, "cpu_demand_cores": d.cpu_demand_cores,
                     "cpu_allocated_cores": d.cpu_allocated_cores, "memory_mib": d.memory_mib, "vcpus": d.vcpus,
                     "workload": d.workload, "dirty_rate_mib_s": d.dirty_rate_mib_s, "wws_mib": d.wws_mib,
                     "labels": dict(sorted(d.labels.items()))}
                    for d in s.domains],
        "peers": [{"id": p.node_id, "address": p.address, "cpu_utilization": p.cpu_utilization,
                   "memory_utilization": p.memory_utilization, "age_s": p.age_s, "domains": p.domains}
                  for p in s.peers],
        "migrations": [{"id": m.migration_id, "domain_id": m.domain_id, "direction": m.direction,
                        "peer_id": m.peer_id, "state": m.state} for m in s.migrations],
        "mean_utilization_estimate": s.mean_utilization_estimate,
        "balancing": s.balancing, "draining": s.draining, "incarnation": s.incarnation,
        "rates": dict(sorted(s.rates.items())),
        "members": [{"id": m.node_id, "address": m.address, "status": m.status, "incarnation": m.incarnation,
                     "last_change_s": m.last_change_s, "in_view": m.in_view} for m in s.members],
        "counters": dict(sorted(s.counters.items())),
        "ha": {"replicas": s.ha.replicas, "restarts": s.ha.restarts, "fenced": s.ha.fenced,
               "replicas_factor": s.ha.replicas_factor, "checkpoints_held": s.ha.checkpoints_held,
               "checkpointed": s.ha.checkpointed,
               "unplaced": [{"id": u.domain_id, "owner": u.owner_id, "reason": u.reason} for u in s.ha.unplaced]},
    }


# Largest message a control call sends or takes: SaveDomain pieces are 1 MiB,
# a status of 4096 domains is well under 4 MiB.
MESSAGE_BYTES_MAX = 4 * 1024 * 1024
FROM_ENV = "from-env"  # ControlClient's default: $SHOAL_CLIENT_CONFIG if set, else plaintext


class ControlClient:
    """Async client for one agent's Control service.

    `tls`: the operator's TlsFiles (mutual TLS), None for plaintext (agents run
    with --insecure), or FROM_ENV: the client config named by SHOAL_CLIENT_CONFIG,
    plaintext if unset. Every call carries a deadline.
    """

    def __init__(self, address: str, tls: TlsFiles | None | str = FROM_ENV) -> None:
        self.address = address
        self.tls: TlsFiles | None = resolve_client_tls() if tls == FROM_ENV else tls  # type: ignore[assignment]
        options = [("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                   ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX)]
        if self.tls is None:
            self.channel = grpc.aio.insecure_channel(address, options=options)
        else:
            creds = channel_credentials(self.tls.ca, self.tls.cert, self.tls.key)
            self.channel = grpc.aio.secure_channel(address, creds, options=options + secure_channel_options())
        self.stub = control_pb2_grpc.ControlStub(self.channel)

    def describe(self, exc: grpc.aio.AioRpcError) -> str:
        """What went wrong, for a person: says so when TLS failed."""
        return describe_rpc_error(exc, self.address, self.tls is not None)

    async def close(self) -> None:
        await self.channel.close()

    async def status(self, timeout_s: float = STATUS_TIMEOUT_S) -> dict:
        return status_to_dict(await self.stub.Status(control_pb2.StatusRequest(), timeout=timeout_s))

    async def create_domain(self, spec: DomainSpec, timeout_s: float = STATUS_TIMEOUT_S) -> None:
        await self.stub.CreateDomain(control_pb2.CreateDomainRequest(spec=codec.spec_to_pb(spec)), timeout=timeout_s)

    async def migrate(self, domain_id: str, target_node_id: str, bandwidth_mib_s: float = 0.0,
                      timeout_s: float = 600.0, wait: bool = True):
        return await self.stub.MigrateDomain(control_pb2.MigrateDomainRequest(
            domain_id=domain_id, target_node_id=target_node_id, bandwidth_mib_s=bandwidth_mib_s, no_wait=not wait),
            timeout=timeout_s)

    async def save_domain(self, domain_id: str, timeout_s: float = 120.0) -> bytes:
        parts = [piece.data async for piece in self.stub.SaveDomain(
            control_pb2.SaveDomainRequest(domain_id=domain_id), timeout=timeout_s)]
        return b"".join(parts)

    async def restore_domain(self, blob: bytes, piece_bytes: int = 1024 * 1024, timeout_s: float = 120.0) -> dict:
        async def pieces():
            for start in range(0, len(blob), piece_bytes):
                yield control_pb2.FilePiece(data=blob[start:start + piece_bytes])
        resp = await self.stub.RestoreDomain(pieces(), timeout=timeout_s)
        return {"id": resp.domain.domain_id, "epoch": resp.domain.epoch, "state": resp.domain.state}

    async def set_balancing(self, enabled: bool, timeout_s: float = STATUS_TIMEOUT_S):
        return await self.stub.SetBalancing(control_pb2.SetBalancingRequest(enabled=enabled), timeout=timeout_s)

    async def drain(self, timeout_s: float = 300.0):
        return await self.stub.Drain(control_pb2.DrainRequest(), timeout=timeout_s)
