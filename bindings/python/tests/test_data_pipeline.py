"""The MuMu data pipeline as a user runs it: `covergenre prepare` on MuMu-shaped labels and Amazon
metadata, `download` from a local HTTP server with scripted faults, SIGKILL and Ctrl-C, then `train`
and `classify` on what was downloaded. Everything runs in tmp dirs against 127.0.0.1."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("PIL.Image", reason="Pillow is needed to generate test covers")

from cover_server import (  # noqa: E402
    CoverServer, Response, cover, decoded_format, expected_split, genre_cover, image, redirect, status)

REPO = Path(__file__).resolve().parents[3]
MUMU_LABELS = REPO / ".." / "shared" / "data" / "mumu" / "MuMu_dataset_single-label.csv"
LABEL_COLUMNS = ["amazon_id", "album_mbid", "MSD_track_id", "recording_mbid", "artist_mbid", "genres"]
EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def run(cli, *args, timeout=120, cwd=None):
    return subprocess.run([cli, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, cwd=cwd)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def wait_until(condition, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %d s waiting for %s" % (timeout, what))
        time.sleep(0.01)


def covers_in(folder):
    """{genre folder: sorted non-hidden file names} under a download folder."""
    return {d.name: sorted(f.name for f in d.iterdir() if not f.name.startswith("."))
            for d in sorted(Path(folder).iterdir()) if d.is_dir()}


def leftovers(folder):
    """Temporary or hidden files anywhere under a download folder."""
    return sorted(str(p) for p in Path(folder).rglob("*") if p.name.startswith(".") or ".tmp-" in p.name)


# ----------------------------------------------------------------------------------------------
# prepare

def reference_prepare(labels_path, urls, top=12, min_per_genre=1, seed=1, validation=0.15, test=0.15):
    """The documented rule, from scratch: (manifest rows, label-side album counts, kept [(genre, albums)]).

    urls maps amazon_id -> imUrl, or None for a record without imUrl; ids absent have no record."""
    albums, seen = [], set()
    with open(labels_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            key = (row["amazon_id"].strip(), row["album_mbid"])
            if key[0] and row["genres"].strip() and key not in seen:
                seen.add(key)
                albums.append((key[0], row["genres"].strip()))
    joined = {}
    for album, genre in albums:
        if urls.get(album) and album not in joined:  # one cover per amazon_id
            joined[album] = (genre, urls[album])
    counts = Counter(genre for genre, _ in joined.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = [(genre, n) for genre, n in ranked[:top] if n >= min_per_genre]
    split = expected_split({a: g for a, (g, _) in joined.items()}, [g for g, _ in kept], seed, validation, test)
    rows = [{"id": a, "genre": g, "url": u, "split": split[a]} for a, (g, u) in joined.items() if a in split]
    return sorted(rows, key=lambda r: (r["genre"], r["id"])), Counter(g for _, g in albums), kept


# Albums per genre with a usable metadata record. Jazz also has one album whose record lacks imUrl,
# Pop one album with no record at all; with --top 5 --min-per-genre 3, Blues is in the top five but
# too small, Pop (3 on the label side, 2 after the join) and Folk fall outside it; Jazz and Música
# Latina tie, and the tie (broken by name) decides which genre draws from the generator first.
FIXTURE_GENRES = {"Rock": 10, "Rap & Hip-Hop": 8, "Jazz": 6, "Música Latina": 6, "Blues": 2, "Pop": 2, "Folk": 1}
NO_IMURL, NO_RECORD = "B00NOIMURL", "B00NORECRD"


@pytest.fixture(scope="module")
def mumu_fixture(tmp_path_factory):
    """(labels path, {"jsonl" | "array": metadata path}, {amazon_id: imUrl or None}, duplicate label rows)."""
    directory = tmp_path_factory.mktemp("mumu")
    albums = []  # (amazon_id, album_mbid, genre, tracks)
    k = 0
    for genre, n in FIXTURE_GENRES.items():
        for _ in range(n):
            k += 1
            # ids whose order is not the order of the rows
            albums.append(("B%09d" % ((k * 7919) % 100003), "mbid-%03d" % k, genre, 1 + k % 3))
    albums.append((NO_IMURL, "mbid-noimurl", "Jazz", 2))
    albums.append((NO_RECORD, "mbid-norecord", "Pop", 1))
    # One amazon_id listed with a second album_mbid (one cover, two label-side albums).
    first_rock = albums[0]
    albums.append((first_rock[0], "mbid-second", "Rock", 1))
    rows = []
    for amazon_id, mbid, genre, tracks in albums:
        for t in range(tracks):
            rows.append([amazon_id, mbid, "TR%s%d" % (amazon_id[-6:], t), "rec-%s-%d" % (mbid, t),
                         "artist-" + mbid, genre])
    random.Random(5).shuffle(rows)
    assert len({tuple(r) for r in rows}) == len(rows)
    labels = directory / "MuMu_single_label.csv"
    write_csv(labels, LABEL_COLUMNS, rows)
    duplicate_rows = len(rows) - len({(r[0], r[1]) for r in rows})

    urls, records = {}, []
    for i, (amazon_id, _, genre, _) in enumerate(albums[:-1]):
        if amazon_id == NO_RECORD:
            continue
        record = {"amazon_id": amazon_id, "title": "Álbum nº %d — “%s”" % (i, genre),
                  "categories": [["CDs & Vinyl", genre]], "salesRank": {"Music": 1000 + i},
                  "related": {"also_bought": ["B0000000%02d" % j for j in range(3)], "bought_together": []}}
        if amazon_id != NO_IMURL:
            record["imUrl"] = "http://127.0.0.1:9/images/I/%s._SL500_.jpg" % amazon_id
        urls[amazon_id] = record.get("imUrl")
        records.append(record)
    records.insert(5, {"amazon_id": "B0NOTLABEL", "imUrl": "http://127.0.0.1:9/unused.jpg", "title": "not in MuMu"})
    paths = {"jsonl": directory / "amazon_metadata.jsonl", "array": directory / "amazon_metadata.json"}
    with open(paths["jsonl"], "w", encoding="utf-8") as f:
        for i, record in enumerate(records):
            f.write(json.dumps(record, ensure_ascii=i % 2 == 0) + "\n")  # \u escapes and raw UTF-8
            if i == 3:
                f.write('{"amazon_id": "B0BROKEN01", "imUrl": "http://127.0.0.1:9/x.jpg", "title": \n')
            if i == 7:
                f.write("\n")
    with open(paths["array"], "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records[:4])
                + ',\n{"title": "a record without amazon_id"},\n'
                + ",\n".join(json.dumps(r, ensure_ascii=True) for r in records[4:]) + "\n]\n")
    return labels, paths, urls, duplicate_rows


def prepare(cli, tmp_path, labels, metadata, *options, name="manifest.csv"):
    out = tmp_path / name
    result = run(cli, "prepare", "--labels", labels, "--metadata", metadata, *options, "--out", out)
    assert result.returncode == 0, result.stderr
    return read_csv(out), result


def printed_counts(stdout):
    """(label-side {genre: albums}, kept [(genre, albums, share %)], majority share %) from prepare's report."""
    labels, kept, section, majority = {}, [], None, None
    for line in stdout.splitlines():
        if line.startswith("labels:"):
            section = "labels"
        elif line.startswith("manifest:"):
            section = "kept"
        elif line.startswith("majority-class share:"):
            majority = float(line.split(":")[1].split("%")[0])
            section = None
        elif line.startswith("  ") and section == "labels":
            genre, n = line.strip().rsplit(None, 1)
            labels[genre] = int(n)
        elif line.startswith("  ") and section == "kept":
            genre, n, share = line.strip().rsplit(None, 2)
            kept.append((genre, int(n), float(share.rstrip("%"))))
    return labels, kept, majority


