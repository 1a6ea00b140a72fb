"""covergenre.cgm: XXH64, the reader's checks (and that the library draws the same lines), and the
writer's layout and atomicity. Tests marked with the `lib` fixture skip without the library."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import graphs
from covergenre import CoverGenreError, Model, cgm


# ---- XXH64 ------------------------------------------------------------------------------------

def test_xxh64_published_vectors():
    assert cgm.xxh64(b"") == 0xEF46DB3751D8E999
    assert cgm.xxh64(b"abc") == 0x44BC2CF5AD770999


def test_xxh64_takes_any_bytes_like_object():
    data = bytes(range(256)) * 3
    expected = cgm.xxh64(data)
    assert cgm.xxh64(bytearray(data)) == expected
    assert cgm.xxh64(memoryview(data)) == expected
    assert cgm.xxh64(np.frombuffer(data, dtype=np.uint32)) == expected
    assert cgm.xxh64(data[:-1]) != expected


def tensorless_model(padding):
    """A valid model with no tensors (a global average of the three input channels is the
    logits), so the file ends right after its metadata and its length is free to choose."""
    metadata = {
        "format": "covergenre-model", "name": "mean-colour", "labels": ["Red", "Green", "Blue"],
        "preprocess": {"resize": "stretch", "mean": [0, 0, 0], "std": [1, 1, 1]},
        "graph": {"input": "image", "input_shape": [4, 4, 3], "logits": "gap",
                  "nodes": [{"name": "gap", "op": "global_avgpool", "inputs": ["image"]}]},
        "provenance": {"padding": "x" * padding},
    }
    return metadata, cgm.serialize(metadata, {})


def test_xxh64_agrees_with_the_library_at_every_tail_length(lib):
    """Checksums of files ending at each length mod 32 (every tail path of XXH64: 8-, 4- and
    1-byte steps) are verified by the library's own XXH64 on load."""
    lengths = set()
    for padding in range(32):
        metadata, data = tensorless_model(padding)
        lengths.add((len(data) - cgm.CHECKSUM_START) % 32)
        with Model(data) as model:
            assert model.labels == ("Red", "Green", "Blue")
        assert cgm.read(data)[0] == metadata
    assert lengths == set(range(32))


def test_xxh64_across_chunk_boundaries(monkeypatch):
    data = np.random.default_rng(2).integers(0, 256, 32 * 10 + 13, dtype=np.uint8).tobytes()
    expected = cgm.xxh64(data)
    monkeypatch.setattr(cgm, "_CHUNK_STRIPES", 3)
    assert cgm.xxh64(data) == expected


# ---- Reading ----------------------------------------------------------------------------------

def reseal(data):
    """Recomputes the checksum after a deliberate change, so that the change itself is judged."""
    data = bytearray(data)
    struct.pack_into("<Q", data, 24, cgm.xxh64(memoryview(data)[cgm.CHECKSUM_START:]))
    return bytes(data)


def header(data):
    names = ["magic", "version", "header_size", "file_size", "checksum", "metadata_offset", "metadata_size",
             "table_offset", "table_size", "tensor_count"]
    return dict(zip(names, struct.unpack_from("<8sIIQQQQQII", data, 0)))


def patch(data, offset, fmt, value, seal=True):
    data = bytearray(data)
    struct.pack_into(fmt, data, offset, value)
    return reseal(data) if seal else bytes(data)


def with_metadata(metadata_bytes, tensors):
    """A file whose metadata section holds exactly these bytes (valid or not)."""
    placeholder = {"p": "x" * len(metadata_bytes)}
    data = bytearray(cgm.serialize(placeholder, tensors))
    h = header(data)
    assert h["metadata_size"] >= len(metadata_bytes)
    start = h["metadata_offset"]
    data[start:start + h["metadata_size"]] = metadata_bytes.ljust(h["metadata_size"], b" ")
    return reseal(data)


def table_entry(data, index):
    """Positions in the file of entry `index` of the tensor table: where it starts, its name,
    dtype byte, offset and size fields; and the name and data offset themselves."""
    position = header(data)["table_offset"]
    for i in range(index + 1):
        n = struct.unpack_from("<H", data, position)[0]
        rank = data[position + 2 + n + 1]
        entry = dict(start=position, name_at=position + 2, name=bytes(data[position + 2:position + 2 + n]).decode(),
                     dtype_at=position + 2 + n, offset_at=position + 4 + n + 8 * rank,
                     size_at=position + 12 + n + 8 * rank)
        entry["offset"] = struct.unpack_from("<Q", data, entry["offset_at"])[0]
        position += 2 + n + 2 + 8 * rank + 16
    return entry


