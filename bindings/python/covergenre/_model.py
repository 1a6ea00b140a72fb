"""The Pythonic layer over ``_lib``: a Model that owns one cg_model handle."""

from __future__ import annotations

import contextlib
import ctypes
import json
import operator
import os
from pathlib import Path
import threading
from collections import namedtuple

from . import _lib
from ._errors import CoverGenreError, check, item_error

try:
    import numpy as _np
except ImportError:  # numpy is optional: results come back as lists without it
    _np = None

Prediction = namedtuple("Prediction", ["label", "probability", "index"])
Prediction.__doc__ = "One genre of a classification: its label, softmax probability and class index."

_INT32_MAX = 2 ** 31 - 1

# Load-option keyword -> the cg_load_options field it sets, and that field's largest value.
_LIMITS = {
    "max_model_bytes": 2 ** 64 - 1,
    "max_metadata_bytes": 2 ** 64 - 1,
    "max_tensors": 2 ** 32 - 1,
    "max_image_width": 2 ** 32 - 1,
    "max_image_height": 2 ** 32 - 1,
    "max_image_pixels": 2 ** 64 - 1,
    "max_image_bytes": 2 ** 64 - 1,
}


def _text(raw):
    return raw.decode("utf-8", "replace") if raw is not None else None


def _int_in(name, value, low, high):
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, not %s" % (name, type(value).__name__)) from None
    if not low <= value <= high:
        raise ValueError("%s must be in %d..%d, got %d" % (name, low, high, value))
    return value


def _path(path):
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise ValueError("path contains a NUL byte: %r" % (path,))
    return encoded


def _bytes_arg(data):
    """(pointer argument, size) for a bytes-like object, without copying when the buffer allows."""
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data)
    if not view.c_contiguous:
        copy = view.tobytes()
        return copy, len(copy)
    view = view.cast("B")
    if view.readonly:
        if isinstance(view.obj, bytes) and len(view.obj) == view.nbytes:
            return view.obj, view.nbytes
        copy = view.tobytes()
        return copy, len(copy)
    return (ctypes.c_ubyte * view.nbytes).from_buffer(view), view.nbytes


def _rgb_arg(array):
    """(uint8 pointer, width, height, row stride, the array to keep alive) for an (H, W, 3) array."""
    if array.dtype != _np.uint8:
        raise ValueError("an image array must have dtype uint8 (RGB, 0..255), not %s" % array.dtype)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError("an image array must have shape (height, width, 3), not %s" % (array.shape,))
    height, width = array.shape[0], array.shape[1]
    if not (0 < height <= _INT32_MAX and 0 < width <= _INT32_MAX):
        raise ValueError("an image array must have a positive height and width, not %dx%d" % (width, height))
    row_stride = array.strides[0] if height > 1 else 3 * width
    # The C side reads packed RGB pixels along each row; only the row step may vary.
    if array.strides[2] != 1 or array.strides[1] != 3 or row_stride < 3 * width:
        array = _np.ascontiguousarray(array)
        row_stride = 3 * width
    pointer = ctypes.cast(ctypes.c_void_p(array.ctypes.data), ctypes.POINTER(ctypes.c_uint8))
    return pointer, width, height, row_stride, array


def _floats(count):
    """An output buffer of `count` floats and a function turning it into the result."""
    if _np is not None:
        array = _np.zeros(max(count, 1), dtype=_np.float32)
        pointer = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        return pointer, lambda: array[:count]
    buffer = (ctypes.c_float * max(count, 1))()
    return buffer, lambda: list(buffer[:count])


def _require_numpy(what):
    if _np is None:
        raise ImportError("%s needs numpy (pip install numpy)" % what)
    return _np


# The default model's int8 version (the same answers on 98% of the test covers, in about half the
# time on CPUs with AVX-512 VNNI, the same time on AVX2 ones: models/README.md), and the same model
# in floating point; a wheel ships both.
DEFAULT_MODEL = "covergenre-default-int8.cgm"
FLOAT_MODEL = "covergenre-default.cgm"