@pytest.mark.parametrize("layout", ["jsonl", "array"])
def test_prepare_writes_the_documented_manifest(cli, tmp_path, mumu_fixture, layout):
    labels, metadata, urls, duplicate_rows = mumu_fixture
    rows, result = prepare(cli, tmp_path, labels, metadata[layout], "--top", "5", "--min-per-genre", "3")
    expected, label_counts, kept = reference_prepare(labels, urls, top=5, min_per_genre=3)
    # The reference agrees with the fixture's design...
    assert kept == [("Rock", 10), ("Rap & Hip-Hop", 8), ("Jazz", 6), ("Música Latina", 6)]
    assert Counter(r["split"] for r in expected if r["genre"] == "Rock") == {"test": 2, "val": 2, "train": 6}
    # ...and prepare agrees with the reference, row for row.
    assert rows == expected
    assert len({r["id"] for r in rows}) == len(rows)
    assert NO_IMURL not in {r["id"] for r in rows} and NO_RECORD not in {r["id"] for r in rows}

    lines = result.stderr.splitlines()
    assert any(NO_IMURL in line and "imUrl" in line for line in lines), result.stderr
    assert any(NO_RECORD in line and "no metadata record" in line for line in lines), result.stderr
    assert any("malformed" in line for line in lines), result.stderr

    printed_labels, printed_kept, majority = printed_counts(result.stdout)
    assert printed_labels == dict(label_counts) == {"Rock": 11, "Rap & Hip-Hop": 8, "Jazz": 7, "Música Latina": 6,
                                                     "Pop": 3, "Blues": 2, "Folk": 1}
    assert "after dropping %d duplicate rows" % duplicate_rows in result.stdout
    assert [(g, n) for g, n, _ in printed_kept] == kept
    for _, n, share in printed_kept:
        assert share == pytest.approx(100 * n / len(rows), abs=0.05)
    assert majority == pytest.approx(100 * 10 / len(rows), abs=0.05)


