"""covergenre quantize end to end: a float Lite0 model and calibration covers in, an int8 model out
that loads, answers close to the float one, and says how it was made; bad arguments refused."""
import subprocess

import pytest

import covergenre


def run(*args):
    return subprocess.run([str(a) for a in args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, cover_pixels):
    """Twelve covers: the test cover shifted, mirrored and darkened."""
    Image = pytest.importorskip("PIL.Image")
    np = pytest.importorskip("numpy")
    folder = tmp_path_factory.mktemp("calibration")
    for i in range(12):
        pixels = np.roll(cover_pixels, 13 * i, axis=1)
        if i % 2:
            pixels = pixels[:, ::-1]
        Image.fromarray((pixels * (0.5 + i / 24)).astype(np.uint8), "RGB").save(folder / ("c%02d.jpg" % i), quality=90)
    return folder


def test_quantize_makes_an_int8_model_that_answers_like_the_float_one(cli, create_model, calibration, tmp_path, images):
    original = create_model("efficientnet-lite0", "--random-statistics", "--input-size", "96")
    out = tmp_path / "int8.cgm"
    done = run(cli, "quantize", original, "--calibration", calibration, "--method", "mse", "--keep-float", "blocks.0.project",
               "--out", out)
    assert "int8: " in done.stdout and "blocks.0.project" in done.stdout and "wrote" in done.stdout, done.stdout
    assert out.read_bytes()[8] == 2, "an int8 model is format version 2"
    inspected = run(cli, "inspect", out).stdout
    assert "format v2" in inspected and "i8" in inspected, inspected
    with covergenre.Model(str(original)) as a, covergenre.Model(str(out)) as b:
        quantization = b.metadata["provenance"]["quantization"]
        assert quantization["method"] == "mse" and quantization["calibration_images"] == 12
        assert "blocks.0.project" in quantization["float_layers"]
        for path in images.values():
            pa, pb = a.probabilities(path), b.probabilities(path)
            assert abs(sum(pb) - 1) < 1e-5 and min(pb) >= 0
            assert any(x != y for x, y in zip(pa, pb)), "the int8 model computes something else than the float one"
            # Random weights quantize worse than trained ones: a loose bound here; the engine's int8
            # arithmetic is checked exactly by the Swift tests (QuantizedGraphTests).
            assert max(abs(x - y) for x, y in zip(pa, pb)) < 0.25


def test_quantize_refuses_bad_arguments(cli, create_model, calibration, tmp_path):
    original = create_model("efficientnet-lite0", "--random-statistics", "--input-size", "96")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["--calibration", calibration, "--out", original],
                 ["--calibration", calibration, "--keep-float", "no.such.node", "--out", tmp_path / "a.cgm"],
                 ["--calibration", calibration, "--method", "median", "--out", tmp_path / "b.cgm"],
                 ["--calibration", empty, "--out", tmp_path / "c.cgm"],
                 ["--calibration", tmp_path / "missing", "--out", tmp_path / "d.cgm"]):
        done = subprocess.run([cli, "quantize", str(original), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        assert done.returncode != 0 and "Error" in done.stderr, (args, done.stdout, done.stderr)
    assert not list(tmp_path.glob("*.cgm"))
