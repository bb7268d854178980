"""Layer boundaries: the engine never imports textual; screens never import torch at import time."""

from __future__ import annotations

import subprocess
import sys

ENGINE_MODULES = ["engine", "engine.session", "engine.loading", "engine.allocation", "engine.pruning",
                  "engine.evaluation", "engine.saving", "engine.corpus", "engine.calibration", "engine.sparsegpt",
                  "engine.structured.run", "engine.structured.export"]


def imported(modules: list[str]) -> set[str]:
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_engine_never_imports_textual_or_rich():
    mods = imported(ENGINE_MODULES)
    assert "textual" not in mods and "rich" not in mods


def test_screens_do_not_import_torch():
    mods = imported(["screens"])
    assert "torch" not in mods
