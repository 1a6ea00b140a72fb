#!/usr/bin/env python3
"""How an int8 model answers beside the float model it came from, on labelled covers.

    scripts/experiments/int8-agreement.py FLOAT.cgm INT8.cgm --split val [--genres default]

For discogs5 and spotify6 (../shared/data/covers, mapped to the model's genres by models/taxonomy.csv):
top-1 agreement between the two models on every cover of the split (labels not needed), and each
model's accuracy, balanced accuracy and ECE (15 bins) on the covers whose genre the model has.
Runs build/bin/covergenre classify --csv; prints one table (Markdown).
"""
import argparse
import csv
import os
import subprocess
import sys
from collections import defaultdict

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
data = os.path.join(root, "..", "shared", "data", "covers")


def taxonomy(label_set):
    mapping = {}
    with open(os.path.join(root, "models", "taxonomy.csv")) as f:
        for row in csv.DictReader(f):
            mapping[(row["source"], row["source_genre"])] = row[label_set] or None
    return mapping


def covers(source, split):
    with open(os.path.join(data, source, "split.csv")) as f:
        return [(os.path.join(data, source, row["path"]), row["genre"]) for row in csv.DictReader(f) if row["split"] == split]


def probabilities(model, paths, classes):
    out = subprocess.run([os.path.join(root, "build", "bin", "covergenre"), "classify", "--model", model, "--csv",
                          "--top", str(classes)] + paths, capture_output=True, text=True)
    result = defaultdict(dict)
    for row in csv.DictReader(out.stdout.splitlines()):
        if row.get("label"):
            result[row["image"]][row["label"]] = float(row["probability"])
    return result


def metrics(probs, truth, labels):
    rows = [(probs[p], t) for p, t in truth.items() if t in labels and p in probs]
    correct = [max(pr, key=pr.get) == t for pr, t in rows]
    per_class = defaultdict(list)
    for (pr, t), c in zip(rows, correct):
        per_class[t].append(c)
    bins = [[0, 0.0, 0.0] for _ in range(15)]
    for (pr, t), c in zip(rows, correct):
        confidence = max(pr.values())
        b = bins[min(14, int(confidence * 15))]
        b[0] += 1
        b[1] += confidence
        b[2] += c
    ece = sum(abs(b[1] - b[2]) for b in bins) / max(1, len(rows))
    accuracy = sum(correct) / max(1, len(rows))
    balanced = sum(sum(v) / len(v) for v in per_class.values()) / max(1, len(per_class))
    return len(rows), accuracy, balanced, ece


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("float_model")
    parser.add_argument("int8_model")
    parser.add_argument("--split", default="val")
    parser.add_argument("--genres", default="default")
    parser.add_argument("--sources", default="discogs5,spotify6")
    args = parser.parse_args()
    mapping = taxonomy(args.genres)
    labels = sorted({v for v in mapping.values() if v})
    print(f"| source ({args.split}) | covers | top-1 agreement | float acc / bal / ECE | int8 acc / bal / ECE |")
    print("|---|---|---|---|---|")
    total_same = total = 0
    for source in args.sources.split(","):
        items = covers(source, args.split)
        paths = [p for p, _ in items]
        truth = {p: mapping.get((source, g)) for p, g in items}
        a = probabilities(args.float_model, paths, len(labels))
        b = probabilities(args.int8_model, paths, len(labels))
        both = [p for p in paths if p in a and p in b]
        same = sum(max(a[p], key=a[p].get) == max(b[p], key=b[p].get) for p in both)
        total_same += same
        total += len(both)
        fa, fb = metrics(a, truth, labels), metrics(b, truth, labels)
        print(f"| {source} | {len(both)} (labelled {fa[0]}) | {100 * same / max(1, len(both)):.1f}% | "
              f"{100 * fa[1]:.1f}% / {100 * fa[2]:.1f}% / {fa[3]:.3f} | {100 * fb[1]:.1f}% / {100 * fb[2]:.1f}% / {fb[3]:.3f} |")
    print(f"| all | {total} | {100 * total_same / max(1, total):.1f}% | | |")


if __name__ == "__main__":
    sys.exit(main())
