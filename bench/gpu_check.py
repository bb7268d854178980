"""The GPU check: what a lent GPU machine measures in one run (bench/gpu_check.sh starts it there).

Random-weight Llamas with SmolLM2's tokenizer stand in for real checkpoints (none can be downloaded
there): one of about 1B parameters and one with Llama-3.1-8B's shapes, both in bf16. For each step:
the real command, its time, torch's peak device memory and the memory plan's peak for it:

  1B: bf16 load + held-out eval; prune with Wanda and SparseGPT, dense and block-sequential calibration;
      a short search (candidates per minute); the TUI driven headless (start, pause, step, stop).
  8B: a short search (device peak as a multiple of the weight bytes); SparseGPT's statistics held at once
      (dense calibration) against one block at a time (sequential, first blocks).

Writes $OUT/gpu_check.json (every figure) and $OUT/gpu_check.log. GPU_CHECK_SMALL=1 runs the same steps
with tiny shapes (a dry run on a CPU); GPU_CHECK_STEPS=a,b runs only the steps whose names contain a or b.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = Path(os.environ.get("OUT") or ROOT / "bench" / "results")
SMALL = bool(os.environ.get("GPU_CHECK_SMALL"))
WORK = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu-check"))
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET", 450))
ONLY = [s.strip() for s in os.environ.get("GPU_CHECK_STEPS", "").split(",") if s.strip()]  # a rerun of some steps
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=True),
    "8b": json.loads((ROOT / "tests" / "data" / "llama-3.1-8b" / "config.json").read_text()),
}
TINY = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
DATA = (["--seqlen", "128", "--calib-tokens", "1024", "--eval-tokens", "256"] if SMALL else
        ["--seqlen", "2048", "--calib-tokens", "65536", "--eval-tokens", "16384", "--batch-size", "8"])
FITNESS = ["--fitness-tokens", "256" if SMALL else "8192"]  # search and TUI only
STARTED = time.monotonic()
LOG = []


def log(text: str) -> None:
    line = f"[{time.monotonic() - STARTED:6.1f}s] {text}"
    print(line, flush=True)
    LOG.append(line)


def make_model(name: str, tokenizer: Path) -> Path:
    """A random-weight bf16 Llama saved as a model folder (weights drawn on the GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    folder = WORK / f"random-{name}"
    if (folder / "config.json").is_file():
        return folder
    tok = AutoTokenizer.from_pretrained(tokenizer)
    values = {k: v for k, v in SHAPES[name].items()
              if k not in ("architectures", "model_type", "transformers_version", "torch_dtype")}
    values.update(TINY if SMALL else {})
    values["vocab_size"] = max(values.get("vocab_size", 0), len(tok))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**values), dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="5GB")
    tok.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def measure(step: str, argv: list[str], timeout: float) -> dict:
    """The real command in its own process (bench/measure.py), with its plan, time and peaks."""
    result = WORK / f"{step}.json"
    result.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "measure.py"), str(result), "--", *argv],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if not result.is_file():
        raise RuntimeError(f"exit {run.returncode}: {(run.stderr or run.stdout).strip()[-800:]}")
    out = json.loads(result.read_text())
    out["stderr_tail"] = run.stderr.strip().splitlines()[-3:]
    return out


def summarise(out: dict) -> str:
    plan = out.get("plan") or {}
    where = "device_bytes" if "peak_allocated_bytes" in out else "host_bytes"
    planned = max((p[where] for p in plan.get("phases", [])), default=0)
    peak = out.get("peak_allocated_bytes", out["peak_rss_bytes"])
    return (f"exit {out['exit']} in {out['seconds']:.1f} s; peak {peak / 2**30:.2f} GiB, plan {planned / 2**30:.2f} "
            f"GiB ({planned / peak - 1:+.0%})" if peak else "no peak")


def candidates_per_minute(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "candidates.jsonl").read_text().splitlines()]
    scored = [r for r in rows if r["fitness"] is not None]
    seconds = sum(r["seconds"] for r in rows)
    return {"candidates": len(rows), "scored": len(scored), "seconds_in_candidates": seconds,
            "per_minute": 60 * len(rows) / seconds if seconds else None}


