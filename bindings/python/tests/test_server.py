"""`covergenre serve` end to end on a loopback port: every answer checked against docs/openapi.json
and against the library's own result for the same image (the Python binding, same model file)."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib

import pytest

import covergenre
from conftest import REPO
from cover_server import cover

jsonschema = pytest.importorskip("jsonschema")
np = pytest.importorskip("numpy")

DEFAULT_MODEL = REPO / "models" / "covergenre-default.cgm"
SPEC = json.loads((REPO / "docs" / "openapi.json").read_text())


class Server:
    """A `covergenre serve` process on a free loopback port; its log lines are kept."""

    def __init__(self, cli, *arguments, cwd=None):
        self.process = subprocess.Popen([cli, "serve", "--port", "0", *arguments], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=cwd)
        self.lines = []
        self.port = None
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or self.port is None:
            self.stop()
            raise AssertionError("the server did not start:\n" + "\n".join(self.lines))
        self.url = "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("the server did not stop on SIGTERM")

    def request(self, method, path, body=None, content_type=None, headers=None):
        """(status, headers, parsed JSON or bytes); the answer is checked against the OpenAPI spec."""
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        if content_type is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, answer_headers, data = response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            status, answer_headers, data = e.code, e.headers, e.read()
        if answer_headers.get("Content-Type", "").startswith("application/json"):
            data = json.loads(data)
            check_against_spec(method, path, status, data)
        return status, answer_headers, data

    def post_image(self, path, data, content_type="image/jpeg"):
        return self.request("POST", path, data, content_type)

    def post_files(self, path, files):
        """multipart/form-data with one `file` part per (name, bytes, content type)."""
        boundary = uuid.uuid4().hex
        body = b""
        for name, data, kind in files:
            body += ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\nContent-Type: %s\r\n\r\n"
                     % (boundary, name, kind)).encode() + data + b"\r\n"
        body += ("--%s--\r\n" % boundary).encode()
        return self.request("POST", path, body, "multipart/form-data; boundary=" + boundary)


def same_genres(answer, predictions):
    """The server's genres are the library's predictions: same labels, order and float32 probabilities."""
    return [(g["label"], np.float32(g["probability"])) for g in answer] == [(p.label, np.float32(p.probability)) for p in predictions]


def check_against_spec(method, path, status, body):
    """The JSON body matches the schema docs/openapi.json gives for this route and status."""
    route = path.split("?")[0]
    if route not in SPEC["paths"]:
        route = "/v1/index/{id}" if route.startswith("/v1/index/") else None
    if route is None or method.lower() not in SPEC["paths"][route]:
        assert set(body) == {"error"} and status in (404, 405), body
        schema = {"$ref": "#/components/schemas/ErrorResponse"}
    else:
        responses = SPEC["paths"][route][method.lower()]["responses"]
        assert str(status) in responses, "%s %s answered %d, which the spec does not list" % (method, path, status)
        response = responses[str(status)]
        if "$ref" in response:
            response = SPEC["components"]["responses"][response["$ref"].split("/")[-1]]
        schema = response["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": SPEC["components"]}).validate(body)


@pytest.fixture(scope="module")
def covers():
    return {"jpeg": cover("jpeg", 1, (300, 300)), "png": cover("png", 2, (200, 240)), "webp": cover("webp", 3, (180, 180))}


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory, covers):
    """Four covers in a folder (one in a subfolder), and links leading out of it that must not be indexed."""
    folder = tmp_path_factory.mktemp("index")
    (folder / "a.jpg").write_bytes(covers["jpeg"])
    (folder / "b.png").write_bytes(covers["png"])
    (folder / "sub").mkdir()
    (folder / "sub" / "c.webp").write_bytes(covers["webp"])
    (folder / "d.jpg").write_bytes(cover("jpeg", 4, (120, 120)))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.jpg").write_bytes(cover("jpeg", 5))
    os.symlink(outside / "secret.jpg", folder / "link.jpg")
    os.symlink(outside, folder / "linked-folder")
    return folder


@pytest.fixture(scope="module")
def server(cli, small_model_path, index_folder):
    s = Server(cli, "-m", "default=%s" % DEFAULT_MODEL, "-m", "small=%s" % small_model_path, "--index", str(index_folder),
               "--max-images", "4", "--max-body-bytes", "2000000")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def library():
    with covergenre.Model(str(DEFAULT_MODEL)) as model:
        yield model


def test_health_models_and_index(server, small_model_path):
    assert server.request("GET", "/healthz")[2] == {"status": "ok"}
    status, _, models = server.request("GET", "/v1/models")
    assert status == 200 and models["default"] == "default"
    assert [m["name"] for m in models["models"]] == ["default", "small"]
    with covergenre.Model(str(DEFAULT_MODEL)) as m:
        assert models["models"][0]["labels"] == list(m.labels)
        assert models["models"][0]["embedding_size"] == m.embedding_size
    # Four covers indexed; the links leading out of the folder are not.
    assert models["index"] == {"covers": 4, "model": "default"}
    assert any("index: 4 covers" in line for line in server.lines)


def test_serve_without_a_model_serves_the_int8_default_under_its_old_name(cli):
    """No -m: the default model's int8 file (its temperature, 1.582, is not the float file's 1.579),
    named covergenre-default as the float file was, so clients that ask for it by name still find it."""
    s = Server(cli, cwd=str(REPO))
    try:
        status, _, models = s.request("GET", "/v1/models")
        assert status == 200 and models["default"] == "covergenre-default", models
        [model] = models["models"]
        assert model["name"] == "covergenre-default" and model["temperature"] == pytest.approx(1.582, abs=5e-4), model
    finally:
        s.stop()


@pytest.mark.parametrize("kind", ["jpeg", "png", "webp"])
def test_classify_body_equals_the_library(server, library, covers, kind):
    k = len(library.labels)
    status, _, answer = server.post_image("/v1/classify?top_k=%d" % k, covers[kind], "image/" + kind)
    assert status == 200
    [result] = answer["results"]
    expected = library.probabilities(covers[kind])
    got = {g["label"]: g["probability"] for g in result["genres"]}
    assert set(got) == set(library.labels)
    for label, p in zip(library.labels, expected):
        assert np.float32(got[label]) == p, label  # the same float32, exactly
    assert [g["label"] for g in result["genres"]] == [p.label for p in library.classify(covers[kind], top_k=k)]
    # The default top_k is 3; octet-stream works as well as an image type.
    status, _, answer = server.post_image("/v1/classify", covers[kind], "application/octet-stream")
    assert status == 200 and len(answer["results"][0]["genres"]) == 3


def test_multipart_batch_with_a_corrupt_file(server, library, covers):
    corrupt = covers["jpeg"][:200]
    status, _, answer = server.post_files("/v1/classify?top_k=2", [
        ("one.jpg", covers["jpeg"], "image/jpeg"), ("broken.jpg", corrupt, "image/jpeg"), ("three.webp", covers["webp"], "image/webp")])
    assert status == 200
    one, broken, three = answer["results"]
    assert [r["name"] for r in answer["results"]] == ["one.jpg", "broken.jpg", "three.webp"]
    assert same_genres(one["genres"], library.classify(covers["jpeg"], top_k=2))
    assert same_genres(three["genres"], library.classify(covers["webp"], top_k=2))
    # The library's own message for the corrupt file.
    with pytest.raises(covergenre.CoverGenreError) as error:
        library.classify(corrupt)
    assert broken["error"]["message"] == str(error.value.message)
    assert broken["error"]["code"] == "image_decode"


def test_other_model_and_embed(server, small_model_path, covers):
    with covergenre.Model(str(small_model_path)) as small:
        status, _, answer = server.post_image("/v1/classify?model=small&top_k=5", covers["png"], "image/png")
        assert status == 200 and answer["model"] == "small"
        assert same_genres(answer["results"][0]["genres"], small.classify(covers["png"], top_k=5))
    with covergenre.Model(str(DEFAULT_MODEL)) as library:
        status, _, answer = server.post_image("/v1/embed", covers["jpeg"])
        assert status == 200
        assert (np.array(answer["results"][0]["embedding"], dtype=np.float32) == library.embed(covers["jpeg"])).all()


def test_similar_finds_the_indexed_cover_itself(server, covers, index_folder):
    status, _, answer = server.post_image("/v1/similar?k=3", covers["png"], "image/png")
    assert status == 200
    found = answer["results"][0]["similar"]
    assert len(found) == 3
    assert found[0]["path"] == "b.png" and found[0]["similarity"] > 0.9999
    assert all(found[i]["similarity"] >= found[i + 1]["similarity"] for i in range(2))
    assert all(not f["path"].startswith("link") for f in found)
    # The url serves that indexed file, byte for byte; other numbers are 404s.
    status, headers, data = server.request("GET", found[0]["url"])
    assert status == 200 and data == (index_folder / "b.png").read_bytes() and headers["Content-Type"] == "image/png"
    for bad in ["/v1/index/4", "/v1/index/-1", "/v1/index/..%2F..%2Fetc%2Fpasswd", "/v1/index/1e3"]:
        assert server.request("GET", bad)[0] == 404, bad
    # Everything reachable through the index: exactly the four covers inside the folder.
    served = {server.request("GET", "/v1/index/%d" % i)[2] for i in range(4)}
    inside = {p.read_bytes() for p in [index_folder / "a.jpg", index_folder / "b.png", index_folder / "sub" / "c.webp",
                                       index_folder / "d.jpg"]}
    assert served == inside
    assert server.post_image("/v1/similar?model=small", covers["png"], "image/png")[0] == 400


def test_index_file_replaced_by_a_link_out_is_not_served(cli, tmp_path, covers):
    """A file swapped for a link leading out of the folder after the index was built: 404."""
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(covers["jpeg"])
    s = Server(cli, "-m", str(DEFAULT_MODEL), "--index", str(folder))
    try:
        assert s.request("GET", "/v1/index/0")[0] == 200
        secret = tmp_path / "secret.jpg"
        secret.write_bytes(b"not for the web")
        (folder / "a.jpg").unlink()
        os.symlink(secret, folder / "a.jpg")
        status, _, answer = s.request("GET", "/v1/index/0")
        assert status == 404 and "no longer" in answer["error"]["message"]
    finally:
        s.stop()


@pytest.mark.parametrize("path, body, content_type, status, code", [
    ("/v1/classify", b"", "image/jpeg", 400, "invalid_argument"),
    ("/v1/classify", b"not an image at all", "image/jpeg", 422, "image_unsupported"),
    ("/v1/classify", b"{}", "application/json", 415, "unsupported_media_type"),
    ("/v1/classify", b"x=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("/v1/classify?top_k=0", None, "image/jpeg", 400, "invalid_argument"),
    ("/v1/classify?top_k=6", None, "image/jpeg", 400, "invalid_argument"),
    ("/v1/classify?top_k=three", None, "image/jpeg", 400, "invalid_argument"),
    ("/v1/classify?model=nope", None, "image/jpeg", 404, "unknown_model"),
    ("/v1/similar?k=0", None, "image/jpeg", 400, "invalid_argument"),
    ("/v1/similar?k=101", None, "image/jpeg", 400, "invalid_argument"),
    ("/v1/embed", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--x--\r\n", "multipart/form-data; boundary=x",
     400, "invalid_argument"),
    ("/v1/embed", b"garbage without the boundary", "multipart/form-data; boundary=x", 400, "invalid_argument"),
    ("/v1/embed", b"", "multipart/form-data", 400, "invalid_argument"),
])
def test_bad_requests_are_json_errors(server, covers, path, body, content_type, status, code):
    got, _, answer = server.request("POST", path, covers["jpeg"] if body is None else body, content_type)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert answer["error"]["message"]


def test_limits(server, covers):
    # Body over --max-body-bytes (2,000,000).
    status, _, answer = server.post_image("/v1/classify", b"\xff\xd8" + bytes(2_100_000))
    assert status == 413 and answer["error"]["code"] == "limit_exceeded"
    # More files than --max-images (4).
    status, _, answer = server.post_files("/v1/classify", [("f%d.jpg" % i, covers["jpeg"], "image/jpeg") for i in range(5)])
    assert status == 413 and "at most 4" in answer["error"]["message"]
    # An image over the library's pixel limit: a 20000 x 20000 PNG (its header and a first, tiny IDAT).
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))
    status, _, answer = server.post_image("/v1/classify", png, "image/png")
    assert status == 413 and answer["error"]["code"] in ("image_too_large", "limit_exceeded"), answer
    # Unknown routes and methods.
    assert server.request("GET", "/v1/nothing")[0] == 404
    assert server.request("GET", "/v1/classify")[0] in (404, 405)
    # The server is still well after all of that.
    assert server.request("GET", "/healthz")[0] == 200


def test_metrics_count_requests(server, covers):
    server.post_image("/v1/classify", covers["jpeg"])
    status, headers, text = server.request("GET", "/metrics")
    text = text.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert re.search(r'covergenre_http_requests_total\{route="/v1/classify",status="200"\} [1-9]', text), text
    assert re.search(r'covergenre_http_request_duration_seconds_count\{route="/v1/classify"\} [1-9]', text)
    assert re.search(r"^covergenre_images_total [1-9]", text, re.M)


def raw_connection(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(data)
    return s


def test_busy_server_answers_503_and_idle_connections_close(cli, covers):
    s = Server(cli, "-m", str(DEFAULT_MODEL), "--max-in-flight", "1", "--timeout", "1")
    try:
        # A request whose body never finishes holds the only place...
        slow = raw_connection(s.port, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                                      b"Content-Length: 100000\r\n\r\n\xff\xd8")
        time.sleep(0.3)
        # ...so the next is refused at once, with Retry-After.
        status, headers, answer = s.post_image("/v1/classify", covers["jpeg"])
        assert status == 503 and answer["error"]["code"] == "busy" and headers["Retry-After"] == "1"
        # The stalled client is cut off after --timeout seconds, which frees the place.
        slow.settimeout(10)
        assert slow.recv(65536) is not None
        deadline = time.time() + 10
        while True:
            status = s.post_image("/v1/classify", covers["jpeg"])[0]
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
        slow.close()
        # A connection that sends nothing is closed too (recv returns b"" at end of stream).
        idle = raw_connection(s.port, b"")
        idle.settimeout(10)
        assert idle.recv(100) == b""
        idle.close()
    finally:
        s.stop()


def test_many_connections_match_the_library(server, library, covers):
    """32 clients at once on one server: every answer equals the library's."""
    expected = {kind: [float(p) for p in library.probabilities(data)] for kind, data in covers.items()}
    labels = library.labels
    failures = []

    def client(i):
        kind = ["jpeg", "png", "webp"][i % 3]
        for _ in range(3):
            status, _, answer = server.post_image("/v1/classify?top_k=5", covers[kind], "image/" + kind)
            got = {g["label"]: float(np.float32(g["probability"])) for g in answer["results"][0]["genres"]} if status == 200 else None
            if got != dict(zip(labels, expected[kind])):
                failures.append((i, status, answer))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_web_page_in_a_real_browser(server, library, covers, tmp_path):
    """Debian's Chromium, headless, driven through its WebDriver: pick a cover on the page and see
    its genres (the library's top 3, as bars) and its most similar covers from the index appear."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    chromium = next((p for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] if os.access(p, os.X_OK)), None)
    driver_path = next((p for p in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] if os.access(p, os.X_OK)), None)
    if chromium is None or driver_path is None:
        pytest.skip("Chromium and its WebDriver are not installed (scripts/setup.sh --browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: "covers" in b.find_element(By.ID, "model-line").text)
        assert browser.find_element(By.ID, "model-line").text.startswith("default: Country")
        path = tmp_path / "picked.png"
        path.write_bytes(covers["png"])
        browser.find_element(By.ID, "files").send_keys(str(path))
        card = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".cover[data-state]"))
        assert card.get_attribute("data-state") == "classified", card.text
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".cover .similar img")) == 6 or
                   len(b.find_elements(By.CSS_SELECTOR, ".cover .similar img")) == 4)
        labels = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".bar .label")]
        values = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".bar .value")]
        expected = library.classify(covers["png"], top_k=3)
        assert labels == [p.label for p in expected]
        assert values == ["%.1f%%" % (100 * p.probability) for p in expected]
        # The similar covers are the index's images, served by the server (natural width > 0 once loaded).
        thumbs = card.find_elements(By.CSS_SELECTOR, ".similar img")
        assert thumbs[0].get_attribute("alt") == "b.png"
        wait.until(lambda b: all(b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", t) for t in thumbs))
        # The page loaded nothing from elsewhere and logged no error.
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.quit()
