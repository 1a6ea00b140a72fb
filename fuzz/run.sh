#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes with libFuzzer + AddressSanitizer.
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s each, all targets
# Targets: model image torch safetensors csv json metadata (Sources/Fuzz/Harnesses.swift).
# Builds into .build-fuzz, makes seed corpora (fuzz/corpus-<target>, git-ignored) from the
# project's own tools, runs each target, copies anything that crashes into fuzz/regressions/<target>/
# (replayed by the test suite), and appends the figures to fuzz/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-60}
shift || true
targets=${*:-model image torch safetensors csv json metadata}

swift build --scratch-path .build-fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
    -Xcc -fsanitize=fuzzer-no-link,address -Xcc -DCGK_NO_MULTIVERSION --product covergenre-fuzz >&2
fuzzer="$root/.build-fuzz/release/covergenre-fuzz"
[ -x build/bin/covergenre ] || scripts/build.sh >&2
fuzz/make-seeds.sh >&2

results=fuzz/results.md
[ -f "$results" ] || printf '| date | target | seconds | executions | exec/s | corpus | crashes |\n|---|---|---|---|---|---|---|\n' > "$results"
status=0
for target in $targets; do
    corpus="fuzz/corpus-$target"
    artifacts=$(mktemp -d)
    log=$(mktemp)
    set +e
    COVERGENRE_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=1 "$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=10 -max_len=1048576 -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1
    code=$?
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
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(date -u +%F)" "$target" "$seconds" "$runs" "$rate" \
        "$(ls "$corpus" | wc -l)" "$crashes" | tee -a "$results"
    rm -rf "$artifacts" "$log"
done
exit $status
