"""ONNX Runtime's rows for bench/int8.sh: the same float .cgm models as ONNX float32, and as ONNX
Runtime's own int8 (quantize_static), timed with session.run.

Runs in bench/work/venv (numpy, onnx, onnxruntime, pillow; bench/int8.sh makes it). For each
--model NAME=PATH.cgm it caches, in bench/work/int8/:
    NAME.onnx           the float32 export (bindings/python/tests/onnx_export.py, NCHW input)
    NAME-ort-int8.onnx  quant_pre_process, then quantize_static: QDQ, weights QInt8 per channel,
                        activations QUInt8 per tensor, MinMax ranges from the calibration covers
    NAME-ort-int8.txt   its sanity line: quantized tensors, top-1 agreement with float32
Either is remade when missing or older than its .cgm (delete them to remake them otherwise). Then,
for every batch and thread count, it times both (float32 first), median ms of --runs calls after
warm-up, and prints one line each, the key=value style of bench_infer:

    ort model=lite0 engine=ort-fp32 batch=1 threads=1 runs=30 median_ms=12.34 p90_ms=13.01

    bench/work/venv/bin/python bench/int8_ort.py --model lite0=bench/work/int8/lite0.cgm \\
        --calibration ../shared/data/covers/discogs5 --batch 1 16 --threads 1 2 --runs 30
    ... --prepare-only          # make the .onnx files, print the versions and sanity lines, time nothing

bench/int8.sh calls it once per table cell and round (one batch, one thread count), right after
our own two engines, so the four engines take turns.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (puts bindings/python and its tests on sys.path)
from bench import timed  # noqa: E402
from covergenre import cgm  # noqa: E402
import onnx_export  # noqa: E402

WORK = bench.WORK / "int8"
IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "webp"}
ENGINES = ("ort-fp32", "ort-int8")


def calibration_covers(source, count, split="train"):
    """The covers `covergenre quantize --calibration SOURCE --images COUNT --split SPLIT` picks
    (Sources/CLI/Quantize.swift), so both engines calibrate on the very same files.

    A folder holding split.csv is read as that manifest (as the CLI does), another folder as
    `<genre>/<image>` with every image counted. A manifest CSV (path,genre[,split]) gives the rows
    of `split` (and rows without a split). Then: sorted by path, an even sample over the whole
    list: index i * n // count for i < count."""
    import csv
    source = Path(source)
    if source.is_dir() and (source / "split.csv").is_file():
        source = source / "split.csv"
    if source.is_dir():
        paths = [str(genre / name.name) for genre in (source / g for g in os.listdir(source))
                 if genre.is_dir() and not genre.name.startswith(".")
                 for name in genre.iterdir() if name.suffix[1:].lower() in IMAGE_EXTENSIONS]
    else:
        with open(source, newline="") as f:
            rows = list(csv.DictReader(f))
        paths = [str(source.parent / r["path"]) for r in rows
                 if split == "all" or not r.get("split") or r["split"] == split]
        paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise SystemExit("no calibration covers in %s" % source)
    paths.sort()  # code-point order, as Swift sorts these (ASCII) paths
    count = min(count, len(paths))
    return [paths[i * len(paths) // count] for i in range(count)]


def preprocess(path, metadata):
    """One cover as the model's metadata says: shorter side to `shorter_side`, centre crop, mean/std;
    NCHW float32. Pillow's bilinear resize (antialiased when shrinking) stands in for the
    library's resampler: not bit-identical, which is fine for measuring activation ranges."""
    from PIL import Image
    pre = metadata["preprocess"]
    h, w, _ = metadata["graph"]["input_shape"]
    assert pre["resize"] == "center_crop", "only centre-crop preprocessing is written here"
    image = Image.open(path).convert("RGB")
    scale = pre["shorter_side"] / min(image.size)
    image = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))), Image.BILINEAR)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    x = np.asarray(image.crop((left, top, left + w, top + h)), np.float32) / 255.0
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.transpose(2, 0, 1)


