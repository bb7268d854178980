"""DarwinLM-style structured pruning of the default model to about half its decoder parameters.

    python bench/structured.py [--target 0.5 --generations 6 --offspring 8 --lr 1e-4]

One level database, then two searches with the same stages and budget of candidates: training-aware
(each stage fine-tunes before scoring) and one-shot (no fine-tune, the ablation). Then the uniform
structure and both searched structures are measured on the held-out split (never seen by the
searches): one-shot, and after the same short fine-tune. Finally the training-aware structure is
exported and its parameter count and forward latency are compared with the dense model.
Run folders and the export go to bench/results/.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.data_config import DataConfig  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.saving import folder_bytes  # noqa: E402
from engine.search import events as ev  # noqa: E402
from engine.search.control import Control  # noqa: E402
from engine.session import Session  # noqa: E402
from engine.structured.compact import parameter_count  # noqa: E402
from engine.structured.export import export_structure  # noqa: E402
from engine.structured.run import (RunSource, StructuredEvaluator, StructuredRun, Workspace,  # noqa: E402
                                   build_run_database)
from engine.structured.search import StructuredSearch, StructuredSettings, parse_stages  # noqa: E402
from engine.structured.structure import Structure, uniform  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def latency(model, tokens: torch.Tensor, repeats: int = 5) -> float:
    """Median seconds of one forward over `tokens`."""
    times = []
    with torch.no_grad():
        model(tokens)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(tokens)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=float, default=0.5, help="fraction of decoder parameters kept")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--offspring", type=int, default=8)
    p.add_argument("--stages", default="4:1024:1024,2:2048:2048,1:4096:4096")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--finetune-tokens", type=int, default=16384, help="the final short fine-tune of every row")
    args = p.parse_args()
    data = DataConfig(calib_tokens=16384)
    t0 = time.perf_counter()
    session = Session(load_model(None), data)
    run = RESULTS / "structured"
    shutil.rmtree(run, ignore_errors=True)
    db = build_run_database(run, RunSource(None, data), session=session)
    print(f"model {session.loaded.label} on {session.loaded.device}; level database in "
          f"{time.perf_counter() - t0:.0f} s ({folder_bytes(db.folder) / 2**20:.0f} MiB)",
          flush=True)
    workspace = Workspace(session, db, args.lr)
    structures = {"uniform": uniform(db.shapes, args.target)}
    for name, one_shot in (("training-aware", False), ("one-shot", True)):
        settings = StructuredSettings(target=args.target, generations=args.generations, offspring=args.offspring,
                                      stages=parse_stages(args.stages), one_shot=one_shot, lr=args.lr)
        store = StructuredRun(RESULTS / f"structured-{name}").store
        shutil.rmtree(store.folder, ignore_errors=True)

        def on_event(event, name=name):
            if isinstance(event, ev.GenerationDone):
                print(f"  {name} generation {event.generation}: winner KL {event.best:.5f}", flush=True)

        t1 = time.perf_counter()
        search = StructuredSearch(settings, db.shapes, store, StructuredEvaluator(workspace, settings),
                                  fractions=db.block_fractions, on_event=on_event)
        best = search.run(Control()).best
        print(f"{name}: {search.state['evaluated']} evaluations in {time.perf_counter() - t1:.0f} s; "
              f"best {best.text}", flush=True)
        structures[name] = Structure.parse(best.text, db.shapes)

    print(f"\nheld-out perplexity (dense {session.perplexity():.2f}); fine-tune: {args.finetune_tokens} tokens, "
          f"AdamW lr {args.lr}")
    print("| structure | kept decoder params | one-shot | fine-tuned |")
    print("|---|---|---|---|")
    for name, structure in structures.items():
        texts = {name: str(structure)}
        raw = workspace.held_out(texts)[name]
        tuned = workspace.held_out(texts, finetune_tokens=args.finetune_tokens)[name]
        print(f"| {name} | {db.kept_fraction(structure):.3f} | {raw:.2f} | {tuned:.2f} |", flush=True)

    out = RESULTS / "structured-export"
    t1 = time.perf_counter()
    done = export_structure(workspace, structures["training-aware"], out, force=True, evaluate=False)
    print(f"\nexport: {out} in {time.perf_counter() - t1:.1f} s, "
          f"{folder_bytes(out) / 2**20:.0f} MiB")
    from transformers import AutoModelForCausalLM

    t1 = time.perf_counter()
    small = AutoModelForCausalLM.from_pretrained(out).eval()
    print(f"reload with AutoModelForCausalLM: {time.perf_counter() - t1:.2f} s ({type(small).__name__})")
    tokens = session.windows("evaluation")[:1]
    dense_s, small_s = latency(session.model, tokens), latency(small, tokens)
    dense_n = parameter_count(session.model)
    print(f"parameters: dense {dense_n / 1e6:.1f}M, exported {done.params / 1e6:.1f}M "
          f"({done.params / dense_n:.3f}); decoder linears kept {db.kept_fraction(structures['training-aware']):.3f}")
    print(f"forward of {tokens.numel()} tokens on {session.loaded.device} ({torch.get_num_threads()} threads): "
          f"dense {dense_s * 1000:.0f} ms, exported {small_s * 1000:.0f} ms, speed-up {dense_s / small_s:.2f}x")


if __name__ == "__main__":
    main()
