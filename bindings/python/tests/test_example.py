"""examples/python/classify.py, run as a user would: from the repository root, not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from covergenre import Model

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "python" / "classify.py"


def run_example(*args, env=None):
    if not EXAMPLE.is_file():
        pytest.skip("the example is not at %s" % EXAMPLE)
    # A clean PYTHONPATH: the example must find the package by itself.
    environment = dict(os.environ if env is None else env)
    environment.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, str(EXAMPLE.relative_to(REPO)), *map(str, args)], cwd=REPO,
                          env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_prints_the_top_genres_of_each_image(lib, small_model_path, images):
    result = run_example(small_model_path, images["jpeg"], images["webp"], "--top", "2")
    assert result.returncode == 0, result.stderr
    with Model(small_model_path) as model:
        expected = [model.classify(images[k], top_k=2) for k in ("jpeg", "webp")]
    lines = result.stdout.splitlines()
    assert lines[0] == str(images["jpeg"]) and lines[3] == str(images["webp"]) and len(lines) == 6
    for block, predictions in zip((lines[1:3], lines[4:6]), expected):
        for line, p in zip(block, predictions):
            label, probability = line.split()
            assert label == p.label and float(probability) == pytest.approx(p.probability, abs=5e-4)


def test_exits_non_zero_when_an_image_fails(lib, small_model_path, images, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a cover")
    result = run_example(small_model_path, images["png"], text)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == str(images["png"])
    assert str(text) in result.stderr and "CG_ERR_IMAGE_UNSUPPORTED" in result.stderr


def test_exits_2_when_the_model_cannot_be_loaded(lib, tmp_path, images):
    result = run_example(tmp_path / "missing.cgm", images["png"])
    assert result.returncode == 2 and "CG_ERR_IO" in result.stderr


def test_usage_errors(lib, small_model_path):
    assert run_example(small_model_path).returncode == 2
    assert run_example(small_model_path, "x.jpg", "--top", "0").returncode == 2
