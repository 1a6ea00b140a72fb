"""Shared fixtures: the library (skip when missing), the CLI, models and images made in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BINDINGS = Path(__file__).resolve().parents[1]
REPO = BINDINGS.parents[1]
# The tests exercise this source tree, not whatever copy may be installed.
sys.path.insert(0, str(BINDINGS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import covergenre  # noqa: E402
from covergenre import _lib  # noqa: E402

CLI_ENV = "COVERGENRE_CLI"


@pytest.fixture(scope="session")
def lib():
    """The loaded libcovergenre; tests that need it skip, saying where it was looked for."""
    try:
        return _lib.load()
    except _lib.LibraryNotFoundError as e:
        pytest.skip("libcovergenre not found, skipping the tests that need it\n%s" % e)


@pytest.fixture(scope="session")
def cli(lib):
    """Path of the covergenre CLI ($COVERGENRE_CLI or the repository's build/bin/covergenre)."""
    path = os.environ.get(CLI_ENV) or str(REPO / "build" / "bin" / "covergenre")
    if not os.access(path, os.X_OK):
        pytest.skip("the covergenre CLI is not at %s (set %s)" % (path, CLI_ENV))
    return path


@pytest.fixture(scope="session")
def create_model(cli, tmp_path_factory):
    """create_model(arch, *options) -> path of a `covergenre create` model, made once per session."""
    directory = tmp_path_factory.mktemp("models")
    made = {}

    def create(arch, *options, labels="Rock,Pop,Jazz,HipHop,Folk"):
        key = (arch, labels) + tuple(options)
        if key not in made:
            path = directory / ("model%d.cgm" % len(made))
            subprocess.run([cli, "create", "--arch", arch, "--labels", labels, *options, "--out", str(path)],
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            made[key] = path
        return made[key]

    return create


@pytest.fixture(scope="session")
def small_model_path(create_model):
    """A fast model: the baseline CNN at a quarter width and 64x64 input, five labels."""
    return create_model("baseline-cnn", "--width-divisor", "4", "--input-size", "64")


@pytest.fixture
def small_model(small_model_path):
    with covergenre.Model(small_model_path) as model:
        yield model


@pytest.fixture(scope="session")
def cover_pixels():
    """A 160x120 RGB uint8 cover: a gradient with noise, which compresses like a picture."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:160]
    base = np.stack([x * 255 / 159, y * 255 / 119, (x + y) * 255 / 278], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def images(tmp_path_factory, cover_pixels):
    """{"jpeg"|"png"|"webp"|"gray_png"|"rgba_png": path} of the cover, saved with Pillow."""
    Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to generate test images")
    directory = tmp_path_factory.mktemp("images")
    picture = Image.fromarray(cover_pixels, "RGB")
    paths = {}
    for kind, name, save in [
        ("jpeg", "cover.jpg", dict(format="JPEG", quality=90)),
        ("png", "cover.png", dict(format="PNG")),
        ("webp", "cover.webp", dict(format="WEBP", quality=90)),
    ]:
        paths[kind] = directory / name
        picture.save(paths[kind], **save)
    paths["gray_png"] = directory / "gray.png"
    picture.convert("L").save(paths["gray_png"], format="PNG")
    paths["rgba_png"] = directory / "rgba.png"
    picture.convert("RGBA").save(paths["rgba_png"], format="PNG")
    return paths


# In CI (COVERGENRE_NO_SKIP=1, set by scripts/test.sh when CI=true) the library, the CLI, the
# test packages and ../shared/data are all installed: a skip there means a check silently checked
# nothing, so it fails instead. Only the Spark test may skip (the test environment does not
# install PySpark and a JVM; it is documented as run by hand).
ALLOWED_SKIPS = ("pyspark", "Spark does not start")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("COVERGENRE_NO_SKIP") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = "skipped in CI, where nothing may be missing: %s" % reason
