"""covergenre.distributed: the Ray Data pipeline on a local two-CPU Ray, checked bit for bit against one
process; damaged covers, missing files and failing URLs in the error column; PySpark when installed;
and the module importing without either."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import covergenre

pytest.importorskip("PIL.Image", reason="Pillow is needed to generate test covers")
np = pytest.importorskip("numpy")

from cover_server import CoverServer, Response, image  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

BINDINGS = Path(__file__).resolve().parents[1]
COVERS = 200
FORMATS = [("jpg", dict(format="JPEG", quality=88)), ("png", dict(format="PNG")),
           ("webp", dict(format="WEBP", quality=85))]


def draw_cover(seed):
    """A cover of a seeded size (40..420 px a side) with shapes and noise, as a PIL image."""
    rng = random.Random(seed)
    size = (rng.randint(40, 420), rng.randint(40, 420))
    picture = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(picture)
    for _ in range(4):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randint(5, size[0]), y0 + rng.randint(5, size[1]))
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    noise = np.random.default_rng(seed).integers(0, 40, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(np.asarray(picture) // 8 * 7 + noise)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """(folder of COVERS good covers in nested subfolders, [good paths], {bad path: expected status})."""
    folder = tmp_path_factory.mktemp("catalogue")
    good = []
    for i in range(COVERS):
        extension, options = FORMATS[i % len(FORMATS)]
        path = folder / ("shelf%d" % (i % 4)) / ("cover%03d.%s" % (i, extension))
        path.parent.mkdir(exist_ok=True)
        draw_cover(i).save(path, **options)
        good.append(str(path))
    (folder / "notes.txt").write_text("not a cover, and not listed: its extension is not an image's")
    whole = Path(good[0]).read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (folder / "text.jpg").write_text("this is a text file with a .jpg name\n")
    bad = {str(folder / "truncated.jpg"): "CG_ERR_IMAGE_DECODE",
           str(folder / "text.jpg"): "CG_ERR_IMAGE_UNSUPPORTED",
           str(folder / "missing.jpg"): "CG_ERR_IO"}
    return folder, good, bad


@pytest.fixture(scope="module")
def model_path(create_model):
    # Random batch-norm statistics spread the probabilities, so the top-k order means something.
    return create_model("baseline-cnn", "--width-divisor", "8", "--input-size", "64", "--random-statistics")


@pytest.fixture(scope="module")
def reference(model_path, catalogue):
    """{path: probabilities} from one process, one image at a time on one thread."""
    _, good, _ = catalogue
    with covergenre.Model(model_path, threads=1) as model:
        return {path: model.probabilities(path) for path in good}


@pytest.fixture(scope="module")
def ray_local(lib):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'covergenre[ray]'): "
                                            "skipping the Ray Data tests")
    pytest.importorskip("ray.data", reason="ray is installed without Ray Data (pip install 'ray[data]')")
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install 'covergenre[ray]')")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    # Workers do not inherit the driver's sys.path: point them at this source tree and library.
    env = {"PYTHONPATH": os.pathsep.join([str(BINDINGS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "COVERGENRE_LIBRARY": covergenre.library_path()}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def read_output(folder):
    """{path: row dict} of a Parquet results folder."""
    import pyarrow.parquet as pq
    rows = pq.read_table(str(folder)).to_pylist()
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a cover appears twice in the output"
    return by_path


def write_manifest(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def expected_top(probabilities, labels, k):
    """The library's top-k rule from scratch: highest first, ties by lower index."""
    order = sorted(range(len(probabilities)), key=lambda i: (-probabilities[i], i))[:k]
    return [labels[i] for i in order], [probabilities[i] for i in order]


def assert_same_floats(actual, expected, what):
    actual = np.asarray(actual, dtype=np.float32)
    expected = np.asarray(expected, dtype=np.float32)
    assert actual.shape == expected.shape, what
    # Bit patterns, not values: -0.0 == 0.0 and NaN != NaN would hide differences.
    assert actual.view(np.uint32).tolist() == expected.view(np.uint32).tolist(), what


# ---- Ray ---------------------------------------------------------------------------------------

