"""Model files with hostile graphs and valid checksums: every integer attribute of every operator
set to 0, -1 and a huge value, written with the binding's own writer, must be refused with
CG_ERR_MODEL_FORMAT and a message naming the node and the attribute, never crash the process.

A checksum only proves a file was not damaged; whoever wrote it may be hostile (docs/security.md).
Each load runs in a child process, so a crash fails the one case instead of the whole suite.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

import covergenre
from covergenre import _lib, cgm

HUGE = 2**31 - 1  # the largest integer a graph attribute may be written as
BEYOND = 2**40    # past that: refused by the JSON reader itself

# (architecture and `covergenre create` options, operator, attribute, how to set it on a node)
CASES = []


def _setter(key, index=None):
    def put(node, value):
        if index is None:
            node[key] = value
        else:
            node[key] = list(node[key])
            node[key][index] = value
    return put


def _padding(index):
    def put(node, value):
        padding = node["padding"] if isinstance(node["padding"], list) else [1, 1, 1, 1]
        padding = list(padding)
        padding[index] = value
        node["padding"] = padding
    return put


ATTRIBUTES = {
    "conv2d": [("kernel", _setter("kernel", 0)), ("kernel", _setter("kernel", 1)), ("stride", _setter("stride", 0)),
               ("stride", _setter("stride", 1)), ("padding", _padding(0)), ("padding", _padding(3)),
               ("groups", _setter("groups")), ("out_channels", _setter("out_channels"))],
    "maxpool": [("kernel", _setter("kernel", 0)), ("stride", _setter("stride", 1)), ("padding", _padding(2))],
    "linear": [("out_features", _setter("out_features"))],
    "adaptive_avgpool": [("output_size", _setter("output_size", 0)), ("output_size", _setter("output_size", 1))],
}
ARCHS = {
    "conv2d": ("baseline-cnn", "--width-divisor", "8", "--input-size", "32"),
    "maxpool": ("baseline-cnn", "--width-divisor", "8", "--input-size", "32"),
    "linear": ("baseline-cnn", "--width-divisor", "8", "--input-size", "32"),
    "adaptive_avgpool": ("vgg16", "--width-divisor", "32", "--input-size", "32"),
}
for op, attributes in ATTRIBUTES.items():
    for attribute, put in attributes:
        for value in (0, -1, HUGE, BEYOND):
            CASES.append(pytest.param(op, attribute, put, value, id="%s-%s-%s" % (op, attribute, value)))

# Loading a file in a fresh interpreter: prints the status name and message, or OK.
_CHILD = """
import sys
sys.path.insert(0, %r)
import covergenre
try:
    covergenre.Model(sys.argv[1]).close()
    print("OK")
except covergenre.CoverGenreError as e:
    print(e.status_name)
    print(e.message)
"""


def _load_in_child(path):
    bindings = str(__import__("pathlib").Path(covergenre.__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", _CHILD % bindings, str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 0, "the load killed the process (%d): %s" % (done.returncode, done.stderr[-500:])
    lines = done.stdout.splitlines()
    return lines[0], "\n".join(lines[1:])


@pytest.fixture(scope="module")
def base_models(create_model):
    return {op: cgm.read(create_model(*ARCHS[op])) for op in ARCHS}


@pytest.mark.parametrize("op,attribute,put,value", CASES)
def test_hostile_attribute_is_refused(base_models, tmp_path, lib, op, attribute, put, value):
    metadata, tensors = base_models[op]
    metadata = copy.deepcopy(metadata)
    node = next(n for n in metadata["graph"]["nodes"] if n["op"] == op)
    put(node, value)
    path = tmp_path / "hostile.cgm"
    cgm.write(path, metadata, tensors)
    # The file itself is sound: the binding's reader verifies its checksum.
    cgm.read(path)
    status, message = _load_in_child(path)
    if attribute == "padding" and value == 0:
        # No padding is legal; the graph may still end up too small further on: loaded, or refused
        # cleanly wherever the shapes stop fitting.
        assert status in ("OK", "CG_ERR_MODEL_FORMAT"), (status, message)
        return
    assert status == "CG_ERR_MODEL_FORMAT", (status, message)
    assert node["name"] in message and attribute in message, message


@pytest.mark.parametrize("value", [0, -1, HUGE, BEYOND])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hostile_input_shape_is_refused(base_models, tmp_path, lib, axis, value):
    metadata, tensors = copy.deepcopy(base_models["conv2d"][0]), base_models["conv2d"][1]
    metadata["graph"]["input_shape"][axis] = value
    path = tmp_path / "hostile.cgm"
    cgm.write(path, metadata, tensors)
    status, message = _load_in_child(path)
    assert status in ("CG_ERR_MODEL_FORMAT", "CG_ERR_LIMIT_EXCEEDED"), (status, message)
    assert "input" in message, message


def test_stride_zero_in_the_default_model_is_refused(tmp_path, lib):
    """The issue's reproduction: the shipped model with its first convolution's stride set to 0."""
    default = __import__("pathlib").Path(__file__).resolve().parents[3] / "models" / "covergenre-default.cgm"
    metadata, tensors = cgm.read(default)
    first = next(n for n in metadata["graph"]["nodes"] if n["op"] == "conv2d")
    first["stride"] = [0, 0]
    path = tmp_path / "stride0.cgm"
    cgm.write(path, metadata, tensors, dtype="f16")
    status, message = _load_in_child(path)
    assert status == "CG_ERR_MODEL_FORMAT", (status, message)
    assert first["name"] in message and "stride" in message, message
