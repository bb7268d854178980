"""Layer boundaries: the engine never imports textual; screens and the CLI's start never import torch;
`import engine` is light; no import cycles in workbench/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sources(package: str) -> dict[str, Path]:
    """Every module of a package, by dotted name."""
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted((ROOT / package).rglob("*.py"))}


def modules(package: str) -> list[str]:
    return list(sources(package))


def imported(names: list[str]) -> set[str]:
    code = f"import sys\nfor m in {names!r}: __import__(m)\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def test_engine_never_imports_textual_or_rich():
    mods = imported(modules("engine"))
    assert "engine.structured.modeling" in mods  # every module was imported, the heavy ones too
    assert "textual" not in mods and "rich" not in mods


def test_screens_do_not_import_torch():
    names = modules("screens")
    assert len(names) > 10
    mods = imported(names)
    assert {"screens.dashboard", "screens.structured", "textual"} <= mods
    assert "torch" not in mods and "transformers" not in mods


def test_import_engine_and_the_cli_are_light():
    mods = imported(["engine", "engine.choices", "engine.search", "engine.search.control", "workbench.cli"])
    assert "torch" not in mods and "transformers" not in mods and "textual" not in mods


def test_help_answers_without_heavy_imports():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "workbench.cli", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert "usage: dsa-workbench" in out.stdout
    assert not any(f"| {m}" in out.stderr for m in ("torch", "transformers", "textual"))


def test_no_import_cycles_in_workbench():
    """Every import of a workbench module by another, at module level or inside functions, forms no cycle."""
    edges: dict[str, set[str]] = {}
    for name, path in sources("workbench").items():
        tree = ast.parse(path.read_text())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        edges[name] = {t for t in targets if t.startswith("workbench.") and t in modules("workbench")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    assert not [m for m in edges if reaches(m, m, set())]
