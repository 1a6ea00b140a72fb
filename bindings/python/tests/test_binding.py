"""The Python binding: the ctypes layer against the header, images in every form, errors, batches,
lifetime, threads, and .cgm files going both ways between Python and the library."""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import covergenre
import graphs
from covergenre import CoverGenreError, Model, Prediction, _lib, _model, cgm

Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to generate test images")
ImageOps = pytest.importorskip("PIL.ImageOps")

REPO = Path(__file__).resolve().parents[3]
HEADER = REPO / "include" / "covergenre.h"


def encode(picture, **options):
    out = io.BytesIO()
    picture.save(out, **options)
    return out.getvalue()


def pillow_pixels(data):
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


# ---- The ctypes layer against include/covergenre.h --------------------------------------------

def _strip(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"^\s*#.*$", " ", text, flags=re.M)


def _c_type(declaration):
    """'const char *path' -> 'constchar*'; 'size_t' -> 'size_t' (spaces dropped, name removed)."""
    declaration = re.sub(r"(?<=[\s*])[A-Za-z_]\w*$", "", declaration.strip())
    return re.sub(r"\s+", "", declaration)


def _ctypes_for(c_type):
    p = ctypes.POINTER
    return {
        "void": None,
        "uint32_t": ctypes.c_uint32,
        "int32_t": ctypes.c_int32,
        "size_t": ctypes.c_size_t,
        "constchar*": ctypes.c_char_p,
        "constvoid*": ctypes.c_void_p,
        "cg_status": _lib.cg_status,
        "cg_load_options": _lib.cg_load_options,
        "constcg_load_options*": p(_lib.cg_load_options),
        "cg_model*": _lib.cg_model_p,
        "constcg_model*": _lib.cg_model_p,
        "cg_model**": p(_lib.cg_model_p),
        "int32_t*": p(ctypes.c_int32),
        "size_t*": p(ctypes.c_size_t),
        "float*": p(ctypes.c_float),
        "constfloat*": p(ctypes.c_float),
        "constuint8_t*": p(ctypes.c_uint8),
        "cg_prediction*": p(_lib.cg_prediction),
        "cg_item_status*": p(_lib.cg_item_status),
        "constchar*const*": p(ctypes.c_char_p),
        "float": ctypes.c_float,
        "uint64_t": ctypes.c_uint64,
        "cg_library**": p(_lib.cg_library_p),
        "constcg_library*": _lib.cg_library_p,
        "cg_library*": _lib.cg_library_p,
        "cg_album*": p(_lib.cg_album),
        "cg_cover_source": _lib.cg_cover_source,
    }[c_type]


@pytest.fixture(scope="module")
def header_text():
    if not HEADER.is_file():
        pytest.skip("the C header is not at %s" % HEADER)
    return _strip(HEADER.read_text())


def test_every_header_function_is_declared_with_the_headers_types(header_text):
    declared = {}
    for m in re.finditer(r"([A-Za-z_][\w\s*]*?)\b(cg_\w+)\s*\(([^()]*)\)\s*;", header_text):
        params = m.group(3).strip()
        args = [] if params in ("", "void") else [_c_type(a) for a in params.split(",")]
        declared[m.group(2)] = (_c_type(m.group(1)), args)
    assert len(declared) == 37, sorted(declared)
    ours = {name: (restype, argtypes) for name, restype, argtypes in _lib.FUNCTIONS}
    assert sorted(ours) == sorted(declared)
    for name, (c_return, c_args) in declared.items():
        restype, argtypes = ours[name]
        assert restype == _ctypes_for(c_return), name
        assert argtypes == [_ctypes_for(a) for a in c_args], name


@pytest.mark.parametrize("struct", ["cg_load_options", "cg_prediction", "cg_item_status", "cg_album"])
def test_structs_match_the_header_field_by_field(header_text, struct):
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (struct, struct), header_text, flags=re.S).group(1)
    fields = []
    for line in body.split(";"):
        if not line.strip():
            continue
        array = re.search(r"(\w+)\s*\[(\w+)\]\s*$", line)
        if array:  # char message[CG_ITEM_MESSAGE_SIZE]
            size = int(re.search(r"#define %s (\d+)" % array.group(2), HEADER.read_text()).group(1))
            fields.append((array.group(1), ctypes.c_char * size))
            continue
        name = re.search(r"(\w+)\s*$", line).group(1)
        fields.append((name, _ctypes_for(_c_type(line))))
    ours = getattr(_lib, struct)._fields_
    assert [name for name, _ in ours] == [name for name, _ in fields]
    for (name, a), (_, b) in zip(ours, fields):
        assert a == b or (ctypes.sizeof(a) == ctypes.sizeof(b) and getattr(a, "_type_", None) == getattr(b, "_type_", None)), name


