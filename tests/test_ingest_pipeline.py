"""The ingestion pipeline end to end on small inputs the tests build: payloads, de-duplication,
every bad-input case with its reported reason, dry runs, limits, the CLI, and resuming after
Ctrl-C and kill -9."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import error_lines, make_tar, run_cli
from PIL import Image

from asif_vdb import AsifClient, AsifParams, InputError, pair_hash
from ingest.config import IngestConfig
from ingest.decode import DecodeFailure, Decoder
from ingest.pipeline import run_ingest
from ingest.report import IngestSummary

PARAMS = AsifParams(k=8)
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- tiny inputs


def img_bytes(color=(200, 30, 30), size=(16, 16), mode="RGB", fmt="JPEG", noise: int = 0) -> bytes:
    if noise:
        rng = np.random.default_rng(noise)
        im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    else:
        im = Image.new("RGB", size, color)
    if mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    elif mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1x1 PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(img_bytes(size=(1, 1), fmt="PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def distinct(i: int) -> bytes:
    return img_bytes(color=((37 * i) % 256, (91 * i + 50) % 256, (13 * i + 100) % 256))


def write_table(folder: Path, rows: list[tuple[str, str]], name: str = "pairs.csv",
                extra: dict[str, list[str]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption", *(extra or {})])
        for i, (image, caption) in enumerate(rows):
            w.writerow([image, caption, *(col[i] for col in (extra or {}).values())])
    return path


def ingest(client: AsifClient, input_path: Path, report: Path | None = None, **kw) -> IngestSummary:
    config = IngestConfig(input=str(input_path), report=str(report) if report else None,
                          progress=False, **kw)
    return run_ingest(client, config)


def report_reasons(path: Path) -> tuple[Counter, Counter]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return (Counter(r["reason"] for r in lines if r["skipped"]),
            Counter(r["reason"] for r in lines if not r["skipped"]))


def store_state(client: AsifClient) -> dict[str, dict[int, dict]]:
    """Every stored half of both anchor sides, complete or not: id -> payload (the engine's own
    view: these tests are about what a run leaves in the store)."""
    engine = client.engine
    if engine is None:
        return {"image": {}, "text": {}}
    return {m: {p.id: p.payload for points, _ in engine.anchors.scroll(m, visible_only=False) for p in points}
            for m in ("image", "text")}


def assert_consistent(client: AsifClient) -> set[str]:
    """Every caption has its image, all pairs are committed, no content twice; returns hashes."""
    state = store_state(client)
    assert set(state["text"]) == set(state["image"])
    assert all(p["ok"] == 1 for m in state.values() for p in m.values())
    hashes = [p["hash"] for p in state["text"].values()]
    assert len(hashes) == len(set(hashes)), "duplicate pairs in the store"
    assert client.count() == len(hashes)
    return set(hashes)


@pytest.fixture
def client(tmp_path):
    with AsifClient(tmp_path / "store", params=PARAMS) as c:
        yield c


# --------------------------------------------------------------------------- the happy path


def test_table_pairs_payloads_and_shared_images(client, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"im{i}.jpg").write_bytes(distinct(i))
    rows = [(f"im{i}.jpg", f"caption {c} of image {i}") for i in range(3) for c in range(2)]
    table = write_table(data, rows, extra={"license": ["cc-by"] * 6, "hash": ["x"] * 6})
    s = ingest(client, table, source="mini")
    assert (s.read, s.pairs, s.ingested, s.images_encoded, s.skipped) == (6, 6, 6, 3, {})
    assert s.anchors == client.count() == 6
    state = store_state(client)
    assert_consistent(client)
    payloads = sorted(state["text"].values(), key=lambda p: p["key"])
    first = payloads[0]
    assert first["image"] == str((data / "im0.jpg").resolve())
    assert first["caption"] == "caption 0 of image 0" and first["source"] == "mini"
    assert first["key"] == "pairs.csv/0" and first["license"] == "cc-by"
    assert first["meta_hash"] == "x"  # a meta column cannot overwrite the content hash
    import hashlib

    digest = hashlib.sha256(distinct(0)).hexdigest()
    assert first["hash"] == pair_hash(digest, "caption 0 of image 0")
    # the two captions of one image share its vector; different images do not
    assert client.engine is not None
    ids, rows = client.engine.anchors.vectors(client.anchor_ids(), "image")
    vecs = dict(zip(ids.tolist(), rows))
    by_key = {p["key"]: i for i, p in state["image"].items()}
    np.testing.assert_allclose(vecs[by_key["pairs.csv/0"]], vecs[by_key["pairs.csv/1"]], atol=1e-6)
    assert float(vecs[by_key["pairs.csv/0"]] @ vecs[by_key["pairs.csv/2"]]) < 0.9999
    # the vectors are the encoder's own for that image
    expected = client.encode_images([data / "im0.jpg"])[0]
    np.testing.assert_allclose(vecs[by_key["pairs.csv/0"]], expected, atol=1e-4)


def test_rerun_adds_nothing_and_loads_no_model(client, tmp_path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(img_bytes(color=(i * 60, 20, 20), fmt="PNG"))
        (folder / f"{i}.txt").write_text(f"red number {i}\nanother caption {i}\n")
    first = ingest(client, folder)
    assert (first.ingested, first.images_encoded) == (8, 4)
    again = ingest(client, folder, report=tmp_path / "again.jsonl")
    assert (again.ingested, again.already_stored, again.images_encoded) == (0, 8, 0)
    assert again.seconds["decode"] == 0 and again.seconds["encode_image"] == 0
    assert report_reasons(tmp_path / "again.jsonl")[0] == Counter(already_stored=8)
    assert client.count() == 8
    assert_consistent(client)


def test_limit_is_a_prefix_and_resumes(client, tmp_path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for i in range(6):
        (data / f"{i}.jpg").write_bytes(distinct(i))
    table = write_table(data, [(f"{i}.jpg", f"pair {i}") for i in range(6)])
    assert ingest(client, table, limit=2).ingested == 2
    s = ingest(client, table, limit=5)
    assert (s.pairs, s.already_stored, s.ingested) == (5, 2, 3)
    captions = sorted(p["caption"] for p in store_state(client)["text"].values())
    assert captions == [f"pair {i}" for i in range(5)]


def test_webdataset_shards_and_unsafe_members(client, tmp_path) -> None:
    shards = tmp_path / "shards"
    for n in range(2):
        members = []
        for i in range(3):
            key = f"{n}{i:04d}"
            members += [(f"{key}.jpg", distinct(10 * n + i)),
                        (f"{key}.txt", f"shard {n} item {i}".encode()),
                        (f"{key}.json", json.dumps({"url": f"http://x/{key}"}).encode())]
        make_tar(shards / f"{n:05d}.tar", members)
    make_tar(shards / "00002.tar", [
        ("/etc/evil.jpg", distinct(90)), ("/etc/evil.txt", b"absolute"),
        ("../up.jpg", distinct(91)), ("../up.txt", b"dot dot"),
        ("ok.jpg", distinct(92)), ("ok.txt", b"the safe one"),
    ])
    members = [(f"t{i}.{ext}", data) for i in range(3)
               for ext, data in (("jpg", distinct(50 + i)), ("txt", b"truncated"))]
    whole = make_tar(tmp_path / "whole.tar", members).read_bytes()
    (shards / "00003.tar").write_bytes(whole[:2560 + 512 + 300])  # cut inside t1.jpg's data
    report = tmp_path / "r.jsonl"
    s = ingest(client, shards / "{00000..00003}.tar", report=report)
    assert s.format == "webdataset" and s.ingested == 8  # 6 + ok + the first whole sample of 00003
    skipped, _ = report_reasons(report)
    assert skipped == Counter(unsafe_path=4, bad_shard=1, missing_image=1)
    texts = store_state(client)["text"].values()
    payload = next(p for p in texts if p["caption"] == "shard 1 item 2")
    assert payload["url"] == "http://x/10002" and payload["image"].endswith("00001.tar::10002.jpg")


# --------------------------------------------------------------------------- bad input


def test_every_bad_input_is_skipped_with_its_reason(client, tmp_path) -> None:
    data = tmp_path / "bad"
    data.mkdir()
    files = {
        "good.jpg": distinct(1),
        "gray.jpg": img_bytes(mode="L", color=(90, 90, 90)),
        "cmyk.jpg": img_bytes(mode="CMYK", color=(10, 200, 40)),
        "palette.png": img_bytes(mode="P", fmt="PNG", color=(0, 0, 255)),
        "alpha.png": img_bytes(mode="RGBA", fmt="PNG", color=(255, 0, 255)),
        "copy_of_good.jpg": distinct(1),
        "tiny.png": img_bytes(size=(1, 1), fmt="PNG"),
        "corrupt.jpg": b"\xff\xd8\xff\xe0 this is not a jpeg at all",
        "truncated.jpg": img_bytes(size=(64, 64), noise=7)[:700],
        "empty.jpg": b"",
        "bomb.png": bomb_png(),
        "long.jpg": distinct(2),
    }
    for name, blob in files.items():
        (data / name).write_bytes(blob)
    long_caption = "a very long caption " * 100
    rows = [
        ("good.jpg", "a good pair"),
        ("gray.jpg", "grayscale"), ("cmyk.jpg", "cmyk"), ("palette.png", "palette"),
        ("alpha.png", "alpha"),
        ("good.jpg", "a good pair"),  # duplicate row
        ("copy_of_good.jpg", "  a good pair "),  # same bytes, same stripped caption: duplicate
        ("copy_of_good.jpg", "another caption"),  # same image, new caption: a new pair
        ("tiny.png", "one pixel"),
        ("corrupt.jpg", "corrupt"), ("truncated.jpg", "truncated"), ("empty.jpg", "empty file"),
        ("bomb.png", "bomb"),
        ("missing.jpg", "no such file"),
        ("good.jpg", ""), ("good.jpg", " \t\n "),
        ("long.jpg", long_caption),
    ]
    table = write_table(data, rows)
    report = tmp_path / "report.jsonl"
    s = ingest(client, table, report=report)
    expected = Counter(duplicate=2, image_too_small=1, corrupt_image=3, decompression_bomb=1,
                       missing_image=1, empty_caption=2)
    skipped, notes = report_reasons(report)
    assert skipped == expected and s.skipped == dict(expected)
    assert notes == Counter(caption_truncated=1) and s.notes == {"caption_truncated": 1}
    # good, 4 converted modes, the new caption of the copy, the long caption
    assert s.ingested == 7 and client.count() == 7
    assert s.read == len(rows) and s.pairs == len(rows) - 1  # the missing file is a reader skip
    assert_consistent(client)
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    bomb = next(r for r in lines if r["reason"] == "decompression_bomb")
    assert bomb["key"] == "pairs.csv/12" and "bomb.png" in bomb["detail"]
    assert bomb["stage"] == "decode"
    trunc = next(r for r in lines if r["reason"] == "caption_truncated")
    assert trunc["key"] == "pairs.csv/16" and "256" in trunc["detail"]
    stored = {p["caption"] for p in store_state(client)["text"].values()}
    assert long_caption.strip() in stored  # kept whole in the payload; the encoder reads 256 tokens
    # the second run finds everything stored and the same bad samples
    s2 = ingest(client, table, report=report)
    skipped2, _ = report_reasons(report)
    assert s2.ingested == 0
    assert skipped2 == expected - Counter(duplicate=2) + Counter(already_stored=9)


def test_a_reader_failing_mid_stream_ends_the_input_not_the_run(client, tmp_path,
                                                                monkeypatch) -> None:
    import ingest.pipeline as pipeline
    from ingest.sample import Sample

    image = tmp_path / "a.jpg"
    image.write_bytes(distinct(5))

    class Failing:
        source = "failing"

        def estimate(self) -> int:
            return 3

        def __iter__(self):
            yield Sample("k0", str(image), "first", image_path=str(image), source="failing")
            yield Sample("k1", str(image), "second", image_path=str(image), source="failing")
            raise OSError("disk went away")

    monkeypatch.setattr(pipeline, "open_reader", lambda *a, **k: Failing())
    report = tmp_path / "r.jsonl"
    s = ingest(client, tmp_path, report=report, format="table")
    assert s.ingested == 2 and s.skipped == {"read_error": 1}
    assert "disk went away" in report.read_text()


def test_decoder_pixel_limit_and_min_side() -> None:
    decoder = Decoder(None, min_side=8, max_pixels=1000)
    assert isinstance(decoder(img_bytes(size=(30, 30)), "ok"), Image.Image)
    big = decoder(img_bytes(size=(40, 40)), "big.jpg")
    assert isinstance(big, DecodeFailure) and big.reason == "decompression_bomb"
    assert "big.jpg" in big.detail
    small = decoder(img_bytes(size=(30, 4)), "thin")
    assert isinstance(small, DecodeFailure) and small.reason == "image_too_small"


def test_inline_compute_pool_runs_each_job_in_the_asking_thread() -> None:
    """Inline jobs run when (and where) their result is first asked for, once; errors re-raise."""
    import threading

    from ingest.encode import ComputePool

    pool = ComputePool(1, None, inline=True)
    ran: list[tuple[int, str]] = []

    def job(i: int) -> int:
        ran.append((i, threading.current_thread().name))
        if i < 0:
            raise ValueError("bad job")
        return i * 10

    first, second, bad = pool.submit(job, 1), pool.submit(job, 2), pool.submit(job, -1)
    assert ran == [] and not first.done()
    assert second.result() == 20 and first.result() == 10 and second.result() == 20
    assert ran == [(2, threading.current_thread().name), (1, threading.current_thread().name)]
    with pytest.raises(ValueError, match="bad job"):
        bad.result()
    with pytest.raises(ValueError, match="bad job"):
        bad.result()
    assert len(ran) == 3
    pool.submit(job, 3)  # never asked for: never runs
    pool.close()
    assert len(ran) == 3


@pytest.mark.parametrize("inline", [False, True])
def test_image_stage_sends_the_last_partial_batch_beside_the_others(inline: bool) -> None:
    """Once input ends, the short last batch goes out at once (it used to wait for every other
    batch to finish, leaving a core idle at the end); results come back for every image."""
    from ingest.encode import ComputePool, ImageStage
    from ingest.report import StageTimes

    sizes: list[int] = []

    def encode(xs: list) -> np.ndarray:
        sizes.append(len(xs))
        return np.ones((len(xs), 3), np.float32)

    pool = ComputePool(1, None, inline=inline)
    decoder = Decoder(lambda im: np.zeros(3), min_side=1, max_pixels=10**6)
    stage = ImageStage(lambda: (decoder, encode, 4), lambda: pool, prefetch_batches=4,
                       workers=2, times=StageTimes())
    try:
        digests = [f"d{i}" for i in range(6)]
        for i, d in enumerate(digests):
            stage.want(d, img_bytes(size=(9 + i, 9)), f"img{i}")
        assert len(stage.jobs) == 1 and not stage.ready(digests)  # 4 sent, 2 decoding
        stage.close_input()
        assert len(stage.jobs) == 2  # the partial batch is in flight beside the full one
        stage.ensure(digests)
        assert sorted(sizes) == [2, 4] and all(stage.result(d) is not None for d in digests)
    finally:
        stage.close()
        pool.close()


def test_dry_run_counts_and_writes_nothing(tmp_path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "a.jpg").write_bytes(distinct(3))
    (data / "b.jpg").write_bytes(b"broken")
    table = write_table(data, [("a.jpg", "one"), ("a.jpg", "two"), ("b.jpg", "three")])
    with AsifClient(location=":memory:", params=PARAMS) as c:
        s = ingest(c, table, dry_run=True)
        assert (s.ingested, s.skipped) == (2, {"corrupt_image": 1})
        assert s.images_encoded == 0 and c.count() == 0


def test_bad_configuration_raises_input_error(client, tmp_path) -> None:
    table = write_table(tmp_path, [("a.jpg", "x")])
    with pytest.raises(InputError, match="no column 'picture'"):
        ingest(client, table, image_column="picture")
    with pytest.raises(InputError, match="not found"):
        ingest(client, tmp_path / "nope.csv")
    with pytest.raises(InputError, match="batch must be at least 1"):
        ingest(client, table, batch=0)
    with pytest.raises(InputError, match="unknown format"):
        ingest(client, table, format="zip")


# --------------------------------------------------------------------------- the command


def test_cli_end_to_end_report_next_to_store(tmp_path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.jpg").write_bytes(distinct(i))
    (data / "bad.jpg").write_bytes(b"nope")
    table = write_table(data, [(f"{i}.jpg", f"c{i}") for i in range(3)] + [("bad.jpg", "bad")])
    store = tmp_path / "store"
    result = run_cli("ingest", str(table), "--store", str(store), "-k", "8", "--no-progress")
    assert result.exit_code == 0, result.output
    for shown in ("ingested", "corrupt_image", "s encode_image", "pairs/s"):
        assert shown in result.stdout
    report = tmp_path / "store.ingest-report.jsonl"
    assert report_reasons(report)[0] == Counter(corrupt_image=1)
    again = run_cli("ingest", str(table), "--store", str(store), "--json", "--no-progress",
                "--precision", "float32")  # an execution setting: any precision opens the store
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["ingested"] == 0 and summary["already_stored"] == 3 and summary["anchors"] == 3
    dry = run_cli("ingest", str(table), "--store", str(tmp_path / "fresh"), "--dry-run", "--json",
              "--no-progress")
    assert dry.exit_code == 0 and json.loads(dry.stdout.strip().splitlines()[-1])["ingested"] == 3
    assert not (tmp_path / "fresh").exists()


def test_cli_exit_codes(tmp_path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "bad.jpg").write_bytes(b"nope")
    table = write_table(data, [("bad.jpg", "bad"), ("gone.jpg", "missing")])
    store = str(tmp_path / "store")
    nothing = run_cli("ingest", table.as_posix(), "--store", store, "--no-progress")
    assert nothing.exit_code == 1 and len(error_lines(nothing)) == 1
    assert "nothing could be ingested" in error_lines(nothing)[0]
    wrong = run_cli("ingest", table.as_posix(), "--store", store, "--caption-column", "text")
    assert wrong.exit_code == 2 and len(error_lines(wrong)) == 1 and "no column 'text'" in error_lines(wrong)[0]
    assert "Traceback" not in wrong.output and wrong.stdout == ""
    half = run_cli("ingest", table.as_posix(), "--store", store, "--precision", "fp16")
    assert half.exit_code == 2 and "'fp16' is not one of 'auto', 'float32', 'bfloat16'" in half.stderr
    missing = run_cli("ingest", str(tmp_path / "nope"), "--store", store)
    assert missing.exit_code == 2 and len(error_lines(missing)) == 1 and "not found" in error_lines(missing)[0]
    assert missing.stdout == ""


# --------------------------------------------------------------------------- interrupted runs


class InterruptedClient:
    """The public client, but Ctrl-C arrives at the write after ``writes`` writes."""

    def __init__(self, client: AsifClient, writes: int) -> None:
        self._client, self._left = client, writes

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def add_anchor_embeddings(self, *args, **kwargs):
        if self._left == 0:
            raise KeyboardInterrupt
        self._left -= 1
        return self._client.add_anchor_embeddings(*args, **kwargs)


def test_interrupted_in_process_then_rerun_equals_clean_run(tmp_path) -> None:
    """Ctrl-C after three batches (in-process, cheap); the rerun completes the same store."""
    data = tmp_path / "d"
    data.mkdir()
    rows = []
    for i in range(40):
        (data / f"{i}.png").write_bytes(img_bytes(size=(12, 12), fmt="PNG", noise=i + 1))
        rows += [(f"{i}.png", f"noise {i}"), (f"{i}.png", f"second caption {i}")]
    table = write_table(data, rows)
    with AsifClient(tmp_path / "store", params=PARAMS) as c, pytest.raises(KeyboardInterrupt):
        ingest(InterruptedClient(c, writes=3), table, batch=8)  # type: ignore[arg-type]  # a proxy
    with AsifClient(tmp_path / "store") as c:
        assert c.count() == 24
        s = ingest(c, table, batch=8)
        assert (s.already_stored, s.ingested) == (24, 56)
        resumed = assert_consistent(c)
    with AsifClient(tmp_path / "clean", params=PARAMS) as clean:
        assert ingest(clean, table).ingested == 80
        assert assert_consistent(clean) == resumed


def _next_anchor_id(store: Path) -> int:
    try:
        return json.loads((store / "asif_config.json").read_text())["next_anchor_id"]
    except (OSError, ValueError, KeyError):
        return 0


def _interrupt(cmd: list[str], store: Path, sig: int, after: int, env: dict) -> int:
    """Run the command; send `sig` once `after` anchor ids are allocated; returns its exit code."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and _next_anchor_id(store) < after:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the signal: {proc.stderr.read()!r}"
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_resume_after_ctrl_c_and_kill_equals_one_clean_run(tmp_path) -> None:
    """Real signals on the real command: ~200 images, SIGINT, resume, SIGKILL, resume (~30-60 s)."""
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(200):
        (data / f"{i:03d}.png").write_bytes(img_bytes(size=(12, 12), fmt="PNG", noise=i + 1))
        rows.append((f"{i:03d}.png", f"noise picture {i}"))
    table = write_table(data, rows)
    store = tmp_path / "store"
    args = ["ingest", str(table), "--store", str(store), "-k", "8", "--batch", "8",
            "--image-batch", "4", "--no-progress"]
    cmd = [sys.executable, "-c", "from asif_vdb.cli import main; main()", *args]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    # Ctrl-C: a clean stop with exit code 130
    assert _interrupt(cmd, store, signal.SIGINT, after=24, env=env) == 130
    with AsifClient(store) as c:
        after_int = c.count()
        assert 0 < after_int < 200
        assert_consistent(c)
    # kill -9 later in the resumed run: it may leave a pair half-written, repaired on open
    assert _interrupt(cmd, store, signal.SIGKILL, after=after_int + 40, env=env) == -signal.SIGKILL
    with AsifClient(store) as c:
        after_kill = c.count()
        assert after_int < after_kill < 200
        assert_consistent(c)
    # the same command again finishes the job
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["already_stored"] == after_kill and summary["ingested"] == 200 - after_kill
    # one uninterrupted run for comparison
    with AsifClient(tmp_path / "clean", params=PARAMS) as clean:
        assert ingest(clean, table).ingested == 200
        clean_hashes = assert_consistent(clean)
    with AsifClient(store) as c:
        assert c.count() == 200
        assert assert_consistent(c) == clean_hashes
        assert len(store_state(c)["text"]) == 200
