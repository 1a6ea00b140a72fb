#!/usr/bin/env bash
# Reproduces docs/results.md's cross-source table: the default model's recipe trained on every
# source and with each test source left out, calibrated on its validation covers, and evaluated
# on the held-out source (the genres it shares with the model, answers over all the model's genres).
#   scripts/cross-source.sh BACKBONE.cgm [WORK_DIR]
# BACKBONE: EfficientNet-Lite0 from `covergenre import` (docs/results.md, "The shipped default model").
# Data: ../shared/data/covers (discogs5, spotify6, discogs-thumbs; see its README). Features are
# computed once, by the first run, and reused by the others (cached per image and view).
set -euo pipefail
cd "$(dirname "$0")/.."
backbone=${1:?usage: scripts/cross-source.sh BACKBONE.cgm [WORK_DIR]}
work=${2:-runs/cross-source}
data=../shared/data/covers
d5=discogs5=$data/discogs5/split.csv s6=spotify6=$data/spotify6/split.csv th=discogs-thumbs=$data/discogs-thumbs/manifest.csv
cg=${COVERGENRE_CLI:-build/bin/covergenre}
[ -x $cg ] || scripts/build.sh
mkdir -p "$work"
source scripts/default-recipe.sh
recipe=(--backbone "$backbone" --taxonomy models/taxonomy.csv "${default_recipe[@]}")

train() { # NAME GENRES DATA...
    local name=$1 genres=$2; shift 2
    local args=()
    for source in "$@"; do args+=(--data "$source"); done
    if [ ! -f "$work/$name.run/features-train.cgm" ] && [ -f "$work/broad.run/features-train.cgm" ]; then
        mkdir -p "$work/$name.run" && cp "$work"/broad.run/features-*.cgm "$work/$name.run/"
    fi
    [ -f "$work/$name.cgm" ] || $cg train "${recipe[@]}" --genres "$genres" "${args[@]}" --out "$work/$name.cgm" --run "$work/$name.run"
    [ -f "$work/$name-calibrated.cgm" ] || $cg calibrate -m "$work/$name.cgm" --taxonomy models/taxonomy.csv --genres "$genres" \
        "$@" --out "$work/$name-calibrated.cgm"
}
evaluate() { # MODEL GENRES SPLIT SOURCE
    echo "== $1 on $4 ($3)"
    $cg evaluate -m "$1" --taxonomy models/taxonomy.csv --genres "$2" --split "$3" "$4" --json > "$work/$(basename "$1" .cgm)-on-${4%%=*}-$3.json"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("accuracy %.1f%%  balanced %.1f%%  macro-F1 %.1f%%  ECE %.3f  images %d" % (100*r["accuracy"], 100*r["balanced_accuracy"], 100*r["macro_f1"], r["ece15"], r["images"]))' \
        "$work/$(basename "$1" .cgm)-on-${4%%=*}-$3.json"
}

train broad broad "$d5" "$s6" "$th"                    # every genre the data supports (first: computes the features)
train all5 default "$d5" "$s6" "$th"                   # the five genres, every source
train without-spotify6 default "$d5" "$th"             # spotify6 left out
train without-discogs5 default "$s6" "$th"             # discogs5 left out

for model in models/covergenre-default.cgm "$work/all5-calibrated.cgm" "$work/without-spotify6-calibrated.cgm"; do
    evaluate "$model" default all "$s6"
done
for model in models/covergenre-default.cgm "$work/all5-calibrated.cgm" "$work/without-discogs5-calibrated.cgm"; do
    evaluate "$model" default test "$d5"
done
evaluate "$work/all5-calibrated.cgm" default test "$s6"
evaluate "$work/broad-calibrated.cgm" broad test "$d5"
evaluate "$work/broad-calibrated.cgm" broad test "$s6"
