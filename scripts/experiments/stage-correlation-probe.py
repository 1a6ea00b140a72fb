"""Would channel correlations (Gram matrices) of the backbone's stages help the genre head?

A reference experiment for docs/results.md ("Channel correlations"), not part of the library:
ONNX Runtime runs the default model's backbone (exported by bindings/python/tests/onnx_export.py
from the very .cgm the engine runs), and numpy reduces each stage's activations to
  - stats: per-channel mean and standard deviation of the 7 stages plus the pooled last layer
    (the 2,848 values the engine's `--features stats` computes), and
  - corr: the upper triangle of the channel correlation matrix of the first five stages
    (16, 24, 40, 80 and 112 channels: 10,552 values), the texture statistics of style transfer.
Heads are trained in numpy on discogs5 train (each cover and its mirror) and scored on val
(probabilities of a cover and its mirror averaged); test is not read. The heads copy the
default's shape (512-wide hidden ReLU layer, dropout 0.6, 40 epochs, class-weighted loss, Adam
with a cosine schedule) and a linear probe; several seeds, because one seed moves val by a point.

    bench/work/venv/bin/python scripts/experiments/stage-correlation-probe.py \
        --model models/covergenre-default.cgm --data ../shared/data/covers/discogs5 --out runs/corr

(bench/run.sh makes bench/work/venv with onnxruntime, onnx, numpy and Pillow.)
"""
import argparse
import csv
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python", "tests"))

from pillow_views import centre_crop, open_rgb  # noqa: E402  (beside this file)

CORRELATION_STAGES = ("stats.0", "stats.1", "stats.2", "stats.3", "stats.4")


