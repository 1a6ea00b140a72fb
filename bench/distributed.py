"""Throughput of tagging a catalogue: one process (the batch API) vs Ray Data in local mode.

    .venv/bin/python bench/distributed.py [--covers 500] [--model models/covergenre-default.cgm]

Uses the bench's project-made ~500x500 JPEG covers (bench/work/covers; made here when missing) and
prints covers/s for one process with every core, and for Ray Data with 2 workers x 1 CPU, plus the
per-cover overhead Ray adds. Needs ray[data] and pyarrow (scripts/setup.sh --python installs them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "bindings" / "python"))
sys.path.insert(0, str(BENCH))

import covergenre  # noqa: E402
from covergenre import distributed  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--covers", type=int, default=500)
    parser.add_argument("--model", default=str(REPO / "models" / "covergenre-default.cgm"))
    args = parser.parse_args()
    import bench
    covers = [str(p) for p in bench.covers(bench.WORK / "covers", args.covers)]
    cpus = os.cpu_count()

    with covergenre.Model(args.model) as model:
        model.probabilities_files(covers[:4])  # warm-up
        start = time.perf_counter()
        model.probabilities_files(covers)
        single = time.perf_counter() - start

    import ray
    env = {"COVERGENRE_LIBRARY": covergenre.library_path(), "PYTHONPATH": str(REPO / "bindings" / "python")}
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    folder = Path(tempfile.mkdtemp())
    try:
        runs = []
        for _ in range(2):  # the first run also starts the workers and loads the model in each
            out = folder / ("tags%d" % len(runs))
            start = time.perf_counter()
            distributed.classify_with_ray(args.model, str(Path(covers[0]).parent), str(out), workers=cpus,
                                          cpus_per_worker=1)
            runs.append(time.perf_counter() - start)
    finally:
        ray.shutdown()
        shutil.rmtree(folder)

    n = len(covers)
    print("| measure | value |")
    print("|---|---|")
    print("| one process, batch API, %d threads: %d covers | %.1f covers/s (%.1f ms per cover) |" % (cpus, n, n / single, single / n * 1e3))
    for i, seconds in enumerate(runs):
        what = "first run (starts Ray workers, loads the model)" if i == 0 else "second run"
        print("| Ray Data local mode, %d workers x 1 CPU, %s | %.1f covers/s |" % (cpus, what, n / seconds))
    overhead = (min(runs) - single) / n * 1e3
    print("| Ray's overhead per cover (best run vs one process) | %.1f ms |" % overhead)
    per_worker = n / min(runs) / cpus
    print("| covers/s per 1-CPU worker under Ray | %.1f |" % per_worker)
    print("| 1-CPU workers to tag 10 million covers in an hour | %d (10,000,000 / 3,600 s / %.1f covers/s) |" % (
        -(-10_000_000 // int(3600 * per_worker)), per_worker))


if __name__ == "__main__":
    main()
