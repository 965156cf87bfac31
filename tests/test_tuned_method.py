"""The tuned method as the default: transforms fitted once a store has enough anchors, refitted when
they change a lot, hub normalisation with them; plain ASIF one option away; ``tune`` choosing the
settings from held-out anchors. Synthetic stores with made-up encoders (no model loaded), checked
against a direct dense computation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import FAKE_IMAGE, FAKE_TEXT, REPO, restore_v1_store, run_cli, structured

from asif_vdb import AsifClient, AsifParams
from asif_vdb.maths import relative
from asif_vdb.maths.hub import hub_normalise_rows, hub_statistics, reference_sample
from asif_vdb.maths.transforms import Transform, fit_transform
from asif_vdb.maths.tune import Grid
from asif_vdb.schema.params import FitOptions
from asif_vdb.workflows import tune as tuning

DI, DT = 24, 16
K, P = 12, 2.0
IMAGE_FIT, TEXT_FIT = FitOptions(power=0.5, whiten=3.0), FitOptions(whiten=1.0)


def tuned(**extra) -> AsifParams:
    return AsifParams(**{"k": K, "p": P, "fit_min_anchors": 60, "image_fit": IMAGE_FIT, "text_fit": TEXT_FIT, **extra})


def open_new(path, params: AsifParams) -> AsifClient:
    return AsifClient(path, params=params, image_identity=FAKE_IMAGE.model_copy(update={"dim": DI}),
                      text_identity=FAKE_TEXT.model_copy(update={"dim": DT}))


def pairs(rng: np.random.Generator, n: int, tag: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    return structured(rng, n, DI), structured(rng, n, DT), [{"caption": f"{tag} {i}", "image": f"{tag}{i}.jpg"}
                                                             for i in range(n)]


def stored(vectors: np.ndarray, opts: FitOptions) -> Transform:
    """The transform the store fits on these anchors, as it reads back (float32 arrays)."""
    t = fit_transform(vectors, opts.power, opts.centre, opts.whiten)
    return Transform(t.power, t.mean.astype(np.float32).astype(np.float64), t.matrix.astype(np.float32).astype(np.float64))


def dense_search(img: np.ndarray, txt: np.ndarray, items: np.ndarray, queries: np.ndarray, fitted: bool) -> np.ndarray:
    """Scores of text gallery ``items`` for image ``queries`` over anchors (img, txt): plain ASIF, or
    with the transforms fitted on the anchors and hub statistics over the reference anchor images."""
    ti = stored(img, IMAGE_FIT) if fitted else None
    tt = stored(txt, TEXT_FIT) if fitted else None
    a_i, a_t = (ti.apply(img), tt.apply(txt)) if ti and tt else (img, txt)
    items_rel = relative.dense_relative(tt.apply(items) if tt else items, a_t, K, P)
    s = relative.scores(relative.dense_relative(ti.apply(queries) if ti else queries, a_i, K, P), items_rel)
    if not fitted:
        return s
    ref = reference_sample(np.arange(len(img)))
    mean, std = hub_statistics(relative.scores(relative.dense_relative(a_i[ref], a_i, K, P), items_rel))
    return hub_normalise_rows(s, mean, std)


def gallery_scores(client: AsifClient, queries: np.ndarray, n_items: int) -> np.ndarray:
    out = np.zeros((len(queries), n_items), np.float32)
    for row, hits in enumerate(client.search_embeddings(queries, "image", "notes", top=n_items)):
        for h in hits:
            out[row, h.payload["row"]] = h.score
    return out


def test_defaults_tuned_plain_and_explicit() -> None:
    d = AsifParams()
    assert (d.method, d.k, d.stored_k, d.p) == ("tuned", 3200, 3200, 1.5)
    plain = AsifParams(method="plain")
    assert (plain.k, plain.p, plain.stored_k) == (800, 1.0, 800)
    assert (d.aggregate, plain.aggregate) == ("pool", "max")  # label sets: pooled prompts, or the paper's rule
    # a k or p given keeps the paper's values for the rest, and one k for queries and candidates
    assert (AsifParams(k=10).p, AsifParams(k=10).stored_k, AsifParams(p=2.0).k) == (1.0, 10, 800)


def test_a_tuned_store_fits_at_the_threshold_and_refits_after_a_quarter_changed(tmp_path) -> None:
    rng = np.random.default_rng(0)
    img, txt, pay = pairs(rng, 100, "a")
    items, queries = structured(rng, 9, DT), structured(rng, 7, DI)
    with open_new(tmp_path / "s", tuned()) as client:
        client.add_anchor_embeddings(img[:40], txt[:40], pay[:40])
        client.index_gallery_embeddings("notes", items, "text", [{"row": i} for i in range(len(items))])
        assert client.transforms() == {} and client.gallery("notes").normalise == "auto"
        # below the threshold: plain ASIF exactly, no hub normalisation
        np.testing.assert_allclose(gallery_scores(client, queries, 9),
                                   dense_search(img[:40], txt[:40], items, queries, False), atol=1e-5)
        client.add_anchor_embeddings(img[40:70], txt[40:70], pay[40:70])
        fits = client.transforms()
        assert fits["image"]["anchors"] == 70 and fits["image"]["whiten"] == 3.0 and fits["text"]["whiten"] == 1.0
        np.testing.assert_allclose(gallery_scores(client, queries, 9),
                                   dense_search(img[:70], txt[:70], items, queries, True), atol=1e-4)
        client.add_anchor_embeddings(img[70:80], txt[70:80], pay[70:80])  # 10 < 70 / 4: the fit stays
        assert client.transforms()["image"]["checksum"] == fits["image"]["checksum"]
        assert client.transforms()["image"]["changed"] == 10
        client.delete_anchors(client.anchor_ids()[:10])  # 20 changed >= 17.5: refit on the 70 left
        again = client.transforms()
        assert again["image"]["changed"] == 0 and again["image"]["checksum"] != fits["image"]["checksum"]
        left = np.asarray(client.anchor_ids())
        assert client.engine is not None and client.engine.config.journal == []
    with AsifClient(tmp_path / "s") as client:  # reopened: the same method and fit
        assert client.params == tuned() and client.transforms() == again
        np.testing.assert_allclose(gallery_scores(client, queries, 9),
                                   dense_search(img[left], txt[left], items, queries, True), atol=1e-4)


def test_plain_method_never_fits_and_old_stores_open_plain(tmp_path) -> None:
    rng = np.random.default_rng(1)
    img, txt, pay = pairs(rng, 80, "b")
    with open_new(tmp_path / "s", AsifParams(method="plain", k=K, p=P, fit_min_anchors=2)) as client:
        client.add_anchor_embeddings(img, txt, pay)
        assert client.transforms() == {}
    restore_v1_store(tmp_path / "v1")
    with AsifClient(tmp_path / "v1") as client:  # written before the tuned method: plain, as it was
        assert client.params.method == "plain" and client.params.k == 10


def test_set_transform_by_hand_is_what_a_tuned_store_refits_with(tmp_path) -> None:
    rng = np.random.default_rng(2)
    img, txt, pay = pairs(rng, 90, "c")
    with open_new(tmp_path / "s", tuned(fit_min_anchors=1000)) as client:
        client.add_anchor_embeddings(img[:60], txt[:60], pay[:60])
        client.set_transform(image={"whiten": 2.0}, text={"whiten": 5.0})
        assert client.params.image_fit == FitOptions(whiten=2.0) and client.params.tuned
        client.add_anchor_embeddings(img[60:], txt[60:], pay[60:])  # 30 >= 60 / 4: refit with those options
        assert client.transforms()["image"]["anchors"] == 90 and client.transforms()["image"]["whiten"] == 2.0
        client.set_transform(image=None, text=None)  # raw cosines: the store leaves the tuned method
        assert client.params.method == "plain" and client.transforms() == {}


def test_an_auto_fit_killed_midway_is_finished_on_open(tmp_path) -> None:
    """The add that crosses the threshold finishes; the fit it starts is journaled like any refit."""
    rng = np.random.default_rng(3)
    img, txt, pay = pairs(rng, 40, "d")
    with open_new(tmp_path / "s", tuned()) as client:
        client.add_anchor_embeddings(img, txt, pay)
    code = f"""
