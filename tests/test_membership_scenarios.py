"""Raft-style scripted scenarios of the membership core, checked against golden traces.

Each file in tests/scenarios/membership_*.txt is a sequence of cases in etcd's
datadriven format: a command line, a `----` line, the expected output, a blank
line. The commands drive the deterministic harness (tests/membership_harness.py):

    start N [seed=S] [profile=P]   N nodes joining through n01, run until converged
    run SECONDS                    advance time; print the membership changes seen
    run-until NODE STATUS          run until every other running node sees NODE so
                                   (at most 60 virtual s); print the changes and when
    kill NODE | leave NODE | heal | partition A B | C D | delay NODE SECONDS
    restart NODE [gen=G] [inc=I]   new process for NODE at address generation G
    status                         each running node's view: A alive, S suspect,
                                   D dead, L left, . unknown (columns n01, n02, ...)

A change is printed once per (member, status, incarnation, address) with the
first and last time it was seen and by how many nodes. Timings are virtual and
exact. After a deliberate change to the core, regenerate the traces with
SHOAL_REWRITE=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.core.membership import MemberStatus
from agent.core.membership_config import MembershipConfig
from tests.membership_harness import Net, address_of, node_id

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("membership_*.txt"))
REWRITE = os.environ.get("SHOAL_REWRITE") == "1"
LETTER = {MemberStatus.ALIVE: "A", MemberStatus.SUSPECT: "S", MemberStatus.DEAD: "D", MemberStatus.LEFT: "L"}


def parse(text: str) -> list[tuple[str, str]]:
    cases, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if not lines[i].strip() or lines[i].startswith("#"):
            i += 1
            continue
        command = lines[i].strip()
        assert lines[i + 1] == "----", f"line {i + 2}: expected ---- after {command!r}"
        i += 2
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        cases.append((command, "\n".join(expected)))
    return cases


class Runner:
    def __init__(self) -> None:
        self.net: Net | None = None
        self.ids: list[str] = []
        self.generation: dict[str, int] = {}

    def run(self, command: str) -> str:
        word, *args = command.split()
        options = dict(a.split("=", 1) for a in args if "=" in a)
        args = [a for a in args if "=" not in a]
        return getattr(self, "do_" + word.replace("-", "_"))(args, options)

    def do_start(self, args, options) -> str:
        n = int(args[0])
        config = MembershipConfig.profile(options.get("profile", "local"))
        self.net = Net(config, seed=int(options.get("seed", 1)))
        self.ids = [node_id(i) for i in range(1, n + 1)]
        self.net.start(n)
        took_s = self.net.run_until(self.net.converged, 60, "convergence")
        return f"{n} nodes converged after {took_s:.2f} s"

    def do_run(self, args, options) -> str:
        since_s = self.net.now_s
        self.net.run_for(float(args[0]))
        return self._changes(since_s)

    def do_run_until(self, args, options) -> str:
        target, status = args[0], MemberStatus(args[1])
        since_s = self.net.now_s
        took_s = self.net.run_until(lambda: self.net.all_see(target, status), 60, command_text(args))
        done = f"all see {target} {status.value} after {took_s:.2f} s"
        return "\n".join(filter(None, [self._changes(since_s), done]))

    def do_kill(self, args, options) -> str:
        self.net.kill(args[0])
        return ""

    def do_leave(self, args, options) -> str:
        self.net._dispatch(args[0], self.net.nodes[args[0]].leave(self.net.now_s))
        return ""

    def do_restart(self, args, options) -> str:
        nid = args[0]
        generation = int(options.get("gen", self.generation.get(nid, 0)))
        self.generation[nid] = generation
        index = self.ids.index(nid) + 1
        seed = address_of(2 if index == 1 else 1, self.generation.get(node_id(2 if index == 1 else 1), 0))
        self.net.restart(nid, address_of(index, generation), int(options.get("inc", 0)), [seed])
        return ""

    def do_partition(self, args, options) -> str:
        bar = args.index("|")
        self.net.partition(args[:bar], args[bar + 1:])
        return ""

    def do_heal(self, args, options) -> str:
        self.net.heal()
        return ""

    def do_delay(self, args, options) -> str:
        self.net.extra_delay_s[args[0]] = float(args[1])
        return ""

    def do_status(self, args, options) -> str:
        rows = []
        for observer in sorted(self.net.nodes):
            node = self.net.nodes[observer]
            rows.append(observer + " " + "".join(
                LETTER[s] if (s := node.status_of(nid)) else "." for nid in self.ids))
        return "\n".join(rows)

    def _changes(self, since_s: float) -> str:
        groups: dict[tuple, list[float]] = {}
        for o in self.net.observed:
            if o.time_s > since_s:
                m = o.event.member
                groups.setdefault((m.node_id, m.status.value, m.incarnation, m.address), []).append(o.time_s)
        lines = []
        for (nid, status, incarnation, address), times in sorted(groups.items(), key=lambda g: (min(g[1]), g[0])):
            lines.append(f"+{min(times) - since_s:.2f}..{max(times) - since_s:.2f} s {nid} {status} "
                         f"inc={incarnation} at {address}: seen by {len(times)}")
        return "\n".join(lines)


def command_text(args) -> str:
    return " ".join(args)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_membership_scenario_matches_its_golden_trace(path: Path):
    runner = Runner()
    cases = parse(path.read_text())
    assert cases, f"{path.name} has no cases"
    actual = [(command, runner.run(command)) for command, _ in cases]
    if REWRITE:
        path.write_text(rewrite(path.read_text(), actual))
        return
    for (command, expected), (_, got) in zip(cases, actual):
        assert got == expected, f"{path.name}: {command}\n--- expected\n{expected}\n--- got\n{got}"


def rewrite(text: str, actual: list[tuple[str, str]]) -> str:
    """The file with every expected output replaced, comments and commands kept."""
    out, lines, i, results = [], text.splitlines(), 0, iter(actual)
    while i < len(lines):
        if not lines[i].strip() or lines[i].startswith("#"):
            out.append(lines[i])
            i += 1
            continue
        command, got = next(results)
        out += [lines[i], "----"] + ([got] if got else [])
        i += 2
        while i < len(lines) and lines[i].strip():
            i += 1
    return "\n".join(out) + "\n"


def test_scenario_parser_reads_commands_and_outputs():
    assert parse("# c\nstart 3\n----\nok\n\nkill n02\n----\n\nrun 1\n----\na\nb\n") == [
        ("start 3", "ok"), ("kill n02", ""), ("run 1", "a\nb")]
