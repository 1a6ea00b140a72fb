"""Hand-written .cgm graphs for tests: (metadata, tensors) pairs that cgm.write turns into files.

The built-in architectures use only conv2d, maxpool, pooling, add, flatten, linear and dropout;
these graphs reach every other operator and attribute form the format documents.
"""

from __future__ import annotations

import numpy as np


class GraphBuilder:
    def __init__(self, input_shape, seed):
        self.rng = np.random.default_rng(seed)
        self.input_shape = list(input_shape)
        self.nodes = []
        self.tensors = {}

    def weight(self, name, shape, fan_in):
        # He-style scale keeps activations near unit size through the graph.
        self.tensors[name] = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return name

    def node(self, name, op, inputs, **attributes):
        self.nodes.append(dict(name=name, op=op, inputs=list(inputs), **attributes))
        return name

    def conv(self, name, x, cin, cout, kernel, stride, padding, groups=1, activation="none", bias=True):
        weight = self.weight(name + ".weight", (kernel[0], kernel[1], cin // groups, cout),
                             kernel[0] * kernel[1] * cin // groups)
        extra = {}
        if bias:
            extra["bias"] = self.weight(name + ".bias", (cout,), 1)
        return self.node(name, "conv2d", [x], kernel=list(kernel), stride=list(stride), padding=padding,
                         groups=groups, out_channels=cout, activation=activation, weight=weight, **extra)

    def linear(self, name, x, fin, fout, activation="none", bias=True):
        extra = {}
        if bias:
            extra["bias"] = self.weight(name + ".bias", (fout,), 1)
        return self.node(name, "linear", [x], out_features=fout, activation=activation,
                         weight=self.weight(name + ".weight", (fin, fout), fin), **extra)

    def batchnorm(self, name, x, channels, activation="none", epsilon=1e-3):
        t = self.tensors
        t[name + ".gamma"] = self.rng.uniform(0.5, 1.5, channels).astype(np.float32)
        t[name + ".beta"] = self.rng.uniform(-0.5, 0.5, channels).astype(np.float32)
        t[name + ".mean"] = self.rng.uniform(-0.5, 0.5, channels).astype(np.float32)
        t[name + ".variance"] = self.rng.uniform(0.5, 2.0, channels).astype(np.float32)
        return self.node(name, "batchnorm", [x], epsilon=epsilon, activation=activation, gamma=name + ".gamma",
                         beta=name + ".beta", mean=name + ".mean", variance=name + ".variance")

    def metadata(self, name, labels, logits, embedding=None, resize="stretch", flip_average=False):
        graph = dict(input="image", input_shape=self.input_shape, nodes=self.nodes, logits=logits)
        if embedding:
            graph["embedding"] = embedding
        return {
            "format": "covergenre-model",
            "name": name,
            "architecture": "custom",
            "labels": list(labels),
            "preprocess": {"resize": resize, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "flip_average": flip_average},
            "graph": graph,
            "provenance": {"created_by": "covergenre python tests"},
        }


def every_op(seed=3):
    """Odd, non-square input; explicit asymmetric, SAME and VALID padding; grouped and depthwise
    convolutions; maxpool whose SAME padding meets negative inputs; batchnorm, concat, add,
    activation, channel_stats, adaptive pooling to a size that does not divide, global pooling,
    flatten, dropout and linear layers with each activation."""
    g = GraphBuilder((19, 23, 3), seed)
    pool = g.node("pool_in", "maxpool", ["image"], kernel=[3, 3], stride=[2, 2], padding="same")  # 10x12x3
    wide = g.conv("wide", "image", 3, 8, (3, 5), (2, 1), [0, 2, 1, 3], activation="relu6")  # 10x23x8
    same = g.conv("same", "image", 3, 8, (3, 3), (2, 2), "same", activation="relu")  # 10x12x8
    cat = g.node("cat", "concat", [pool, same])  # 10x12x11
    bn = g.batchnorm("bn", cat, 11, activation="relu6")
    dw = g.conv("dw", bn, 11, 11, (3, 3), (1, 1), "valid", groups=11, bias=False)  # 8x10x11
    pw = g.conv("pw", bn, 11, 11, (3, 3), (1, 1), [0, 0, 0, 0])  # 8x10x11
    add = g.node("add", "add", [dw, pw], activation="relu")
    grouped = g.conv("grouped", wide, 8, 6, (2, 2), (2, 2), "valid", groups=2)  # 5x11x6
    act = g.node("act", "activation", [grouped], activation="relu6")
    stats = g.node("stats", "channel_stats", [add])  # 1x1x22
    adaptive = g.node("adaptive", "adaptive_avgpool", [act], output_size=[3, 4])  # 3x4x6
    flat = g.node("flat", "flatten", [adaptive])  # 1x1x72
    gap = g.node("gap", "global_avgpool", [add])  # 1x1x11
    # Padding as wide as the window leaves corner windows with a single real (often negative)
    # pixel: a pool that let zero padding win would change this mean.
    edges = g.node("edges", "maxpool", ["image"], kernel=[3, 3], stride=[1, 1], padding=[2, 2, 2, 2])  # 21x25x3
    edge_mean = g.node("edge_mean", "global_avgpool", [edges])  # 1x1x3
    features = g.node("features", "concat", [stats, gap, flat, edge_mean])  # 1x1x108
    fc1 = g.linear("fc1", features, 108, 16, activation="relu")
    drop = g.node("drop", "dropout", [fc1], rate=0.25)
    fc2 = g.linear("fc2", drop, 16, 5, bias=False)
    return g.metadata("every-op", ["Rock", "Pop", "Jazz", "HipHop", "Folk"], fc2, embedding=fc1), g.tensors


def softmax_head(seed=5, flip_average=True):
    """A per-pixel channel softmax, adaptive pooling that upsamples (5x5 -> 7x7), an explicitly
    padded maxpool, relu6 linear layer, and a softmax node as the logits."""
    g = GraphBuilder((12, 12, 3), seed)
    conv = g.conv("conv", "image", 3, 4, (3, 3), (2, 2), "valid")  # 5x5x4
    soft = g.node("pixel_softmax", "softmax", [conv])
    up = g.node("up", "adaptive_avgpool", [soft], output_size=[7, 7])
    pool = g.node("pool", "maxpool", [up], kernel=[2, 2], stride=[1, 1], padding=[1, 0, 0, 1])  # 7x7x4
    flat = g.node("flat", "flatten", [pool])  # 1x1x196
    hidden = g.linear("hidden", flat, 196, 12, activation="relu6")
    scores = g.linear("scores", hidden, 12, 3)
    out = g.node("probabilities", "softmax", [scores])
    metadata = g.metadata("softmax-head", ["Blues", "Metal", "Soul"], out, embedding=hidden,
                          flip_average=flip_average)
    return metadata, g.tensors


def tiny(seed=6):
    """The smallest useful model: 8x8 input, one convolution, global pooling, one linear layer."""
    g = GraphBuilder((8, 8, 3), seed)
    conv = g.conv("conv", "image", 3, 4, (3, 3), (1, 1), "same", activation="relu")
    gap = g.node("gap", "global_avgpool", [conv])
    fc = g.linear("fc", gap, 4, 2)
    return g.metadata("tiny", ["Indie", "Opera"], fc, embedding=gap), g.tensors
