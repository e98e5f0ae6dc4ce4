"""`shoal top`: a live terminal view of one agent's picture of the cluster.

One row per known node (from the agent's membership and gossip: utilization
bar, domains, status, in-flight migrations) and a scrolling event log made of
the changes between refreshes. Everything comes from one agent's `status`, so
the view is what that agent knows, not a global truth.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.adapters.control_client import FROM_ENV, ControlClient

EVENTS_SHOWN = 12
BAR_WIDTH = 20


def bar(fraction: float) -> Text:
    filled = max(0, min(BAR_WIDTH, round(fraction * BAR_WIDTH)))
    style = "green" if fraction <= 0.8 else ("yellow" if fraction <= 1.0 else "red")
    return Text("█" * filled + "·" * (BAR_WIDTH - filled), style=style)


def rows(status: dict) -> list[dict]:
    """One row per node the agent knows: itself first, then its members by id."""
    peers = {p["id"]: p for p in status["peers"]}
    members = {m["id"]: m for m in status["members"]}
    out = [{"id": status["id"], "cpu": status["cpu_utilization"], "mem": status["memory_utilization"],
            "domains": sum(d["state"] != "reserved-in" for d in status["domains"]), "state": "self", "migrations": len(status["migrations"])}]
    for node_id in sorted(set(peers) | set(members) - {status["id"]}):
        p, m = peers.get(node_id), members.get(node_id)
        out.append({"id": node_id, "cpu": p["cpu_utilization"] if p else None,
                    "mem": p["memory_utilization"] if p else None, "domains": p["domains"] if p else None,
                    "state": m["status"] if m else "gossip-only", "migrations": None})
    return out


def diff_events(before: dict | None, after: dict) -> list[str]:
    """Human lines for what changed between two status snapshots."""
    if before is None:
        return [f"watching {after['id']} at {after['address']}"]
    lines = []
    old = {m["id"]: m["status"] for m in before["members"]}
    for m in after["members"]:
        if old.get(m["id"]) != m["status"]:
            lines.append(f"member {m['id'][:8]} {old.get(m['id'], 'new')} -> {m['status']}")
    for key, verb in (("migrations_succeeded", "migrated out"), ("migrations_received", "received")):
        delta = after["counters"].get(key, 0) - before["counters"].get(key, 0)
        if delta:
            lines.append(f"{verb} {delta} domain(s)")
    failed = sum(v for k, v in after["counters"].items() if k.startswith("migrations_failed")) - \
        sum(v for k, v in before["counters"].items() if k.startswith("migrations_failed"))
    if failed:
        lines.append(f"{failed} migration(s) refused or failed")
    return lines


def render(status: dict, events: deque) -> Group:
    table = Table(title=f"shoal top — {status['id']} ({status['address']})  "
                        f"cluster mean ≈ {status['mean_utilization_estimate'] * 100:.0f}%", expand=False)
    for col in ("node", "cpu", "cpu%", "mem%", "domains", "state", "in flight"):
        table.add_column(col)
    for r in rows(status):
        cpu = "--" if r["cpu"] is None else f"{r['cpu'] * 100:5.1f}"
        mem = "--" if r["mem"] is None else f"{r['mem'] * 100:5.1f}"
        table.add_row(r["id"][:13], bar(r["cpu"] or 0.0), cpu, mem, "--" if r["domains"] is None else str(r["domains"]),
                      r["state"], "" if r["migrations"] is None else str(r["migrations"]))
    log = Panel("\n".join(list(events)[-EVENTS_SHOWN:]) or "(no events yet)", title="events")
    return Group(table, log)


async def run_top(target: str, interval_s: float = 1.0, iterations: int | None = None,
                  console: Console | None = None, tls=FROM_ENV) -> int:
    console = console or Console()
    client = ControlClient(target, tls)
    events: deque[str] = deque(maxlen=200)
    before = None
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            n = 0
            while iterations is None or n < iterations:
                status = await client.status()
                stamp = time.strftime("%H:%M:%S")
                events.extend(f"{stamp} {line}" for line in diff_events(before, status))
                before = status
                live.update(render(status, events), refresh=True)
                n += 1
                if iterations is None or n < iterations:
                    await asyncio.sleep(interval_s)
    finally:
        await client.close()
    return 0
