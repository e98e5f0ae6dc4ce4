"""The hypervisor model: hosts, domains, CPU scheduling, memory images, workloads.

Pure Python: no asyncio, no network, no wall clock, no global random source.
Time comes in as model seconds (see `clock.ScaledClock`); randomness comes
from `random.Random` instances built from seeds. The only I/O is reading a
trace file when a trace workload is built.
"""

from hypervisor.clock import ScaledClock
from hypervisor.domain import Domain, DomainSpec, DomainSpecError, DomainState
from hypervisor.host import (
    Admission,
    AdmissionError,
    Host,
    HostSample,
    HostSpec,
    HostSpecError,
    Reservation,
)
from hypervisor.memory import PAGE_SIZE, MemoryImage
from hypervisor.scheduler import CpuRequest, allocate
from hypervisor.workload import DemandSource, WorkloadError, WorkloadSpec, make_demand

__all__ = [
    "PAGE_SIZE",
    "Admission",
    "AdmissionError",
    "CpuRequest",
    "DemandSource",
    "Domain",
    "DomainSpec",
    "DomainSpecError",
    "DomainState",
    "Host",
    "HostSample",
    "HostSpec",
    "HostSpecError",
    "MemoryImage",
    "Reservation",
    "ScaledClock",
    "WorkloadError",
    "WorkloadSpec",
    "allocate",
    "make_demand",
]