def test_status_constants_match_the_header(lib, header_text):
    body = re.search(r"typedef enum cg_status \{(.*?)\} cg_status;", header_text, flags=re.S).group(1)
    statuses = dict((name, int(value)) for name, value in re.findall(r"(CG_\w+)\s*=\s*(\d+)", body))
    assert len(statuses) == 15
    for name, value in statuses.items():
        assert getattr(_lib, name) == value
        assert covergenre.status_string(value) == name


def test_default_options_size_is_the_structs(lib):
    options = lib.cg_default_load_options()
    assert options.struct_size == ctypes.sizeof(_lib.cg_load_options)
    assert options.verify_checksum == 1 and options.n_threads == 0
    assert ctypes.sizeof(_lib.cg_prediction) == (16 if ctypes.sizeof(ctypes.c_void_p) == 8 else 12)


def test_versions(lib):
    assert re.fullmatch(r"\d+\.\d+\.\d+", covergenre.library_version())
    assert covergenre.api_version()[0] == _lib.API_VERSION_MAJOR
    assert os.path.isfile(covergenre.library_path())


# ---- Finding the library ----------------------------------------------------------------------

@pytest.fixture
def fresh_lookup(lib, monkeypatch, tmp_path):
    """Forgets the loaded library for one test and moves the package's notional home to tmp_path,
    so that only what the test sets up can be found. Symlinks keep one copy of the library in
    the process (dlopen recognizes the same file)."""
    real = os.path.realpath(covergenre.library_path())
    # Laid out like the repository: <repo>/bindings/python/covergenre.
    package = tmp_path.resolve() / "repo" / "bindings" / "python" / "covergenre"
    package.mkdir(parents=True)
    monkeypatch.setattr(_lib, "_cdll", None)
    monkeypatch.setattr(_lib, "_loaded_from", None)
    monkeypatch.setattr(_lib, "__file__", str(package / "_lib.py"))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.delenv(_lib.ENV_VAR, raising=False)
    return real, package


def test_environment_variable_comes_first(fresh_lookup, monkeypatch, tmp_path):
    real, package = fresh_lookup
    (package / "libcovergenre.so").symlink_to(real)
    chosen = tmp_path / "chosen" / "libcovergenre.so"
    chosen.parent.mkdir()
    chosen.symlink_to(real)
    monkeypatch.setenv(_lib.ENV_VAR, str(chosen))
    _lib.load()
    assert _lib.loaded_from() == str(chosen)


def test_library_next_to_the_package_comes_before_the_build_dir(fresh_lookup):
    real, package = fresh_lookup
    (package / "libcovergenre.so").symlink_to(real)
    build = package.parents[2] / "build" / "lib"
    build.mkdir(parents=True)
    (build / "libcovergenre.so").symlink_to(real)
    _lib.load()
    assert _lib.loaded_from() == str(package / "libcovergenre.so")


def test_repository_build_dir_is_found_relative_to_the_package(fresh_lookup, tmp_path):
    real, package = fresh_lookup
    # <repo>/bindings/python/covergenre -> <repo>/build/lib
    build = package.parents[2] / "build" / "lib"
    build.mkdir(parents=True)
    (build / "libcovergenre.so").symlink_to(real)
    _lib.load()
    assert _lib.loaded_from() == str(build / "libcovergenre.so")


def test_a_broken_environment_variable_warns_when_another_library_is_used(fresh_lookup, monkeypatch, tmp_path):
    real, package = fresh_lookup
    (package / "libcovergenre.so").symlink_to(real)
    monkeypatch.setenv(_lib.ENV_VAR, str(tmp_path / "missing.so"))
    with pytest.warns(RuntimeWarning, match="missing.so"):
        _lib.load()
    assert _lib.loaded_from() == str(package / "libcovergenre.so")


def test_an_installed_package_does_not_look_for_a_repository_build(lib, monkeypatch, tmp_path):
    package = tmp_path.resolve() / "lib" / "python3" / "site-packages" / "covergenre"
    package.mkdir(parents=True)
    monkeypatch.setattr(_lib, "__file__", str(package / "_lib.py"))
    monkeypatch.delenv(_lib.ENV_VAR, raising=False)
    assert _lib.candidate_paths() == [("next to the package", str(package / name)) for name in _lib._FILE_NAMES]


