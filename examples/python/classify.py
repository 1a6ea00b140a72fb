#!/usr/bin/env python3
"""Print the most probable genres of each cover image.

    python examples/python/classify.py models/covergenre-default.cgm cover.jpg [more.png ...] [--top 3]

Runs from a checkout without installing anything: when the covergenre package is not installed,
it is taken from bindings/python, and the library from build/lib (scripts/build.sh makes it).
Exits 1 if any image failed (the others are still printed), 2 if the model cannot be loaded.
"""

import argparse
import os
import sys

try:
    import covergenre
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "bindings",
                                    "python"))
    import covergenre


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print the most probable genres of each cover image "
                                                 "(JPEG, PNG or WebP).")
    parser.add_argument("model", help="model file (.cgm)")
    parser.add_argument("images", nargs="+", metavar="image", help="cover image files")
    parser.add_argument("--top", type=int, default=3, metavar="K", help="genres to print per image (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="threads per image; 0 = every core (default)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be 0 or more")

    try:
        model = covergenre.Model(args.model, threads=args.threads)
    except (covergenre.CoverGenreError, covergenre.LibraryNotFoundError) as e:
        print("cannot load %s: %s" % (args.model, e), file=sys.stderr)
        return 2

    failures = 0
    with model:
        for image in args.images:
            try:
                predictions = model.classify(image, top_k=args.top)
            except covergenre.CoverGenreError as e:
                print("%s: %s (%s)" % (image, e.message, e.status_name), file=sys.stderr)
                failures += 1
                continue
            print(image)
            width = max(len(p.label) for p in predictions)
            for p in predictions:
                print("  %-*s %.3f" % (width, p.label, p.probability))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