@pytest.mark.parametrize("options", [
    dict(top=3, min_per_genre=1, seed=7, validation=0.25, test=0.25),  # the Jazz / Música Latina tie at the cut
    dict(top=12, min_per_genre=1, seed=12345, validation=0.2, test=0.1),
    dict(top=6, min_per_genre=2, seed=0, validation=0.0, test=0.5),
], ids=["tie-at-cut", "all-genres", "no-validation"])
def test_prepare_options_follow_the_documented_rule(cli, tmp_path, mumu_fixture, options):
    labels, metadata, urls, _ = mumu_fixture
    args = ["--top", options["top"], "--min-per-genre", options["min_per_genre"], "--seed", options["seed"],
            "--validation", options["validation"], "--test", options["test"]]
    expected, _, _ = reference_prepare(labels, urls, **options)
    for layout in ("jsonl", "array"):
        rows, _ = prepare(cli, tmp_path, labels, metadata[layout], *args, name=layout + ".csv")
        assert rows == expected, layout


def test_prepare_split_is_seeded_and_stratified(cli, tmp_path, mumu_fixture):
    labels, metadata, urls, _ = mumu_fixture
    runs = {seed: prepare(cli, tmp_path, labels, metadata["jsonl"], "--seed", seed, name="s%d.csv" % seed)[0]
            for seed in (1, 2)}
    again, _ = prepare(cli, tmp_path, labels, metadata["array"], "--seed", "1", name="again.csv")
    assert again == runs[1]
    assert [(r["id"], r["genre"], r["url"]) for r in runs[1]] == [(r["id"], r["genre"], r["url"]) for r in runs[2]]
    assert [r["split"] for r in runs[1]] != [r["split"] for r in runs[2]]
    for rows in runs.values():
        for genre, n in Counter(r["genre"] for r in rows).items():
            splits = Counter(r["split"] for r in rows if r["genre"] == genre)
            n_test = int(n * 0.15 + 0.5)
            assert (splits["test"], splits["val"], splits["train"]) == (n_test, n_test, n - 2 * n_test), genre


