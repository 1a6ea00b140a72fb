"""Builds a PyTorch module computing a .cgm graph with the same weights (NCHW), for the benchmark's
PyTorch rows. Benchmark-only: PyTorch is never a dependency of the library or its tests.

The semantics follow docs/model-format.md, as bindings/python/tests/onnx_export.py does for ONNX.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _pads(padding, size, kernel, stride):
    if padding == "valid":
        return 0, 0
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    return padding


class CgmModule(torch.nn.Module):
    def __init__(self, metadata, tensors, trainable=False):
        super().__init__()
        self.graph = metadata["graph"]
        self.params = torch.nn.ParameterDict()
        for node in self.graph["nodes"]:
            for key in ("weight", "bias", "gamma", "beta", "mean", "variance"):
                name = node.get(key)
                if not name or name.replace(".", "_") in self.params:
                    continue
                a = np.asarray(tensors[name], dtype=np.float32)
                if node["op"] == "conv2d" and key == "weight":
                    a = a.transpose(3, 2, 0, 1)       # [KH, KW, I, O] -> [O, I, KH, KW]
                elif node["op"] == "linear" and key == "weight":
                    a = a.T                             # [in, out] -> [out, in]
                self.params[name.replace(".", "_")] = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)),
                                                                         requires_grad=trainable)

    def p(self, name):
        return self.params[name.replace(".", "_")]

    @staticmethod
    def act(x, name):
        return F.relu(x) if name == "relu" else F.relu6(x) if name == "relu6" else x

    def forward(self, x):
        g = self.graph
        values = {g["input"]: x}
        for node in g["nodes"]:
            op, y = node["op"], None
            x = values[node["inputs"][0]]
            if op == "conv2d":
                (kh, kw), (sh, sw) = node["kernel"], node["stride"]
                if node["padding"] in ("same", "valid"):
                    t, b_ = _pads(node["padding"], x.shape[2], kh, sh)
                    l, r = _pads(node["padding"], x.shape[3], kw, sw)
                else:
                    t, b_, l, r = node["padding"]
                if t == b_ and l == r:
                    y = F.conv2d(x, self.p(node["weight"]), self.p(node["bias"]) if node.get("bias") else None,
                                 (sh, sw), (t, l), 1, node["groups"])
                else:
                    y = F.conv2d(F.pad(x, (l, r, t, b_)), self.p(node["weight"]),
                                 self.p(node["bias"]) if node.get("bias") else None, (sh, sw), 0, 1, node["groups"])
                y = self.act(y, node["activation"])
            elif op == "linear":
                y = self.act(F.linear(x.flatten(1), self.p(node["weight"]),
                                      self.p(node["bias"]) if node.get("bias") else None), node["activation"])
                y = y[:, :, None, None]
            elif op == "batchnorm":
                y = self.act(F.batch_norm(x, self.p(node["mean"]), self.p(node["variance"]), self.p(node["gamma"]),
                                          self.p(node["beta"]), False, 0.0, node["epsilon"]), node["activation"])
            elif op == "maxpool":
                (kh, kw), (sh, sw) = node["kernel"], node["stride"]
                y = F.max_pool2d(x, (kh, kw), (sh, sw))
            elif op == "global_avgpool":
                y = x.mean(dim=(2, 3), keepdim=True)
            elif op == "adaptive_avgpool":
                y = F.adaptive_avg_pool2d(x, node["output_size"])
            elif op == "flatten":
                y = x.permute(0, 2, 3, 1).flatten(1)[:, :, None, None]
            elif op == "add":
                y = self.act(x + values[node["inputs"][1]], node["activation"])
            elif op == "dropout":
                y = F.dropout(x, node["rate"], self.training)
            elif op == "activation":
                y = self.act(x, node["activation"])
            else:
                raise ValueError("torch_export: op %s is not needed by the benchmark models" % op)
            values[node["name"]] = y
        return values[g["logits"]].flatten(1)
