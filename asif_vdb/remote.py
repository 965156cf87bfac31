"""``RemoteClient``: the methods of ``AsifClient`` against a running ``asif serve`` (or a process that
shares the store it holds), so that code written for the embedded store runs against the service.

Queries are encoded here, with the store's own encoders (their specs come from the service and the
loaded encoders' identities are checked against the store's), and only embeddings travel: the
service spends its time answering, and answers equal the embedded store's. ``for_store(path)`` finds
the service through the store's lock file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from asif_vdb.encoders import Encoder, get_encoder
from asif_vdb.encoders.images import ImageInput, as_inputs, image_reference
from asif_vdb.encoders.st_text import check_captions
from asif_vdb.errors import (
    AsifError,
    EncoderMismatchError,
    InputError,
    NotFoundError,
    ReadOnlyStoreError,
    StoreBusyError,
    StoreError,
)
from asif_vdb.features.galleries import query_modality
from asif_vdb.schema.encoders import EncoderIdentity, EncoderSpec
from asif_vdb.schema.params import AsifParams
from asif_vdb.schema.results import Classification, Explanation, RecoveryReport, SearchHit
from asif_vdb.schema.store import GalleryInfo, LabelSetInfo, Modality
from asif_vdb.store.lock import busy_message, holder

Threshold = float | None | Literal["stored"]
#: Rows per request (the service's limit).
CHUNK = 1024
#: Errors by HTTP status, as the service maps them.
ERRORS: dict[int, type[AsifError]] = {400: InputError, 401: InputError, 404: NotFoundError, 409: StoreError,
                                      413: InputError, 422: InputError}


class RemoteClient:
    """A store served by ``asif serve`` at ``url`` (``http://HOST:PORT``, or ``unix:PATH`` for a
    process sharing its store). ``api_key``: the service's key, for requests that change the store."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 600.0, device: str | None = None,
                 precision: str | None = None) -> None:
        self.url = url
        self._overrides = {k: v for k, v in (("device", device), ("precision", precision)) if v is not None}
        headers = {"X-API-Key": api_key} if api_key else {}
        if url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=url[len("unix:"):])
            self._http = httpx.Client(transport=transport, base_url="http://asif", headers=headers, timeout=timeout)
        elif url.startswith(("http://", "https://")):
            self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        else:
            raise InputError(f"service address {url!r}: expected http://HOST:PORT or unix:PATH")
        self._encoders: dict[str, tuple[EncoderSpec, EncoderIdentity]] | None = None
        #: Updates the service had completed when it answered the last query.
        self.last_updates: int | None = None
        self.last_refresh = None
        self.last_repair = RecoveryReport()

    @classmethod
    def for_store(cls, path: str | os.PathLike[str], **kwargs: Any) -> RemoteClient:
        """The service of the process that holds the embedded store at ``path`` (its lock file says
        where it serves); StoreBusyError when the holder does not serve it, StoreError when nobody
        holds it (then open it with AsifClient)."""
        held = holder(path)
        if held is None:
            raise StoreError(f"store {path} is not open in any process: open it with AsifClient({str(path)!r})")
        if not held.serve:
            raise StoreBusyError(busy_message(Path(path), held) + ", which does not share it")
        return cls(held.serve, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def location(self) -> str:
        return self.url

    @property
    def engine(self) -> None:
        """No engine in this process: the service holds the store."""
        return None

    @property
    def params(self) -> AsifParams:
        return AsifParams.model_validate(self.info()["params"])

    def create_store(self) -> None:
        """The served store exists already."""

    # -- HTTP ---------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise StoreError(f"service at {self.url} did not answer {method} {path}: {e}") from e
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail"))
            except ValueError:
                detail = response.text[:300]
            kind = ERRORS.get(response.status_code, StoreError)
            if response.status_code == 409 and "read-only" in detail:
                kind = ReadOnlyStoreError
            raise kind(f"{detail} (service at {self.url})")
        if "X-Asif-Updates" in response.headers:
            self.last_updates = int(response.headers["X-Asif-Updates"])
        return response.json()

    # -- encoders: local, the store's ---------------------------------------------------------------------
    def encoder(self, modality: Modality) -> Encoder:
        """The store's encoder of ``modality``, loaded in this process and checked against the store."""
        if self._encoders is None:
            data = self._call("GET", "/encoders")
            self._encoders = {m: (EncoderSpec.model_validate(data[m]["spec"]),
                                  EncoderIdentity.model_validate(data[m]["identity"])) for m in ("image", "text")}
        spec, identity = self._encoders[modality]
        encoder = get_encoder(spec.model_copy(update=self._overrides))
        if encoder.identity != identity:
            raise EncoderMismatchError(f"the service's store was built with {modality} encoder {identity.describe()}, "
                                       f"but the encoder loaded here is {encoder.identity.describe()}")
        return encoder

    def encode_images(self, images: Sequence[ImageInput] | ImageInput, *, progress: bool = False) -> np.ndarray:
        return self.encoder("image").encode(as_inputs(images), progress=progress)

    def encode_images_skipping(self, images: Sequence[ImageInput], *,
                               progress: bool = False) -> tuple[np.ndarray, list[int], dict[int, str]]:
        return self.encoder("image").encode_skipping(list(images), progress=progress)

    def encode_texts(self, texts: Sequence[str] | str, *, progress: bool = False) -> np.ndarray:
        return self.encoder("text").encode(check_captions(as_inputs(texts)), progress=progress)

    # -- the store ---------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", "/info")
        return data

    def count(self) -> int:
        return int(self._call("GET", "/health")["anchors"])

    def label_sets(self) -> list[str]:
        return [str(s["name"]) for s in self._call("GET", "/labels")]

    def label_set(self, name: str) -> LabelSetInfo:
        for item in self._call("GET", "/labels"):
            if item["name"] == name:
                return LabelSetInfo.model_validate(item)
        raise NotFoundError(f"no label set {name!r} in the store served at {self.url}")

    def galleries(self) -> list[str]:
        return sorted(str(g["name"]) for g in self._call("GET", "/galleries"))

    def gallery(self, name: str) -> GalleryInfo:
        for item in self._call("GET", "/galleries"):
            if item["name"] == name:
                return GalleryInfo.model_validate(item)
        raise NotFoundError(f"no gallery {name!r} in the store served at {self.url}")

    # -- queries -------------------------------------------------------------------------------------------
    def classify(self, images: Sequence[ImageInput] | ImageInput, label_set: str, top: int = 5, *,
                 threshold: Threshold = "stored", progress: bool = False, batch_size: int = 256) -> list[Classification]:
        return self.classify_embeddings(self.encode_images(images, progress=progress), label_set, top, threshold=threshold)

    def classify_embeddings(self, image_vectors: np.ndarray, label_set: str, top: int = 5, *,
                            threshold: Threshold = "stored") -> list[Classification]:
        out: list[Classification] = []
        wire = "none" if threshold is None else threshold
        for rows in _chunks(image_vectors):
            data = self._call("POST", "/classify/embeddings", json={"labels": label_set, "vectors": rows, "top": top,
                                                                     "threshold": wire})
            out += [Classification.model_validate(r) for r in data["results"]]
        return out

    def search(self, query: Any, gallery: str, top: int = 10, *, modality: Modality | None = None) -> list[SearchHit]:
        return self.search_many([query], gallery, top, modality=modality)[0]

    def search_many(self, queries: Sequence[Any], gallery: str, top: int = 10, *, modality: Modality | None = None,
                    progress: bool = False) -> list[list[SearchHit]]:
        items = list(queries)
        kinds = [query_modality(q, modality) for q in items]
        out: list[list[SearchHit]] = [[] for _ in items]
        for kind in ("text", "image"):
            rows = [i for i, k in enumerate(kinds) if k == kind]
            if rows:
                chosen = [items[i] for i in rows]
                vecs = self.encode_texts(chosen) if kind == "text" else self.encode_images(chosen)
                for i, hits in zip(rows, self.search_embeddings(vecs, kind, gallery, top)):
                    out[i] = hits
        return out

    def search_embeddings(self, vectors: np.ndarray, modality: Modality, gallery: str, top: int = 10, *,
                          where: dict[str, Any] | None = None) -> list[list[SearchHit]]:
        """``search`` for query embeddings; ``where`` keeps the hits whose payload matches."""
        out: list[list[SearchHit]] = []
        for rows in _chunks(vectors):
            data = self._call("POST", "/search/embeddings", json={"gallery": gallery, "modality": modality,
                                                                   "vectors": rows, "top": top, "where": where})
            out += [[SearchHit.model_validate(h) for h in row] for row in data["results"]]
        return out

    def explain(self, image: ImageInput, label_set: str, top: int = 3, *, anchors: int = 5, neighbours: int = 5,
                threshold: Threshold = "stored") -> Explanation:
        return self.explain_embedding(self.encode_images([image]), label_set, top, anchors=anchors, neighbours=neighbours,
                                      threshold=threshold, reference=image_reference(image))

    def explain_embedding(self, image_vector: np.ndarray, label_set: str, top: int = 3, *, anchors: int = 5,
                          neighbours: int = 5, threshold: Threshold = "stored", reference: str = "") -> Explanation:
        return self._explain(image_vector, "image", {"labels": label_set}, top, anchors, neighbours,
                             "none" if threshold is None else threshold, reference)

    def explain_search(self, query: Any, gallery: str, top: int = 3, *, anchors: int = 5, neighbours: int = 5,
                       modality: Modality | None = None) -> Explanation:
        kind = query_modality(query, modality)
        vec = self.encode_texts([query]) if kind == "text" else self.encode_images([query])
        ref = str(query) if kind == "text" else image_reference(query)
        return self._explain(vec, kind, {"gallery": gallery}, top, anchors, neighbours, "stored", ref)

    def _explain(self, vector: np.ndarray, modality: Modality, target: dict[str, str], top: int, anchors: int,
                 neighbours: int, threshold: Any, reference: str) -> Explanation:
        row = np.asarray(vector, np.float64).reshape(-1).tolist()
        data = self._call("POST", "/explain/embedding", json={
            "vector": row, "modality": modality, **target, "top": top, "anchors": anchors, "neighbours": neighbours,
            "threshold": threshold, "reference": reference})
        return Explanation.model_validate(data["explanation"])

    # -- anchors -------------------------------------------------------------------------------------------
    def anchor_ids(self) -> list[int]:
        return [int(i) for i in self._call("GET", "/anchors/ids")]

    def anchor_ids_where(self, **conditions: Any) -> list[int]:
        if not conditions:
            raise InputError("give at least one payload condition, e.g. source='NAME'")
        return [int(i) for i in self._call("GET", "/anchors/ids", params={"where": json.dumps(conditions)})]

    def anchors(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), 10_000):
            data = self._call("POST", "/anchors/payloads", json={"ids": wanted[start : start + 10_000]})
            out.update({int(k): v for k, v in data.items()})
        return out

    def stored_pairs(self, hashes: Sequence[str]) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._call("POST", "/anchors/lookup", json={"hashes": list(hashes)}).items()}

    def add_anchor_embeddings(self, image_vectors: np.ndarray, text_vectors: np.ndarray,
                              payloads: Sequence[dict[str, Any]]) -> list[int]:
        """Add pairs from embeddings (the store's encoders'); each chunk of 1,024 rows is one update."""
        img, txt = np.asarray(image_vectors), np.asarray(text_vectors)
        if not len(img) == len(txt) == len(payloads):
            raise InputError(f"anchors: {len(img)} image vectors, {len(txt)} caption vectors and "
                             f"{len(payloads)} payloads differ")
        ids: list[int] = []
        for start in range(0, len(img), CHUNK):
            stop = start + CHUNK
            data = self._call("POST", "/anchors/embeddings", json={
                "image_vectors": np.asarray(img[start:stop], np.float64).tolist(),
                "text_vectors": np.asarray(txt[start:stop], np.float64).tolist(), "payloads": list(payloads[start:stop])})
            ids += [int(i) for i in data["ids"]]
        return ids

    def delete_anchors(self, ids: Sequence[int]) -> int:
        wanted = [int(i) for i in ids]
        if not wanted:
            return 0
        return int(self._call("DELETE", "/anchors", json={"ids": wanted})["deleted"])

    def delete_anchors_where(self, **conditions: Any) -> int:
        if not conditions:
            raise InputError("give at least one payload condition, e.g. source='NAME'")
        return int(self._call("DELETE", "/anchors", json={"where": conditions})["deleted"])

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Nothing to defer here: each request is a whole update on the service's side."""
        yield

    def backup(self, out: str | os.PathLike[str]) -> dict[str, Any]:
        """A backup written by the service (``out`` is a folder on its machine)."""
        data: dict[str, Any] = self._call("POST", "/backup", json={"out": os.path.abspath(os.fspath(out))})
        return data

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise StoreError(f"{name} is not available through the service at {self.url}: run it where the store is "
                         "opened, or when the serving process has closed it")


def _chunks(vectors: np.ndarray) -> list[list[list[float]]]:
    arr = np.asarray(vectors, np.float64)
    if arr.ndim != 2:
        raise InputError(f"expected a 2-D array of vectors, got shape {arr.shape}")
    return [arr[i : i + CHUNK].tolist() for i in range(0, len(arr), CHUNK)]


