"""Held-out perplexity of every allocation method on the default model (DESIGN.md section 7 analogue).

    python bench/allocation_table.py                       # Wanda at 50/60/70%, magnitude and SparseGPT at 60%
    python bench/allocation_table.py --eval-tokens 16384   # more tokens, slower

Prints one markdown table per metric (rows: sparsity; columns: methods, plus dense) and the token
counts and wall time. A method whose allocation is invalid on this model (e.g. an op producing
NaN) is shown as `rejected` with the reason below the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.choices import METHOD_LABELS as LABELS, METHODS  # noqa: E402
from engine.data_config import DataConfig  # noqa: E402
from engine.errors import WorkbenchError  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.session import Session  # noqa: E402



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--calib-tokens", type=int, default=16384)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    p.add_argument("--other-metrics", nargs="*", default=["magnitude", "sparsegpt"],
                   help="metrics run at --other-sparsity only")
    p.add_argument("--other-sparsity", type=float, default=0.6)
    p.add_argument("--json-out", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args()

    start = time.time()
    data = DataConfig(calib_tokens=args.calib_tokens, eval_tokens=args.eval_tokens, seqlen=args.seqlen)
    loaded = load_model(args.model, status=lambda m: print(m, file=sys.stderr))
    session = Session(loaded, data)
    print(f"model {loaded.label} on {loaded.device}; calibration {data.calib_tokens} tokens, "
          f"held-out evaluation {data.eval_tokens} tokens, seqlen {data.seqlen}", flush=True)
    dense = session.perplexity()
    print(f"dense perplexity {dense:.3f}", flush=True)
    runs = [("wanda", s) for s in args.sparsities] + [(m, args.other_sparsity) for m in args.other_metrics]
    results: dict = {"dense": dense, "tokens": {"calibration": data.calib_tokens, "evaluation": data.eval_tokens},
                     "runs": []}
    rejected: dict[str, str] = {}
    for metric, sparsity in runs:
        for method in METHODS:
            t0 = time.time()
            try:
                allocation = session.allocate(method, sparsity, metric)
            except WorkbenchError as exc:
                rejected[f"{metric} {sparsity:.0%} {method}"] = str(exc)
                results["runs"].append({"metric": metric, "sparsity": sparsity, "method": method, "ppl": None,
                                        "rejected": str(exc)})
                print(f"{metric:>9} {sparsity:.0%} {method:>8}: rejected ({exc})", flush=True)
                continue
            session.prune(allocation, metric)
            ppl = session.perplexity()
            results["runs"].append({"metric": metric, "sparsity": sparsity, "method": method, "ppl": ppl,
                                    "block_ratios": list(allocation.block_ratios)})
            print(f"{metric:>9} {sparsity:.0%} {method:>8}: ppl {ppl:.3f} ({time.time() - t0:.1f} s)", flush=True)
    session.restore()
    results["seconds"] = time.time() - start
    print()
    print(render(results, rejected))
    print(f"\ntotal {results['seconds'] / 60:.1f} min on {loaded.device} "
          f"({data.calib_tokens} calibration / {data.eval_tokens} held-out tokens)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def render(results: dict, rejected: dict[str, str]) -> str:
    lines = []
    for metric in dict.fromkeys(r["metric"] for r in results["runs"]):
        rows = [r for r in results["runs"] if r["metric"] == metric]
        lines.append(f"{metric} (held-out perplexity; dense {results['dense']:.2f})")
        lines.append("| sparsity | " + " | ".join(LABELS[m] for m in METHODS) + " |")
        lines.append("|---" * (len(METHODS) + 1) + "|")
        for s in dict.fromkeys(r["sparsity"] for r in rows):
            cells = {r["method"]: r for r in rows if r["sparsity"] == s}
            lines.append(f"| {s:.0%} | " + " | ".join(_cell(cells[m]) for m in METHODS) + " |")
        lines.append("")
    lines += [f"rejected: {k}: {v}" for k, v in rejected.items()]
    return "\n".join(lines)


def _cell(run: dict) -> str:
    if run["ppl"] is None:
        return "rejected"
    return f"{run['ppl']:.2f}" if run["ppl"] < 1e5 else f"{run['ppl']:.3g}"


if __name__ == "__main__":
    main()
