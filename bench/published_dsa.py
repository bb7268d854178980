"""Where the published DSA function (abslog | var | atan, asin) is NaN on the default model, three ways.

    python bench/published_dsa.py                      # 16,384 calibration tokens, as the issue measured
    python bench/published_dsa.py --calib-tokens 32768

Per block it computes var(ln|s|) of the block's Wanda scores s and atan of that, then asin, which is NaN
where atan(var) > 1, i.e. var > tan(1) = 1.557:
  - reference: the DSA reference code's ops on the whole block (all seven linears' scores, zeros set to 1
    before the log), which is what `--nan-policy reference` computes;
  - sample, reference ops: our fixed block sample (engine.allocation.samples) with those ops;
  - sample, our floor: the sample with exact zeros floored at the smallest non-zero score (our default ops).
Prints the blocks whose value is NaN each way and writes bench/results/published_dsa.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.choices import REFERENCE_DSA_TEXT  # noqa: E402
from engine.allocation.ops import PRE_OPS, REFERENCE_PRE_OPS  # noqa: E402
from engine.data_config import DataConfig  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.session import Session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--calib-tokens", type=int, default=16384)
    args = p.parse_args()
    session = Session(load_model(args.model, status=lambda m: print(m, file=sys.stderr)),
                      DataConfig(calib_tokens=args.calib_tokens))
    scorer = session.pruner("wanda")
    samples = session.allocation_inputs("wanda").samples
    rows = []
    for block, sample in zip(session.blocks, samples):
        whole = torch.cat([scorer.scores(n).double().flatten() for n in block.linears])
        variances = {"reference": REFERENCE_PRE_OPS["abslog"](whole).var(correction=0).item(),
                     "sample, reference ops": REFERENCE_PRE_OPS["abslog"](sample.matrix).var(correction=0).item(),
                     "sample, our floor": PRE_OPS["abslog"](sample.matrix).var(correction=0).item()}
        rows.append({"block": block.index, "zeros": int((whole == 0).sum()), "numel": whole.numel(),
                     "var": variances, "nan": {k: math.atan(v) > 1 for k, v in variances.items()}})
    ways = list(rows[0]["var"])
    print(f"tan(1) = {math.tan(1):.4f}: asin(atan(var)) is NaN above it")
    print("block  zeros   " + "  ".join(f"{w:>22}" for w in ways))
    for r in rows:
        print(f"{r['block']:>5} {r['zeros']:>6}   " + "  ".join(
            f"{r['var'][w]:>18.4f} {'NaN' if r['nan'][w] else '   '}" for w in ways))
    summary = {w: [r["block"] for r in rows if r["nan"][w]] for w in ways}
    for way, blocks in summary.items():
        print(f"{way}: NaN at {len(blocks)} of {len(rows)} blocks {blocks}")
    allocation = session.allocate(REFERENCE_DSA_TEXT, 0.7)
    assert allocation.parameters["replaced_blocks"] == summary["reference"], (allocation.parameters, summary)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "published_dsa.json").write_text(json.dumps(
        {"calib_tokens": args.calib_tokens, "nan_blocks": summary, "blocks": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