def corruptions():
    """The tiny model's file, and {case: (damaged file, status the library reports)}."""
    metadata, tensors = graphs.tiny()
    good = cgm.serialize(metadata, tensors)
    h = header(good)
    first, second = table_entry(good, 0), table_entry(good, 1)
    renamed = next(table_entry(good, i) for i in range(len(tensors)) if table_entry(good, i)["name"] == "fc.weight")
    duplicate = bytearray(good)
    duplicate[renamed["name_at"]:renamed["name_at"] + 9] = b"conv.bias"  # same length: nothing else moves
    text = json.dumps(metadata)
    deep = text[:-1] + ', "deep": ' + "[" * 64 + "]" * 64 + "}"
    deep_ok = text[:-1] + ', "deep": ' + "[" * 63 + "]" * 63 + "}"
    return good, {
        "header only half": (good[:40], "CG_ERR_MODEL_FORMAT"),
        "bad magic": (b"\x89PNG" + good[4:], "CG_ERR_MODEL_FORMAT"),
        # The version precedes the checksum field, so no reseal is needed to reach it.
        "newer version": (patch(good, 8, "<I", 3, seal=False), "CG_ERR_MODEL_UNSUPPORTED"),
        "header size": (patch(good, 12, "<I", 128), "CG_ERR_MODEL_FORMAT"),
        "truncated": (good[:-8], "CG_ERR_MODEL_FORMAT"),
        "trailing bytes": (good + b"\0" * 8, "CG_ERR_MODEL_FORMAT"),
        "flipped data bit": (good[:-1] + bytes([good[-1] ^ 1]), "CG_ERR_CHECKSUM"),
        "metadata outside the file": (patch(good, 40, "<Q", len(good)), "CG_ERR_MODEL_FORMAT"),
        "metadata overlaps the header": (patch(good, 32, "<Q", 16), "CG_ERR_MODEL_FORMAT"),
        "table overlaps the metadata": (patch(good, 48, "<Q", h["metadata_offset"] + 1), "CG_ERR_MODEL_FORMAT"),
        "table has trailing bytes": (patch(good, 60, "<I", h["tensor_count"] - 1), "CG_ERR_MODEL_FORMAT"),
        "more entries than the table holds": (patch(good, 60, "<I", h["tensor_count"] + 1), "CG_ERR_MODEL_FORMAT"),
        "unknown dtype": (patch(good, first["dtype_at"], "<B", 7), "CG_ERR_MODEL_FORMAT"),
        "rank above 8": (patch(good, first["dtype_at"] + 1, "<B", 9), "CG_ERR_MODEL_FORMAT"),
        "misaligned offset": (patch(good, first["offset_at"], "<Q", first["offset"] + 4), "CG_ERR_MODEL_FORMAT"),
        "data inside the table": (patch(good, first["offset_at"], "<Q", 0), "CG_ERR_MODEL_FORMAT"),
        "overlapping tensors": (patch(good, second["offset_at"], "<Q", first["offset"]), "CG_ERR_MODEL_FORMAT"),
        "size does not match shape": (patch(good, first["size_at"], "<Q", 4), "CG_ERR_MODEL_FORMAT"),
        "duplicate name": (reseal(duplicate), "CG_ERR_MODEL_FORMAT"),
        "metadata not JSON": (with_metadata(b"{'single': 'quotes'}", tensors), "CG_ERR_MODEL_FORMAT"),
        "metadata not an object": (with_metadata(b"[1, 2, 3]", tensors), "CG_ERR_MODEL_FORMAT"),
        "NaN in metadata": (with_metadata(b'{"x": NaN}', tensors), "CG_ERR_MODEL_FORMAT"),
        "metadata not UTF-8": (with_metadata(b'{"x": "\xff"}', tensors), "CG_ERR_MODEL_FORMAT"),
        "nesting 64 deep": (with_metadata(deep.encode(), tensors), "CG_ERR_MODEL_FORMAT"),
        "nesting 63 deep": (with_metadata(deep_ok.encode(), tensors), None),
    }


