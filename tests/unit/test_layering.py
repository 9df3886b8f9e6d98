"""The package keeps its shape (docs/architecture.md): services see only ports, the domain sees
nothing else, nothing imports upwards or in a cycle, and the Lambda layer ships no test code."""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "common" / "sttpipe"

# What each layer may import of the package; a prefix allows its submodules too.
ALLOWED: dict[str, tuple[str, ...]] = {
    "sttpipe.domain": ("sttpipe.domain",),
    "sttpipe.ports": ("sttpipe.domain", "sttpipe.observability"),
    "sttpipe.services": (
        "sttpipe.domain",
        "sttpipe.ports",
        "sttpipe.speech.base",  # the speech API's port
        "sttpipe.services",
        "sttpipe.audio",
        "sttpipe.transcript",
        "sttpipe.observability",
        "sttpipe.config",
    ),
    "sttpipe.transcript": ("sttpipe.domain", "sttpipe.transcript"),
    "sttpipe.audio": ("sttpipe.audio",),
    "sttpipe.observability": (),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def imports() -> dict[str, set[str]]:
    """Each module's imports of the package, at module level (what runs on import)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[module_name(path)] = {n for n in names if n.split(".")[0] == "sttpipe"}
    return found


def test_the_scan_sees_the_package() -> None:
    assert {"sttpipe.bootstrap", "sttpipe.services.splitting", "sttpipe.ports"} <= set(imports())


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer: str) -> None:
    allowed = ALLOWED[layer]
    wrong = {
        module: sorted(
            name
            for name in imported
            if name != "sttpipe" and not any(name == a or name.startswith(f"{a}.") for a in allowed)
        )
        for module, imported in imports().items()
        if module == layer or module.startswith(f"{layer}.")
    }
    assert not {m: names for m, names in wrong.items() if names}


def test_no_import_cycles() -> None:
    graph = imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError(" -> ".join((*path, module)))
        if module in done:
            return
        for dependency in graph.get(module, ()):
            visit(dependency, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_layer_ships_no_fakes() -> None:
    shipped = set(imports())
    assert not {m for m in shipped if "fake" in m or "testing" in m or "memory" in m} - {
        "sttpipe.cache.memory"  # the L1 cache level, not a fake
    }


def test_the_import_graph_stays_shallow() -> None:
    """The longest chain of imports (bootstrap -> ... -> domain) was 12 modules before the
    layers were cut apart and is 7 now; a longer one means a layer started leaning on another."""
    graph = imports()
    floors: dict[str, int] = {}

    def floor(module: str) -> int:
        if module not in floors:
            floors[module] = 1 + max((floor(d) for d in graph.get(module, ())), default=0)
        return floors[module]

    assert max(floor(m) for m in graph) <= 7


LAYER = PACKAGE.parent


def _requirement_names(lines: list[str]) -> set[str]:
    return {
        re.split(r"[\[<>=! ;]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in lines
        if line and not line.startswith(("#", " ", "-"))
    }


def test_the_layer_ships_a_lock_with_hashes_of_what_it_asks_for() -> None:
    wanted = (LAYER / "requirements.in").read_text().splitlines()
    lock = (LAYER / "requirements.txt").read_text()
    pins = re.findall(
        r"^([a-z0-9._-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", lock, re.M
    )
    pinned = {name: version for name, version, _ in pins}
    # Every requirement line of the lock is pinned and hashed (pip then installs with hashes).
    assert len(pins) == len(re.findall(r"^[a-z0-9._-]+", lock, re.M)) > 20
    assert _requirement_names(wanted) <= set(pinned)
    # The worker's S3 conditional writes (If-None-Match) need boto3 1.35 (August 2024).
    assert tuple(int(p) for p in pinned["boto3"].split(".")[:2]) >= (1, 35)


def test_the_layer_asks_for_what_the_package_declares() -> None:
    declared = tomllib.loads((LAYER.parents[1] / "pyproject.toml").read_text())["project"]
    assert _requirement_names((LAYER / "requirements.in").read_text().splitlines()) == (
        _requirement_names(declared["dependencies"])
    )
