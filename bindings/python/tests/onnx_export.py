"""Translates a .cgm model (as read by covergenre.cgm) into an ONNX model with the same weights.

A test helper, not part of the package: ONNX Runtime runs the result as an independent reference
for the engine (tests/test_parity_onnx.py), and benchmarks can reuse it.

    metadata, tensors = cgm.read("model.cgm")
    model = to_onnx(metadata, tensors)        # input "input": float32 NHWC, batch dynamic
    logits = run(model, x)                     # {"logits": (N, classes), "embedding": ...}

Every value inside the ONNX graph is NCHW. The .cgm semantics this encodes, from
docs/model-format.md ("The graph"):
- conv2d weights are [KH, KW, Cin/groups, Cout]; ONNX wants [Cout, Cin/groups, KH, KW].
- "same" padding is TensorFlow's: output ceil(in / stride), the odd pixel at the bottom/right.
  It becomes explicit ONNX pads (ONNX's SAME_UPPER is not used, to keep the rule visible here).
- vectors are 1 x 1 x C and flatten walks (H, W, C): back to NHWC before flattening.
- linear weights are [in, out]: a plain MatMul.
- adaptive_avgpool uses PyTorch's bins: [floor(i * in / out), ceil((i + 1) * in / out)).
- channel_stats is the per-channel mean, then the population standard deviation.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
INPUT = "input"


def resolve_padding(padding, size, kernel, stride):
    """(output, before, after) for one axis; `padding` is "same", "valid" or (before, after)."""
    if padding == "valid":
        return ((size - kernel) // stride + 1 if size >= kernel else 0), 0, 0
    if padding == "same":
        output = -(-size // stride)
        total = max((output - 1) * stride + kernel - size, 0)
        return output, total // 2, total - total // 2
    before, after = padding
    padded = size + before + after
    return ((padded - kernel) // stride + 1 if padded >= kernel else 0), before, after


def window(padding, height, width, kernel, stride):
    """(out_h, out_w, [top, left, bottom, right]) for a conv/pool node's attributes."""
    if isinstance(padding, str):
        vertical = horizontal = padding
    else:
        top, bottom, left, right = padding
        vertical, horizontal = (top, bottom), (left, right)
    out_h, top, bottom = resolve_padding(vertical, height, kernel[0], stride[0])
    out_w, left, right = resolve_padding(horizontal, width, kernel[1], stride[1])
    return out_h, out_w, [top, left, bottom, right]


def adaptive_bins(size, output):
    """PyTorch AdaptiveAvgPool's [start, end) bins along one axis."""
    return [(i * size // output, -(-(i + 1) * size // output)) for i in range(output)]


def adaptive_matrix(size, output):
    """(output, size) matrix whose row i averages bin i: pooling one axis is a MatMul with it."""
    m = np.zeros((output, size), dtype=np.float32)
    for i, (start, end) in enumerate(adaptive_bins(size, output)):
        m[i, start:end] = 1.0 / (end - start)
    return m


class _Builder:
    def __init__(self, tensors):
        self.tensors = tensors
        self.nodes = []
        self.initializers = []
        self.count = 0

    def fresh(self, hint):
        self.count += 1
        return "%s__%d" % (hint.replace("/", "_"), self.count)

    def const(self, hint, array):
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name, transform=None):
        array = np.asarray(self.tensors[name], dtype=np.float32)
        return self.const(name, transform(array) if transform else array)

    def op(self, op_type, inputs, hint, output=None, **attributes):
        output = output or self.fresh(hint + "." + op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=self.fresh(hint), **attributes))
        return output

    def activation(self, x, kind, hint):
        if kind in (None, "none"):
            return x
        if kind == "relu":
            return self.op("Relu", [x], hint)
        if kind == "relu6":
            low = self.const("zero", np.array(0.0, dtype=np.float32))
            high = self.const("six", np.array(6.0, dtype=np.float32))
            return self.op("Clip", [x, low, high], hint)
        raise ValueError("unknown activation %r" % kind)

    def quantized_input(self, x, node, channels, hint):
        """An int8 layer's input as it reads it (docs/model-format.md): x times 1 / (s x m[c]),
        rounded half to even and clamped by QuantizeLinear (scale 1, zero point z), back to
        (q - z) by DequantizeLinear; the scale s goes into the weights (`quantized_scale`)."""
        q = node.get("input_quantization")
        if not q:
            return x
        s = np.float32(q["scale"])
        if q.get("channel_scales"):
            # Computed as the library does: 1 / (s * m) in float32, one value per channel.
            inverse = (np.float32(1) / (s * np.asarray(self.tensors[q["channel_scales"]], dtype=np.float32))).astype(np.float32)
            inverse = inverse.reshape(1, channels, 1, 1)
        else:
            inverse = np.array(np.float32(1) / s, dtype=np.float32)
        scaled = self.op("Mul", [x, self.const(hint + ".inverse_scale", inverse)], hint)
        one = self.const(hint + ".one", np.array(1.0, dtype=np.float32))
        zero = self.const(hint + ".zero_point", np.array(q["zero_point"], dtype=np.uint8))
        return self.op("DequantizeLinear", [self.op("QuantizeLinear", [scaled, one, zero], hint), one, zero], hint)

    def to_vector(self, x, features, hint):
        """[N, C, 1, 1] -> [N, C]."""
        return self.op("Reshape", [x, self.const("shape", np.array([-1, features], dtype=np.int64))], hint)

    def to_map(self, x, hint):
        """[N, C] -> [N, C, 1, 1]."""
        return self.op("Unsqueeze", [x, self.const("axes", np.array([2, 3], dtype=np.int64))], hint)


