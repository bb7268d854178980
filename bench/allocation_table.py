"""Held-out perplexity of every allocation method on the default model (DESIGN.md section 7 analogue),
with dense and block-sequential calibration side by side.

    python bench/allocation_table.py                       # Wanda at 50/60/70%, magnitude(-row), SparseGPT at 60%
    python bench/allocation_table.py --calibrations dense  # without the block-sequential rows
    python bench/allocation_table.py --eval-tokens 16384   # more tokens, slower
    python bench/allocation_table.py --methods atp dlp     # only these columns, merged into the stored table

Prints one markdown table per metric (rows: sparsity and calibration; columns: every method of
engine.choices.METHODS, then the published DSA function under the reference code's NaN policy) and the token
counts and wall time; writes bench/results/allocation_table.json with each allocation's block ratios and
parameters (AlphaPruning's eps, the blocks whose NaN the reference policy replaced). A method whose allocation is
invalid on this model (e.g. an op producing NaN) is shown as `rejected` with the reason below the table.
Magnitude reads no inputs, so its sequential pruning equals its dense one and is not run twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.choices import METHOD_LABELS, METHODS, REFERENCE_DSA_LABEL, REFERENCE_DSA_TEXT  # noqa: E402
from engine.data_config import DataConfig  # noqa: E402
from engine.errors import WorkbenchError  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.session import Session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = METHODS + (REFERENCE_DSA_TEXT,)
LABELS = {**METHOD_LABELS, REFERENCE_DSA_TEXT: REFERENCE_DSA_LABEL}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--calib-tokens", type=int, default=16384)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    p.add_argument("--other-metrics", nargs="*", default=["magnitude", "magnitude-row", "sparsegpt"],
                   help="metrics run at --other-sparsity only")
    p.add_argument("--other-sparsity", type=float, default=0.6)
    p.add_argument("--calibrations", nargs="+", default=["dense", "sequential"])
    p.add_argument("--methods", nargs="+", choices=COLUMNS, metavar="METHOD",
                   help="run only these columns and replace them in the stored results (same settings)")
    args = p.parse_args()
    columns = tuple(args.methods or COLUMNS)

    start = time.time()
    data = DataConfig(calib_tokens=args.calib_tokens, eval_tokens=args.eval_tokens, seqlen=args.seqlen)
    loaded = load_model(args.model, status=lambda m: print(m, file=sys.stderr))
    session = Session(loaded, data)
    print(f"model {loaded.label} on {loaded.device}; calibration {data.calib_tokens} tokens, "
          f"held-out evaluation {data.eval_tokens} tokens, seqlen {data.seqlen}", flush=True)
    dense = session.perplexity()
    print(f"dense perplexity {dense:.3f}", flush=True)
    runs = [(metric, sparsity, mode) for metric, sparsity in
            [("wanda", s) for s in args.sparsities] + [(m, args.other_sparsity) for m in args.other_metrics]
            for mode in args.calibrations if mode == "dense" or not metric.startswith("magnitude")]
    results: dict = {"dense": dense, "tokens": {"calibration": data.calib_tokens, "evaluation": data.eval_tokens},
                     "runs": []}
    stored = RESULTS / "allocation_table.json"
    if args.methods:  # the other columns as stored: the same model, data and pruning give the same numbers
        before = json.loads(stored.read_text())
        if before["tokens"] != results["tokens"] or abs(before["dense"] - dense) > 1e-3 * dense:  # float noise
            sys.exit(f"{stored} was measured with other tokens or another model: run every column")
        results["runs"] = [r for r in before["runs"] if r["method"] not in columns]
        results["seconds_of_other_columns"] = before["seconds"]
    rejected: dict[str, str] = {f"{r['metric']} {r['sparsity']:.0%} {r['method']}": r["rejected"]
                                for r in results["runs"] if r.get("rejected")}
    for metric, sparsity, mode in runs:
        for method in columns:
            t0 = time.time()
            row = {"metric": metric, "sparsity": sparsity, "calibration": mode, "method": method}
            try:
                allocation = session.allocate(method, sparsity, metric)
            except WorkbenchError as exc:
                rejected[f"{metric} {sparsity:.0%} {method}"] = str(exc)
                results["runs"].append({**row, "ppl": None, "rejected": str(exc)})
                print(f"{metric:>9} {sparsity:.0%} {mode:>10} {method:>8}: rejected ({exc})", flush=True)
                continue
            session.prune(allocation, metric, calibration=mode)
            ppl = session.perplexity()
            results["runs"].append({**row, "ppl": ppl, "block_ratios": list(allocation.block_ratios),
                                    "parameters": allocation.parameters})
            print(f"{metric:>9} {sparsity:.0%} {mode:>10} {LABELS[method]:>8}: ppl {ppl:.3f} "
                  f"({time.time() - t0:.1f} s)", flush=True)
    session.restore()
    results["seconds"] = time.time() - start
    print()
    print(render(results, rejected))
    print(f"\ntotal {results['seconds'] / 60:.1f} min on {loaded.device} "
          f"({data.calib_tokens} calibration / {data.eval_tokens} held-out tokens)")
    RESULTS.mkdir(exist_ok=True)
    stored.write_text(json.dumps(results, indent=2) + "\n")


def render(results: dict, rejected: dict[str, str]) -> str:
    lines = []
    for metric in dict.fromkeys(r["metric"] for r in results["runs"]):
        rows = [r for r in results["runs"] if r["metric"] == metric]
        lines.append(f"{metric} (held-out perplexity; dense {results['dense']:.2f})")
        lines.append("| sparsity | calibration | " + " | ".join(LABELS[m] for m in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 2) + "|")
        for s, mode in sorted(dict.fromkeys((r["sparsity"], r["calibration"]) for r in rows)):
            cells = {r["method"]: r for r in rows if (r["sparsity"], r["calibration"]) == (s, mode)}
            lines.append(f"| {s:.0%} | {mode} | " + " | ".join(_cell(cells[m]) for m in COLUMNS) + " |")
        lines.append("")
    lines += [f"rejected: {k}: {v}" for k, v in rejected.items()]
    return "\n".join(lines)


def _cell(run: dict) -> str:
    if run["ppl"] is None:
        return "rejected"
    return f"{run['ppl']:.2f}" if run["ppl"] < 1e5 else f"{run['ppl']:.3g}"


if __name__ == "__main__":
    main()