def test_not_found_lists_every_path_tried(fresh_lookup, monkeypatch, tmp_path):
    _, package = fresh_lookup
    not_a_library = tmp_path / "empty.so"
    not_a_library.write_bytes(b"not ELF")
    monkeypatch.setenv(_lib.ENV_VAR, str(not_a_library))
    with pytest.raises(covergenre.LibraryNotFoundError) as caught:
        _lib.load()
    message = str(caught.value)
    for path in [not_a_library, package / "libcovergenre.so", package.parents[2] / "build" / "lib" / "libcovergenre.so"]:
        assert str(path) in message
    assert "find_library" in message and _lib.ENV_VAR in message
    assert len(caught.value.tried) == 4
    with pytest.raises(covergenre.LibraryNotFoundError):
        Model(b"\0" * 64)


# ---- Loading and describing -------------------------------------------------------------------

def test_model_loads_from_a_path_and_from_bytes_alike(small_model_path, cover_pixels):
    data = small_model_path.read_bytes()
    sources = [str(small_model_path), small_model_path, data, bytearray(data), memoryview(data),
               memoryview(bytearray(data))]
    results = []
    for source in sources:
        with Model(source) as model:
            results.append((model.labels, model.probabilities(cover_pixels).tolist()))
    assert all(r == results[0] for r in results)


def test_description(small_model, small_model_path):
    metadata, tensors = cgm.read(small_model_path)
    m = small_model
    assert m.labels == ("Rock", "Pop", "Jazz", "HipHop", "Folk")
    assert m.class_count == 5
    assert m.input_size == (64, 64)
    assert m.name == metadata["name"] == "baseline-cnn-untrained"
    assert m.architecture == "baseline-cnn"
    assert m.metadata == metadata
    embedding_node = metadata["graph"]["embedding"]
    linear = next(n for n in metadata["graph"]["nodes"] if n["name"] == embedding_node)
    assert m.embedding_size == linear["out_features"] == 64
    assert "baseline-cnn" in repr(m)
    # metadata is a fresh dict each time: changing it changes nothing.
    m.metadata["labels"].append("Polka")
    assert m.metadata == metadata


def test_input_size_is_width_then_height(lib, tmp_path):
    metadata, tensors = graphs.tiny()
    metadata["graph"]["input_shape"] = [8, 12, 3]
    path = tmp_path / "wide.cgm"
    cgm.write(path, metadata, tensors)
    with Model(path) as model:
        assert model.input_size == (12, 8)
        assert model.run_tensor(np.zeros((1, 8, 12, 3), np.float32)).shape == (1, 2)


def test_a_model_without_an_embedding(lib, tmp_path, cover_pixels):
    metadata, tensors = graphs.tiny()
    del metadata["graph"]["embedding"]
    path = tmp_path / "plain.cgm"
    cgm.write(path, metadata, tensors)
    with Model(path) as model:
        assert model.embedding_size == 0
        assert len(model.classify(cover_pixels)) == 2
        with pytest.raises(CoverGenreError) as caught:
            model.embed(cover_pixels)
        assert caught.value.status_name == "CG_ERR_INVALID_ARGUMENT" and "embedding" in caught.value.message


# ---- Images in every form ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jpeg", "png", "webp"])
def test_classify_a_file_its_bytes_and_its_pixels(small_model, images, kind):
    path = images[kind]
    data = path.read_bytes()
    top = small_model.classify(path, top_k=3)
    assert len(top) == 3 and all(isinstance(p, Prediction) for p in top)
    assert [p.probability for p in top] == sorted((p.probability for p in top), reverse=True)
    for p in top:
        assert small_model.labels[p.index] == p.label
    for same in (str(path), data, bytearray(data), memoryview(data)):
        assert small_model.classify(same, top_k=3) == top

    probabilities = small_model.probabilities(path)
    assert probabilities.dtype == np.float32 and probabilities.shape == (5,)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-5
    assert np.array_equal(probabilities, small_model.probabilities(data))
    for p in top:
        assert p.probability == probabilities[p.index]
    # The library's decoder and Pillow's give the same pixels (lossy formats: nearly).
    tolerance = 0 if kind == "png" else 5e-4
    np.testing.assert_allclose(small_model.probabilities(pillow_pixels(data)), probabilities, rtol=0, atol=tolerance)

    embedding = small_model.embed(path)
    assert embedding.shape == (small_model.embedding_size,) and np.isfinite(embedding).all()
    assert np.array_equal(embedding, small_model.embed(data))