def test_prepare_on_the_real_mumu_labels(cli, tmp_path):
    if not MUMU_LABELS.is_file():
        pytest.skip("the MuMu labels are not at %s" % MUMU_LABELS)
    with open(MUMU_LABELS, newline="", encoding="utf-8") as f:
        ids = sorted({row["amazon_id"].strip() for row in csv.DictReader(f)} - {""})
    urls = {i: "http://127.0.0.1:9/images/%s.jpg" % i for i in ids}
    metadata = tmp_path / "amazon_metadata.json"
    metadata.write_text("".join(json.dumps({"amazon_id": i, "imUrl": u}) + "\n" for i, u in urls.items()))
    rows, result = prepare(cli, tmp_path, MUMU_LABELS, metadata)
    expected, label_counts, kept = reference_prepare(MUMU_LABELS, urls)

    assert len(rows) == 2267
    genres = Counter(r["genre"] for r in rows)
    assert len(genres) == 12 and genres.most_common(1) == [("Dance & Electronic", 518)]
    assert rows == expected

    printed_labels, printed_kept, majority = printed_counts(result.stdout)
    assert printed_labels == dict(label_counts)
    assert sum(printed_labels.values()) == 2321 and len(printed_labels) == 16
    assert "labels: 2321 albums" in result.stdout
    assert [(g, n) for g, n, _ in printed_kept] == kept == genres.most_common()
    assert majority == pytest.approx(100 * 518 / 2267, abs=0.05)
    assert "no metadata record" not in result.stderr and "no imUrl" not in result.stderr


# ----------------------------------------------------------------------------------------------
# download