CORRUPTIONS = sorted(corruptions()[1])


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_reader_refuses_what_the_format_forbids(case):
    good, cases = corruptions()
    data, status = cases[case]
    if status is None:
        metadata, _ = cgm.read(data)
        assert metadata["deep"]
        return
    with pytest.raises(cgm.CgmError) as caught:
        cgm.read(data)
    assert caught.value.status_name == status
    assert isinstance(caught.value, ValueError) and str(caught.value)
    cgm.read(good)


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_library_draws_the_same_lines(lib, case):
    _, cases = corruptions()
    data, status = cases[case]
    if status is None:
        with Model(data) as model:
            assert model.metadata["deep"]
        return
    with pytest.raises(CoverGenreError) as caught:
        Model(data)
    assert caught.value.status_name == status, caught.value.message


def test_empty_input():
    with pytest.raises(cgm.CgmError, match="empty"):
        cgm.read(b"")


def test_empty_input_in_the_library(lib):
    # Zero bytes in memory are an empty model file, as an empty file on disk is.
    with pytest.raises(CoverGenreError, match="CG_ERR_MODEL_FORMAT"):
        Model(b"")


def test_limits_are_the_librarys(lib):
    metadata, tensors = graphs.tiny()
    data = cgm.serialize(metadata, tensors)
    for python_limit, c_limit in [(dict(max_tensors=2), dict(max_tensors=2)),
                                  (dict(max_metadata_bytes=100), dict(max_metadata_bytes=100)),
                                  (dict(max_model_bytes=len(data) - 1), dict(max_model_bytes=len(data) - 1))]:
        with pytest.raises(cgm.CgmError) as caught:
            cgm.read(data, **python_limit)
        assert caught.value.status_name == "CG_ERR_LIMIT_EXCEEDED"
        with pytest.raises(CoverGenreError, match="CG_ERR_LIMIT_EXCEEDED"):
            Model(data, **c_limit)
    cgm.read(data, max_model_bytes=len(data), max_tensors=len(tensors))


def test_checksum_check_can_be_turned_off():
    metadata, tensors = graphs.tiny()
    data = bytearray(cgm.serialize(metadata, tensors))
    data[-1] ^= 0x01
    with pytest.raises(cgm.CgmError, match="checksum"):
        cgm.read(bytes(data))
    _, damaged = cgm.read(bytes(data), verify_checksum=False)
    assert [name for name in tensors if not np.array_equal(damaged[name], tensors[name])] == [list(tensors)[-1]]


def test_read_gives_writable_native_arrays_in_table_order(tmp_path):
    metadata, tensors = graphs.every_op()
    path = tmp_path / "m.cgm"
    cgm.write(path, metadata, tensors)
    for source in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), memoryview(path.read_bytes())):
        read_metadata, read_tensors = cgm.read(source)
        assert read_metadata == metadata
        assert list(read_tensors) == list(tensors)
        for name, array in read_tensors.items():
            assert array.dtype == np.float32 and array.dtype.isnative and array.flags.writeable
            assert np.array_equal(array, tensors[name]), name
    with pytest.raises(TypeError):
        cgm.read(12)


# ---- Writing ----------------------------------------------------------------------------------

def test_layout_follows_the_format():
    tensors = {"a": np.arange(5, dtype=np.float32), "scalar": np.float32(2.5), "empty": np.zeros((0, 3)),
               "b": np.ones((2, 3, 4), dtype=np.float64), "ints": np.arange(6).reshape(2, 3)}
    data = cgm.serialize({"k": "v"}, tensors)
    h = header(data)
    assert h["magic"] == cgm.MAGIC and h["version"] == 1 and h["header_size"] == 64
    assert h["file_size"] == len(data) and h["metadata_offset"] == 64
    assert data[64:64 + h["metadata_size"]] == b'{"k":"v"}'
    assert h["table_offset"] == 64 + h["metadata_size"] and h["tensor_count"] == 5
    assert h["checksum"] == cgm.xxh64(data[32:])
    table_end = h["table_offset"] + h["table_size"]
    for i, (name, value) in enumerate(tensors.items()):
        at = table_entry(data, i)["start"]
        n = struct.unpack_from("<H", data, at)[0]
        assert data[at + 2:at + 2 + n].decode() == name
        dtype, rank = data[at + 2 + n], data[at + 3 + n]
        shape = struct.unpack_from("<%dQ" % rank, data, at + 4 + n)
        offset, size = struct.unpack_from("<QQ", data, at + 4 + n + 8 * rank)
        assert dtype == 0 and shape == np.shape(value) and offset % 64 == 0 and offset >= table_end
        assert data[offset:offset + size] == np.asarray(value, dtype="<f4").tobytes()
    _, back = cgm.read(data)
    assert back["scalar"].shape == () and back["scalar"] == 2.5 and back["empty"].shape == (0, 3)
    assert np.array_equal(back["ints"], np.arange(6).reshape(2, 3))


