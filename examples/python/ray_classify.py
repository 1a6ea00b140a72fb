#!/usr/bin/env python3
"""Tag a whole catalogue of covers with Ray Data: one model per worker, a bad cover never fails the job.

    python examples/python/ray_classify.py models/covergenre-default.cgm COVERS_DIR_OR_MANIFEST OUT \
        [--workers 2] [--cpus-per-worker 1] [--top 3] [--embedding] [--address auto] [--wheel WHEEL]

Without --address it starts Ray on this machine (local mode); with --address auto it joins the
cluster `ray start` set up. OUT is a folder of Parquet files (or CSV when OUT ends in .csv):
path, genres, scores, probabilities, [embedding], error. Needs `pip install './bindings/python[ray]'`
(ray[data], pyarrow); from a checkout, the binding is taken from bindings/python. With --wheel
(scripts/wheel.sh's self-contained wheel), Ray uploads the wheel and every worker installs it: no
node needs a build, a Swift toolchain or the -dev packages. The model may then be "default".
"""

import argparse
import os
import sys
import time

try:
    import covergenre
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "bindings",
                                    "python"))
    import covergenre
from covergenre import distributed


def main(argv=None):
    parser = argparse.ArgumentParser(description="Classify many covers with Ray Data.")
    parser.add_argument("model", help='model file (.cgm), or "default" for the default model')
    parser.add_argument("source", help="folder of covers, or a CSV/Parquet manifest with a path or url column")
    parser.add_argument("output", help="output folder (Parquet; CSV when it ends in .csv)")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (default: cluster CPUs / CPUs per worker)")
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs each worker reserves = its library threads")
    parser.add_argument("--top", type=int, default=3, help="genres per cover (default 3)")
    parser.add_argument("--embedding", action="store_true", help="also write each cover's embedding")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--wheel", help="a covergenre wheel to ship to every worker (runtime_env py_modules)")
    args = parser.parse_args(argv)
    if args.model == "default":
        args.model = covergenre.default_model_path()

    import ray
    if args.wheel:
        # Ray uploads the wheel with the job and installs it on each worker.
        runtime_env = {"py_modules": [os.path.abspath(args.wheel)]}
    else:
        # Workers import the binding and find the library the same way this process did.
        runtime_env = {"env_vars": {"COVERGENRE_LIBRARY": covergenre.library_path(),
                                    "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(covergenre.__file__)))}}
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    distributed.classify_with_ray(args.model, args.source, args.output, workers=args.workers,
                                  cpus_per_worker=args.cpus_per_worker, top_k=args.top, embedding=args.embedding,
                                  overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    ray.shutdown()
    print("wrote %s in %.1f s" % (args.output, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
