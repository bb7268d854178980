"""Every setting's choices and defaults, defined once.

No torch, no textual: the CLI (which must start at once), the screens and the engine all read these.
"""

from __future__ import annotations

# -- pruning ------------------------------------------------------------------------------------------
METRICS = ("magnitude", "magnitude-row", "wanda", "sparsegpt")  # magnitude: one threshold per matrix, as the
# OWL and AlphaPruning reference code prune by magnitude; magnitude-row: the same fraction of every row
DEFAULT_METRIC = "wanda"
DEFAULT_SPARSITY = 0.7
BASELINES = ("uniform", "owl", "global", "er", "er-plus", "er-ends", "alpha", "atp", "dlp", "first", "ends")
# first, ends, atp: see engine.allocation.profiles; er-ends: ER with the first and last blocks twice as dense (ours)
METHODS = BASELINES + ("dsa",)  # dsa: the published function; any function text works too
METHOD_ALIASES = {"alphapruning": "alpha"}
CALIBRATION_MODES = ("dense", "sequential")  # sequential: each block from the pruned blocks before it
METHOD_LABELS = {"uniform": "Uniform", "owl": "OWL", "global": "Global", "er": "ER", "er-plus": "ER-plus",
                 "er-ends": "ER, ends x2",
                 "alpha": "AlphaPruning", "atp": "ATP", "dlp": "DLP", "first": "Protect first", "ends": "Protect ends",
                 "dsa": "DSA (published)"}
PUBLISHED_DSA_TEXT = "abslog | var | atan, asin"  # the one function the DSA authors published
# ... as its reference code computes it (engine.allocation.function): a compare row and a table column
REFERENCE_DSA_TEXT = f"{PUBLISHED_DSA_TEXT} | nan=reference"
REFERENCE_DSA_LABEL = "DSA, nan=reference"

# -- allocation functions -----------------------------------------------------------------------------
DEFAULT_LAM = 0.08
NAN_POLICIES = ("reject", "reference")  # reference: NaN -> 0 and inf -> -1, as the DSA reference code
MAX_LAM = 0.5
LAM_STEP = 0.02  # the search's lam grid and mutation step
LAM_MIN = 0.02

# -- model --------------------------------------------------------------------------------------------
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")  # also fp32 / bf16 / fp16
DEVICE_MAPS = ("auto", "balanced")  # accelerate's, to spread a model over every visible GPU
PLAN_COMMANDS = ("prune", "eval", "allocations", "search", "tui", "structured")  # what `dsa-workbench plan` plans
EXPORT_DTYPES = ("keep", "float16", "bfloat16")
EXPORT_FORMATS = ("dense", "compressed-tensors")
RECIPE_EXPORT = "llmcompressor"  # the export pane's other choice: the allocation as an llm-compressor recipe

# -- DSA search ---------------------------------------------------------------------------------------
FITNESS = ("ppl", "kl")
FITNESS_LABELS = {"ppl": "perplexity", "kl": "KL to dense"}
STRATEGIES = ("evolution", "random", "evopress", "hybrid")  # evopress: per-block profiles, not functions;
# hybrid: functions for half the generations, then profiles from the best one
DEFAULT_FITNESS = "ppl"
DEFAULT_STRATEGY = "evolution"
DEFAULT_POPULATION = 24
DEFAULT_GENERATIONS = 30
DEFAULT_RUN = "runs/search"
DEFAULT_SEARCH_STAGES = "auto"  # FITNESS_TOKENS:KEEP,... before the whole fitness split; "": none; auto:
# every candidate on a quarter of the fitness split, the best third on all of it (engine.search.search)
DEFAULT_LEVEL_STEP = 0.02
GRANULARITIES = ("block", "group", "linear")  # a profile's units: blocks, attention and MLP groups, linears
DEFAULT_GRANULARITY = "block"
GRANULARITY_LABELS = {"block": "per block", "group": "attention and MLP apart", "linear": "every linear"}

# -- structured search --------------------------------------------------------------------------------
DEFAULT_STAGES = "8:2048:1024,4:4096:2048,2:8192:4096,1:16384:8192"  # SURVIVORS:FINETUNE:FITNESS tokens
DEFAULT_TARGET_PARAMS = 0.5
DEFAULT_STRUCTURED_GENERATIONS = 50
DEFAULT_OFFSPRING = 16
DEFAULT_LR = 1e-5
DEFAULT_MLP_LEVELS = 10
DEFAULT_STRUCTURED_RUN = "runs/structured"

# -- file formats -------------------------------------------------------------------------------------
RECIPE_FORMAT = "dsa-workbench/pruning"
STRUCTURED_RECIPE_FORMAT = "dsa-workbench/structured-recipe"
SEARCH_RUN_FORMAT = "dsa-workbench/search-run"
STRUCTURED_SEARCH_FORMAT = "dsa-workbench/structured-search"
STRUCTURED_RUN_FORMAT = "dsa-workbench/structured-run"
LEVEL_DATABASE_FORMAT = "dsa-workbench/level-database"
