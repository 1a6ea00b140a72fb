"""PyTorch checkpoints without PyTorch, for the importer tests (tests/test_importer.py).

Writers for both `torch.save` formats and for .safetensors, and a restricted reader of all three:

    save_zip(path, state_dict)             # PyTorch >= 1.6: a zip of data.pkl + one entry per storage
    save_legacy(path, state_dict)          # before 1.6: five pickles, then the raw storages
    save_safetensors(path, state_dict)
    checkpoint = read(path)                # .tensors {name: array}, .metadata, .storage_keys

A state dict is {name: numpy array}. Each array's storage is its root buffer: arrays that are views
of one C-contiguous buffer share a storage, with the view's offset and strides (in elements), as
tensors made by `split` or `.t()` do in PyTorch.

The pickles come from Python's own (pure-Python, extensible) pickler with stand-ins: a `Global`
pickles as a GLOBAL reference (STACK_GLOBAL from protocol 4) to a module attribute without
importing it, so neither torch nor a hostile payload's module is ever imported here. A tensor
reduces to torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
OrderedDict()), a storage is a persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)
(legacy: with a sixth item, the view metadata, None), as torch.save writes them.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
LEGACY_SYS_INFO = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                   "type_sizes": {"short": 2, "int": 4, "long": 4}}


class Global:
    """A module attribute named in a pickle (GLOBAL / STACK_GLOBAL) and never looked up.

    Callable only so that pickle accepts it as the callee of a __reduce__ value."""

    def __init__(self, module, name):
        self.module = module
        self.name = name

    def __call__(self, *args):
        raise TypeError("%s.%s is a stand-in and cannot be called" % (self.module, self.name))

    def __repr__(self):
        return "Global(%r, %r)" % (self.module, self.name)


REBUILD_TENSOR_V2 = Global("torch._utils", "_rebuild_tensor_v2")

# numpy dtype -> (torch storage class, safetensors dtype)
_DTYPES = {
    np.dtype(np.float32): ("FloatStorage", "F32"), np.dtype(np.float16): ("HalfStorage", "F16"),
    np.dtype(np.float64): ("DoubleStorage", "F64"), np.dtype(np.int64): ("LongStorage", "I64"),
    np.dtype(np.int32): ("IntStorage", "I32"), np.dtype(np.int16): ("ShortStorage", "I16"),
    np.dtype(np.int8): ("CharStorage", "I8"), np.dtype(np.uint8): ("ByteStorage", "U8"),
    np.dtype(np.bool_): ("BoolStorage", "BOOL"),
}
# One Global per storage class, so that repeated references pickle as memo gets, as in torch.
_STORAGE_CLASSES = {dtype: Global("torch", cls) for dtype, (cls, _) in _DTYPES.items()}
_SAFETENSORS_DTYPES = {st: dtype for dtype, (_, st) in _DTYPES.items()}


class Pickler(pickle._Pickler):
    """The pure-Python pickler, writing `Global`s as references and `persistent_id(obj)`'s ids."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, protocol=2, persistent_id=None):
        super().__init__(file, protocol)
        self._persistent_id = persistent_id

    def persistent_id(self, obj):
        return self._persistent_id(obj) if self._persistent_id else None

    def save_reference(self, obj):
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + ("%s\n%s\n" % (obj.module, obj.name)).encode("utf-8"))
        self.memoize(obj)

    dispatch[Global] = save_reference


def dumps(obj, protocol=2, persistent_id=None):
    out = io.BytesIO()
    Pickler(out, protocol, persistent_id).dump(obj)
    return out.getvalue()


class Call:
    """Pickles as `callee(*args)`: GLOBAL (or STACK_GLOBAL) + arguments + REDUCE."""

    def __init__(self, callee, *args):
        self.callee = callee
        self.args = args

    def __reduce__(self):
        return self.callee, self.args


# ---- State dicts as torch.save pickles them ---------------------------------------------------

class _Storage:
    def __init__(self, key, root):
        self.key = key
        self.root = root  # 1-D, C-contiguous

    @property
    def storage_class(self):
        return _STORAGE_CLASSES[self.root.dtype]


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        return REBUILD_TENSOR_V2, (self.storage, self.offset, self.shape, self.stride, False,
                                   collections.OrderedDict())


def _root(array):
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root


