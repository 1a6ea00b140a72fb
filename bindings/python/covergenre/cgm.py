"""Reads and writes CoverGenre .cgm model files (docs/model-format.md) in pure Python.

    metadata, tensors = cgm.read("model.cgm")          # dict, {name: numpy array}
    cgm.write("copy.cgm", metadata, tensors, dtype="f16")

The reader checks what the library's reader checks, in the same order, and raises CgmError
(a ValueError) whose ``status_name`` is the status the library would report. This module needs
numpy; the rest of the package does not, and nothing here needs libcovergenre.
"""

from __future__ import annotations

import json
import os
import struct
import uuid

import numpy as np

__all__ = ["CgmError", "read", "write", "serialize", "xxh64"]

MAGIC = b"\x89CGM\r\n\x1a\n"
VERSION = 1           # what write() produces: float models
VERSIONS = (1, 2)     # what read() accepts: version 2 adds int8 tensors
HEADER_SIZE = 64
ALIGNMENT = 64
CHECKSUM_START = 32
MAX_RANK = 8
MAX_NAME_BYTES = 1024
MAX_DIMENSION = 2 ** 31 - 1
MAX_JSON_DEPTH = 64

# The library's defaults (cg_default_load_options).
DEFAULT_MAX_MODEL_BYTES = 2 << 30
DEFAULT_MAX_METADATA_BYTES = 16 << 20
DEFAULT_MAX_TENSORS = 1 << 16

# magic, version, header_size, file_size, checksum, metadata_offset, metadata_size,
# table_offset, table_size, tensor_count
_HEADER = struct.Struct("<8sIIQQQQQII")
assert _HEADER.size == HEADER_SIZE

# dtype code -> (name, little-endian numpy dtype). int8 (version 2) is symmetric per channel (the
# last dimension): one float32 scale per channel, then the values; read() dequantizes it.
_DTYPES = {0: ("f32", np.dtype("<f4")), 1: ("f16", np.dtype("<f2")), 2: ("i8", np.dtype("i1"))}
_INT8 = 2
_DTYPE_CODES = {"f32": 0, "float32": 0, "f16": 1, "float16": 1}


class CgmError(ValueError):
    """A .cgm file the library would refuse. ``status_name`` is the cg_status it would report:
    CG_ERR_MODEL_FORMAT, CG_ERR_MODEL_UNSUPPORTED, CG_ERR_CHECKSUM or CG_ERR_LIMIT_EXCEEDED."""

    def __init__(self, message, status_name="CG_ERR_MODEL_FORMAT"):
        super().__init__(message)
        self.status_name = status_name


# ---- XXH64 ------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261
# Stripes per numpy batch: bounds the Python ints alive at once for multi-gigabyte files.
_CHUNK_STRIPES = 1 << 20


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc, lane):
    acc = (acc + lane * _P2) & _M64
    return (_rotl(acc, 31) * _P1) & _M64


def _merge(h, v):
    h ^= _round(0, v)
    return (h * _P1 + _P4) & _M64


