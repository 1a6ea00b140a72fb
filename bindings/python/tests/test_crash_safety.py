"""Kills training and import at random moments: every file left behind is either absent, the old
version or the new one, never torn (docs/security.md, "Crash safety")."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from covergenre import CoverGenreError, Model, cgm


def make_covers(root: Path, cli):
    # Two "genres" of project-drawn covers at several sizes.
    for genre, size in (("warm", 40), ("cold", 48)):
        folder = root / genre
        for i, s in enumerate((size, size + 8, size + 16, size + 24)):
            subprocess.run([cli, "make-examples", "--size", str(s), str(folder / str(i))], check=True,
                           stdout=subprocess.DEVNULL)
            for f in (folder / str(i)).iterdir():
                f.rename(folder / ("%d-%s" % (i, f.name)))
            (folder / str(i)).rmdir()


def check_complete(path: Path):
    """The file is absent or a complete, checksum-valid model file."""
    if not path.exists():
        return "absent"
    cgm.read(path.read_bytes())  # verifies magic, sizes and the XXH64 checksum
    return "valid"


def kill_at_random(command, seed, min_delay, max_delay):
    rng = random.Random(seed)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(min_delay, max_delay))
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_training_never_leaves_a_torn_checkpoint_or_model(cli, tmp_path):
    data = tmp_path / "covers"
    make_covers(data, cli)
    run = tmp_path / "run"
    out = tmp_path / "model.cgm"
    command = [cli, "train", "--data", data, "--out", out, "--run", run, "--arch", "baseline-cnn", "--input-size", "32",
               "--width-divisor", "16", "--epochs", "40", "--batch-size", "4", "--resume"]
    seen = set()
    for trial in range(12):
        kill_at_random([str(c) for c in command], trial, 0.2, 1.5)
        for name in ("checkpoint.cgm",):
            seen.add(check_complete(run / name))
        seen.add(check_complete(out))
        history = run / "history.csv"
        if history.exists():  # CSV reports are replaced atomically too: whole lines only
            text = history.read_text()
            assert text.endswith("\n"), text[-80:]
    # The kills landed both before and after files existed, and the run can always continue.
    assert "valid" in seen
    result = subprocess.run([str(c) for c in command[:-1]] + ["--resume", "--epochs", "40"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    Model(str(out)).close()


def test_killed_import_leaves_no_torn_model(cli, tmp_path, create_model):
    # A re-import of a model's own tensors is not possible, so kill `create`, which writes the same way.
    out = tmp_path / "lite.cgm"
    for trial in range(10):
        kill_at_random([cli, "create", "--arch", "vgg16", "--labels", "a,b", "--width-divisor", "2", "--out", str(out)],
                       trial, 0.05, 1.0)
        state = check_complete(out)
        assert state in ("absent", "valid")
    leftovers = [p for p in tmp_path.iterdir() if p.name != "lite.cgm"]
    # A killed writer may leave its hidden temporary file, never a visible partial model.
    assert all(p.name.startswith(".") and ".tmp-" in p.name for p in leftovers), leftovers
