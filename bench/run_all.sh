#!/usr/bin/env bash
# Runs every benchmark with its default settings, rrloader next to rerun-sdk in each run.
# Data is written once under bench/data/ (git-ignored) and reused; tables go to stdout,
# figures to bench/results/{open,latest_at,dataloader}.{json,png}.
#
#   bash bench/run_all.sh            # everything, defaults
#   REPEATS=3 bash bench/run_all.sh  # fewer repeats
#   DL_REPEATS=3 bash bench/run_all.sh  # repeats of the (slower) dataloader benchmark (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REPEATS=${REPEATS:-5}
DL_REPEATS=${DL_REPEATS:-1}

"$PY" -c "import rrloader, rerun" || {
  echo "run_all: rrloader and rerun-sdk must be importable (pip install -e . and requirements-dev.txt)" >&2
  exit 1
}
"$PY" -c "import matplotlib" 2>/dev/null || echo "run_all: no matplotlib, no charts (pip install -r bench/requirements.txt)" >&2

status=0
echo "== bench_open =="
"$PY" bench/bench_open.py --repeats "$REPEATS" || status=1
echo
echo "== bench_latest_at =="
"$PY" bench/bench_latest_at.py --repeats "$REPEATS" || status=1
echo
echo "== bench_dataloader =="
"$PY" bench/bench_dataloader.py --repeats "$DL_REPEATS" || status=1
exit $status