def test_ray_manifest_matches_one_process_and_reports_bad_covers(ray_local, tmp_path, model_path, catalogue,
                                                                 reference):
    from covergenre import distributed
    folder, good, bad = catalogue
    rows = [[p, "album%03d" % i] for i, p in enumerate(good)] + [[p, "bad%d" % i] for i, p in enumerate(bad)]
    random.Random(3).shuffle(rows)
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, ["path", "album"], rows)
    output = tmp_path / "tags.parquet"

    started = time.monotonic()
    distributed.classify_with_ray(model_path, str(manifest), str(output), workers=2, cpus_per_worker=1, top_k=3,
                                  batch_size=16)
    elapsed = time.monotonic() - started

    results = read_output(output)
    assert sorted(results) == sorted(good + list(bad))
    labels = covergenre.Model(model_path).labels
    for path in good:
        row = results[path]
        assert row["error"] is None, row["error"]
        assert_same_floats(row["probabilities"], reference[path], path)
        genres, scores = expected_top(np.asarray(reference[path]).tolist(), labels, 3)
        assert row["genres"] == genres
        assert_same_floats(row["scores"], scores, path)
    for path, status in bad.items():
        row = results[path]
        # The library's own message for that file, after its status.
        assert row["error"].startswith(status + ": ") and path in row["error"], row["error"]
        assert row["genres"] is None and row["scores"] is None and row["probabilities"] is None
    # The manifest's other columns come through untouched.
    assert {results[p]["album"] for p in good} == {"album%03d" % i for i in range(COVERS)}
    print("\n%d covers through Ray Data with 2 workers in %.1f s" % (len(results), elapsed))


def test_ray_folder_to_csv(ray_local, tmp_path, model_path, catalogue, reference):
    from covergenre import distributed
    folder, good, bad = catalogue
    output = tmp_path / "tags.csv"
    distributed.classify_with_ray(model_path, str(folder), str(output), workers=2, top_k=2, batch_size=32)

    rows = []
    for part in sorted(output.iterdir()):
        with open(part, newline="", encoding="utf-8") as f:
            rows.extend(csv.DictReader(f))
    results = {row["path"]: row for row in rows}
    present = {p: s for p, s in bad.items() if os.path.exists(p)}
    # A folder lists image files only: notes.txt is not there, the damaged .jpg files are.
    assert sorted(results) == sorted(good + list(present))
    for path in good:
        row = results[path]
        assert row["error"] == "", row["error"]
        # JSON numbers of the CSV parse back to exactly the float32 values.
        assert_same_floats(json.loads(row["probabilities"]), reference[path], path)
        assert len(json.loads(row["genres"])) == 2
    for path, status in present.items():
        assert results[path]["error"].startswith(status), results[path]["error"]
        assert results[path]["probabilities"] == ""


def test_ray_urls_with_embeddings_and_fetch_failures(ray_local, tmp_path, model_path, catalogue):
    from covergenre import distributed
    _, good, _ = catalogue
    chosen = good[:12]
    bodies = {"/covers/%d" % i: Path(p).read_bytes() for i, p in enumerate(chosen)}
    routes = {route: image(body) for route, body in bodies.items()}
    whole = bodies["/covers/0"]
    routes["/truncated"] = image(whole[:len(whole) // 3])
    routes["/html"] = Response(200, b"<html>moved</html>", {"Content-Type": "text/html"})
    routes["/slow"] = image(whole, delay=5.0)
    with CoverServer(routes) as server:
        expected_errors = {server.url("/truncated"): "CG_ERR_IMAGE_DECODE",
                           server.url("/html"): "CG_ERR_IMAGE_UNSUPPORTED",
                           server.url("/gone"): "fetch failed: HTTPError",
                           server.url("/slow"): "fetch failed: ",
                           "http://127.0.0.1:9/refused": "fetch failed: URLError"}
        urls = [server.url(route) for route in bodies] + list(expected_errors)
        manifest = tmp_path / "urls.parquet"
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"url": urls, "n": list(range(len(urls)))}), str(manifest))
        output = tmp_path / "tags.parquet"
        distributed.classify_with_ray(model_path, str(manifest), str(output), workers=2, embedding=True,
                                      fetch_timeout=1.0, batch_size=4)

    import pyarrow.parquet as pq
    results = {row["url"]: row for row in pq.read_table(str(output)).to_pylist()}
    assert sorted(results) == sorted(urls)
    with covergenre.Model(model_path, threads=1) as model:
        for route, body in bodies.items():
            row = results[server.url(route)]
            assert row["error"] is None, row["error"]
            # The same bytes in memory, one image at a time: a URL's cover gets a file's results.
            assert_same_floats(row["probabilities"], model.probabilities(body), route)
            assert_same_floats(row["embedding"], model.embed(body), route)
    for url, start in expected_errors.items():
        row = results[url]
        assert row["error"].startswith(start), (url, row["error"])
        assert url in row["error"] or start.startswith("fetch failed"), row["error"]
        assert row["probabilities"] is None and row["embedding"] is None


