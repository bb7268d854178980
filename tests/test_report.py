"""`report`: a search run as report.md and PNG figures, from the CLI, the engine API and the TUI's key."""

from __future__ import annotations

import json
import shlex

from workbench.cli import main

TINY = ["--seqlen", "64", "--calib-tokens", "512", "--eval-tokens", "256", "--device", "cpu"]
PNG = b"\x89PNG\r\n\x1a\n"


def test_report_of_a_finished_search(capsys, tmp_path, tiny_model_dir):
    run, out = tmp_path / "run", tmp_path / "report"
    assert main(["search", "--model", str(tiny_model_dir), "--run", str(run), "--sparsity", "0.6", "--generations",
                 "2", "--population", "3", "--fitness-tokens", "256", "--batch-size", "2", "--quiet", *TINY]) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(out), "--device", "cpu", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["fitness.png", "report.md", "sparsity.png"]
    for figure in ("fitness.png", "sparsity.png"):
        data = (out / figure).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    text = (out / "report.md").read_text()
    best = (run / "best.txt").read_text().strip()
    final = json.loads((run / "final.json").read_text())
    assert f"    {best}" in text and "| best (above) |" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for method in ("uniform", "owl", "alpha", "atp", "dlp", "first"):
        if method in final["held_out_perplexity"]:  # measured again: the same as the search's end measured
            assert f"{final['held_out_perplexity'][method]:.4g}" in rows[f"`{method}`"]
        kl = float(rows[f"`{method}`"].rstrip(" |").rsplit("| ", 1)[1])
        assert kl > 0  # pruned at 60%: never the dense model
    assert f"dsa-workbench export --from-run {run} --out pruned" in text and "torch" in text
    command = next(line for line in text.splitlines() if line.startswith("dsa-workbench search --run NEW"))
    from workbench.cli import build_parser
    from workbench.search_command import settings_from

    args = build_parser().parse_args(shlex.split(command.split("   #")[0])[1:])
    stored = json.loads((run / "run.json").read_text())["settings"]
    assert json.loads(json.dumps(settings_from(args).to_json())) == stored  # the same settings, read back
    assert main(["report", str(run), "--out", str(out), "--device", "cpu"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "none"), "--out", str(tmp_path / "r2"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none" in err