class _Storages:
    """Turns arrays into tensors, giving each root buffer one storage (keys from `keys`, a
    {tensor name: key} for the tensor that first uses the storage, else "0", "1", ...)."""

    def __init__(self, keys=None):
        self.keys = keys
        self.by_root = {}

    def tensor(self, name, value):
        array = np.asarray(value)
        if array.dtype not in _DTYPES:
            raise ValueError("%s: no torch storage for dtype %s" % (name, array.dtype))
        root = _root(array)
        itemsize = array.itemsize
        start = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        if (not root.flags.c_contiguous or root.dtype != array.dtype or start % itemsize
                or any(s < 0 or s % itemsize for s in array.strides)):
            root = array = np.ascontiguousarray(array)
            start = 0
        if id(root) not in self.by_root:
            key = self.keys[name] if self.keys else str(len(self.by_root))
            self.by_root[id(root)] = _Storage(key, root.reshape(-1))
        stride = tuple(s // itemsize for s in array.strides)
        return _Tensor(self.by_root[id(root)], start // itemsize, tuple(array.shape), stride)

    def convert(self, obj, name=""):
        """`obj` with every numpy array (in dicts, lists, tuples) replaced by a tensor."""
        if isinstance(obj, np.ndarray):
            return self.tensor(name, obj)
        if isinstance(obj, dict):
            converted = collections.OrderedDict((k, self.convert(v, k)) for k, v in obj.items())
            if hasattr(obj, "_metadata"):
                converted._metadata = obj._metadata
            return converted
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.convert(v, name) for v in obj)
        return obj

    @property
    def storages(self):
        return list(self.by_root.values())


def _raw(storage):
    return np.ascontiguousarray(storage.root, dtype=storage.root.dtype.newbyteorder("<")).tobytes()


def checkpoint_pickle(obj, legacy=False, keys=None, metadata=None, protocol=2):
    """(pickle bytes, [_Storage]) for `obj`, a state dict {name: array} or any picklable object
    holding arrays (e.g. {"epoch": 3, "state_dict": {...}}); values that are not arrays pickle as
    they are (`Call`s and `Global`s as their references). `metadata` becomes the top dict's
    _metadata attribute, as in a real state dict. Storages are persistent ids in the zip form or,
    with `legacy`, the legacy form."""
    storages = _Storages(keys)
    converted = storages.convert(obj)
    if metadata is not None:
        converted._metadata = metadata

    def persistent_id(item):
        if not isinstance(item, _Storage):
            return None
        pid = ("storage", item.storage_class, item.key, "cpu", item.root.size)
        return pid + (None,) if legacy else pid

    return dumps(converted, protocol, persistent_id), storages.storages


def write_zip(path, data_pkl, storages, archive=None, compress_pickle=False, align=64):
    """A zip-format checkpoint from data.pkl's bytes and {key: raw bytes}.

    Entries sit in a folder named `archive` (default: the file name up to its first dot, as torch
    names it) and are stored, as torch.save does (data.pkl deflated with `compress_pickle`), each
    one's data aligned to `align` bytes through padding in an extra field, as torch pads."""
    if archive is None:
        archive = os.path.basename(os.fspath(path)).split(".")[0] or "archive"

    def add(z, name, data, method=zipfile.ZIP_STORED):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = method
        if align and method == zipfile.ZIP_STORED:
            start = z.fp.tell() + 30 + len(name.encode("utf-8")) + 4
            info.extra = struct.pack("<HH", 0x4246, -start % align) + b"Z" * (-start % align)
        z.writestr(info, data)

    with zipfile.ZipFile(path, "w") as z:
        add(z, "%s/data.pkl" % archive, data_pkl, zipfile.ZIP_DEFLATED if compress_pickle else zipfile.ZIP_STORED)
        add(z, "%s/byteorder" % archive, b"little")
        for key, data in storages.items():
            add(z, "%s/data/%s" % (archive, key), data)
        add(z, "%s/version" % archive, b"3\n")


def save_zip(path, state_dict, archive=None, compress_pickle=False, metadata=None):
    """torch.save(state_dict, path): `state_dict` as checkpoint_pickle takes it."""
    data_pkl, storages = checkpoint_pickle(state_dict, metadata=metadata)
    write_zip(path, data_pkl, {s.key: _raw(s) for s in storages}, archive, compress_pickle)


def write_legacy(path, object_pkl, storages, header=None):
    """A legacy checkpoint: pickles of the magic number, protocol version and system info (or
    `header`, their bytes), `object_pkl`, the storage keys, then per storage {key: (element
    count, raw bytes)} an int64 element count and the bytes, in key order."""
    keys = sorted(storages)
    if header is None:
        header = dumps(LEGACY_MAGIC) + dumps(LEGACY_PROTOCOL) + dumps(LEGACY_SYS_INFO)
    with open(path, "wb") as f:
        f.write(header)
        f.write(object_pkl)
        f.write(dumps(keys))
        for key in keys:
            count, data = storages[key]
            f.write(struct.pack("<q", count) + data)


def save_legacy(path, state_dict, keys=None, metadata=None):
    """torch.save(state_dict, path, _use_new_zipfile_serialization=False), storage keys from `keys`
    ({tensor name: key} for the tensor that first uses each storage) or "0", "1", ..."""
    data_pkl, storages = checkpoint_pickle(state_dict, legacy=True, keys=keys, metadata=metadata)
    write_legacy(path, data_pkl, {s.key: (s.root.size, _raw(s)) for s in storages})


def save_safetensors(path, state_dict):
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name, value in state_dict.items():
        array = np.ascontiguousarray(value)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype][1], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    write_safetensors(path, header, b"".join(chunks))