def session(path, threads):
    """What bench.py's ort_latency uses: every graph optimization, `threads` intra-op threads."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def stale(target, source):
    return not target.exists() or target.stat().st_mtime < Path(source).stat().st_mtime


def prepare(name, cgm_path, covers, batch=10):
    """(float32 .onnx, int8 .onnx) for one model, made if missing or older than the .cgm."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)
    WORK.mkdir(parents=True, exist_ok=True)
    fp32, int8 = WORK / ("%s.onnx" % name), WORK / ("%s-ort-int8.onnx" % name)
    metadata = None
    if stale(fp32, cgm_path):
        metadata, tensors = cgm.read(str(cgm_path))
        onnx.save(onnx_export.to_onnx(metadata, tensors, input_layout="NCHW"), str(fp32))
    if not stale(int8, fp32):
        return fp32, int8
    if metadata is None:
        metadata, _ = cgm.read(str(cgm_path))
    started = time.perf_counter()
    # ONNX Runtime's quantization docs ask for this first: the runtime's graph optimizations (so the
    # quantizer sees the fused graph) and shape inference (it wants every tensor's shape). ONNX's
    # own shape inference is enough here, every shape but the batch being fixed; the symbolic one
    # (meant for transformers) would need sympy.
    pre = WORK / ("%s-ort-pre.onnx" % name)
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Covers(CalibrationDataReader):
        def __init__(self):
            self.chunks = iter([covers[i:i + batch] for i in range(0, len(covers), batch)])

        def get_next(self):
            chunk = next(self.chunks, None)
            return None if chunk is None else {onnx_export.INPUT: np.stack([preprocess(p, metadata) for p in chunk])}

    # reduce_range stays off: 7-bit weights (our choice, for AVX2's saturating vpmaddubsw) only
    # matter to ONNX Runtime on CPUs without VNNI, and do not change its speed.
    quantize_static(str(pre), str(int8), Covers(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    pre.unlink()
    report(name, fp32, int8, covers, metadata, time.perf_counter() - started)
    return fp32, int8


def report(name, fp32, int8, covers, metadata, seconds):
    """A sanity line for the int8 model: quantized nodes, and top-1 agreement with the float32
    export on the calibration covers (a broken quantization would make its timings meaningless)."""
    import onnx
    ops = {}
    for node in onnx.load(str(int8)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    a, b = session(fp32, 2), session(int8, 2)
    same = 0
    for i in range(0, len(covers), 10):
        x = np.stack([preprocess(p, metadata) for p in covers[i:i + 10]])
        same += int((a.run(["logits"], {onnx_export.INPUT: x})[0].argmax(1)
                     == b.run(["logits"], {onnx_export.INPUT: x})[0].argmax(1)).sum())
    line = "ort-quantize model=%s covers=%d seconds=%.1f quantize_linear=%d dequantize_linear=%d top1_agreement=%.3f" % (
        name, len(covers), seconds, ops.get("QuantizeLinear", 0), ops.get("DequantizeLinear", 0), same / len(covers))
    print(line, file=sys.stderr, flush=True)
    note(int8).write_text(line + "\n")


def note(int8):
    """Where the sanity line of an int8 model is kept, for --prepare-only to print again."""
    return int8.with_suffix(".txt")


def latency(path, metadata, threads, batch, runs):
    s = session(path, threads)
    # Random covers in the model's input scale (uint8 pixels normalized), NCHW.
    x = np.ascontiguousarray(onnx_export.preprocessed_input(metadata, batch).transpose(0, 3, 1, 2))
    result = timed(lambda: s.run(["logits"], {onnx_export.INPUT: x}), runs)
    del s
    return result


def versions():
    import onnx
    import onnxruntime as ort
    return "ort-version onnxruntime=%s onnx=%s numpy=%s" % (ort.__version__, onnx.__version__, np.__version__)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a float .cgm model and the name its rows carry (repeatable)")
    parser.add_argument("--calibration", help="the folder or manifest given to `covergenre quantize --calibration` "
                                              "(needed only when an int8 model is to be made)")
    parser.add_argument("--images", type=int, default=300, help="calibration covers (covergenre quantize's default)")
    parser.add_argument("--split", default="train", help="a manifest's split to calibrate on")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=30, help="timed calls per measurement, after 5 warm-up calls")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()

    models = [m.split("=", 1) for m in args.model]
    covers = None
    made = []
    for name, path in models:
        int8 = WORK / ("%s-ort-int8.onnx" % name)
        if covers is None and (stale(WORK / ("%s.onnx" % name), path) or stale(int8, WORK / ("%s.onnx" % name))):
            if not args.calibration:
                raise SystemExit("%s needs making: give --calibration" % int8)
            covers = calibration_covers(args.calibration, args.images, args.split)
        made.append((name, path) + prepare(name, path, covers))
    if args.prepare_only:
        print(versions(), flush=True)
        for _, _, _, int8 in made:
            if note(int8).exists():
                print(note(int8).read_text().strip(), flush=True)
        return
    for name, path, fp32, int8 in made:
        metadata, _ = cgm.read(str(path))
        for batch in args.batch:
            for threads in args.threads:
                for engine in args.engines:
                    t = latency(fp32 if engine == "ort-fp32" else int8, metadata, threads, batch, args.runs)
                    print("ort model=%s engine=%s batch=%d threads=%d runs=%d median_ms=%.4f p90_ms=%.4f" % (
                        name, engine, batch, threads, args.runs, t["median_ms"], t["p90_ms"]), flush=True)


if __name__ == "__main__":
    main()
