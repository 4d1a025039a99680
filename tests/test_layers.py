"""The architecture, checked from the imports: what the folders promise, the code keeps.

* The sans-I/O cores (every decision of the device, the wire and the server's connections) import
  nothing that does I/O, starts threads, reads a clock or runs an event loop; from pttd they import
  only each other and a few pure helpers.
* The layers depend one way: ``wire`` on nothing of ours but errors; ``server`` not on the radio;
  nothing but the ``pttd bench`` command on the benchmarks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pttd

PACKAGE = Path(pttd.__file__).parent

CORES = (
    "pttd.wire.messages",
    "pttd.wire.client",
    "pttd.radio.machine",
    "pttd.radio.console.editor",
    "pttd.radio.console.interpreter",
    "pttd.radio.audio.jitter",
    "pttd.server.rooms",
    "pttd.server.session",
    "pttd.e2ee.sframe",
    "pttd.e2ee.keys",
    "pttd.e2ee.keyring",
)
# Modules that do I/O, run an event loop, start threads or read a clock.
FORBIDDEN = {
    "asyncio",
    "concurrent",
    "evdev",
    "gpiozero",
    "multiprocessing",
    "opuslib",
    "selectors",
    "serial",
    "socket",
    "sounddevice",
    "sqlite3",
    "ssl",
    "subprocess",
    "threading",
    "time",
    "websockets",
}
# What a core may import from pttd besides other cores: pure helpers.
PURE_HELPERS = {
    "pttd",
    "pttd.errors",
    "pttd.redact",
    "pttd.radio.config",
    "pttd.radio.boards",
    "pttd.ratelimit",
    "pttd.kdf",
    "pttd.radio.status",
    "pttd.radio.console.pin",
    *("pttd.wire", "pttd.server", "pttd.radio", "pttd.radio.console", "pttd.e2ee"),  # __init__s
}

# Which layers each layer may import (top-level modules such as cli and demo may import any).
LAYERS = {
    "wire": {"wire"},
    "e2ee": {"e2ee"},  # the cryptography: no knowledge of the wire, the radio or the server
    "server": {"wire", "server", "e2ee"},  # e2ee: the key authority's admin commands
    "radio": {"wire", "radio", "sim", "e2ee"},  # the device's "sim" audio backend is a real option
    "sim": {"wire", "radio", "sim", "server", "e2ee"},  # a loopback server with paired devices
    "bench": {"wire", "radio", "sim", "server", "bench", "demo", "e2ee"},
}
SHARED = {"pttd", "pttd.errors", "pttd.redact", "pttd.cliargs", "pttd.kdf", "pttd.ratelimit"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports count too)."""
    found: set[str] = set()
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            if name == "pttd" or name.startswith("pttd."):  # from pttd.wire import messages
                found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


@pytest.mark.parametrize("core", CORES)
def test_a_core_does_no_io(core: str) -> None:
    if core not in MODULES:
        pytest.fail(f"{core} is listed as a core but does not exist")
    imported = imports(MODULES[core])
    bad = sorted(n for n in imported if n.split(".")[0] in FORBIDDEN)
    assert not bad, f"{core} imports {bad}"
    foreign = sorted(ours(imported) - set(CORES) - PURE_HELPERS)
    assert not foreign, f"{core} imports {foreign}, which are neither cores nor pure helpers"


def test_pure_helpers_read_no_clock_and_do_no_network_io() -> None:
    for helper in sorted(PURE_HELPERS):
        imported = imports(MODULES[helper])
        bad = sorted(
            n for n in imported if n.split(".")[0] in FORBIDDEN - {"threading", "subprocess"}
        )
        assert not bad, f"{helper} imports {bad}"


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_depend_one_way(layer: str) -> None:
    allowed = LAYERS[layer]
    for name, path in sorted(MODULES.items()):
        if not name.startswith(f"pttd.{layer}.") and name != f"pttd.{layer}":
            continue
        for target in sorted(ours(imports(path)) - SHARED):
            assert target.split(".")[1] in allowed, f"{name} imports {target}"


def test_only_the_bench_command_reaches_the_benchmarks() -> None:
    for name, path in sorted(MODULES.items()):
        if name.startswith("pttd.bench"):
            continue
        assert not {n for n in imports(path) if n.startswith("pttd.bench")}, name


def test_the_readme_code_map_matches_the_tree() -> None:
    """Every path the README's map names exists, and every module of the package is named in it
    (itself, or its folder)."""
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `device/pttd/"):
            continue
        cell = row.split("|")[1]
        paths = [p.strip().strip("`") for p in cell.split(",")]
        folder = Path(paths[0]).parent
        for path in paths:
            full = path if path.startswith("device/") else str(folder / path)
            assert (PACKAGE.parents[1] / full).exists(), f"the map names {full}, which is gone"
            named.add(full.rstrip("/"))
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parents[1])
        folder = str(relative.parent)
        if path.name == "__init__.py" and (
            path.parent == PACKAGE or any(n.startswith(folder + "/") for n in named)
        ):
            continue  # a package whose modules the map names
        chain = [relative, *relative.parents]
        assert any(str(p) in named for p in chain), f"{relative} is not in the README's map"
