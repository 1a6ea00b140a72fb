"""Tagging a large catalogue of covers on many processes or machines, with Ray Data or PySpark.

    from covergenre import distributed

    distributed.classify_with_ray("lite0.cgm", "covers/", "tags.parquet", workers=8, cpus_per_worker=2)
    distributed.classify_with_spark(spark, "lite0.cgm", "manifest.csv", "tags.parquet")

The input is a folder (every .jpg, .jpeg, .png and .webp file under it) or a manifest: a CSV or
Parquet file with a ``path`` or ``url`` column (``column=`` picks another). Values starting with
http:// or https:// are fetched with urllib; anything else is a file every worker must be able to
read, relative paths being taken from the manifest's folder.

The output is a folder of Parquet (or CSV) files with one row per cover, in no particular order:
the input's columns, then

    genres         the top_k labels, most probable first (ties: lower class index, as the library)
    scores         their probabilities
    probabilities  every class's probability, in label order (Model.labels)
    embedding      the model's embedding (only with embedding=True)
    error          null, or why this cover has no result ("CG_ERR_IMAGE_DECODE: ...",
                   "fetch failed: ...")

A cover that cannot be fetched, read or decoded gets an error and nulls; it never fails the job.
In CSV, list columns are JSON arrays whose numbers parse back to the same float32 values.

Threads: library threads per worker = CPUs reserved per worker. A Ray worker is an actor reserving
``cpus_per_worker`` CPUs (num_cpus); it loads the model with threads=cpus_per_worker and its batch
calls use exactly that many threads, each decoding and classifying whole images. A Spark task
reserves spark.task.cpus CPUs and gets that many threads. So N workers never run more than the
N x cpus_per_worker threads the scheduler granted them. Workers also get OPENBLAS_NUM_THREADS=1:
the library already switches OpenBLAS to one thread on first use, so for CoverGenre this changes
nothing, but with it OpenBLAS (the library's, and numpy's) never starts a thread per core in each
worker process at load time.

Determinism: a batch call runs each image on one thread, so every probability equals
``Model(path, threads=1).probabilities(path)`` bit for bit, whatever the worker count, CPUs per
worker or batch size, and whether the cover came from a path or a URL (fetched covers are spooled
to a temporary file and go through the same batch call). Embeddings are one call per cover with
the worker's thread count: bit-exact against ``Model(path, threads=cpus_per_worker).embed``.

ray, pyarrow and pandas are imported only when used: ``pip install 'covergenre[ray]'`` or
``'covergenre[spark]'``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import math
import os
import tempfile
import urllib.request

from ._errors import CoverGenreError
from ._model import Model

__all__ = [
    "CoverClassifier",
    "classify_with_ray",
    "classify_with_spark",
    "list_covers",
    "ray_dataset",
    "result_columns",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# The library's default max_image_bytes: a fetched cover larger than this would be refused anyway.
MAX_FETCH_BYTES = 64 * 1024 * 1024

_URL_PREFIXES = ("http://", "https://")


def _need(module, extra, what):
    """Imports an optional dependency, or says which extra installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError("%s needs %s, which is not installed: pip install 'covergenre[%s]' (%s)"
                          % (what, module.split(".")[0], extra, e)) from e


def _pyarrow():
    _need("pyarrow.parquet", "ray", "covergenre.distributed")
    return _need("pyarrow", "ray", "covergenre.distributed")


# ---- Inputs -------------------------------------------------------------------------------------

def list_covers(folder, extensions=IMAGE_EXTENSIONS):
    """Every file under `folder` whose name ends with one of `extensions` (any case), sorted.

    Hidden files and folders (a leading dot) are skipped."""
    suffixes = tuple(e.lower() for e in extensions)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(root, f) for f in files
                     if not f.startswith(".") and f.lower().endswith(suffixes))
    return sorted(found)


def _read_manifest(path):
    pa = _pyarrow()
    if str(path).lower().endswith((".parquet", ".pq")):
        return pa.parquet.read_table(path)
    _need("pyarrow.csv", "ray", "covergenre.distributed")
    # Every column as text: ids such as "0001234" keep their zeros, and paths are never numbers.
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    types = {name: pa.string() for name in header}
    return pa.csv.read_csv(path, convert_options=pa.csv.ConvertOptions(column_types=types))


