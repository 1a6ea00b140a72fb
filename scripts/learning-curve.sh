#!/usr/bin/env bash
# How the default model's recipe scales with training covers: trains it (Lite0 stage statistics,
# 4 views, 512-wide head, 40 epochs) on stratified fractions of discogs5's train split and
# evaluates each model on the whole val split (test stays untouched). docs/results.md, "How far
# more covers would go", reads its output.
#   scripts/learning-curve.sh BACKBONE.cgm [WORK_DIR]
# BACKBONE: EfficientNet-Lite0 from `covergenre import`. Each fraction is drawn with seeds 1 and 2
# (different covers), the whole train split once. Data: ../shared/data/covers/discogs5.
set -euo pipefail
cd "$(dirname "$0")/.."
backbone=${1:?usage: scripts/learning-curve.sh BACKBONE.cgm [WORK_DIR]}
work=${2:-runs/learning-curve}
data=$(cd ../shared/data/covers/discogs5 && pwd)
cg=${COVERGENRE_CLI:-build/bin/covergenre}
[ -x $cg ] || scripts/build.sh
mkdir -p "$work"
source scripts/default-recipe.sh

manifest() { # FRACTION SEED OUT: val rows and a stratified FRACTION of the train rows, absolute paths
    python3 - "$data" "$1" "$2" "$3" <<'EOF'
import csv, random, sys
data, fraction, seed, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = list(csv.DictReader(open(f"{data}/split.csv")))
by_genre = {}
for r in rows:
    if r["split"] == "train": by_genre.setdefault(r["genre"], []).append(r)
keep = [r for r in rows if r["split"] == "val"]
for genre in sorted(by_genre):
    covers = by_genre[genre]
    random.Random(seed * 1000 + len(genre)).shuffle(covers)  # the draws docs/results.md reports
    keep += covers[:round(fraction * len(covers))]
with open(out, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["path", "genre", "split"])
    for r in keep: w.writerow([f"{data}/{r['path']}", r["genre"], r["split"]])
EOF
}

for point in "0.125 1" "0.125 2" "0.25 1" "0.25 2" "0.5 1" "0.5 2" "1 1"; do
    set -- $point
    name=train-$1-seed$2
    manifest "$1" "$2" "$work/$name.csv"
    [ -f "$work/$name.cgm" ] || $cg train --backbone "$backbone" --data "$work/$name.csv" "${default_recipe[@]}" \
        --out "$work/$name.cgm" --run "$work/$name.run" > "$work/$name.log" 2>&1
    $cg evaluate -m "$work/$name.cgm" --split val "$work/$name.csv" --json > "$work/$name-val.json" 2>> "$work/$name.log"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%-22s train covers %4d  val accuracy %.1f%%  balanced %.1f%%  macro-F1 %.1f%%" % (sys.argv[2], int(sys.argv[3]), 100*r["accuracy"], 100*r["balanced_accuracy"], 100*r["macro_f1"]))' \
        "$work/$name-val.json" "$name" "$(grep -c ',train$' "$work/$name.csv")"
done