def test_ray_model_from_shared_path(ray_local, tmp_path, model_path, catalogue, reference):
    from covergenre import distributed
    _, good, _ = catalogue
    manifest = tmp_path / "few.csv"
    # Relative paths are taken from the manifest's folder, not the workers' working directory.
    write_manifest(manifest, ["path"], [[os.path.relpath(p, tmp_path)] for p in good[:20]])
    output = tmp_path / "tags.parquet"
    distributed.classify_with_ray(model_path, str(manifest), str(output), workers=2, share_model="path")
    results = read_output(output)
    for path in good[:20]:
        row = results[os.path.relpath(path, tmp_path)]
        assert row["error"] is None, row["error"]
        assert_same_floats(row["probabilities"], reference[path], path)


# ---- Without Ray --------------------------------------------------------------------------------

def test_worker_runs_its_threads_only(lib, model_path, catalogue, reference):
    """A worker with threads=1 keeps one core busy, never more (CPU time <= wall time)."""
    pa = pytest.importorskip("pyarrow")
    from covergenre.distributed import CoverClassifier
    _, good, bad = catalogue
    classifier = CoverClassifier(model_path, threads=1, top_k=5)
    table = pa.table({"path": good + list(bad)})
    classifier(table.slice(0, 8))  # first-use setup out of the measurement
    wall, cpu = time.perf_counter(), time.process_time()
    out = classifier(table).to_pylist()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert cpu <= wall * 1.15 + 0.05, "%.2f s of CPU in %.2f s with threads=1" % (cpu, wall)
    for row in out[:len(good)]:
        assert_same_floats(row["probabilities"], reference[row["path"]], row["path"])
    assert [row["error"].split(":")[0] for row in out[len(good):]] == list(bad.values())


def test_input_checks(lib, tmp_path, model_path):
    pytest.importorskip("pyarrow")
    from covergenre import distributed
    manifest = tmp_path / "m.csv"
    write_manifest(manifest, ["file", "genre"], [["a.jpg", "Rock"]])
    with pytest.raises(ValueError, match="no 'path' or 'url' column"):
        distributed.ray_dataset(model_path, str(manifest))
    write_manifest(manifest, ["path", "error"], [["a.jpg", ""]])
    with pytest.raises(ValueError, match="error"):
        distributed.ray_dataset(model_path, str(manifest))
    output = tmp_path / "out.parquet"
    output.mkdir()
    (output / "part-0.parquet").write_bytes(b"")
    with pytest.raises(FileExistsError):
        distributed.classify_with_ray(model_path, str(manifest), str(output))


def test_module_imports_without_ray_or_pyspark(lib):
    """Blocking the optional packages: the import works, using Ray says what to install."""
    code = "\n".join([
        "import sys",
        "for name in ('ray', 'ray.data', 'pyspark', 'pyarrow', 'pandas'): sys.modules[name] = None",
        "sys.path.insert(0, %r)" % str(BINDINGS),
        "from covergenre import distributed",
        "try:",
        "    distributed.classify_with_ray('m.cgm', 'covers', 'out.parquet')",
        "except ImportError as e:",
        "    print(e)",
    ])
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'covergenre[ray]'" in done.stdout, done.stdout


# ---- PySpark ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark_local(lib):
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'covergenre[spark]'): "
                                          "skipping the Spark test")
    pytest.importorskip("pyarrow")
    pytest.importorskip("pandas")
    from pyspark.sql import SparkSession
    # Spark's Python workers inherit the environment of the JVM, which inherits this one.
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "COVERGENRE_LIBRARY", "PYSPARK_PYTHON")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BINDINGS), saved["PYTHONPATH"]]))
    os.environ["COVERGENRE_LIBRARY"] = covergenre.library_path()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        spark = (SparkSession.builder.master("local[2]").appName("covergenre-test")
                 .config("spark.ui.enabled", "false").config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
                 .getOrCreate())
    except Exception as e:  # noqa: BLE001 - no Java, or a JVM that does not start: nothing to test with
        pytest.skip("Spark does not start here: %s" % e)
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_spark_matches_one_process(spark_local, tmp_path, model_path, catalogue, reference):
    from covergenre import distributed
    _, good, bad = catalogue
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, ["path"], [[p] for p in good + list(bad)])
    output = tmp_path / "tags.parquet"
    distributed.classify_with_spark(spark_local, model_path, str(manifest), str(output), rows_per_partition=64)
    results = read_output(output)
    assert sorted(results) == sorted(good + list(bad))
    for path in good:
        assert results[path]["error"] is None, results[path]["error"]
        assert_same_floats(results[path]["probabilities"], reference[path], path)
    for path, status in bad.items():
        assert results[path]["error"].startswith(status), results[path]["error"]
