#!/usr/bin/env bash
# The prepared GPU check (scripts/gpu_check.py) on a lent GPU machine, which has torch,
# transformers and peft but no Ray, vLLM or DeepSpeed, and no network.
#
#   bash scripts/gpu_check.sh prepare   # here: wheels + SmolLM2's config/tokenizer into .gpu_check/ (ignored)
#   bash scripts/gpu_check.sh run       # there, with .gpu_check carried: installs them, runs every check
#   bash scripts/gpu_check.sh dry-run   # any CPU machine: the same checks, tiny model
#
# A session with a device runs it as one call: run(command="bash scripts/gpu_check.sh run",
# carry=[".gpu_check"], timeout_s=540). Its figures go in BENCHMARKS.md with the GPU named.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.gpu_check
PY=${PYTHON:-python3}

case "${1:-}" in
  prepare)
    PY=${PYTHON:-.venv/bin/python}
    mkdir -p "$DIR/wheels" "$DIR/smollm2"
    grep -qxF "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude
    # What the device image lacks (KINDS.md lists what it has), at the versions of
    # constraints.txt: DeepSpeed and antlr4 (pure-Python wheels built from their sdists),
    # pydantic (DeepSpeed needs it), hjson, math-verify (the reward functions).
    "$PY" -m pip wheel -q --no-deps -c constraints.txt -w "$DIR/wheels" deepspeed antlr4-python3-runtime
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -c constraints.txt -d "$DIR/wheels" \
      pydantic pydantic_core annotated-types typing-inspection hjson math-verify latex2sympy2_extended
    # SmolLM2's architecture and tokenizer (its 98 MB GGUF is over a call's 64 MiB): fresh weights there.
    SRC=$("$PY" -m rlhf_platform.model_store smollm2_135m | tail -1)
    cp "$SRC"/config.json "$SRC"/generation_config.json "$SRC"/tokenizer* "$SRC"/special_tokens_map.json "$DIR/smollm2/" 2>/dev/null || true
    du -sh "$DIR"
    ;;
  run)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$DIR"/wheels/*.whl
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    cd /tmp && "$PY" "$OLDPWD/scripts/gpu_check.py" --model-config "$OLDPWD/$DIR/smollm2" "${@:2}"
    ;;
  dry-run)
    "${PYTHON:-.venv/bin/python}" scripts/gpu_check.py --dry-run "${@:2}"
    ;;
  *)
    echo "usage: $0 prepare | run | dry-run" >&2
    exit 2
    ;;
esac
