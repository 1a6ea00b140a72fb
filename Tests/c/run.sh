#!/usr/bin/env bash
# The C API under sanitizers and load (scripts/test.sh runs its build-asan part early, the others
# after the release build), in parts:
#   scheduler  The scheduler's region protocol (Tests/c/pool_stress.c): 8 workers, 100,000 regions
#              of varying part counts, 1 and 4 callers, yielding at the protocol's windows; then the
#              same under ThreadSanitizer.
#   asan       AddressSanitizer (leak detection on): every fuzz regression and seed through the fuzz
#              driver, the C example (the default model, float and int8), hostile arguments
#              (overflowing sizes and counts, short capacities, per-image messages), 8 threads
#              sharing a model, load/classify/free
#              cycles, and the C API fuzzer (Tests/c/api_fuzz.c: random calls on buffers that end at
#              a guard page, fixed seed), against a library built with -sanitize=address.
#   callers    Many callers on the release library: 8 and 32 threads sharing one model loaded with
#              n_threads 0 and 2, every result bit-identical to a single-threaded model's, the
#              process's thread count within the callers plus n_threads - 1; 10,000 classifications
#              of the default model from 8 threads with no RSS growth.
#   valgrind   memcheck at 32x32 input: 1,000 load/classify/free cycles, 0 errors, 0 bytes
#              definitely lost, no suppressions.
#   tsan       ThreadSanitizer: the Swift model and concurrency tests (fails if they run none).
# and two that only build, so a caller can build early, beside single-threaded work (test.sh does
# for ASan):
#   build-asan (the ASan library and fuzz driver, .build-asan), build-tsan (the TSan test bundle,
#   .build-tsan). The asan and tsan parts build what is missing themselves.
# Usage: Tests/c/run.sh [--quick] [PART...]   (no part: all five, in the order above)
#   --quick    smaller counts, for a fast local check
# scripts/test.sh runs the scheduler part apart, on an otherwise idle machine: its yields make it
# many times slower beside other work; the other parts are not, and run beside other sections.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
quick=0
parts=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        scheduler|asan|callers|valgrind|tsan|build-asan|build-tsan) parts+=("$arg") ;;
        *) echo "usage: $0 [--quick] [scheduler|asan|callers|valgrind|tsan|build-asan|build-tsan ...]" >&2; exit 2 ;;
    esac
