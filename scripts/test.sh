#!/usr/bin/env bash
# Runs every test: Swift unit tests, the release library's self-containment, the C and Python
# examples, packaging, the C API under sanitizers, and the Python suite (ctypes binding, ONNX
# Runtime parity, importer, server, real data when ../shared/data is present). Installs what it
# needs first. CI runs exactly this (.ci/run).
#
# Each build configuration is built once and shared by the sections that need it:
#   debug        .build        the Swift test bundle (swift test)
#   release      .build        every product, with the Swift runtime linked in (scripts/build.sh):
#                              the CLI, the server, libcovergenre.so; the wheel, the prefix install
#                              and the examples reuse it
#   ASan         .build-asan   libcovergenre.so and the fuzz replay driver (Tests/c/run.sh)
#   TSan         .build-tsan   the Swift test bundle's model and concurrency tests (Tests/c/run.sh)
#   examples/swift             a separate package using CoverGenre as a user's would (its own build
#                              by necessity: a dependency is compiled with other flags than a root)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
section() { printf '\n== %s == (%s, %d s)\n' "$*" "$(date -u +%T)" "$SECONDS"; }

# Two cores: work that leaves one idle (package installs, the Python suite) runs beside work that
# does not need it, its output kept in a log and shown, with its closing lines, when it is waited for.
logs=$(mktemp -d)
declare -A pending=()
# On any exit, background jobs die with the script, with everything they started (a job may be a
# shell running pytest and its workers, or swift build and its compilers), and their logs go.
kill_tree() { local child; for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done; kill -- "$1" 2>/dev/null || true; }
cleanup() { for pid in "${pending[@]}"; do kill_tree "$pid"; done; rm -rf "$logs" "${package_work:-}"; }
trap cleanup EXIT
background() { # NAME COMMAND...: runs COMMAND in the background, output to $logs/NAME.log
    local name=$1
    shift
    "$@" >"$logs/$name.log" 2>&1 &
    pending[$name]=$!
}
await() { # NAME: waits for it, shows its output, fails with its status
    local status=0
    wait "${pending[$1]}" || status=$?
    unset "pending[$1]"
    cat "$logs/$1.log"
    [ "$status" = 0 ] || { echo "$1 failed (exit $status)" >&2; exit 1; }
}

section "dependencies"
# What building needs, now; the test tools and the Python environment while the debug build runs.
scripts/setup.sh --runtime
background test-dependencies scripts/setup.sh --tests --python --browser

section "swift test"
# The test bundle and what it depends on: no executable, so no debug copy of SwiftNIO (the server
# is built once, in release, below, and tested through its HTTP API by the Python suite).
swift build --product CoverGenrePackageTests
# The AddressSanitizer build (Tests/c/run.sh's asan part uses it) beside the Swift tests and the C
# kernel checks below, which run one test at a time: on two cores it costs them less than it
# would cost alone.
background asan-build Tests/c/run.sh build-asan
swift test --skip-build

section "kernel variants"
# Kernels are compiled for AVX-512, AVX2 and the baseline (Sources/CKernels/kernel_internal.h); the
# run above used the best this CPU executes. The kernel, inference and resampling tests run again
# under every lower variant (COVERGENRE_ISA); each run prints the variant it tested.
# The test bundle run directly (XCTest's own filter: Module.Class, comma-separated): `swift test`
# spends 7 s planning before each run.
xctest=.build/debug/CoverGenrePackageTests.xctest
best=$("$xctest" KernelsTests.InstructionSetTests 2>&1 | sed -n 's/^kernel variant: .*executes up to \([a-z0-9]*\);.*/\1/p' | head -1)
[ -n "$best" ] || { echo "could not tell which kernel variants this CPU executes" >&2; exit 1; }
lower_variants=$(case "$best" in avx512) echo "avx2 generic" ;; avx2) echo "generic" ;; *) echo "" ;; esac)
echo "this CPU executes up to the $best variant; testing again under: ${lower_variants:-nothing lower}"
[ "$best" = avx512 ] || echo "avx512: not executed here (this CPU lacks AVX-512); its GEMM kernel's logic is tested under emulation below"
# The kernel, inference and resampling test cases (Module.Class/method), then their classes.
variant_cases=$("$xctest" --list-tests | { grep -E '^(KernelsTests\.[A-Za-z0-9_]+|InferenceTests\.[A-Za-z0-9_]+|ImageIOTests\.ResampleTests)/' || true; })
variant_classes=$(echo "$variant_cases" | sed 's|/.*||' | sort -u | paste -sd, -)
variant_count=$(echo "$variant_cases" | grep -c / || true)
[ -n "$variant_classes" ] || { echo "found no kernel, inference or resampling test classes" >&2; exit 1; }
for variant in $lower_variants; do
    log=.build/kernel-tests-$variant.log
    if ! COVERGENRE_ISA=$variant "$xctest" "$variant_classes" >"$log" 2>&1; then
        tail -40 "$log"
        echo "kernel tests failed under COVERGENRE_ISA=$variant" >&2
        exit 1
    fi
    grep -E '^kernel variant:' "$log"
    grep -E 'Executed [0-9]+ tests' "$log" | tail -1
    # Every listed test ran (a class the filter missed, or a changed listing, would show here).
    ran=$(grep -E 'Executed [0-9]+ tests' "$log" | tail -1 | sed -n 's/.*Executed \([0-9]*\) tests.*/\1/p')
    [ "$ran" = "$variant_count" ] || { echo "COVERGENRE_ISA=$variant ran ${ran:-no} tests of the $variant_count listed" >&2; exit 1; }
