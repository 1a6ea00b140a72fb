#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes with libFuzzer + AddressSanitizer, and the C API with
# random call sequences (Tests/c/api_fuzz.c) against the AddressSanitizer library.
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s each, all targets
# Targets: model image torch safetensors csv json metadata multipart audio (Sources/Fuzz/Harnesses.swift), api.
# Leaks fail a run (detect_leaks=1), as crashes do.
# Builds into .build-fuzz, makes seed corpora (fuzz/corpus-<target>, git-ignored) from the
# project's own tools, runs each target, copies anything that crashes into fuzz/regressions/<target>/
# (replayed by the test suite), and appends the figures to fuzz/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-60}
shift || true
targets=${*:-model image torch safetensors csv json metadata multipart audio api}

swift build --scratch-path .build-fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
    -Xcc -fsanitize=fuzzer-no-link,address -Xcc -DCGK_NO_MULTIVERSION --product covergenre-fuzz >&2
fuzzer="$root/.build-fuzz/release/covergenre-fuzz"
[ -x build/bin/covergenre ] || scripts/build.sh >&2
fuzz/make-seeds.sh >&2

results=fuzz/results.md
[ -f "$results" ] || printf '| date | target | seconds | executions | exec/s | corpus | crashes |\n|---|---|---|---|---|---|---|\n' > "$results"
status=0
for target in $targets; do
    if [ "$target" = api ]; then
        # Random C API calls, a new seed per round until the time is up; a failure prints its seed.
        swift build --scratch-path .build-asan -Xswiftc -sanitize=address -Xcc -fsanitize=address -Xcc -DCGK_NO_MULTIVERSION \
            --product CoverGenreC >&2
        api=$(mktemp -d)
        cp .build-asan/debug/libCoverGenreC.so "$api/libcovergenre.so"
        # The Swift toolchain's clang (its sanitizer runtimes match the library's), else the system's.
        clang="$(dirname "$(readlink -f "$(command -v swift)")")/clang"
        command -v "$clang" >/dev/null || clang=clang
        "$clang" -g -fsanitize=address -Iinclude Tests/c/api_fuzz.c -o "$api/api_fuzz" -L"$api" -lcovergenre -Wl,-rpath,"$api"
        build/bin/covergenre create --arch baseline-cnn --labels a,b,c,d --input-size 32 --width-divisor 16 --out "$api/m.cgm" >/dev/null
        build/bin/covergenre make-examples --size 64 "$api/covers" >/dev/null
        end=$(($(date +%s) + seconds)) calls=0 rounds=0 failures=0
        while [ "$(date +%s)" -lt "$end" ]; do
            seed=$(( ($(date +%s%N) / 1000) % 4294967296 ))
            if ASAN_OPTIONS=detect_leaks=1 "$api/api_fuzz" "$api/m.cgm" "$api/covers" 2000 "$seed" >/dev/null 2>"$api/err"; then
                calls=$((calls + 2000))
            else
                failures=$((failures + 1))
                tail -20 "$api/err" >&2
                status=1
            fi
            rounds=$((rounds + 1))
        done
        printf '| %s | api | %s | %s | %s | %s seeds | %s |\n' "$(date -u +%F)" "$seconds" "$calls" "$((calls / seconds))" \
            "$rounds" "$failures" | tee -a "$results"
        rm -rf "$api"
        continue
    fi
    corpus="fuzz/corpus-$target"
    artifacts=$(mktemp -d)
    log=$(mktemp)
    set +e
    started=$(date +%s)
    COVERGENRE_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=1 "$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=10 -max_len=1048576 -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1
    code=$?
    # The time it really ran: libFuzzer stops at its first finding, before -max_total_time.
    elapsed=$(($(date +%s) - started))
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    crashes=$(find "$artifacts" -type f | wc -l)
    if [ "$crashes" -gt 0 ] || [ "$code" -ne 0 ]; then
        mkdir -p "fuzz/regressions/$target"
        cp "$artifacts"/* "fuzz/regressions/$target/" 2>/dev/null || true
        tail -40 "$log" >&2
        status=1
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(date -u +%F)" "$target" "$elapsed" "$runs" "$rate" \
        "$(ls "$corpus" | wc -l)" "$crashes" | tee -a "$results"
    # The corpus's smallest inputs that keep its coverage, committed in fuzz/seeds/ and replayed
    # by CI (the corpora themselves are large and git-ignored).
    mkdir -p "fuzz/seeds/$target"
    COVERGENRE_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=1 "$fuzzer" -merge=1 -max_len=4096 \
        "fuzz/seeds/$target" "$corpus" >/dev/null 2>&1 || true
    rm -rf "$artifacts" "$log"
done
exit $status