def test_png_pixels_arrive_exactly(small_model, images, cover_pixels):
    expected = small_model.probabilities(cover_pixels)
    assert np.array_equal(small_model.probabilities(images["png"]), expected)
    # Alpha is dropped.
    assert np.array_equal(small_model.probabilities(images["rgba_png"]), expected)
    gray = np.asarray(Image.open(images["gray_png"]))
    assert np.array_equal(small_model.probabilities(images["gray_png"]), small_model.probabilities(np.stack([gray] * 3, -1)))


def test_sixteen_bit_png_is_scaled_with_rounding(small_model):
    samples = np.random.default_rng(3).integers(0, 65536, (40, 50)).astype(np.uint16)
    picture = Image.new("I;16", (50, 40))
    picture.frombytes(samples.astype("<u2").tobytes())
    eight_bit = np.rint(samples / 257.0).astype(np.uint8)
    expected = small_model.probabilities(np.stack([eight_bit] * 3, -1))
    assert np.array_equal(small_model.probabilities(encode(picture, format="PNG")), expected)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_exif_orientation_is_applied(small_model, cover_pixels, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(cover_pixels), format="JPEG", quality=95, exif=exif)
    upright = pillow_pixels(data)
    assert upright.shape[:2] == ((160, 120) if orientation in (6, 8) else (120, 160))
    np.testing.assert_allclose(small_model.probabilities(data), small_model.probabilities(upright), rtol=0, atol=5e-4)


def test_progressive_and_grayscale_jpeg(small_model, cover_pixels):
    for picture, options in [(Image.fromarray(cover_pixels), dict(progressive=True)),
                             (Image.fromarray(cover_pixels).convert("L"), {})]:
        data = encode(picture, format="JPEG", quality=90, **options)
        np.testing.assert_allclose(small_model.probabilities(data), small_model.probabilities(pillow_pixels(data)),
                                   rtol=0, atol=5e-4)


def test_strided_and_non_contiguous_arrays(small_model, cover_pixels):
    expected = small_model.probabilities(cover_pixels)
    padded = np.zeros((120, 170, 3), np.uint8)
    padded[:, :160] = cover_pixels
    rows_apart = padded[:, :160]  # each row 170 pixels apart: passed with its row stride
    assert not rows_apart.flags.c_contiguous
    assert np.array_equal(small_model.probabilities(rows_apart), expected)

    fortran = np.asfortranarray(cover_pixels)
    assert np.array_equal(small_model.probabilities(fortran), expected)
    readonly = cover_pixels.copy()
    readonly.flags.writeable = False
    assert np.array_equal(small_model.probabilities(readonly), expected)

    doubled = np.repeat(np.repeat(cover_pixels, 2, axis=0), 2, axis=1)
    for view in (doubled[::2, ::2], doubled[1::2, ::2]):  # a column step the C side cannot take
        assert np.array_equal(small_model.probabilities(view), expected)
    flipped = cover_pixels[::-1]
    assert np.array_equal(small_model.probabilities(flipped), small_model.probabilities(flipped.copy()))
    channels_reversed = cover_pixels[:, :, ::-1]
    assert np.array_equal(small_model.probabilities(channels_reversed),
                          small_model.probabilities(channels_reversed.copy()))
    assert not np.array_equal(small_model.probabilities(channels_reversed), expected)
    row = cover_pixels[:1]
    assert np.array_equal(small_model.probabilities(row), small_model.probabilities(row.copy()))


def test_pixels_at_the_input_size_are_just_normalized(small_model):
    """With "stretch" resizing and an image of exactly the input size, probabilities() is the
    softmax of run_tensor() on (pixel / 255 - mean) / std."""
    pre = small_model.metadata["preprocess"]
    assert pre["resize"] == "stretch" and not pre["flip_average"]
    pixels = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x = ((pixels / np.float32(255) - np.float32(pre["mean"])) / np.float32(pre["std"])).astype(np.float32)
    logits = small_model.run_tensor(x[None])[0]
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    np.testing.assert_allclose(small_model.probabilities(pixels), expected, rtol=0, atol=1e-6)


