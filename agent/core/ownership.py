"""Domain ownership as journal records, and the fold that recovers it.

Theory of operation
-------------------
An agent journals every ownership change and every handoff step that must
survive a crash *before* it takes effect outside the process:

  domain     {t, spec, epoch}            a domain created here (or restored)
  pause      {t, mid, id, target, addr, epoch}
                                         source: the guest is paused for the
                                         stop-and-copy; COMMIT may follow
  gone       {t, mid, id, epoch, to}     source: the target acknowledged COMMIT
  resume     {t, mid, id}                source: the handoff aborted after pause
  arrived    {t, mid, spec, epoch}       target: COMMIT accepted, written before
                                         the answer goes back to the source
  restarted  {t, spec, epoch, from}      HA: a confirmed-dead owner's domain
                                         restarted here (cold) at a new epoch
  fenced     {t, id, epoch, winner, winner_epoch}
                                         HA: this copy met a newer one and was
                                         destroyed; like `gone`, a tombstone

Recovery folds the records in order. A `pause` with neither `gone` nor
`resume` after it is *in doubt*: the domain comes back paused and the agent
asks the target how the handoff ended (only COMMITTED lets it drop its copy),
which is what guarantees that restarting from the journal never brings back a
stale copy. Reservations are not journaled: a target that restarts forgets
them, the source then learns UNKNOWN and resumes its copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.core.validation import InputRejected
from hypervisor.domain import DomainSpec, DomainSpecError
from hypervisor.workload import WorkloadError, WorkloadSpec


def spec_to_record(spec: DomainSpec) -> dict[str, Any]:
    return {"id": spec.domain_id, "name": spec.name, "vcpus": spec.vcpus, "memory_mib": spec.memory_mib,
            "weight": spec.cpu_weight, "cap": spec.cpu_cap_pct, "labels": [list(kv) for kv in spec.labels],
            "workload": spec.workload.to_text(), "seed": spec.image_seed, "wws_mib": spec.wws_mib,
            "dirty_rate_mib_s": spec.dirty_rate_mib_s}


def spec_from_record(d: dict[str, Any]) -> DomainSpec:
    """Raises InputRejected on a record that is not a valid spec (a foreign or damaged file)."""
    try:
        spec = DomainSpec(domain_id=d["id"], name=d.get("name", ""), vcpus=d["vcpus"], memory_mib=d["memory_mib"],
                          cpu_weight=d.get("weight", 256), cpu_cap_pct=d.get("cap", 0),
                          labels=tuple(tuple(kv) for kv in d.get("labels", ())),
                          workload=WorkloadSpec.parse(d["workload"]), image_seed=d.get("seed", 0),
                          wws_mib=float(d.get("wws_mib", 0.0)), dirty_rate_mib_s=float(d.get("dirty_rate_mib_s", 0.0)))
        spec.validate()
    except (KeyError, TypeError, ValueError, DomainSpecError, WorkloadError) as exc:
        raise InputRejected("bad_record", f"journal spec record {d!r}: {exc}") from None
    return spec


@dataclass(frozen=True)
class InDoubt:
    migration_id: str
    domain_id: str
    target_id: str
    target_address: str
    epoch: int


@dataclass
class Recovered:
    domains: dict[str, tuple[DomainSpec, int]] = field(default_factory=dict)
    in_doubt: dict[str, InDoubt] = field(default_factory=dict)
    arrived: dict[str, int] = field(default_factory=dict)  # migration id -> epoch (answers Query)
    departed: dict[str, tuple[int, str]] = field(default_factory=dict)  # domain id -> (epoch, new owner)
    skipped: list[str] = field(default_factory=list)  # records that made no sense, with why

    def snapshot(self) -> list[dict[str, Any]]:
        """Records that rebuild this state (for compaction)."""
        out: list[dict[str, Any]] = []
        for spec, epoch in self.domains.values():
            out.append({"t": "domain", "spec": spec_to_record(spec), "epoch": epoch})
        for d in self.in_doubt.values():
            out.append({"t": "pause", "mid": d.migration_id, "id": d.domain_id, "target": d.target_id,
                        "addr": d.target_address, "epoch": d.epoch})
        for mid, epoch in self.arrived.items():
            out.append({"t": "arrived_mark", "mid": mid, "epoch": epoch})
        for dom, (epoch, to) in self.departed.items():
            out.append({"t": "gone", "mid": "", "id": dom, "epoch": epoch, "to": to})
        return out


def fold(records: list[dict[str, Any]]) -> Recovered:
    """Replays journal records into the state they describe. Never raises on a bad record."""
    r = Recovered()
    for rec in records:
        try:
            _apply(r, rec)
        except (KeyError, TypeError, ValueError, InputRejected) as exc:
            r.skipped.append(f"{rec!r}: {exc}")
    return r


def _apply(r: Recovered, rec: dict[str, Any]) -> None:
    kind = rec["t"]
    if kind == "domain":
        spec = spec_from_record(rec["spec"])
        r.domains[spec.domain_id] = (spec, int(rec["epoch"]))
    elif kind == "arrived":
        spec = spec_from_record(rec["spec"])
        epoch = int(rec["epoch"])
        if epoch > r.departed.get(spec.domain_id, (-1, ""))[0]:
            r.domains[spec.domain_id] = (spec, epoch)
            r.departed.pop(spec.domain_id, None)
        r.arrived[rec["mid"]] = epoch
    elif kind == "restarted":
        spec = spec_from_record(rec["spec"])
        epoch = int(rec["epoch"])
        if epoch > r.departed.get(spec.domain_id, (-1, ""))[0]:
            r.domains[spec.domain_id] = (spec, epoch)
            r.departed.pop(spec.domain_id, None)
    elif kind == "fenced":
        held = r.domains.get(rec["id"])
        if held is not None and held[1] <= int(rec["epoch"]):
            del r.domains[rec["id"]]
        r.departed[rec["id"]] = (int(rec["winner_epoch"]), rec["winner"])
    elif kind == "arrived_mark":
        r.arrived[rec["mid"]] = int(rec["epoch"])
    elif kind == "pause":
        r.in_doubt[rec["mid"]] = InDoubt(rec["mid"], rec["id"], rec["target"], rec["addr"], int(rec["epoch"]))
    elif kind == "resume":
        r.in_doubt.pop(rec["mid"], None)
    elif kind == "gone":
        r.in_doubt.pop(rec["mid"], None)
        epoch = int(rec["epoch"])
        held = r.domains.get(rec["id"])
        if held is not None and held[1] < epoch:
            del r.domains[rec["id"]]
        r.departed[rec["id"]] = (epoch, rec["to"])
    else:
        raise ValueError(f"unknown record type {kind!r}")
