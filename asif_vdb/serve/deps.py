"""What every route shares: the service, the write key, reading uploads within their limit, errors."""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, HTTPException, Request, Response, Security, UploadFile
from fastapi.security import APIKeyHeader

from asif_vdb.errors import InputError
from asif_vdb.serve.models import ErrorOut
from asif_vdb.serve.service import Service, Upload

#: The header a write request carries its key in.
KEY_HEADER = "X-API-Key"
#: The header every read answer carries: updates the service had completed when it ran.
UPDATES_HEADER = "X-Asif-Updates"

_key_header = APIKeyHeader(name=KEY_HEADER, auto_error=False, description="Needed by requests that change the store "
                           "when the service was started with an API key.")

#: Error answers every route may give (one line each).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Bad input (one line saying which and why)"},
    404: {"model": ErrorOut, "description": "No such label set, gallery, anchor or item"},
    409: {"model": ErrorOut, "description": "The store cannot do this now (e.g. it is read-only or empty)"},
    422: {"model": ErrorOut, "description": "The request does not match the schema"},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS, 413: {"model": ErrorOut, "description": "An upload is larger than the service allows"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **UPLOAD_ERRORS, 401: {"model": ErrorOut, "description": f"A valid {KEY_HEADER} header is needed"},
}


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_key(service: ServiceDep, key: Annotated[str | None, Security(_key_header)] = None) -> None:
    """Refuse a write without the right key (compared in constant time, as bytes: a header may hold
    any Latin-1 text); nothing is needed when the service has no key. The key is never logged."""
    expected = service.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode("utf-8"), expected.encode("utf-8")):
        raise HTTPException(status_code=401, detail=f"a valid {KEY_HEADER} header is needed to change the store")


def read_upload(service: Service, file: UploadFile, what: str = "file") -> Upload:
    """An uploaded file's bytes, refused with 413 past the size limit (read in chunks, so a large
    file is never held whole before it is refused)."""
    limit = service.settings.max_upload_bytes
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = file.file.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"{what} {file.filename or ''!r} is larger than {limit} bytes")
        chunks.append(chunk)
    if size == 0:
        raise InputError(f"{what} {file.filename or ''!r} is empty")
    return Upload(name=file.filename or what, data=b"".join(chunks))


def parse_where(text: str | None) -> dict[str, Any] | None:
    """A payload filter sent as a JSON object in a form field."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"where: not JSON ({e.msg} at position {e.pos}); give an object such as "
                         '{"source": "mine"}') from None
    if not isinstance(value, dict):
        raise InputError('where: give a JSON object such as {"source": "mine"}')
    return value


def mark(response: Response, updates: int) -> None:
    response.headers[UPDATES_HEADER] = str(updates)


def matrix(rows: list[list[float]], what: str = "vectors") -> np.ndarray:
    """Embeddings sent as JSON: rows of one length, finite, within float32's range."""
    if len({len(r) for r in rows}) > 1:
        raise InputError(f"{what}: the rows have different lengths ({sorted({len(r) for r in rows})[:5]})")
    arr = np.asarray(rows, np.float64)
    if not np.isfinite(arr).all() or (np.abs(arr) > np.finfo(np.float32).max).any():
        raise InputError(f"{what}: every value must be a finite float32 number")
    return arr.astype(np.float32)
