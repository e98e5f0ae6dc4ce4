"""hypervisor/ stays a pure model: no asyncio, network, wall clock or global random."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hypervisor

PACKAGE_DIR = Path(hypervisor.__file__).parent
MODULES = sorted(PACKAGE_DIR.glob("*.py"))

# Modules the model must never import (DESIGN.md "The hypervisor model").
FORBIDDEN = {"asyncio", "grpc", "socket", "time", "selectors", "threading", "agent", "shoal"}


def imported_modules(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, tuple(alias.name for alias in node.names)))
    return found


def test_there_are_modules_to_check():
    assert {p.name for p in MODULES} >= {"workload.py", "scheduler.py", "domain.py", "memory.py", "host.py", "clock.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_nothing_impure(path):
    for module, names in imported_modules(path):
        assert module.split(".")[0] not in FORBIDDEN, f"{path.name} imports {module}"
        if module == "random":
            # Only seeded instances: the global random source is shared state.
            assert names == ("Random",), f"{path.name} imports {names} from random"


def test_every_public_name_is_reexported():
    for name in hypervisor.__all__:
        assert getattr(hypervisor, name) is not None
    assert {"WorkloadSpec", "allocate", "DomainSpec", "MemoryImage", "Host", "ScaledClock"} <= set(hypervisor.__all__)
