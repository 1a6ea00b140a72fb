#!/usr/bin/env bash
# Seed corpora for fuzz/run.sh, made by the project's own tools (no third-party files).
set -euo pipefail
cd "$(dirname "$0")/.."
cli=build/bin/covergenre
python=.venv/bin/python
[ -x "$python" ] || python=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p fuzz/corpus-{model,image,torch,safetensors,csv,json,metadata,multipart,audio}
# Images: the three example covers at a small size, plus small PNG variants.
$cli make-examples --size 48 "$tmp/images" >/dev/null
cp "$tmp"/images/* fuzz/corpus-image/
# Models: tiny architectures, f32 and f16.
$cli create --arch baseline-cnn --labels a,b,c --input-size 32 --width-divisor 16 --out fuzz/corpus-model/cnn.cgm >/dev/null
$cli create --arch vgg16 --labels a,b --input-size 32 --width-divisor 32 --storage f16 --out fuzz/corpus-model/vgg.cgm >/dev/null
# int8 (format version 2): every layer but the first quantized, with and without balanced channels.
$cli quantize fuzz/corpus-model/cnn.cgm --calibration "$tmp/images" --layers all --balance off --images 3 \
    --out fuzz/corpus-model/cnn-int8.cgm >/dev/null
$cli quantize fuzz/corpus-model/cnn.cgm --calibration "$tmp/images" --layers all --balance on --images 3 \
    --out fuzz/corpus-model/cnn-int8-balanced.cgm >/dev/null
# An int8 depthwise convolution between int8 1x1 convolutions (bytes between layers, 16-bit
# weights, channel scales): a float model of that shape written with the Python module (the
# baseline CNN's metadata, another graph), then quantized.
PYTHONPATH=bindings/python "$python" - "$tmp/tiny-dw.cgm" <<'PY'
import sys
import numpy as np
from covergenre import cgm
metadata, _ = cgm.read("fuzz/corpus-model/cnn.cgm")
metadata["labels"] = ["a", "b"]
s = metadata["graph"]["input_shape"]
c = s[2] if isinstance(s, list) else 3
def conv(name, inputs, k, out, groups=1, stride=1, act="relu6", bias=True):
    node = {"name": name, "op": "conv2d", "inputs": [inputs], "kernel": [k, k], "stride": [stride, stride], "padding": [k // 2] * 4,
            "groups": groups, "out_channels": out, "activation": act, "weight": name + ".w"}
    if bias:
        node["bias"] = name + ".b"
    return node
metadata["graph"]["nodes"] = [conv("expand", "image", 1, 8), conv("dw", "expand", 3, 8, groups=8, stride=2),
                              conv("project", "dw", 1, 4, act="none"),
                              {"name": "pool", "op": "global_avgpool", "inputs": ["project"]},
                              {"name": "fc", "op": "linear", "inputs": ["pool"], "out_features": 2, "activation": "none",
                               "weight": "fc.w", "bias": "fc.b"}]
metadata["graph"]["logits"] = "fc"
metadata["graph"].pop("embedding", None)
rng = np.random.default_rng(1)
t = {"expand.w": rng.standard_normal((1, 1, c, 8)), "expand.b": rng.standard_normal(8), "dw.w": rng.standard_normal((3, 3, 1, 8)),
     "dw.b": rng.standard_normal(8), "project.w": rng.standard_normal((1, 1, 8, 4)), "project.b": rng.standard_normal(4),
     "fc.w": rng.standard_normal((4, 2)), "fc.b": rng.standard_normal(2)}
open(sys.argv[1], "wb").write(cgm.serialize(metadata, {k: v.astype(np.float32) for k, v in t.items()}))
PY
$cli quantize "$tmp/tiny-dw.cgm" --calibration "$tmp/images" --images 3 --out fuzz/corpus-model/depthwise-int8.cgm >/dev/null
# Checkpoints, safetensors, CSV and JSON: written with the Python test helpers.
PYTHONPATH=bindings/python/tests "$python" - <<'PY'
import json, pathlib
import numpy as np
import torch_format
out = pathlib.Path("fuzz")
rng = np.random.default_rng(0)
def f(*shape):
    return rng.standard_normal(shape).astype(np.float32)
lite = {"_conv_stem.weight": f(8, 3, 3, 3), "_blocks.0._depthwise_conv.weight": f(8, 1, 3, 3),
        "_blocks.0._project_conv.weight": f(4, 8, 1, 1), "_conv_head.weight": f(16, 4, 1, 1),
        "_fc.weight": f(2, 16), "_fc.bias": f(2)}
for name in ["_bn0", "_blocks.0._bn1", "_blocks.0._bn2", "_bn1"]:
    c = {"_bn0": 8, "_blocks.0._bn1": 8, "_blocks.0._bn2": 4, "_bn1": 16}[name]
    for k in ["weight", "bias", "running_mean"]:
        lite[name + "." + k] = f(c)
    lite[name + ".running_var"] = np.abs(f(c)) + 0.5
torch_format.save_zip(out / "corpus-torch" / "lite-zip.pth", lite)
torch_format.save_legacy(out / "corpus-torch" / "lite-legacy.pth", lite)
torch_format.save_safetensors(out / "corpus-safetensors" / "lite.safetensors", lite)
(out / "corpus-csv" / "manifest.csv").write_text('path,genre,split\nRock/a.jpg,Rock,train\n"Pop/b, c.png","R&B",test\n')
(out / "corpus-csv" / "mumu.csv").write_text("amazon_id,album_mbid,MSD_track_id,recording_mbid,artist_mbid,genres\nB1,m1,t,r,a,Rap & Hip-Hop\n")
(out / "corpus-json" / "meta.json").write_text(json.dumps({"format": "covergenre-model", "labels": ["a", "é"], "x": [1, 2.5e-3, None, True]}))
record = {"amazon_id": "B1", "imUrl": "http://127.0.0.1/x.jpg", "title": "t", "categories": [["CDs"]], "salesRank": {}, "related": {}}
(out / "corpus-metadata" / "lines.json").write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
(out / "corpus-metadata" / "array.json").write_text(json.dumps([record, {"amazon_id": "B2"}]))
# Multipart: the Content-Type line, then the body (Sources/Fuzz/Harnesses.swift).
def form(boundary, parts, quoted=False):
    head = 'multipart/form-data; boundary=%s' % ('"%s"' % boundary if quoted else boundary)
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + h.encode() + b"\r\n\r\n" + data + b"\r\n" for h, data in parts)
    return head.encode() + b"\n" + body + b"--" + boundary.encode() + b"--\r\n"
(out / "corpus-multipart" / "two-files").write_bytes(form("XyZ", [
    ('Content-Disposition: form-data; name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg', b"\xff\xd8\xff\xe0 jpeg"),
    ('Content-Disposition: form-data; name="image"; filename="b.png"\r\nContent-Type: image/png', b"\x89PNG\r\n\x1a\n")]))
(out / "corpus-multipart" / "quoted-field").write_bytes(form("a b", [('Content-Disposition: form-data; name="top_k"', b"3")], quoted=True))
(out / "corpus-multipart" / "crlf-in-body").write_bytes(form("B", [('Content-Disposition: form-data; name="f"; filename="x"', b"a\r\n--C\r\nb")]))
PY
# Audio: every format's cover, two pictures, none, numeric genres (Tests/audio/make_audio.py,
# mutagen and ffmpeg); the hostile ones are regressions (fuzz/regressions/audio), not seeds.
"$python" Tests/audio/make_audio.py "$tmp/audio" >/dev/null
for f in cover.m4a cover.opus cover.flac cover.ogg cover.mp3 two_pictures.mp3 two_pictures.flac two_pictures.ogg no_picture.m4a \
         no_picture.mp3 id3v1_genre.mp3 id3v23_numeric_genre.mp3; do
    cp "$tmp/audio/$f" fuzz/corpus-audio/
done
