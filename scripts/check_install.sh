#!/usr/bin/env bash
# A regular install, as users do (issue 26): build the sdist and the wheel (the wheel from the unpacked
# sdist, as `python -m build` does), `twine check` both, install the wheel (not editable) into a fresh
# virtual environment outside the checkout, and from another directory run `robusteval --version`,
# `python -m robusteval`, `load_config("quick")`, `robusteval presets`, the smoke audit of the bundled
# model (configs/smoke.yaml) and the packaged gate rules. Every configs/*.yaml must be in the wheel as
# it is in the checkout. Needs `build` and `twine` (the test extra) in $PYTHON (default: python3);
# the fresh environment gets its dependencies as the test install did (pip's cache or local wheels).
#   usage: scripts/check_install.sh        (.ci/run: PYTHON=.venv/bin/python scripts/check_install.sh)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
expect() { [ "$1" = "$2" ] || { echo "check_install: expected '$2', got '$1'" >&2; exit 1; }; }

"$python" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$python" -m twine check --strict "$work"/dist/*
wheel=("$work"/dist/*.whl)

built=$SECONDS
"$python" -m venv "$work/venv"
# --no-compile: byte-compiling torch's thousands of modules at install time would double this step
"$work/venv/bin/python" -m pip install -q --no-compile "${wheel[0]}" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log"; exit 1; }
installed=$SECONDS
bin="$work/venv/bin"
cd "$work"  # nothing below may come from the checkout

version="$("$bin/python" -c 'import importlib.metadata as m; print(m.version("robusteval"))')"
expect "$("$bin/robusteval" --version)" "robusteval $version"
expect "$("$bin/python" -m robusteval --version)" "robusteval $version"
"$bin/python" - "$repo/configs" <<'PY'
import sys
from pathlib import Path

import torch

import robusteval
from robusteval import load_config
from robusteval.presets import preset_dir

for module in (robusteval, torch):  # from the fresh environment, not the checkout or another environment
    assert Path(module.__file__).is_relative_to(sys.prefix), f"{module.__name__} imported from {module.__file__}"
load_config("quick")
source = {p.name: p.read_bytes() for p in Path(sys.argv[1]).glob("*.yaml")}
packaged = {p.name: p.read_bytes() for p in preset_dir().glob("*.yaml")}
assert packaged == source, f"packaged presets {sorted(packaged)} differ from configs/ {sorted(source)}"
print(f"{len(packaged)} presets packaged in {preset_dir()}")
PY
"$bin/robusteval" presets
"$bin/robusteval" demo --config smoke --out run --quiet >demo.log 2>&1 || { cat demo.log; exit 1; }
tail -n 1 demo.log
"$bin/python" -c 'import json, sys; v = json.load(open("run/manifest.json"))["versions"]["robusteval"]; '\
'sys.exit(None if v == sys.argv[1] else f"manifest records robusteval {v}")' "$version"
set +e
"$bin/robusteval" gate run --gate gate >gate.log 2>&1
code=$?
set -e
if [ "$code" -ne 0 ] && [ "$code" -ne 1 ]; then cat gate.log; exit 1; fi  # 1: a budget exceeded, as may happen
echo "check_install: robusteval $version from a wheel, run from $work: build and twine check $((built - start)) s," \
  "fresh install $((installed - built)) s, checks $((SECONDS - installed)) s"
