#!/usr/bin/env python3
"""Scores an ensemble of calibrated models against each of its members (docs/results.md, "Ensembles").

    scripts/ensemble-eval.py --split-csv RUN/split.csv --split val MODEL.cgm [MODEL.cgm ...]

The split CSV is a training run's (path,genre,split: every source's covers with the genre already
mapped through the taxonomy). The ensemble averages the members' calibrated probabilities. Per
source and for the ensemble: accuracy, balanced accuracy over the data's genres, ECE (15 bins)
and NLL. Probabilities are cached next to each model (MODEL.probs-<split>.npz) so that adding a
member does not recompute the others.
"""
import argparse
import csv
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bindings" / "python"))
import covergenre  # noqa: E402


def source_of(path):
    parts = pathlib.PurePath(path).parts
    return parts[parts.index("covers") + 1] if "covers" in parts else "data"


def probabilities(model_path, paths, split, threads):
    cache = pathlib.Path(f"{model_path}.probs-{split}.npz")
    if cache.exists():
        stored = np.load(cache, allow_pickle=False)
        if list(stored["paths"]) == paths:
            return list(stored["labels"]), stored["probs"]
    with covergenre.Model(model_path, threads=threads) as model:
        rows = model.probabilities_files(paths, threads=threads)
        labels = list(model.labels)
    for path, row in zip(paths, rows):
        if isinstance(row, Exception):
            raise SystemExit(f"{model_path}: {path}: {row}")
    probs = np.stack([np.asarray(r, dtype=np.float64) for r in rows])
    np.savez(cache, paths=np.array(paths), labels=np.array(labels), probs=probs)
    return labels, probs


def scores(probs, truth):
    predicted = probs.argmax(1)
    correct = predicted == truth
    genres = np.unique(truth)
    balanced = np.mean([correct[truth == g].mean() for g in genres])
    confidence = probs.max(1)
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    nll = -np.mean(np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, 1)))
    return correct.mean(), balanced, ece, nll


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-csv", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    rows = [r for r in csv.DictReader(open(args.split_csv, newline="")) if r["split"] == args.split]
    if not rows:
        raise SystemExit(f"no '{args.split}' rows in {args.split_csv}")
    paths = [r["path"] for r in rows]
    members = [probabilities(m, paths, args.split, args.threads) for m in args.models]
    labels = members[0][0]
    if any(m[0] != labels for m in members):
        raise SystemExit("the models' labels differ; an ensemble needs one label set")
    truth = np.array([labels.index(r["genre"]) for r in rows])
    sources = np.array([source_of(p) for p in paths])
    entries = [(pathlib.Path(m).name, p) for m, (_, p) in zip(args.models, members)]
    if len(members) > 1:
        entries.append(("ensemble (mean)", np.mean([p for _, p in members], axis=0)))
    print(f"| model | source ({args.split}) | images | accuracy | balanced | ECE-15 | NLL |")
    print("|---|---|---|---|---|---|---|")
    for name, probs in entries:
        for source in sorted(set(sources)):
            keep = sources == source
            acc, bal, ece, nll = scores(probs[keep], truth[keep])
            print(f"| {name} | {source} | {keep.sum()} | {100 * acc:.1f} | {100 * bal:.1f} | {ece:.3f} | {nll:.3f} |")


if __name__ == "__main__":
    main()