def backbone_session(model_path):
    """An ONNX Runtime session whose outputs are the inputs of the model's channel_stats nodes
    (the stage outputs) and of its global pool, in that order, with their names."""
    import onnx_export
    import onnxruntime as ort
    from covergenre import cgm
    from onnx import helper

    metadata, tensors = cgm.read(model_path)
    model = onnx_export.to_onnx(metadata, tensors)
    values = {}
    for node in model.graph.node:
        hint = node.name.split("__")[0]
        if node.op_type == "ReduceMean" and hint.startswith("stats."):
            values.setdefault(hint, node.input[0])  # the first ReduceMean of a stats node reads the stage
        if node.op_type == "GlobalAveragePool" and hint == "pool":
            values["pool"] = node.output[0]
    names = sorted(k for k in values if k.startswith("stats.")) + ["pool"]
    for name in names:
        model.graph.output.append(helper.make_empty_tensor_value_info(values[name]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, [values[n] for n in names], names, metadata["preprocess"]


def reduce_stages(names, activations):
    stats, correlations = [], []
    for name, a in zip(names, activations):
        if name == "pool":
            stats.append(a.reshape(a.shape[0], -1))
            continue
        n, c, h, w = a.shape
        x = a.reshape(n, c, h * w)
        mean = x.mean(2)
        centred = x - mean[:, :, None]
        covariance = np.einsum("ncp,ndp->ncd", centred, centred) / (h * w)
        sd = np.sqrt(np.maximum(np.diagonal(covariance, axis1=1, axis2=2), 0))
        stats += [mean, sd]
        if name in CORRELATION_STAGES:
            correlation = covariance / (sd[:, :, None] * sd[:, None, :] + 1e-5)
            upper = np.triu_indices(c, 1)
            correlations.append(correlation[:, upper[0], upper[1]])
    return np.concatenate(stats, 1), np.concatenate(correlations, 1)


def extract(backbone, data, split, out):
    """Each `split` cover's and its mirror's statistics and correlations, saved to `out`."""
    session, outputs, names, pre = backbone
    rows = [r for r in csv.DictReader(open(os.path.join(data, "split.csv"))) if r["split"] == split]
    stats, correlations, labels, batch = [], [], [], []
    started = time.time()

    def flush():
        s, c = reduce_stages(names, session.run(outputs, {"input": np.stack(batch)}))
        stats.append(s)
        correlations.append(c)
        batch.clear()

    for row in rows:
        image = centre_crop(open_rgb(os.path.join(data, row["path"])), pre)
        for view in (image, image[:, ::-1]):  # the cover and its mirror
            batch.append(view)
            labels.append(row["genre"])
            if len(batch) == 32:
                flush()
    if batch:
        flush()
    np.savez(out, stats=np.concatenate(stats), corr=np.concatenate(correlations), y=np.array(labels))
    print("%s: %d views in %.0f s" % (split, len(labels), time.time() - started), flush=True)


def train_head(x_train, y_train, x_val, classes, l2, hidden, epochs, dropout, seed, lr=1e-3, batch=64):
    """Probabilities for x_val from a head trained on (x_train, y_train): standardization,
    dropout on the input (and on the hidden layer), class-weighted cross-entropy, Adam with L2
    on the weights and a cosine schedule."""
    rng = np.random.default_rng(seed)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train = ((x_train - mu) / sd).astype(np.float32)
    x_val = ((x_val - mu) / sd).astype(np.float32)
    n, d = x_train.shape
    weights = (n / (classes * np.bincount(y_train, minlength=classes)))
    if hidden:
        params = [(rng.standard_normal((d, hidden)) * np.sqrt(2 / d)).astype(np.float32), np.zeros(hidden, np.float32),
                  (rng.standard_normal((hidden, classes)) * np.sqrt(1 / hidden)).astype(np.float32),
                  np.zeros(classes, np.float32)]
    else:
        params = [np.zeros((d, classes), np.float32), np.zeros(classes, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    keep = 1 - dropout
    steps, t = epochs * (n // batch), 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            rows = order[i:i + batch]
            x, y = x_train[rows], y_train[rows]
            x = x * (rng.random(x.shape) < keep) / keep
            if hidden:
                h = np.maximum(x @ params[0] + params[1], 0)
                h = h * (rng.random(h.shape) < keep) / keep
                z = h @ params[2] + params[3]
            else:
                z = x @ params[0] + params[1]
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = p
            g[np.arange(len(y)), y] -= 1
            g *= weights[y][:, None] / len(y)
            if hidden:
                gh = (g @ params[2].T) * (h > 0) / keep
                grads = [x.T @ gh, gh.sum(0), h.T @ g, g.sum(0)]
            else:
                grads = [x.T @ g, g.sum(0)]
            t += 1
            rate = lr * 0.5 * (1 + np.cos(np.pi * t / steps))
            for j, (param, grad) in enumerate(zip(params, grads)):
                if param.ndim == 2:
                    grad = grad + l2 * param
                m[j] = 0.9 * m[j] + 0.1 * grad
                v[j] = 0.999 * v[j] + 0.001 * grad * grad
                param -= rate * (m[j] / (1 - 0.9 ** t)) / (np.sqrt(v[j] / (1 - 0.999 ** t)) + 1e-8)
    z = (np.maximum(x_val @ params[0] + params[1], 0) @ params[2] + params[3]) if hidden else x_val @ params[0] + params[1]
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def score(probabilities, labels):
    """(accuracy, balanced accuracy) in percent, each cover's two views averaged."""
    p = probabilities.reshape(-1, 2, probabilities.shape[1]).mean(1)
    y = labels[::2]
    predicted = p.argmax(1)
    balanced = np.mean([(predicted[y == k] == k).mean() for k in np.unique(y)])
    return 100 * (predicted == y).mean(), 100 * balanced


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="discogs5's folder (with split.csv)")
    parser.add_argument("--out", required=True, help="folder for the cached features")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cached = {split: os.path.join(args.out, split + ".npz") for split in ("train", "val")}
    missing = [split for split, path in cached.items() if not os.path.exists(path)]
    if missing:
        backbone = backbone_session(args.model)  # one export and session for every split
        for split in missing:
            extract(backbone, args.data, split, cached[split])
    train, val = np.load(cached["train"]), np.load(cached["val"])
    genres = sorted(set(train["y"]))
    y_train = np.array([genres.index(g) for g in train["y"]])
    y_val = np.array([genres.index(g) for g in val["y"]])

    # The correlations' principal components, fitted on one view per training cover.
    mean, sd = train["corr"].mean(0), train["corr"].std(0) + 1e-6
    basis = np.linalg.svd(((train["corr"] - mean) / sd)[::2], full_matrices=False)[2][:1024]
    features = {
        "stats": lambda d: d["stats"],
        "corr": lambda d: d["corr"],
        "stats+corr": lambda d: np.concatenate([d["stats"], d["corr"]], 1),
        "stats+corr PCA 1024": lambda d: np.concatenate([d["stats"], ((d["corr"] - mean) / sd) @ basis.T], 1),
    }
    runs = [("linear", kind, l2, 0) for kind in ("stats", "stats+corr", "corr") for l2 in (1e-3, 1e-2, 1e-1)]
    runs += [("hidden 512", kind, 1e-3, seed) for seed in (0, 1, 2) for kind in ("stats", "stats+corr", "stats+corr PCA 1024")]
    print("| head | features | L2 | seed | val accuracy | val balanced |\n|---|---|---|---|---|---|", flush=True)
    for head, kind, l2, seed in runs:
        hidden = 512 if head != "linear" else 0
        p = train_head(features[kind](train), y_train, features[kind](val), len(genres), l2, hidden,
                       epochs=40 if hidden else 30, dropout=0.6 if hidden else 0.3, seed=seed)
        print("| %s | %s | %g | %d | %.1f%% | %.1f%% |" % ((head, kind, l2, seed) + score(p, y_val)), flush=True)


if __name__ == "__main__":
    main()
