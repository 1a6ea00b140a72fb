"""Scanning a music library against classifying the same covers as image files.

    .venv/bin/python bench/library.py [--albums 240] [--rounds 5] [--threads 2]

Builds a library of --albums albums from discogs5's train covers (../shared/data; two silent
tracks each, formats in turn, the cover embedded in every track or, one album in four, a cover.jpg
beside them; Tests/audio/make_audio.py) in bench/work/library, then times, in turn and --rounds
times (medians; this machine drifts, so the two are interleaved):
  images  `covergenre classify --threads T` on the cover image files themselves;
  scan    `covergenre scan --threads T` on the library: reads every track's tags, finds each
          album's cover, reads embedded pictures through TagLib and classifies them.
Both are whole CLI runs (model load included). Prints a Markdown table row and the ratio.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISCOGS5 = REPO.parent / "shared" / "data" / "covers" / "discogs5"
CLI = REPO / "build" / "bin" / "covergenre"
FORMATS = ("mp3", "flac", "m4a", "ogg", "opus")


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    else:
        name = platform.processor()
    fields = {}
    for line in open("/proc/cpuinfo"):
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    simd = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni") if f in flags)
    return "%s, family %s model %s (%s)" % (name, fields.get("cpu family"), fields.get("model"), simd)


def build(work, albums):
    sys.path.insert(0, str(REPO / "Tests" / "audio"))
    import make_audio
    covers = []
    for row in csv.DictReader(open(DISCOGS5 / "split.csv")):
        if row["split"] == "train":
            covers.append((DISCOGS5 / row["path"], row["genre"]))
    covers = covers[::max(1, len(covers) // albums)][:albums]
    spec = work / "spec.csv"
    with open(spec, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cover_path", "album_artist", "album", "genre", "format", "placement"])
        for i, (path, genre) in enumerate(covers):
            w.writerow([str(path), "Artist %d" % (i // 3), "Album %d" % i, genre, FORMATS[i % len(FORMATS)],
                        "folder" if i % 4 == 0 else "embedded"])
    shutil.rmtree(work / "library", ignore_errors=True)
    make_audio.build_library(str(spec), str(work / "library"))
    images = work / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir()
    for i, (path, _) in enumerate(covers):
        shutil.copyfile(path, images / ("%04d.jpg" % i))
    return len(covers)


def timed(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--albums", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = REPO / "bench" / "work"
    work.mkdir(parents=True, exist_ok=True)
    count = build(work, args.albums)
    model = str(REPO / "models" / "covergenre-default.cgm")
    threads = str(args.threads)
    images_cmd = [str(CLI), "classify", "--model", model, "--threads", threads, "--top", "3", str(work / "images")]
    scan_cmd = [str(CLI), "scan", "--model", model, "--threads", threads, "--top", "3", str(work / "library")]
    timed(images_cmd), timed(scan_cmd)  # warm the page cache and the model file
    images, scans = [], []
    for _ in range(args.rounds):
        images.append(timed(images_cmd))
        scans.append(timed(scan_cmd))
    a, b = statistics.median(images), statistics.median(scans)
    print("CPU: %s" % cpu())
    print("| covers | threads | images: classify (s) | library: scan (s) | scan / images |")
    print("|---|---|---|---|---|")
    print("| %d | %d | %.2f (%.1f covers/s) | %.2f (%.1f albums/s) | %.3f |" % (count, args.threads, a, count / a, b, count / b, b / a))
    print("rounds: images %s; scan %s" % (", ".join("%.2f" % t for t in images), ", ".join("%.2f" % t for t in scans)))


if __name__ == "__main__":
    main()