done

section "test dependencies (installed during the build and the tests above)"
await test-dependencies

section "AVX-512 kernel under emulation"
# The AVX-512 GEMM kernel with its intrinsics mapped to SIMDe's portable code (libsimde-dev).
swift_clang="$(dirname "$(readlink -f "$(command -v swift)")")/clang"
"$swift_clang" -O1 -Wno-psabi -ISources/CKernels -ISources/CKernels/include Tests/c/avx512_emulated.c \
    Sources/CKernels/gemm.c Sources/CKernels/isa.c Sources/CKernels/storage.c -o .build/avx512_emulated -lm
.build/avx512_emulated

section "int8 kernels against their reference (Tests/c/q8_test.c)"
# Every int8 GEMM variant this CPU executes (generic, AVX2, AVX-512 VNNI), bit for bit against naive
# loops, 7-bit and 8-bit weights; it says which variants ran and which the CPU lacks.
"$swift_clang" -O2 -ISources/CKernels -ISources/CKernels/include Tests/c/q8_test.c Sources/CKernels/gemm_q8.c Sources/CKernels/conv_q8.c \
    Sources/CKernels/isa.c -o .build/q8_test -lm
.build/q8_test --no-timing

section "release build (the TagLib shim's checks beside it)"
# The shim's checks (TagLib, ffmpeg, the C compilers; one core) beside the release build (about
# 1.6 cores); the ASan build is done by now.
await asan-build
background taglib env TAGLIB_TEST_PYTHON=.venv/bin/python Tests/c/taglib_run.sh
scripts/build.sh
section "TagLib shim (covers and tags of audio files): every format and hostile file, also under ASan and UBSan"
await taglib

section "libcovergenre.so is self-contained"
if ldd build/lib/libcovergenre.so | grep -i swift; then
    echo "libcovergenre.so links a Swift runtime library" >&2
    exit 1
