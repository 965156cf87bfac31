"""The store as a whole: health, info, encoders, label sets, galleries, thumbnails, backups."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

import asif_vdb.serve.models as models
from asif_vdb.schema.store import GalleryInfo, LabelSetInfo
from asif_vdb.serve.deps import ERRORS, WRITE_ERRORS, ServiceDep, mark, require_key
from asif_vdb.serve.service import Settings

router = APIRouter(tags=["store"])


@router.get("/health", response_model=models.Health, responses=ERRORS)
def health(service: ServiceDep, response: Response) -> models.Health:
    """The service answers; the store's anchor count and the updates completed so far."""
    out = service.health()
    mark(response, out.updates)
    return out


@router.get("/info", responses=ERRORS)
def info(service: ServiceDep, response: Response) -> dict[str, Any]:
    """The store's encoders, parameters, sizes (on disk, and of it the write-ahead log reserved ahead of
    writes), label sets and galleries: what ``asif info`` prints."""
    out = service.info()
    mark(response, int(out["updates"]))
    return out


@router.get("/encoders", response_model=models.Encoders, responses=ERRORS)
def encoders(service: ServiceDep) -> models.Encoders:
    """The store's encoders (specs and identities): a remote client loads the same ones to encode."""
    return service.encoders()


@router.get("/labels", response_model=list[LabelSetInfo], responses=ERRORS)
def labels(service: ServiceDep) -> list[LabelSetInfo]:
    """The stored label sets."""
    return service.label_sets()


@router.get("/galleries", response_model=list[GalleryInfo], responses=ERRORS)
def galleries(service: ServiceDep) -> list[GalleryInfo]:
    """The stored galleries (the anchors' own galleries once a search built them)."""
    return service.galleries()


@router.get("/items/{gallery}/{item}/thumbnail", responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
            response_class=Response)
def thumbnail(service: ServiceDep, gallery: Annotated[str, Path(min_length=1, max_length=200)],
              item: Annotated[int, Path(ge=0, le=2**63 - 1)],
              size: Annotated[int, Query(description="Pixels of the longer side",
                                         json_schema_extra={"enum": list(Settings().thumbnail_sizes)})] = 160) -> Response:
    """A JPEG thumbnail of an anchor's image (gallery ``anchors``, by anchor id) or of an image
    gallery's item. Only images the store references are served."""
    data = service.thumbnail(gallery, item, size)
    return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


@router.post("/backup", response_model=models.BackupOut, responses=WRITE_ERRORS, dependencies=[Depends(require_key)])
def backup(body: models.BackupRequest, service: ServiceDep) -> models.BackupOut:
    """Write a consistent backup of the store into ``out``, a new folder on the service's machine;
    queries go on meanwhile, updates wait for it."""
    return models.BackupOut(**service.backup(body.out))
