#!/usr/bin/env bash
# `covergenre train --library` against `covergenre train --data` on the same covers (docs/results.md,
# "Training on your own tags"). Builds a music library from discogs5's and spotify6's train covers
# (../shared/data; tags as a user would have them: Hip-Hop, Hip Hop, metal, ...; two silent tracks
# per album, formats in turn, cover embedded or, one album in four, as cover.jpg), trains the
# default head recipe on the default model's features from both, and scores both on discogs5 test.
#   scripts/experiments/library-vs-folders.sh [WORK_DIR]     (default /tmp/library-vs-folders)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work=${1:-/tmp/library-vs-folders}
data=$root/../shared/data/covers
mkdir -p "$work"
cg=$root/build/bin/covergenre
backbone=$root/models/covergenre-default.cgm
.venv/bin/python - "$data" "$work" <<'PY'
import csv, os, sys
data, work = sys.argv[1], sys.argv[2]
d5, s6 = os.path.join(data, "discogs5"), os.path.join(data, "spotify6")
tag5 = {"Country": "Country", "Electronic": "Electronic", "HipHop": "Hip-Hop", "Pop": "Pop", "Rock": "Rock"}
tag6 = {"country": "country", "hiphop": "Hip Hop", "metal": "metal", "jazz": "Jazz", "classical": "Classical", "reggae": "Reggae"}
label6 = {"country": "Country", "hiphop": "HipHop", "metal": "Rock"}  # models/taxonomy.csv's default set
formats = ["mp3", "flac", "m4a", "ogg", "opus"]
spec = csv.writer(open(os.path.join(work, "spec.csv"), "w", newline=""))
spec.writerow(["cover_path", "album_artist", "album", "genre", "format", "placement"])
manifest = csv.writer(open(os.path.join(work, "manifest.csv"), "w", newline=""))
manifest.writerow(["path", "genre"])
i = 0
for row in csv.DictReader(open(os.path.join(d5, "split.csv"))):
    if row["split"] != "train":
        continue
    path = os.path.join(d5, row["path"])
    release = os.path.splitext(os.path.basename(path))[0]
    # discogs5 names no artists: each release is its own.
    spec.writerow([path, "Discogs " + release.split("-")[1], release, tag5[row["genre"]], formats[i % 5], "folder" if i % 4 == 0 else "embedded"])
    manifest.writerow([path, row["genre"]])
    i += 1
for row in csv.DictReader(open(os.path.join(s6, "split.csv"))):
    if row["split"] != "train":
        continue
    path = os.path.join(s6, row["path"])
    spec.writerow([path, row["artist"], row["album"].strip('"') + " " + os.path.basename(path)[:6], tag6[row["genre"]],
                   formats[i % 5], "folder" if i % 4 == 0 else "embedded"])
    if row["genre"] in label6:
        manifest.writerow([path, label6[row["genre"]]])
    i += 1
PY
rm -rf "$work/music"
.venv/bin/python Tests/audio/make_audio.py --library "$work/spec.csv" "$work/music"
"$cg" train --library "$work/music" --library-genres Country,Electronic,HipHop,Pop,Rock --backbone "$backbone" \
    --out "$work/library.cgm" --run "$work/library.run"
"$cg" train --data "$work/manifest.csv" --backbone "$backbone" --out "$work/folders.cgm" --run "$work/folders.run"
for model in library folders; do
    echo "== $model"
    "$cg" evaluate -m "$work/$model.cgm" "$data/discogs5/split.csv" --split test 2>/dev/null
done