def default_model_path(float32=False):
    """The default model's file (``float32=True``: its floating-point version): inside the
    installed package (a wheel ships both), or the repository's models/ folder when running from a
    checkout."""
    name = FLOAT_MODEL if float32 else DEFAULT_MODEL
    here = Path(__file__).resolve().parent
    candidates = [here / "models" / name]
    if here.parent.name == "python" and here.parents[1].name == "bindings":
        candidates.append(here.parents[2] / "models" / name)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError("the default model is not installed (looked in %s)" % ", ".join(map(str, candidates)))


class Model:
    """A loaded CoverGenre model.

    ``source`` is a path to a .cgm file or the file's bytes (bytes, bytearray, memoryview; copied
    by the library); omitted, the default model (``covergenre.default_model_path()``). ``threads`` is the number of threads each call may use (0 = every core).
    The ``max_*`` keywords override the library's load limits (cg_load_options).
    ``min_confidence`` makes ``classify`` return only genres at least that probable ([] = unsure);
    ``mirror_view`` (None: as the model file says) turns averaging each cover with its mirror image
    off (False: half the work per cover) or on (True).

    Images passed to ``classify``, ``probabilities`` and ``embed`` are a path (str or
    os.PathLike), encoded JPEG/PNG/WebP bytes (bytes, bytearray, memoryview), or a numpy uint8
    array of shape (height, width, 3) in RGB order.

    A model may be shared between threads. ``close()`` (or leaving a ``with`` block) frees it,
    after waiting for calls already running on other threads; any use after that raises
    ValueError.
    """

    def __init__(self, source=None, threads=0, verify_checksum=True, *, max_model_bytes=None, max_metadata_bytes=None,
                 max_tensors=None, max_image_width=None, max_image_height=None, max_image_pixels=None,
                 max_image_bytes=None, min_confidence=None, mirror_view=None):
        self._handle = None
        self._cond = threading.Condition()
        self._active = 0
        lib = _lib.load()
        self._lib = lib

        options = lib.cg_default_load_options()
        options.n_threads = _int_in("threads", threads, 0, _INT32_MAX)
        options.verify_checksum = 1 if verify_checksum else 0
        given = dict(max_model_bytes=max_model_bytes, max_metadata_bytes=max_metadata_bytes, max_tensors=max_tensors,
                     max_image_width=max_image_width, max_image_height=max_image_height,
                     max_image_pixels=max_image_pixels, max_image_bytes=max_image_bytes)
        for field, value in given.items():
            if value is not None:
                setattr(options, field, _int_in(field, value, 0, _LIMITS[field]))
        if min_confidence is not None:
            # classify() then returns only genres at least this probable: [] means "unsure".
            if not 0 <= float(min_confidence) <= 1:
                raise ValueError("min_confidence must be between 0 and 1, not %r" % (min_confidence,))
            options.min_confidence = float(min_confidence)
        if mirror_view is not None:
            if not isinstance(mirror_view, bool):
                raise TypeError("mirror_view is True, False or None (as the model file says), not %r" % (mirror_view,))
            if lib.cg_api_version() < 20100:
                raise OSError("mirror_view needs libcovergenre API 2.1 or later; this one is %d" % lib.cg_api_version())
            options.mirror_view = int(mirror_view)

        handle = _lib.cg_model_p()
        if source is None:
            source = default_model_path()
        if isinstance(source, (str, os.PathLike)):
            status = lib.cg_model_load_with_options(_path(source), ctypes.byref(options), ctypes.byref(handle))
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data, size = _bytes_arg(source)
            status = lib.cg_model_load_memory_with_options(data, size, ctypes.byref(options), ctypes.byref(handle))
        else:
            raise TypeError("a model source is a path or the model file's bytes, not %s" % type(source).__name__)
        check(status)
        self._handle = handle

        self._class_count = lib.cg_model_class_count(handle)
        self._labels = tuple(_text(lib.cg_model_label(handle, i)) for i in range(self._class_count))
        width, height = ctypes.c_int32(), ctypes.c_int32()
        check(lib.cg_model_input_size(handle, ctypes.byref(width), ctypes.byref(height)))
        self._input_size = (width.value, height.value)
        self._embedding_size = lib.cg_model_embedding_size(handle)
        self._name = _text(lib.cg_model_name(handle))
        self._architecture = _text(lib.cg_model_architecture(handle))
        self._metadata_json = _text(lib.cg_model_metadata_json(handle))

    # ---- Lifetime ----

    def close(self):
        """Frees the model once calls running on other threads return. Calling it again is a no-op."""
        with self._cond:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            while self._active:
                self._cond.wait()
        self._lib.cg_model_free(handle)

    @property
    def closed(self):
        return self._handle is None

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            self._lib.cg_model_free(handle)

    def __repr__(self):
        if self.closed:
            return "<covergenre.Model (closed)>"
        return "<covergenre.Model %r: %s, %d classes>" % (self._name, self._architecture, self._class_count)

    def _check_open(self):
        if self._handle is None:
            raise ValueError("the model is closed")

    @contextlib.contextmanager
    def _use(self):
        """The handle, kept from being freed until the block ends."""
        with self._cond:
            self._check_open()
            self._active += 1
            handle = self._handle
        try:
            yield handle
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    # ---- Description ----

    @property
    def labels(self):
        """The class labels, in class-index order (a tuple of str)."""
        self._check_open()
        return self._labels

    @property
    def class_count(self):
        self._check_open()
        return self._class_count

    @property
    def input_size(self):
        """(width, height) in pixels: what images are resized to and what run_tensor takes."""
        self._check_open()
        return self._input_size

    @property
    def embedding_size(self):
        """Length of the vector embed() returns; 0 if the model has no embedding."""
        self._check_open()
        return self._embedding_size

    @property
    def name(self):
        self._check_open()
        return self._name

    @property
    def architecture(self):
        self._check_open()
        return self._architecture

    @property
    def metadata(self):
        """The model file's metadata (labels, graph, preprocessing, provenance) as a new dict."""
        self._check_open()
        return json.loads(self._metadata_json)

    # ---- One image ----

    def _call(self, image, on_file, on_encoded, on_rgb, *outputs):
        """Runs the cg_*_file/_image/_rgb variant that fits the image; returns the status."""
        if isinstance(image, (str, os.PathLike)):
            path = _path(image)
            with self._use() as handle:
                return on_file(handle, path, *outputs)
        if _np is not None and isinstance(image, _np.ndarray):
            # `array` may be a fresh contiguous copy: it must outlive the call.
            pointer, width, height, stride, array = _rgb_arg(image)
            with self._use() as handle:
                return on_rgb(handle, pointer, width, height, stride, *outputs)
        if isinstance(image, (bytes, bytearray, memoryview)):
            data, size = _bytes_arg(image)
            with self._use() as handle:
                return on_encoded(handle, data, size, *outputs)
        raise TypeError("an image is a path, encoded bytes or a uint8 numpy array of shape (H, W, 3), not %s"
                        % type(image).__name__)

    def _top_k(self, top_k):
        try:
            top_k = operator.index(top_k)
        except TypeError:
            raise TypeError("top_k must be an integer, not %s" % type(top_k).__name__) from None
        # Below 1 goes to the library as 0 so that it reports CG_ERR_INVALID_ARGUMENT itself. Above
        # the class count, the C call would zero-fill entries we would only throw away.
        return max(0, min(top_k, self._class_count))

    def _predictions(self, entries):
        return [Prediction(_text(p.label), p.probability, p.class_index) for p in entries]

    def classify(self, image, top_k=3):
        """The top_k most probable genres, most probable first, as Prediction tuples."""
        self._check_open()
        k = self._top_k(top_k)
        out = (_lib.cg_prediction * max(k, 1))()
        count = ctypes.c_size_t(0)
        lib = self._lib
        status = self._call(image, lib.cg_classify_file, lib.cg_classify_image, lib.cg_classify_rgb,
                            k, out, ctypes.byref(count))
        check(status)
        return self._predictions(out[:min(count.value, k)])

    def probabilities(self, image):
        """Every class's probability in label order: a float32 numpy array, or a list without numpy."""
        self._check_open()
        n = self._class_count
        out, result = _floats(n)
        lib = self._lib
        check(self._call(image, lib.cg_probabilities_file, lib.cg_probabilities_image, lib.cg_probabilities_rgb,
                         out, n))
        return result()

    def embed(self, image):
        """The image's embedding (embedding_size floats), for cosine-similarity search."""
        self._check_open()
        n = self._embedding_size
        out, result = _floats(n)
        lib = self._lib
        check(self._call(image, lib.cg_embed_file, lib.cg_embed_image, lib.cg_embed_rgb, out, n))
        return result()

    # ---- Many images ----

    def _path_array(self, paths):
        encoded = [_path(p) for p in paths]
        return encoded, (ctypes.c_char_p * max(len(encoded), 1))(*encoded)

    def classify_files(self, paths, top_k=3, threads=0):
        """Classifies image files in parallel (threads=0: the model's setting).

        Returns one item per path: its list of Predictions, or the CoverGenreError that image
        failed with (the library's status and message for it). One bad image never fails the others.
        """
        self._check_open()
        paths = list(paths)
        encoded, path_array = self._path_array(paths)
        threads = _int_in("threads", threads, 0, _INT32_MAX)
        k = self._top_k(top_k)
        count = len(encoded)
        out = (_lib.cg_prediction * max(count * k, 1))()
        items = (_lib.cg_item_status * max(count, 1))()
        with self._use() as handle:
            status = self._lib.cg_classify_files(handle, path_array, count, k, threads, out, count * k, items, count)
        check(status)
        results = []
        for i in range(count):
            if items[i].status != _lib.CG_OK:
                results.append(item_error(items[i]))
                continue
            entries = [p for p in out[i * k:(i + 1) * k] if p.label is not None]
            results.append(self._predictions(entries))
        return results

    def _floats_files(self, function, paths, threads, width):
        self._check_open()
        paths = list(paths)
        encoded, path_array = self._path_array(paths)
        threads = _int_in("threads", threads, 0, _INT32_MAX)
        count = len(encoded)
        out, result = _floats(count * width)
        items = (_lib.cg_item_status * max(count, 1))()
        with self._use() as handle:
            status = function(handle, path_array, count, threads, out, count * width, items, count)
        check(status)
        values = result()
        return [item_error(items[i]) if items[i].status != _lib.CG_OK else values[i * width:(i + 1) * width]
                for i in range(count)]

    def probabilities_files(self, paths, threads=0):
        """Every class's probability for each image file, in parallel.

        Returns one item per path: a float32 array (a list without numpy) or a CoverGenreError.
        """
        return self._floats_files(self._lib.cg_probabilities_files, paths, threads, self._class_count)

    def embed_files(self, paths, threads=0):
        """Each image file's embedding (embedding_size floats), in parallel.

        Returns one item per path: a float32 array (a list without numpy) or a CoverGenreError.
        """
        if self._embedding_size == 0:
            raise CoverGenreError(_lib.CG_ERR_INVALID_ARGUMENT, "this model has no embedding output")
        return self._floats_files(self._lib.cg_embed_files, paths, threads, self._embedding_size)

    # ---- Prepared input ----

    def run_tensor(self, x):
        """Logits (before softmax) for preprocessed input: float32 NHWC, shape (N, height, width, 3).

        Returns a float32 array of shape (N, class_count). Needs numpy.
        """
        np = _require_numpy("run_tensor")
        self._check_open()
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise ValueError("run_tensor takes a float32 array, not %s (convert with .astype(numpy.float32))" % x.dtype)
        width, height = self._input_size
        if x.ndim != 4 or x.shape[1:] != (height, width, 3):
            raise ValueError("run_tensor takes an array of shape (N, %d, %d, 3), not %s" % (height, width, x.shape))
        batch = x.shape[0]
        out = np.empty((batch, self._class_count), dtype=np.float32)
        if batch == 0:
            return out
        x = np.ascontiguousarray(x)
        float_p = ctypes.POINTER(ctypes.c_float)
        with self._use() as handle:
            status = self._lib.cg_run_tensor(handle, x.ctypes.data_as(float_p), x.size, batch, out.ctypes.data_as(float_p),
                                             out.size)
        check(status)
        return out
