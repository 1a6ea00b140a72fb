"""Which second view is worth a second pass of the network: the mirror image, or the whole cover?

A reference experiment for docs/results.md (section 6), not part of the library. The shipped
model's graph runs in ONNX Runtime (exported by bindings/python/tests/onnx_export.py from the same
.cgm); Pillow makes four views of every validation cover: the model's own (shorter side to 256,
centre crop 224), its mirror, the whole cover squashed to 224 x 224 (nothing cropped from its
edges, where titles and logos often are) and that one's mirror. Each combination averages the views'
calibrated probabilities (the model's temperature). Test covers are not read.

    bench/work/venv/bin/python scripts/experiments/second-view.py --model models/covergenre-default.cgm \
        --taxonomy models/taxonomy.csv discogs5=../shared/data/covers/discogs5 spotify6=../shared/data/covers/spotify6
"""
import argparse
import csv
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python", "tests"))

from pillow_views import centre_crop, open_rgb, whole  # noqa: E402  (beside this file)

COMBINATIONS = (("crop", [0]), ("crop + mirror (shipped)", [0, 1]), ("crop + whole", [0, 2]), ("whole", [2]),
                ("whole + mirror", [2, 3]), ("all four", [0, 1, 2, 3]))


def four_views(path, pre):
    image = open_rgb(path)
    crop, squashed = centre_crop(image, pre), whole(image, pre)
    return [crop, crop[:, ::-1], squashed, squashed[:, ::-1]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--taxonomy", required=True)
    parser.add_argument("sources", nargs="+", help="NAME=FOLDER (a folder with split.csv)")
    args = parser.parse_args()

    import onnx_export
    import onnxruntime as ort
    from covergenre import cgm

    metadata, tensors = cgm.read(args.model)
    labels = metadata["labels"]
    temperature = float(metadata.get("calibration", {}).get("temperature", 1.0))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(onnx_export.to_onnx(metadata, tensors).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    label_set = "broad" if len(labels) > 5 else "default"
    taxonomy = {(r["source"], r["source_genre"]): r[label_set] for r in csv.DictReader(open(args.taxonomy))}

    print("| validation covers | views | accuracy | balanced |\n|---|---|---|---|")
    for source in args.sources:
        name, folder = source.split("=", 1)
        probabilities, truth = [], []
        for row in csv.DictReader(open(os.path.join(folder, "split.csv"))):
            genre = taxonomy[(name, row["genre"])]
            if row["split"] != "val" or genre not in labels:
                continue
            logits = session.run(["logits"], {"input": np.stack(four_views(os.path.join(folder, row["path"]),
                                                                           metadata["preprocess"]))})[0] / temperature
            p = np.exp(logits - logits.max(1, keepdims=True))
            probabilities.append(p / p.sum(1, keepdims=True))
            truth.append(labels.index(genre))
        probabilities, truth = np.stack(probabilities), np.array(truth)
        for combination, views in COMBINATIONS:
            predicted = probabilities[:, views].mean(1).argmax(1)
            balanced = np.mean([(predicted[truth == k] == k).mean() for k in np.unique(truth)])
            print("| %s (%d) | %s | %.1f%% | %.1f%% |" % (name, len(truth), combination, 100 * (predicted == truth).mean(),
                                                       100 * balanced), flush=True)


if __name__ == "__main__":
    main()