def test_array_validation(small_model, cover_pixels):
    with pytest.raises(ValueError, match="uint8"):
        small_model.classify(cover_pixels.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        small_model.probabilities(cover_pixels.astype(np.int16))
    for bad in (cover_pixels[:, :, 0], np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3, 1), np.uint8),
                np.zeros((0, 8, 3), np.uint8), np.zeros((8, 0, 3), np.uint8)):
        with pytest.raises(ValueError):
            small_model.embed(bad)
    with pytest.raises(TypeError):
        small_model.classify(12345)
    with pytest.raises(TypeError):
        small_model.classify(cover_pixels.tolist())
    with pytest.raises(ValueError, match="NUL"):
        small_model.classify("cover\0.jpg")


def test_top_k(small_model, images):
    everything = small_model.classify(images["png"], top_k=5)
    assert sorted(p.index for p in everything) == list(range(5))
    assert small_model.classify(images["png"], top_k=50) == everything
    assert small_model.classify(images["png"], top_k=1) == everything[:1]
    assert small_model.classify(images["png"]) == everything[:3]
    assert abs(sum(p.probability for p in everything) - 1.0) < 1e-5
    with pytest.raises(TypeError):
        small_model.classify(images["png"], top_k="3")


def test_without_numpy_results_are_lists(small_model, images, monkeypatch):
    expected = small_model.probabilities(images["png"]).tolist()
    expected_embedding = small_model.embed(images["png"]).tolist()
    monkeypatch.setattr(_model, "_np", None)
    probabilities = small_model.probabilities(images["png"])
    assert isinstance(probabilities, list) and probabilities == expected
    assert small_model.embed(images["png"].read_bytes()) == expected_embedding
    assert small_model.probabilities_files([images["png"]])[0] == pytest.approx(expected, abs=1e-6)
    assert small_model.classify(images["png"], top_k=1)[0].probability == max(expected)
    with pytest.raises(ImportError, match="numpy"):
        small_model.run_tensor([[0.0]])


# ---- run_tensor -------------------------------------------------------------------------------

def test_run_tensor(small_model):
    x = np.random.default_rng(0).standard_normal((3, 64, 64, 3)).astype(np.float32)
    logits = small_model.run_tensor(x)
    assert logits.shape == (3, 5) and logits.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(small_model.run_tensor(x[i:i + 1])[0], logits[i], rtol=0, atol=1e-5)
    strided = np.zeros((6, 64, 64, 3), np.float32)
    strided[::2] = x
    np.testing.assert_allclose(small_model.run_tensor(strided[::2]), logits, rtol=0, atol=1e-5)
    assert small_model.run_tensor(x[:0]).shape == (0, 5)
    with pytest.raises(ValueError, match="float32"):
        small_model.run_tensor(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        small_model.run_tensor(x[:, :32])
    with pytest.raises(ValueError):
        small_model.run_tensor(x[0])


# ---- Errors -----------------------------------------------------------------------------------

def test_missing_file_is_an_io_error(small_model, tmp_path):
    missing = tmp_path / "nowhere.jpg"
    with pytest.raises(CoverGenreError) as caught:
        small_model.classify(missing)
    e = caught.value
    assert e.status == _lib.CG_ERR_IO and e.status_name == "CG_ERR_IO"
    assert str(missing) in e.message and str(e).startswith("CG_ERR_IO: ")
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.status, copy.status_name, copy.message) == (e.status, e.status_name, e.message)


