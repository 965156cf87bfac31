"""Queries: search a gallery (or the anchors), classify images, explain answers. Each comes as a form
with uploads (what the web page sends) and as JSON with embeddings (what the remote client sends,
having encoded locally with the store's encoders)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.responses import HTMLResponse

import asif_vdb.serve.models as models
from asif_vdb.errors import InputError
from asif_vdb.features.report import render_html
from asif_vdb.schema.store import Modality
from asif_vdb.serve.deps import ERRORS, UPLOAD_ERRORS, ServiceDep, mark, matrix, parse_where, read_upload
from asif_vdb.serve.service import Service, groups

router = APIRouter(tags=["queries"])

Gallery = Annotated[str, Form(min_length=1, max_length=200, description="A gallery's name, or 'anchors' (the anchor "
                                                                        "images for a text, their captions for an image)")]
Threshold = Annotated[str, Form(max_length=40, description="'stored' (the label set's calibrated thresholds), 'none' "
                                                          "(never unknown) or a number")]
WHERE_HELP = 'A payload filter as a JSON object: {"key": value} or {"key": [values]}; hits must match every key.'


def _query(service: Service, text: str | None, image: UploadFile | None) -> tuple[np.ndarray, Modality, str]:
    """The query's embedding, modality and reference (the text, or the image's file name)."""
    has_text = text is not None and text.strip() != ""
    if has_text == (image is not None):
        raise InputError("give a text or an image (one of the two)")
    if image is not None:
        up = read_upload(service, image, "image")
        return service.encode_images([up]), "image", up.name
    assert text is not None
    return service.encode_texts([text]), "text", text


def _threshold(text: str) -> Any:
    if text in ("stored", "none"):
        return text
    try:
        return float(text)
    except ValueError:
        raise InputError(f"threshold must be 'stored', 'none' or a number, got {text!r}") from None


@router.post("/search", response_model=models.SearchOut, responses=UPLOAD_ERRORS)
def search(service: ServiceDep, response: Response, gallery: Gallery = "anchors",
           top: Annotated[int, Form(ge=1, le=models.MAX_TOP)] = 10,
           text: Annotated[str | None, Form(max_length=4096, description="A text query")] = None,
           image: Annotated[UploadFile | None, File(description="An image query")] = None,
           where: Annotated[str | None, Form(max_length=4096, description=WHERE_HELP)] = None) -> models.SearchOut:
    """The gallery's best items for a text or an uploaded image, best first."""
    vector, modality, _ = _query(service, text, image)
    version, results = service.search(vector, modality, gallery, top, parse_where(where))
    mark(response, version)
    return models.SearchOut(results=results, updates=version)


@router.post("/search/embeddings", response_model=models.SearchOut, responses=ERRORS)
def search_embeddings(body: models.SearchVectors, service: ServiceDep, response: Response) -> models.SearchOut:
    """``search`` for query embeddings made with the store's encoder of ``modality``."""
    version, results = service.search(matrix(body.vectors), body.modality, body.gallery, body.top,
                                      body.where)
    mark(response, version)
    return models.SearchOut(results=results, updates=version)


@router.post("/classify", response_model=models.ClassifyOut, responses=UPLOAD_ERRORS)
def classify(service: ServiceDep, response: Response,
             labels: Annotated[str, Form(min_length=1, max_length=200, description="The label set")],
             images: Annotated[list[UploadFile], File(description="One or more images")],
             top: Annotated[int, Form(ge=1, le=models.MAX_TOP)] = 5, threshold: Threshold = "stored") -> models.ClassifyOut:
    """The label set's best classes for each uploaded image, "unknown" applied as the client does."""
    if len(images) > service.settings.max_files:
        raise InputError(f"at most {service.settings.max_files} images per request, got {len(images)}")
    uploads = [read_upload(service, f, "image") for f in images]
    chosen = _threshold(threshold)
    service.label_set(labels)  # a wrong name is refused before the images are encoded
    version, results = service.classify(service.encode_images(uploads), labels, top, chosen)
    mark(response, version)
    return models.ClassifyOut(results=results, images=[u.name for u in uploads], updates=version)


@router.post("/classify/embeddings", response_model=models.ClassifyOut, responses=ERRORS)
def classify_embeddings(body: models.ClassifyVectors, service: ServiceDep, response: Response) -> models.ClassifyOut:
    """``classify`` for image embeddings made with the store's image encoder."""
    version, results = service.classify(matrix(body.vectors), body.labels, body.top, body.threshold)
    mark(response, version)
    return models.ClassifyOut(results=results, updates=version)


EXPLAIN_200: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}},
          "description": "The explanation as JSON, or (format=html) the self-contained HTML report"},
}


@router.post("/explain", response_model=models.ExplainOut, responses={**UPLOAD_ERRORS, **EXPLAIN_200})
def explain(service: ServiceDep, response: Response,
            labels: Annotated[str | None, Form(min_length=1, max_length=200, description="Explain the classes of "
                                                                                          "an image in this label set")] = None,
            gallery: Annotated[str | None, Form(min_length=1, max_length=200, description="Explain the search hits "
                                                                                           "in this gallery")] = None,
            text: Annotated[str | None, Form(max_length=4096)] = None,
            image: Annotated[UploadFile | None, File()] = None,
            top: Annotated[int, Form(ge=1, le=50)] = 3, anchors: Annotated[int, Form(ge=1, le=50)] = 5,
            neighbours: Annotated[int, Form(ge=0, le=50)] = 5, threshold: Threshold = "stored",
            format: Annotated[Literal["json", "html"], Form()] = "json") -> Any:
    """The anchor pairs behind each answer (their shares of its score, grouped by image), and the
    query's nearest anchors: as JSON, or as the HTML report ``asif explain --html`` writes."""
    vector, modality, reference = _query(service, text, image)
    version, result = service.explain(vector[0], modality, labels, gallery, top=top, anchors=anchors,
                                      neighbours=neighbours, threshold=_threshold(threshold), reference=reference)
    if format == "html":
        query_image = image_bytes(image) if modality == "image" else None
        return HTMLResponse(render_html(result, query_image), headers={"X-Asif-Updates": str(version)})
    mark(response, version)
    answer_groups, near = groups(result)
    return models.ExplainOut(explanation=result, groups=answer_groups, neighbour_groups=near, updates=version)


@router.post("/explain/embedding", response_model=models.ExplainOut, responses=ERRORS)
def explain_embedding(body: models.ExplainVector, service: ServiceDep, response: Response) -> models.ExplainOut:
    """``explain`` for a query embedding made with the store's encoder of ``modality``."""
    version, result = service.explain(matrix([body.vector], "vector")[0], body.modality, body.labels, body.gallery,
                                      top=body.top, anchors=body.anchors, neighbours=body.neighbours,
                                      threshold=body.threshold, reference=body.reference)
    mark(response, version)
    answer_groups, near = groups(result)
    return models.ExplainOut(explanation=result, groups=answer_groups, neighbour_groups=near, updates=version)


def image_bytes(image: UploadFile | None) -> bytes | None:
    """The uploaded image's bytes again (already read once and checked)."""
    if image is None:
        return None
    image.file.seek(0)
    data: bytes = image.file.read()
    return data
