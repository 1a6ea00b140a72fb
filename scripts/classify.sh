#!/usr/bin/env bash
# The main job: classify album covers by genre with the default model (its int8 version,
# models/README.md; `build/bin/covergenre classify -m models/covergenre-default.cgm` for the float one).
#   scripts/classify.sh cover.jpg more/*.png     your covers (JPEG, PNG or WebP)
#   scripts/classify.sh                          the project's own example covers
# Installs the Debian packages it needs, builds the release tool once, then classifies.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/setup.sh --runtime
# Builds the tool alone, when any source is newer than it (build.sh says so on standard error).
scripts/build.sh --cli >/dev/null

images=()
for arg in "$@"; do
    case "$arg" in
        /*) images+=("$arg") ;;
        *) images+=("$OLDPWD/$arg") ;;
    esac
done
if [ ${#images[@]} -eq 0 ]; then
    examples="$root/build/examples"
    build/bin/covergenre make-examples "$examples" >/dev/null
    images=("$examples"/*)
    echo "no images given: classifying the project's example covers in $examples" >&2
fi
exec build/bin/covergenre classify --model "$root/models/covergenre-default-int8.cgm" "${images[@]}"
