"""The engine against ONNX Runtime: the same weights, the same input, logits within 1e-4.

Each model is made by `covergenre create` (or by cgm.write for the hand-written graphs), read
with covergenre.cgm, translated to ONNX by onnx_export.py, and run by both. Inputs are random
uint8 covers normalized as the model's metadata says, so activations have the scale they have
in use; random weights are He-initialized, which keeps logits of order 1. Run with -s to see the
measured differences.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import graphs  # noqa: E402
import onnx_export  # noqa: E402
import covergenre  # noqa: E402
from covergenre import Model, cgm  # noqa: E402

TOLERANCE = 1e-4
BATCH = 2


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])


def test_the_kernel_variant_asked_for_runs():
    """scripts/test.sh runs this file again under each lower variant (COVERGENRE_ISA): the run
    must be testing the variant it names."""
    asked, running = os.environ.get("COVERGENRE_ISA"), covergenre.kernel_variant()
    print("\nkernel variant: %s (COVERGENRE_ISA=%s)" % (running, asked or "unset"))
    assert running in ("generic", "avx2", "avx512")
    flags = cpu_flags()
    executable = {"generic": True, "avx2": "avx2" in flags and "fma" in flags,
                  "avx512": all(f in flags for f in ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"))}
    if asked in executable and executable[asked]:
        assert running == asked
    elif asked is None:
        assert executable[running]


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def compare_logits(label, path, metadata, tensors, seed=0, tolerance=TOLERANCE):
    x = onnx_export.preprocessed_input(metadata, BATCH, seed=seed)
    reference = onnx_export.run(onnx_export.to_onnx(metadata, tensors), x)["logits"]
    with Model(path) as model:
        ours = model.run_tensor(x)
    difference = float(np.abs(ours - reference).max())
    magnitude = float(np.abs(reference).max())
    print("\n%s: max |dlogit| = %.3g, max |logit| = %.3g, logits[0] = %s"
          % (label, difference, magnitude, np.array2string(reference[0], precision=4)))
    assert ours.shape == reference.shape == (BATCH, len(metadata["labels"]))
    assert np.isfinite(ours).all()
    # A comparison of near-zero or identical rows would pass whatever the engine did.
    assert magnitude > 100 * TOLERANCE, "logits too small for the comparison to mean anything"
    assert np.abs(reference[0] - reference[1]).max() > 100 * TOLERANCE, "the two inputs gave the same logits"
    assert difference <= tolerance, "%s: engine and ONNX Runtime differ by %g" % (label, difference)
    return ours


CLI_MODELS = [
    pytest.param("baseline-cnn", (), id="baseline-cnn-256"),
    pytest.param("vgg16", ("--width-divisor", "8"), id="vgg16-div8-224"),
    # 160 input leaves 5x5 before the adaptive 7x7 pool: overlapping bins, not the identity.
    pytest.param("vgg16", ("--width-divisor", "8", "--input-size", "160"), id="vgg16-div8-160"),
    pytest.param("efficientnet-lite0", ("--random-statistics",), id="efficientnet-lite0-224"),
    # f16 storage: both readers must widen the same halves to the same floats.
    pytest.param("baseline-cnn", ("--width-divisor", "2", "--input-size", "96", "--storage", "f16"),
                 id="baseline-cnn-f16-96"),
]


@pytest.mark.parametrize("arch, options", CLI_MODELS)
def test_cli_model_matches_onnx_runtime(lib, create_model, arch, options):
    path = create_model(arch, *options)
    metadata, tensors = cgm.read(path)
    assert metadata["architecture"] == arch
    compare_logits("%s %s" % (arch, " ".join(options)), path, metadata, tensors)


@pytest.mark.parametrize("options", [(), ("--balance", "off", "--weight-bits", "7")], ids=["balanced-8bit", "plain-7bit"])
def test_int8_layers_match_onnx_runtime_quantizing_alike(lib, cli, create_model, tmp_path, options):
    """int8 layers against ONNX Runtime running the same arithmetic: QuantizeLinear and
    DequantizeLinear on each int8 layer's input (the same float32 multiply, rounding and clamp:
    the same integers from the same floats), then the layer in float32 with the dequantized
    weights. Three layers are int8 (an expansion, a projection and the linear classifier).

    The floats an int8 layer quantizes come from float layers that differ between the engines by
    float rounding (1e-6), which moves the odd value across a rounding boundary: one quantization
    step apart, a coarse one for a per-tensor scale. So the bound is 2e-2, and, so that it cannot
    pass vacuously, the two engines must differ by far less than int8 differs from the float model.
    The arithmetic itself is checked exactly by the Swift tests (QuantizedGEMMTests,
    QuantizedGraphTests: 1e-7 against a reference)."""
    import subprocess
    original = create_model("efficientnet-lite0", "--random-statistics", "--input-size", "96")
    covers, path = tmp_path / "covers", tmp_path / "int8.cgm"
    subprocess.run([cli, "make-examples", "--size", "128", str(covers)], check=True, stdout=subprocess.PIPE)
    float_metadata, float_tensors = cgm.read(original)
    int8 = {"blocks.2.project", "blocks.5.expand", "fc"}
    keep = [n["name"] for n in float_metadata["graph"]["nodes"]
            if n["op"] in ("conv2d", "linear") and n["name"] not in int8]
    subprocess.run([cli, "quantize", str(original), "--calibration", str(covers), "--layers", "all", *options,
                    "--keep-float", *keep, "--out", str(path)], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metadata, tensors = cgm.read(path)
    layers = {n["name"] for n in metadata["graph"]["nodes"] if "input_quantization" in n}
    assert layers == int8
    balanced = {n["name"] for n in metadata["graph"]["nodes"] if "channel_scales" in n.get("input_quantization", {})}
    assert balanced == (int8 if options == () else set())
    ours = compare_logits("int8 layers of lite0 " + " ".join(options), str(path), metadata, tensors, tolerance=2e-2)
    x = onnx_export.preprocessed_input(metadata, BATCH, seed=0)
    float_logits = onnx_export.run(onnx_export.to_onnx(float_metadata, float_tensors), x)["logits"]
    int8_logits = onnx_export.run(onnx_export.to_onnx(metadata, tensors), x)["logits"]
    engines, quantization = float(np.abs(ours - int8_logits).max()), float(np.abs(float_logits - int8_logits).max())
    print("engines differ by %.3g; int8 differs from float by %.3g" % (engines, quantization))
    assert engines < quantization / 5
    # And int8 stays near the float model it came from (a balancing applied to the weights but
    # not to the input, say, would put it orders of magnitude away).
    assert quantization < 0.25 * float(np.abs(float_logits).max())


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("make", [graphs.every_op, graphs.softmax_head], ids=["every-op", "softmax-head"])
def test_python_written_graph_matches_onnx_runtime(lib, tmp_path, make, dtype):
    metadata, tensors = make()
    path = tmp_path / "model.cgm"
    cgm.write(path, metadata, tensors, dtype=dtype)
    # The reference gets the weights as stored (rounded to f16 or not), read back by Python.
    stored_metadata, stored = cgm.read(path)
    assert stored_metadata == metadata
    compare_logits("%s (%s)" % (metadata["name"], dtype), path, stored_metadata, stored)


def centre_square(metadata, rng):
    """A random cover that the model's preprocessing maps onto its input without resampling,
    and that input: center_crop scales by 1 when the shorter side is already `shorter_side`."""
    height, width, _ = metadata["graph"]["input_shape"]
    pre = metadata["preprocess"]
    if pre["resize"] == "stretch":
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        crop = image
    else:
        side = pre["shorter_side"]
        image = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        crop = image[top:top + height, left:left + width]
    mean, std = np.float32(pre["mean"]), np.float32(pre["std"])
    x = ((crop.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)[None]
    return image, x


@pytest.mark.parametrize("arch, options", [CLI_MODELS[1], CLI_MODELS[3]])
def test_image_pipeline_matches_onnx_runtime(lib, create_model, arch, options):
    """probabilities() and embed() on pixels equal ONNX Runtime on the same pixels normalized by
    hand: the preprocessing adds nothing when no resampling is needed."""
    path = create_model(arch, *options)
    metadata, tensors = cgm.read(path, verify_checksum=False)
    image, x = centre_square(metadata, np.random.default_rng(11))
    reference = onnx_export.run(onnx_export.to_onnx(metadata, tensors), x)
    with Model(path) as model:
        probabilities = model.probabilities(image)
        embedding = model.embed(image)
    embedding_difference = float(np.abs(embedding - reference["embedding"][0]).max())
    print("\n%s: max |dprobability| = %.3g, max |dembedding| = %.3g (max |embedding| = %.3g)"
          % (arch, np.abs(probabilities - softmax(reference["logits"][0])).max(), embedding_difference,
             np.abs(reference["embedding"]).max()))
    np.testing.assert_allclose(probabilities, softmax(reference["logits"][0]), rtol=0, atol=1e-5)
    # Embeddings are not normalized (VGG's reach ~30): the same 1e-4 per unit of their scale.
    scale = max(1.0, float(np.abs(reference["embedding"]).max()))
    np.testing.assert_allclose(embedding, reference["embedding"][0], rtol=0, atol=TOLERANCE * scale)


def test_flip_average_matches_onnx_runtime(lib, tmp_path):
    """With flip_average the probabilities and the embedding are the means over the image and
    its mirror image."""
    metadata, tensors = graphs.softmax_head(flip_average=True)
    path = tmp_path / "flip.cgm"
    cgm.write(path, metadata, tensors)
    image, x = centre_square(metadata, np.random.default_rng(12))
    both = np.concatenate([x, x[:, :, ::-1]])
    reference = onnx_export.run(onnx_export.to_onnx(metadata, tensors), both)
    with Model(path) as model:
        probabilities = model.probabilities(image)
        embedding = model.embed(image)
    # The logits node is itself a softmax; the library applies its own softmax on top.
    expected = softmax(reference["logits"]).mean(axis=0)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(embedding, reference["embedding"].mean(axis=0), rtol=0, atol=TOLERANCE)
    # The mirror image must matter, or this test proves nothing about the averaging.
    assert np.abs(softmax(reference["logits"][0]) - expected).max() > 1e-4


# ---- The translator's own rules, checked against values worked out by hand ----

def test_tensorflow_same_padding_puts_the_odd_pixel_last():
    assert onnx_export.resolve_padding("same", 224, 3, 2) == (112, 0, 1)
    assert onnx_export.resolve_padding("same", 225, 3, 2) == (113, 1, 1)
    assert onnx_export.resolve_padding("same", 7, 5, 1) == (7, 2, 2)
    assert onnx_export.resolve_padding("same", 10, 1, 3) == (4, 0, 0)
    assert onnx_export.resolve_padding("valid", 10, 3, 2) == (4, 0, 0)
    assert onnx_export.resolve_padding((1, 2), 10, 3, 2) == (6, 1, 2)


def test_adaptive_bins_are_pytorchs():
    # torch.nn.AdaptiveAvgPool1d bins: start floor(i * in / out), end ceil((i + 1) * in / out).
    assert onnx_export.adaptive_bins(5, 7) == [(0, 1), (0, 2), (1, 3), (2, 3), (2, 4), (3, 5), (4, 5)]
    assert onnx_export.adaptive_bins(10, 3) == [(0, 4), (3, 7), (6, 10)]
    assert onnx_export.adaptive_bins(7, 7) == [(i, i + 1) for i in range(7)]
