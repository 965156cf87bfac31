"""asif serve's API through FastAPI's test client, on the shapes store the tests build: answers equal
the Python client's, anchor changes are live, writes need the key, bad input is one 4xx line, and a
query sees the store wholly before or wholly after each concurrent update."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import DI, DT, image_bytes, make_store, synthetic_labels, unit_rows
from PIL import Image

from asif_vdb import AsifClient
from asif_vdb.features.report import group_by_image
from asif_vdb.serve import Service, Settings, create_app

KEY = "s3cret-key"


@pytest.fixture
def api(serve_copy):
    """(test client, service, queries) over a private copy of the served shapes store."""
    store, queries, _ = serve_copy
    client = AsifClient(store)
    service = Service(client, Settings(uploads=store / "uploads"))
    with TestClient(create_app(service)) as http:
        yield http, service, queries
    client.close()


def png(path: Path) -> bytes:
    return path.read_bytes()


def one_line(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail
    return detail


def test_answers_equal_the_python_clients(api) -> None:
    http, service, queries = api
    client = service.client
    query, shape = queries[0]
    # classify: uploaded images against a label set, "unknown" applied as the client does
    r = http.post("/classify", data={"labels": "shapes", "top": "3"},
                  files=[("images", (q.name, png(q), "image/png")) for q, _ in queries[:3]])
    assert r.status_code == 200, r.text
    want = client.classify([q for q, _ in queries[:3]], "shapes", 3)
    got = r.json()["results"]
    assert [g["label"] for g in got] == [w.label for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose([p["score"] for p in g["predictions"]], [p.score for p in w.predictions], atol=1e-6)
    assert r.json()["images"] == [q.name for q, _ in queries[:3]]
    # search: a text against the anchors (their images), an image against a gallery, with a filter
    r = http.post("/search", data={"text": "a red circle", "gallery": "anchors", "top": "5"})
    want_hits = client.search("a red circle", "anchors", 5)
    assert [h["id"] for h in r.json()["results"][0]] == [h.id for h in want_hits]
    np.testing.assert_allclose([h["score"] for h in r.json()["results"][0]], [h.score for h in want_hits], atol=1e-6)
    assert r.headers["X-Asif-Updates"] == "0"
    r = http.post("/search", data={"gallery": "pics", "top": "9"}, files={"image": ("q.png", png(query), "image/png")})
    assert [h["id"] for h in r.json()["results"][0]] == [h.id for h in client.search(query, "pics", 9)]
    r = http.post("/search", data={"gallery": "pics", "top": "9", "where": json.dumps({"shape": shape})},
                  files={"image": ("q.png", png(query), "image/png")})
    filtered = r.json()["results"][0]
    assert filtered and all(h["payload"]["shape"] == shape for h in filtered)
    everything = client.search(query, "pics", 9)
    assert [h["id"] for h in filtered] == [h.id for h in everything if h.payload["shape"] == shape]
    # the embeddings form of each query gives the same answers
    vec = client.encode_images([query])
    r = http.post("/classify/embeddings", json={"labels": "shapes", "vectors": vec.tolist(), "top": 3})
    assert r.json()["results"][0]["label"] == client.classify([query], "shapes", 3)[0].label
    # explain: the client's explanation, with its anchor pairs grouped by image
    r = http.post("/explain", data={"labels": "shapes", "top": "2", "anchors": "4"},
                  files={"image": (query.name, png(query), "image/png")})
    out = r.json()
    ex = client.explain(query, "shapes", top=2, anchors=4)
    assert [a["label"] for a in out["explanation"]["answers"]] == [a.label for a in ex.answers]
    for answer, groups in zip(ex.answers, out["groups"]):
        assert [[s["anchor_id"] for s in g["anchors"]] for g in groups] == \
            [[s.anchor_id for s in g.anchors] for g in group_by_image(answer.anchors)]
    html = http.post("/explain", data={"labels": "shapes", "format": "html"},
                     files={"image": (query.name, png(query), "image/png")})
    assert html.headers["content-type"].startswith("text/html") and "ASIF explanation" in html.text
    # the store as a whole
    info = http.get("/info").json()
    assert info["anchors"] == client.count() and info["disk"]["size_on_disk_bytes"] > 0
    assert info["disk"]["apparent_bytes"] > info["disk"]["size_on_disk_bytes"]  # the logs' holes
    assert {s["name"] for s in http.get("/labels").json()} == {"shapes"}
    assert {"pics", "words"} <= {g["name"] for g in http.get("/galleries").json()}
    assert http.get("/encoders").json()["image"]["identity"] == client.engine.config.image_encoder.model_dump()


def test_thumbnails_only_of_images_the_store_references(api) -> None:
    http, service, _ = api
    anchor = service.client.anchor_ids()[0]
    r = http.get(f"/items/anchors/{anchor}/thumbnail?size=96")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 96
    item = service.client.search("a circle", "pics", 1)[0].id
    assert http.get(f"/items/pics/{item}/thumbnail").status_code == 200
    assert http.get(f"/items/words/{item}/thumbnail").status_code == 404  # a text gallery
    assert http.get("/items/pics/999999/thumbnail").status_code == 404
    for path in ("/items/..%2F..%2Fetc/1/thumbnail", "/items/%2Fetc%2Fpasswd/0/thumbnail", "/items/anchors/-1/thumbnail",
                 f"/items/anchors/{anchor}/thumbnail?size=5000"):
        r = http.get(path)
        assert 400 <= r.status_code < 500, path
    one_line(http.get("/items/pics/999999/thumbnail"))


def test_anchor_changes_are_live_and_counted(api) -> None:
    http, service, queries = api
    client = service.client
    before = client.count()
    hits_before = http.post("/search", data={"text": "a spotted zebra", "gallery": "anchors", "top": "3"}).json()
    photo = queries[4][0]
    captions = ["a spotted zebra", "a zebra standing still", "black and white stripes"]
    r = http.post("/anchors", data={"captions": captions, "source": "mine"},
                  files=[("images", (photo.name, png(photo), "image/png")) for _ in captions])
    assert r.status_code == 200, r.text
    change = r.json()
    assert (change["anchors_before"], change["anchors_after"], change["added"]) == (before, before + 3, 3)
    assert len(list((service.settings.uploads or Path()).iterdir())) == 1  # one image kept, by content
    new = client.anchor_ids_where(source="mine")
    assert len(new) == 3
    # the next query sees them at once, and their image is served
    hits_after = http.post("/search", data={"text": "a spotted zebra", "gallery": "anchors", "top": "3"}).json()
    # two updates: the pairs written, then the end of the bulk load (index build and any refit)
    assert hits_after != hits_before and hits_after["updates"] == hits_before["updates"] + 2
    assert http.get(f"/items/anchors/{new[0]}/thumbnail").status_code == 200
    # one image with three captions is one group of three in an explanation that uses it
    r = http.post("/explain", data={"labels": "shapes", "top": "1", "anchors": "20", "neighbours": "10"},
                  files={"image": (photo.name, png(photo), "image/png")})
    groups = [g for g in r.json()["neighbour_groups"] if g["anchors"][0]["anchor_id"] in new]
    assert len(groups) == 1 and sorted(a["anchor_id"] for a in groups[0]["anchors"]) == sorted(new)
    # adding the same pairs again adds nothing
    again = http.post("/anchors", data={"captions": captions, "source": "mine"},
                      files=[("images", (photo.name, png(photo), "image/png")) for _ in captions]).json()
    assert (again["added"], again["already_stored"], again["anchors_after"]) == (0, 3, before + 3)
    # a table names the uploaded images by file name; other rows are skipped with their reason
    table = "image,caption,colour\nq.png,a shape on a plain background,grey\n../../etc/passwd,a secret,none\n"
    r = http.post("/anchors", data={"source": "table"},
                  files=[("images", ("q.png", png(queries[5][0]), "image/png")),
                         ("table", ("pairs.csv", table.encode(), "text/csv"))])
    out = r.json()
    assert out["added"] == 1 and any("passwd" in s and "not uploaded" in s for s in out["skipped"])
    assert client.anchors(client.anchor_ids_where(source="table"))[client.anchor_ids_where(source="table")[0]]["colour"] == "grey"
    # delete by id and by source: counts before and after
    r = http.request("DELETE", "/anchors", json={"ids": [new[0]]})
    assert (r.json()["anchors_before"], r.json()["anchors_after"], r.json()["deleted"]) == (before + 4, before + 3, 1)
    r = http.request("DELETE", "/anchors", json={"where": {"source": "mine"}})
    assert r.json()["deleted"] == 2 and r.json()["anchors_after"] == before + 1
    listed = http.get("/anchors", params={"where": json.dumps({"source": "table"})}).json()
    assert listed["count"] == 1 and listed["pairs"][0]["caption"] == "a shape on a plain background"


def test_writes_need_the_key_and_it_is_never_logged(serve_copy, caplog) -> None:
    store, _, _ = serve_copy
    caplog.set_level(logging.DEBUG)
    with AsifClient(store) as client, TestClient(create_app(Service(client, Settings(api_key=KEY)))) as http:
        body = {"ids": [987654]}
        assert http.request("DELETE", "/anchors", json=body).status_code == 401
        assert http.request("DELETE", "/anchors", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        latin = http.request("DELETE", "/anchors", json=body, headers={"X-API-Key": "é".encode("latin-1")})
        assert latin.status_code == 401
        one_line(latin)
        assert http.post("/backup", json={"out": str(store.parent / "b")}).status_code == 401
        ok = http.request("DELETE", "/anchors", json=body, headers={"X-API-Key": KEY})
        assert ok.status_code == 200 and ok.json()["deleted"] == 0
        assert http.get("/health").status_code == 200  # reads need no key
        spec = http.get("/openapi.json").json()
        assert "APIKeyHeader" in spec["components"]["securitySchemes"]
    assert KEY not in caplog.text


def test_bad_input_is_a_4xx_with_one_line(serve_copy) -> None:
    store, queries, _ = serve_copy
    settings = Settings(max_upload_bytes=200_000, uploads=store / "uploads")
    query = png(queries[0][0])
    bomb = io.BytesIO()
    Image.new("1", (20_000, 10_000)).save(bomb, format="PNG")  # 200 M pixels in a few kB
    with AsifClient(store) as client, TestClient(create_app(Service(client, settings))) as http:
        cases = [
            (http.post("/search", data={"gallery": "pics"}, files={"image": ("big.png", b"\0" * 300_000, "image/png")}), 413),
            (http.post("/search", data={"gallery": "pics"}, files={"image": ("bomb.png", bomb.getvalue(), "image/png")}), 400),
            (http.post("/search", data={"gallery": "pics"}, files={"image": ("notes.txt", b"hello", "text/plain")}), 400),
            (http.post("/search", data={"gallery": "pics"}), 400),
            (http.post("/search", data={"gallery": "pics", "text": "x"}, files={"image": ("q.png", query, "image/png")}), 400),
            (http.post("/search", data={"gallery": "nope", "text": "x"}), 404),
            (http.post("/search", data={"gallery": "pics", "text": "x", "where": "{not json"}), 400),
            (http.post("/search", data={"gallery": "pics", "text": "x", "top": "0"}), 422),
            (http.post("/classify", data={"labels": "nope"}, files={"images": ("q.png", query, "image/png")}), 404),
            (http.post("/classify", data={"labels": "shapes", "threshold": "high"}, files={"images": ("q.png", query, "image/png")}), 400),
            (http.post("/explain", data={"text": "x"}), 400),
            (http.post("/search/embeddings", json={"gallery": "pics", "modality": "image", "vectors": [[1.0, 2.0]]}), 400),
            (http.post("/search/embeddings", json={"gallery": "pics", "modality": "image", "vectors": [[0.0] * DI * 160]}), 400),
            (http.post("/search/embeddings", content=b'{"gallery": "pics", "modality": "image", "vectors": [[NaN]]}',
                       headers={"content-type": "application/json"}), 400),
            (http.post("/classify/embeddings", json={"labels": "shapes", "vectors": [[1.0]], "top": True}), 422),
            (http.request("DELETE", "/anchors", json={"ids": [1], "where": {"source": "x"}}), 400),
            (http.request("DELETE", "/anchors", json={"where": {"source": True}}), 422),
            (http.post("/anchors", data={"captions": ["a"]}, files={"images": ("q.png", query, "image/png"),
                                                                    "table": ("t.xlsx", b"x", "application/x")}), 400),
            (http.post("/backup", json={"out": str(store)}), 400),  # not a new folder
        ]
        for response, status in cases:
            assert response.status_code == status, (response.request.url, response.text)
            one_line(response)
        assert "bomb.png" in http.post("/search", data={"gallery": "pics"},
                                       files={"image": ("bomb.png", bomb.getvalue(), "image/png")}).json()["detail"]
        assert client.count() == 54  # nothing was lost


def test_cors_is_off_unless_configured(serve_copy) -> None:
    store, _, _ = serve_copy
    origin = {"Origin": "http://elsewhere.example"}
    with AsifClient(store) as client:
        with TestClient(create_app(Service(client))) as http:
            assert "access-control-allow-origin" not in http.get("/health", headers=origin).headers
            preflight = http.options("/search", headers={**origin, "Access-Control-Request-Method": "POST"})
            assert "access-control-allow-origin" not in preflight.headers
        with TestClient(create_app(Service(client, Settings(cors=("http://elsewhere.example",))))) as http:
            assert http.get("/health", headers=origin).headers["access-control-allow-origin"] == "http://elsewhere.example"


def test_a_query_sees_the_store_before_or_after_each_update(tmp_path) -> None:
    """Readers hammer the API while updates run: each answer, tagged with the updates completed when it
    ran, equals the store's own answer right after that many updates (computed inside each update)."""
    rng = np.random.default_rng(3)
    client = make_store(tmp_path / "s", k=6)
    client.add_anchor_embeddings(unit_rows(rng, 80, DI), unit_rows(rng, 80, DT), [{"caption": f"c{i}"} for i in range(80)])
    synthetic_labels(client, rng, "things", 6)
    client.index_gallery_embeddings("g", unit_rows(rng, 30, DI), "image")
    service = Service(client)
    queries = unit_rows(np.random.default_rng(9), 4, DI)

    def answers() -> tuple[list, list]:
        search = client.search_embeddings(queries, "image", "g", 5)
        classes = client.classify_embeddings(queries, "things", 3, threshold=None)
        return ([[(h.id, round(h.score, 6)) for h in row] for row in search],
                [[(p.label, round(p.score, 6)) for p in c.predictions] for c in classes])

    expected = {0: answers()}
    seen: list[tuple[int, tuple[list, list]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with TestClient(create_app(service)) as http:
        def reader() -> None:
            try:
                while not stop.is_set():
                    s = http.post("/search/embeddings", json={"gallery": "g", "modality": "image",
                                                              "vectors": queries.tolist(), "top": 5})
                    c = http.post("/classify/embeddings", json={"labels": "things", "vectors": queries.tolist(),
                                                                "top": 3, "threshold": "none"})
                    assert s.status_code == c.status_code == 200
                    for response, part in ((s, 0), (c, 1)):
                        version = int(response.headers["X-Asif-Updates"])
                        body = response.json()["results"]
                        got = [[(h["id"], round(h["score"], 6)) for h in row] for row in body] if part == 0 else \
                            [[(p["label"], round(p["score"], 6)) for p in r["predictions"]] for r in body]
                        seen.append((version, (part, got)))
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        wrng = np.random.default_rng(11)
        for step in range(6):
            time.sleep(0.2)  # queries run between updates (and queue behind each one)
            with service.guard.writing() as version:
                if step % 2 == 0:
                    n = 25
                    client.add_anchor_embeddings(unit_rows(wrng, n, DI), unit_rows(wrng, n, DT),
                                                 [{"caption": f"s{step}-{i}"} for i in range(n)])
                else:
                    client.delete_anchors(sorted(wrng.choice(client.anchor_ids(), 15, replace=False).tolist()))
                expected[version + 1] = answers()
        stop.set()
        for t in threads:
            t.join()
    client.close()
    assert not errors, errors[0]
    versions = {v for v, _ in seen}
    assert len(seen) > 20 and len(versions) >= 3, (len(seen), versions)
    for version, (part, got) in seen:
        want = expected[version][part]
        assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
        np.testing.assert_allclose([s for row in got for _, s in row], [s for row in want for _, s in row], atol=1e-5)


def test_uploaded_bytes_are_checked_before_anything_is_written(api) -> None:
    http, service, queries = api
    before = service.client.count()
    r = http.post("/anchors", data={"captions": ["a", "b"]},
                  files=[("images", ("good.png", png(queries[0][0]), "image/png")),
                         ("images", ("bad.jpg", b"not an image", "image/jpeg"))])
    assert r.status_code == 400 and "bad.jpg" in one_line(r)
    assert service.client.count() == before
    assert http.post("/anchors", data={"captions": ["a"]},
                     files={"images": ("x.png", image_bytes("PNG", size=32), "image/png")}).json()["added"] == 1
