"""Membership configuration: one frozen dataclass, every default with its reason.

The defaults are memberlist's DefaultLANConfig (SWIM + Lifeguard as run in
production by Consul and Nomad); `local` and `wan` derive from them by
overriding a few fields, as memberlist's DefaultLocalConfig and
DefaultWANConfig do. `validate()` checks ranges and relations and raises
ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from agent.core.config import ConfigError
from agent.core.membership_codec import message_bytes_bound
from agent.core.suspicion import suspicion_timeout_min_s

# detection_bound_s holds except with about this probability per kill.
DETECTION_BOUND_MISS_PROBABILITY = 1e-4


@dataclass(frozen=True)
class MembershipConfig:
    # -- failure detection (SWIM section 4) ----------------------------------------
    # One probe per second: first detection ~1.6 s (SWIM) at one ping + ack per node per second.
    probe_interval_ms: int = 1_000
    # A LAN round trip is well under this even at the 99.9th percentile.
    probe_timeout_ms: int = 500
    # Three relays: a probe fails only if the direct path and all three indirect ones fail.
    indirect_checks: int = 3
    # -- suspicion (Lifeguard section IV-B) -----------------------------------------
    # Minimum suspicion timeout, in probe intervals x max(1, log10 N): time for a refutation to spread.
    suspicion_mult: int = 4
    # With no independent confirmation the timeout is 6x the minimum (a lone slow accuser waits).
    suspicion_max_timeout_mult: int = 6
    # -- dissemination (SWIM section 4.4, memberlist queue.go) --------------------
    # Each update is sent retransmit_mult x ceil(log10(N + 1)) times: reaches all with high probability.
    retransmit_mult: int = 4
    # Gossip rounds are 5x the probe rate so updates spread faster than failures are detected.
    gossip_interval_ms: int = 200
    # Three targets per gossip round: Serf's model reaches 99.99 % of 30 nodes in 9 rounds.
    gossip_fanout: int = 3
    # Updates piggy-backed per message; more arriving in one message are ignored and counted.
    updates_per_message_max: int = 32
    # Updates waiting to be sent; past this the most-sent are dropped (a flood cannot grow memory).
    broadcasts_queued_max: int = 4_096
    # -- local health (Lifeguard section IV-A) -------------------------------------
    # A starved node stretches its probe interval and timeout up to 8x.
    awareness_max: int = 8
    # -- partial view (Cyclon peer sampling) ---------------------------------------
    # Neighbours probed and gossiped to: per-node load stays flat as N grows.
    view_size_max: int = 16
    # Entries swapped per shuffle; Cyclon uses about a third to a half of the view.
    shuffle_length: int = 6
    # A shuffle every 5 s keeps the view a fresh random sample at one small exchange per 5 s.
    shuffle_interval_ms: int = 5_000
    # -- join -------------------------------------------------------------------------
    # First retry of an unanswered join after 1 s, doubling up to join_backoff_ms_max.
    join_backoff_ms: int = 1_000
    # Retries of a lonely node never get rarer than this.
    join_backoff_ms_max: int = 30_000
    # After this many unanswered rounds the runtime is told (JoinFailed); retries go on.
    join_attempts_max: int = 5
    # Seeds contacted per join round (a long seed list must not become a flood).
    join_seeds_max: int = 8
    # -- anti-entropy (memberlist push-pull) ----------------------------------------------
    # A push-pull sync with one view member every 30 s repairs what dissemination missed.
    sync_interval_ms: int = 30_000
    # Member states per sync (and per join answer): the whole table up to 256, a random sample beyond.
    sync_entries_max: int = 256
    # Serf's reconnect: every 30 s one dead member is contacted, so healed partitions merge.
    reconnect_interval_ms: int = 30_000
    # -- bounds -------------------------------------------------------------------------
    # Members tracked (tombstones included); unknown members past it are ignored and counted.
    members_max: int = 65_536
    # Indirect probes relayed for others at once; more are refused (a PingReq flood is bounded).
    relays_inflight_max: int = 64
    # A dead or left member is remembered this long, so stale alive news cannot resurrect it.
    tombstone_retention_ms: int = 3_600_000
    # Largest membership message accepted or sent.
    message_bytes_max: int = 256 * 1024

    profile_name: str = "lan"

    @classmethod
    def profile(cls, name: str) -> "MembershipConfig":
        if name not in PROFILES:
            raise ConfigError(f"profile: unknown {name!r}; choose from {sorted(PROFILES)}")
        return dataclasses.replace(cls(), profile_name=name, **PROFILES[name]).validate()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "MembershipConfig":
        """Profile defaults (key `profile`, default lan) overridden by the other keys."""
        known = {f.name for f in fields(cls)} - {"profile_name"}
        unknown = sorted(set(values) - known - {"profile"})
        if unknown:
            raise ConfigError(f"unknown membership setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        base = cls.profile(values.get("profile", "lan"))
        return dataclasses.replace(base, **{k: v for k, v in values.items() if k != "profile"}).validate()

    def replace(self, **changes: Any) -> "MembershipConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "MembershipConfig":
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "profile_name":
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"profile_name: expected a name, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{f.name}: expected an integer, got {value!r}")
            if value < 1:
                raise ConfigError(f"{f.name}: must be at least 1, got {value}")
        if self.probe_timeout_ms >= self.probe_interval_ms:
            raise ConfigError("probe_timeout_ms must be below probe_interval_ms, so the indirect probes have time "
                              f"({self.probe_timeout_ms} >= {self.probe_interval_ms})")
        if self.indirect_checks >= self.view_size_max:
            raise ConfigError("indirect_checks must be below view_size_max "
                              f"({self.indirect_checks} >= {self.view_size_max})")
        if self.gossip_fanout > self.view_size_max:
            raise ConfigError("gossip_fanout must not exceed view_size_max "
                              f"({self.gossip_fanout} > {self.view_size_max})")
        if self.shuffle_length > self.view_size_max:
            raise ConfigError("shuffle_length must not exceed view_size_max "
                              f"({self.shuffle_length} > {self.view_size_max})")
        if self.join_backoff_ms > self.join_backoff_ms_max:
            raise ConfigError("join_backoff_ms must not exceed join_backoff_ms_max "
                              f"({self.join_backoff_ms} > {self.join_backoff_ms_max})")
        if self.view_size_max >= self.members_max:
            raise ConfigError(f"view_size_max must be below members_max ({self.view_size_max} >= {self.members_max})")
        if self.tombstone_retention_ms < self.reconnect_interval_ms:
            raise ConfigError("tombstone_retention_ms must be at least reconnect_interval_ms "
                              f"({self.tombstone_retention_ms} < {self.reconnect_interval_ms})")
        entries_max = max(self.sync_entries_max, self.shuffle_length)
        needed = message_bytes_bound(self.updates_per_message_max, entries_max)
        if needed > self.message_bytes_max:
            raise ConfigError(f"message_bytes_max {self.message_bytes_max} is too small: "
                              f"{self.updates_per_message_max} updates (updates_per_message_max) and {entries_max} "
                              f"entries (sync_entries_max) can take {needed} bytes")
        return self


PROFILES: dict[str, dict[str, Any]] = {
    # memberlist DefaultLANConfig.
    "lan": {},
    # Loopback and one host (memberlist DefaultLocalConfig, probing twice as often):
    # round trips are ~1 ms, so short timeouts are safe and detection stays under 10 s at N = 10.
    "local": {"probe_interval_ms": 500, "probe_timeout_ms": 200, "suspicion_mult": 4,
              "suspicion_max_timeout_mult": 2, "retransmit_mult": 3, "gossip_interval_ms": 100,
              "shuffle_interval_ms": 2_000, "sync_interval_ms": 10_000, "join_backoff_ms": 250,
              "join_backoff_ms_max": 5_000, "reconnect_interval_ms": 10_000},
    # memberlist DefaultWANConfig: slow links, long round trips, more suspicion headroom.
    "wan": {"probe_interval_ms": 5_000, "probe_timeout_ms": 3_000, "suspicion_mult": 6,
            "gossip_interval_ms": 500, "gossip_fanout": 4, "shuffle_interval_ms": 30_000, "sync_interval_ms": 60_000,
            "join_backoff_ms": 5_000, "join_backoff_ms_max": 120_000, "reconnect_interval_ms": 60_000},
}


def suspicion_timeout_max_s(config: MembershipConfig, n: int) -> float:
    return config.suspicion_max_timeout_mult * suspicion_timeout_min_s(
        config.suspicion_mult, n, config.probe_interval_ms / 1000)


def gossip_rounds_bound(config: MembershipConfig, n: int) -> int:
    """Gossip rounds for one update to reach all n members (epidemic with fanout f).

    Infection grows about (f + 1)x per round until most know, then the last
    stragglers take about ln N rounds (Pittel; Serf's convergence model gives
    9 rounds at N = 30 with f = 3); one extra round for piggy-back latency.
    """
    n = max(2, n)
    return math.ceil(math.log(n) / math.log(config.gossip_fanout + 1)) + math.ceil(math.log(n)) + 1


def first_probe_periods_bound(config: MembershipConfig, n: int) -> int:
    """Probe periods until some member probes a given (killed) member, but for DETECTION_BOUND_MISS_PROBABILITY.

    Each of the d members holding it in view probes it once per round of L
    periods at a random position (randomized round-robin), so no probe within r
    periods has probability about (1 - r/L)^d. With the full view d = L = N - 1;
    with a partial view Cyclon keeps in-degrees near the view size, and half of
    it is taken as a conservative floor.
    """
    round_periods = max(1, min(config.view_size_max, n - 1))
    probers = round_periods if n - 1 <= config.view_size_max else max(1, config.view_size_max // 2)
    miss = DETECTION_BOUND_MISS_PROBABILITY ** (1 / probers)
    return max(1, math.ceil(round_periods * (1 - miss)))


def detection_bound_s(config: MembershipConfig, n: int) -> float:
    """Time from a kill to every live member marking the node dead (healthy network, awareness 0).

    first probe that reaches it + that probe's full interval (direct, then
    indirect) + the longest suspicion timeout (no confirmation arrives) + the
    dead verdict's dissemination + one probe interval of slack for tick
    granularity and message delay. Holds except with probability about
    DETECTION_BOUND_MISS_PROBABILITY; used as the chaos tests' deadline.
    """
    interval_s = config.probe_interval_ms / 1000
    first_probe_s = first_probe_periods_bound(config, n) * interval_s
    spread_s = gossip_rounds_bound(config, n) * config.gossip_interval_ms / 1000
    return first_probe_s + interval_s + suspicion_timeout_max_s(config, n) + spread_s + interval_s