@pytest.mark.parametrize("call", ["classify", "probabilities", "embed"])
def test_image_errors(small_model, images, tmp_path, call):
    text = tmp_path / "notes.txt"
    text.write_text("liner notes, not a picture\n")
    jpeg = images["jpeg"].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[:len(jpeg) // 2])
    run = getattr(small_model, call)
    for image, status in [(text, "CG_ERR_IMAGE_UNSUPPORTED"), (text.read_bytes(), "CG_ERR_IMAGE_UNSUPPORTED"),
                          (b"", "CG_ERR_IMAGE_UNSUPPORTED"), (truncated, "CG_ERR_IMAGE_DECODE"),
                          (jpeg[:len(jpeg) // 2], "CG_ERR_IMAGE_DECODE"), (tmp_path / "none.png", "CG_ERR_IO")]:
        with pytest.raises(CoverGenreError) as caught:
            run(image)
        assert caught.value.status_name == status, image
        assert caught.value.message, "the library said nothing about %r" % (image,)


def test_top_k_below_one_is_the_librarys_invalid_argument(small_model, images):
    for k in (0, -1):
        with pytest.raises(CoverGenreError) as caught:
            small_model.classify(images["png"], top_k=k)
        assert caught.value.status_name == "CG_ERR_INVALID_ARGUMENT"
        assert "top_k" in caught.value.message
    with pytest.raises(CoverGenreError, match="INVALID_ARGUMENT"):
        small_model.classify_files([images["png"]], top_k=0)


def test_model_file_errors(lib, small_model_path, tmp_path):
    data = small_model_path.read_bytes()
    truncated = tmp_path / "truncated.cgm"
    truncated.write_bytes(data[:len(data) // 2])
    damaged = bytearray(data)
    damaged[-10] ^= 0x40  # inside the last tensor: only the checksum can tell
    cases = [(truncated, "CG_ERR_MODEL_FORMAT"), (data[:len(data) // 2], "CG_ERR_MODEL_FORMAT"),
             (data[:40], "CG_ERR_MODEL_FORMAT"), (b"\0" * 100, "CG_ERR_MODEL_FORMAT"),
             (tmp_path / "none.cgm", "CG_ERR_IO"), (bytes(damaged), "CG_ERR_CHECKSUM"), (b"", "CG_ERR_MODEL_FORMAT")]
    for source, status in cases:
        with pytest.raises(CoverGenreError) as caught:
            Model(source)
        assert caught.value.status_name == status, source if isinstance(source, Path) else len(source)
        assert caught.value.message
    with Model(bytes(damaged), verify_checksum=False) as model:
        assert model.class_count == 5
    with pytest.raises(TypeError):
        Model(42)


def test_limits(small_model_path, images, cover_pixels):
    with pytest.raises(CoverGenreError, match="CG_ERR_LIMIT_EXCEEDED"):
        Model(small_model_path, max_model_bytes=1000)
    with pytest.raises(CoverGenreError, match="CG_ERR_LIMIT_EXCEEDED"):
        Model(small_model_path, max_tensors=3)
    with Model(small_model_path, max_image_width=100) as model:
        for image in (images["png"], images["jpeg"].read_bytes(), cover_pixels):
            with pytest.raises(CoverGenreError, match="CG_ERR_IMAGE_TOO_LARGE"):
                model.classify(image)
        assert len(model.classify(cover_pixels[:, :100])) == 3
    with Model(small_model_path, max_image_pixels=120 * 160 - 1) as model:
        with pytest.raises(CoverGenreError, match="CG_ERR_IMAGE_TOO_LARGE"):
            model.probabilities(images["webp"])
    with Model(small_model_path, max_image_bytes=100) as model:
        with pytest.raises(CoverGenreError, match="CG_ERR_IMAGE_TOO_LARGE"):
            model.probabilities(images["png"])
    for bad in (dict(threads=-1), dict(max_tensors=-5), dict(max_image_width=2 ** 32)):
        with pytest.raises(ValueError):
            Model(small_model_path, **bad)


# ---- Batches ----------------------------------------------------------------------------------

# A batch runs each image on one thread; results do not depend on the thread count, so they are
# bit for bit those of single-image calls, with threads=1 or not.
@pytest.fixture
def one_thread_model(small_model_path):
    with Model(small_model_path, threads=1) as model:
        yield model


def test_classify_files_with_one_bad_file_among_good_ones(small_model, one_thread_model, images, tmp_path):
    text = tmp_path / "readme.txt"
    text.write_text("not an image")
    truncated = tmp_path / "cut.webp"
    truncated.write_bytes(images["webp"].read_bytes()[:200])
    paths = [images["jpeg"], str(images["png"]), tmp_path / "missing.png", images["webp"], text, truncated]
    for threads in (0, 1, 2):
        results = small_model.classify_files(paths, top_k=2, threads=threads)
        assert len(results) == len(paths)
        for i in (0, 1, 3):
            assert results[i] == one_thread_model.classify(paths[i], top_k=2)
            assert results[i] == small_model.classify(paths[i], top_k=2)
        for i, status in ((2, "CG_ERR_IO"), (4, "CG_ERR_IMAGE_UNSUPPORTED"), (5, "CG_ERR_IMAGE_DECODE")):
            assert isinstance(results[i], CoverGenreError)
            assert results[i].status_name == status
            # The library's own sentence for that file, the one a single call raises.
            with pytest.raises(CoverGenreError) as single:
                small_model.classify(paths[i])
            assert results[i].message == single.value.message
            assert str(paths[i]) in results[i].message
    assert small_model.classify_files([]) == []
    assert len(small_model.classify_files([images["png"]], top_k=10)[0]) == 5
    with pytest.raises(ValueError):
        small_model.classify_files([images["png"]], threads=-1)


def test_min_confidence_leaves_only_sure_answers(small_model_path, images):
    with Model(small_model_path, min_confidence=0.999) as unsure:
        assert unsure.classify(images["png"], top_k=3) == []
        assert unsure.classify_files([images["png"]], top_k=3) == [[]]
    with Model(small_model_path, min_confidence=0.0) as model:
        assert len(model.classify(images["png"], top_k=3)) == 3
    with pytest.raises(ValueError):
        Model(small_model_path, min_confidence=1.5)


def test_mirror_view_option_overrides_the_model_file(small_model_path, images, tmp_path):
    """mirror_view=False on a mirror-averaging model is exactly that model without the mirror view
    in its file, and True on a model without it is exactly the mirror-averaging one."""
    metadata, tensors = cgm.read(small_model_path)
    files = {}
    for flip in (True, False):
        metadata["preprocess"]["flip_average"] = flip
        files[flip] = tmp_path / ("flip-%s.cgm" % flip)
        cgm.write(files[flip], metadata, tensors)
    image = images["jpeg"]
    with Model(files[True]) as mirrored, Model(files[False]) as plain, \
            Model(files[True], mirror_view=False) as turned_off, Model(files[False], mirror_view=True) as turned_on:
        assert list(turned_off.probabilities(image)) == list(plain.probabilities(image))
        assert list(turned_on.probabilities(image)) == list(mirrored.probabilities(image))
        assert list(turned_off.embed(image)) == list(plain.embed(image))
        assert list(mirrored.probabilities(image)) != list(plain.probabilities(image))
        assert [list(p) for p in turned_off.probabilities_files([image])] == [list(plain.probabilities(image))]
    with pytest.raises(TypeError):
        Model(files[True], mirror_view=2)
    # The C API refuses values other than -1, 0 and 1 with a message.
    lib = _lib.load()
    options = lib.cg_default_load_options()
    assert options.mirror_view == -1
    options.mirror_view = 5
    handle = _lib.cg_model_p()
    status = lib.cg_model_load_with_options(str(files[True]).encode(), ctypes.byref(options), ctypes.byref(handle))
    assert status != 0 and b"mirror_view" in lib.cg_last_error()


def test_embed_files_match_single_calls(small_model, images, tmp_path):
    paths = [images["jpeg"], tmp_path / "missing.png", images["png"]]
    results = small_model.embed_files(paths, threads=2)
    assert list(results[0]) == list(small_model.embed(images["jpeg"]))
    assert list(results[2]) == list(small_model.embed(images["png"]))
    assert isinstance(results[1], CoverGenreError) and results[1].status_name == "CG_ERR_IO"
    assert small_model.embed_files([]) == []


def test_probabilities_files(small_model, one_thread_model, images, tmp_path):
    paths = [images["png"], tmp_path / "missing.jpg", images["jpeg"]]
    results = small_model.probabilities_files(paths)
    for i in (0, 2):
        assert np.array_equal(results[i], one_thread_model.probabilities(paths[i]))
        np.testing.assert_allclose(results[i], small_model.probabilities(paths[i]), rtol=0, atol=1e-6)
    assert isinstance(results[1], CoverGenreError) and results[1].status_name == "CG_ERR_IO"
    assert small_model.probabilities_files([]) == []


# ---- Lifetime and threads ---------------------------------------------------------------------

def test_context_manager_and_use_after_close(small_model_path, images):
    with Model(small_model_path) as model:
        assert not model.closed
        model.classify(images["png"])
    assert model.closed and "closed" in repr(model)
    model.close()  # idempotent
    for use in (lambda: model.classify(images["png"]), lambda: model.probabilities(images["png"]),
                lambda: model.embed(images["png"]), lambda: model.classify_files([images["png"]]),
                lambda: model.probabilities_files([images["png"]]),
                lambda: model.run_tensor(np.zeros((1, 64, 64, 3), np.float32)),
                lambda: model.labels, lambda: model.metadata, lambda: model.input_size, lambda: model.__enter__()):
        with pytest.raises(ValueError, match="closed"):
            use()


def test_close_waits_for_calls_on_other_threads(small_model_path, cover_pixels):
    model = Model(small_model_path)
    started = threading.Barrier(5)
    outcomes = []

    def classify_until_closed():
        started.wait()
        done = 0
        while True:
            try:
                model.probabilities(cover_pixels)
                done += 1
            except ValueError:
                outcomes.append(done)
                return
            except BaseException as e:  # anything else is a failure of close()
                outcomes.append(e)
                return

    threads = [threading.Thread(target=classify_until_closed) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    model.close()
    for t in threads:
        t.join()
    assert len(outcomes) == 4 and all(isinstance(o, int) for o in outcomes), outcomes


@pytest.mark.parametrize("which", ["small", "efficientnet"])
def test_eight_threads_give_the_single_threaded_results(create_model, small_model_path, images, cover_pixels, which):
    path = small_model_path if which == "small" else create_model("efficientnet-lite0", "--random-statistics",
                                                                   "--input-size", "96", "--storage", "f32")
    inputs = [images["jpeg"], images["png"].read_bytes(), cover_pixels, cover_pixels[10:90, 20:140],
              images["webp"]]
    with Model(path) as model:
        expected = [(model.classify(i, top_k=5), model.probabilities(i), model.embed(i)) for i in inputs]
        failures = []

        def work(offset):
            try:
                for round_ in range(3):
                    for j in range(len(inputs)):
                        k = (j + offset + round_) % len(inputs)
                        top, probabilities, embedding = expected[k]
                        if (model.classify(inputs[k], top_k=5) != top
                                or not np.array_equal(model.probabilities(inputs[k]), probabilities)
                                or not np.array_equal(model.embed(inputs[k]), embedding)):
                            failures.append((offset, k))
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


# ---- .cgm files both ways ---------------------------------------------------------------------

@pytest.mark.parametrize("storage", ["f32", "f16"])
def test_library_written_model_through_python_and_back(create_model, tmp_path, storage):
    original = create_model("efficientnet-lite0", "--random-statistics", "--input-size", "96", "--storage", storage)
    metadata, tensors = cgm.read(original)
    expected_dtype = np.float32 if storage == "f32" else np.float16
    assert all(t.dtype == expected_dtype for t in tensors.values())
    copy = tmp_path / "copy.cgm"
    cgm.write(copy, metadata, tensors, dtype=storage)
    x = np.random.default_rng(1).standard_normal((2, 96, 96, 3)).astype(np.float32)
    with Model(original) as a, Model(copy) as b:
        assert b.metadata == a.metadata
        assert np.array_equal(a.run_tensor(x), b.run_tensor(x))
    again_metadata, again = cgm.read(copy)
    assert again_metadata == metadata and list(again) == list(tensors)
    assert all(np.array_equal(again[k], tensors[k]) and again[k].dtype == tensors[k].dtype for k in tensors)


def test_python_and_library_round_to_the_same_halves(create_model):
    _, full = cgm.read(create_model("vgg16", "--width-divisor", "8", "--input-size", "64"))
    _, halves = cgm.read(create_model("vgg16", "--width-divisor", "8", "--input-size", "64", "--storage", "f16"))
    assert list(full) == list(halves)
    for name in full:
        assert np.array_equal(full[name].astype(np.float16), halves[name]), name
    assert cgm.serialize({"x": 1}, full, dtype="f16") == cgm.serialize({"x": 1}, halves, dtype="f16")


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_python_written_model_in_the_library_and_the_cli(cli, tmp_path, images, dtype):
    metadata, tensors = graphs.every_op()
    path = tmp_path / "every-op.cgm"
    cgm.write(path, metadata, tensors, dtype=dtype)
    with Model(path) as model:
        assert model.metadata == metadata
        assert model.labels == tuple(metadata["labels"]) and model.name == "every-op"
        assert model.architecture == "custom" and model.input_size == (23, 19) and model.embedding_size == 16
        top = model.classify(images["jpeg"], top_k=5)
    inspected = subprocess.run([cli, "inspect", str(path)], check=True, stdout=subprocess.PIPE, text=True).stdout
    checksum = int.from_bytes(path.read_bytes()[24:32], "little")
    assert "checksum %x" % checksum in inspected and dtype in inspected
    classified = subprocess.run([cli, "classify", "-m", str(path), str(images["jpeg"])], check=True,
                                stdout=subprocess.PIPE, text=True).stdout
    assert top[0].label in classified