def to_onnx(metadata, tensors, input_layout="NHWC"):
    """An onnx.ModelProto computing the graph in metadata["graph"] with `tensors`' weights.

    Input "input": float32 [N, H, W, C] (or [N, C, H, W] with input_layout="NCHW", the form an
    ONNX user would export, which benchmarks use). Outputs "logits" [N, classes] and, when the
    graph names one, "embedding" [N, features].
    """
    graph = metadata["graph"]
    height, width, channels = graph["input_shape"]
    b = _Builder(tensors)
    first = INPUT if input_layout == "NCHW" else b.op("Transpose", [INPUT], "input", perm=[0, 3, 1, 2])
    # name -> (ONNX value, (H, W, C) of the .cgm activation)
    values = {graph["input"]: (first, (height, width, channels))}

    for node in graph["nodes"]:
        name, op = node["name"], node["op"]
        inputs = [values[i] for i in node["inputs"]]
        x, (h, w, c) = inputs[0]
        if op == "conv2d":
            kernel, stride, groups = node["kernel"], node["stride"], node["groups"]
            out_h, out_w, pads = window(node["padding"], h, w, kernel, stride)
            # An int8 layer multiplies (q - z) by s x its weights: s folded into them here.
            s = np.float32(node["input_quantization"]["scale"]) if node.get("input_quantization") else np.float32(1)
            x = b.quantized_input(x, node, c, name)
            conv_inputs = [x, b.weight(node["weight"], lambda a: np.ascontiguousarray((a * s).transpose(3, 2, 0, 1)))]
            if node.get("bias"):
                conv_inputs.append(b.weight(node["bias"]))
            y = b.op("Conv", conv_inputs, name, kernel_shape=list(kernel), strides=list(stride), pads=pads,
                     group=groups, dilations=[1, 1])
            y = b.activation(y, node["activation"], name)
            shape = (out_h, out_w, node["out_channels"])
        elif op == "linear":
            assert (h, w) == (1, 1), "%s: linear needs a vector input" % name
            s = np.float32(node["input_quantization"]["scale"]) if node.get("input_quantization") else np.float32(1)
            x = b.quantized_input(x, node, c, name)
            y = b.op("MatMul", [b.to_vector(x, c, name), b.weight(node["weight"], lambda a: a * s)], name)
            if node.get("bias"):
                y = b.op("Add", [y, b.weight(node["bias"])], name)
            y = b.to_map(b.activation(y, node["activation"], name), name)
            shape = (1, 1, node["out_features"])
        elif op == "batchnorm":
            y = b.op("BatchNormalization", [x] + [b.weight(node[k]) for k in ("gamma", "beta", "mean", "variance")],
                     name, epsilon=float(node["epsilon"]))
            y = b.activation(y, node["activation"], name)
            shape = (h, w, c)
        elif op == "maxpool":
            kernel, stride = node["kernel"], node["stride"]
            out_h, out_w, pads = window(node["padding"], h, w, kernel, stride)
            # ONNX MaxPool never lets padding win the max, as the format says.
            y = b.op("MaxPool", [x], name, kernel_shape=list(kernel), strides=list(stride), pads=pads)
            shape = (out_h, out_w, c)
        elif op == "global_avgpool":
            y = b.op("GlobalAveragePool", [x], name)
            shape = (1, 1, c)
        elif op == "adaptive_avgpool":
            out_h, out_w = node["output_size"]
            # Bins are rectangles, so the 2-D bin mean is the row mean of the column means.
            y = b.op("MatMul", [x, b.const("pool_w", adaptive_matrix(w, out_w).T.copy())], name)
            y = b.op("MatMul", [b.const("pool_h", adaptive_matrix(h, out_h)), y], name)
            shape = (out_h, out_w, c)
        elif op == "channel_stats":
            mean = b.op("ReduceMean", [x], name, axes=[2, 3], keepdims=1)
            centred = b.op("Sub", [x, mean], name)
            variance = b.op("ReduceMean", [b.op("Mul", [centred, centred], name)], name, axes=[2, 3], keepdims=1)
            y = b.op("Concat", [mean, b.op("Sqrt", [variance], name)], name, axis=1)
            shape = (1, 1, 2 * c)
        elif op == "concat":
            assert all(s[:2] == (h, w) for _, s in inputs), "%s: concat inputs differ in size" % name
            y = b.op("Concat", [v for v, _ in inputs], name, axis=1)
            shape = (h, w, sum(s[2] for _, s in inputs))
        elif op == "add":
            assert inputs[1][1] == (h, w, c), "%s: add inputs differ" % name
            y = b.activation(b.op("Add", [x, inputs[1][0]], name), node["activation"], name)
            shape = (h, w, c)
        elif op == "activation":
            y = b.activation(x, node["activation"], name)
            shape = (h, w, c)
        elif op == "flatten":
            nhwc = b.op("Transpose", [x], name, perm=[0, 2, 3, 1])
            y = b.to_map(b.to_vector(nhwc, h * w * c, name), name)
            shape = (1, 1, h * w * c)
        elif op == "dropout":
            y = x
            shape = (h, w, c)
        elif op == "softmax":
            y = b.op("Softmax", [x], name, axis=1)
            shape = (h, w, c)
        else:
            raise ValueError("%s: unknown op %r" % (name, op))
        values[name] = (y, shape)

    outputs = []
    for output, key in (("logits", "logits"), ("embedding", "embedding")):
        if not graph.get(key):
            continue
        value, (h, w, c) = values[graph[key]]
        assert (h, w) == (1, 1), "%s is not a vector" % graph[key]
        b.op("Reshape", [value, b.const("shape", np.array([-1, c], dtype=np.int64))], output, output=output)
        outputs.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", c]))

    onnx_graph = helper.make_graph(
        b.nodes, metadata.get("name", "covergenre"),
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", height, width, channels] if input_layout == "NHWC"
                                       else ["batch", channels, height, width])],
        outputs, initializer=b.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="covergenre-tests")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def session(model, threads=2):
    """An ONNX Runtime session that runs the graph as written (no fusions), on `threads` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model, x, threads=2):
    """{output name: array} for float32 NHWC input `x`."""
    s = session(model, threads)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, {INPUT: np.ascontiguousarray(x, dtype=np.float32)})))


def preprocessed_input(metadata, batch, seed=0):
    """Random covers as the engine would see them: uint8 RGB pixels normalized with the model's
    mean and std, NHWC float32. Realistic in scale, unlike unit Gaussians."""
    height, width, channels = metadata["graph"]["input_shape"]
    pre = metadata.get("preprocess", {})
    mean = np.asarray(pre.get("mean", [0.5] * channels), dtype=np.float32)
    std = np.asarray(pre.get("std", [0.5] * channels), dtype=np.float32)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(batch, height, width, channels), dtype=np.uint8)
    return ((pixels.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
