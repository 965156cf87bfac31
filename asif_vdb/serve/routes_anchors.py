"""Anchor pairs: list them, add them (uploads or embeddings) and delete them, live: every label set
and gallery is exact again when the request returns, and queries after it see the change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

import asif_vdb.serve.models as models
from asif_vdb.serve.deps import ERRORS, WRITE_ERRORS, ServiceDep, matrix, parse_where, read_upload, require_key
from asif_vdb.serve.uploads import add_uploads

router = APIRouter(tags=["anchors"])


@router.get("/anchors", response_model=models.AnchorList, responses=ERRORS)
def list_anchors(service: ServiceDep,
                 where: Annotated[str | None, Query(max_length=4096, description='A JSON object, e.g. {"source": "mine"}')] = None,
                 offset: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=0, le=1000)] = 50) -> models.AnchorList:
    """How many pairs there are (matching ``where``), and a page of them."""
    return service.list_anchors(parse_where(where), offset, limit)


@router.get("/anchors/ids", response_model=list[int], responses=ERRORS)
def anchor_ids(service: ServiceDep,
               where: Annotated[str | None, Query(max_length=4096, description="A JSON object; none: every pair")] = None,
               ) -> list[int]:
    """Ids of every complete pair, or of those whose payload matches ``where``."""
    return service.anchor_ids(parse_where(where))


@router.post("/anchors/payloads", response_model=dict[int, dict[str, Any]], responses=ERRORS)
def payloads(body: models.AnchorIds, service: ServiceDep) -> dict[int, dict[str, Any]]:
    """Payloads (caption, image reference, source, hash) of the given anchor ids (missing ones left out)."""
    return service.payloads(body.ids)


@router.post("/anchors", response_model=models.AnchorChange, responses=WRITE_ERRORS,
             dependencies=[Depends(require_key)])
def add_anchors(service: ServiceDep,
                images: Annotated[list[UploadFile], File(description="The pairs' images")],
                captions: Annotated[list[str] | None, Form(description="One caption per image, in order")] = None,
                table: Annotated[UploadFile | None, File(description="Or a CSV/TSV/JSONL/parquet table with columns "
                                                                      "image (an uploaded file's name) and caption")] = None,
                source: Annotated[str, Form(max_length=200)] = "upload") -> models.AnchorChange:
    """Add image-caption pairs: the images with one caption each, or a table naming the uploaded
    images. Pairs already stored are not added twice; bad pairs are skipped with their reason."""
    uploads = [read_upload(service, f, "image") for f in images]
    table_upload = read_upload(service, table, "table") if table is not None else None
    return add_uploads(service, uploads, captions, table_upload, source)


@router.post("/anchors/embeddings", response_model=models.AnchorChange, responses=WRITE_ERRORS,
             dependencies=[Depends(require_key)])
def add_embeddings(body: models.AddEmbeddings, service: ServiceDep) -> models.AnchorChange:
    """Add pairs from embeddings made with the store's encoders (each payload needs a caption)."""
    return service.add_embeddings(matrix(body.image_vectors, "image_vectors"), matrix(body.text_vectors, "text_vectors"),
                                  body.payloads)


@router.post("/anchors/lookup", response_model=dict[str, int], responses=ERRORS)
def lookup(body: models.LookupHashes, service: ServiceDep) -> dict[str, int]:
    """Content hash -> anchor id of the stored pairs among ``hashes`` (what ingestion skips)."""
    return service.stored_pairs(body.hashes)


@router.delete("/anchors", response_model=models.AnchorChange, responses=WRITE_ERRORS,
               dependencies=[Depends(require_key)])
def delete_anchors(body: models.DeleteAnchors, service: ServiceDep) -> models.AnchorChange:
    """Delete pairs by id, or every pair whose payload matches ``where`` (e.g. one source's)."""
    return service.delete(body.ids, body.where)

