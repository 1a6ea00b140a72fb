"""python -m covergenre: the command-line tool's classify and similar, on the Python binding.

    python -m covergenre classify [-m MODEL] [--top 3] [--json | --csv] COVER_OR_FOLDER...
    python -m covergenre similar [-m MODEL] [--top 10] [--json] FOLDER QUERY

Without -m, the default model (shipped in the wheel). Folders are searched recursively for
.jpg, .jpeg, .png and .webp files. Exit status: 0 when every cover was read, 1 when any failed
(the others are still printed), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

from . import CoverGenreError, Model

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def images_under(root):
    found = []
    for directory, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found += [os.path.join(directory, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def expand(inputs):
    paths = []
    for item in inputs:
        paths += images_under(item) if os.path.isdir(item) else [item]
    return paths


def classify(args):
    paths = expand(args.inputs)
    failures = 0
    records = []
    writer = csv.writer(sys.stdout, lineterminator="\n") if args.csv else None
    if writer:
        writer.writerow(["image", "rank", "label", "probability", "error"])
    with Model(args.model, threads=args.threads, min_confidence=args.min_confidence) as model:
        for path, result in zip(paths, model.classify_files(paths, top_k=args.top)):
            if isinstance(result, CoverGenreError):
                failures += 1
                print("covergenre: %s" % result.message, file=sys.stderr)
                if args.json:
                    records.append({"image": path, "error": result.message})
                elif writer:
                    writer.writerow([path, "", "", "", result.message])
                continue
            if args.json:
                records.append({"image": path, "predictions": [
                    {"label": p.label, "probability": round(p.probability, 4)} for p in result]})
            elif writer:
                for rank, p in enumerate(result, 1):
                    writer.writerow([path, rank, p.label, "%.4f" % p.probability, ""])
            else:
                print(path)
                width = max((len(p.label) for p in result), default=0)
                for p in result:
                    print("  %s  %.3f" % (p.label.ljust(width), p.probability))
                if not result:
                    print("  unsure")
    if args.json:
        print(json.dumps(records, indent=2))
    return 1 if failures else 0


def cosine(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    norm = math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b))
    # Rounding can carry a cover's similarity to itself past 1: keep it in [-1, 1].
    return max(-1.0, min(1.0, dot / norm)) if norm > 0 else 0.0


def similar(args):
    if not os.path.isdir(args.folder):
        print("covergenre: %s is not a folder" % args.folder, file=sys.stderr)
        return 2
    failures = 0
    with Model(args.model, threads=args.threads) as model:
        target = model.embed(args.query)
        paths = [p for p in images_under(args.folder) if os.path.abspath(p) != os.path.abspath(args.query)]
        ranked = []
        for path, result in zip(paths, model.embed_files(paths)):
            if isinstance(result, CoverGenreError):
                failures += 1
                print("covergenre: skipping %s: %s" % (path, result.message), file=sys.stderr)
            else:
                ranked.append((cosine(target, result), path))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    best = ranked[:args.top]
    if args.json:
        print(json.dumps([{"image": path, "similarity": round(similarity, 6)} for similarity, path in best], indent=2))
    else:
        for similarity, path in best:
            print("%.4f  %s" % (similarity, path))
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m covergenre", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("-m", "--model", help="a .cgm model file (default: the default model)")
        p.add_argument("--threads", type=int, default=0, help="threads (0: every core)")

    c = commands.add_parser("classify", help="the most probable genres of each cover")
    common(c)
    c.add_argument("--top", type=int, default=3, help="genres per cover")
    c.add_argument("--min-confidence", type=float, default=None,
                   help="only genres at least this probable (0-1); a cover with none is unsure")
    formats = c.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON")
    formats.add_argument("--csv", action="store_true", help="print CSV: image,rank,label,probability,error")
    c.add_argument("inputs", nargs="+", metavar="COVER_OR_FOLDER")
    c.set_defaults(run=classify)

    s = commands.add_parser("similar", help="the covers in a folder most similar to a query cover")
    common(s)
    s.add_argument("--top", type=int, default=10, help="covers to list")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("folder")
    s.add_argument("query")
    s.set_defaults(run=similar)

    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    try:
        return args.run(args)
    except CoverGenreError as e:
        print("covergenre: %s" % e, file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print("covergenre: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