def _input_table(source, column):
    """(table, column, base folder for relative paths) for a folder or a manifest file."""
    pa = _pyarrow()
    if os.path.isdir(source):
        # Absolute, as workers do not share the driver's working directory.
        return pa.table({"path": pa.array(list_covers(os.path.abspath(source)), pa.string())}), "path", None
    table = _read_manifest(source)
    if column is None:
        column = next((c for c in ("path", "url") if c in table.column_names), None)
        if column is None:
            raise ValueError("%s has no 'path' or 'url' column (it has %s); name one with column="
                             % (source, ", ".join(table.column_names) or "none"))
    elif column not in table.column_names:
        raise ValueError("%s has no column %r (it has %s)" % (source, column, ", ".join(table.column_names)))
    return table, column, os.path.dirname(os.path.abspath(source))


def _check_names(columns, embedding):
    taken = sorted(set(columns) & set(result_columns(embedding)))
    if taken:
        raise ValueError("the input's column(s) %s would be overwritten by the results; rename them"
                         % ", ".join(taken))


def result_columns(embedding=False):
    """The names of the columns added to the input's."""
    return ("genres", "scores", "probabilities") + (("embedding",) if embedding else ()) + ("error",)


def _is_url(text):
    return text[:8].lower().startswith(_URL_PREFIXES)


def fetch(url, timeout=30.0, max_bytes=MAX_FETCH_BYTES):
    """The body of an http(s) URL; raises OSError (urllib's errors and timeouts are OSErrors) or ValueError."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError("larger than %d bytes" % max_bytes)
    return data


# ---- The worker ---------------------------------------------------------------------------------

class CoverClassifier:
    """One model, many batches: Ray Data's callable class, and what each Spark partition runs.

    ``model`` is a .cgm path every worker can read, the file's bytes, or a Ray ObjectRef to the
    bytes. The model is loaded once, with ``threads`` threads (= the CPUs the worker reserved).
    Calling it with a pyarrow Table (``column`` holding paths or URLs) returns the table with the
    result columns appended.
    """

    def __init__(self, model, threads=1, top_k=3, embedding=False, column="path", base_dir=None, text_lists=False,
                 fetch_timeout=30.0, fetch_threads=8, max_fetch_bytes=MAX_FETCH_BYTES):
        # Before the library (and its OpenBLAS) is first loaded in this process, which is when
        # OpenBLAS would start its threads; see the module docstring.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        if not isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview)):
            ray = _need("ray", "ray", "a model passed as an ObjectRef")
            model = ray.get(model)
        self.model = Model(model, threads=threads)
        self.threads = threads
        self.top_k = max(1, min(int(top_k), self.model.class_count))
        self.embedding = embedding
        self.column = column
        self.base_dir = base_dir
        self.text_lists = text_lists
        self.fetch_timeout = fetch_timeout
        self.fetch_threads = fetch_threads
        self.max_fetch_bytes = max_fetch_bytes
        self.labels = self.model.labels

    def __call__(self, table):
        pa = _pyarrow()
        if not isinstance(table, pa.Table):  # a pandas DataFrame, from mapInPandas or a caller
            table = pa.Table.from_pandas(table, preserve_index=False)
        _check_names(table.column_names, self.embedding)
        sources = table.column(self.column).to_pylist()
        count = len(sources)
        errors = [None] * count
        files = [None] * count
        urls = set()
        for i, source in enumerate(sources):
            if not isinstance(source, str) or not source:
                errors[i] = "no %s given" % self.column
            elif "\0" in source:
                errors[i] = "invalid path: it contains a NUL character"
            elif _is_url(source):
                urls.add(i)
            elif self.base_dir is not None and not os.path.isabs(source):
                files[i] = os.path.join(self.base_dir, source)
            else:
                files[i] = source

        probabilities = [None] * count
        embeddings = [None] * count
        with tempfile.TemporaryDirectory(prefix="covergenre-") as spool:
            if urls:
                self._fetch(sources, urls, spool, files, errors)
            def named(i, error):
                # The library's message names the file it read: for a URL, the spooled copy.
                if i in urls:
                    error = CoverGenreError(error.status, error.message.replace(files[i], sources[i]))
                return str(error)

            run = [i for i in range(count) if files[i] is not None]
            results = self.model.probabilities_files([files[i] for i in run], threads=self.threads)
            for i, result in zip(run, results):
                if isinstance(result, CoverGenreError):
                    errors[i] = named(i, result)
                else:
                    probabilities[i] = result
            if self.embedding:
                done = [i for i in run if probabilities[i] is not None]
                for i, result in zip(done, self.model.embed_files([files[i] for i in done], threads=self.threads)):
                    if isinstance(result, CoverGenreError):
                        probabilities[i] = None
                        errors[i] = named(i, result)
                    else:
                        embeddings[i] = result

        return self._append(table, probabilities, embeddings, errors)

    def _fetch(self, sources, urls, spool, files, errors):
        def one(i):
            data = fetch(sources[i], timeout=self.fetch_timeout, max_bytes=self.max_fetch_bytes)
            path = os.path.join(spool, str(i))
            with open(path, "wb") as f:
                f.write(data)
            return path

        # Threads that mostly wait on the network: they do not count against the CPU rule.
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(self.fetch_threads, len(urls)))) as pool:
            futures = {i: pool.submit(one, i) for i in sorted(urls)}
            for i, future in futures.items():
                try:
                    files[i] = future.result()
                except Exception as e:  # noqa: BLE001 - any fetch failure is this cover's error, never the job's
                    errors[i] = "fetch failed: %s: %s" % (type(e).__name__, e)

    def _append(self, table, probabilities, embeddings, errors):
        pa = _pyarrow()
        np = _need("numpy", "ray", "covergenre.distributed")
        genres, scores = [], []
        for p in probabilities:
            if p is None:
                genres.append(None)
                scores.append(None)
                continue
            # Stable sort of the negated values: descending, ties by lower class index, as the library's top-k.
            p = np.asarray(p, dtype=np.float32)
            order = np.argsort(-p, kind="stable")[:self.top_k]
            genres.append([self.labels[j] for j in order])
            scores.append(p[order])
        columns = {"genres": genres, "scores": scores, "probabilities": probabilities}
        if self.embedding:
            columns["embedding"] = embeddings
        for name, values in columns.items():
            if self.text_lists:
                array = pa.array([None if v is None else json.dumps(v if name == "genres" else np.asarray(v).tolist())
                                  for v in values], pa.string())
            else:
                kind = pa.string() if name == "genres" else pa.float32()
                array = pa.array([None if v is None else list(v) if name == "genres" else np.asarray(v, np.float32)
                                  for v in values], pa.list_(kind))
            table = table.append_column(name, array)
        return table.append_column("error", pa.array(errors, pa.string()))


def _model_source(model):
    """The model as a path string or bytes, checked to load here before any worker tries."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    else:
        with open(model, "rb") as f:
            data = f.read()
    Model(data, threads=1).close()
    return data