def tui(model: Path, run: Path) -> dict:
    """The real app with the real engine, driven headless: load, start, pause, step, stop, quit."""
    from engine.data_config import DataConfig
    from workbench.app import AppConfig, make_app
    from workbench.contract import RunOptions
    from workbench.engine_api import EngineAPI
    from workbench.options import data_config
    from workbench.cli import build_parser

    args = build_parser().parse_args(["tui", *DATA, *FITNESS])
    data: DataConfig = data_config(args)
    api = EngineAPI(str(model), data, dtype="bfloat16")
    settings = api.search_settings(sparsity=0.6, population=24, generations=5)
    app = make_app(AppConfig(settings, RunOptions(str(run)), redraw_s=0.5), api)
    seen: list[str] = []

    async def until(pilot, predicate, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not seen or seen[-1] != app.dsa.state:
                seen.append(app.dsa.state)
            if predicate():
                return True
            await pilot.pause(0.02)
        raise TimeoutError(f"TUI: waited {timeout} s; states {seen}")

    async def drive():
        async with app.run_test(size=(120, 40)) as pilot:
            t0 = time.monotonic()
            await until(pilot, lambda: app.status_text.startswith("ready"), 300)
            ready = time.monotonic() - t0
            await pilot.press("s")
            await until(pilot, lambda: app.dsa.state == "running", 300)
            await until(pilot, lambda: len(app.scored_times) >= 2, 300)
            await pilot.press("p")
            await until(pilot, lambda: app.dsa.state == "paused", 60)
            before = len(app.scored_times)
            await pilot.press("n")
            await until(pilot, lambda: app.dsa.state == "paused" and len(app.scored_times) > before, 120)
            await pilot.press("t")
            await until(pilot, lambda: app.dsa.state == "stopped", 60)
            status = app.status_line()
            await pilot.press("ctrl+q")
            return {"ready_s": ready, "states": seen, "status_line": status}

    return asyncio.run(drive())


def sparsegpt_memory(model: Path) -> dict:
    """SparseGPT's statistics: every Hessian at once (dense calibration) against one block at a time
    (block-sequential pruning of the first blocks: the peak repeats in every block)."""
    import torch

    from engine.loading import load_model
    from engine.sequential import prune_sequentially
    from engine.session import Session
    from workbench.cli import build_parser
    from workbench.options import data_config

    data = data_config(build_parser().parse_args(["prune", "--out", "x", *DATA]))
    session = Session(load_model(str(model), dtype="bfloat16"), data, restorable=False)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    peak = torch.cuda.max_memory_allocated if torch.cuda.is_available() else (lambda: 0)
    reset = torch.cuda.reset_peak_memory_stats if torch.cuda.is_available() else (lambda: None)
    weights = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    session.windows("calibration")
    reset()
    t0 = time.perf_counter()
    stats = session.calibration(hessians=True)
    sync()
    dense = {"seconds": time.perf_counter() - t0, "peak_allocated_bytes": peak(), "statistics_bytes": stats.nbytes()}
    session._calibration = stats = None
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    blocks = session.blocks[:4]
    ratios = {n: 0.5 for b in blocks for n in b.linears}
    reset()
    t0 = time.perf_counter()
    prune_sequentially(session.model, blocks, session.windows("calibration"), ratios, "sparsegpt",
                       batch_size=data.batch_size)
    sync()
    sequential = {"blocks": len(blocks), "of": len(session.blocks), "seconds": time.perf_counter() - t0,
                  "peak_allocated_bytes": peak()}
    return {"weight_bytes": weights, "dense_calibration": dense, "sequential_first_blocks": sequential}


def child(kind: str, *args: str, timeout: float = 600) -> dict:
    """`tui` or `sparsegpt` in a fresh process (its own device memory), as JSON."""
    run = subprocess.run([sys.executable, __file__, f"--{kind}", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    lines = run.stdout.strip().splitlines()
    if run.returncode or not lines:
        raise RuntimeError(f"exit {run.returncode}: {run.stderr.strip()[-800:]}")
    return json.loads(lines[-1])


def main() -> None:
    if sys.argv[1:2] == ["--tui"]:
        print(json.dumps(tui(Path(sys.argv[2]), Path(sys.argv[3]))))
        return
    if sys.argv[1:2] == ["--sparsegpt"]:
        print(json.dumps(sparsegpt_memory(Path(sys.argv[2]))))
        return
    import torch
    import transformers

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {"small": SMALL, "torch": torch.__version__, "transformers": transformers.__version__,
                     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                     "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory
                     if torch.cuda.is_available() else None, "data": DATA, "steps": {}}
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, GPU {results['gpu']}")
    tokenizer = Path(os.environ.get("GPU_CHECK_TOKENIZER", ROOT / ".gpu" / "tokenizer"))

    def step(name: str, fn, budget_left: float = 60):
        if ONLY and not name.startswith("make") and not any(part in name for part in ONLY):
            return None
        if time.monotonic() - STARTED > BUDGET_S - budget_left:
            results["steps"][name] = {"skipped": "out of time"}
            log(f"{name}: skipped (out of time)")
            return None
        t0 = time.monotonic()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - one failed step must not hide the others' figures
            results["steps"][name] = {"error": f"{type(exc).__name__}: {exc}"[-1500:]}
            log(f"{name}: FAILED {type(exc).__name__}: {str(exc)[-600:]}")
            return None
        results["steps"][name] = value
        text = summarise(value) if isinstance(value, dict) and "exit" in value else json.dumps(value)[:400]
        log(f"{name} ({time.monotonic() - t0:.0f} s): {text}")
        (OUT / "gpu_check.json").write_text(json.dumps(results, indent=2))
        return value

    small = step("make 1b", lambda: str(make_model("1b", tokenizer)))
    if small:
        m = ["--model", small, "--dtype", "bfloat16"]
        step("1b eval (bf16 load)", lambda: measure("eval", ["eval", small, "--dtype", "bfloat16", *DATA], 300))
        for metric in ("wanda", "sparsegpt"):
            for calibration in ("dense", "sequential"):
                out = str(WORK / f"out-{metric}-{calibration}")
                step(f"1b prune {metric} {calibration}", lambda metric=metric, calibration=calibration, out=out: measure(
                    f"prune-{metric}-{calibration}", ["prune", *m, "--metric", metric, "--calibration", calibration,
                                                      "--sparsity", "0.5", "--out", out, "--quiet", *DATA], 300))
                shutil.rmtree(out, ignore_errors=True)
        run = WORK / "search-1b"
        if step("1b search (--device-map auto)", lambda: measure(
                "search-1b", ["search", *m, "--device-map", "auto", "--sparsity", "0.6", "--population", "12",
                              "--generations", "2", "--run", str(run), "--quiet", *DATA, *FITNESS], 400)):
            step("1b candidates per minute", lambda: candidates_per_minute(run))
        step("1b TUI headless", lambda: child("tui", small, str(WORK / "tui-run")), budget_left=90)
    big = step("make 8b", lambda: str(make_model("8b", tokenizer)), budget_left=150)
    if big:
        run = WORK / "search-8b"
        if step("8b search", lambda: measure("search-8b", ["search", "--model", big, "--dtype", "bfloat16",
                                                           "--sparsity", "0.6", "--population", "6",
                                                           "--generations", "1", "--run", str(run), "--quiet",
                                                           *DATA, *FITNESS], 400), budget_left=100):
            step("8b candidates per minute", lambda: candidates_per_minute(run))
        step("8b SparseGPT statistics", lambda: child("sparsegpt", big), budget_left=60)
    results["seconds"] = time.monotonic() - STARTED
    (OUT / "gpu_check.json").write_text(json.dumps(results, indent=2))
    (OUT / "gpu_check.log").write_text("\n".join(LOG) + "\n")
    log(f"done in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
