#!/usr/bin/env bash
# The TagLib shim (Sources/CTagLib) on generated audio files, without SwiftPM:
#   1. builds the shim (g++, C++17) and Tests/c/taglib_test.c (gcc, C11) with -Wall -Wextra -Werror;
#   2. writes fixtures with Tests/audio/make_audio.py (mutagen + ffmpeg) into a temporary directory;
#   3. runs the test on a copy of them, then again built with -fsanitize=address,undefined (leak
#      detection on), and with -fsanitize=thread, each on a fresh copy.
# Needs: libtag1-dev and ffmpeg (apt-get install -y libtag1-dev ffmpeg), and mutagen: the script
# uses python3 if it can import mutagen, else makes a throwaway venv in its temporary directory
# and installs mutagen there from PyPI. TAGLIB_TEST_PYTHON overrides the interpreter.
# Usage: Tests/c/taglib_run.sh [--no-sanitizers]
set -euo pipefail
cd "$(dirname "$0")/../.."
sanitizers=1
[ "${1:-}" = "--no-sanitizers" ] && sanitizers=0

for tool in g++ gcc pkg-config ffmpeg; do
    command -v "$tool" >/dev/null || { echo "taglib_run.sh: $tool not found (apt-get install -y libtag1-dev ffmpeg)" >&2; exit 1; }
done
pkg-config --exists taglib || { echo "taglib_run.sh: TagLib not found (apt-get install -y libtag1-dev)" >&2; exit 1; }

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# The read-only-directory test runs as nobody when started as root: nobody must reach the files.
chmod 755 "$work"

python=${TAGLIB_TEST_PYTHON:-python3}
if ! "$python" -c 'import mutagen' 2>/dev/null; then
    echo "-- mutagen: installing into a throwaway venv"
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet mutagen
    python="$work/venv/bin/python"
fi

echo "-- fixtures"
"$python" Tests/audio/make_audio.py "$work/fixtures"

taglib_cflags=$(pkg-config --cflags taglib)
taglib_libs=$(pkg-config --libs taglib)
warnings="-Wall -Wextra -Werror"

# build NAME EXTRA_FLAGS...: the shim and the test into $work/NAME/taglib_test.
build() {
    local name=$1
    shift
    mkdir -p "$work/$name"
    # shellcheck disable=SC2086
    g++ -std=c++17 -g $warnings "$@" $taglib_cflags -ISources/CTagLib/include -c Sources/CTagLib/taglib_shim.cpp \
        -o "$work/$name/shim.o"
    # shellcheck disable=SC2086
    gcc -std=c11 -g $warnings "$@" -ISources/CTagLib/include -c Tests/c/taglib_test.c -o "$work/$name/test.o"
    # shellcheck disable=SC2086
    g++ "$@" "$work/$name/shim.o" "$work/$name/test.o" -o "$work/$name/taglib_test" $taglib_libs -lpthread
}

passed=0
failed=0
# run NAME: the test on a fresh copy of the fixtures (the write tests modify them).
run() {
    local name=$1 status=0
    cp -a "$work/fixtures" "$work/$name/files"
    "$work/$name/taglib_test" "$work/$name/files" > "$work/$name/log" 2>&1 || status=$?
    grep -v '^[0-9]* passed, [0-9]* failed$' "$work/$name/log" || true
    local last
    last=$(tail -n 1 "$work/$name/log")
    echo "$name: $last"
    if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
        [ "$status" = 0 ] || [ "${BASH_REMATCH[2]}" != 0 ] || failed=$((failed + 1))
    else
        echo "$name: the test did not finish (exit status $status)"
        failed=$((failed + 1))
    fi
}

echo "-- release build (-O2)"
build release -O2
run release

if [ "$sanitizers" = 1 ]; then
    echo "-- AddressSanitizer + UndefinedBehaviorSanitizer"
    build sanitized -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
        -D_GLIBCXX_ASSERTIONS
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 run sanitized
    # The shim's threading promise (any number of threads reading at once) under ThreadSanitizer:
    # the test's four reader threads once shared a static path buffer, which only showed as a rare
    # failed read under load.
    echo "-- ThreadSanitizer"
    build threads -O1 -fsanitize=thread
    TSAN_OPTIONS=halt_on_error=1:exitcode=66 run threads
fi

echo "taglib: $passed passed, $failed failed"
[ "$failed" = 0 ]