def test_download_keeps_valid_covers_and_reports_the_rest(cli, tmp_path):
    jpeg, png, webp = cover("jpeg", 1), cover("png", 2), cover("webp", 3)
    slow_delay, timeout, retries = 3, 1, 2
    routes = {
        "/c/jpeg.jpg": image(jpeg),
        "/c/png.png": image(png, "image/png"),
        "/c/webp.webp": image(webp, "image/webp"),
        "/c/png-named.jpg": image(png, "image/jpeg"),  # a PNG behind a .jpg URL and content type
        "/c/missing.jpg": status(404),
        "/c/flaky.jpg": [status(500), image(jpeg)],
        "/c/busy.jpg": [status(429, {"Retry-After": "0"}), image(webp, "image/webp")],
        "/c/slow.jpg": image(jpeg, delay=slow_delay),
        "/c/html.jpg": Response(200, b"<!DOCTYPE html><html><body>Sorry</body></html>", {"Content-Type": "image/jpeg"}),
        "/c/truncated.jpg": image(jpeg[: len(jpeg) // 2]),
        "/c/moved.jpg": redirect("/c/target.png"),
        "/c/target.png": image(png, "image/png"),
    }
    # id -> (genre, path, stored extension or None for a failure)
    items = {
        "B0JPEG": ("Rock", "/c/jpeg.jpg", "jpg"),
        "B0PNG": ("Rock", "/c/png.png", "png"),
        "B0WEBP": ("Música Latina", "/c/webp.webp", "webp"),
        "B0PNGASJPG": ("Música Latina", "/c/png-named.jpg", "png"),
        "B0MISSING": ("Rock", "/c/missing.jpg", None),
        "B0FLAKY": ("Rap & Hip-Hop", "/c/flaky.jpg", "jpg"),
        "B0BUSY": ("Rap & Hip-Hop", "/c/busy.jpg", "webp"),
        "B0SLOW": ("Rock", "/c/slow.jpg", None),
        "B0HTML": ("Rap & Hip-Hop", "/c/html.jpg", None),
        "B0TRUNC": ("Música Latina", "/c/truncated.jpg", None),
        "B0MOVED": ("Rock", "/c/moved.jpg", "png"),
    }
    out = tmp_path / "covers"
    with CoverServer(routes) as server:
        manifest = tmp_path / "manifest.csv"
        write_csv(manifest, ["id", "genre", "url", "split"],
                  [[i, g, server.url(p), "train"] for i, (g, p, _) in items.items()])
        command = ["download", "--manifest", manifest, "--out", out, "--jobs", "4", "--timeout", timeout,
                   "--retries", retries, "--backoff", "0.05"]
        first = run(cli, *command)
        assert first.returncode == 1, first.stderr

        expected = {}
        for i, (genre, _, ext) in items.items():
            if ext:
                expected.setdefault(genre, []).append("%s.%s" % (i, ext))
        assert covers_in(out) == {g: sorted(names) for g, names in expected.items()}
        for genre, names in expected.items():
            for name in names:
                assert EXTENSION[decoded_format(out / genre / name)] == name.rsplit(".", 1)[1], name
        assert (out / "Rock" / "B0MOVED.png").read_bytes() == png
        assert (out / "Música Latina" / "B0PNGASJPG.png").read_bytes() == png
        assert leftovers(out) == []

        failures = {r["id"]: r for r in read_csv(out / "failures.csv")}
        assert sorted(failures) == sorted(i for i, (_, _, ext) in items.items() if ext is None)
        for i, r in failures.items():
            assert (r["genre"], r["url"]) == (items[i][0], server.url(items[i][1]))
            assert int(r["attempts"]) == server.hit_count(items[i][1]), i
        assert "404" in failures["B0MISSING"]["reason"] and failures["B0MISSING"]["attempts"] == "1"
        assert "timed out" in failures["B0SLOW"]["reason"] and failures["B0SLOW"]["attempts"] == str(retries + 1)
        assert "image" in failures["B0HTML"]["reason"] and failures["B0HTML"]["attempts"] == "1"
        assert "truncated" in failures["B0TRUNC"]["reason"] and failures["B0TRUNC"]["attempts"] == "1"
        assert server.hit_count("/c/flaky.jpg") == 2 and server.hit_count("/c/busy.jpg") == 2

        # The same command again: what is there stays untouched, only the failures are retried.
        hits = dict(server.hits)
        stats = {p: p.stat() for p in out.rglob("*") if p.is_file() and p.name != "failures.csv"}
        second = run(cli, *command)
        assert second.returncode == 1, second.stderr
        assert covers_in(out) == {g: sorted(names) for g, names in expected.items()}
        for path, before in stats.items():
            after = path.stat()
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), path
        for i, (_, path, ext) in items.items():
            again = server.hit_count(path) - hits.get(path, 0)
            assert again == (0 if ext else int(failures[i]["attempts"])), path
        assert server.hit_count("/c/target.png") == hits["/c/target.png"]
        assert sorted(r["id"] for r in read_csv(out / "failures.csv")) == sorted(failures)
        assert leftovers(out) == []


def test_download_honours_retry_after(cli, tmp_path):
    # With --backoff 100 a retry that ignored Retry-After: 0 would sleep 80-120 s, far past the wait below.
    with CoverServer({"/busy.png": [status(429, {"Retry-After": "0"}), status(503, {"Retry-After": "0"}),
                                    image(cover("png", 4), "image/png")]}) as server:
        manifest = tmp_path / "manifest.csv"
        write_csv(manifest, ["id", "genre", "url"], [["B0BUSY", "Pop", server.url("/busy.png")]])
        result = run(cli, "download", "--manifest", manifest, "--out", tmp_path / "covers", "--backoff", "100",
                     timeout=40)
        assert result.returncode == 0, result.stderr
        assert server.hit_count("/busy.png") == 3
        assert decoded_format(tmp_path / "covers" / "Pop" / "B0BUSY.png") == "PNG"



def test_download_with_a_subsecond_timeout_gets_a_fast_cover(cli, tmp_path):
    # The cover comes after 0.2 s, well within 0.8 s; the delay keeps the 0 ms timer ahead of the response.
    png = cover("png", 5)
    with CoverServer({"/fast.png": image(png, "image/png", delay=0.2)}) as server:
        manifest = tmp_path / "manifest.csv"
        write_csv(manifest, ["id", "genre", "url"], [["B0FAST", "Pop", server.url("/fast.png")]])
        result = run(cli, "download", "--manifest", manifest, "--out", tmp_path / "covers", "--timeout", "0.8",
                     "--retries", "0")
        # Either fix will do: download it, or refuse the option before any request.
        refused = result.returncode not in (0, 1) and "--timeout" in result.stderr
        refused = refused and server.hit_count("/fast.png") == 0
        stored = tmp_path / "covers" / "Pop" / "B0FAST.png"
        assert refused or (result.returncode == 0 and stored.read_bytes() == png), result.stdout + result.stderr


def many_covers(count=40, released=12):
    """(routes, items {id: (genre, path, ext)}, gate): the first `released` covers are served after a
    short delay, the others wait for `gate` (set by the test, or when the server closes)."""
    gate = threading.Event()
    routes, items = {}, {}
    kinds = [("jpeg", "image/jpeg", "jpg"), ("png", "image/png", "png"), ("webp", "image/webp", "webp")]
    for k in range(count):
        kind, content_type, ext = kinds[k % 3]
        path = "/covers/%02d.img" % k
        routes[path] = image(cover(kind, k, size=(160, 160)), content_type, delay=0.05,
                             gate=None if k < released else gate)
        items["B%08d" % k] = ("Rock" if k % 2 else "Rap & Hip-Hop", path, ext)
    return routes, items, gate


def write_manifest(path, server, items):
    write_csv(path, ["id", "genre", "url", "split"], [[i, g, server.url(p), "train"] for i, (g, p, _) in items.items()])


def check_complete(out, items):
    expected = {}
    for i, (genre, _, ext) in items.items():
        expected.setdefault(genre, []).append("%s.%s" % (i, ext))
    assert covers_in(out) == {g: sorted(names) for g, names in expected.items()}
    for genre, names in expected.items():
        for name in names:
            assert EXTENSION[decoded_format(out / genre / name)] == name.rsplit(".", 1)[1]
    assert leftovers(out) == []


def test_download_resumes_after_sigkill(cli, tmp_path):
    routes, items, gate = many_covers()
    out = tmp_path / "covers"
    with CoverServer(routes) as server:
        manifest = tmp_path / "manifest.csv"
        write_manifest(manifest, server, items)
        command = [cli, "download", "--manifest", manifest, "--out", out, "--jobs", "4"]
        process = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: out.is_dir() and sum(map(len, covers_in(out).values())) >= 3, what="three covers")
            process.send_signal(signal.SIGKILL)
            assert process.wait(30) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        gate.set()

        present = covers_in(out)
        assert 3 <= sum(map(len, present.values())) < len(items)
        for genre, names in present.items():
            for name in names:
                decoded_format(out / genre / name)  # no half-written cover under its final name
        hits = dict(server.hits)
        stale = out / "Rock" / ".x.jpg.tmp-123-456"
        stale.write_bytes(b"\xff\xd8\xff\xe0 half a jpeg")

        result = run(cli, *command[1:])
        assert result.returncode == 0, result.stderr
        check_complete(out, items)
        assert not stale.exists()
        assert read_csv(out / "failures.csv") == []
        for name in (name for names in present.values() for name in names):
            path = items[name.split(".")[0]][1]
            assert server.hit_count(path) == hits[path] == 1, name  # kept, not fetched again


