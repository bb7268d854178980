"""Run one dsa-workbench command in this process and report what it cost, as one JSON line on stdout.

    python bench/measure.py RESULT.json -- search --model ... --run ...

RESULT.json gets: exit code, seconds, peak resident memory (bytes), and on a GPU torch's peak allocated and
reserved device memory; with the plan the command's own preflight computed (its peak per phase).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    result_path, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    import torch

    from workbench import preflight
    from workbench.cli import main as cli

    plans = []
    original = preflight.plan_for

    def recording(*args, **kwargs):
        plan = original(*args, **kwargs)
        plans.append(plan.to_json())
        return plan

    preflight.plan_for = recording
    start = time.perf_counter()
    code = cli(argv)
    out = {"argv": argv, "exit": code, "seconds": time.perf_counter() - start,
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "plan": plans[-1] if plans else None}
    if torch.cuda.is_available():
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        out["gpu"] = torch.cuda.get_device_name()
    Path(result_path).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "plan"}), flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