def _prepare_output(output, overwrite):
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        if not overwrite:
            raise FileExistsError("%s exists; pass overwrite=True to replace it" % output)
        import shutil
        if os.path.isdir(output):
            shutil.rmtree(output)
        else:
            os.remove(output)


def _output_format(output, output_format):
    fmt = output_format or ("csv" if str(output).lower().endswith(".csv") else "parquet")
    if fmt not in ("parquet", "csv"):
        raise ValueError("output_format is 'parquet' or 'csv', not %r" % (fmt,))
    return fmt


# ---- Ray Data -----------------------------------------------------------------------------------

def ray_dataset(model, source, *, workers=None, cpus_per_worker=1, top_k=3, embedding=False, column=None,
                batch_size=32, rows_per_block=None, share_model="object-store", text_lists=False,
                fetch_timeout=30.0, fetch_threads=8):
    """The results as a lazy Ray Dataset (see the module docstring for its columns).

    ``workers`` actors (default: the cluster's CPUs // cpus_per_worker) each reserve
    ``cpus_per_worker`` CPUs and run the model with that many threads. ``share_model`` is
    "object-store" (the driver reads the model once and every worker gets its bytes from Ray's
    object store) or "path" (every worker reads ``model``, a path on storage they all see).
    ``rows_per_block`` covers go to a worker at a time (default: 4 batches).
    """
    ray = _need("ray", "ray", "classify_with_ray")
    _need("ray.data", "ray", "classify_with_ray")
    cpus_per_worker = int(cpus_per_worker)
    if cpus_per_worker < 1:
        raise ValueError("cpus_per_worker must be at least 1")
    if share_model not in ("object-store", "path"):
        raise ValueError("share_model is 'object-store' or 'path', not %r" % (share_model,))
    table, column, base_dir = _input_table(source, column)
    _check_names(table.column_names, embedding)
    if share_model == "path":
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("share_model='path' needs the model's path, not its bytes")
        Model(model, threads=1).close()
        model_arg = os.path.abspath(model)
    else:
        model_bytes = _model_source(model)
    if not ray.is_initialized():
        ray.init()
    if share_model == "object-store":
        model_arg = ray.put(model_bytes)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_worker)
    workers = int(workers)

    # Many small blocks, so that every worker has covers to take until the end: Ray hands an
    # actor whole blocks, and one large manifest block would keep the other workers idle.
    rows_per_block = int(rows_per_block or max(1, min(4 * batch_size, math.ceil(table.num_rows / workers))))
    blocks = [table.slice(start, rows_per_block) for start in range(0, table.num_rows, rows_per_block)]
    dataset = ray.data.from_arrow(blocks or [table])
    return dataset.map_batches(
        CoverClassifier,
        fn_constructor_kwargs=dict(model=model_arg, threads=cpus_per_worker, top_k=top_k, embedding=embedding,
                                   column=column, base_dir=base_dir, text_lists=text_lists,
                                   fetch_timeout=fetch_timeout, fetch_threads=fetch_threads),
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=workers,
        num_cpus=cpus_per_worker,
        runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}},
    )