fi
# A clean process (empty environment) loads it and calls into it.
library=$(env -i /usr/bin/python3 -c "
import ctypes
lib = ctypes.CDLL('$root/build/lib/libcovergenre.so')
lib.cg_version_string.restype = ctypes.c_char_p
print(lib.cg_version_string().decode(), lib.cg_api_version())")
echo "loaded libcovergenre ${library% *} API ${library##* }"
library=${library% *}

section "one version number"
# include/covergenre.h holds it; everything that reports a version must say the same.
version=$(scripts/version.sh)
python_package=$(PYTHONPATH=bindings/python python3 -c "import covergenre; print(covergenre.__version__)")
pkgconfig=$(PKG_CONFIG_PATH=build/lib/pkgconfig pkg-config --modversion covergenre)
for reported in "library $library" "covergenre $(build/bin/covergenre --version)" \
                "covergenre-server $(build/bin/covergenre-server --version)" "python $python_package" "pkg-config $pkgconfig"; do
    [ "${reported##* }" = "$version" ] || { echo "version mismatch: $reported, header $version" >&2; exit 1; }
done
echo "version $version: header, library, CLI, server, Python package and pkg-config agree"

section "examples"
examples="$root/build/examples"
build/bin/covergenre make-examples "$examples"
make -s -C examples/c
examples/c/classify models/covergenre-default.cgm "$examples"/*
.venv/bin/python examples/python/classify.py models/covergenre-default-int8.cgm "$examples"/*

section "packaging: a self-contained wheel, a prefix install"
# What a user without the Swift toolchain gets: the wheel in a fresh venv, and the C library
# installed into a prefix, each used from a process that cannot see build/ (no
# COVERGENRE_LIBRARY, no LD_LIBRARY_PATH, an empty environment, another working directory).
package_work=$(mktemp -d)
mkdir -p "$package_work/covers"
cp "$examples"/* "$package_work/covers/"
wheel=$(scripts/wheel.sh "$package_work/dist")
echo "wheel: $(basename "$wheel")"
python3 -m venv "$package_work/venv"
"$package_work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
bare() { (cd "$package_work" && env -i PATH=/usr/bin:/bin HOME="$package_work" "$@"); }
bare "$package_work/venv/bin/python" -m covergenre classify covers
bare "$package_work/venv/bin/python" -m covergenre similar --json --top 2 covers covers/neon-grid.jpg > "$package_work/similar.json"
bare "$package_work/venv/bin/python" -c "
import covergenre, json, sys
with covergenre.Model() as model, covergenre.Model(covergenre.default_model_path(float32=True)) as float_model:
    assert 'site-packages' in covergenre.library_path(), covergenre.library_path()
    assert covergenre.default_model_path().endswith('covergenre-default-int8.cgm'), covergenre.default_model_path()
    assert model.labels == float_model.labels == ('Country', 'Electronic', 'HipHop', 'Pop', 'Rock'), model.labels
assert len(json.load(open('similar.json'))) == 2
assert covergenre.__version__ == covergenre.library_version() == '$version', (covergenre.__version__, covergenre.library_version())
print('wheel: default model (int8; the float one too) and library from site-packages:', covergenre.library_path(), 'version', covergenre.__version__)"
# Every library the bundled .so needs resolves inside the wheel or to the system libraries the
# manylinux policy lets a wheel assume (glibc, libstdc++, libgcc_s, zlib).
bundled=$(find "$package_work/venv" -name libcovergenre.so)
if ldd "$bundled" | grep -v -E 'covergenre\.libs/|linux-vdso|ld-linux|/lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s|z)\.so'; then
    echo "libcovergenre.so in the wheel needs a library from outside the wheel" >&2
    exit 1
fi
if ldd "$bundled" | grep -q 'not found'; then echo "unresolved library in the wheel" >&2; exit 1; fi
echo "wheel: $(ldd "$bundled" | grep -c 'covergenre.libs/') libraries vendored, none from outside"

scripts/install.sh --prefix "$package_work/prefix" >/dev/null
readelf -d "$package_work/prefix/lib/libcovergenre.so" | grep -q 'SONAME.*libcovergenre.so.2' || { echo "no SONAME" >&2; exit 1; }
cc -O2 -Wall -Wextra -Werror examples/c/classify.c -o "$package_work/classify-pkgconfig" \
    $(PKG_CONFIG_PATH="$package_work/prefix/lib/pkgconfig" pkg-config --cflags --libs covergenre)
bare ./classify-pkgconfig prefix/share/covergenre/covergenre-default.cgm "$package_work"/covers/*
cmake -S examples/c -B "$package_work/cmake-build" -DCMAKE_PREFIX_PATH="$package_work/prefix" >/dev/null
cmake --build "$package_work/cmake-build" >/dev/null
bare ./cmake-build/classify prefix/share/covergenre/covergenre-default-int8.cgm "$package_work"/covers/*
echo "prefix install: pkg-config and CMake builds of examples/c ran"

section "a Swift package that depends on CoverGenre"
swift build --package-path examples/swift 2>&1 | tail -1
examples/swift/.build/debug/classify-cover models/covergenre-default.cgm "$examples"/*

section "python tests start (in the background, beside the sections below)"
# The Python suite on two workers (pytest-xdist) uses about 1.3 cores; the sanitizer sections
# beside it fill the rest (the Swift example's build, 29 s alone, took 94 s beside it,
# so it runs before). Its output follows under "python tests".
# In CI every skip but the documented Spark one fails (bindings/python/tests/conftest.py).
[ "${CI:-}" = true ] && export COVERGENRE_NO_SKIP=1
python_tests() {
    .venv/bin/python -m pytest bindings/python/tests -q -n 2 -p no:cacheprovider
    # Whole models against ONNX Runtime again under every lower kernel variant (see "kernel variants").
    for variant in $lower_variants; do
        echo "ONNX Runtime parity with COVERGENRE_ISA=$variant:"
        COVERGENRE_ISA=$variant .venv/bin/python -m pytest bindings/python/tests/test_parity_onnx.py -q -p no:cacheprovider
    done
}
background python-tests python_tests

section "C API: sanitizers, valgrind, stress; fuzz regressions and seeds under ASan"
Tests/c/run.sh asan callers valgrind tsan

section "python tests"
await python-tests

section "C API: the scheduler's region protocol under stress (alone on the machine)"
Tests/c/run.sh scheduler
echo "scripts/test.sh: every section passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