import os, sys
import numpy as np
sys.path.insert(0, {str(REPO / 'tests')!r})
from asif_vdb import AsifClient
from helpers import structured
client = AsifClient({str(tmp_path / 's')!r})
backend = client.engine.state.backend
real = backend.upsert
calls = {{"n": 0}}
def dying(collection, *args, **kwargs):
    out = real(collection, *args, **kwargs)
    if collection.endswith("anchor_image") and client.engine.config.journal and \\
            client.engine.config.journal[0].op == "transform":
        os._exit(17)  # the auto fit is rewriting the anchors
    return out
backend.upsert = dying
rng = np.random.default_rng(5)
client.add_anchor_embeddings(structured(rng, 30, {DI}), structured(rng, 30, {DT}),
                             [{{"caption": f"k {{i}}"}} for i in range(30)])
os._exit(0)
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 17, run.stderr
    with AsifClient(tmp_path / "s") as client:
        assert client.count() == 70 and client.engine is not None and client.engine.config.journal == []
        assert client.last_repair.transform_finished == ["image", "text"]
        assert client.transforms()["image"]["anchors"] == 70


def test_tune_scores_held_out_pairs_and_stores_its_choice(tmp_path) -> None:
    rng = np.random.default_rng(4)
    img, txt, pay = pairs(rng, 120, "e")
    path = tmp_path / "s"
    with open_new(path, tuned(fit_min_anchors=10_000)) as client:
        client.add_anchor_embeddings(img, txt, pay)
        grid = Grid(ks=(6, 12), ps=(1.0, 2.0), image_whiten=(1.0, 3.0), text_whiten=(1.0,))
        report = tuning.tune_store(client._session, holdout=20, grid=grid, apply=True)
        assert len(report.rows) == 8 and report.rows[0] == report.chosen
        assert report.rows == sorted(report.rows, key=lambda r: -r.score)
        best = report.chosen
        assert client.params.k == best.k and client.params.p == best.p and client.params.tuned
        assert client.transforms()["image"]["whiten"] == best.image_whiten
        assert client.engine is not None and client.engine.config.journal == []
    result = run_cli("tune", "--store", str(path), "--holdout", "20", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["applied"] is False and len(doc["rows"]) == 81  # the default grid
    result = run_cli("tune", "--store", str(path), "--holdout", "20", "--dry-run")
    assert result.exit_code == 0 and "<- chosen" in result.output and "not stored (--dry-run)" in result.output
    result = run_cli("tune", "--store", str(path), "--holdout", "100")
    assert result.exit_code == 2 and "holds out 100 groups" in result.output + str(result.stderr)


@pytest.mark.parametrize("bad", [{"whiten": -1.0}, {"bogus": 1}])
def test_bad_transform_options_are_refused_before_anything_changes(tmp_path, bad) -> None:
    rng = np.random.default_rng(6)
    img, txt, pay = pairs(rng, 30, "f")
    with open_new(tmp_path / "s", tuned()) as client:
        client.add_anchor_embeddings(img, txt, pay)
        with pytest.raises(Exception, match="whiten|bogus"):
            client.set_transform(image=bad, text={"whiten": 1.0})
        assert client.transforms() == {} and client.params == tuned()
