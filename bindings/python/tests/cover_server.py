"""Helpers of the data-pipeline tests: a local HTTP cover server with scripted faults, cover images made
with Pillow, and a re-implementation of `covergenre prepare`'s seeded split (SplitMix64 + Swift's shuffle)."""

from __future__ import annotations

import io
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageDraw

# ----------------------------------------------------------------------------------------------
# Covers


def cover(kind, seed=0, size=(96, 96)):
    """Bytes of a small cover: a background colour with a few shapes drawn from `seed`.

    kind is "jpeg", "png" or "webp"."""
    palette = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (230, 200, 30), (150, 50, 170), (20, 20, 20)]
    picture = Image.new("RGB", size, palette[seed % len(palette)])
    draw = ImageDraw.Draw(picture)
    w, h = size
    for i in range(3):
        k = seed * 7 + i * 13
        box = ((k * 5) % w // 2, (k * 11) % h // 2, w // 2 + (k * 3) % (w // 2), h // 2 + (k * 17) % (h // 2))
        draw.ellipse(box, fill=palette[(seed + i + 1) % len(palette)])
    return encode(picture, kind)


def genre_cover(genre_index, variant, kind="jpeg", size=(64, 64)):
    """Covers that are easy to tell apart by genre: genre 0 is red horizontal stripes, 1 green
    vertical stripes, 2 a blue checkerboard; `variant` shifts the pattern a little."""
    picture = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    w, h = size
    colour = [(220, 30, 30), (30, 180, 60), (30, 60, 220)][genre_index % 3]
    step = 8 + variant % 4
    for i in range(0, max(w, h), step * 2):
        o = i + variant % step
        if genre_index % 3 == 0:
            draw.rectangle((0, o, w, o + step - 1), fill=colour)
        elif genre_index % 3 == 1:
            draw.rectangle((o, 0, o + step - 1, h), fill=colour)
        else:
            for j in range(0, h, step * 2):
                draw.rectangle((o, j + variant % step, o + step - 1, j + variant % step + step - 1), fill=colour)
    return encode(picture, kind)


def encode(picture, kind):
    buffer = io.BytesIO()
    options = {"jpeg": dict(format="JPEG", quality=90), "png": dict(format="PNG"),
               "webp": dict(format="WEBP", quality=90)}
    picture.save(buffer, **options[kind])
    return buffer.getvalue()


def decoded_format(path):
    """Pillow's format name of a file, after a full decode (raises on a damaged image)."""
    with Image.open(path) as image:
        image.load()
        return image.format


# ----------------------------------------------------------------------------------------------
# The server


class Response:
    """What the server answers to one request."""

    def __init__(self, status=200, body=b"", headers=None, delay=0.0, gate=None):
        self.status, self.body, self.headers, self.delay, self.gate = status, body, dict(headers or {}), delay, gate


def image(body, content_type="image/jpeg", **options):
    return Response(200, body, {"Content-Type": content_type}, **options)


def status(code, headers=None):
    body = b"<html><body>error %d</body></html>" % code
    return Response(code, body, {"Content-Type": "text/html", **(headers or {})})


def redirect(location, code=302):
    return Response(code, b"", {"Location": location})


class CoverServer:
    """A ThreadingHTTPServer on 127.0.0.1 (ephemeral port) in a thread.

    routes maps a path to a Response or to a list of Responses (the n-th request of the path gets
    the n-th, the last one repeats); it may be filled after the server starts, as URLs need its port.
    hits[path] counts the requests of each path. Delays and gates (threading.Event) end early when
    the server closes, so no handler outlives a test."""

    def __init__(self, routes=None):
        self.routes = routes if routes is not None else {}
        self.hits = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.answer(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def url(self, path):
        return self.base + path

    def answer(self, handler):
        path = handler.path
        with self.lock:
            n = self.hits.get(path, 0)
            self.hits[path] = n + 1
            route = self.routes.get(path)
        if route is None:
            route = status(404)
        elif isinstance(route, list):
            route = route[min(n, len(route) - 1)]
        if route.gate is not None:
            route.gate.wait(30)
        if route.delay:
            self.closing.wait(route.delay)
        try:
            handler.send_response(route.status)
            for key, value in route.headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(route.body)))
            handler.end_headers()
            handler.wfile.write(route.body)
        except OSError:
            pass  # the client gave up (timeout) or was killed

    def hit_count(self, path):
        with self.lock:
            return self.hits.get(path, 0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        for route in self.routes.values():
            for r in route if isinstance(route, list) else [route]:
                if r.gate is not None:
                    r.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


# ----------------------------------------------------------------------------------------------
# prepare's split, re-implemented

MASK = (1 << 64) - 1


class SplitMix64:
    """The generator of Sources/Architectures/Architectures.swift."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, bound):
        """Swift's RandomNumberGenerator.next(upperBound:): Lemire's nearly divisionless method."""
        m = self.next() * bound
        if m & MASK < bound:
            t = ((1 << 64) - bound) % bound
            while m & MASK < t:
                m = self.next() * bound
        return m >> 64


def swift_shuffle(items, random):
    """MutableCollection.shuffle(using:) of the Swift standard library (Fisher-Yates, front to back)."""
    amount, current = len(items), 0
    while amount > 1:
        offset = random.below(amount)
        amount -= 1
        items[current], items[current + offset] = items[current + offset], items[current]
        current += 1


def swift_round(x):
    """Double.rounded(): to nearest, ties away from zero (Python's round() ties to even)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def expected_split(albums, genres, seed=1, validation=0.15, test=0.15):
    """{id: split} by prepare's rule: kept genres in rank order share one generator; each genre's
    albums are sorted by id, shuffled, the first round(n*test) are test, the next round(n*validation) val."""
    random = SplitMix64(seed)
    split = {}
    for genre in genres:
        members = sorted(i for i, g in albums.items() if g == genre)
        swift_shuffle(members, random)
        n_test, n_val = swift_round(len(members) * test), swift_round(len(members) * validation)
        for rank, i in enumerate(members):
            split[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return split
