"""Validation of everything that arrives from the network.

A message that fails raises InputRejected with a short machine-readable
`reason` (the metric label) and a human-readable `detail` (the log line and the
gRPC status text). Cores call these before they trust any value.
"""

from __future__ import annotations

import math
import re

from agent.core.messages import SCHEMA_VERSION, Exchange, NodeLoad

# A utilization beyond this multiple of capacity is not a load, it is garbage.
DEMAND_CAPACITY_RATIO_MAX = 100.0
# No single node has more than this many cores or MiB (sanity, not policy).
CPU_CORES_MAX = 1_000_000.0
MEMORY_MIB_MAX = 1e12
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ADDRESS_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}:[0-9]{1,5}$")


class InputRejected(ValueError):
    """A peer sent something invalid. `reason` labels the metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _finite_non_negative(name: str, value: float, who: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputRejected("non_finite", f"{who}: {name} is {value!r}")
    if value < 0:
        raise InputRejected("negative", f"{who}: {name} is negative ({value})")


def check_id(kind: str, value: str) -> None:
    if not ID_RE.match(value or ""):
        raise InputRejected("bad_id", f"{kind} {value!r} is not 1-128 characters of [A-Za-z0-9._:-]")


def check_address(value: str) -> None:
    if not ADDRESS_RE.match(value or ""):
        raise InputRejected("bad_address", f"address {value!r} is not HOST:PORT")
    port = int(value.rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise InputRejected("bad_address", f"address {value!r} has port {port} out of range")


_LOAD_NUMBERS = ("cpu_capacity_cores", "cpu_demand_cores", "memory_capacity_mib", "memory_used_mib",
                 "vcpus_committed", "vcpus_capacity")


def check_node_load(load: NodeLoad) -> None:
    if load.schema_version != SCHEMA_VERSION:
        raise InputRejected("schema_version",
                            f"entry for {load.node_id!r} has schema version {load.schema_version}, "
                            f"this agent speaks {SCHEMA_VERSION}")
    check_id("node id", load.node_id)
    check_address(load.address)
    who = f"entry for {load.node_id}"
    values = (load.cpu_capacity_cores, load.cpu_demand_cores, load.memory_capacity_mib, load.memory_used_mib,
              load.vcpus_committed, load.vcpus_capacity)
    # Every entry of every exchange passes here: one test for the common case, the named check
    # (which says which field is wrong) only when it fails.
    for v in values:
        if (type(v) is not float and type(v) is not int) or not 0 <= v < math.inf:
            for name, value in zip(_LOAD_NUMBERS, values):
                _finite_non_negative(name, value, who)
            break
    if load.cpu_capacity_cores <= 0 or load.cpu_capacity_cores > CPU_CORES_MAX:
        raise InputRejected("out_of_range", f"{who}: cpu_capacity_cores {load.cpu_capacity_cores} "
                                            f"not in (0, {CPU_CORES_MAX:g}]")
    if load.memory_capacity_mib <= 0 or load.memory_capacity_mib > MEMORY_MIB_MAX:
        raise InputRejected("out_of_range", f"{who}: memory_capacity_mib {load.memory_capacity_mib} "
                                            f"not in (0, {MEMORY_MIB_MAX:g}]")
    if load.cpu_demand_cores > DEMAND_CAPACITY_RATIO_MAX * load.cpu_capacity_cores:
        raise InputRejected("out_of_range", f"{who}: cpu demand {load.cpu_demand_cores} is more than "
                                            f"{DEMAND_CAPACITY_RATIO_MAX:g}x its capacity")
    if load.memory_used_mib > DEMAND_CAPACITY_RATIO_MAX * load.memory_capacity_mib:
        raise InputRejected("out_of_range", f"{who}: memory used {load.memory_used_mib} is more than "
                                            f"{DEMAND_CAPACITY_RATIO_MAX:g}x its capacity")


def check_exchange(msg: Exchange, entries_max: int) -> None:
    if msg.schema_version != SCHEMA_VERSION:
        raise InputRejected("schema_version", f"message schema version {msg.schema_version}, "
                                              f"this agent speaks {SCHEMA_VERSION}")
    check_id("sender id", msg.sender_id)
    check_address(msg.sender_address)
    if len(msg.entries) > entries_max:
        raise InputRejected("oversized", f"{len(msg.entries)} entries, at most {entries_max} allowed")
    for load in msg.entries:
        check_node_load(load)
    avg = msg.averaging
    _finite_non_negative("averaging.demand_cores", avg.demand_cores, "averaging")
    _finite_non_negative("averaging.capacity_cores", avg.capacity_cores, "averaging")
    if avg.capacity_cores > CPU_CORES_MAX or avg.demand_cores > DEMAND_CAPACITY_RATIO_MAX * max(avg.capacity_cores, 1e-9):
        raise InputRejected("out_of_range", f"averaging state ({avg.demand_cores}, {avg.capacity_cores}) is absurd")
