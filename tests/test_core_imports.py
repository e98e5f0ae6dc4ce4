"""The cores stay free of I/O: no asyncio, grpc, socket, time, os or global random.

Checked by parsing every module's imports (not by grepping text), and by
importing the cores in a fresh interpreter that has none of those loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"asyncio", "grpc", "socket", "time", "os", "subprocess", "threading", "aiomqtt", "shoal"}
# `random` may be imported only for its Random class (seeded, passed in).
RANDOM_ALLOWED_NAMES = {"Random"}
PURE_PACKAGES = [ROOT / "agent" / "core", ROOT / "hypervisor"]


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN or top == "random":
                    found.append(f"{path.name}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in FORBIDDEN:
                found.append(f"{path.name}:{node.lineno} from {node.module}")
            if top == "random" and {a.name for a in node.names} - RANDOM_ALLOWED_NAMES:
                found.append(f"{path.name}:{node.lineno} from random import {[a.name for a in node.names]}")
            if path.is_relative_to(ROOT / "hypervisor") and top == "agent":
                found.append(f"{path.name}:{node.lineno} hypervisor imports agent")
    return found


def test_core_modules_import_no_io_clock_or_global_random():
    files = [p for pkg in PURE_PACKAGES for p in sorted(pkg.rglob("*.py"))]
    assert len(files) >= 10, "the pure packages were not found"
    violations = [v for f in files for v in _violations(f)]
    assert violations == []


def test_checker_catches_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom random import choice\nimport asyncio.tasks\n")
    assert len(_violations(bad)) == 3


def test_cores_import_without_loading_io_modules():
    code = ("import sys; import agent.core.dissemination, agent.core.policy, agent.core.handoff, "
            "agent.core.config, agent.core.membership, agent.core.precopy, agent.core.ownership, hypervisor; "
            "bad = sorted(m for m in ('asyncio', 'grpc', 'socket') if m in sys.modules); print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