done
[ ${#parts[@]} -gt 0 ] || parts=(scheduler asan callers valgrind tsan)
# CI (CI=true) runs 3,000 classifications to keep the suite short; docs/security.md reports a full run.
stress_total=$([ $quick = 1 ] && echo 1000 || { [ "${CI:-}" = true ] && echo 3000 || echo 10000; })
cycles=$([ $quick = 1 ] && echo 100 || echo 1000)
# The Swift toolchain's clang (its sanitizer runtimes match the library's), else the system's.
clang="$(dirname "$(readlink -f "$(command -v swift)")")/clang"
command -v "$clang" >/dev/null || clang=clang
step() { printf -- '-- %s (%d s)\n' "$*" "$SECONDS"; }

# Multiversioned (ifunc) kernels are resolved before the sanitizer runtime starts: build without.
build_asan() {
    for product in CoverGenreC covergenre-fuzz; do
        swift build --scratch-path .build-asan -Xswiftc -sanitize=address -Xcc -fsanitize=address -Xcc -DCGK_NO_MULTIVERSION \
            --product "$product" >"$work/build-asan.log" 2>&1 || { tail -40 "$work/build-asan.log"; exit 1; }
    done
}
tsan_flags=(--scratch-path .build-tsan --sanitize=thread -Xcc -DCGK_NO_MULTIVERSION)
build_tsan() {
    swift build --product CoverGenrePackageTests "${tsan_flags[@]}" >"$work/build-tsan.log" 2>&1 ||
        { tail -40 "$work/build-tsan.log"; exit 1; }
}

# The covers and the small model (the baseline CNN at 32x32 input) the asan, callers and valgrind
# parts share (from the release CLI).
inputs_made=0
make_inputs() {
    [ $inputs_made = 0 ] || return 0
    inputs_made=1
    build/bin/covergenre make-examples --size 300 "$work/covers" >/dev/null
    build/bin/covergenre create --arch baseline-cnn --labels a,b,c,d --input-size 32 --width-divisor 16 --out "$work/small.cgm" >/dev/null
    # More covers for the stress test: the examples at several sizes.
    for size in 96 160 224 380 512; do build/bin/covergenre make-examples --size $size "$work/covers-$size" >/dev/null; done
    mkdir -p "$work/many"
    for d in "$work"/covers*; do for f in "$d"/*; do cp "$f" "$work/many/$(basename "$d")-$(basename "$f")"; done; done
}

part_scheduler() {
    step "scheduler: region protocol under stress"
    cc -O2 -DCGK_POOL_TEST_YIELD -ISources/CKernels/include Tests/c/pool_stress.c Sources/CKernels/threadpool.c \
        -o "$work/pool_stress" -lpthread
    "$work/pool_stress" 8 100000 1
    "$work/pool_stress" 8 100000 4
    # gcc's ThreadSanitizer runtime (the Swift toolchain's clang wants libdispatch linked with it).
    gcc -O1 -g -fsanitize=thread -DCGK_POOL_TEST_YIELD -ISources/CKernels/include Tests/c/pool_stress.c \
        Sources/CKernels/threadpool.c -o "$work/pool_stress_tsan" -lpthread
    TSAN_OPTIONS=halt_on_error=1 "$work/pool_stress_tsan" 8 20000 3
}

part_asan() {
    step "AddressSanitizer"
    build_asan
    make_inputs
    mkdir -p "$work/asan"
    cp .build-asan/debug/libCoverGenreC.so "$work/asan/libcovergenre.so"
    for program in examples/c/classify.c Tests/c/stress.c Tests/c/api_fuzz.c; do
        # The linker warns about every sanitizer symbol it cannot export: show its output only on failure.
        "$clang" -g -fsanitize=address -Iinclude "$program" -o "$work/asan/$(basename "$program" .c)" -L"$work/asan" -lcovergenre \
            -Wl,-rpath,"$work/asan" -lpthread > "$work/asan/link.log" 2>&1 || { cat "$work/asan/link.log"; exit 1; }
    done
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    # Every input that ever crashed or leaked in a fuzz target (fuzz/regressions/TARGET), and each
    # campaign's minimized corpus (fuzz/seeds/TARGET, fuzz/run.sh keeps the smallest inputs that hold
    # its coverage), through the same harness under AddressSanitizer with leak detection (a leak is a
    # finding too). The driver refuses an unknown target and says how many inputs it replayed; that
    # number must be the folder's file count, so a renamed folder or a driver that skips fails here.
    replay() { # DIR...: replays each folder; the total goes to $replayed
        local dir files said
        replayed=0
        for dir in "$@"; do
            files=("$dir"*)
            [ -e "${files[0]}" ] || { echo "no inputs in $dir" >&2; exit 1; }
            # The driver's exit status counts (a sanitizer report aborts it), and so does what it says.
            .build-asan/debug/covergenre-fuzz "$(basename "$dir")" "${files[@]}" >"$work/replay.out" ||
                { echo "$dir: the fuzz driver failed" >&2; exit 1; }
            said=$(sed -n 's/^replayed \([0-9]*\) .*/\1/p' "$work/replay.out")
            [ "$said" = "${#files[@]}" ] || { echo "$dir: the fuzz driver replayed '${said}' of ${#files[@]} inputs" >&2; exit 1; }
            replayed=$((replayed + said))
        done
    }
    replay fuzz/regressions/*/
    regressions=$replayed
    replay fuzz/seeds/*/
    seeds=$replayed
    [ "$regressions" -gt 0 ] && [ "$seeds" -gt 0 ] || { echo "no fuzz regression or seed inputs" >&2; exit 1; }
    # Every harness has seeds: a target added without them is not replayed.
    targets=$(.build-asan/debug/covergenre-fuzz 2>&1 | sed -n 's/^.*usage: covergenre-fuzz \([A-Za-z0-9_|-]*\) .*/\1/p' | tr '|' ' ' || true)
    [ -n "$targets" ] || { echo "could not read the fuzz driver's targets" >&2; exit 1; }
    for target in $targets; do
        [ -d "fuzz/seeds/$target" ] || { echo "fuzz target $target has no fuzz/seeds/$target" >&2; exit 1; }
    done
    # An unknown target must fail, not pass having replayed nothing.
    if .build-asan/debug/covergenre-fuzz no-such-target fuzz/seeds/json/* >/dev/null 2>&1; then
        echo "the fuzz driver accepted an unknown target" >&2; exit 1
    fi
    echo "fuzz regressions under ASan: $regressions passed, 0 failed"
    echo "fuzz seeds under ASan: $seeds passed, 0 failed"
    "$work/asan/classify" models/covergenre-default.cgm "$work"/covers/*
    "$work/asan/classify" models/covergenre-default-int8.cgm "$work"/covers/*  # the int8 kernels' paths too
    "$work/asan/stress" hostile "$work/small.cgm"
    "$work/asan/stress" threads "$work/small.cgm" "$work/many" 8 2000 0 0
    "$work/asan/stress" cycles "$work/small.cgm" "$work/covers/neon-grid.jpg" 50
    # Random API calls on guard-page buffers: a fixed seed and count here, longer in fuzz/run.sh.
    "$work/asan/api_fuzz" "$work/small.cgm" "$work/covers" 3000 1
    unset ASAN_OPTIONS
}

part_callers() {
    make_inputs
    step "many callers share one model"
    cc -O2 -Iinclude Tests/c/stress.c -o "$work/stress" -Lbuild/lib -lcovergenre -Wl,-rpath,"$root/build/lib" -lpthread
    # RSS is not checked here: 32 callers hold more contexts than the pool keeps idle. (8 callers
    # with n_threads 0 is the stress run below.)
    "$work/stress" threads models/covergenre-default.cgm "$work/many" 32 640 0 0
    "$work/stress" threads models/covergenre-default.cgm "$work/many" 32 640 2 0
    "$work/stress" threads models/covergenre-default.cgm "$work/many" 8 400 2 0
    step "stress: $stress_total classifications, 8 threads, one model"
    "$work/stress" threads models/covergenre-default.cgm "$work/many" 8 "$stress_total" 0
}

part_valgrind() {
    make_inputs
    step "valgrind: $cycles load/classify/free cycles at 32x32"
    # valgrind 3.19 cannot read the DWARF 5 debug information Swift's toolchain writes: strip it.
    mkdir -p "$work/vg"
    strip --strip-debug -o "$work/vg/libcovergenre.so" build/lib/libcovergenre.so
    cc -O2 -Iinclude Tests/c/stress.c -o "$work/vg/stress" -L"$work/vg" -lcovergenre -Wl,-rpath,"$work/vg" -lpthread
    # 32x32 input: the JPEG is decoded with DCT scaling to 1/8, where libjpeg-turbo's SIMD upsampler
    # reads its arrays' padding (zeroed by Sources/CCodecs/jpeg.c); the PNG and WebP go through the
    # other decoders. No suppressions.
    for cover in neon-grid.jpg sunset-fields.png bold-type.webp; do
        n=$([ "$cover" = neon-grid.jpg ] && echo "$cycles" || echo 20)
        valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9 \
            "$work/vg/stress" cycles "$work/small.cgm" "$work/covers/$cover" "$n"
    done
    # An int8 model with a depthwise convolution between 1x1 ones, bytes between them (the fuzz
    # seed fuzz/make-seeds.sh makes; 32x32 input).
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9 \
        "$work/vg/stress" cycles fuzz/seeds/model/6c12213093a002716d5fa01476d683675febc858 "$work/covers/neon-grid.jpg" 20
}

part_tsan() {
    step "ThreadSanitizer"
    build_tsan
    # The test bundle run directly with XCTest's filter (`swift test` would spend seconds planning).
    TSAN_OPTIONS=halt_on_error=1 .build-tsan/debug/CoverGenrePackageTests.xctest CoverGenreTests.ModelTests,CoverGenreTests.ConcurrencyTests \
        > "$work/tsan.log" 2>&1 || { tail -40 "$work/tsan.log"; exit 1; }
    grep -E "ThreadSanitizer|Executed|error" "$work/tsan.log" | tail -3
    # A filter that matches no test class runs nothing and passes: refuse that.
    for class in ModelTests ConcurrencyTests; do
        grep -q "Test Suite '$class' passed" "$work/tsan.log" || { echo "ThreadSanitizer ran no $class" >&2; exit 1; }
    done
    # (`! grep` would not stop a `set -e` script: bash exempts negated commands. Say it outright.)
    if grep -q "WARNING: ThreadSanitizer" "$work/tsan.log"; then
        grep -A20 "WARNING: ThreadSanitizer" "$work/tsan.log" | head -40
        echo "ThreadSanitizer reported a race" >&2
        exit 1
    fi
    echo "ThreadSanitizer: no warnings"
}

for part in "${parts[@]}"; do
    case "$part" in
        build-asan) step "building the AddressSanitizer library and fuzz driver"; build_asan ;;
        build-tsan) step "building the ThreadSanitizer test bundle"; build_tsan ;;
        *) "part_$part" ;;
    esac
done
