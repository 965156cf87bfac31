"""Methods beyond plain ASIF (issue 4B): each option through the store equals its dense computation,
and the options survive reopening a store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import anchor_data, run_cli, structured

from asif_vdb import AsifClient, AsifParams, InputError
from asif_vdb.maths import relative
from asif_vdb.maths.hub import MIN_STD, hub_normalise_rows, hub_statistics, reference_sample
from asif_vdb.maths.transforms import Transform, fit_transform, signed_power

K, P = 12, 2.0
PARAMS = AsifParams(k=K, p=P, method="plain")  # the methods one by one, as the user sets them
IMAGE_T = {"power": 0.5, "whiten": 3.0}
TEXT_T = {"whiten": 1.0}
CLASSES = ["dog", "cat", "bird", "ship"]


def fitted(vectors: np.ndarray, opts: dict) -> Transform:
    """The transform a store fits, as it reads back (float32 arrays)."""
    t = fit_transform(vectors, opts.get("power", 1.0), opts.get("centre", True), opts.get("whiten"))
    return Transform(t.power, t.mean.astype(np.float32).astype(np.float64),
                     t.matrix.astype(np.float32).astype(np.float64))


def dense_rel(queries, anchors, t: Transform | None):
    if t is not None:
        queries, anchors = t.apply(queries), t.apply(anchors)
    return relative.dense_relative(queries, anchors, K, P)


def dense_class_scores(client, img, txt, ti, tt, queries, hub: bool, aggregate: str = "max"):
    prompts = client.encode_texts([f"a photo of a {c}." for c in CLASSES])
    cand = dense_rel(prompts, txt, tt)
    s = relative.scores(dense_rel(queries, img, ti), cand)
    if hub:
        ref_ids = reference_sample(np.arange(len(img)))
        mean, std = hub_statistics(relative.scores(dense_rel(img[ref_ids], img, ti), cand))
        s = hub_normalise_rows(s, mean, std)
    return s  # one template: pooling is the identity


# -- pure maths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [{"power": 1.0, "centre": True}, {"power": 0.5, "whiten": 3.0}, {"whiten": 0.5}])
def test_transform_inverts(opts) -> None:
    rng = np.random.default_rng(1)
    x = structured(rng, 200, 64)
    t = fit_transform(x[:150], opts.get("power", 1.0), opts.get("centre", True), opts.get("whiten"))
    y = t.apply(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(t.invert(y), x, atol=2e-4)


def test_whitening_decorrelates_and_centring_removes_the_mean() -> None:
    rng = np.random.default_rng(2)
    x = structured(rng, 2000, 16)
    t = fit_transform(x, whiten=1e-9)  # (almost) no shrinkage: full whitening
    z = (signed_power(x, 1.0) - t.mean) @ t.matrix
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(16), atol=1e-3)
    c = fit_transform(x)  # centring only
    assert np.abs(c.apply(x).mean(axis=0)).max() < np.abs(x.mean(axis=0)).max() / 5


def test_hub_normalisation_and_reference_sample() -> None:
    s = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    mean, std = hub_statistics(s[:2])
    np.testing.assert_allclose(mean, [2.0, 0.0, 2.0])
    np.testing.assert_allclose(std, [1.0, MIN_STD, MIN_STD])
    z = hub_normalise_rows(s, mean, std)
    np.testing.assert_allclose(z[0], [-1.0, 0.0, 0.0])
    np.testing.assert_allclose(z[2], 0.0)  # no evidence: stays zero ("unknown")
    ids = reference_sample(np.arange(10, 30), 4)
    assert list(ids) == [10, 15, 20, 25]
    assert list(reference_sample([3, 1, 2], 10)) == [1, 2, 3]


def test_bad_options() -> None:
    with pytest.raises(InputError):
        fit_transform(np.ones((1, 4)))
    with pytest.raises(InputError):
        fit_transform(np.eye(4), power=0)
    with AsifClient(location=":memory:", params=PARAMS) as client:
        img, txt, pay = anchor_data(10)
        client.add_anchor_embeddings(img, txt, pay)
        with pytest.raises(InputError, match="unknown transform options"):
            client.set_transform(image={"shrink": 3})
        with pytest.raises(InputError, match="normalise"):
            client.create_label_set("x", CLASSES, normalise="zscore")  # type: ignore[arg-type]
    with AsifClient(location=":memory:", params=PARAMS) as client:  # one image shared by 3 pairs
        img, txt, pay = anchor_data(3)
        client.add_anchor_embeddings(np.repeat(img[:1], 3, axis=0), txt,
                                     [{**p, "hash": str(i)} for i, p in enumerate(pay)])
        with pytest.raises(InputError, match=r"maps anchor\(s\) \[0, 1, 2\] to zero"):
            client.set_transform(image={"centre": True})
        assert client.transforms() == {} and client.engine.config.journal == []


# -- through the store --------------------------------------------------------------------------------
def test_transform_and_hub_equal_dense() -> None:
    img, txt, pay = anchor_data()
    rng = np.random.default_rng(5)
    queries = structured(rng, 15, 1280)
    with AsifClient(location=":memory:", params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, pay)
        plain = client.engine.anchors.relative(queries, "image")
        np.testing.assert_allclose(plain.toarray(), dense_rel(queries, img, None).toarray(), atol=1e-6)
        client.create_label_set("plain", CLASSES)
        client.create_label_set("hub", CLASSES, normalise="hub")
        info = client.set_transform(image=IMAGE_T, text=TEXT_T)
        assert info["image"]["whiten"] == 3.0 and info["image"]["anchors"] == 60
        ti, tt = fitted(img, IMAGE_T), fitted(txt, TEXT_T)
        got = client.engine.anchors.relative(queries, "image")
        want = dense_rel(queries, img, ti)
        assert (got != 0).toarray().tolist() == (want != 0).toarray().tolist()
        np.testing.assert_allclose(got.toarray(), want.toarray(), atol=1e-5)
        assert not np.allclose(got.toarray(), plain.toarray())  # the transform changed neighbours
        # label sets built before the transform were recomputed with it
        np.testing.assert_allclose(client.class_scores(queries, "plain"),
                                   dense_class_scores(client, img, txt, ti, tt, queries, hub=False), atol=1e-5)
        hub = client.class_scores(queries, "hub")
        np.testing.assert_allclose(hub, dense_class_scores(client, img, txt, ti, tt, queries, hub=True), atol=1e-4)
        assert not np.allclose(hub, client.class_scores(queries, "plain"))
        # reading anchors back gives the raw vectors (the stored ones are transformed)
        ids, got_img = client.engine.anchors.vectors([0, 1], "image")
        assert ids.tolist() == [0, 1]
        np.testing.assert_allclose(got_img, img[:2], atol=2e-4)


def test_gallery_hub_equals_dense() -> None:
    img, txt, pay = anchor_data()
    rng = np.random.default_rng(6)
    items, queries = structured(rng, 30, 1280), structured(rng, 5, 384)
    with AsifClient(location=":memory:", params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, pay)
        client.set_transform(image=IMAGE_T, text=TEXT_T)
        ids = client.index_gallery_embeddings("pics", items, "image")
        client.normalise_gallery("pics", "hub")
        ti, tt = fitted(img, IMAGE_T), fitted(txt, TEXT_T)
        item_rel = dense_rel(items, img, ti)
        s = relative.scores(dense_rel(queries, txt, tt), item_rel)
        ref = reference_sample(np.arange(len(txt)))
        mean, std = hub_statistics(relative.scores(dense_rel(txt[ref], txt, tt), item_rel))
        z = hub_normalise_rows(s, mean, std)
        hits = client.search_embeddings(queries, "text", "pics", top=7)
        for row, h in enumerate(hits):
            want = np.argsort(-z[row], kind="stable")[:7]
            assert [x.id for x in h] == [ids[j] for j in want]
            np.testing.assert_allclose([x.score for x in h], z[row, want], atol=1e-4)
            assert all("hub" not in x.payload for x in h)
        assert client.gallery("pics").normalise == "hub"


def test_options_persist_and_stay_fixed_under_updates(tmp_path) -> None:
    img, txt, pay = anchor_data(70)
    first = 60
    rng = np.random.default_rng(7)
    queries = structured(rng, 12, 1280)
    store = tmp_path / "store"
    with AsifClient(store, params=PARAMS) as client:
        client.add_anchor_embeddings(img[:first], txt[:first], pay[:first])
        client.set_transform(image=IMAGE_T, text=TEXT_T)
        client.create_label_set("hub", CLASSES, normalise="hub")
        before = client.class_scores(queries, "hub")
        records = client.transforms()
    with AsifClient(store) as client:
        assert client.transforms() == records
        assert client.label_set("hub").normalise == "hub"
        np.testing.assert_allclose(client.class_scores(queries, "hub"), before, atol=1e-6)
        # new anchors use the transform fitted on the first 60 (it is not refitted implicitly)
        client.add_anchor_embeddings(img[first:], txt[first:], pay[first:])
        assert client.transforms() == records
        ti, tt = fitted(img[:first], IMAGE_T), fitted(txt[:first], TEXT_T)
        want = dense_class_scores(client, img, txt, ti, tt, queries, hub=True)
        np.testing.assert_allclose(client.class_scores(queries, "hub"), want, atol=1e-4)
        # refitting is explicit, and removing the transforms gives plain ASIF back
        client.set_transform(modalities=["image", "text"])
        assert client.transforms() == {}
        plain = dense_class_scores(client, img, txt, None, None, queries, hub=True)
        np.testing.assert_allclose(client.class_scores(queries, "hub"), plain, atol=1e-4)


def test_cli_methods(tmp_path) -> None:
    img, txt, pay = anchor_data(40)
    store = tmp_path / "store"
    with AsifClient(store, params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, pay)
        client.create_label_set("animals", CLASSES)
    r = run_cli("methods", "transform", "--store", store, "--image-power", "0.5", "--image-whiten", "3",
                "--text-whiten", "1")
    assert r.exit_code == 0, r.output
    assert "image: power=0.5 centre=True whiten=3.0 (fitted on 40 anchors)" in r.stdout
    r = run_cli("methods", "hub", "animals", "--store", store)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "label set animals: normalise=hub"
    r = run_cli("doctor", "--store", store)  # stored vectors = their recomputation
    assert r.exit_code == 0, r.output
    shown = json.loads(run_cli("methods", "show", "--store", store).stdout)
    assert shown["label_sets"] == {"animals": "hub"} and set(shown["transforms"]) == {"image", "text"}
    r = run_cli("methods", "hub", "nothing", "--store", store)
    assert r.exit_code == 2 and "no label set 'nothing'" in r.stderr
    r = run_cli("methods", "transform", "--store", store)
    assert r.exit_code == 2 and "give exactly one of --recommended, --plain or per-side options" in r.stderr
    r = run_cli("methods", "transform", "--store", store, "--plain")
    assert r.exit_code == 0 and "plain ASIF" in r.stdout
    with AsifClient(store) as client:
        assert client.transforms() == {}
        assert client.label_set("animals").normalise == "hub"


def test_prune_carries_the_transform_and_hub_normalisation(tmp_path) -> None:
    """A pruned store keeps the full store's method: the same fitted transforms (its anchors are
    stored through them) and a hub-normalised label set stays hub-normalised."""
    img, txt, pay = anchor_data(60)
    rng = np.random.default_rng(9)
    queries = structured(rng, 10, 1280)
    with AsifClient(location=":memory:", params=PARAMS) as client:
        client.add_anchor_embeddings(img, txt, pay)
        client.set_transform(image=IMAGE_T, text=TEXT_T)
        client.create_label_set("hub", CLASSES, normalise="hub")
        report = client.prune("hub", 30, tmp_path / "small", k=K)
        records = client.transforms()
    assert report["anchors_written"] == 30 and report["k"] == K
    ti, tt = fitted(img, IMAGE_T), fitted(txt, TEXT_T)  # fitted on all 60 anchors, as in the full store
    with AsifClient(tmp_path / "small") as small:
        assert small.transforms() == records
        assert small.label_set("hub").normalise == "hub" and small.label_set("hub").hub_mean is not None
        source = small.anchors(list(range(report["anchors_written"])))  # new id -> the full store's
        kept = [source[i]["pruned_from"] for i in range(len(source))]
        want = dense_rel(queries, img[kept], ti)
        got = small.engine.anchors.relative(queries, "image")
        np.testing.assert_allclose(got.toarray(), want.toarray(), atol=1e-5)
        # the hub statistics come from the pruned store's own anchors, under the carried transforms
        want_hub = dense_class_scores(small, img[kept], txt[kept], ti, tt, queries, hub=True)
        np.testing.assert_allclose(small.class_scores(queries, "hub"), want_hub, atol=1e-3)