def test_f16_storage_rounds_like_numpy_and_refuses_overflow():
    values = np.array([0.1, 1 / 3, -2.5e-5, 65504.0, 1e-8], dtype=np.float32)
    data = cgm.serialize({}, {"v": values}, dtype="f16")
    _, back = cgm.read(data)
    assert back["v"].dtype == np.float16 and np.array_equal(back["v"], values.astype(np.float16))
    with pytest.raises(ValueError, match="overflow"):
        cgm.serialize({}, {"v": np.array([70000.0])}, dtype="f16")
    # Infinities and NaNs are stored as they are: only finite values turning infinite is refused.
    _, back = cgm.read(cgm.serialize({}, {"v": np.array([np.inf, np.nan])}, dtype="f16"))
    assert np.isinf(back["v"][0]) and np.isnan(back["v"][1])


def test_big_endian_input_is_stored_little_endian():
    values = np.arange(4, dtype=">f4")
    _, back = cgm.read(cgm.serialize({}, {"v": values}))
    assert np.array_equal(back["v"], np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("metadata, tensors, dtype, error", [
    ([], {}, "f32", TypeError),
    ({"x": float("nan")}, {}, "f32", ValueError),
    ({"deep": [[[[]]]]}, {}, "f32", None),
    ({}, {"": [1.0]}, "f32", ValueError),
    ({}, {"n" * 1025: [1.0]}, "f32", ValueError),
    ({}, [("a", [1.0]), ("a", [2.0])], "f32", ValueError),
    ({}, {"a": np.zeros((1,) * 9)}, "f32", ValueError),
    ({}, {"a": np.array(["text"])}, "f32", ValueError),
    ({}, {"a": [1.0]}, "f64", ValueError),
])
def test_writer_refuses_what_readers_would(metadata, tensors, dtype, error):
    if error is None:
        cgm.read(cgm.serialize(metadata, tensors, dtype))
        return
    with pytest.raises(error):
        cgm.serialize(metadata, tensors, dtype)


def test_writer_refuses_metadata_nested_beyond_the_readers_limit():
    deep = []
    for _ in range(64):
        deep = [deep]
    with pytest.raises(cgm.CgmError, match="deeper"):
        cgm.serialize({"deep": deep}, {})


def test_write_is_atomic_and_replaces(tmp_path):
    metadata, tensors = graphs.tiny()
    path = tmp_path / "model.cgm"
    cgm.write(path, metadata, tensors)
    first = path.read_bytes()
    cgm.write(str(path), dict(metadata, name="second"), tensors, dtype="f16")
    assert cgm.read(path)[0]["name"] == "second"
    # A failure while serializing leaves the old file and no temporary file behind.
    with pytest.raises(ValueError):
        cgm.write(path, metadata, {"bad": np.array([1e6])}, dtype="f16")
    assert cgm.read(path)[0]["name"] == "second"
    assert sorted(os.listdir(tmp_path)) == ["model.cgm"]
    cgm.write(path, metadata, tensors)
    assert path.read_bytes() == first


def test_write_failure_during_replace_cleans_up(tmp_path, monkeypatch):
    metadata, tensors = graphs.tiny()
    path = tmp_path / "model.cgm"

    def refuse(source, destination):
        raise PermissionError("simulated")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        cgm.write(path, metadata, tensors)
    assert os.listdir(tmp_path) == []


def test_written_file_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        cgm.write(tmp_path / "m.cgm", *graphs.tiny())
    finally:
        os.umask(old)
    assert (tmp_path / "m.cgm").stat().st_mode & 0o777 == 0o640