def write_safetensors(path, header, data):
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + data)


# ---- Reading (restricted: only the names a state dict uses) -----------------------------------

class Checkpoint:
    def __init__(self, tensors, metadata, storage_keys):
        self.tensors = tensors            # OrderedDict name -> array: a view of its storage
        self.metadata = metadata          # the state dict's _metadata attribute, if any
        self.storage_keys = storage_keys  # name -> storage key


class _StorageRef:
    def __init__(self, dtype, key, count):
        self.dtype, self.key, self.count = dtype, key, count


class _PendingTensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return _PendingTensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


class _StorageClass:
    def __init__(self, dtype):
        self.dtype = dtype


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED.update({("torch", cls): _StorageClass(dtype) for dtype, (cls, _) in _DTYPES.items()})


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages=None):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError("refusing global %s.%s" % (module, name)) from None

    def persistent_load(self, pid):
        if self.storages is None:
            raise pickle.UnpicklingError("persistent id %r outside the state dict" % (pid,))
        kind, storage_class, key, _location, count = pid[:5]
        if kind != "storage" or not isinstance(storage_class, _StorageClass):
            raise pickle.UnpicklingError("malformed persistent id %r" % (pid,))
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported: %r" % (pid,))
        return self.storages.setdefault(key, _StorageRef(storage_class.dtype, key, count))


def _materialize(root, storage_refs, data):
    if not isinstance(root, dict):
        raise ValueError("the checkpoint does not hold a dict")
    flats = {key: np.frombuffer(data[key], dtype=ref.dtype.newbyteorder("<"), count=ref.count).astype(ref.dtype)
             for key, ref in storage_refs.items()}
    tensors = collections.OrderedDict()
    keys = {}
    for name, value in root.items():
        if not isinstance(value, _PendingTensor):
            continue
        flat = flats[value.storage.key]
        last = value.offset + sum((n - 1) * s for n, s in zip(value.shape, value.stride) if n > 0)
        if value.offset < 0 or any(s < 0 for s in value.stride) or (np.prod(value.shape) > 0 and last >= flat.size):
            raise ValueError("%s: view outside its storage" % name)
        # A view of the storage, so that writing it back keeps the storage, offset and strides.
        tensors[name] = np.ndarray(value.shape, flat.dtype, buffer=flat, offset=value.offset * flat.itemsize,
                                   strides=[s * flat.itemsize for s in value.stride])
        keys[name] = value.storage.key
    return Checkpoint(tensors, getattr(root, "_metadata", None), keys)


def read(path):
    """The state dict in a zip-format or legacy torch.save file, or in a .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            (pickle_name,) = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            prefix = pickle_name[:-len("data.pkl")]
            refs = {}
            root = _Unpickler(io.BytesIO(z.read(pickle_name)), refs).load()
            raw = {key: z.read("%sdata/%s" % (prefix, key)) for key in refs}
        return _materialize(root, refs, raw)
    if data[:1] == b"\x80":
        f = io.BytesIO(data)
        if _Unpickler(f).load() != LEGACY_MAGIC:
            raise ValueError("legacy checkpoint: wrong magic number")
        if _Unpickler(f).load() != LEGACY_PROTOCOL:
            raise ValueError("legacy checkpoint: wrong protocol version")
        if not _Unpickler(f).load().get("little_endian"):
            raise ValueError("legacy checkpoint: big-endian")
        refs = {}
        root = _Unpickler(f, refs).load()
        raw = {}
        for key in _Unpickler(f).load():
            (count,) = struct.unpack("<q", f.read(8))
            raw[key] = f.read(count * refs[key].dtype.itemsize)
        return _materialize(root, refs, raw)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    tensors = collections.OrderedDict()
    for name, entry in sorted(((n, e) for n, e in header.items() if n != "__metadata__"),
                              key=lambda item: item[1]["data_offsets"][0]):
        begin, end = entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        chunk = data[8 + length + begin:8 + length + end]
        tensors[name] = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(entry["shape"])
    return Checkpoint(tensors, header.get("__metadata__"), {name: name for name in tensors})