def xxh64(data, seed=0):
    """XXH64 of a bytes-like object, as an int.

    The 32-byte stripes are the bulk of the work: numpy multiplies every lane by PRIME64_2 at
    once (uint64 arithmetic wraps, as XXH64 wants); each lane's accumulator chain is inherently
    sequential and runs on Python ints.
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    n = len(view)
    seed &= _M64
    pos = 0
    if n >= 32:
        acc = [(seed + _P1 + _P2) & _M64, (seed + _P2) & _M64, seed, (seed - _P1) & _M64]
        stripes = n // 32
        while pos < stripes * 32:
            count = min(stripes - pos // 32, _CHUNK_STRIPES)
            lanes = np.frombuffer(view, dtype="<u8", count=count * 4, offset=pos).reshape(count, 4)
            products = lanes * np.uint64(_P2)
            for i in range(4):
                a = acc[i]
                for p in products[:, i].tolist():
                    a = (a + p) & _M64
                    # The bits shifted past 64 vanish in the masked product: no mask needed before it.
                    a = (((a << 31) | (a >> 33)) * _P1) & _M64
                acc[i] = a
            pos += count * 32
        h = (_rotl(acc[0], 1) + _rotl(acc[1], 7) + _rotl(acc[2], 12) + _rotl(acc[3], 18)) & _M64
        for a in acc:
            h = _merge(h, a)
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while pos + 8 <= n:
        k = int.from_bytes(view[pos:pos + 8], "little")
        h ^= _round(0, k)
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        pos += 8
    if pos + 4 <= n:
        h ^= (int.from_bytes(view[pos:pos + 4], "little") * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        pos += 4
    while pos < n:
        h ^= (view[pos] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        pos += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h


# ---- Reading ----------------------------------------------------------------------------------

def _strict_json(raw):
    def refuse_constant(name):
        raise ValueError("%s is not JSON" % name)

    try:
        text = bytes(raw).decode("utf-8")
        value = json.loads(text, parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CgmError("metadata is not valid JSON: %s" % e) from None
    _check_depth(value)
    return value


def _check_depth(value):
    # As the library's parser counts: the top-level value is at depth 0 and no value may sit at
    # depth MAX_JSON_DEPTH.
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= MAX_JSON_DEPTH:
            raise CgmError("metadata JSON nests deeper than %d" % MAX_JSON_DEPTH)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _range(offset, size, file_size, what):
    if offset > file_size or size > file_size - offset:
        raise CgmError("%s (%d bytes at %d) lies outside the %d-byte file" % (what, size, offset, file_size))
    return offset, offset + size


class _Table:
    def __init__(self, view):
        self.view = view
        self.pos = 0

    def take(self, n):
        if n > len(self.view) - self.pos:
            raise CgmError("model table ends in the middle of an entry")
        start = self.pos
        self.pos += n
        return self.view[start:self.pos]

    def uint(self, n):
        return int.from_bytes(self.take(n), "little")


def _read_entry(table, index, data_start, file_size):
    def invalid(what):
        return CgmError("tensor #%d: %s" % (index, what))

    name_length = table.uint(2)
    if not 0 < name_length <= MAX_NAME_BYTES:
        raise invalid("name length %d" % name_length)
    try:
        name = bytes(table.take(name_length)).decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("name is not UTF-8") from None
    code = table.uint(1)
    if code not in _DTYPES:
        raise invalid("%s: unknown dtype %d" % (name, code))
    rank = table.uint(1)
    if rank > MAX_RANK:
        raise invalid("%s: rank %d exceeds %d" % (name, rank, MAX_RANK))
    shape = []
    elements = 1
    for _ in range(rank):
        d = table.uint(8)
        if d > MAX_DIMENSION:
            raise invalid("%s: dimension %d too large" % (name, d))
        elements *= d
        if elements > file_size:
            raise invalid("%s: shape larger than the file" % name)
        shape.append(d)
    offset, byte_count = table.uint(8), table.uint(8)
    dtype = _DTYPES[code][1]
    if code == _INT8 and (rank == 0 or shape[-1] == 0):
        raise invalid("%s: i8 storage needs a last dimension of at least 1 (its channels), shape is %s" % (name, shape))
    if byte_count != elements * dtype.itemsize + (4 * shape[-1] if code == _INT8 else 0):
        raise invalid("%s: %d bytes do not match shape %s of %s" % (name, byte_count, shape, _DTYPES[code][0]))
    if offset % ALIGNMENT:
        raise invalid("%s: offset %d is not %d-byte aligned" % (name, offset, ALIGNMENT))
    if offset < data_start or offset > file_size or byte_count > file_size - offset:
        raise invalid("%s: data (%d bytes at %d) lies outside the data section" % (name, byte_count, offset))
    return name, code, tuple(shape), offset, byte_count


def _load_bytes(source, max_model_bytes):
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_model_bytes:
                raise CgmError("model is %d bytes; the limit is %d" % (size, max_model_bytes), "CG_ERR_LIMIT_EXCEEDED")
            return memoryview(f.read())
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        if len(view) > max_model_bytes:
            raise CgmError("model is %d bytes; the limit is %d" % (len(view), max_model_bytes), "CG_ERR_LIMIT_EXCEEDED")
        return view
    raise TypeError("read() takes a path or the file's bytes, not %s" % type(source).__name__)


def read(source, verify_checksum=True, *, max_model_bytes=DEFAULT_MAX_MODEL_BYTES,
         max_metadata_bytes=DEFAULT_MAX_METADATA_BYTES, max_tensors=DEFAULT_MAX_TENSORS):
    """Reads and validates a .cgm file: a path, or the file's bytes.

    Returns (metadata, tensors): the metadata JSON as a dict, and {name: array} in table order,
    each array a new, writable numpy array of its stored dtype (float32 or float16) and shape; int8
    tensors (format version 2) come dequantized, as float32 q * scale[channel].
    Raises CgmError for anything the library would refuse.
    """
    data = _load_bytes(source, max_model_bytes)
    size = len(data)
    if size < HEADER_SIZE:
        raise CgmError("empty file" if size == 0 else "%d bytes is too short for a model header" % size)
    if bytes(data[:8]) != MAGIC:
        raise CgmError("not a CoverGenre model (bad magic bytes)")
    (_, version, header_size, file_size, checksum, metadata_offset, metadata_size, table_offset, table_size,
     tensor_count) = _HEADER.unpack_from(data, 0)
    if version not in VERSIONS:
        raise CgmError("model format version %d; this reader reads versions %d to %d" % (version, VERSIONS[0], VERSIONS[-1]),
                       "CG_ERR_MODEL_UNSUPPORTED")
    if header_size != HEADER_SIZE:
        raise CgmError("header size %d, expected %d" % (header_size, HEADER_SIZE))
    if file_size > size:
        raise CgmError("truncated: the header says %d bytes, the file has %d" % (file_size, size))
    if file_size < size:
        raise CgmError("%d unexpected bytes after the declared end" % (size - file_size))
    if verify_checksum and xxh64(data[CHECKSUM_START:]) != checksum:
        raise CgmError("checksum mismatch (file damaged or modified)", "CG_ERR_CHECKSUM")
    if metadata_size > max_metadata_bytes:
        raise CgmError("metadata is %d bytes; the limit is %d" % (metadata_size, max_metadata_bytes),
                       "CG_ERR_LIMIT_EXCEEDED")
    if tensor_count > max_tensors:
        raise CgmError("%d tensors; the limit is %d" % (tensor_count, max_tensors), "CG_ERR_LIMIT_EXCEEDED")
    meta_start, meta_end = _range(metadata_offset, metadata_size, size, "metadata")
    table_start, table_end = _range(table_offset, table_size, size, "tensor table")
    if meta_start < HEADER_SIZE or table_start < HEADER_SIZE or (meta_start < table_end and table_start < meta_end):
        raise CgmError("metadata and tensor table overlap the header or each other")

    metadata = _strict_json(data[meta_start:meta_end])
    if not isinstance(metadata, dict):
        raise CgmError("metadata is not a JSON object")

    data_start = max(meta_end, table_end)
    table = _Table(data[table_start:table_end])
    entries = []
    seen = set()
    for i in range(tensor_count):
        entry = _read_entry(table, i, data_start, size)
        if entry[1] == _INT8:
            if version < 2:
                raise CgmError('tensor "%s": i8 storage needs format version 2, the file says %d' % (entry[0], version))
            scales = np.frombuffer(data, dtype="<f4", count=entry[2][-1], offset=entry[3])
            bad = np.flatnonzero(~(np.isfinite(scales) & (scales > 0)))
            if bad.size:
                raise CgmError('tensor "%s": int8 scale of channel %d is %s, not finite and positive'
                               % (entry[0], bad[0], scales[bad[0]]))
        if entry[0] in seen:
            raise CgmError('tensor name "%s" appears twice' % entry[0])
        seen.add(entry[0])
        entries.append(entry)
    if table.pos != table_size:
        raise CgmError("tensor table has %d trailing bytes" % (table_size - table.pos))
    by_offset = sorted(entries, key=lambda e: e[3])
    for a, b in zip(by_offset, by_offset[1:]):
        if a[3] + a[4] > b[3]:
            raise CgmError('tensors "%s" and "%s" overlap' % (a[0], b[0]))

    tensors = {}
    for name, code, shape, offset, byte_count in entries:
        dtype = _DTYPES[code][1]
        if code == _INT8:
            channels = shape[-1]
            scales = np.frombuffer(data, dtype="<f4", count=channels, offset=offset).astype(np.float32)
            values = np.frombuffer(data, dtype=dtype, count=byte_count - 4 * channels, offset=offset + 4 * channels)
            # As the library widens them: q * scale[channel], in float32.
            tensors[name] = (values.reshape(shape).astype(np.float32) * scales).astype(np.float32)
            continue
        count = byte_count // dtype.itemsize
        stored = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
        tensors[name] = stored.astype(dtype.newbyteorder("="), copy=True)
    return metadata, tensors


# ---- Writing ----------------------------------------------------------------------------------

def _align(n):
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _storage(name, value, code):
    if not isinstance(name, str) or not 0 < len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        raise ValueError("tensor name %r must be a non-empty str of at most %d UTF-8 bytes" % (name, MAX_NAME_BYTES))
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise ValueError("tensor %r: %s values cannot be stored as floats" % (name, array.dtype))
    if array.ndim > MAX_RANK or any(d > MAX_DIMENSION for d in array.shape):
        raise ValueError("tensor %r: shape %s is beyond rank %d or 2^31 - 1 per dimension"
                         % (name, array.shape, MAX_RANK))
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
        stored = np.asarray(array, dtype=_DTYPES[code][1])
    if not stored.flags.c_contiguous:
        stored = stored.copy(order="C")
    if code == 1:
        overflow = np.isfinite(array) & ~np.isfinite(stored)
        if overflow.any():
            raise ValueError("tensor %r: %d values overflow float16" % (name, int(overflow.sum())))
    return stored


def serialize(metadata, tensors, dtype="f32"):
    """The bytes of a .cgm file holding `metadata` (a JSON-serializable dict) and `tensors`
    ({name: array-like} or (name, array-like) pairs, stored in that order) as f32 or f16."""
    if not isinstance(metadata, dict):
        raise TypeError("metadata must be a dict, not %s" % type(metadata).__name__)
    try:
        code = _DTYPE_CODES[dtype]
    except (KeyError, TypeError):
        raise ValueError('dtype must be "f32" or "f16", not %r' % (dtype,)) from None
    graph = metadata.get("graph")
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if isinstance(nodes, list) and any(isinstance(n, dict) and "input_quantization" in n for n in nodes):
        # Its layers need int8 weights, which this writer does not write: the file would not load.
        raise ValueError("the metadata describes an int8 model (input_quantization); this writer writes float models only")
    metadata_bytes = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    _check_depth(metadata)
    if len(metadata_bytes) > DEFAULT_MAX_METADATA_BYTES:
        raise ValueError("metadata is %d bytes; readers refuse more than %d by default"
                         % (len(metadata_bytes), DEFAULT_MAX_METADATA_BYTES))

    items = tensors.items() if hasattr(tensors, "items") else tensors
    entries = []
    names = set()
    for name, value in items:
        if name in names:
            raise ValueError("tensor %r given twice" % (name,))
        names.add(name)
        entries.append((name, _storage(name, value, code)))

    metadata_offset = HEADER_SIZE
    table_offset = metadata_offset + len(metadata_bytes)
    table_size = sum(2 + len(n.encode("utf-8")) + 2 + 8 * a.ndim + 16 for n, a in entries)
    if table_size >= 2 ** 32:
        raise ValueError("the tensor table would be %d bytes; the format allows less than 4 GiB" % table_size)
    offsets = []
    offset = _align(table_offset + table_size)
    for _, array in entries:
        offsets.append(offset)
        offset = _align(offset + array.nbytes)
    file_size = offsets[-1] + entries[-1][1].nbytes if entries else table_offset + table_size

    out = bytearray(file_size)
    out_array = np.frombuffer(out, dtype=np.uint8)
    table = bytearray()
    for (name, array), data_offset in zip(entries, offsets):
        encoded = name.encode("utf-8")
        table += struct.pack("<H", len(encoded)) + encoded + struct.pack("<BB", code, array.ndim)
        table += struct.pack("<%dQ" % array.ndim, *array.shape)
        table += struct.pack("<QQ", data_offset, array.nbytes)
        out_array[data_offset:data_offset + array.nbytes] = array.reshape(-1).view(np.uint8)
    assert len(table) == table_size
    del out_array
    out[metadata_offset:table_offset] = metadata_bytes
    out[table_offset:table_offset + table_size] = table
    _HEADER.pack_into(out, 0, MAGIC, VERSION, HEADER_SIZE, file_size, 0, metadata_offset, len(metadata_bytes),
                      table_offset, table_size, len(entries))
    struct.pack_into("<Q", out, 24, xxh64(memoryview(out)[CHECKSUM_START:]))
    return bytes(out)


def write(path, metadata, tensors, dtype="f32"):
    """Writes a .cgm file atomically: a temporary file beside `path`, fsync, then os.replace, so
    readers see the old file or the whole new one, never a part."""
    data = serialize(metadata, tensors, dtype)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(path), uuid.uuid4().hex))
    # os.open with 0o666 lets the umask decide the final permissions, as for any new file.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