def test_download_stops_on_sigint_and_resumes(cli, tmp_path):
    routes, items, gate = many_covers(released=8)
    out = tmp_path / "covers"
    with CoverServer(routes) as server:
        manifest = tmp_path / "manifest.csv"
        write_manifest(manifest, server, items)
        command = [cli, "download", "--manifest", manifest, "--out", out, "--jobs", "4"]
        stderr = tmp_path / "stderr.txt"
        with open(stderr, "w") as err:
            process = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_until(lambda: out.is_dir() and sum(map(len, covers_in(out).values())) >= 3, what="three covers")
            process.send_signal(signal.SIGINT)
            wait_until(lambda: "stopping" in stderr.read_text(errors="replace"), what="the Ctrl-C notice")
            gate.set()  # the downloads in flight may now end
            assert process.wait(30) == 130, stderr.read_text(errors="replace")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)

        assert (out / "failures.csv").read_text().splitlines() == ["id,genre,url,reason,attempts"]
        present = sum(map(len, covers_in(out).values()))
        assert 3 <= present < len(items)
        assert leftovers(out) == []
        assert sum(server.hits.values()) < len(items)  # nothing scheduled after the signal

        result = run(cli, *command[1:])
        assert result.returncode == 0, result.stderr
        check_complete(out, items)
        assert all(n == 1 for n in server.hits.values()), server.hits


