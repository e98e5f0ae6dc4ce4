"""Agent configuration: one frozen dataclass, every default with its reason.

Profiles (`local`, `lan`, `wan`) derive from the defaults by overriding a few
fields, as memberlist derives its WAN and local configs from the LAN one.
`validate()` checks ranges and relations and raises ConfigError with a message
naming the field, so a broken config stops an agent at start-up, not later.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field and why."""


@dataclass(frozen=True)
class AgentConfig:
    # -- gossip --------------------------------------------------------------
    # Loopback round trips are ~1 ms; 500 ms keeps 100 agents well under a core.
    gossip_interval_ms: int = 500
    # Entries per exchange, about the membership view's size: bytes per node per
    # second stay flat as N grows (the policy only needs its view's entries).
    gossip_entries_max: int = 16
    # An entry this old is not trusted for decisions (about 10 gossip rounds).
    peer_stale_ms: int = 5_000
    # An entry this old is forgotten (the node is presumed gone).
    peer_forget_ms: int = 30_000
    # Peers' loads held at most (the freshest are kept): a few neighbours' worth, so memory and
    # the cost of a digest stay flat as N grows (unbounded, a node of 10 000 hears of ~2 000 in
    # one peer_forget_ms at 16 entries per exchange, 4 exchanges a second).
    peer_entries_max: int = 64
    # Push-pull averaging restarts every this many rounds so the mean tracks
    # load changes; variance falls ~0.3x per round, 20 rounds is ~1e-10.
    averaging_epoch_rounds: int = 20
    # -- balancing rule (DESIGN.md "Local balancing rule") --------------------
    # Decisions need fresh gossip: two gossip rounds per decision.
    policy_interval_ms: int = 1_000
    # The seeds' "peak should reach 80% at most".
    high_watermark: float = 0.80
    # Act when above the estimated cluster mean by more than this.
    mean_margin: float = 0.10
    # A move must lower the larger utilization of the pair by at least this,
    # so moves that barely help (and could ping-pong on noise) are skipped.
    improvement_min: float = 0.01
    # Nova allows 1 live migration per host, KubeVirt 2 outbound per node.
    migrations_out_max: int = 2
    # Symmetric with outbound, so a light node is not swamped by many sources.
    migrations_in_max: int = 2
    # A domain that just moved stays put this long (prevents ping-pong).
    domain_cooldown_ms: int = 15_000
    # -- handoff ---------------------------------------------------------------
    # A reservation not committed within the lease is released by the target.
    reservation_lease_ms: int = 10_000
    # Deadline of every peer RPC.
    rpc_timeout_ms: int = 3_000
    # Chunk size of the memory stream: gRPC streams 1 MiB messages near its best
    # rate on loopback (BENCHMARKS.md section 4); smaller ones pay per-message cost.
    transfer_chunk_bytes: int = 1024 * 1024
    # Real bytes per domain image; memory beyond it is accounted, not stored.
    image_real_bytes_max: int = 4 * 1024 * 1024
    # Per-migration bandwidth cap: a 10 GbE link; a migration may use it whole.
    migration_bandwidth_mib_s: float = 1_192.0
    # Xen's dynamic rate limit (start 100 Mbit/s, dirty rate + 50, max 500):
    # off by default, since it caps a migration at 62.5 MB/s on any link.
    migration_xen_rate_adaptation: bool = False
    # -- high availability (agent/core/replicas.py) ---------------------------
    # Buddies holding each domain's spec: the domain survives its owner and one
    # buddy failing together (vSphere HA's default tolerates one host).
    ha_replicas: int = 2
    # How often an owner checks what its buddies should hold (a change is pushed
    # at the next check) and a buddy checks for confirmed-dead owners: about two
    # membership probe periods, small beside the failure-detection bound.
    ha_push_interval_ms: int = 1_000
    # Unchanged replica sets are pushed again this often, which repairs a buddy
    # that restarted with an empty table and lets running copies meet (fencing).
    ha_refresh_ms: int = 5_000
    # Checkpoints: every ha_checkpoint_interval_ms an owner sends each buddy a copy of each
    # running domain (spec, epoch, memory image), so a restart after its death loses only the
    # memory written since. Off by default, as in vSphere HA (a restart is cold): a copy of
    # every image to r buddies per interval is real traffic (image_real_bytes_max each).
    ha_checkpoints: bool = False
    ha_checkpoint_interval_ms: int = 30_000
    # -- host model ------------------------------------------------------------
    # Nova's default cpu_allocation_ratio.
    cpu_overcommit_ratio: float = 16.0
    # Model seconds per wall second (replay a 24 h trace in minutes).
    time_scale: float = 1.0
    # -- limits ----------------------------------------------------------------
    # Largest gRPC message accepted or sent (a chunk plus framing fits).
    message_bytes_max: int = 4 * 1024 * 1024
    # Domains one agent will hold.
    domains_max: int = 4_096
    # Gossip and membership calls one peer may make per second, beyond its burst.
    # An honest peer makes about 10 (probes, acks, relays, 2 exchanges); 10x headroom.
    gossip_rate_limit_per_s: float = 100.0
    # Calls a peer may bunch up before the rate applies (a join, a refutation storm).
    gossip_rate_burst: int = 200
    # Control calls one operator may make per second, beyond its burst: status
    # polls at 1-10 per second; domain creation is paced by the launcher.
    control_rate_limit_per_s: float = 50.0
    # `cluster up` creates a few hundred domains at once on one node.
    control_rate_burst: int = 500

    profile: str = field(default="local")

    def validate(self) -> "AgentConfig":
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(value, bool):
                    raise ConfigError(f"{f.name}: expected true or false, got {value!r}")
                continue
            if f.name == "profile":
                if value not in PROFILES:
                    raise ConfigError(f"profile: unknown {value!r}; choose from {sorted(PROFILES)}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{f.name}: expected a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{f.name}: must be a positive finite number, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise ConfigError(f"{f.name}: expected an integer, got {value!r}")
        if not 0 < self.high_watermark <= 1.0:
            raise ConfigError(f"high_watermark: must be in (0, 1], got {self.high_watermark}")
        if self.mean_margin >= 1.0:
            raise ConfigError(f"mean_margin: must be below 1.0, got {self.mean_margin}")
        if self.peer_stale_ms < 2 * self.gossip_interval_ms:
            raise ConfigError("peer_stale_ms must be at least 2 x gossip_interval_ms "
                              f"({self.peer_stale_ms} < 2 x {self.gossip_interval_ms})")
        if self.peer_entries_max < self.gossip_entries_max:
            raise ConfigError("peer_entries_max must be at least gossip_entries_max "
                              f"({self.peer_entries_max} < {self.gossip_entries_max})")
        if self.peer_forget_ms <= self.peer_stale_ms:
            raise ConfigError("peer_forget_ms must exceed peer_stale_ms "
                              f"({self.peer_forget_ms} <= {self.peer_stale_ms})")
        if self.rpc_timeout_ms >= self.reservation_lease_ms:
            raise ConfigError("rpc_timeout_ms must be below reservation_lease_ms "
                              f"({self.rpc_timeout_ms} >= {self.reservation_lease_ms})")
        if self.ha_refresh_ms < self.ha_push_interval_ms:
            raise ConfigError("ha_refresh_ms must be at least ha_push_interval_ms "
                              f"({self.ha_refresh_ms} < {self.ha_push_interval_ms})")
        if self.transfer_chunk_bytes % 4096 or self.transfer_chunk_bytes + 64 * 1024 > self.message_bytes_max:
            raise ConfigError("transfer_chunk_bytes must be a multiple of 4096 and leave 64 KiB "
                              f"of framing below message_bytes_max ({self.transfer_chunk_bytes})")
        return self

    def replace(self, **changes: Any) -> "AgentConfig":
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, dict[str, Any]] = {
    # Loopback: fast rounds, short leases.
    "local": {},
    # A LAN: memberlist-like pacing, longer deadlines.
    "lan": {"gossip_interval_ms": 1_000, "peer_stale_ms": 10_000, "peer_forget_ms": 60_000,
            "rpc_timeout_ms": 5_000, "reservation_lease_ms": 30_000},
    # A WAN: slow rounds, generous deadlines.
    "wan": {"gossip_interval_ms": 5_000, "peer_stale_ms": 60_000, "peer_forget_ms": 300_000,
            "rpc_timeout_ms": 15_000, "reservation_lease_ms": 120_000, "policy_interval_ms": 10_000},
}


def config_from_mapping(values: Mapping[str, Any]) -> AgentConfig:
    """Builds a validated config: profile defaults, then the given values.

    Unknown keys are an error (a typo must not silently fall back to a default).
    """
    known = {f.name: f for f in fields(AgentConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    profile = values.get("profile", "local")
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown {profile!r}; choose from {sorted(PROFILES)}")
    merged = {**PROFILES[profile], **values}
    for name, value in merged.items():
        if known[name].type == "float" and isinstance(value, int) and not isinstance(value, bool):
            merged[name] = float(value)
    return AgentConfig(**merged).validate()