def classify_with_ray(model, source, output, *, output_format=None, overwrite=False, **options):
    """Classifies every cover of `source` with Ray Data and writes the results to the folder `output`.

    Connects to the Ray cluster already initialized, else starts a local one (ray.init()).
    `output_format` is "parquet" or "csv" (default: from `output`'s extension, else Parquet).
    The other keywords are ray_dataset's. Returns `output`.
    """
    fmt = _output_format(output, output_format)
    if "://" not in str(output):
        _prepare_output(output, overwrite)
    dataset = ray_dataset(model, source, text_lists=(fmt == "csv"), **options)
    if fmt == "csv":
        dataset.write_csv(str(output))
    else:
        dataset.write_parquet(str(output))
    return output


# ---- PySpark ------------------------------------------------------------------------------------

def classify_with_spark(spark, model, source, output, *, top_k=3, embedding=False, column=None, output_format=None,
                        overwrite=False, rows_per_partition=256, share_model="broadcast", fetch_timeout=30.0,
                        fetch_threads=8):
    """Classifies every cover of `source` with PySpark (mapInPandas) and writes the folder `output`.

    Each partition loads the model once, with spark.task.cpus threads (the CPUs each task
    reserves). ``share_model`` is "broadcast" (the driver reads the model and Spark broadcasts
    its bytes) or "path" (every executor reads ``model`` from shared storage). Returns `output`.
    """
    _need("pyspark", "spark", "classify_with_spark")
    _need("pandas", "spark", "classify_with_spark")
    fmt = _output_format(output, output_format)
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    if share_model == "broadcast":
        shared = spark.sparkContext.broadcast(_model_source(model))
    elif share_model == "path":
        Model(model, threads=1).close()
        shared = os.path.abspath(model)
    else:
        raise ValueError("share_model is 'broadcast' or 'path', not %r" % (share_model,))

    table, column, base_dir = _input_table(source, column)
    _check_names(table.column_names, embedding)
    partitions = max(1, math.ceil(table.num_rows / rows_per_partition))
    frame = spark.createDataFrame(table.to_pandas()).repartition(partitions)

    from pyspark.sql import types as T
    listed = T.StringType() if fmt == "csv" else None
    added = [T.StructField("genres", listed or T.ArrayType(T.StringType())),
             T.StructField("scores", listed or T.ArrayType(T.FloatType())),
             T.StructField("probabilities", listed or T.ArrayType(T.FloatType()))]
    if embedding:
        added.append(T.StructField("embedding", listed or T.ArrayType(T.FloatType())))
    added.append(T.StructField("error", T.StringType()))
    schema = T.StructType(frame.schema.fields + added)

    settings = dict(threads=threads, top_k=top_k, embedding=embedding, column=column, base_dir=base_dir,
                    text_lists=(fmt == "csv"), fetch_timeout=fetch_timeout, fetch_threads=fetch_threads)

    def partition(frames):
        classifier = None
        for pandas_frame in frames:
            if classifier is None:  # loaded here, so a partition without rows loads nothing
                classifier = CoverClassifier(shared if isinstance(shared, str) else shared.value, **settings)
            yield classifier(pandas_frame).to_pandas()
        if classifier is not None:
            classifier.model.close()

    writer = frame.mapInPandas(partition, schema).write.mode("overwrite" if overwrite else "errorifexists")
    if fmt == "csv":
        writer.option("header", True).csv(str(output))
    else:
        writer.parquet(str(output))
    return output