# ----------------------------------------------------------------------------------------------
# prepare -> download -> train -> classify

E2E_GENRES = ["Jazz", "Rap & Hip-Hop", "Rock"]


def e2e_fixture(tmp_path, server_routes, base_of, genres):
    """Labels + metadata for 8 albums per genre whose covers (stripes per genre) the server holds."""
    rows, records = [], []
    for g, genre in enumerate(genres):
        for v in range(8):
            amazon_id = "B%d%08d" % (g, v * 37 % 101)
            path = "/images/%s.img" % amazon_id
            kind = ["jpeg", "png", "webp"][v % 3]
            server_routes[path] = image(genre_cover(g, v, kind), "image/" + kind)
            for t in range(2):
                rows.append([amazon_id, "mbid-%d-%d" % (g, v), "TR%d%d%d" % (g, v, t), "rec", "artist", genre])
            records.append({"amazon_id": amazon_id, "imUrl": base_of(path), "title": "album %d" % v})
    labels, metadata = tmp_path / "labels.csv", tmp_path / "metadata.json"
    write_csv(labels, LABEL_COLUMNS, rows)
    metadata.write_text("".join(json.dumps(r) + "\n" for r in records))
    return labels, metadata


def test_prepare_download_train_classify(cli, tmp_path):
    with CoverServer() as server:
        labels, metadata = e2e_fixture(tmp_path, server.routes, server.url, E2E_GENRES)
        manifest = tmp_path / "manifest.csv"
        rows, _ = prepare(cli, tmp_path, labels, metadata, "--top", "3")
        assert sorted(Counter(r["genre"] for r in rows).items()) == [(g, 8) for g in E2E_GENRES]

        covers = tmp_path / "covers"
        result = run(cli, "download", "--manifest", manifest, "--out", covers, "--jobs", "4")
        assert result.returncode == 0, result.stderr
        assert sum(map(len, covers_in(covers).values())) == 24

    model = tmp_path / "m.cgm"
    result = run(cli, "train", "--data", manifest, "--images", covers, "--arch", "baseline-cnn", "--input-size", "32",
                 "--width-divisor", "16", "--epochs", "1", "--batch-size", "4", "--out", model,
                 timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no image file" not in result.stderr
    run_folder = tmp_path / "m.run"
    assert model.is_file() and (run_folder / "checkpoint.cgm").is_file()
    split = read_csv(run_folder / "split.csv")
    by_id = {r["id"]: r for r in rows}
    assert len(split) == 24
    for r in split:
        stem = Path(r["path"]).stem
        assert (r["genre"], r["split"]) == (by_id[stem]["genre"], by_id[stem]["split"]), r

    one = next(p for p in (covers / "Rap & Hip-Hop").iterdir() if not p.name.startswith("."))
    result = run(cli, "classify", "-m", model, "--top", "1", one)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(one)
    label = lines[1].rsplit(None, 1)[0].strip()
    assert label in E2E_GENRES, result.stdout


def test_train_finds_the_covers_of_genres_whose_names_download_rewrites(cli, tmp_path):
    genres = ["Children's Music", "Rock"]
    with CoverServer() as server:
        labels, metadata = e2e_fixture(tmp_path, server.routes, server.url, genres)
        manifest = tmp_path / "manifest.csv"
        prepare(cli, tmp_path, labels, metadata)
        covers = tmp_path / "covers"
        assert run(cli, "download", "--manifest", manifest, "--out", covers).returncode == 0
    result = run(cli, "train", "--data", manifest, "--images", covers, "--input-size", "32", "--width-divisor", "16",
                 "--epochs", "1", "--batch-size", "4", "--out", tmp_path / "m.cgm", timeout=300)
    assert result.returncode == 0 and "no image file" not in result.stderr, result.stderr
